"""The standalone evaluator on regression and anomaly models: the task metrics against
scikit-learn, eval.npz's ``task`` and ``threshold``, and the JSON it prints.

Tolerances: MAE, RMSE, R², bias, ROC-AUC and F1 equal scikit-learn's to 1e-12 (float64, the
same formulas); the int8 outputs are dequantized, so an int8 regression model's predictions
are within a few output quantization steps of the float model's (``mean_abs_diff_vs_float``
below 3 steps here).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit.ondevice import evaluate as ev


def test_regression_metrics_match_sklearn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(0)
    y = rng.normal(50, 20, 500)
    pred = y + rng.normal(2, 5, 500)
    m = ev.regression_metrics(y, pred)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), abs=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), abs=1e-12)
    assert m["r2"] == pytest.approx(r2_score(y, pred), abs=1e-12)
    assert m["bias"] == pytest.approx(pred.mean() - y.mean(), abs=1e-12)
    assert ev.regression_metrics(np.ones(4), np.ones(4))["r2"] is None


def test_anomaly_metrics_match_sklearn():
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.1).astype(int)
    scores = rng.gamma(2.0, 1.0, 400) + 3.0 * y * rng.random(400)
    m = ev.anomaly_metrics(y, scores, 4.0)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    for key, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert m[key] == pytest.approx(fn(y, scores >= 4.0), abs=1e-12), key
    assert m["threshold"] == 4.0
    assert ev.threshold_metrics(np.zeros(3), np.zeros(3), 1.0) == {"precision": None, "recall": None, "f1": None}
    assert ev.reconstruction_error(np.ones((2, 3, 1)), np.zeros((2, 3))).tolist() == [1.0, 1.0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A linear regression model and a small dense autoencoder on synthetic data, as float and
    int8 TFLite files, with their eval.npz files."""
    from edgekit._tf import keras, tf

    k = keras()
    out = tmp_path_factory.mktemp("ondevice_tasks")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype("float32")
    y = (x @ rng.normal(size=8) * 10 + 40).astype("float32")
    tf().random.set_seed(0)
    reg = k.Sequential([k.layers.Input((8,)), k.layers.Dense(16, activation="relu"), k.layers.Dense(1)])
    reg.compile(optimizer=k.optimizers.Adam(0.02), loss="mse")
    reg.fit(x, y, epochs=30, batch_size=32, verbose=0)
    # normal samples live on a 2-d subspace; anomalies do not
    basis = rng.normal(size=(2, 16)).astype("float32")
    normal = (rng.normal(size=(600, 2)) @ basis).astype("float32")
    ae = k.Sequential([k.layers.Input((16, 1)), k.layers.Flatten(), k.layers.Dense(2), k.layers.Dense(16),
                       k.layers.Reshape((16, 1))])
    ae.compile(optimizer=k.optimizers.Adam(0.02), loss="mse")
    ae.fit(normal[..., None], normal[..., None], epochs=40, batch_size=32, verbose=0)

    def convert(model, rep_x, name, full=False):
        from edgekit.convert import to_tflite

        def rep():
            for i in range(100):
                yield [rep_x[i : i + 1]]

        (out / name).write_bytes(to_tflite(model, mode="full-int8" if full else "int8", rep=rep, signature=False))

    convert(reg, x, "reg_int8.tflite")
    convert(reg, x, "reg_full_int8.tflite", full=True)
    convert(ae, normal[..., None], "ae_full_int8.tflite", full=True)
    xt = rng.normal(size=(200, 8)).astype("float32")
    yt = reg.predict(xt, verbose=0)[:, 0] + rng.normal(0, 1, 200).astype("float32")
    np.savez(out / "reg.npz", x=xt, y=yt, ref=reg.predict(xt, verbose=0)[:, 0], task=np.array("regression"))
    labels = (rng.random(200) < 0.2).astype("int64")
    xa = (rng.normal(size=(200, 2)) @ basis).astype("float32")
    xa[labels == 1] += rng.normal(0, 1.5, (int(labels.sum()), 16)).astype("float32")
    recon = ae.predict(xa[..., None], verbose=0)
    ref = ev.reconstruction_error(xa, recon).astype("float32")
    np.savez(out / "ae.npz", x=xa[..., None], y=labels, ref=ref, task=np.array("anomaly"),
             threshold=np.array(float(np.percentile(ref[labels == 0], 99))))
    return out, reg


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, ev.__file__, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_regression_result(models):
    out, reg = models
    assert ev.load_eval_task(str(out / "reg.npz")) == ("regression", None)
    proc = _cli("--model", out / "reg_int8.tflite", "--data", out / "reg.npz", "--runs", "5", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["task"] == "regression" and res["accuracy"] is None and res["agreement_with_float"] is None
    assert res["per_class"] is None and res["confusion_matrix"] is None and res["roc_auc"] is None
    with np.load(out / "reg.npz") as f:
        pred = ev.predict_outputs(str(out / "reg_int8.tflite"), f["x"])[:, 0]
        assert res["metrics"] == pytest.approx(ev.regression_metrics(f["y"], pred), abs=1e-9)
        assert res["mean_abs_diff_vs_float"] == pytest.approx(np.abs(pred - f["ref"]).mean(), abs=1e-6)
    assert res["latency_ms"]["p50"] > 0 and res["size_bytes"] > 0
    # int8 in and out: the prediction is dequantized with the output's scale and zero point
    full = json.loads(_cli("--model", out / "reg_full_int8.tflite", "--data", out / "reg.npz", "--runs", "1").stdout)
    assert full["output"]["dtype"] == "int8" and full["output"]["scale"] > 0
    assert full["mean_abs_diff_vs_float"] < 3 * full["output"]["scale"]
    assert abs(full["metrics"]["mae"] - res["metrics"]["mae"]) < 3 * full["output"]["scale"]


def test_anomaly_result_in_tflite_micro(models, tmp_path):
    from edgekit import mcu

    out, _ = models
    task, threshold = ev.load_eval_task(str(out / "ae.npz"))
    assert task == "anomaly"
    arena = mcu.measure_arena(out / "ae_full_int8.tflite").recommended_bytes
    proc = _cli("--model", out / "ae_full_int8.tflite", "--data", out / "ae.npz", "--runtime", "tflite_micro",
                "--arena-bytes", arena, "--runs", "5", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["task"] == "anomaly" and res["accuracy"] is None and res["threshold"] == threshold
    assert res["input"]["dtype"] == "int8" and res["runtime"]["name"] == "tflite_micro"
    assert set(res["metrics"]) == {"roc_auc", "precision", "recall", "f1", "threshold"}
    assert res["metrics"]["roc_auc"] > 0.9 and res["roc_auc"] == res["metrics"]["roc_auc"]
    assert np.array(res["confusion_matrix"]).sum() == 200 and len(res["per_class"]) == 2
    # --threshold overrides eval.npz's; without any threshold an anomaly eval.npz is refused (exit 3)
    lower = _cli("--model", out / "ae_full_int8.tflite", "--data", out / "ae.npz", "--runs", "1", "--threshold", "0")
    assert json.loads(lower.stdout)["metrics"]["recall"] == 1.0
    with np.load(out / "ae.npz") as f:
        np.savez(tmp_path / "bad.npz", **{k: f[k] for k in f.files if k != "threshold"})
    proc = _cli("--model", out / "ae_full_int8.tflite", "--data", tmp_path / "bad.npz", "--runs", "1")
    assert proc.returncode == 3 and "threshold" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_task_data_is_checked(models):
    out, _ = models
    with np.load(out / "reg.npz") as f:
        x, y = f["x"], f["y"]
    with pytest.raises(ev.DataError, match="unknown task"):
        ev.evaluate(str(out / "reg_int8.tflite"), x, y, task="ranking", runs=1)
    with pytest.raises(ev.DataError, match="labels 0 \\(normal\\) and 1"):
        ev.evaluate(str(out / "ae_full_int8.tflite"), np.zeros((3, 16, 1), "float32"), np.array([0, 2, 1]),
                    task="anomaly", threshold=1.0, runs=1)
    with pytest.raises(ev.DataError, match="NaN or inf"):
        ev.evaluate(str(out / "reg_int8.tflite"), x[:2], np.array([1.0, np.nan]), task="regression", runs=1)
    with pytest.raises(ev.ModelError, match="one output value"):
        ev.evaluate(str(out / "ae_full_int8.tflite"), np.zeros((2, 16, 1), "float32"), np.zeros(2),
                    task="regression", runs=1)
