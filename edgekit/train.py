"""Stage 1: train the float teacher inside a ``tf.distribute`` strategy, and survive failures.

``run(data, cfg, seed=..., out_dir=...)`` builds the teacher from the zoo, trains it with the
strategy the recipe asks for, and writes ``model.keras`` and ``metrics.json``.

- **Input**: a ``tf.data`` pipeline (:func:`make_dataset`): cache, seeded shuffle, batches of the
  recipe's *global* ``batch_size`` (each of R replicas gets ``batch_size / R``), prefetch
  (AUTOTUNE), auto-shard policy DATA (the data is in memory, there are no files to shard).
- **Fault tolerance**: ``BackupAndRestore`` backs up model, optimizer and epoch to
  ``out_dir/.backup`` after every epoch, for every strategy. Calling ``run`` again after a crash
  (``edgekit run --resume``, or a restarted worker) continues from the last backup, so finished
  epochs are not redone. The backup carries a fingerprint of config, seed and data; a backup
  made for anything else is discarded. It is deleted once the model is saved.
- **Clusters**: ``multi_worker`` and ``parameter_server`` read the cluster from ``TF_CONFIG``
  (:mod:`edgekit.cluster` sets it for each worker process). Only the chief writes artifacts;
  the other workers write to a temp dir that is removed. Inside :func:`launching`, ``run``
  hands the training to a cluster of worker processes instead (``edgekit train --workers``).
- **Mixed precision**: ``mixed_float16`` on GPU when ``cfg.mixed_precision`` (ignored on CPU,
  with a log line); the logits are cast to float32 for the loss, and the saved model is always
  a plain float32 model with the trained weights.

Example::

    res = run(load_dataset(recipe.data, seed=0), recipe.teacher, seed=0, out_dir=Path("runs/x/stages/teacher"))
    res.metrics["accuracy"], res.metrics["steps_per_second"]
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from . import tasks
from ._io import confined, remove
from ._tf import keras, tf
from .data import Dataset
from .errors import StageError
from .fitting import ProgressFn, StageResult, callbacks, finish_stage, make_optimizer, save_model, write_json
from .models import create_model
from .recipe import Strategy, TeacherConfig

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Launch

log = logging.getLogger(__name__)

BACKUP_DIR = ".backup"
"""Where ``BackupAndRestore`` keeps its checkpoint, inside the stage's ``out_dir`` (hidden: the
pipeline does not list it as an artifact)."""

SHUFFLE_BUFFER_MAX = 100_000
"""The shuffle buffer holds the whole training split, up to this many samples."""

_LAUNCH: contextvars.ContextVar[Launch | None] = contextvars.ContextVar("edgekit_train_launch", default=None)


# ----------------------------------------------------------------------------- strategy and precision


def get_strategy(kind: Strategy | str):
    """The ``tf.distribute`` strategy for ``kind``.

    ``auto``: ``MirroredStrategy`` over the visible GPUs when there are several, else over the
    logical CPUs when there are several (virtual CPUs in tests), else ``OneDeviceStrategy``.
    ``multi_worker`` reads the cluster from ``TF_CONFIG`` (none: a cluster of this process
    alone); ``parameter_server`` needs one (raises :class:`StageError` without).
    """
    kind = Strategy(kind)
    t = tf()
    if kind is Strategy.multi_worker:
        return t.distribute.MultiWorkerMirroredStrategy()
    if kind is Strategy.parameter_server:
        resolver = t.distribute.cluster_resolver.TFConfigClusterResolver()
        jobs = resolver.cluster_spec().as_dict()
        if "ps" not in jobs or "worker" not in jobs:
            raise StageError("teacher.strategy parameter_server needs a cluster with workers and parameter "
                             "servers: edgekit train RECIPE --out DIR --workers N --ps M (local), or "
                             "--cluster cluster.yaml --task TYPE:I on each machine")
        return t.distribute.ParameterServerStrategy(resolver)
    gpus = t.config.list_logical_devices("GPU")
    cpus = t.config.list_logical_devices("CPU")
    if kind is Strategy.mirrored:
        return t.distribute.MirroredStrategy([d.name for d in (gpus or cpus)])
    if kind is Strategy.auto and len(gpus) > 1:
        return t.distribute.MirroredStrategy([d.name for d in gpus])
    if kind is Strategy.auto and not gpus and len(cpus) > 1:
        return t.distribute.MirroredStrategy([d.name for d in cpus])
    return t.distribute.OneDeviceStrategy((gpus or cpus)[0].name)


def strategy_name(strategy) -> str:
    """The public name of ``strategy``'s class (``MultiWorkerMirroredStrategy``, not its
    implementation class ``CollectiveAllReduceStrategy``)."""
    name = type(strategy).__name__
    return {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
            "ParameterServerStrategyV2": "ParameterServerStrategy"}.get(name, name)


def precision_policy(cfg: TeacherConfig, *, gpus: int) -> str:
    """``mixed_float16`` when the recipe allows it and ``gpus`` > 0, else ``float32``."""
    if not cfg.mixed_precision:
        return "float32"
    if gpus == 0:
        log.warning("teacher.mixed_precision: no GPU visible, training in float32")
        return "float32"
    return "mixed_float16"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set the Keras global dtype policy to ``name`` inside the block, then restore it."""
    mp = keras().mixed_precision
    old = mp.global_policy()
    mp.set_global_policy(name)
    try:
        yield
    finally:
        mp.set_global_policy(old)


