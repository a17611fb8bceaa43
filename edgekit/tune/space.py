"""The search space of :mod:`edgekit.tune`: the choices a study makes, and the recipe of a trial.

A trial's parameters are a width, a pruning (``none``, a sparsity, an ``m:n`` pattern or
``channels-S``: structured pruning removing the share ``S`` of the channels) and a
quantization scheme; :func:`trial_recipe` turns them into an ordinary, validated recipe, and
:func:`tuned_base` is the recipe a study searches around (one target, absolute paths).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..recipe import TARGETS_DIR, Recipe, absolute_source, find_target, with_model_paths

WIDTHS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
PRUNINGS = ("none", "0.3", "0.5", "0.7", "2:4", "channels-0.3", "channels-0.5")
CHANNELS = "channels-"
"""Prefix of a structured (channel) pruning choice: ``channels-0.5`` removes half the channels."""
SCHEMES = ("qat-int8", "ptq-int8", "ptq-int16x8")


@dataclasses.dataclass(frozen=True)
class Space:
    """The choices of a study. ``prunings``: ``"none"``, a sparsity (``"0.5"``), ``"m:n"`` or
    ``"channels-0.5"``."""

    widths: tuple[float, ...] = WIDTHS
    prunings: tuple[str, ...] = PRUNINGS
    schemes: tuple[str, ...] = SCHEMES

    def distributions(self) -> dict:
        from optuna.distributions import CategoricalDistribution

        return {"width": CategoricalDistribution(self.widths), "prune": CategoricalDistribution(self.prunings),
                "scheme": CategoricalDistribution(self.schemes)}

    def size(self) -> int:
        return len(self.widths) * len(self.prunings) * len(self.schemes)

    def as_json(self) -> dict:
        return {"width": list(self.widths), "prune": list(self.prunings), "scheme": list(self.schemes)}


def prune_choice(recipe: Recipe) -> str:
    """A recipe's pruning as a search-space choice: ``none``, ``"0.6"``, ``"2:4"`` or ``"channels-0.5"``."""
    if recipe.prune is None:
        return "none"
    if recipe.prune.structure == "channels":
        return f"{CHANNELS}{recipe.prune.target_sparsity:g}"
    return recipe.prune.structure or f"{recipe.prune.target_sparsity:g}"


def scheme_choice(recipe: Recipe) -> str:
    """A recipe's quantization as a search-space choice."""
    if recipe.qat is not None:
        return "qat-int8"
    return "ptq-int16x8" if recipe.convert.mcu_scheme == "int16x8" else "ptq-int8"


def space_for(recipe: Recipe, kind: str) -> Space:
    """The default space for a target kind, with the recipe's own choices added: int16x8 only
    for ``mcu`` targets (elsewhere the primary artifact is int8)."""
    schemes = SCHEMES if kind == "mcu" else tuple(s for s in SCHEMES if s != "ptq-int16x8")
    widths = tuple(sorted({*WIDTHS, float(recipe.student.width)}))
    prunings = tuple(dict.fromkeys([*PRUNINGS, prune_choice(recipe)]))
    own = scheme_choice(recipe)
    return Space(widths, prunings, schemes if own in schemes else (*schemes, own))


def base_params(recipe: Recipe) -> dict[str, Any]:
    """The recipe's own choices as trial parameters (the study's first trial)."""
    return {"width": float(recipe.student.width), "prune": prune_choice(recipe), "scheme": scheme_choice(recipe)}


def trial_recipe(base: Recipe, params: dict[str, Any]) -> Recipe:
    """``base`` with a trial's width, pruning and scheme; validated like any recipe.

    ``prune: "none"`` drops pruning; a sparsity keeps the base's pruning settings (or the
    defaults) at that target; ``"m:n"`` sets the structure and its sparsity ``1 - m/n``;
    ``"channels-S"`` sets ``structure: channels`` removing the share ``S`` of the channels.
    ``qat-int8`` keeps the base's QAT settings (or the defaults); ``ptq-*`` sets ``qat: null`` and
    ``convert.mcu_scheme``.
    """
    d = base.model_dump(mode="json")
    d["student"] = {**d["student"], "width": float(params["width"]), "baseline": False}
    choice = str(params["prune"])
    if choice == "none":
        d["prune"] = None
    else:
        prune = d["prune"] or {}
        if choice.startswith(CHANNELS):
            d["prune"] = {**prune, "target_sparsity": float(choice[len(CHANNELS):]), "structure": "channels",
                          "schedule": "polynomial", "frequency": None}
        elif ":" in choice:
            m, n = map(int, choice.split(":"))
            d["prune"] = {**prune, "target_sparsity": 1 - m / n, "structure": choice}
        else:
            d["prune"] = {**prune, "target_sparsity": float(choice), "structure": None}
    scheme = params["scheme"]
    d["qat"] = (d["qat"] or {}) if scheme == "qat-int8" else None
    d["convert"] = {**d["convert"], "mcu_scheme": "int16x8" if scheme == "ptq-int16x8" else "int8"}
    if d["convert"].get("selective") != "auto":  # a trial's score needs no per-layer diagnosis
        d["convert"]["per_layer_samples"] = 0
    try:
        return Recipe.model_validate(d)
    except Exception as exc:  # pydantic ValidationError: a choice the recipe cannot take
        raise RecipeError(f"trial parameters {params}: {exc}") from None


def tuned_base(recipe: Recipe, recipe_dir: Path, target: str) -> Recipe:
    """The recipe a study tunes: one target, the data and target paths made absolute (trial
    recipes live in ``trials/<n>/``, not beside the original), and no from-scratch student
    baseline (``student.baseline``: it would double every trial's distillation)."""
    if recipe.teacher is None or recipe.student is None:
        raise RecipeError("edgekit tune searches students distilled from a teacher; the recipe needs both "
                          "teacher and student (not null)")
    d = with_model_paths(recipe, recipe_dir).model_dump(mode="json")
    d["data"]["source"] = absolute_source(d["data"]["source"], recipe_dir)
    path = find_target(target, base=recipe_dir)
    d["targets"] = [path.stem if path.parent.resolve() == TARGETS_DIR.resolve() else str(path.resolve())]
    d["student"] = {**d["student"], "baseline": False}
    return Recipe.model_validate(d)
