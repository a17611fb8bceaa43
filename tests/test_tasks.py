"""Tasks beyond classification, piece by piece: the input-reduction layer, thresholds,
distillation losses, the host's stage metrics against the evaluator's (the same functions;
tests/test_ondevice_tasks.py checks those against scikit-learn), eval.npz, recipes and
generated data.

Tolerances, beside each check:

| what | compared with | tolerance |
|---|---|---|
| PCA layer (Keras float32, and its float TFLite) | ``PCA.transform`` (float64) | abs 1e-4 + rel 1e-5 (values up to ~15) |
| LDA layer (Keras float32) | ``LinearDiscriminantAnalysis.transform`` | abs 1e-3 + rel 1e-4 |
| best-F1 threshold | F1 of every candidate (scikit-learn) | 1e-12 |
| distillation losses | numpy formula | rel 1e-5 (float32) |
| host stage metrics vs evaluator on a float TFLite model | the same functions | abs 1e-4 |
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit.data import fit_reduction, load_dataset
from edgekit.ondevice import evaluate as ev
from edgekit.recipe import DataConfig, FeaturesConfig


@pytest.fixture(scope="module")
def fermentation():
    return load_dataset(DataConfig(source="fermentation", normalize="zscore"), seed=0, task="regression",
                        features=FeaturesConfig(reduce="pca", components=12))


def _reduction_output(model, x):
    from edgekit._tf import keras
    from edgekit.models import REDUCTION_LAYER

    probe = keras().Model(model.input, model.get_layer(REDUCTION_LAYER).output)
    return probe.predict(x, batch_size=512, verbose=0), probe


# ----------------------------------------------------------------------------- input reduction


def test_pca_layer_equals_sklearn_transform(fermentation, tmp_path):
    """The model's fixed first layer computes PCA.transform: in Keras and in a float TFLite file."""
    from sklearn.decomposition import PCA

    from edgekit.convert import to_tflite
    from edgekit.models import create_model

    d = fermentation
    flat = lambda a: a.reshape(len(a), -1).astype("float64")  # noqa: E731
    pca = PCA(n_components=12, svd_solver="full").fit(flat(d.x_train))
    want = pca.transform(flat(d.x_test))
    model = create_model("mlp_tiny", input_shape=d.input_shape, num_classes=1, reduction=d.reduction, seed=0)
    got, probe = _reduction_output(model, d.x_test)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert np.abs(want).max() > 1.0  # not a trivial comparison
    assert d.reduction_info() == {"reduce": "pca", "components": 12, "input_size": 48, "reduced_size": 12,
                                  "variance_kept": pytest.approx(float(np.sum(pca.explained_variance_ratio_)), abs=1e-6)}
    path = tmp_path / "pca.tflite"
    path.write_bytes(to_tflite(probe, mode="float32", signature=False))
    lite = ev.predict_outputs(str(path), d.x_test[:200], runtime="ai_edge_litert")
    np.testing.assert_allclose(lite, want[:200], rtol=1e-5, atol=1e-4)


def test_lda_layer_equals_sklearn_transform():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from edgekit.models import create_model

    d = load_dataset(DataConfig(source="digits"), seed=0, features=FeaturesConfig(reduce="lda", components=9))
    flat = lambda a: a.reshape(len(a), -1).astype("float64")  # noqa: E731
    lda = LinearDiscriminantAnalysis(solver="svd").fit(flat(d.x_train), d.y_train)
    model = create_model("mlp_tiny", input_shape=d.input_shape, num_classes=10, reduction=d.reduction, seed=0)
    got, _ = _reduction_output(model, d.x_test)
    np.testing.assert_allclose(got, lda.transform(flat(d.x_test))[:, :9], rtol=1e-4, atol=1e-3)
    assert d.reduction_info()["variance_kept"] == pytest.approx(float(lda.explained_variance_ratio_[:9].sum()), abs=1e-6)


def test_reduction_layer_is_fixed_and_never_pruned(fermentation):
    from edgekit.fitting import model_stats
    from edgekit.models import REDUCTION_LAYER, create_model
    from edgekit.prune import layers_to_prune

    model = create_model("mlp_small", input_shape=fermentation.input_shape, num_classes=1,
                         reduction=fermentation.reduction, seed=0)
    layer = model.get_layer(REDUCTION_LAYER)
    assert not layer.trainable and layer.output.shape[1:] == (12,)
    assert model.get_layer("input_reduction_reshape").output.shape[1:] == (12, 1)
    # 'first' is the first trainable layer, not the fixed projection
    names = layers_to_prune(model, ["first", "last"])
    assert REDUCTION_LAYER not in names and len(names) == 1
    assert model_stats(model)["params"] == 12 * 64 + 64 + 64 * 64 + 64 + 65  # the projection is not trained


