#!/usr/bin/env bash
# Set up (first time only) and run the quickstart recipe end to end.
# Usage: bash tools/quickstart.sh [OUT_DIR]   (default runs/quickstart)
# A rerun resumes: finished stages are reused (instant) and device results that `edgekit deploy`
# merged into the run are kept. Start over with: .venv/bin/edgekit run recipes/quickstart.yaml --out DIR --force
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=${1:-runs/quickstart}
exec .venv/bin/edgekit run recipes/quickstart.yaml --out "$out" --resume
