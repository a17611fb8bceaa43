"""Preflight: before any training starts, list every layer that a later stage cannot take.

Walks the models the recipe will build and asks the same registries the stages use:
tensorflow-model-optimization's 8-bit QAT registry (for the model that will be QAT-trained) and
its pruning registry (for the model that will be pruned). Each problem names the layer, its
type, what cannot handle it, and what to do instead, so a recipe fails in a second with a
useful message instead of after minutes of training with a deep TensorFlow traceback.
"""

from __future__ import annotations

import dataclasses

from .errors import StageError

SUGGESTIONS = {
    "Conv1D": "use Conv2D with a (k, 1) kernel on inputs reshaped to (length, 1, channels)",
    "MaxPooling1D": "use MaxPooling2D with pool size (2, 1) on (length, 1, channels) inputs",
    "AveragePooling1D": "use AveragePooling2D with pool size (2, 1)",
    "LayerNormalization": "use BatchNormalization after a Conv2D/Dense (folded at conversion)",
    "BatchNormalization": "put it right after a Conv2D, DepthwiseConv2D or Dense layer so it is folded",
    "Lambda": "replace the Lambda with built-in layers (Lambda layers are not quantizable or serializable safely)",
}
_FOLDS_BN = ("Conv2D", "DepthwiseConv2D", "Dense")


@dataclasses.dataclass(frozen=True)
class Problem:
    layer: str
    layer_type: str
    stage: str
    suggestion: str

    def __str__(self) -> str:
        return f"layer {self.layer!r} ({self.layer_type}): {self.stage} cannot handle it; {self.suggestion}"


def check_model(model, *, qat: bool, prune: bool) -> list[Problem]:
    """Problems of ``model`` for QAT (tfmot default 8-bit scheme) and pruning."""
    problems: list[Problem] = []
    if qat:
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
            default_8bit_quantize_registry as qreg,
        )

        from ._tf import tfmot

        tfmot()
        registry = qreg.Default8BitQuantizeRegistry()
        prev = None
        for layer in model.layers:
            kind = type(layer).__name__
            folded = kind == "BatchNormalization" and prev in _FOLDS_BN
            if not folded and kind != "InputLayer" and not registry.supports(layer):
                problems.append(Problem(layer.name, kind, "quantization-aware training",
                                        SUGGESTIONS.get(kind, "replace it with a supported layer or set qat: null "
                                                              "(post-training int8)")))
            prev = kind
    if prune:
        from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer, prune_registry

        for layer in model.layers:
            if type(layer).__name__ == "InputLayer":
                continue
            if not (isinstance(layer, prunable_layer.PrunableLayer) or prune_registry.PruneRegistry.supports(layer)):
                problems.append(Problem(layer.name, type(layer).__name__, "pruning",
                                        "add it to prune.skip_layers or replace it"))
    return problems


def check_targets(model, profiles) -> list[Problem]:
    """Ops of ``model`` (converted to float TFLite) that a target cannot run, as each profile's
    kind judges them (:meth:`edgekit.targets.TargetKindSpec.check`: a microcontroller's TFLite
    Micro has no kernel for them); the model is converted only when a kind looks at its ops."""
    from . import targets

    judged = [(p, spec) for p in profiles or () if (spec := targets.get(p.kind)).checks_ops()]
    if not judged:
        return []
    from .fitting import tflite_bytes
    from .mcu import model_ops

    try:
        ops = model_ops(tflite_bytes(model))
    except Exception as exc:  # noqa: BLE001 - the converter's own error, shown where conversion fails
        return [Problem(model.name, "model", "the TFLite converter",
                        f"it does not convert ({' '.join(str(exc).split())[:200]})")]
    return [problem for p, spec in judged for problem in spec.check(ops, p)]


def run(recipe, *, input_shape: tuple[int, ...], num_classes: int, reduction: dict | None = None,
        given: dict | None = None, targets=None) -> None:
    """Build the model(s) the recipe will compress (with the input ``reduction`` of its
    ``features``, if any; ``given``: ``{stage: model}`` of the recipe's given models, checked as
    they are) and raise :class:`StageError` listing every problem at once: layers pruning or QAT
    cannot take, and (with ``targets``, the recipe's target profiles) ops a microcontroller
    target cannot run."""
    from .models import create_model

    stage = "student" if recipe.student is not None else "teacher"
    cfg = getattr(recipe, stage)
    compressed = cfg.model
    if given and stage in given:
        model = given[stage]
    else:
        model = create_model(compressed, input_shape=input_shape, num_classes=num_classes, width=cfg.width,
                             reduction=reduction)
    magnitude = recipe.prune is not None and recipe.prune.structure != "channels"  # tfmot wraps the layers
    problems: list = check_model(model, qat=recipe.qat is not None, prune=magnitude)
    from .model_source import classify

    if (given and stage in given) or classify(compressed).kind == "builder":  # zoo models are known to convert
        problems += check_targets(model, targets)
    if recipe.prune is not None:
        from .prune import layers_to_prune

        try:
            layers_to_prune(model, recipe.prune.skip_layers)  # a skip list that leaves nothing fails now
        except StageError as exc:
            problems.append(str(exc))
    if problems:
        listing = "; ".join(str(p) for p in problems)
        raise StageError(f"preflight: model {compressed!r}: {listing}")
