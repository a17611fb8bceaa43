"""Each training stage on tiny models and a few epochs (digits)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgekit.data import load_dataset
from edgekit.recipe import DataConfig, PruneConfig, StudentConfig


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(source="digits"), seed=0)


@pytest.fixture(scope="module")
def teacher(finished_run):
    """The teacher the session's finished run trained with train.run (cnn_tiny, 4 epochs on
    digits): its model file and metrics. Read-only; the stage tests below start from it."""
    import types

    folder = finished_run.out / "stages" / "teacher"
    return types.SimpleNamespace(model_path=folder / "model.keras",
                                 metrics=json.loads((folder / "metrics.json").read_text()))


def test_dataset_split_is_seeded_and_stratified(data):
    again = load_dataset(DataConfig(source="digits"), seed=0)
    assert np.array_equal(data.y_test, again.y_test)
    assert len(data.x_test) == 360 and data.input_shape == (8, 8, 1)
    counts = np.bincount(data.y_test)
    assert counts.min() >= 30  # stratified: every class present in the test split


def test_teacher_trains_and_saves(teacher, finished_run):
    m = teacher.metrics
    assert m["replicas"] == 1 and m["strategy"] == "OneDeviceStrategy"
    assert m["accuracy"] > 0.85
    assert teacher.model_path.is_file()
    assert m["config"]["model"] == "cnn_tiny" and m["epochs_run"] == m["config"]["epochs"] == 4
    stage = next(s for s in finished_run.report["stages"] if s["name"] == "teacher")
    assert stage["accuracy"] == m["accuracy"]  # the report shows what the stage measured


def test_distillation_loss_matches_formula():
    from edgekit.distill import distillation_loss

    rng = np.random.default_rng(0)
    n, T, alpha = 5, 3.0, 0.6
    s, t = rng.normal(size=(4, n)).astype("float32"), rng.normal(size=(4, n)).astype("float32")
    y = rng.integers(0, n, 4)
    target = np.concatenate([np.eye(n, dtype="float32")[y], t], 1)
    got = distillation_loss(n, T, alpha)(target, s).numpy()

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ce = -np.log(softmax(s)[np.arange(4), y])
    pt, ps = softmax(t / T), softmax(s / T)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(1)
    np.testing.assert_allclose(got, (1 - alpha) * ce + alpha * T * T * kl, rtol=1e-5)  # float32 tolerance


def test_distill_with_baseline(teacher, data, tmp_path):
    from edgekit import distill
    from edgekit.fitting import load_model

    cfg = StudentConfig(model="cnn_tiny", epochs=3, batch_size=32, learning_rate=0.01)
    res = distill.run(load_model(teacher.model_path), data, cfg, seed=0, out_dir=tmp_path, baseline=True)
    assert 0.5 < res.metrics["accuracy"] <= 1.0
    assert res.metrics["baseline_accuracy"] > 0.5  # the same student trained from scratch: a real model too
    assert res.metrics["distillation_gain"] == pytest.approx(
        res.metrics["accuracy"] - res.metrics["baseline_accuracy"], abs=1e-6)


def test_prune_short_schedule_reaches_target(teacher, data, tmp_path):
    """Two epochs of ~36 steps: tfmot's default frequency (100) would never prune."""
    from edgekit import prune
    from edgekit.fitting import load_model

    cfg = PruneConfig(target_sparsity=0.7, epochs=2, batch_size=32, skip_layers=["last"])
    steps = prune.schedule_steps(len(data.x_train), cfg)
    assert steps["end_step"] < 100 and steps["end_step"] % steps["frequency"] == 0
    res = prune.run(load_model(teacher.model_path), data, cfg, seed=0, out_dir=tmp_path)
    assert abs(res.metrics["sparsity"] - 0.7) <= 0.05
    # measured from the saved, stripped weights
    model = load_model(res.model_path)
    assert not any("prune_low_magnitude" in layer.name for layer in model.layers)
    kernels = [model.get_layer(n).kernel.numpy() for n in res.metrics["pruned_layers"]]
    zeros = sum(k.size - np.count_nonzero(k) for k in kernels) / sum(k.size for k in kernels)
    assert zeros == pytest.approx(res.metrics["sparsity"], abs=1e-6)


def test_prune_shortfall_fails_under_strict(teacher, data, tmp_path):
    from edgekit import prune
    from edgekit.errors import StageError
    from edgekit.fitting import load_model

    # an explicit frequency longer than the whole schedule: the masks never reach the target
    cfg = PruneConfig(target_sparsity=0.8, epochs=1, batch_size=32, frequency=10_000, strict=True,
                      skip_layers=["last"])
    with pytest.raises(StageError, match="pruning reached sparsity"):
        prune.run(load_model(teacher.model_path), data, cfg, seed=0, out_dir=tmp_path)


