"""Stage 4: quantization-aware training (int8), preserving the pruned zeros when asked.

Uses tensorflow-model-optimization's default 8-bit scheme, or its prune-preserving scheme
(``Default8BitPrunePreserveQuantizeScheme``) when the input model was pruned, so fine-tuning
does not refill the zeros. The sparsity before and after is measured and recorded.

Saving: a QAT model does not round-trip through the ``.keras`` format in tf_keras 2.21 (its
``quantize_layer`` variables fail to load), and HDF5 models cannot be loaded with ``safe_mode``.
So the stage folder holds ``base.keras`` (the float model QAT started from, loaded with
``safe_mode``) and ``qat.weights.h5`` (the trained QAT weights, fake-quant ranges included);
:func:`load` rebuilds the QAT model from the two with the scheme recorded in ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from . import tasks
from ._tf import keras, tfmot
from .data import Dataset
from .fitting import ProgressFn, StageResult, callbacks, finish_stage, make_optimizer, model_stats
from .recipe import QatConfig

log = logging.getLogger(__name__)


def run(model, data: Dataset, cfg: QatConfig, *, seed: int, out_dir: Path, pruned: bool,
        pruned_layers: list[str] = (), progress: ProgressFn | None = None) -> StageResult:
    """QAT-fine-tune ``model`` (saved as described in the module docstring).

    ``pruned_layers``: the layers pruning made sparse; their kernels' share of zeros after QAT
    is reported as ``sparsity`` (comparable with the pruned stage's)."""
    start = time.perf_counter()
    keras()
    task = tasks.get(data.task)
    x_train, y_train = task.fit_data(data, "train")
    x_val, y_val = task.fit_data(data, "val")
    before = model_stats(model)
    scheme = "prune_preserve_8bit" if (cfg.preserve_sparsity and pruned) else "default_8bit"
    qat = apply_qat(model, scheme)
    calibrated = calibrate_ranges(qat, model, x_train[: cfg.calibration_samples])
    qat.compile(optimizer=make_optimizer("adam", cfg.learning_rate), loss=task.loss(),
                metrics=task.keras_metrics())
    has_val = len(x_val) > 0
    if cfg.epochs:
        qat.fit(x_train, y_train, epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=0,
                validation_data=(x_val, y_val) if has_val else None,
                callbacks=[*filter(None, [fixed_layers_callback(qat)]),
                           *callbacks("qat", None, cfg.epochs, has_val=has_val, progress=progress)])
    after = _kernel_sparsity(qat)
    metrics = {"scheme": scheme, "calibrated_ranges": calibrated,
               "sparsity_before": before["sparsity_overall"], "kernel_sparsity_after": after,
               **({"sparsity": _kernel_sparsity(qat, only=pruned_layers)} if pruned_layers else {}),
               "train_seconds": round(time.perf_counter() - start, 3)}

    def save(folder: Path) -> Path:
        from .fitting import save_model

        save_model(model, folder / BASE_FILE)
        tmp = folder / f".tmp-{WEIGHTS_FILE}"
        qat.save_weights(tmp)
        tmp.replace(folder / WEIGHTS_FILE)
        return folder / WEIGHTS_FILE

    return finish_stage("qat", qat, out_dir, metrics, cfg, quantized=True, save=save, data=data)


def calibrate_ranges(qat_model, float_model, x) -> int:
    """Start the QAT activation ranges from the float model's measured ranges.

    tfmot's moving-average range trackers start at [-6, 6] and move with decay 0.999, so a
    few epochs of QAT leave ReLU outputs quantized over [-6, 6] (half the int8 codes wasted on
    values that never occur) and logits beyond +-6 saturated. Here every ``post_activation``
    range (and the input's) is set from the float model's outputs on ``x`` before fine-tuning;
    QAT then keeps adapting them. Returns how many ranges were set.
    """
    import numpy as np

    k = keras()
    layers = [layer for layer in float_model.layers if not isinstance(layer, k.layers.InputLayer)]
    probe = k.Model(float_model.inputs, [layer.output for layer in layers])
    outputs = dict(zip((layer.name for layer in layers), probe.predict(x, batch_size=256, verbose=0)))
    count = 0
    for layer in qat_model.layers:
        if layer.name.startswith("quantize_layer"):
            ranges = (float(min(0.0, x.min())), float(max(0.0, x.max())))
        elif layer.name.startswith("quant_") and layer.name[6:] in outputs:
            out = np.asarray(outputs[layer.name[6:]])
            ranges = (float(min(0.0, out.min())), float(max(0.0, out.max())))
        else:
            continue
        for w in layer.weights:
            short = w.name.split("/")[-1].split(":")[0]
            if short.endswith(("post_activation_min", "quantize_layer_min")):
                w.assign(ranges[0])
                count += 1
            elif short.endswith(("post_activation_max", "quantize_layer_max")):
                w.assign(ranges[1])
                count += 1
    return count


BASE_FILE = "base.keras"
WEIGHTS_FILE = "qat.weights.h5"


def apply_qat(model, scheme: str):
    """Wrap ``model`` for QAT with ``scheme`` (``default_8bit`` or ``prune_preserve_8bit``).

    Layers that are not trainable (the fixed input reduction) are wrapped like any other and
    fake-quantized; :func:`fixed_layers_callback` holds their values during training."""
    q = tfmot().quantization.keras
    annotated = q.quantize_annotate_model(model)
    if scheme == "prune_preserve_8bit":
        qat = q.quantize_apply(annotated, tfmot().experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    else:
        qat = q.quantize_apply(annotated)
    return qat


def fixed_layers_callback(qat_model):
    """A Keras callback that holds the weights of frozen layers (the fixed input reduction) at
    their values when training starts, or None when the model has no frozen layer.

    tfmot's ``QuantizeWrapper`` lists the weights it quantizes as trainable even when the wrapped
    layer is frozen (and re-tracks them in ways that differ between a fresh and a reloaded model),
    so instead of editing its weight lists the values are put back after every training batch:
    every forward pass sees the fixed projection, and the saved weights equal it exactly.
    """
    k = keras()
    names = [w.layer.name for w in qat_model.layers if getattr(w, "layer", None) is not None and not w.layer.trainable]
    if not names:
        return None
    held = [v for v in qat_model.weights if v.name.split("/")[0] in names]

    class HoldFixed(k.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.values = [v.numpy() for v in held]

        def on_train_batch_end(self, batch, logs=None):
            for v, value in zip(held, self.values):
                v.assign(value)

    return HoldFixed()


def load(stage_dir: Path):
    """Rebuild the QAT model saved by :func:`run` in ``stage_dir``."""
    import json

    from .fitting import load_model

    scheme = json.loads((stage_dir / "metrics.json").read_text())["scheme"]
    qat = apply_qat(load_model(stage_dir / BASE_FILE), scheme)
    qat.load_weights(stage_dir / WEIGHTS_FILE)
    return qat


def _kernel_sparsity(qat_model, *, only: list[str] = ()) -> float:
    """Share of zeros among the kernels inside the QAT wrappers (of the layers named in ``only``,
    when given; the wrapped kernels keep their layer's name, ``conv/kernel:0``)."""
    import numpy as np

    wanted = set(only)
    zeros = total = 0
    for w in qat_model.trainable_weights:
        if "kernel" in w.name and (not wanted or w.name.split("/")[0] in wanted):
            a = w.numpy()
            zeros, total = zeros + a.size - np.count_nonzero(a), total + a.size
    return round(float(zeros / total), 6) if total else 0.0
