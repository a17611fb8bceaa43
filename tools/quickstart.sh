#!/usr/bin/env bash
# Set up (first time only) and run the quickstart recipe end to end.
# Usage: bash tools/quickstart.sh [OUT_DIR]   (default runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=${1:-runs/quickstart}
.venv/bin/edgekit run recipes/quickstart.yaml --out "$out" --force
echo "report: $out/report.md  $out/report.json" >&2
