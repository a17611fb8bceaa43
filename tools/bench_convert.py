"""Keras-to-TFLite conversion the way edgekit does it against the SavedModel way, side by side in one run.

``edgekit.convert.to_tflite`` traces the model's inference call once and converts the frozen graph,
then writes the ``serving_default`` signature LiteRT's signature runners call (mobile and Pi files)
or leaves it out (``signature=False``: TFLite Micro's files, stage sizes). The converter's usual way,
``TFLiteConverter.from_keras_model``, lowers the model through a SavedModel first. For each zoo
model (float and QAT) and mode this prints the three times, the SavedModel way's time over
edgekit's, the sizes, and whether edgekit's files compute the same outputs with the same ops and
(with a signature) the same signature in LiteRT:

    python tools/bench_convert.py                 # cnn_tiny, ds_cnn, resnet8
    python tools/bench_convert.py --models ds_cnn --json-out b.json

Times are wall-clock seconds of one conversion (each model converted once before timing, so
TensorFlow's first-use costs are not in any column). Exit status 1 if any file differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {"cnn_tiny": (8, 8, 1), "ds_cnn": (49, 10, 1), "resnet8": (32, 32, 3)}


def _outputs(blob: bytes, x: np.ndarray) -> tuple[np.ndarray, list[str], dict]:
    """The model's outputs on ``x`` in LiteRT (edgekit's evaluator path), its ops (one per
    operator) and its signatures."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.ondevice.evaluate import predict_outputs
    from edgekit.tflite_file import read

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-convert-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(blob)
        y = predict_outputs(str(path), x, runtime="ai_edge_litert")
    return (y, sorted(o.op for o in read(blob).subgraphs[0].operators),
            Interpreter(model_content=blob).get_signature_list())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)

    from edgekit._tf import tf
    from edgekit.convert import _convert, to_tflite
    from edgekit.models import create_model
    from edgekit.quantize import apply_qat

    rows = []
    for name in args.models:
        shape = SHAPES[name]
        x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)

        def rep(x=x):
            for i in range(len(x)):
                yield [x[i : i + 1]]

        float_model = create_model(name, input_shape=shape, num_classes=10, seed=0)
        qat = apply_qat(float_model, "default_8bit")
        qat(x[:1])
        for label, model, modes in (("float", float_model, ["float32", "fp16", "int8", "full-int8"]),
                                    ("qat", qat, ["int8", "full-int8"])):
            to_tflite(model, mode="float32" if label == "float" else "int8", rep=rep)  # warm up
            for mode in modes:
                t0 = time.perf_counter()
                savedmodel = _convert(tf().lite.TFLiteConverter.from_keras_model(model), mode, rep)
                t1 = time.perf_counter()
                signed = to_tflite(model, mode=mode, rep=rep)
                t2 = time.perf_counter()
                unsigned = to_tflite(model, mode=mode, rep=rep, signature=False)
                t3 = time.perf_counter()
                ya, oa, sa = _outputs(savedmodel, x)
                yb, ob, sb = _outputs(signed, x)
                yc, oc, _ = _outputs(unsigned, x)
                rows.append({"model": name, "kind": label, "mode": mode, "savedmodel_s": round(t1 - t0, 3),
                             "frozen_signature_s": round(t2 - t1, 3), "frozen_s": round(t3 - t2, 3),
                             "ratio": round((t1 - t0) / (t2 - t1), 1), "savedmodel_bytes": len(savedmodel),
                             "frozen_signature_bytes": len(signed), "frozen_bytes": len(unsigned),
                             "same_outputs": bool(np.array_equal(ya, yb) and np.array_equal(ya, yc)),
                             "same_ops": oa == ob == oc, "same_signature": sa == sb})
                r = rows[-1]
                print(f"{name:9s} {label:5s} {mode:9s} SavedModel way {r['savedmodel_s']:6.2f} s, edgekit "
                      f"{r['frozen_signature_s']:5.2f} s ({r['ratio']:5.1f}x; no signature {r['frozen_s']:5.2f} s); "
                      f"{r['savedmodel_bytes']} / {r['frozen_signature_bytes']} / {r['frozen_bytes']} B; same outputs "
                      f"{r['same_outputs']}, ops {r['same_ops']}, signature {r['same_signature']}", flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["same_outputs"] and r["same_ops"] and r["same_signature"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
