#!/usr/bin/env bash
# Create .venv-airflow with Apache Airflow, exactly the versions in tools/constraints-airflow.txt,
# when missing or outdated. Airflow lives in its own virtualenv because its pins clash with
# TensorFlow's; the DAGs that `edgekit export airflow` writes call the edgekit of .venv (or the
# one EDGEKIT_BIN names). Idempotent: a stamp records what was installed; re-runs are instant.
# Prints the venv's path. About 40 s: the pinned set is installed as is (--no-deps, no resolver
# run), then `pip check` confirms it is consistent. `python -I`: no PYTHONPATH or current folder
# (an edgekit checkout) in the way.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=.venv-airflow
stamp=$venv/.edgekit-stamp
want=$(cat tools/constraints-airflow.txt tools/airflow_env.sh | sha256sum | cut -d' ' -f1)
if ! { [ -x $venv/bin/airflow ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "edgekit: setting up $venv (Apache Airflow, pinned; under a minute)..." >&2
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -I -m pip install -q --disable-pip-version-check --no-deps --no-compile \
    -r tools/constraints-airflow.txt >&2
  "$venv/bin/python" -I -m pip check --disable-pip-version-check >&2
  echo "$want" > "$stamp"
fi
echo "$PWD/$venv"
