"""Training plumbing shared by the stages that train (teacher, student, pruning, QAT).

Holds what every training stage needs and nothing stage-specific: optimizer construction,
callbacks (early stopping, progress), model statistics, and atomic model save / load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._io import guard, write_json, write_text  # noqa: F401 - re-exported
from ._tf import keras
from .interrupt import INTERRUPT
from .recipe import Training

ProgressFn = Callable[[str, int, int, dict], None]
"""``progress(stage, epoch_done, epochs_total, logs)``: called after each epoch."""


def make_optimizer(optimizer: str, learning_rate: float, momentum: float = 0.9):
    k = keras()
    if optimizer == "adam":
        return k.optimizers.Adam(learning_rate)
    if optimizer == "rmsprop":
        return k.optimizers.RMSprop(learning_rate)
    if optimizer == "sgd":
        return k.optimizers.SGD(learning_rate, momentum=momentum)
    raise ValueError(f"unknown optimizer {optimizer!r}")


def callbacks(stage: str, cfg: Training | None, epochs: int, *, has_val: bool,
              progress: ProgressFn | None, batch_hooks: bool = True) -> list:
    """Stopping at a Ctrl-C (:data:`INTERRUPT`, after each batch; ``batch_hooks=False`` leaves it
    out: ParameterServerStrategy refuses batch-level callbacks, and a cluster's processes get no
    Ctrl-C of their own), early stopping (when configured and a validation split exists) and
    progress reporting."""
    k = keras()

    class _StopOnInterrupt(k.callbacks.Callback):
        _supports_tf_logs = True  # it reads no logs: Keras need not turn them into numbers every batch

        def on_train_batch_end(self, batch, logs=None):
            if INTERRUPT.is_set():
                raise KeyboardInterrupt

    cbs: list = [_StopOnInterrupt()] if batch_hooks else []
    if cfg is not None and cfg.early_stopping is not None and has_val:
        es = cfg.early_stopping
        cbs.append(k.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience,
                                             restore_best_weights=True))
    if progress is not None:
        class _Progress(k.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                progress(stage, epoch + 1, epochs, {a: float(b) for a, b in (logs or {}).items()})

        cbs.append(_Progress())
    return cbs


def weighted_layers(model) -> list:
    """Layers that carry a kernel (Conv, Dense...), in order."""
    return [layer for layer in model.layers if getattr(layer, "kernel", None) is not None]


def model_stats(model) -> dict[str, Any]:
    """Parameter counts from the weights themselves: ``params``, ``nonzero_params``, ``sparsity``.

    ``sparsity`` here is the share of zeros among all trainable weights of the model. Weights of
    frozen layers (the fixed input reduction) are not counted, also inside QAT wrappers, which
    list the kernels they quantize as trainable even when the wrapped layer is frozen.
    """
    frozen = {getattr(layer, "layer", layer).name for layer in model.layers
              if not getattr(layer, "layer", layer).trainable}
    weights = [w.numpy() for w in model.trainable_weights if w.name.split("/")[0] not in frozen]
    params = int(sum(w.size for w in weights))
    nonzero = int(sum(np.count_nonzero(w) for w in weights))
    return {"params": params, "nonzero_params": nonzero,
            "sparsity_overall": round(1 - nonzero / params, 6) if params else 0.0}


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a logits model on ``x``."""
    pred = model.predict(x, batch_size=256, verbose=0).argmax(-1)
    return float((pred == y).mean())


def tflite_bytes(model, *, quantized: bool = False) -> bytes:
    """The model converted to TFLite to be measured (its size, its ops): float32, or int8 when
    ``quantized`` (QAT models); without a signature def (:func:`edgekit.convert.to_tflite`)."""
    from .convert import to_tflite

    return to_tflite(model, mode="dynamic" if quantized else "float32", signature=False)


def size_info(blob: bytes) -> dict[str, int]:
    """Raw and gzip (-9) sizes of a model file in bytes."""
    return {"size_bytes": len(blob), "gzip_bytes": len(gzip.compress(blob, 9))}


def save_model(model, path: Path) -> Path:
    """Save a Keras model to ``path`` (``.keras``) atomically: temp file, then rename. Inside a
    run, a path outside the run directory is refused (:func:`edgekit._io.guard`)."""
    guard(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def load_model(path: Path, *, quantized: bool = False):
    """Load a ``.keras`` model with ``safe_mode`` on (QAT models inside ``quantize_scope``)."""
    k = keras()
    if quantized:
        from ._tf import tfmot

        with tfmot().quantization.keras.quantize_scope():
            return k.models.load_model(path, compile=False, safe_mode=True)
    return k.models.load_model(path, compile=False, safe_mode=True)


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a training stage produced: its model file, metrics, and the config that made it."""

    name: str
    model_path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]


def finish_stage(name: str, model, out_dir: Path, metrics: dict[str, Any], config: Any,
                 *, x_test: np.ndarray | None = None, y_test: np.ndarray | None = None, quantized: bool = False,
                 save: Callable[[Path], Path] | None = None, data=None) -> StageResult:
    """Measure a trained model (params, sizes, test metrics), save it and its metrics.json.

    With ``data`` (a :class:`~edgekit.data.Dataset`) the metrics are its task's
    (:meth:`edgekit.tasks.Classification.stage_metrics`: ``accuracy`` - null for tasks other than
    classification - and ``metrics``); without, the top-1 accuracy on ``x_test``/``y_test``.
    ``save(out_dir) -> model_path`` overrides how the model is written (default ``model.keras``).
    """
    blob = tflite_bytes(model, quantized=quantized)
    if data is not None:
        from . import tasks

        scored = tasks.get(data.task).stage_metrics(model, data)
    else:
        scored = {"accuracy": accuracy(model, x_test, y_test)}
    metrics = {**model_stats(model), **metrics,
               **size_info(blob), "size_format": "tflite-int8" if quantized else "tflite-float32", **scored}
    path = save(out_dir) if save else save_model(model, out_dir / "model.keras")
    cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    write_json(out_dir / "metrics.json", {"stage": name, **metrics, "config": cfg})
    return StageResult(name, path, metrics, cfg)
