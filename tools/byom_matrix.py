#!/usr/bin/env python
"""Bring-your-own-model matrix: each input format and a few architectures edgekit's zoo does not
have, trained here outside edgekit, then given to edgekit as ``student: {model: PATH, epochs: 0}``
(``teacher: null``) and taken through pruning/QAT (where the model allows) to ``rpi4`` and
``cortex-m4`` (full int8, measured arena). Prints a markdown table of measured numbers.

    python tools/byom_matrix.py --out /tmp/byom            # table on stdout
    python tools/byom_matrix.py --out /tmp/byom --json     # rows as JSON on stdout, table on stderr

Data: scikit-learn digits (8x8x1, 10 classes; as (64,) sequences for the 1-D CNN). Tiny models,
a few epochs: the point is the path, not the accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

KERAS3 = r'''
import os, sys
os.environ.pop("TF_USE_LEGACY_KERAS", None)
import numpy as np, keras
from keras import layers as L
keras.utils.set_random_seed(0)
out = sys.argv[1]
with np.load(os.path.join(out, "digits.npz")) as f:
    x, y = f["x_train"], f["y_train"]

    xt, yt = f["x_test"], f["y_test"]
own = {}

def fit(m, x, name, x_test):
    m.compile(optimizer=keras.optimizers.Adam(0.005),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    m.fit(x, y, epochs=25, batch_size=32, verbose=0)
    own[name] = float(m.evaluate(x_test, yt, verbose=0)[1])  # Keras 3's own test accuracy
    m.save(os.path.join(out, name))

# a plain CNN
m = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same", activation="relu"),
                      L.MaxPooling2D(), L.Flatten(), L.Dense(10)])
fit(m, x, "k3_cnn.keras", xt)

# residual + depthwise blocks
i = keras.Input((8, 8, 1))
a = L.Conv2D(8, 3, padding="same", use_bias=False)(i)
a = L.BatchNormalization(momentum=0.9)(a)
a = L.ReLU()(a)
for _ in range(2):
    b = L.DepthwiseConv2D(3, padding="same", use_bias=False)(a)
    b = L.BatchNormalization(momentum=0.9)(b)
    b = L.ReLU(6.0)(b)
    b = L.Conv2D(8, 1, use_bias=False)(b)
    b = L.BatchNormalization(momentum=0.9)(b)
    a = L.Add()([a, b])
    a = L.ReLU()(a)
a = L.GlobalAveragePooling2D()(a)
fit(keras.Model(i, L.Dense(10)(a)), x, "k3_residual.keras", xt)

# MobileNetV2-like: stem, inverted residual blocks (expand 1x1, depthwise 3x3, linear project 1x1)
def inverted(z, filters, expand, stride):
    c = z.shape[-1]
    h = L.Conv2D(c * expand, 1, use_bias=False)(z)
    h = L.BatchNormalization(momentum=0.9)(h)
    h = L.ReLU(6.0)(h)
    if stride == 2:
        h = L.ZeroPadding2D(((0, 1), (0, 1)))(h)
    h = L.DepthwiseConv2D(3, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False)(h)
    h = L.BatchNormalization(momentum=0.9)(h)
    h = L.ReLU(6.0)(h)
    h = L.Conv2D(filters, 1, use_bias=False)(h)
    h = L.BatchNormalization(momentum=0.9)(h)
    return L.Add()([z, h]) if stride == 1 and c == filters else h

i = keras.Input((8, 8, 1))
z = L.Rescaling(2.0, offset=-1.0)(i)
z = L.Conv2D(8, 3, padding="same", use_bias=False)(z)
z = L.BatchNormalization(momentum=0.9)(z)
z = L.ReLU(6.0)(z)
z = inverted(z, 8, 4, 1)
z = inverted(z, 16, 4, 2)
z = inverted(z, 16, 4, 1)
z = L.Conv2D(32, 1, use_bias=False)(z)
z = L.BatchNormalization(momentum=0.9)(z)
z = L.ReLU(6.0)(z)
z = L.GlobalAveragePooling2D()(z)
z = L.Dropout(0.1)(z)
fit(keras.Model(i, L.Dense(10)(z)), x, "k3_mobilenetv2.keras", xt)

# a 1-D CNN on the digits as 64-step sequences
xs = x.reshape(len(x), 64, 1)
m = keras.Sequential([keras.Input((64, 1)), L.Conv1D(8, 5, padding="same", activation="relu"),
                      L.MaxPooling1D(2), L.Conv1D(16, 3, padding="same", activation="relu"),
                      L.Flatten(), L.Dense(10)])
fit(m, xs, "k3_conv1d.keras", xt.reshape(len(xt), 64, 1))
import json
json.dump({"keras_version": keras.__version__, "own_accuracy": own}, open(os.path.join(out, "keras3.json"), "w"))
'''

BUILDER = '''
import tf_keras as keras


def build(input_shape, num_outputs, width):
    """A small CNN; edgekit calls it with the data's input shape, the number of classes and the width."""
    i = keras.Input(input_shape)
    x = keras.layers.Conv2D(max(1, int(8 * width)), 3, padding="same", activation="relu")(i)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(i, keras.layers.Dense(num_outputs)(x))
