#!/usr/bin/env python3
"""Already trained models in every input format through `edgekit compress`: float accuracy, int8
accuracy per target, sizes, arena and the time each compress took, as a Markdown table.

One small model per format, each trained here on the training split of the recipe's data (so the
test split stays unseen), then handed to `edgekit compress MODEL --data SOURCE --target ...`:

- ``.keras`` (tf_keras; edgekit's Keras path, TFLite converter post-training int8)
- float ``.tflite`` (the same model converted; litert-quantizer)
- float ``.onnx`` (the same model through tf2onnx; ONNX Runtime QDQ for mobile, onnx2tf for the rest;
  needs .venv-onnx2tf, else that row says so)
- PyTorch -> float ``.tflite`` with litert-torch (a PyTorch model of the same layers trained in
  .venv-torch; needs .venv-torch, else that row says so)

    .venv/bin/python tools/bench_given_models.py [--data mnist1d|digits] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ["mobile", "rpi4", "cortex-m4"]

TORCH_NET = '''
import numpy as np
import torch


def build():
    torch.manual_seed(0)
    d = np.load("train.npz")
    x = torch.from_numpy(d["x"]).movedim(-1, 1)          # channels first inside the model
    y = torch.from_numpy(d["y"])
    conv = torch.nn.Conv1d if x.ndim == 3 else torch.nn.Conv2d
    c = x.shape[1]
    net = torch.nn.Sequential(conv(c, 16, 5, padding=2), torch.nn.ReLU(), conv(16, 16, 5, stride=2, padding=2),
                              torch.nn.ReLU(), conv(16, 16, 5, stride=2, padding=2), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.LazyLinear(int(y.max()) + 1))
    net(x[:1])
    opt = torch.optim.Adam(net.parameters(), lr=0.005)
    for epoch in range(25):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()
'''


def keras_model(data):
    """The same small CNN for both datasets: three convolutions (1-D for sequences) and a dense head."""
    from edgekit._tf import keras

    k = keras()
    seq = len(data.input_shape) == 2
    conv = k.layers.Conv1D if seq else k.layers.Conv2D
    model = k.Sequential([k.layers.Input(data.input_shape),
                          conv(16, 5, padding="same", activation="relu"),
                          conv(16, 5, strides=2, padding="same", activation="relu"),
                          conv(16, 5, strides=2, padding="same", activation="relu"),
                          k.layers.Flatten(), k.layers.Dense(data.num_classes)])
    model.compile(optimizer=k.optimizers.Adam(0.005), metrics=["accuracy"],
                  loss=k.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=25, batch_size=64, verbose=0)
    return model


def compress(model: Path, source: str, out: Path, targets: list[str]) -> tuple[dict | None, float, str]:
    cmd = [sys.executable, "-m", "edgekit.cli", "-q", "compress", str(model), "--data", source, "--out", str(out),
           "--force", "--json", "--no-budget", *[a for t in targets for a in ("--target", t)]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return None, seconds, (proc.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(proc.stdout), seconds, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist1d", choices=["mnist1d", "digits"])
    ap.add_argument("--out", type=Path, help="folder for the models and runs (default: a temp dir)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="edgekit-given-"))
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np

    from edgekit._tf import tf
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    data = load_dataset(DataConfig(source=args.data, normalize="none"), seed=0)
    tf().random.set_seed(0)
    model = keras_model(data)
    model.save(out / "net.keras")
    (out / "net.tflite").write_bytes(tf().lite.TFLiteConverter.from_keras_model(model).convert())
    import tf2onnx

    spec = (tf().TensorSpec((None, *data.input_shape), tf().float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    (out / "net.onnx").write_bytes(proto.SerializeToString())

    rows = [(".keras (tf_keras)", out / "net.keras", TARGETS), ("float .tflite", out / "net.tflite", TARGETS),
            ("float .onnx", out / "net.onnx", TARGETS)]
    torch_py = ROOT / ".venv-torch" / "bin" / "python"
    if torch_py.is_file():
        np.savez(out / "train.npz", x=data.x_train, y=data.y_train)
        (out / "torch_net.py").write_text(TORCH_NET)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        t0 = time.perf_counter()
        proc = subprocess.run([str(torch_py), "-I", str(ROOT / "tools" / "torch_to_tflite.py"), "torch_net.py:build",
                               "--input-shape", ",".join(map(str, data.input_shape)), "--out", "torch_net.tflite"],
                              cwd=out, env=env, capture_output=True, text=True)
        said = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"PyTorch training + litert-torch conversion: {time.perf_counter() - t0:.1f} s ({said})",
              file=sys.stderr)
        if proc.returncode == 0:
            rows.append(("PyTorch -> .tflite (litert-torch)", out / "torch_net.tflite", TARGETS))
    else:
        print("no .venv-torch (bash tools/torch_env.sh): PyTorch row left out", file=sys.stderr)

    print(f"\n{args.data}: {len(data.x_train)} train / {len(data.x_test)} test samples; "
          f"`edgekit compress MODEL --data {args.data} --target {' --target '.join(TARGETS)}`\n")
    head = ("input", "float acc", "mobile int8 acc", "rpi4 int8 acc", "cortex-m4 int8 acc", "float size",
            "rpi4 int8 size", "cortex-m4 int8 size", "arena", "compress s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, path, targets in rows:
        report, seconds, error = compress(path, args.data, out / "runs" / path.stem, targets)
        if report is None and path.suffix == ".onnx":
            # onnx2tf (rpi, mcu) failed: the mobile target measures the .onnx itself
            print(f"{label}: {error}", file=sys.stderr)
            label = f"{label} (mobile only; onnx2tf failed, see below)"
            report, seconds, error = compress(path, args.data, out / "runs" / path.stem, ["mobile"])
        if report is None:
            print(f"| {label} | failed: {error} |" + " |" * (len(head) - 2))
            continue
        stage = report["stages"][0]
        t = {x["name"]: x for x in report["targets"]}

        def acc(name):
            x = t.get(name)
            return f"{x['accuracy']:.1%} ({x['format']})" if x and x.get("accuracy") is not None else "–"

        def arena(t):
            x = t.get("cortex-m4")
            return f"{x['arena_bytes']:,} B" if x and x.get("arena_bytes") else "–"

        def size(name):
            x = t.get(name)
            return f"{x['size_bytes']:,} B" if x else "–"

        print(f"| {label} | {stage['accuracy']:.1%} | {acc('mobile')} | {acc('rpi4')} | {acc('cortex-m4')} | "
              f"{stage['size_bytes']:,} B | {size('rpi4')} | {size('cortex-m4')} | "
              f"{arena(t)} | {seconds:.1f} |")
    print(f"\nmodels and runs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
