"""Stage 3: magnitude pruning with tensorflow-model-optimization, measured from the weights.

The pitfall this stage guards against: ``PolynomialDecay`` with its default ``frequency=100`` on
a short schedule never updates the masks and silently reaches 0 % sparsity. Here the update
frequency is derived from the number of steps so that the last update lands exactly on the
schedule's end step, and the sparsity reached is measured from the stripped weights, per layer
and overall; a shortfall of more than 0.05 warns (or fails with ``strict``). Layers that are
not trainable (the fixed input reduction of ``features:``) are never pruned, nor counted as the
'first' weighted layer. Fine-tuning uses the task's loss and training data (:mod:`edgekit.tasks`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from . import tasks
from ._tf import keras, tfmot
from .data import Dataset
from .errors import StageError
from .fitting import ProgressFn, StageResult, callbacks, finish_stage, make_optimizer, weighted_layers
from .recipe import PruneConfig

log = logging.getLogger(__name__)

TOLERANCE = 0.05


def schedule_steps(num_samples: int, cfg: PruneConfig) -> dict[str, int]:
    """Steps of the pruning schedule: masks change during the first ~70 % of the steps (the
    rest fine-tunes at the final sparsity), ``end_step`` is a multiple of ``frequency``."""
    steps_per_epoch = math.ceil(num_samples / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    span = max(1, int(total * 0.7)) if cfg.epochs > 1 else total
    frequency = cfg.frequency or max(1, span // 10)  # an explicit frequency is honoured as given
    end_step = max(frequency, (span // frequency) * frequency)
    return {"steps_per_epoch": steps_per_epoch, "total_steps": total, "end_step": end_step,
            "frequency": frequency}


def layers_to_prune(model, skip: list[str]) -> list[str]:
    """Names of the trainable weighted layers to prune, after removing ``skip`` ('first', 'last',
    names). Fixed (non-trainable) layers such as the input reduction are left out before
    'first' and 'last' are resolved."""
    names = [layer.name for layer in weighted_layers(model) if layer.trainable]
    skipped = set()
    for s in skip:
        if s == "first" and names:
            skipped.add(names[0])
        elif s == "last" and names:
            skipped.add(names[-1])
        elif s in names:
            skipped.add(s)
        else:
            raise StageError(f"prune.skip_layers: no weighted layer named {s!r} (layers: {', '.join(names)})")
    chosen = [n for n in names if n not in skipped]
    if not chosen:
        keep = [s for s in skip if s != "first"] if len(names) > 1 else []
        fix = (f"set prune.skip_layers: [{', '.join(keep)}] (prunes the first layer too)" if keep else
               "set prune.skip_layers: [] (prunes every layer)")
        raise StageError(f"prune.skip_layers {list(skip)} leaves no layer to prune: the model has {len(names)} "
                         f"weighted layer(s) ({', '.join(names) or 'none'}); {fix}, or prune: null")
    return chosen


def measure_sparsity(model, layer_names: list[str]) -> dict:
    """Share of exact zeros in the kernels of ``layer_names`` (overall and per layer)."""
    per_layer, zeros, total = {}, 0, 0
    for name in layer_names:
        kernel = model.get_layer(name).kernel.numpy()
        z = int(kernel.size - np.count_nonzero(kernel))
        per_layer[name] = round(z / kernel.size, 6)
        zeros, total = zeros + z, total + kernel.size
    return {"sparsity": round(zeros / total, 6) if total else 0.0, "per_layer": per_layer}


def check_m_by_n(kernel: np.ndarray, m: int, n: int) -> bool:
    """True when every block of ``n`` consecutive weights along the input-channel axis (the
    second to last of a Conv/Dense kernel) holds at most ``m`` non-zeros."""
    w = np.moveaxis(kernel, -2, -1).reshape(-1, kernel.shape[-2])
    if w.shape[1] % n:
        return False
    blocks = w.reshape(w.shape[0], -1, n)
    return bool((np.count_nonzero(blocks, axis=-1) <= m).all())


def run(model, data: Dataset, cfg: PruneConfig, *, seed: int, out_dir: Path,
        progress: ProgressFn | None = None) -> StageResult:
    """Prune ``model`` toward ``cfg.target_sparsity`` while fine-tuning; strip the wrappers,
    measure what was reached, save. Raises :class:`StageError` under ``strict`` on a shortfall."""
    start = time.perf_counter()
    k, sp = keras(), tfmot().sparsity.keras
    task = tasks.get(data.task)
    names = layers_to_prune(model, cfg.skip_layers)
    x_train, y_train = task.fit_data(data, "train")
    x_val, y_val = task.fit_data(data, "val")
    steps = schedule_steps(len(x_train), cfg)
    if cfg.schedule == "polynomial":
        schedule = sp.PolynomialDecay(initial_sparsity=0.0, final_sparsity=cfg.target_sparsity,
                                      begin_step=0, end_step=steps["end_step"], frequency=steps["frequency"])
    else:
        schedule = sp.ConstantSparsity(cfg.target_sparsity, begin_step=0, frequency=steps["frequency"])

    m_by_n = tuple(map(int, cfg.structure.split(":"))) if cfg.structure else None

    def wrap(layer):
        if layer.name in names:
            kw = {"sparsity_m_by_n": m_by_n} if m_by_n else {}
            return sp.prune_low_magnitude(layer, pruning_schedule=schedule, **kw)
        return layer  # shared as is: keeps its trained weights

    pruned = k.models.clone_model(model, clone_function=wrap)
    pruned.compile(optimizer=make_optimizer("adam", cfg.learning_rate), loss=task.loss(),
                   metrics=task.keras_metrics())
    has_val = len(x_val) > 0
    pruned.fit(x_train, y_train, epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=0,
               validation_data=(x_val, y_val) if has_val else None,
               callbacks=[sp.UpdatePruningStep(),
                          *callbacks("pruned", None, cfg.epochs, has_val=has_val, progress=progress)])
    stripped = sp.strip_pruning(pruned)
    reached = measure_sparsity(stripped, names)
    if m_by_n:
        reached["m_by_n_ok"] = all(check_m_by_n(stripped.get_layer(n).kernel.numpy(), *m_by_n) for n in names)
        if not reached["m_by_n_ok"]:
            raise StageError(f"pruned weights do not follow the {cfg.structure} pattern")
    shortfall = cfg.target_sparsity - reached["sparsity"]
    if shortfall > TOLERANCE:
        msg = (f"pruning reached sparsity {reached['sparsity']:.3f}, target {cfg.target_sparsity:.3f} "
               f"(schedule end_step {steps['end_step']}, frequency {steps['frequency']}); "
               "raise prune.epochs or lower prune.frequency")
        if cfg.strict:
            raise StageError(msg)
        log.warning(msg)
    metrics = {"target_sparsity": cfg.target_sparsity, **reached, "pruned_layers": names,
               "schedule": cfg.schedule, **steps, "train_seconds": round(time.perf_counter() - start, 3)}
    return finish_stage("pruned", stripped, out_dir, metrics, cfg, data=data)
