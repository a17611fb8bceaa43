#!/usr/bin/env bash
# Create .venv-torch with PyTorch 2.13.0 and litert-torch 0.10.0 (the renamed ai-edge-torch), the
# versions in tools/constraints-torch.txt, when missing or outdated. It turns a PyTorch model into the
# float .tflite that `edgekit compress` / `student.model: my.tflite` take: see tools/torch_to_tflite.py.
# Its own virtualenv because torch and litert-torch's tree (jax, transformers, ...) have no place in
# edgekit's. torch==2.13.0 is asked for first and alone: where a CPU wheel of it lies on local disk pip
# takes that one; a bare `torch` or a range would pull a CUDA build of several GB. Idempotent: a stamp
# records what was installed; re-runs are instant. Prints the venv's path. About 3-4 minutes, 2.1 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=.venv-torch
stamp=$venv/.edgekit-stamp
want=$(cat tools/constraints-torch.txt tools/torch_env.sh | sha256sum | cut -d' ' -f1)
if ! { [ -x $venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "edgekit: setting up $venv (torch 2.13.0 + litert-torch 0.10.0, pinned; a few minutes)..." >&2
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -I -m pip install -q --disable-pip-version-check --no-compile torch==2.13.0 >&2
  "$venv/bin/python" -I -m pip install -q --disable-pip-version-check --no-deps --no-compile \
    -r tools/constraints-torch.txt >&2
  "$venv/bin/python" -I -m pip check --disable-pip-version-check >&2
  "$venv/bin/python" -I -c "import torch, litert_torch" >&2
  echo "$want" > "$stamp"
fi
echo "$PWD/$venv"
