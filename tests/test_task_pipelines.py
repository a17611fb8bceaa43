"""Regression and anomaly detection through the whole pipeline: the session's tiny runs of the
generated datasets (``regression_run``, ``anomaly_run`` in tests/conftest.py), and
the two shipped recipes end to end through the CLI; all in the slow suite.

Tolerances: a regression int8 target's MAE may exceed the float reference's by at most 10 %
(the int8 output step of a 0-400 h label is about 1.5 h); the fixed PCA layer is unchanged
by pruning and QAT to 1e-6 (it is not trained).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit.recipe import load_recipe

INT8_MAE_TOLERANCE = 0.10   # int8 MAE <= (1 + this) x the float reference's MAE

def _check_task_report(report: dict, task: str, keys: set[str]) -> None:
    """report.json names the task and every stage and target carries the task's metrics."""
    assert report["task"] == task
    for entry in report["stages"] + report["targets"] + [v for t in report["targets"] for v in t.get("variants", [])]:
        assert set(entry["metrics"]) >= keys, entry.get("name") or entry.get("format")
        assert entry["accuracy"] is None
    for t in report["targets"]:
        assert t["task"] == task and t["agreement_with_float"] is None


@pytest.mark.slow  # reads a whole run of the bank (the tasks' metrics, layers and evaluator are tested in-process in test_tasks.py and test_ondevice_tasks.py)
def test_regression_run_reports_task_metrics(regression_run):
    out, report = regression_run
    _check_task_report(report, "regression", {"mae", "rmse", "r2", "bias"})
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "pruned", "qat"]
    assert report["features"] == {"reduce": "pca", "components": 12, "input_size": 48, "reduced_size": 12,
                                  "variance_kept": pytest.approx(0.996, abs=0.003)}
    assert report["dataset"]["classes"] is None
    for t in report["targets"]:
        assert t["mean_abs_diff_vs_float"] is not None
    kinds = {t["kind"]: t for t in report["targets"]}
    assert {v["format"] for v in kinds["mobile"]["variants"]} == {"tflite-fp16", "onnx"}
    onnx = next(v for v in kinds["mobile"]["variants"] if v["format"] == "onnx")
    assert onnx["onnx_agreement_with_keras"] == 1.0  # every output within 1e-4 (relative) of Keras
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "| MAE |" in md and "## Task metrics" in md and "PCA in the model's first layer: 48 → 12" in md
    assert "MAE against size" in html and 'id="metrics"' in html


@pytest.mark.slow  # reads a whole run of the bank (the tasks' metrics, layers and evaluator are tested in-process in test_tasks.py and test_ondevice_tasks.py)
def test_regression_int8_mae_within_tolerance_of_float(regression_run):
    """Every int8 target (from the QAT model) against the float reference stage, on the same test samples."""
    _, report = regression_run
    ref = next(s for s in report["stages"] if s["name"] == report["reference_for_agreement"])
    for t in report["targets"]:
        assert t["format"] == "tflite-int8" and t["samples"] == report["dataset"]["test"]
        assert t["metrics"]["mae"] <= ref["metrics"]["mae"] * (1 + INT8_MAE_TOLERANCE), t["name"]


@pytest.mark.slow  # reads a whole run of the bank (the tasks' metrics, layers and evaluator are tested in-process in test_tasks.py and test_ondevice_tasks.py)
def test_regression_distillation_and_baseline_are_measured(regression_run):
    _, report = regression_run
    student = next(s for s in report["stages"] if s["name"] == "student")
    assert set(student["baseline_metrics"]) == {"mae", "rmse", "r2", "bias"}
    assert student["distillation_gain"] == pytest.approx(student["baseline_metrics"]["mae"]
                                                          - student["metrics"]["mae"], abs=1e-6)
    assert "baseline_accuracy" not in student


@pytest.mark.slow  # reads a whole run of the bank (the tasks' metrics, layers and evaluator are tested in-process in test_tasks.py and test_ondevice_tasks.py)
def test_pca_layer_survives_pruning_and_qat(regression_run):
    from edgekit import quantize
    from edgekit.data import load_for_recipe
    from edgekit.fitting import load_model
    from edgekit.models import REDUCTION_LAYER

    out, report = regression_run
    data = load_for_recipe(load_recipe(out.parent / "regression.yaml"), base=out.parent)
    pruned = next(s for s in report["stages"] if s["name"] == "pruned")
    assert REDUCTION_LAYER not in pruned["per_layer"]
    # the fixed layer is counted in no stage's params (QAT wrappers list its kernel as trainable)
    assert len({s["params"] for s in report["stages"] if s["name"] != "teacher"}) == 1, report["stages"]
    for model in (load_model(out / "stages" / "pruned" / "model.keras"), quantize.load(out / "stages" / "qat")):
        layer = next(la for la in model.layers if la.name.endswith(REDUCTION_LAYER))
        kernel = next(w for w in layer.weights if w.name.split("/")[-1].startswith("kernel"))
        np.testing.assert_allclose(kernel.numpy(), data.reduction["kernel"], atol=1e-6)


