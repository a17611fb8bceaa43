#!/usr/bin/env bash
# Create .venv and install edgekit with its pinned dependencies, when missing or outdated.
# Idempotent: a stamp records what was installed; re-runs are instant.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.edgekit-stamp
want=$(cat pyproject.toml tools/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "edgekit: setting up .venv (pinned dependencies, about a minute)..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -c tools/constraints.txt -e '.[dev,archives,tune-rdb]' >&2
echo "$want" > "$stamp"
