"""Early pruning for :mod:`edgekit.tune`: lower bounds of a student's footprint before training.

A trial whose untrained student cannot fit the target's budgets (its weights alone, or one op's
input + output activations, are over them) is pruned without training; the bounds are bounds,
not guesses, so no trial that would have fitted is pruned.
"""

from __future__ import annotations

from typing import Any

from ..errors import EdgekitError
from ..recipe import Recipe


_NO_OP_LAYERS = ("InputLayer", "Flatten", "Reshape", "Dropout", "BatchNormalization", "Activation")


def footprint_bounds(model, *, scheme: str = "qat-int8") -> dict[str, Any]:
    """Lower bounds of a Keras model's converted footprint, before any training (bytes).

    ``student_params``: every weight of the model. ``flash_lower_bytes``: the weights alone as the converted file stores them: one byte per
    weight (int8, stored dense: zeros count), biases at 4 bytes (int32; 8 for int16x8, int64);
    BatchNormalization is left out (it folds into the layer before it). ``arena_lower_bytes``: the
    largest input + output activations of one op, at one byte per value (two for int16x8): TFLite
    Micro holds both in its arena while the op runs. Layers that convert to no op or to a reshape
    (Flatten, Reshape, Dropout, BatchNormalization, Activation) are skipped. The real file adds the
    flatbuffer, quantization parameters and op list; the real arena adds scratch buffers and the
    interpreter's own structures: both are only larger.
    """
    import numpy as np

    act = 2 if scheme == "ptq-int16x8" else 1
    bias = 8 if scheme == "ptq-int16x8" else 4
    flash = 0
    arena = 0
    params = 0
    for layer in model.layers:
        cls = type(layer).__name__
        for w in layer.weights:
            n = int(np.prod(w.shape))
            params += n
            if cls == "BatchNormalization":
                continue
            flash += n * (bias if "bias" in w.name.split("/")[-1] else 1)
        if cls in _NO_OP_LAYERS:
            continue
        ins = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        outs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        size = sum(int(np.prod(t.shape[1:])) for t in [*ins, *outs])
        arena = max(arena, size * act)
    return {"student_params": params, "flash_lower_bytes": flash, "arena_lower_bytes": arena}


def early_verdict(model, params: dict[str, Any], recipe: Recipe, budget) -> tuple[dict[str, Any], str | None]:
    """(bounds, reason): the reason a trial cannot fit (or cannot run), or None to train it.

    Checks the flash and arena bounds of :func:`footprint_bounds` against ``budget``, and for an
    ``m:n`` pruning that every layer to prune has a multiple of ``n`` input channels. For a
    channel pruning (``channels-S``) the bounds are those of the smaller model it builds (the
    channel counts do not depend on training), and a model with no channel to remove cannot run.
    """
    reasons = []
    choice = str(params["prune"])
    if choice.startswith("channels-") and recipe.prune is not None:
        from ..prune import layers_to_prune
        from ..structured import shrink

        try:
            names = layers_to_prune(model, recipe.prune.skip_layers)
            skip = {layer.name for layer in model.layers if getattr(layer, "kernel", None) is not None} - set(names)
            small, kept, _ = shrink(model, float(choice[len("channels-"):]), skip)
            if kept:
                model = small
            else:
                reasons.append("structure channels: no layer has channels that can be removed")
        except EdgekitError as exc:
            reasons.append(str(exc))
    bounds = footprint_bounds(model, scheme=params["scheme"])
    if budget.flash_bytes is not None and bounds["flash_lower_bytes"] > budget.flash_bytes:
        reasons.append(f"flash: the weights alone take {bounds['flash_lower_bytes']} bytes > budget "
                       f"{budget.flash_bytes} bytes")
    if budget.ram_bytes is not None and bounds["arena_lower_bytes"] > budget.ram_bytes:
        reasons.append(f"ram: one op's input + output take {bounds['arena_lower_bytes']} bytes > budget "
                       f"{budget.ram_bytes} bytes")
    if ":" in choice and recipe.prune is not None:
        from ..prune import layers_to_prune

        n = int(choice.split(":")[1])
        try:
            names = layers_to_prune(model, recipe.prune.skip_layers)
        except EdgekitError as exc:
            names, _ = [], reasons.append(str(exc))
        bad = [f"{name} has {model.get_layer(name).kernel.shape[-2]}" for name in names
               if model.get_layer(name).kernel.shape[-2] % n]
        if bad:
            reasons.append(f"{choice} sparsity needs a multiple of {n} input channels in every pruned layer: "
                           f"{', '.join(bad)}")
    return bounds, ("; ".join(reasons) or None)