'''

PRUNE = "prune: {target_sparsity: 0.5, epochs: 1, skip_layers: [last], batch_size: 64}\n"
QAT = "qat: {epochs: 1, batch_size: 64}\n"
CASES = [
    # (case, data, teacher, student, prune, qat)
    ("tf_keras .keras", "digits.npz", "null", "{model: tk.keras, epochs: 0}", PRUNE, QAT),
    ("tf_keras .h5", "digits.npz", "null", "{model: tk.h5, epochs: 0}", PRUNE, QAT),
    ("SavedModel", "digits.npz", "null", "{model: tk_saved, epochs: 0}", PRUNE, QAT),
    ("Keras 3 .keras", "digits.npz", "null", "{model: k3_cnn.keras, epochs: 0}", PRUNE, QAT),
    ("builder .py", "digits.npz", "null", "{model: 'my_models.py:build', epochs: 6, learning_rate: 0.01}", PRUNE,
     QAT),
    ("given teacher + distilled student", "digits.npz", "{model: tk.keras, epochs: 0}",
     "{model: cnn_tiny, epochs: 6, learning_rate: 0.01}", "prune: null\n", QAT),
    ("residual+depthwise (Keras 3)", "digits.npz", "null", "{model: k3_residual.keras, epochs: 0}", "prune: null\n",
     QAT),
    ("MobileNetV2-like (Keras 3)", "digits.npz", "null", "{model: k3_mobilenetv2.keras, epochs: 0}",
     "prune: null\n", "qat: null\n"),
    ("1-D CNN", "digits_seq.npz", "null", "{model: k3_conv1d.keras, epochs: 0}", "prune: null\n", "qat: null\n"),
]


def make_models(out: Path) -> None:
    """The data and every model, trained outside edgekit (tf_keras here, Keras 3 in a child)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    idx = np.random.default_rng(0).permutation(len(x))
    te, tr = idx[: len(x) // 5], idx[len(x) // 5:]
    np.savez(out / "digits.npz", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    np.savez(out / "digits_seq.npz", x_train=x[tr].reshape(-1, 64), y_train=y[tr],
             x_test=x[te].reshape(-1, 64), y_test=y[te])
    from edgekit._tf import keras, tf

    tf().keras.utils.set_random_seed(0)
    k = keras()
    m = k.Sequential([k.Input((8, 8, 1)), k.layers.Conv2D(8, 3, padding="same", activation="relu"),
                      k.layers.MaxPooling2D(), k.layers.Flatten(), k.layers.Dense(10)])
    m.compile(optimizer=k.optimizers.Adam(0.01), loss=k.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x[tr], y[tr], epochs=8, batch_size=64, verbose=0)
    m.save(out / "tk.keras")
    m.save(out / "tk.h5")
    m.save(out / "tk_saved", save_format="tf")
    (out / "my_models.py").write_text(BUILDER)
    env = {key: v for key, v in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", KERAS3, str(out)], check=True, env=env, capture_output=True)


def run_case(out: Path, case: tuple) -> dict:
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    name, data, teacher, student, prune, qat = case
    slug = "".join(c if c.isalnum() else "_" for c in name)
    path = out / f"{slug}.yaml"
    path.write_text(f"name: {slug}\nseed: 0\ndata: {{source: 'npz:{data}'}}\nteacher: {teacher}\n"
                    f"student: {student}\n{prune}{qat}targets: [rpi4, cortex-m4]\n"
                    "evaluate: {runs: 20, warmup: 2}\n")
    row = {"case": name, "recipe": str(path), "error": None}
    start = time.perf_counter()
    try:
        report = Run(load_recipe(path), path, out / "runs" / slug, force=True).execute()
    except Exception as exc:  # noqa: BLE001 - a row says what failed
        row.update(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", seconds=None)
        traceback.print_exc(file=sys.stderr)
        return row
    row["seconds"] = round(time.perf_counter() - start, 1)
    own = json.loads((out / "keras3.json").read_text())["own_accuracy"]
    model_file = next((v.split("model: ")[1].split(",")[0] for v in (student, teacher) if "model: k3_" in v), None)
    row["keras3_own_accuracy"] = own.get(model_file) if model_file else None
    stages = {s["name"]: s for s in report["stages"]}
    float_stage = next(stages[n] for n in ("pruned", "student", "teacher") if n in stages)
    given = next((s for s in report["stages"] if s.get("source")), None)
    row.update(source=given["source"] if given else None,
               given_accuracy=given["accuracy"] if given else None,
               float_accuracy=float_stage["accuracy"], float_size_bytes=float_stage["size_bytes"],
               stages=[s["name"] for s in report["stages"]],
               targets={t["name"]: {k: t.get(k) for k in ("format", "accuracy", "size_bytes", "arena_bytes",
                                                          "latency_ms")} for t in report["targets"]})
    return row


def table(rows: list[dict]) -> str:
    head = ("| input | stages | given model acc (Keras 3's own) | float acc | rpi4 int8 acc | rpi4 size B | "
            "cortex-m4 full-int8 acc "
            "| cortex-m4 size B | cortex-m4 arena B | seconds |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['case']} | failed: {r['error']} |" + " |" * (head.count("|") - 3))
            continue
        t = r["targets"]

        def pct(v):
            return "-" if v is None else f"{100 * v:.1f} %"

        own = f" ({pct(r['keras3_own_accuracy'])})" if r.get("keras3_own_accuracy") is not None else ""
        lines.append(f"| {r['case']} | {' → '.join(r['stages'])} | {pct(r['given_accuracy'])}{own} | "
                     f"{pct(r['float_accuracy'])} | {pct(t['rpi4']['accuracy'])} | {t['rpi4']['size_bytes']} | "
                     f"{pct(t['cortex-m4']['accuracy'])} | {t['cortex-m4']['size_bytes']} | "
                     f"{t['cortex-m4']['arena_bytes']} | {r['seconds']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (models, recipes, runs)")
    ap.add_argument("--json", action="store_true", help="rows as JSON on stdout, the table on stderr")
    ap.add_argument("--only", action="append", help="run only cases whose name contains this (repeatable)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not (args.out / "keras3.json").is_file():
        make_models(args.out)
    print(f"models made in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    cases = [c for c in CASES if not args.only or any(o in c[0] for o in args.only)]
    rows = [run_case(args.out, c) for c in cases]
    text = table(rows)
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(rows, indent=1))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
