"""The MLPerf Tiny recipes validate, and run end to end on generated data of the right shape
(one epoch, a few samples: a smoke test of wiring, not of accuracy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.pipeline import Run
from edgekit.recipe import load_recipe

RECIPES = {"mlperf-ic-resnet8": (32, 32, 3), "mlperf-kws-dscnn": (49, 10, 1), "mlperf-vww-mobilenet": (96, 96, 3)}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_validates(name):
    assert load_recipe(f"recipes/{name}.yaml").name == name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_runs_on_generated_data(name, tmp_path):
    recipe = load_recipe(f"recipes/{name}.yaml")
    shape = RECIPES[name]
    rng = np.random.default_rng(0)
    classes = 2 if name == "mlperf-vww-mobilenet" else (12 if "kws" in name else 10)
    n = 6 * classes
    y = np.arange(n) % classes
    x = rng.random((n, *shape), dtype=np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    small = {"epochs": 1, "batch_size": 16}
    recipe = recipe.model_copy(update={
        "data": recipe.data.model_copy(update={"source": f"npz:{tmp_path / 'data.npz'}", "test_split": 0.25}),
        "teacher": recipe.teacher.model_copy(update=small),
        "student": recipe.student.model_copy(update=small),
        "prune": recipe.prune.model_copy(update={"epochs": 1, "batch_size": 16}) if recipe.prune else None,
        "qat": recipe.qat.model_copy(update={"epochs": 1, "batch_size": 16}),
        "convert": recipe.convert.model_copy(update={"representative_samples": 8}),
        "evaluate": recipe.evaluate.model_copy(update={"warmup": 1, "runs": 2}),
    })
    path = Path(f"recipes/{name}.yaml").resolve()
    report = Run(recipe, path, tmp_path / "run").execute()
    assert {t["name"] for t in report["targets"]} == set(recipe.targets)
    for t in report["targets"]:
        assert t["size_bytes"] > 0 and t["accuracy"] is not None
