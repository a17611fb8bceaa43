"""Stage 2: distill the teacher into a small student.

Loss on logits: ``L = (1-alpha)·CE(y, s) + alpha·T²·KL(softmax(t/T) || softmax(s/T))``.
The teacher is frozen; its logits are computed once for the whole training split (the data fits
in memory and there is no augmentation, so this is exact) and fed to the student as part of the
target, so plain ``model.fit`` works under any strategy.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ._tf import keras, tf
from .data import Dataset
from .fitting import ProgressFn, StageResult, accuracy, callbacks, finish_stage, make_optimizer
from .models import create_model
from .recipe import StudentConfig

log = logging.getLogger(__name__)


def distillation_loss(num_classes: int, temperature: float, alpha: float):
    """Loss over targets ``[one_hot(y) | teacher_logits]`` (width 2·C) and student logits."""
    t = tf()
    T = float(temperature)

    def loss(target, student_logits):
        y_true, teacher_logits = target[:, :num_classes], target[:, num_classes:]
        ce = t.keras.losses.categorical_crossentropy(y_true, student_logits, from_logits=True)
        p_teacher = t.nn.softmax(teacher_logits / T)
        log_p_teacher = t.nn.log_softmax(teacher_logits / T)
        log_p_student = t.nn.log_softmax(student_logits / T)
        kl = t.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
        return (1.0 - alpha) * ce + alpha * T * T * kl

    return loss


def _accuracy_metric(num_classes: int):
    t = tf()

    def accuracy(target, logits):
        return t.cast(t.equal(t.argmax(target[:, :num_classes], -1), t.argmax(logits, -1)), t.float32)

    return accuracy


def _targets(y: np.ndarray, teacher_logits: np.ndarray, num_classes: int) -> np.ndarray:
    return np.concatenate([np.eye(num_classes, dtype="float32")[y], teacher_logits.astype("float32")], 1)


def train_student(teacher, data: Dataset, cfg: StudentConfig, *, seed: int, alpha: float | None = None,
                  progress: ProgressFn | None = None, stage: str = "student"):
    """Train a fresh student; ``alpha=0`` (or no teacher) is training from scratch on labels."""
    alpha = cfg.alpha if alpha is None else alpha
    n = data.num_classes
    model = create_model(cfg.model, input_shape=data.input_shape, num_classes=n,
                         width=cfg.width, l1=cfg.l1, l2=cfg.l2, seed=seed)

    def soft(x):
        if teacher is None:
            return np.zeros((len(x), n), "float32")
        return teacher.predict(x, batch_size=256, verbose=0)

    y_train = _targets(data.y_train, soft(data.x_train), n)
    has_val = len(data.x_val) > 0
    val = (data.x_val, _targets(data.y_val, soft(data.x_val), n)) if has_val else None
    model.compile(optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.momentum),
                  loss=distillation_loss(n, cfg.temperature, alpha), metrics=[_accuracy_metric(n)])
    hist = model.fit(data.x_train, y_train, epochs=cfg.epochs, batch_size=cfg.batch_size,
                     validation_data=val, verbose=0,
                     callbacks=callbacks(stage, cfg, cfg.epochs, has_val=has_val, progress=progress))
    return model, len(hist.history.get("loss", []))


def run(teacher, data: Dataset, cfg: StudentConfig, *, seed: int, out_dir: Path,
        progress: ProgressFn | None = None, baseline: bool | None = None) -> StageResult:
    """Distill ``teacher`` into ``cfg.model``; with ``baseline`` also train the same student
    from scratch (alpha = 0, same epochs and seed) and record both accuracies (default:
    ``cfg.baseline``)."""
    baseline = cfg.baseline if baseline is None else baseline
    start = time.perf_counter()
    keras()
    model, epochs_run = train_student(teacher, data, cfg, seed=seed, progress=progress)
    metrics = {"temperature": cfg.temperature, "alpha": cfg.alpha, "epochs_run": epochs_run,
               "train_seconds": round(time.perf_counter() - start, 3)}
    if baseline:
        scratch, _ = train_student(None, data, cfg, seed=seed, alpha=0.0, progress=progress,
                                   stage="student-baseline")
        metrics["baseline_accuracy"] = accuracy(scratch, data.x_test, data.y_test)
        metrics["distillation_gain"] = round(accuracy(model, data.x_test, data.y_test)
                                             - metrics["baseline_accuracy"], 6)
    return finish_stage("student", model, out_dir, metrics, cfg, x_test=data.x_test, y_test=data.y_test)
