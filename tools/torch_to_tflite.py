#!/usr/bin/env python3
"""A PyTorch model as the float .tflite that edgekit takes (``student.model: model.tflite`` or
``edgekit compress model.tflite``), with litert-torch 0.10.0.

Runs in .venv-torch (``bash tools/torch_env.sh``), never in edgekit's own environment::

    .venv-torch/bin/python tools/torch_to_tflite.py my_net.py:build --input-shape 8,8,1 --out model.tflite

``FILE.py:FUNCTION`` returns a ``torch.nn.Module`` (trained, in eval mode or not); this script
runs that file (your code). ``--input-shape`` is one sample's shape as edgekit's data has it,
channels last (``H,W,C``; ``L,C`` for sequences); PyTorch's channels-first layout is kept inside
the model and turned into channels-last input with ``litert_torch.to_channel_last_io`` (leave
it with ``--channels-first`` when the data is stored channels-first). The .tflite is checked
against PyTorch on random inputs before it is written (max abs difference printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path


def load_builder(spec: str):
    file, _, fn = spec.rpartition(":")
    if not file.endswith(".py") or not fn:
        raise SystemExit(f"error: {spec!r}: expected FILE.py:FUNCTION")
    path = Path(file).resolve()
    if not path.is_file():
        raise SystemExit(f"error: {file}: no such file")
    mod_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.path.insert(0, str(path.parent))
    mod_spec.loader.exec_module(module)
    if not hasattr(module, fn):
        raise SystemExit(f"error: {file} has no function {fn!r}")
    return getattr(module, fn)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("builder", help="FILE.py:FUNCTION returning a torch.nn.Module")
    p.add_argument("--input-shape", required=True, help="one sample's shape, comma-separated, e.g. 8,8,1")
    p.add_argument("--out", required=True, type=Path, help="the float .tflite to write")
    p.add_argument("--channels-first", action="store_true", help="keep the model's channels-first input")
    a = p.parse_args(argv)

    import numpy as np
    import torch

    import litert_torch

    shape = tuple(int(d) for d in a.input_shape.split(","))
    model = load_builder(a.builder)().eval()
    if a.channels_first or len(shape) < 2:
        export, sample = model, torch.rand(1, *shape)
    else:
        export = litert_torch.to_channel_last_io(model, args=[0])
        sample = torch.rand(1, *shape)
    edge = litert_torch.convert(export, (sample,))
    x = torch.rand(4, *shape)
    with torch.no_grad():
        want = np.stack([export(x[i:i + 1]).numpy()[0] for i in range(len(x))])
    got = np.stack([np.asarray(edge(x[i:i + 1]))[0] for i in range(len(x))])
    diff = float(np.abs(got - want).max())
    scale = 1.0 + float(np.abs(want).max())
    if diff > 1e-4 * scale:
        print(f"error: the .tflite differs from PyTorch by {diff:.3g} (max abs)", file=sys.stderr)
        return 1
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(f".{a.out.name}.tmp")
    edge.export(str(tmp))
    tmp.replace(a.out)
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes); max abs difference to PyTorch {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
