"""Stage 2: distill the teacher into a small student.

The loss is the task's (:mod:`edgekit.tasks`): on logits for classification,
``L = (1-alpha)·CE(y, s) + alpha·T²·KL(softmax(t/T) || softmax(s/T))``; for regression
``(1-alpha)·MSE(y, s) + alpha·MSE(t, s)``; for an anomaly autoencoder
``(1-alpha)·MSE(x, s) + alpha·MSE(t(x), s)``. The teacher is frozen; its outputs are computed
once for the whole training split (the data fits in memory and there is no augmentation, so
this is exact) and fed to the student as part of the target, so plain ``model.fit`` works under
any strategy.
"""

from __future__ import annotations

import logging
import time
import types
from pathlib import Path

from . import tasks
from ._tf import keras
from .data import Dataset
from .fitting import ProgressFn, StageResult, callbacks, finish_stage, make_optimizer
from .models import create_model
from .recipe import StudentConfig

log = logging.getLogger(__name__)


def distillation_loss(num_classes: int, temperature: float, alpha: float):
    """The classification loss over targets ``[one_hot(y) | teacher_logits]`` (width 2·C) and
    student logits (see :meth:`edgekit.tasks.Classification.distill_loss`)."""
    shape = types.SimpleNamespace(num_classes=num_classes)
    return tasks.get("classification").distill_loss(shape, temperature=temperature, alpha=alpha)


def train_student(teacher, data: Dataset, cfg: StudentConfig, *, seed: int, alpha: float | None = None,
                  progress: ProgressFn | None = None, stage: str = "student"):
    """Train a fresh student; ``alpha=0`` (or no teacher) is training from scratch on the labels."""
    alpha = cfg.alpha if alpha is None else alpha
    task = tasks.get(data.task)
    model = create_model(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes,
                         width=cfg.width, l1=cfg.l1, l2=cfg.l2, seed=seed, reduction=data.reduction)

    def targets(split: str):
        x, _ = task.fit_data(data, split)
        soft = None if teacher is None else teacher.predict(x, batch_size=256, verbose=0)
        return task.distill_targets(data, split, soft)

    x_train, y_train = targets("train")
    has_val = len(task.fit_data(data, "val")[0]) > 0
    val = targets("val") if has_val else None
    model.compile(optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.momentum),
                  loss=task.distill_loss(data, temperature=cfg.temperature, alpha=alpha),
                  metrics=task.distill_metrics(data))
    hist = model.fit(x_train, y_train, epochs=cfg.epochs, batch_size=cfg.batch_size,
                     validation_data=val, verbose=0,
                     callbacks=callbacks(stage, cfg, cfg.epochs, has_val=has_val, progress=progress))
    return model, len(hist.history.get("loss", []))


def run(teacher, data: Dataset, cfg: StudentConfig, *, seed: int, out_dir: Path,
        progress: ProgressFn | None = None, baseline: bool | None = None) -> StageResult:
    """Distill ``teacher`` into ``cfg.model``; with ``baseline`` also train the same student
    from scratch (alpha = 0, same epochs and seed) and record both (default: ``cfg.baseline``).

    Baseline metrics: ``baseline_metrics`` (the task's metrics of the student trained from
    scratch; classification also ``baseline_accuracy``) and ``distillation_gain``: how much
    better the distilled student's main metric is (accuracy, MAE or ROC-AUC; for MAE the
    baseline's minus the distilled, so positive always means distillation helped)."""
    baseline = cfg.baseline if baseline is None else baseline
    start = time.perf_counter()
    keras()
    task = tasks.get(data.task)
    alpha = cfg.alpha if teacher is not None else 0.0  # no teacher (teacher: null): the labels alone
    model, epochs_run = train_student(teacher, data, cfg, seed=seed, alpha=alpha, progress=progress)
    metrics = {"temperature": cfg.temperature, "alpha": alpha, "epochs_run": epochs_run,
               "train_seconds": round(time.perf_counter() - start, 3)}
    if baseline:
        scratch, _ = train_student(None, data, cfg, seed=seed, alpha=0.0, progress=progress,
                                   stage="student-baseline")
        base = task.stage_metrics(scratch, data)
        if base["accuracy"] is not None:
            metrics["baseline_accuracy"] = base["accuracy"]
        metrics["baseline_metrics"] = base["metrics"]
        metrics["distillation_gain"] = task.gain(task.stage_metrics(model, data)["metrics"], base["metrics"])
    return finish_stage("student", model, out_dir, metrics, cfg, data=data)
