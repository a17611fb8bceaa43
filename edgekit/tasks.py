"""What a task means to every stage: the loss, the training targets, and the stage metrics.

A recipe's ``task`` (``classification``, ``regression`` or ``anomaly``) travels with its
:class:`~edgekit.data.Dataset` (``data.task``); the training stages (teacher, student, pruning,
QAT), the converters and the pipeline ask :func:`get` for the task's logic instead of branching
on the task themselves:

=================  ===========================  =============================  ==========================
                   classification               regression                     anomaly
=================  ===========================  =============================  ==========================
model output       class logits                 one value                      reconstruction of the input
training data      train split, class labels    train split, values            normal samples only (label 0),
                                                                               the input is the target
loss               cross-entropy                MSE                            MSE(x, reconstruction)
distillation       (1-α)·CE + α·T²·KL           (1-α)·MSE(y,s) + α·MSE(t,s)    (1-α)·MSE(x,s) + α·MSE(t(x),s)
score              argmax                       the prediction                 mean squared reconstruction error
metrics            accuracy                     MAE, RMSE, R², bias            ROC-AUC; precision, recall, F1 at
                                                                               the validation threshold
=================  ===========================  =============================  ==========================

The metrics are computed by the functions of the on-device evaluator
(:mod:`edgekit.ondevice.evaluate`), so a stage's number and a target's number come from the same
code. Anomaly thresholds are chosen on the validation split (:func:`choose_threshold`).

Example::

    task = get(data.task)
    model.compile(optimizer="adam", loss=task.loss(), metrics=task.keras_metrics())
    model.fit(*task.fit_data(data, "train"), validation_data=task.fit_data(data, "val"))
    task.stage_metrics(model, data)   # {"accuracy": None, "metrics": {"mae": ..., ...}}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .ondevice import evaluate as ev
from .recipe import Task

MAX_THRESHOLD_CANDIDATES = 1024
"""At most this many candidate thresholds (score quantiles) are tried when maximizing F1."""


def _predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


def choose_threshold(y_val: np.ndarray | None, scores_val: np.ndarray) -> tuple[float, str]:
    """The anomaly threshold (score >= threshold flags an anomaly) and the rule that chose it.

    ``max-f1-on-val``: when the validation labels hold both classes, the threshold among the
    validation scores (at most :data:`MAX_THRESHOLD_CANDIDATES` quantiles) with the highest F1
    (ties: the highest threshold). ``p99-normal-val``: otherwise the 99th percentile of the
    normal samples' scores (of all scores when there are no labels).
    """
    scores_val = np.asarray(scores_val, dtype=np.float64).ravel()
    if len(scores_val) == 0:
        raise ValueError("choose_threshold needs at least one validation score")
    y = None if y_val is None else np.asarray(y_val).ravel()
    if y is not None and (y == 1).any() and (y == 0).any():
        candidates = np.unique(scores_val)
        if len(candidates) > MAX_THRESHOLD_CANDIDATES:
            candidates = np.unique(np.quantile(scores_val, np.linspace(0, 1, MAX_THRESHOLD_CANDIDATES)))
        best = max(candidates, key=lambda t: ((ev.threshold_metrics(y, scores_val, t)["f1"] or 0.0), t))
        return float(best), "max-f1-on-val"
    normal = scores_val if y is None else scores_val[y == 0]
    return float(np.percentile(normal, 99)), "p99-normal-val"


class Classification:
    """Class logits, cross-entropy, top-1 accuracy."""

    name = Task.classification.value
    main_metric = "accuracy"
    higher_is_better = True

    def loss(self):
        from ._tf import keras

        return keras().losses.SparseCategoricalCrossentropy(from_logits=True)

    def keras_metrics(self) -> list:
        return ["accuracy"]

    def fit_data(self, data, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of ``split`` (train or val) that the model is fitted on."""
        return getattr(data, f"x_{split}"), getattr(data, f"y_{split}")

    # ---------------------------------------------------------------- distillation

    def distill_targets(self, data, split: str, teacher_out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) for distillation: ``[one_hot(y) | teacher logits]`` (zeros without a teacher)."""
        x, y = self.fit_data(data, split)
        n = data.num_classes
        t = np.zeros((len(x), n), "float32") if teacher_out is None else teacher_out.astype("float32")
        return x, np.concatenate([np.eye(n, dtype="float32")[y], t], 1)

    def distill_loss(self, data, *, temperature: float, alpha: float):
        """``L = (1-α)·CE(y, s) + α·T²·KL(softmax(t/T) ‖ softmax(s/T))`` over :meth:`distill_targets`."""
        from ._tf import tf

        t, n, T = tf(), data.num_classes, float(temperature)

        def loss(target, student_logits):
            y_true, teacher_logits = target[:, :n], target[:, n:]
            ce = t.keras.losses.categorical_crossentropy(y_true, student_logits, from_logits=True)
            p_teacher = t.nn.softmax(teacher_logits / T)
            log_p_teacher = t.nn.log_softmax(teacher_logits / T)
            log_p_student = t.nn.log_softmax(student_logits / T)
            kl = t.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
            return (1.0 - alpha) * ce + alpha * T * T * kl

        return loss

    def distill_metrics(self, data) -> list:
        from ._tf import tf

        t, n = tf(), data.num_classes

        def accuracy(target, logits):
            return t.cast(t.equal(t.argmax(target[:, :n], -1), t.argmax(logits, -1)), t.float32)

        return [accuracy]

    # ---------------------------------------------------------------- scoring

    def stage_metrics(self, model, data) -> dict[str, Any]:
        """``{"accuracy", "metrics"}`` of a Keras model on the test split."""
        m = ev.classification_metrics(data.y_test, _predict(model, data.x_test))
        return {"accuracy": m["accuracy"], "metrics": m}

    def eval_arrays(self, model, data, n: int) -> dict[str, np.ndarray]:
        """What ``eval.npz`` holds besides ``x``: labels, the float model's predicted classes, the task."""
        ref = _predict(model, data.x_test).argmax(-1)
        return {"y": data.y_test[:n].astype("int64"), "ref": ref[:n].astype("int64"), "task": np.array(self.name)}

    def gain(self, distilled: dict, baseline: dict) -> float | None:
        """How much better the distilled student is than the one trained from scratch (main metric)."""
        a, b = distilled.get(self.main_metric), baseline.get(self.main_metric)
        if a is None or b is None:
            return None
        return round((a - b) if self.higher_is_better else (b - a), 6)


