"""Structured (channel) pruning: the graph surgery keeps shapes consistent, the file shrinks."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.recipe import PruneConfig, QatConfig


def _functional_mix():
    """Residual Add, Concatenate, depthwise, BatchNorm, Flatten -> Dense, and a Lambda (unknown)."""
    from edgekit._tf import keras

    k = keras()
    L = k.layers
    inp = L.Input((6, 6, 2))
    a = L.Conv2D(8, 3, padding="same", name="a")(inp)
    b = L.BatchNormalization(name="bn_b")(L.Conv2D(8, 1, name="b")(inp))
    s = L.Activation("relu")(L.Add(name="add")([a, b]))
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(s)
    c = L.Conv2D(6, 1, name="c")(inp)
    cat = L.Concatenate(name="cat")([d, c])
    e = L.Conv2D(10, 3, strides=2, padding="same", name="e")(cat)
    lam = L.Lambda(lambda t: t * 2.0, name="lam")(L.Conv2D(4, 1, strides=2, name="f")(cat))
    x = L.Flatten()(L.Concatenate()([e, lam]))
    x = L.Dense(12, activation="relu", name="hidden")(x)
    return k.Model(inp, L.Dense(3, name="logits")(x))


def _multiplier_and_axis():
    """A depthwise conv with a depth multiplier of 2 and a BatchNorm over rows, not channels: both
    keep every channel of their input (their weights are not per input channel); the rest shrinks."""
    from edgekit._tf import keras

    k = keras()
    L = k.layers
    inp = L.Input((8, 8, 2))
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(L.Conv2D(6, 3, name="a")(inp))
    x = L.BatchNormalization(axis=1, name="bn_rows")(L.Conv2D(8, 1, name="b")(x))
    x = L.Dense(8, activation="relu", name="hidden")(L.Flatten()(L.Conv2D(6, 3, name="c")(x)))
    return k.Model(inp, L.Dense(3, name="logits")(x))


def _zoo(name):
    from edgekit.models import create_model

    shape, width = {"resnet8": ((16, 16, 3), 0.5), "ds_cnn": ((20, 10, 1), 0.25),
                    "mobilenet_v1_025": ((32, 32, 3), 0.5), "cnn_tiny": ((8, 8, 1), 1.0)}[name]
    return create_model(name, input_shape=shape, num_classes=4, width=width, seed=0), shape


def _randomize_bn(model, rng):
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.2, 2, g.shape), rng.normal(size=b.shape), rng.normal(size=m.shape) * .1,
                               rng.uniform(0.5, 2, v.shape)])


@pytest.mark.parametrize("which", ["mix", "multiplier", "resnet8", "ds_cnn", "cnn_tiny"])
def test_small_model_computes_what_the_kept_channels_computed(which):
    """Zero, in the original, every consumer's weights on the removed channels: it then computes
    exactly what the rebuilt small model computes (so each kept weight went to its right place:
    Flatten index mapping, Add groups, Concatenate offsets, depthwise and BatchNorm slices)."""
    from edgekit.structured import analyze, choose, shrink

    model = {"mix": _functional_mix, "multiplier": _multiplier_and_axis}.get(which, lambda: _zoo(which)[0])()
    rng = np.random.default_rng(0)
    _randomize_bn(model, rng)
    last = model.layers[-1].name
    small, kept, removed = shrink(model, 0.5, {last})
    plan = analyze(model, {last})
    choose(model, plan, 0.5)
    for name in plan.producers:
        layer = model.get_layer(name)
        idx = plan.indices(plan.inputs[name][0])
        w = layer.get_weights()
        mask = np.zeros(w[0].shape[-2], bool)
        mask[idx] = True
        w[0][..., ~mask, :] = 0.0
        layer.set_weights(w)
    x = rng.random((3, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(small(x, training=False).numpy(), model(x, training=False).numpy(),
                               rtol=1e-4, atol=1e-4)
    assert small.count_params() < model.count_params() and 0.4 <= removed <= 0.6
    assert small.output_shape == model.output_shape and last not in kept


def test_batchnorm_adaptation_gives_the_statistics_of_the_data():
    """After the shrink the wide model's BatchNorm statistics are stale: adapt_batchnorm sets each
    moving mean to the mean of the layer's input over the samples (averaged over equal batches)
    and makes inference on them what training mode computes; the momentum is left as it was."""
    from edgekit._tf import keras
    from edgekit.structured import adapt_batchnorm

    model, shape = _zoo("resnet8")
    rng = np.random.default_rng(0)
    _randomize_bn(model, rng)
    x = rng.random((32, *shape)).astype("float32")
    assert not np.allclose(model(x, training=False).numpy(), model(x, training=True).numpy(), rtol=1e-2, atol=5e-3)
    norms = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    before = [layer.momentum for layer in norms]
    assert adapt_batchnorm(model, x, batch_size=8) == 32
    assert [layer.momentum for layer in norms] == before
    first = norms[0]
    seen = keras().Model(model.inputs, first.input)(x).numpy()
    np.testing.assert_allclose(first.moving_mean.numpy(), seen.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    assert adapt_batchnorm(model, x, batch_size=32) == 32  # one batch: its statistics (the stored
    # variance is Bessel-corrected, n/(n-1) of what training mode divides by: 0.2 % here at 4x4x32)
    np.testing.assert_allclose(model(x, training=False).numpy(), model(x, training=True).numpy(),
                               rtol=1e-2, atol=5e-3)
    assert adapt_batchnorm(_zoo("cnn_tiny")[0], x[:, :8, :8, :1], batch_size=8) == 0  # no BatchNorm: nothing


def test_groups_follow_the_graph():
    from edgekit.structured import shrink

    model = _functional_mix()
    small, kept, _ = shrink(model, 0.5, {"logits"})
    assert kept["a"] == kept["b"] == [4, 8]                      # joined by Add: one group, same channels
    assert small.get_layer("dw").get_weights()[0].shape[2] == 4   # depthwise follows its input
    assert small.get_layer("bn_b").get_weights()[0].shape == (4,)
    assert "f" not in kept and small.get_layer("f").get_weights()[0].shape[-1] == 4  # feeds a Lambda: kept
    assert small.get_layer("e").get_weights()[0].shape[2] == 4 + 3  # Concatenate of kept dw + kept c
    assert small.get_layer("hidden").get_weights()[0].shape == (3 * 3 * (5 + 4), 6)  # Flatten mapping
    assert "logits" not in kept                                   # the output keeps its classes
    small, kept, _ = shrink(_multiplier_and_axis(), 0.5, {"logits"})
    assert "a" not in kept and "b" not in kept  # feed a depth multiplier of 2 / a BatchNorm over rows: kept
    assert small.get_layer("dw2").get_weights()[1].shape == (12,) and small.get_layer("bn_rows").get_weights()[0].shape == (6,)
    assert kept["c"] == [3, 6] and kept["hidden"] == [4, 8]


# MobileNet's depthwise blocks are DS-CNN's kind (the default suite's); at 13 s it runs with the slow tests
@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", pytest.param("mobilenet_v1_025", marks=pytest.mark.slow)])
def test_zoo_model_shrinks_and_runs_in_tflite_micro(name, tmp_path):
    """Width-reduced zoo model, random weights and data: half the channels out, the full-int8
    file and the tensor arena measured in tflite-micro both shrink."""
    from edgekit import mcu
    from edgekit.convert import to_tflite
    from edgekit.structured import shrink

    model, shape = _zoo(name)
    small, kept, _ = shrink(model, 0.5, {"logits"})
    assert kept and small.count_params() < 0.6 * model.count_params()
    x = np.random.default_rng(0).random((8, *shape)).astype("float32")
    assert small(x, training=False).shape == (8, 4)

    def rep():
        for i in range(len(x)):
            yield [x[i:i + 1]]

    sizes, arenas = [], []
    for m in (model, small):
        path = tmp_path / f"{len(sizes)}.tflite"
        path.write_bytes(to_tflite(m, mode="full-int8", rep=rep, signature=False))
        trial = mcu.try_arena(path, 1 << 20)
        assert trial.ok, trial.error
        sizes.append(path.stat().st_size)
        arenas.append(trial.reported_total_bytes)
    assert sizes[1] < 0.75 * sizes[0]
    assert arenas[1] < arenas[0]


@pytest.fixture(scope="module")
def digits():
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    return load_dataset(DataConfig(source="digits"), seed=0)


def test_stage_fine_tunes_reports_channels_and_qat_stays_dense(digits, tmp_path):
    from edgekit import quantize, structured
    from edgekit.fitting import load_model
    from edgekit.models import create_model

    model = create_model("cnn_small", input_shape=(8, 8, 1), num_classes=10, width=0.5, seed=0)
    cfg = PruneConfig(structure="channels", target_sparsity=0.5, epochs=1, batch_size=64, learning_rate=0.01)
    res = structured.run(model, digits, cfg, seed=0, out_dir=tmp_path / "pruned")
    m = res.metrics
    # 'first' and 'last' are skipped by default: the middle conv and the hidden Dense lose half
    assert m["structure"]["kind"] == "channels" and m["channels_removed"] == 0.5
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert list(m["structure"]["kept"]) == weighted[1:-1]
    assert all(a == b // 2 for a, b in m["structure"]["kept"].values())
    assert m["structure"]["params_after"] < m["structure"]["params_before"] == model.count_params()
    assert m["params"] == m["structure"]["params_after"] and m["accuracy"] > 0.2
    assert m["batchnorm_adapted_samples"] == 0  # cnn_small has no BatchNorm
    q = quantize.run(load_model(res.model_path), digits, QatConfig(epochs=1, batch_size=64), seed=0,
                     out_dir=tmp_path / "qat", pruned=False)
    assert q.metrics["scheme"] == "default_8bit" and q.metrics["size_bytes"] < m["size_bytes"]


def test_nothing_to_prune_is_one_clear_error(digits, tmp_path):
    from edgekit import structured
    from edgekit.errors import StageError
    from edgekit.models import create_model

    model = create_model("mlp_tiny", input_shape=(64, 1), num_classes=10, seed=0)
    # the hidden layer skipped, the logits are the model's output: no channel may go
    cfg = PruneConfig(structure="channels", target_sparsity=0.5, epochs=1, skip_layers=["first"])
    with pytest.raises(StageError, match="no layer has channels that can be removed"):
        structured.run(model, digits, cfg, seed=0, out_dir=tmp_path)


# no teacher: channel pruning takes the student whatever trained it (distillation into a student
# runs in the session's finished_run), and a teacher stage costs a training and a conversion
CHANNELS_RECIPE = """
name: channels
seed: 1
data: {source: digits}
teacher: null
student: {model: cnn_tiny, epochs: 2, batch_size: 32, learning_rate: 0.01}
prune: {structure: channels, target_sparsity: 0.5, epochs: 1, batch_size: 32}
qat: {epochs: 1, batch_size: 32}
targets: [cortex-m4]
evaluate: {warmup: 1, runs: 3}
"""


@pytest.fixture(scope="module")
def channels_run(tmp_path_factory):
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    folder = tmp_path_factory.mktemp("channels_run")
    recipe_path = folder / "channels.yaml"
    recipe_path.write_text(CHANNELS_RECIPE)
    return folder / "run", Run(load_recipe(recipe_path), recipe_path, folder / "run").execute()


@pytest.mark.slow  # a whole run (the stage and the shrinking are tested in-process above)
def test_pipeline_reports_channels_and_a_smaller_file(channels_run):
    from edgekit.report import view

    out, report = channels_run
    stages = {s["name"]: s for s in report["stages"]}
    pruned = stages["pruned"]
    assert pruned["structure"]["kind"] == "channels" and pruned["channels_removed"] == 0.5
    assert list(pruned["structure"]["kept"].values()) == [[12, 24]]   # first and last layers skipped
    assert pruned["params"] < stages["student"]["params"]
    assert pruned["size_bytes"] < stages["student"]["size_bytes"]      # the file itself shrinks
    assert stages["qat"]["scheme"] == "default_8bit"                   # dense: nothing to preserve
    assert stages["qat"]["params"] == pruned["params"]
    note = view.pruning_flash_note(report)
    assert note.startswith("structured pruning removed 50") and "the file shrank" in note
    md = (out / "report.md").read_text()
    assert "### Channels kept (pruned)" in md and "| 12 | 24 |" in md and "the file shrank" in md
    html = (out / "report.html").read_text()
    assert 'id="channels-kept"' in html
    target = report["targets"][0]
    assert target["size_bytes"] > 0 and target["arena_bytes"] > 0      # measured in tflite-micro
