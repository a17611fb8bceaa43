#!/usr/bin/env bash
# Set up (first time only) and run the test suite. Extra arguments go to pytest,
# e.g. `bash tools/test.sh -m slow` for the end-to-end recipe tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