def test_reduction_refuses_image_models_and_too_many_components():
    from edgekit.errors import DataError, RecipeError
    from edgekit.models import create_model

    d = load_dataset(DataConfig(source="digits"), seed=0, features=FeaturesConfig(reduce="pca", components=8))
    with pytest.raises(RecipeError, match="rank 2"):
        create_model("cnn_tiny", input_shape=d.input_shape, num_classes=10, reduction=d.reduction)
    with pytest.raises(DataError, match="LDA keeps at most"):
        fit_reduction(FeaturesConfig(reduce="lda", components=10), d.x_train, d.y_train)


# ----------------------------------------------------------------------------- metrics


def test_anomaly_threshold_rules():
    from sklearn.metrics import f1_score

    from edgekit.tasks import choose_threshold

    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.1).astype(int)
    scores = rng.gamma(2.0, 1.0, 400) + 3.0 * y * rng.random(400)
    t, rule = choose_threshold(y, scores)
    assert rule == "max-f1-on-val"
    best = max(f1_score(y, scores >= c) for c in np.unique(scores))
    assert f1_score(y, scores >= t) == pytest.approx(best, abs=1e-12)
    t, rule = choose_threshold(np.zeros(400, int), scores)  # no anomalies in the validation split
    assert rule == "p99-normal-val" and t == pytest.approx(np.percentile(scores, 99))


