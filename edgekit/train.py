"""Stage 1: train the float teacher inside a ``tf.distribute`` strategy.

``run(data, cfg, seed=..., out_dir=...)`` builds the teacher from the zoo, trains it with the
strategy the recipe asks for, and writes ``model.keras`` and ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ._tf import keras, tf
from .data import Dataset
from .errors import StageError
from .fitting import ProgressFn, StageResult, callbacks, finish_stage, make_optimizer
from .models import create_model
from .recipe import Strategy, TeacherConfig

log = logging.getLogger(__name__)


def get_strategy(kind: Strategy | str):
    """The ``tf.distribute`` strategy for ``kind``.

    ``auto``: ``MirroredStrategy`` over the visible GPUs when there are several, else over the
    logical CPUs when there are several (virtual CPUs in tests), else ``OneDeviceStrategy``.
    ``multi_worker`` reads the cluster from ``TF_CONFIG``.
    """
    kind = Strategy(kind)
    t = tf()
    gpus = t.config.list_logical_devices("GPU")
    cpus = t.config.list_logical_devices("CPU")
    if kind is Strategy.multi_worker:
        return t.distribute.MultiWorkerMirroredStrategy()
    if kind is Strategy.mirrored:
        return t.distribute.MirroredStrategy([d.name for d in (gpus or cpus)])
    if kind is Strategy.auto and len(gpus) > 1:
        return t.distribute.MirroredStrategy([d.name for d in gpus])
    if kind is Strategy.auto and not gpus and len(cpus) > 1:
        return t.distribute.MirroredStrategy([d.name for d in cpus])
    return t.distribute.OneDeviceStrategy((gpus or cpus)[0].name)


def run(data: Dataset, cfg: TeacherConfig, *, seed: int, out_dir: Path,
        progress: ProgressFn | None = None) -> StageResult:
    """Train the teacher; returns its :class:`StageResult` (model path, metrics, config)."""
    start = time.perf_counter()
    strategy = get_strategy(cfg.strategy)
    replicas = strategy.num_replicas_in_sync
    log.info("teacher %s: %s with %d replica(s)", cfg.model, type(strategy).__name__, replicas)
    k = keras()
    with strategy.scope():
        model = create_model(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes,
                             width=cfg.width, l1=cfg.l1, l2=cfg.l2, seed=seed)
        model.compile(optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.momentum),
                      loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    has_val = len(data.x_val) > 0
    hist = model.fit(data.x_train, data.y_train, epochs=cfg.epochs, batch_size=cfg.batch_size,
                     validation_data=(data.x_val, data.y_val) if has_val else None, verbose=0,
                     callbacks=callbacks("teacher", cfg, cfg.epochs, has_val=has_val, progress=progress))
    losses = hist.history.get("loss", [])
    if losses and not all(map(_finite, losses)):
        raise StageError(f"teacher training diverged (loss {losses[-1]}); lower teacher.learning_rate")
    metrics = {"strategy": type(strategy).__name__, "replicas": replicas,
               "epochs_run": len(losses), "train_seconds": round(time.perf_counter() - start, 3)}
    return finish_stage("teacher", model, out_dir, metrics, cfg, x_test=data.x_test, y_test=data.y_test)


def _finite(v: float) -> bool:
    import math

    return math.isfinite(v)