@pytest.mark.slow  # reads a whole run of the bank (the tasks' metrics, layers and evaluator are tested in-process in test_tasks.py and test_ondevice_tasks.py)
def test_anomaly_run_reports_task_metrics(anomaly_run):
    out, report = anomaly_run
    _check_task_report(report, "anomaly", {"roc_auc", "precision", "recall", "f1", "threshold"})
    for s in report["stages"]:
        assert s["threshold_rule"] == "max-f1-on-val"
    with np.load(out / "eval" / "eval.npz") as f:
        threshold = float(f["threshold"])
        assert str(f["task"]) == "anomaly"
    student = next(s for s in report["stages"] if s["name"] == "student")
    target = report["targets"][0]
    assert target["runtime"]["name"] == "tflite_micro" and target["threshold"] == threshold
    assert student["metrics"]["threshold"] == pytest.approx(threshold)  # the reference stage's threshold
    assert target["metrics"]["roc_auc"] > 0.6
    md = (out / "report.md").read_text()
    assert "| ROC-AUC |" in md and "| true \\ pred | normal | anomaly |" in md


@pytest.mark.slow  # reads a whole run of the bank (the tasks' metrics, layers and evaluator are tested in-process in test_tasks.py and test_ondevice_tasks.py)
def test_compare_refuses_tasks_other_than_classification(anomaly_run):
    from edgekit.errors import EdgekitError
    from edgekit.parity import compare

    out, _ = anomaly_run
    with pytest.raises(EdgekitError, match="diagnoses classifiers"):
        compare(out)


# ----------------------------------------------------------------------------- the shipped recipes (slow)


def _cli_run(recipe: str, out) -> dict:
    import time

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli", "run", recipe, "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\n{recipe}: {(time.perf_counter() - start) / 60:.1f} min")
    return json.loads((out / "report.json").read_text())


def _numbers(report: dict) -> str:
    rows = [{"stage": s["name"], "params": s["params"], "size_bytes": s["size_bytes"], **s["metrics"],
             **({"baseline": s["baseline_metrics"], "gain": s["distillation_gain"]} if "baseline_metrics" in s else {})}
            for s in report["stages"]]
    rows += [{"target": t["name"], "format": t["format"], "runtime": t["runtime"]["name"], "size_bytes": t["size_bytes"],
              "arena_bytes": t["arena_bytes"], **t["metrics"], "mean_abs_diff_vs_float": t["mean_abs_diff_vs_float"]}
             for t in report["targets"]]
    return json.dumps(rows, indent=1)


@pytest.mark.slow
def test_fermentation_recipe_end_to_end(tmp_path):
    report = _cli_run("recipes/fermentation-rpi.yaml", tmp_path / "fermentation")
    print(_numbers(report))
    _check_task_report(report, "regression", {"mae", "rmse", "r2", "bias"})
    assert report["features"]["reduce"] == "pca" and report["features"]["reduced_size"] == 12
    student = next(s for s in report["stages"] if s["name"] == "student")
    assert student["distillation_gain"] is not None and student["baseline_metrics"]["mae"] > 0
    rpi = report["targets"][0]
    assert rpi["name"] == "rpi4" and rpi["format"] == "tflite-int8"
    assert rpi["metrics"]["mae"] <= student["metrics"]["mae"] * (1 + INT8_MAE_TOLERANCE)
    assert rpi["metrics"]["r2"] > 0.8


@pytest.mark.slow
def test_anomaly_recipe_end_to_end(tmp_path):
    report = _cli_run("recipes/anomaly-mcu.yaml", tmp_path / "anomaly")
    print(_numbers(report))
    _check_task_report(report, "anomaly", {"roc_auc", "precision", "recall", "f1", "threshold"})
    mcu = report["targets"][0]
    assert mcu["name"] == "cortex-m4" and mcu["format"] == "tflite-full-int8"
    assert mcu["runtime"]["name"] == "tflite_micro" and mcu["arena_bytes"] > 0
    assert mcu["metrics"]["roc_auc"] >= 0.85
    assert mcu["budget"]["ok"]
