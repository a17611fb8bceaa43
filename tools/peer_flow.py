#!/usr/bin/env python3
"""The peer flow of the tensorflow-model-optimization guides, written from their steps, not through
edgekit's stages, and measured by the same means edgekit uses.

Steps (the tfmot guides "Pruning in Keras", "Quantization aware training in Keras" and TFLite's
"Post-training integer quantization"): train the float model; wrap the whole model in
``prune_low_magnitude`` with ``PolynomialDecay(initial_sparsity=0.50, final_sparsity=0.80,
begin_step=0, end_step=<steps of the fine-tuning>)`` (the mask updated every ``end_step // 10`` steps,
at most the guide's 100: with the guide's default of 100 a short fine-tuning never prunes) and fine-tune with ``UpdatePruningStep``;
``strip_pruning``; ``quantize_model`` and fine-tune (QAT); ``TFLiteConverter`` with
``Optimize.DEFAULT``, a representative dataset of training samples, ``TFLITE_BUILTINS_INT8`` and
int8 input and output (full int8).

Measured like an edgekit cortex-m4 target: flash = the .tflite file's bytes; arena = the
recommended TFLite Micro tensor arena of :func:`edgekit.mcu.measure_arena` (the smallest that runs,
plus 10 %); accuracy (or ROC-AUC) and host latency p50 from edgekit's on-device evaluator running
the file in tflite-micro on the dataset's test split (``edgekit.evaluate.run_evaluator``).

The model architecture is a zoo model (:func:`edgekit.models.create_model`), so the peer flow and
edgekit compress the same network. Used by tools/bench_budget.py; by hand::

    .venv/bin/python tools/peer_flow.py recipes/har-basicmotions-m4.yaml [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

GUIDE_SPARSITY = (0.50, 0.80)  # PolynomialDecay initial and final sparsity in the pruning guide


def int8_bytes(model, x_rep: np.ndarray) -> bytes:
    """``model`` converted to full int8 the way TFLite's post-training integer guide does."""
    from edgekit._tf import tf

    lite = tf().lite
    conv = lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [lite.Optimize.DEFAULT]

    def rep():
        for i in range(len(x_rep)):
            yield [x_rep[i:i + 1].astype("float32")]

    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf().int8
    conv.inference_output_type = tf().int8
    return conv.convert()


def measure(tflite_path: Path, data, float_model, *, warmup: int = 5, runs: int = 30) -> dict:
    """Flash, recommended TFLite Micro arena, accuracy (or ROC-AUC) and host latency p50 of a file (and,
    for comparison, its flash without tensor names)."""
    from edgekit.convert import write_eval_npz
    from edgekit.evaluate import run_evaluator
    from edgekit.mcu import measure_arena
    from edgekit.recipe import EvaluateConfig

    arena = measure_arena(tflite_path)
    npz = write_eval_npz(tflite_path.with_name("eval.npz"), data, reference_model=float_model)
    res = run_evaluator(tflite_path, Path(npz), runtime="tflite_micro",
                        cfg=EvaluateConfig(warmup=warmup, runs=runs), arena_bytes=arena.recommended_bytes)
    from edgekit.tflite_file import strip_names

    return {"flash_bytes": tflite_path.stat().st_size, "arena_bytes": arena.recommended_bytes,
            # not the guides' flow: what the same file would weigh with its names stripped, as edgekit ships
            "flash_bytes_without_names": len(strip_names(tflite_path.read_bytes())[0]),
            "latency_ms": (res.get("latency_ms") or {}).get("p50"), "accuracy": res.get("accuracy"),
            "roc_auc": res.get("roc_auc")}


def peer_flow(data, *, model: str, width: float, seed: int, out_dir: Path, epochs: int, prune_epochs: int,
              qat_epochs: int, batch_size: int = 64, learning_rate: float = 1e-3, fine_tune_lr: float = 5e-4,
              rep_samples: int = 100, warmup: int = 5, runs: int = 30) -> dict:
    """Run the guides' flow on ``data`` (an :class:`edgekit.data.Dataset`) for the zoo ``model`` at
    ``width``; writes ``out_dir/peer_int8.tflite`` and returns the measured numbers."""
    from edgekit import tasks
    from edgekit._tf import keras, tfmot
    from edgekit.models import create_model

    k, mot = keras(), tfmot()
    task = tasks.get(data.task)
    x_tr, y_tr = task.fit_data(data, "train")
    val = task.fit_data(data, "val") if len(data.x_val) else None
    out_dir.mkdir(parents=True, exist_ok=True)

    def fit(m, n_epochs, lr, callbacks=()):
        m.compile(optimizer=k.optimizers.Adam(lr), loss=task.loss(), metrics=task.keras_metrics())
        m.fit(x_tr, y_tr, epochs=n_epochs, batch_size=batch_size, validation_data=val, verbose=0,
              callbacks=list(callbacks))

    # 1. the float model, trained from scratch on the labels
    float_model = create_model(model, input_shape=data.input_shape, num_classes=data.num_classes, width=width,
                               seed=seed)
    fit(float_model, epochs, learning_rate)
    # 2. magnitude pruning of the whole model with the guide's polynomial schedule, then fine-tuning
    end_step = math.ceil(len(x_tr) / batch_size) * prune_epochs
    schedule = mot.sparsity.keras.PolynomialDecay(initial_sparsity=GUIDE_SPARSITY[0],
                                                  final_sparsity=GUIDE_SPARSITY[1], begin_step=0, end_step=end_step,
                                                  frequency=max(1, min(100, end_step // 10)))
    pruned = mot.sparsity.keras.prune_low_magnitude(float_model, pruning_schedule=schedule)
    fit(pruned, prune_epochs, fine_tune_lr, [mot.sparsity.keras.UpdatePruningStep()])
    # 3. strip the pruning wrappers; 4. quantization-aware fine-tuning
    stripped = mot.sparsity.keras.strip_pruning(pruned)
    qat = mot.quantization.keras.quantize_model(stripped)
    fit(qat, qat_epochs, fine_tune_lr)
    # 5. full-int8 conversion with a representative dataset of training samples
    rng = np.random.default_rng(seed)
    x_rep = x_tr[rng.permutation(len(x_tr))[:rep_samples]]
    path = out_dir / "peer_int8.tflite"
    path.write_bytes(int8_bytes(qat, x_rep))
    kernels = [w for w in stripped.weights if "kernel" in w.name]
    zeros = sum(int(np.sum(w.numpy() == 0)) for w in kernels) / max(1, sum(int(np.prod(w.shape)) for w in kernels))
    return {**measure(path, data, float_model, warmup=warmup, runs=runs), "params": int(float_model.count_params()),
            "kernel_sparsity": round(zeros, 4), "width": width, "model": model}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path, help="its data, seed and student model/width are used")
    ap.add_argument("--epochs", type=int, help="float training epochs (default: the student's)")
    ap.add_argument("--prune-epochs", type=int, default=2)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from edgekit.data import load_for_recipe
    from edgekit.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    data = load_for_recipe(recipe, base=args.recipe.resolve().parent)
    s = recipe.student
    res = peer_flow(data, model=s.model, width=s.width, seed=recipe.seed,
                    out_dir=args.out or Path(tempfile.mkdtemp(prefix="peer-")), epochs=args.epochs or s.epochs,
                    prune_epochs=args.prune_epochs, qat_epochs=args.qat_epochs, batch_size=s.batch_size,
                    learning_rate=s.learning_rate)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