# ----------------------------------------------------------------------------- input pipeline


def make_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int | None = None,
                 shuffle: bool = False, repeat: bool = False, shard: tuple[int, int] | None = None):
    """A ``tf.data`` pipeline over in-memory arrays: cache, shuffle (seeded), batch, prefetch.

    ``batch_size`` is the global batch: a strategy splits each batch over its replicas.
    ``shard=(n, i)`` keeps every n-th sample starting at i (parameter-server input pipelines,
    which then switch auto-sharding off); otherwise auto-sharding is DATA, so every worker of a
    multi-worker cluster reads the same seeded order and keeps its share of each batch.
    """
    t = tf()
    ds = t.data.Dataset.from_tensor_slices((x, y))
    if shard is not None:
        ds = ds.shard(*shard)
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(len(x), SHUFFLE_BUFFER_MAX), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size).prefetch(t.data.AUTOTUNE)
    opts = t.data.Options()
    policy = t.data.experimental.AutoShardPolicy
    opts.experimental_distribute.auto_shard_policy = policy.OFF if shard is not None else policy.DATA
    return ds.with_options(opts)


# ----------------------------------------------------------------------------- the model


def build_teacher(cfg: TeacherConfig, *, input_shape: tuple[int, ...], num_classes: int, seed: int,
                  policy: str = "float32", task: str = "classification", reduction: dict | None = None):
    """The compiled teacher, with the loss and metrics of ``task`` (:mod:`edgekit.tasks`) and the
    fixed input ``reduction`` of the recipe's ``features`` (None: none). Call it inside the
    strategy's scope.

    Under a mixed policy the model's layers compute in float16 and a final float32 ``linear``
    activation casts the logits back, so the loss is computed in float32.
    """
    k = keras()
    with dtype_policy(policy):
        model = create_model(cfg.model, input_shape=input_shape, num_classes=num_classes, width=cfg.width,
                             l1=cfg.l1, l2=cfg.l2, seed=seed, reduction=reduction)
        if model.output.dtype != tf().float32:
            out = k.layers.Activation("linear", dtype="float32", name="logits_float32")(model.output)
            model = k.Model(model.input, out, name=model.name)
        model.compile(optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.momentum),
                      loss=tasks.get(task).loss(), metrics=tasks.get(task).keras_metrics())
    return model


def _export(model, cfg: TeacherConfig, data: Dataset, seed: int):
    """A plain float32 copy of the trained model, outside any strategy (what is saved)."""
    with dtype_policy("float32"):
        plain = create_model(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes,
                             width=cfg.width, l1=cfg.l1, l2=cfg.l2, seed=seed, reduction=data.reduction)
    plain.set_weights(model.get_weights())
    return plain