def test_prune_unknown_skip_layer(teacher, data, tmp_path):
    from edgekit import prune
    from edgekit.errors import StageError
    from edgekit.fitting import load_model

    with pytest.raises(StageError, match="no weighted layer named 'nope'"):
        prune.run(load_model(teacher.model_path), data, PruneConfig(skip_layers=["nope"]), seed=0, out_dir=tmp_path)


def test_qat_preserves_sparsity_and_roundtrips(finished_run):
    """The finished run's pruned (50 %) and QAT stages, as prune.run and quantize.run wrote them."""
    from edgekit import quantize
    from edgekit.data import load_for_recipe
    from edgekit.recipe import load_recipe

    stages = finished_run.out / "stages"
    pr = json.loads((stages / "pruned" / "metrics.json").read_text())
    q = json.loads((stages / "qat" / "metrics.json").read_text())
    assert q["scheme"] == "prune_preserve_8bit"
    # zeros survive QAT: at least the share of zeros the pruned model had
    assert q["kernel_sparsity_after"] >= pr["sparsity_overall"] - 1e-6
    assert q["sparsity"] >= pr["sparsity"] - 1e-6  # the pruned layers stay as sparse
    assert q["size_format"] == "tflite-int8"
    assert q["size_bytes"] < pr["size_bytes"]
    assert q["calibrated_ranges"] >= 2
    reloaded = quantize.load(stages / "qat")
    # ranges start from the float activations: ReLU outputs use [0, max], not tfmot's [-6, 6]
    relu_min = [w for w in reloaded.weights if "post_activation_min" in w.name][0]
    assert float(relu_min.numpy()) == 0.0
    data = load_for_recipe(load_recipe(finished_run.recipe_path), base=finished_run.recipe_path.parent)
    x = data.x_test[:16]
    fresh = quantize.load(stages / "qat")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), fresh.predict(x, verbose=0))
    assert (reloaded.predict(data.x_test, verbose=0).argmax(1) == data.y_test).mean() == pytest.approx(
        q["accuracy"], abs=1e-9)


@pytest.mark.slow  # a fresh process: logical CPUs must be set before TensorFlow starts
def test_mirrored_strategy_on_two_virtual_cpus(tmp_path):
    """The teacher trains under MirroredStrategy with 2 replicas when 2 devices are visible."""
    code = textwrap.dedent(f"""
        import json
        from edgekit._tf import tf
        t = tf()
        cpu = t.config.list_physical_devices("CPU")[0]
        t.config.set_logical_device_configuration(cpu, [t.config.LogicalDeviceConfiguration()] * 2)
        from edgekit import train
        from edgekit.data import load_dataset
        from edgekit.recipe import DataConfig, TeacherConfig
        d = load_dataset(DataConfig(source="digits"), seed=0)
        r = train.run(d, TeacherConfig(model="cnn_tiny", epochs=2, learning_rate=0.01,
                                                   strategy="auto"), seed=0,
                      out_dir=__import__("pathlib").Path({str(tmp_path)!r}))
        print(json.dumps(r.metrics))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["strategy"] == "MirroredStrategy" and metrics["replicas"] == 2
    assert metrics["accuracy"] > 0.5


def test_prune_structured_2_of_4(teacher, data, tmp_path):
    from edgekit import prune
    from edgekit.fitting import load_model

    cfg = PruneConfig(target_sparsity=0.5, structure="2:4", schedule="constant", epochs=2, batch_size=32,
                      skip_layers=["first"])
    res = prune.run(load_model(teacher.model_path), data, cfg, seed=0, out_dir=tmp_path)
    assert res.metrics["m_by_n_ok"] is True
    assert abs(res.metrics["sparsity"] - 0.5) <= 0.05
    kernel = load_model(res.model_path).get_layer(res.metrics["pruned_layers"][0]).kernel.numpy()
    assert prune.check_m_by_n(kernel, 2, 4)
    assert not prune.check_m_by_n(np.ones((3, 3, 8, 4)), 2, 4)


def test_a_ctrl_c_that_python_dropped_still_stops_training_at_the_next_batch():
    """Python drops a KeyboardInterrupt raised inside a weakref callback; the CLI's SIGINT handler
    also sets edgekit.interrupt.INTERRUPT, and every training loop's callbacks raise it again after
    the next batch (tests/test_interrupt.py sends the real signal to a run, in the slow suite)."""
    import signal

    from edgekit._tf import keras
    from edgekit.fitting import callbacks
    from edgekit.interrupt import INTERRUPT, on_sigint

    k = keras()
    model = k.Sequential([k.Input((4,)), k.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.zeros((64, 4), np.float32), np.zeros((64, 2), np.float32)
    seen = []

    class Count(k.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    cbs = callbacks("qat", None, 3, has_val=False, progress=None)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[*cbs, Count()])
    assert len(seen) == 8  # no Ctrl-C: it trains on
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        on_sigint(signal.SIGINT, None)  # the handler raises as Python's does (here nobody drops it)
    try:
        assert INTERRUPT.is_set()
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[*cbs, Count()])
        assert len(seen) <= 1  # stopped after the first batch
    finally:
        INTERRUPT.clear()
