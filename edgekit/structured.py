"""Structured (channel) pruning: remove whole filters, channels and units, rebuild a smaller dense model.

Magnitude pruning zeroes weights, but the converted file stores them densely: the file, the
arena and the latency stay as they were. Here whole output channels of Conv/Dense layers are
removed by importance and a smaller ``tf_keras`` model is rebuilt with the surviving weights.

How the channels of a graph are tied together (:func:`analyze`): every tensor's last axis is a
*layout*, a list of segments ``(group, size)`` (a ``Concatenate`` joins segments) times a
``spatial`` factor (a ``Flatten`` of ``H x W x C`` gives ``H·W`` copies of the channels, index
``(h·W + w)·C + c``). A Conv/Dense layer starts a new group for its output channels;
BatchNormalization, activations, pooling, dropout, padding and DepthwiseConv2D (multiplier 1:
its channels are its input's) pass the layout through; ``Add`` and the other element-wise
merges *join* their inputs' groups, so every branch of a residual block keeps the same
channels. A group is *frozen* (all channels kept) when it reaches anything else: the model's
inputs and outputs, a Reshape, an unknown or shared layer, a non-trainable layer or one named
in ``skip_layers``. The importance of a channel is the sum, over the group's producers, of its
filter's L1 norm and, over the group's BatchNormalizations, of ``|gamma|``, each normalized
by its layer's largest value. Every unfrozen group keeps ``max(1, round(C·(1-s)))`` channels.

BatchNormalization statistics (:func:`adapt_batchnorm`): removing channels changes what every
later layer sees, so the moving means and variances learned for the wide model no longer hold
(a ResNet-8 student at 94 % fell to chance with them, and 4 epochs of fine-tuning move them only
part of the way; docs/compression.md has the benchmark). The stage re-estimates them from training samples after the shrink and again after
fine-tuning, as NNCF's BatchNorm adaptation does after pruning.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StageError

log = logging.getLogger(__name__)

TOLERANCE = 0.05

_PRODUCERS = {"Conv1D", "Conv2D", "Conv3D", "Dense"}
_PASS = {"BatchNormalization", "Activation", "ReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
         "GaussianDropout", "GaussianNoise", "AlphaDropout", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
         "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
         "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
         "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D",
         "UpSampling2D", "DepthwiseConv2D", "LayerNormalization", "ELU", "ThresholdedReLU"}
_MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}


@dataclass
class Layout:
    """The last axis of a tensor: ``segments`` ``[(group, size)]`` repeated ``spatial`` times."""

    segments: list[tuple[int, int]]
    spatial: int = 1


@dataclass
class Plan:
    """The result of :func:`analyze`: groups, which are frozen, every layer's input/output layouts."""

    parent: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    frozen: set[int] = field(default_factory=set)
    inputs: dict[str, list[Layout]] = field(default_factory=dict)
    outputs: dict[str, Layout] = field(default_factory=dict)
    producers: dict[str, int] = field(default_factory=dict)
    keep: dict[int, np.ndarray] = field(default_factory=dict)

    def new(self, size: int, frozen: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(int(size))
        if frozen:
            self.frozen.add(len(self.parent) - 1)
        return len(self.parent) - 1

    def root(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[rb] = ra
            if ra in self.frozen or rb in self.frozen:
                self.frozen.add(ra)

    def is_frozen(self, g: int) -> bool:
        return self.root(g) in self.frozen

    def freeze(self, layout: Layout) -> None:
        for g, _ in layout.segments:
            self.frozen.add(self.root(g))

    def kept(self, g: int) -> np.ndarray:
        r = self.root(g)
        if r in self.frozen or r not in self.keep:
            return np.arange(self.sizes[r])
        return self.keep[r]

    def indices(self, layout: Layout) -> np.ndarray:
        """Kept positions of a layout's last axis (all of them when nothing was removed)."""
        parts, offset = [], 0
        for g, size in layout.segments:
            parts.append(self.kept(g) + offset)
            offset += size
        ch = np.concatenate(parts) if parts else np.arange(0)
        return (np.arange(layout.spatial)[:, None] * offset + ch[None, :]).reshape(-1)

    def width(self, layout: Layout) -> int:
        return sum(size for _, size in layout.segments) * layout.spatial


def _history(tensor) -> tuple[str, int]:
    layer, _, index = tensor._keras_history
    return layer.name, index


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def analyze(model, skip: set[str]) -> Plan:
    """Tie the channels of ``model``'s graph into groups (see the module docstring)."""
    plan = Plan()
    tensors: dict[tuple[str, int], Layout] = {}
    for t in _as_list(model.inputs):
        tensors[_history(t)] = Layout([(plan.new(t.shape[-1], frozen=True), int(t.shape[-1]))])
    pending = [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]
    while pending:
        progressed = False
        for layer in list(pending):
            try:
                ins = _as_list(layer.input)
                outs = _as_list(layer.output)
            except AttributeError:  # a layer called more than once: freeze what it touches
                ins, outs = None, None
            if ins is not None and not all(_history(t) in tensors for t in ins):
                continue
            pending.remove(layer)
            progressed = True
            if ins is None:
                continue
            in_layouts = [tensors[_history(t)] for t in ins]
            plan.inputs[layer.name] = in_layouts
            out = _propagate(plan, layer, in_layouts, outs, skip)
            for i, t in enumerate(outs):
                tensors[(layer.name, i)] = out if len(outs) == 1 else Layout([(plan.new(t.shape[-1], True),
                                                                               int(t.shape[-1]))])
            if len(outs) == 1:
                plan.outputs[layer.name] = out
        if not progressed:  # layers whose inputs never get a layout (shared/nested): nothing to prune there
            for layer in pending:
                log.info("structured pruning: %s left as is (not reached in the graph)", layer.name)
            break
    for t in _as_list(model.outputs):
        if _history(t) in tensors:
            plan.freeze(tensors[_history(t)])
    # layers whose inputs could not be analyzed freeze nothing they cannot see; those called
    # more than once must keep their channels: their input tensors are frozen where known
    for layer in model.layers:
        if layer.name not in plan.inputs and layer.__class__.__name__ != "InputLayer":
            for node in getattr(layer, "_inbound_nodes", []):
                for t in _as_list(node.input_tensors):
                    if hasattr(t, "_keras_history") and _history(t) in tensors:
                        plan.freeze(tensors[_history(t)])
    return plan


def _propagate(plan: Plan, layer, ins: list[Layout], outs: list, skip: set[str]) -> Layout:
    kind = layer.__class__.__name__
    cfg = layer.get_config()
    out_shape = outs[0].shape
    fresh_frozen = Layout([(plan.new(out_shape[-1], True), int(out_shape[-1]))]) if len(outs) == 1 else None
    if len(outs) != 1:
        for lay in ins:
            plan.freeze(lay)
        return Layout([])
    if kind in _PRODUCERS and cfg.get("groups", 1) == 1 and len(ins) == 1:
        if ins[0].spatial != 1 and kind != "Dense":
            plan.freeze(ins[0])
        g = plan.new(out_shape[-1], frozen=(not layer.trainable or layer.name in skip))
        plan.producers[layer.name] = g
        return Layout([(g, int(out_shape[-1]))])
    if kind in _PASS and len(ins) == 1:
        lay = ins[0]
        channel_wise = kind in ("BatchNormalization", "LayerNormalization")
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        rank = len(out_shape)
        ok = (not channel_wise or axis in (-1, rank - 1))
        if kind == "DepthwiseConv2D":
            ok = cfg.get("depth_multiplier", 1) == 1 and lay.spatial == 1
        if kind.startswith(("Global", "MaxPooling", "AveragePooling")) or "Padding" in kind or "Sampling" in kind:
            ok = ok and lay.spatial == 1
        if not ok or plan.width(lay) != out_shape[-1]:
            plan.freeze(lay)
            return fresh_frozen
        if not layer.trainable and layer.weights:
            plan.freeze(lay)
        return lay
    if kind == "Flatten" and len(ins) == 1:
        in_shape = layer.input.shape
        factor = int(np.prod([d for d in in_shape[1:-1]])) if len(in_shape) > 2 else 1
        return Layout(ins[0].segments, ins[0].spatial * factor)
    if kind in _MERGE and len(ins) > 1:
        first = ins[0]
        same = all(lay.spatial == first.spatial and [s for _, s in lay.segments] == [s for _, s in first.segments]
                   for lay in ins)
        if not same:
            for lay in ins:
                plan.freeze(lay)
            return fresh_frozen
        for lay in ins[1:]:
            for (a, _), (b, _) in zip(first.segments, lay.segments):
                plan.union(a, b)
        return first
    if kind == "Concatenate" and cfg.get("axis", -1) in (-1, len(out_shape) - 1) and all(
            lay.spatial == 1 for lay in ins):
        return Layout([seg for lay in ins for seg in lay.segments])
    for lay in ins:  # anything else keeps all the channels it sees
        plan.freeze(lay)
    return fresh_frozen


def _normalized(v: np.ndarray) -> np.ndarray:
    top = float(np.max(v)) if v.size else 0.0
    return v / top if top > 0 else np.zeros_like(v)


def choose(model, plan: Plan, target: float) -> None:
    """Score every unfrozen group's channels and keep the best ``max(1, round(C·(1-target)))``."""
    scores: dict[int, np.ndarray] = {}

    def add(g: int, v: np.ndarray):
        r = plan.root(g)
        if r not in plan.frozen:
            scores[r] = scores.get(r, np.zeros(plan.sizes[r])) + _normalized(v)

    for name, g in plan.producers.items():
        kernel = model.get_layer(name).kernel.numpy()
        add(g, np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0))
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization" and layer.name in plan.inputs and layer.scale:
            lay = plan.inputs[layer.name][0]
            if lay.spatial == 1 and len(lay.segments) == 1:
                add(lay.segments[0][0], np.abs(layer.gamma.numpy()))
    for r, s in scores.items():
        k = channel_count(plan.sizes[r], target)
        plan.keep[r] = np.sort(np.argsort(-s, kind="stable")[:k])


def _sliced_weights(layer, plan: Plan) -> list[np.ndarray] | None:
    """The layer's weights restricted to the kept channels (None: unchanged)."""
    kind = layer.__class__.__name__
    weights = layer.get_weights()
    if layer.name not in plan.inputs or not weights:
        return None
    in_idx = plan.indices(plan.inputs[layer.name][0]) if len(plan.inputs[layer.name]) == 1 else None
    if layer.name in plan.producers:
        out_idx = plan.kept(plan.producers[layer.name])
        kernel = np.take(np.take(weights[0], in_idx, axis=-2), out_idx, axis=-1)
        return [kernel] + [np.take(w, out_idx, axis=-1) for w in weights[1:]]
    if in_idx is None or len(in_idx) == plan.width(plan.inputs[layer.name][0]):
        return None  # its input keeps every channel (a frozen one, e.g. before a depth multiplier of 2)
    if kind == "DepthwiseConv2D":
        return [np.take(weights[0], in_idx, axis=2)] + [np.take(w, in_idx, axis=-1) for w in weights[1:]]
    if kind in ("BatchNormalization", "LayerNormalization"):
        return [np.take(w, in_idx, axis=-1) for w in weights]
    return None


def shrink(model, target: float, skip: set[str]):
    """A smaller dense copy of ``model`` with ``target`` of its prunable channels removed, and
    the channels kept per pruned layer ``{layer: [kept, of]}``, the share removed."""
    from ._tf import keras

    k = keras()
    plan = analyze(model, skip)
    choose(model, plan, target)
    changes = {}
    for name, g in plan.producers.items():
        if not plan.is_frozen(g):
            changes[name] = len(plan.kept(g))

    def rebuild(layer):
        cfg = layer.get_config()
        if layer.name in changes:
            cfg["filters" if "filters" in cfg else "units"] = changes[layer.name]
        try:
            return layer.__class__.from_config(cfg)
        except Exception:  # noqa: BLE001 - a layer that cannot be rebuilt from its config is shared as is
            return layer

    small = k.models.clone_model(model, clone_function=rebuild)
    for layer in model.layers:
        new = small.get_layer(layer.name)
        if new is layer or not layer.weights:
            continue
        sliced = _sliced_weights(layer, plan)
        new.set_weights(sliced if sliced is not None else layer.get_weights())
    kept = {name: [int(len(plan.kept(g))), int(plan.sizes[plan.root(g)])]
            for name, g in plan.producers.items() if not plan.is_frozen(g)}
    roots = {plan.root(g) for n, g in plan.producers.items() if n in kept}
    total = sum(plan.sizes[r] for r in roots)
    removed = sum(plan.sizes[r] - len(plan.kept(r)) for r in roots)
    return small, kept, (removed / total if total else 0.0)


ADAPT_SAMPLES = 2048  # training samples the BatchNorm statistics are re-estimated from


def adapt_batchnorm(model, x, *, batch_size: int, max_samples: int = ADAPT_SAMPLES) -> int:
    """Re-estimate the moving mean and variance of every BatchNormalization of ``model`` as the
    average of its batch statistics over the first ``max_samples`` of ``x`` (forward passes in
    training mode; no weight changes). Returns the samples used (0 when there is no BatchNorm)."""
    from ._tf import keras

    norms = [m for m in model.submodules if isinstance(m, keras().layers.BatchNormalization)]
    n = min(len(x), max_samples)
    if not norms or n == 0:
        return 0
    momentum = [layer.momentum for layer in norms]
    for layer in norms:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    try:
        for i, start in enumerate(range(0, n, batch_size), 1):
            for layer in norms:
                layer.momentum = (i - 1) / i  # the running value becomes the mean over the i batches
            model(np.asarray(x[start:min(start + batch_size, n)], np.float32), training=True)
    finally:
        for layer, m in zip(norms, momentum):
            layer.momentum = m
    return n


def run(model, data, cfg, *, seed: int, out_dir: Path, progress=None):
    """Remove ``cfg.target_sparsity`` of the prunable channels, re-estimate the BatchNorm
    statistics, fine-tune ``cfg.epochs``, re-estimate them again, save."""
    from . import tasks
    from .fitting import callbacks, finish_stage, make_optimizer, model_stats
    from .prune import layers_to_prune

    start = time.perf_counter()
    task = tasks.get(data.task)
    names = layers_to_prune(model, cfg.skip_layers)  # validates skip_layers the same way
    skip = {layer.name for layer in model.layers if getattr(layer, "kernel", None) is not None} - set(names)
    small, kept, removed = shrink(model, cfg.target_sparsity, skip)
    if not kept:
        raise StageError("prune.structure channels: no layer has channels that can be removed (every Conv/Dense "
                         "output feeds the model output, a skipped layer or a layer that needs all its channels); "
                         "use magnitude pruning (remove prune.structure) or prune: null")
    x_train, y_train = task.fit_data(data, "train")
    x_val, y_val = task.fit_data(data, "val")
    adapted = adapt_batchnorm(small, x_train, batch_size=cfg.batch_size)
    small.compile(optimizer=make_optimizer("adam", cfg.learning_rate), loss=task.loss(),
                  metrics=task.keras_metrics())
    has_val = len(x_val) > 0
    small.fit(x_train, y_train, epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=0,
              validation_data=(x_val, y_val) if has_val else None,
              callbacks=callbacks("pruned", None, cfg.epochs, has_val=has_val, progress=progress))
    adapt_batchnorm(small, x_train, batch_size=cfg.batch_size)
    shortfall = cfg.target_sparsity - removed
    if shortfall > TOLERANCE:
        msg = (f"structured pruning removed {removed:.3f} of the prunable channels, target "
               f"{cfg.target_sparsity:.3f} (groups too small to round to the target); lower prune.target_sparsity")
        if cfg.strict:
            raise StageError(msg)
        log.warning(msg)
    before = model_stats(model)["params"]
    metrics = {"target_sparsity": cfg.target_sparsity, "channels_removed": round(removed, 6),
               "structure": {"kind": "channels", "kept": kept, "params_before": before,
                             "params_after": model_stats(small)["params"]},
               "batchnorm_adapted_samples": adapted,
               "train_seconds": round(time.perf_counter() - start, 3)}
    log.info("structured pruning kept %s", ", ".join(f"{n} {a}/{b}" for n, (a, b) in kept.items()))
    return finish_stage("pruned", small, out_dir, metrics, cfg, data=data)


def channel_count(n: int, target: float) -> int:
    """Channels a group of ``n`` keeps at ``target``."""
    return max(1, min(n, int(math.floor(n * (1 - target) + 0.5))))