class Regression(Classification):
    """One output value, MSE; MAE, RMSE, R² and bias in the label's units."""

    name = Task.regression.value
    main_metric = "mae"
    higher_is_better = False

    def loss(self):
        from ._tf import keras

        return keras().losses.MeanSquaredError()

    def keras_metrics(self) -> list:
        from ._tf import keras

        return [keras().metrics.MeanAbsoluteError(name="mae")]

    def fit_data(self, data, split: str = "train"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        return x, np.asarray(y, "float32").reshape(-1, 1)

    def distill_targets(self, data, split, teacher_out):
        x, y = self.fit_data(data, split)
        t = np.zeros_like(y) if teacher_out is None else np.asarray(teacher_out, "float32").reshape(-1, 1)
        return x, np.concatenate([y, t], 1)

    def distill_loss(self, data, *, temperature: float, alpha: float):
        """``L = (1-α)·MSE(y, s) + α·MSE(teacher, s)`` (the temperature has no role here)."""
        from ._tf import tf

        t = tf()

        def loss(target, pred):
            s = t.reshape(pred, (-1, 1))
            return ((1.0 - alpha) * t.reduce_mean(t.square(target[:, :1] - s), -1)
                    + alpha * t.reduce_mean(t.square(target[:, 1:] - s), -1))

        return loss

    def distill_metrics(self, data) -> list:
        from ._tf import tf

        t = tf()

        def mae(target, pred):
            return t.reduce_mean(t.abs(target[:, :1] - t.reshape(pred, (-1, 1))), -1)

        return [mae]

    def predictions(self, model, x) -> np.ndarray:
        return _predict(model, x).reshape(len(x), -1)[:, 0]

    def stage_metrics(self, model, data):
        return {"accuracy": None, "metrics": ev.regression_metrics(data.y_test, self.predictions(model, data.x_test))}

    def eval_arrays(self, model, data, n):
        ref = self.predictions(model, data.x_test)
        return {"y": data.y_test[:n].astype("float32"), "ref": ref[:n].astype("float32"), "task": np.array(self.name)}


class Anomaly(Regression):
    """An autoencoder fitted on normal samples; the reconstruction error is the anomaly score."""

    name = Task.anomaly.value
    main_metric = "roc_auc"
    higher_is_better = True

    def keras_metrics(self) -> list:
        return []

    def fit_data(self, data, split: str = "train"):
        """The normal samples (label 0) of ``split``, as inputs and targets."""
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        normal = x[np.asarray(y) == 0]
        return normal, normal

    def distill_targets(self, data, split, teacher_out):
        x, _ = self.fit_data(data, split)
        flat = x.reshape(len(x), -1).astype("float32")
        t = np.zeros_like(flat) if teacher_out is None else np.asarray(teacher_out, "float32").reshape(len(x), -1)
        return x, np.concatenate([flat, t], 1)

    def distill_loss(self, data, *, temperature: float, alpha: float):
        """``L = (1-α)·MSE(x, s) + α·MSE(teacher(x), s)`` on the reconstructions."""
        from ._tf import tf

        t = tf()
        size = int(np.prod(data.input_shape))

        def loss(target, recon):
            s = t.reshape(recon, (-1, size))
            return ((1.0 - alpha) * t.reduce_mean(t.square(target[:, :size] - s), -1)
                    + alpha * t.reduce_mean(t.square(target[:, size:] - s), -1))

        return loss

    def distill_metrics(self, data) -> list:
        return []

    def scores(self, model, x: np.ndarray) -> np.ndarray:
        """Anomaly score per sample: the mean squared reconstruction error."""
        return ev.reconstruction_error(x, _predict(model, x))

    def threshold(self, model, data) -> tuple[float, str]:
        """The threshold :func:`choose_threshold` picks on the validation split (the training split's
        normal samples when there is no validation split)."""
        if len(data.x_val):
            return choose_threshold(data.y_val, self.scores(model, data.x_val))
        normal = self.fit_data(data, "train")[0]
        t, _ = choose_threshold(None, self.scores(model, normal))
        return t, "p99-normal-train"

    def stage_metrics(self, model, data):
        threshold, rule = self.threshold(model, data)
        return {"accuracy": None, "metrics": ev.anomaly_metrics(data.y_test, self.scores(model, data.x_test), threshold),
                "threshold_rule": rule}

    def eval_arrays(self, model, data, n):
        threshold, _ = self.threshold(model, data)
        ref = self.scores(model, data.x_test)
        return {"y": data.y_test[:n].astype("int64"), "ref": ref[:n].astype("float32"), "task": np.array(self.name),
                "threshold": np.array(threshold, dtype="float64")}


_TASKS = {t.name: t for t in (Classification(), Regression(), Anomaly())}


def get(task: Task | str | None):
    """The logic of ``task`` (a :class:`~edgekit.recipe.Task` or its name; None: classification)."""
    return _TASKS[Task(task or Task.classification).value]
