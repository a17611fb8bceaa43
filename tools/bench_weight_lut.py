#!/usr/bin/env python3
"""Look-up-table weights for TFLite Micro (``convert.mcu_weight_bits``): flash against arena, side by side.

For each zoo model (random weights, full int8, batch 1: the file the ``mcu`` target makes) and each
index width, :func:`edgekit.weight_lut.compress` is applied and both files are measured in the
tflite-micro interpreter: file bytes, the smallest tensor arena that runs (``measure_arena``'s
``min_bytes``) and how many weight tensors became tables. Each row also checks that the compressed
file computes in TFLite Micro exactly what the same clustered weights stored plainly compute.

    .venv/bin/python tools/bench_weight_lut.py [--bits 4 3 2] [--models resnet8 ds_cnn]

Accuracy is not measured here (random weights); a run measures it on the shipped file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {  # name -> (zoo model, input shape, width)
    "resnet8-32": ("resnet8", (32, 32, 3), 1.0),
    "resnet8-16": ("resnet8", (16, 16, 3), 1.0),
    "ds_cnn": ("ds_cnn", (49, 10, 1), 1.0),
    "mobilenet_v1_025": ("mobilenet_v1_025", (96, 96, 3), 1.0),
    "cnn_tiny": ("cnn_tiny", (8, 8, 1), 1.0),
    "conv1d_small": ("conv1d_small", (40, 1), 1.0),
}


def _micro_out(path: Path, x: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_file(str(path), arena_size=4 << 20)
    it.set_input(x, 0)
    it.invoke()
    return it.get_output(0).copy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--bits", nargs="+", type=int, default=[4, 3, 2])
    args = ap.parse_args(argv)

    from edgekit.convert import to_tflite
    from edgekit.mcu import measure_arena
    from edgekit.models import create_model
    from edgekit.tflite_file import read
    from edgekit.weight_lut import compress

    print("| model | weights | file B | file vs plain | arena B (min) | arena vs plain | tensors as tables | "
          "same outputs as plain-stored clustered |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            zoo, shape, width = MODELS[name]
            model = create_model(zoo, input_shape=shape, num_classes=10, width=width, seed=0)
            x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
            blob = to_tflite(model, mode="full-int8", rep=lambda x=x: ([x[i:i + 1]] for i in range(len(x))),
                             signature=False, batch=1)
            plain_path = Path(tmp) / f"{name}.tflite"
            plain_path.write_bytes(blob)
            base_arena = measure_arena(plain_path).min_bytes
            weights = sum(1 for o in read(blob).subgraphs[0].operators
                          if o.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"))
            print(f"| {name} | plain int8 | {len(blob):,} | 1.00 | {base_arena:,} | 1.00 | 0 of {weights} | – |",
                  flush=True)
            xq = np.random.default_rng(1).integers(-128, 128, (1, *shape)).astype(np.int8)
            for bits in args.bits:
                comp, clustered, info = compress(blob, bits)
                if not info["applied"]:
                    print(f"| {name} | {bits}-bit tables | {len(blob):,} | 1.00 | {base_arena:,} | 1.00 | "
                          f"0 of {weights} ({info['reason']}) | – |", flush=True)
                    continue
                cp, pp = Path(tmp) / f"{name}-{bits}.tflite", Path(tmp) / f"{name}-{bits}-plain.tflite"
                cp.write_bytes(comp)
                pp.write_bytes(clustered)
                arena = measure_arena(cp).min_bytes
                same = np.array_equal(_micro_out(cp, xq), _micro_out(pp, xq))
                print(f"| {name} | {bits}-bit tables | {len(comp):,} | {len(comp) / len(blob):.2f} | {arena:,} | "
                      f"{arena / base_arena:.2f} | {len(info['tensors'])} of {weights} | {'yes' if same else 'NO'} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
