#!/usr/bin/env bash
# Create .venv-onnx2tf with onnx2tf, exactly the versions in tools/constraints-onnx2tf.txt, when
# missing or outdated. edgekit runs it as a subprocess to turn a float .onnx into the float .tflite
# that rpi and mcu targets need (edgekit/external/onnx.py). Its own virtualenv because on Python
# 3.11 pip picks onnx2tf 1.29.24 (2.x needs Python >= 3.12), which pins tensorflow 2.19.0 and
# numpy 1.26.4 beside edgekit's tensorflow 2.21.0 and numpy 2.4.6. Idempotent: a stamp records
# what was installed; re-runs are instant. Prints the venv's path. About a minute, 2.6 GB: the
# pinned set is installed as is (--no-deps, no resolver run), then `pip check` confirms it is
# consistent. `python -I`: no PYTHONPATH or current folder (an edgekit checkout) in the way.
# EDGEKIT_ONNX2TF_PYTHON names another Python with onnx2tf instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=.venv-onnx2tf
stamp=$venv/.edgekit-stamp
want=$(cat tools/constraints-onnx2tf.txt tools/onnx2tf_env.sh | sha256sum | cut -d' ' -f1)
if ! { [ -x $venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "edgekit: setting up $venv (onnx2tf 1.29.24, pinned; about a minute)..." >&2
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -I -m pip install -q --disable-pip-version-check --no-deps --no-compile \
    -r tools/constraints-onnx2tf.txt >&2
  "$venv/bin/python" -I -m pip check --disable-pip-version-check >&2
  "$venv/bin/python" -I -c "import onnx2tf" >&2
  echo "$want" > "$stamp"
fi
echo "$PWD/$venv"
