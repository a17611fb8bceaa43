#!/usr/bin/env bash
# Set up (first time only) and run the test suite. Extra arguments go to pytest,
# e.g. `bash tools/test.sh -m slow` for the end-to-end recipe tests.
#
# Test files are spread over worker processes (pytest-xdist, whole files per worker so module
# fixtures are built once): one per CPU, at most 4, none on a one-CPU machine. The files go out
# in collection order (tests/conftest.py puts the heaviest first), not xdist's most-tests-first;
# the session fixtures that train or convert are built once for all workers (conftest's _built_once).
# EDGEKIT_TEST_WORKERS=N chooses (0 = everything in this process); `-n`/`-p no:xdist` in the
# arguments win.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cpus=$(.venv/bin/python -c 'import os; print(len(os.sched_getaffinity(0)))')
workers=${EDGEKIT_TEST_WORKERS:-$(( cpus < 4 ? cpus : 4 ))}
[ "$workers" -ge 2 ] || workers=0
for a in "$@"; do
  case "$a" in -n|-n*|--numprocesses*|no:xdist|--pdb|--trace) workers=0 ;; esac
done
if [ "$workers" -gt 0 ]; then
  # the workers are the parallelism: each worker's TensorFlow ops (and oneDNN/OpenMP) run on one
  # thread, so two workers on two CPUs do not spin against each other's thread pools (the suite
  # took 92 s with TensorFlow's default pools, 83 s like this); the inter-op pool stays as it is
  # (a parameter-server cluster's coordinator deadlocks with one). Set these yourself to override.
  export TF_NUM_INTRAOP_THREADS="${TF_NUM_INTRAOP_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  exec .venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
fi
exec .venv/bin/python -m pytest "$@"