def weights_sha256(model) -> str:
    """sha256 of the model's weights (float32, in order): equal on every worker of a cluster."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- backups


def backup_fingerprint(cfg: TeacherConfig, seed: int, data: Dataset) -> str:
    """What a backup must match to be resumed: the config (strategy aside), seed and data."""
    conf = cfg.model_dump(mode="json")
    conf.pop("strategy", None)
    h = hashlib.sha256(json.dumps([conf, seed, data.summary()], sort_keys=True).encode())
    for a in (data.x_train, data.y_train, data.x_val, data.y_val):
        h.update(np.ascontiguousarray(a).tobytes())
    for key, value in sorted((getattr(data, "reduction", None) or {}).items()):  # a fitted input layer
        h.update(key.encode() + (np.ascontiguousarray(value).tobytes() if isinstance(value, np.ndarray)
                                 else repr(value).encode()))
    return h.hexdigest()[:16]


def prepare_backup(backup_dir: Path, fp: str) -> bool:
    """Keep a backup made with fingerprint ``fp`` (returns True), discard any other one.

    Call it on the chief only, before the workers meet (they restore from the chief's backup).
    """
    stamp = backup_dir / "edgekit.json"
    if backup_dir.exists():
        try:
            same = json.loads(stamp.read_text()).get("fingerprint") == fp
        except (OSError, ValueError):
            same = False
        if same and (backup_dir / "chief" / "checkpoint").is_file():
            log.info("teacher: resuming from the backup in %s", backup_dir)
            return True
        log.warning("teacher: discarding a backup in %s that was made for another config or data", backup_dir)
        remove(backup_dir, root=backup_dir.parent)
    write_json(stamp, {"fingerprint": fp})
    return False


def _backup_and_restore(backup_dir: Path):
    """``BackupAndRestore`` after every epoch, kept until the model is saved (we delete it then).

    tf_keras lists every strategy it supports but ``OneDeviceStrategy``, which needs nothing the
    default strategy does not (no multi-worker paths, ``should_checkpoint`` is true): add it.
    """
    cb = keras().callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
    cb._supported_strategies = (*cb._supported_strategies, tf().distribute.OneDeviceStrategy)
    return cb


def _epoch_counter():
    """A Keras callback recording the first epoch of this ``fit`` (after a restore) and the last done."""
    k = keras()

    class EpochCounter(k.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.first: int | None = None
            self.done = 0

        def on_epoch_begin(self, epoch, logs=None):
            if self.first is None:
                self.first = epoch

        def on_epoch_end(self, epoch, logs=None):
            self.done = epoch + 1

    return EpochCounter()


# ----------------------------------------------------------------------------- the stage


@contextlib.contextmanager
def launching(launch: Launch | None) -> Iterator[None]:
    """Inside the block, :func:`run` trains on the cluster ``launch`` describes (None: in process).

    ``edgekit train --workers N`` wraps the pipeline in it; the worker processes it starts call
    :func:`run` themselves, outside any such block.
    """
    token = _LAUNCH.set(launch)
    try:
        yield
    finally:
        _LAUNCH.reset(token)


def run(data: Dataset, cfg: TeacherConfig, *, seed: int, out_dir: Path,
        progress: ProgressFn | None = None) -> StageResult:
    """Train the teacher; returns its :class:`StageResult` (model path, metrics, config).

    Metrics besides the model's: ``strategy``, ``replicas``, ``global_batch_size``,
    ``per_replica_batch_size``, ``precision``, ``epochs_run`` (in total, restored ones included),
    ``resumed_from_epoch`` (0: fresh), ``steps``, ``fit_seconds`` and ``fit_cpu_seconds`` (this
    process, all threads) of this call, ``steps_per_second``, ``loss`` (last epoch),
    ``weights_sha256``, ``train_seconds``.
    Raises :class:`StageError` when the loss diverges or a strategy lacks its cluster. A worker
    that is not the chief measures nothing (no size or accuracy) and writes to a temp dir that
    is removed: the returned path no longer exists.
    """
    launch = _LAUNCH.get()
    if launch is not None:
        return launch.train(data, cfg, seed=seed, out_dir=Path(out_dir), progress=progress)
    from . import cluster

    start = time.perf_counter()
    out_dir = Path(out_dir)
    kind = Strategy(cfg.strategy)
    distributed = kind in (Strategy.multi_worker, Strategy.parameter_server)
    chief = cluster.is_chief(cluster.tf_config_from_env()) if distributed else True
    backup_dir = out_dir / BACKUP_DIR
    resuming = prepare_backup(backup_dir, backup_fingerprint(cfg, seed, data)) if chief else False
    strategy = get_strategy(kind)  # multi-worker: waits here until every worker has joined
    replicas = strategy.num_replicas_in_sync
    t = tf()
    policy = precision_policy(cfg, gpus=len(t.config.list_logical_devices("GPU")))
    if cfg.batch_size % replicas:
        log.warning("teacher.batch_size %d does not divide over %d replicas; replicas get uneven batches",
                    cfg.batch_size, replicas)
    log.info("teacher %s: %s with %d replica(s), global batch %d (%g per replica), %s%s", cfg.model,
             strategy_name(strategy), replicas, cfg.batch_size, cfg.batch_size / replicas, policy,
             ", resuming from backup" if resuming else "")
    with strategy.scope():
        model = build_teacher(cfg, input_shape=data.input_shape, num_classes=data.num_classes, seed=seed,
                              policy=policy, task=data.task, reduction=data.reduction)
    x_fit, y_fit = tasks.get(data.task).fit_data(data, "train")  # anomaly: the normal samples only
    x_vfit, y_vfit = tasks.get(data.task).fit_data(data, "val")
    has_val = len(x_vfit) > 0
    k = keras()
    epochs = _epoch_counter()
    cbs = [_backup_and_restore(backup_dir), epochs,
           *callbacks("teacher", cfg, cfg.epochs, has_val=has_val, progress=progress, batch_hooks=not distributed)]
    steps_per_epoch = max(1, math.ceil(len(x_fit) / cfg.batch_size))
    fit_kw: dict[str, Any]
    if kind is Strategy.parameter_server:
        fit_kw = _parameter_server_inputs(data, cfg, seed, steps_per_epoch)
    else:
        # repeated, with a fixed number of steps: Keras keeps one iterator for every epoch
        fit_kw = {"x": make_dataset(x_fit, y_fit, batch_size=cfg.batch_size, seed=seed, shuffle=True, repeat=True),
                  "steps_per_epoch": steps_per_epoch,
                  "validation_data": make_dataset(x_vfit, y_vfit, batch_size=cfg.batch_size)
                  if has_val else None}
    fit_start, fit_cpu = time.perf_counter(), time.process_time()
    hist = model.fit(epochs=cfg.epochs, verbose=0, callbacks=cbs, **fit_kw)
    fit_seconds, fit_cpu_seconds = time.perf_counter() - fit_start, time.process_time() - fit_cpu
    losses = hist.history.get("loss", [])
    if losses and not all(map(math.isfinite, losses)):
        raise StageError(f"teacher training diverged (loss {losses[-1]}); lower teacher.learning_rate")
    first = epochs.first if epochs.first is not None else cfg.epochs
    steps = (epochs.done - first) * steps_per_epoch if epochs.done else 0
    plain = _export(model, cfg, data, seed)
    metrics = {"strategy": strategy_name(strategy), "replicas": replicas, "global_batch_size": cfg.batch_size,
               "per_replica_batch_size": cfg.batch_size / replicas, "precision": policy,
               "epochs_run": epochs.done or first, "resumed_from_epoch": first, "steps": steps,
               "fit_seconds": round(fit_seconds, 3), "fit_cpu_seconds": round(fit_cpu_seconds, 3),
               "steps_per_second": round(steps / fit_seconds, 2) if steps and fit_seconds > 0 else None,
               "loss": float(losses[-1]) if losses else None, "weights_sha256": weights_sha256(plain),
               "train_seconds": round(time.perf_counter() - start, 3)}
    if chief:
        res = finish_stage("teacher", plain, out_dir, metrics, cfg, data=data)
        remove(backup_dir, root=out_dir)
        return res
    # not the chief: the same files in a temp dir, unmeasured (the chief measures the same weights)
    temp = Path(tempfile.mkdtemp(prefix="edgekit-teacher-"))
    try:
        with confined(temp):  # edgekit's own temp folder, outside any run
            path = save_model(plain, temp / "model.keras")
            conf = cfg.model_dump(mode="json")
            write_json(temp / "metrics.json", {"stage": "teacher", **metrics, "config": conf})
        return StageResult("teacher", path, metrics, conf)
    finally:
        remove(temp, root=temp.parent)


def _parameter_server_inputs(data: Dataset, cfg: TeacherConfig, seed: int, steps_per_epoch: int) -> dict:
    """``model.fit`` arguments under ``ParameterServerStrategy``: a ``DatasetCreator`` (each worker
    builds its own shard of the input) with a fixed number of steps per epoch. Validation runs
    ``ceil(n_val / batch)`` batches of the repeated validation split (the last one wraps around)."""
    k = keras()
    x_fit, y_fit = tasks.get(data.task).fit_data(data, "train")
    x_vfit, y_vfit = tasks.get(data.task).fit_data(data, "val")

    def train_fn(ctx):
        batch = ctx.get_per_replica_batch_size(cfg.batch_size)
        return make_dataset(x_fit, y_fit, batch_size=batch, seed=seed + ctx.input_pipeline_id,
                            shuffle=True, repeat=True, shard=(ctx.num_input_pipelines, ctx.input_pipeline_id))

    kw: dict[str, Any] = {"x": k.utils.experimental.DatasetCreator(train_fn), "steps_per_epoch": steps_per_epoch}
    if len(x_vfit):
        kw["validation_data"] = make_dataset(x_vfit, y_vfit, batch_size=cfg.batch_size, repeat=True)
        kw["validation_steps"] = max(1, math.ceil(len(x_vfit) / cfg.batch_size))
    return kw
