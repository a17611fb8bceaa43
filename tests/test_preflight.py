"""Preflight names the layers QAT or pruning cannot take, before any training."""

from __future__ import annotations

import pytest

from edgekit import preflight
from edgekit.errors import StageError
from edgekit.models import create_model, list_models

SHAPES = {3: (8, 8, 1), 2: (40, 1)}


@pytest.mark.parametrize("name", list(list_models()))
def test_every_zoo_model_passes_preflight(name):
    from edgekit.models import _MODELS

    model = create_model(name, input_shape=SHAPES[_MODELS[name][1]], num_classes=10)
    assert preflight.check_model(model, qat=True, prune=True) == []


def test_unsupported_layers_are_named_with_a_suggestion():
    from edgekit._tf import keras

    k = keras()
    model = k.Sequential([k.layers.Input((40, 1)), k.layers.Conv1D(4, 3, name="c1"),
                          k.layers.LayerNormalization(name="ln"), k.layers.Flatten(),
                          k.layers.Dense(3)])
    problems = preflight.check_model(model, qat=True, prune=False)
    assert [(p.layer, p.layer_type) for p in problems] == [("c1", "Conv1D"), ("ln", "LayerNormalization")]
    assert "Conv2D with a (k, 1) kernel" in str(problems[0])
    assert preflight.check_model(model, qat=False, prune=False) == []


def test_batchnorm_after_conv_is_folded_not_flagged():
    from edgekit._tf import keras

    k = keras()
    ok = k.Sequential([k.layers.Input((8, 8, 1)), k.layers.Conv2D(4, 3), k.layers.BatchNormalization(),
                       k.layers.Flatten(), k.layers.Dense(3)])
    assert preflight.check_model(ok, qat=True, prune=True) == []
    bad = k.Sequential([k.layers.Input((8, 8, 1)), k.layers.BatchNormalization(name="bn0"), k.layers.Flatten(),
                        k.layers.Dense(3)])
    assert [p.layer for p in preflight.check_model(bad, qat=True, prune=False)] == ["bn0"]


def test_pipeline_preflight_fails_before_training(tmp_path, monkeypatch):
    """A recipe whose student QAT cannot take fails in preflight: no teacher is trained."""
    from edgekit import models
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    @models.register_model("test_conv1d_plain", rank=2, doc="test only")
    def _plain(k, shape, n, reg, w):
        return [k.layers.Conv1D(4, 3, name="plain_conv1d"), k.layers.Flatten(), k.layers.Dense(n)]

    try:
        data = tmp_path / "d.npz"
        import numpy as np

        rng = np.random.default_rng(0)
        np.savez(data, x=rng.normal(size=(60, 16)).astype("float32"), y=rng.integers(0, 3, 60))
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"name: pf\ndata: {{source: 'npz:{data}'}}\nteacher: {{model: mlp_tiny, epochs: 1}}\n"
                          "student: {model: test_conv1d_plain, epochs: 1}\ntargets: [rpi4]\n")
        with pytest.raises(StageError, match=r"preflight: model 'test_conv1d_plain': layer 'plain_conv1d' \(Conv1D\)"):
            Run(load_recipe(recipe), recipe, tmp_path / "out").execute()
        assert not (tmp_path / "out" / "stages" / "teacher").exists()
    finally:
        models._MODELS.pop("test_conv1d_plain", None)