def test_distillation_losses_match_formulas():
    from edgekit import tasks

    rng = np.random.default_rng(2)
    alpha = 0.3
    data = load_dataset(DataConfig(source="fermentation"), seed=0, task="regression")
    y, t, s = (rng.normal(size=(6, 1)).astype("float32") for _ in range(3))
    got = tasks.get("regression").distill_loss(data, temperature=4.0, alpha=alpha)(np.concatenate([y, t], 1), s)
    np.testing.assert_allclose(got.numpy(), (1 - alpha) * (y - s)[:, 0] ** 2 + alpha * (t - s)[:, 0] ** 2, rtol=1e-5)

    class Shape:
        input_shape = (5, 1)

    x, t, s = (rng.normal(size=(6, 5)).astype("float32") for _ in range(3))
    got = tasks.get("anomaly").distill_loss(Shape, temperature=4.0, alpha=alpha)(np.concatenate([x, t], 1),
                                                                                 s[..., None])
    want = (1 - alpha) * ((x - s) ** 2).mean(1) + alpha * ((t - s) ** 2).mean(1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


# ----------------------------------------------------------------------------- the evaluator


@pytest.fixture(scope="module")
def small_models(tmp_path_factory, regression_run, anomaly_run):
    """The reference (float) models of the session's regression and anomaly runs (no training
    here), as TFLite files (regression: float32 and int8; anomaly: int8 and full-int8), with
    eval.npz files of 300 test samples."""
    from edgekit.convert import representative, to_tflite, write_eval_npz
    from edgekit.data import load_for_recipe
    from edgekit.fitting import load_model
    from edgekit.recipe import load_recipe

    out = tmp_path_factory.mktemp("task_models")
    made = {}
    for name, (run, report) in (("regression", regression_run), ("anomaly", anomaly_run)):
        data = load_for_recipe(load_recipe(run.parent / f"{name}.yaml"), base=run.parent)
        model = load_model(run / "stages" / report["reference_for_agreement"] / "model.keras")
        # the modes the tests below read (no anomaly float32: each conversion of the autoencoder
        # costs seconds)
        for mode in ("int8", "full-int8") if name == "anomaly" else ("float32", "int8"):
            (out / f"{name}_{mode}.tflite").write_bytes(
                to_tflite(model, mode=mode, rep=representative(data, 100, 0) if "int8" in mode else None,
                          signature=False))
        write_eval_npz(out / f"{name}.npz", data, samples=300, reference_model=model)
        made[name] = (model, data)
    return out, made


@pytest.mark.slow  # reads the regression and anomaly runs of the bank (whole runs; the metrics and layers are tested in-process above)
def test_evaluator_reports_regression_metrics(small_models):
    from edgekit import tasks

    out, made = small_models
    model, data = made["regression"]
    with np.load(out / "regression.npz") as f:
        assert str(f["task"]) == "regression" and f["y"].dtype == np.float32 and "threshold" not in f.files
    res = _cli(out / "regression_int8.tflite", out / "regression.npz")
    assert res["task"] == "regression" and res["accuracy"] is None and res["agreement_with_float"] is None
    assert set(res["metrics"]) == {"mae", "rmse", "r2", "bias"} and res["mean_abs_diff_vs_float"] >= 0
    assert res["latency_ms"]["p50"] > 0 and res["size_bytes"] > 0
    # the host's stage metric and the evaluator's come from the same function: equal on the float model
    x, y = data.x_test[:300], data.y_test[:300]
    floats = ev.evaluate(str(out / "regression_float32.tflite"), x, y, task="regression", runs=1, warmup=0)
    host = tasks.get("regression").stage_metrics(model, type(data)(**{**data.__dict__, "x_test": x, "y_test": y}))
    for k in ("mae", "rmse", "r2", "bias"):
        assert floats["metrics"][k] == pytest.approx(host["metrics"][k], abs=1e-4), k


@pytest.mark.slow  # reads the regression and anomaly runs of the bank (whole runs; the metrics and layers are tested in-process above)
def test_evaluator_reports_anomaly_metrics(small_models, tmp_path):
    out, made = small_models
    with np.load(out / "anomaly.npz") as f:
        threshold = float(f["threshold"])
        assert str(f["task"]) == "anomaly" and f["ref"].dtype == np.float32
    res = _cli(out / "anomaly_int8.tflite", out / "anomaly.npz")
    assert res["task"] == "anomaly" and res["accuracy"] is None and res["threshold"] == threshold
    m = res["metrics"]
    assert set(m) == {"roc_auc", "precision", "recall", "f1", "threshold"} and m["roc_auc"] == res["roc_auc"]
    assert np.array(res["confusion_matrix"]).sum() == 300
    # int8 in, int8 out: the reconstruction is dequantized, the error measured against the float input
    full = _cli(out / "anomaly_full-int8.tflite", out / "anomaly.npz")
    assert full["input"]["dtype"] == "int8" and abs(full["metrics"]["roc_auc"] - m["roc_auc"]) < 0.05
    # an anomaly eval.npz without a threshold is refused with one line (exit 3)
    with np.load(out / "anomaly.npz") as f:
        np.savez(tmp_path / "bad.npz", **{k: f[k] for k in f.files if k != "threshold"})
    proc = subprocess.run([sys.executable, ev.__file__, "--model", str(out / "anomaly_int8.tflite"), "--data",
                           str(tmp_path / "bad.npz"), "--runs", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3 and "threshold" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _cli(model, data) -> dict:
    proc = subprocess.run([sys.executable, ev.__file__, "--model", str(model), "--data", str(data), "--runs", "5",
                           "--warmup", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------- recipes and data


@pytest.mark.parametrize("text,expected", [
    ("task: regression\nfeatures: {reduce: lda, components: 2}\n", "features.reduce: lda needs class labels"),
    ("task: anomaly\nfeatures: {reduce: pca, components: 2}\n", "features: input reduction is not available"),
    ("task: regression\nteacher: {early_stopping: {monitor: val_accuracy}}\n",
     "teacher.early_stopping.monitor: val_accuracy needs task classification"),
    ("task: ranking\n", "task: 'ranking' is not allowed"),
    ("features: {reduce: pca}\n", "features.components: required key is missing"),
])
def test_recipe_task_errors_name_the_key(tmp_path, text, expected):
    from edgekit.errors import RecipeError
    from edgekit.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: x\n" + text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: {expected}"), str(info.value)


def test_task_recipes_validate():
    from edgekit.recipe import load_recipe

    reg, ano = load_recipe("recipes/fermentation-rpi.yaml"), load_recipe("recipes/anomaly-mcu.yaml")
    assert (reg.task.value, reg.features.reduce, reg.targets) == ("regression", "pca", ["rpi4"])
    assert (ano.task.value, ano.qat, ano.targets) == ("anomaly", None, ["cortex-m4"])


def test_generated_datasets_are_seeded_and_shaped():
    from edgekit import simulated

    first, again = simulated.fermentation(), simulated.fermentation()
    assert all(np.array_equal(a, b) for pa, pb in zip(first, again) for a, b in zip(pa, pb))
    (x_train, y_train), (x_test, _) = first  # split by run: test windows come from unseen runs
    assert x_train.shape[1:] == (simulated.WINDOW, 3) and y_train.dtype == np.float32 and y_train.min() >= 0
    assert 0.15 < len(x_test) / (len(x_train) + len(x_test)) < 0.25
    x, y = simulated.machine_anomaly()
    assert x.shape == (simulated.MACHINE_SAMPLES, 640, 1) and set(np.unique(y)) == {0, 1}
    assert 0.05 < y.mean() < 0.11
    d = load_dataset(DataConfig(source="machine-anomaly", val_split=0.15), seed=0, task="anomaly")
    assert d.y_val.sum() > 0 and d.y_test.sum() > 0  # stratified: anomalies in every split
    assert d.summary()["task"] == "anomaly" and d.num_classes == 2


def test_regression_labels_from_csv_and_anomaly_labels_checked(tmp_path):
    from edgekit.errors import DataError

    rows = ["a,b,label"] + [f"{i},{i * 2},{i * 0.5 + 0.25}" for i in range(30)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    d = load_dataset(DataConfig(source=f"csv:{tmp_path / 'r.csv'}"), seed=0, task="regression")
    assert d.y_train.dtype == np.float32 and d.num_classes == 1 and d.summary()["classes"] is None
    assert sorted(np.concatenate([d.y_train, d.y_val, d.y_test]).tolist())[:2] == [0.25, 0.75]
    np.savez(tmp_path / "a.npz", x=np.zeros((20, 4), "float32"), y=np.arange(20) % 3)
    with pytest.raises(DataError, match="task anomaly needs labels 0"):
        load_dataset(DataConfig(source=f"npz:{tmp_path / 'a.npz'}"), task="anomaly")
