"""``edgekit.parity.compare`` on a finished tiny run: every form of the model on the same samples.

Tolerances: the float TFLite model must match Keras float exactly in argmax (agreement >= 0.99)
and within 1e-3 in every logit (float32 kernels differ from Keras' in summation order only:
about 1e-6 here); int8 forms must agree >= 0.9 with Keras float (about 1.0 on this run); the
fp16 file within 0.05 in logits. Counts and shares are compared exactly.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgekit.errors import DataError, EdgekitError
from edgekit import parity
from edgekit.parity import _top_classes, compare, render_compare

# The session's finished tiny run (tests/conftest.py): teacher -> student -> pruned -> QAT, targets
# mobile, rpi4 and cortex-m4; the last float stage (the reference) is the pruned one, the teacher
# and the student are rows beside it.
VARIANTS = {"keras_teacher", "keras_student", "keras_float", "keras_qat", "tflite_float", "tflite_int8:mobile",
            "tflite_fp16:mobile", "onnx:mobile", "tflite_int8:rpi4", "tflm_int8:cortex-m4"}
INT8 = ("keras_qat", "tflite_int8:mobile", "tflite_int8:rpi4", "tflm_int8:cortex-m4")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, finished_run):
    """This module's copy of the finished run (compare writes eval/compare.json into it)."""
    from conftest import copy_run

    return copy_run(finished_run, tmp_path_factory.mktemp("parity")).out


@pytest.fixture(scope="module")
def result(run_dir):
    return compare(run_dir)


def _rows(result):
    return {r["name"]: r for r in result["variants"]}


def test_every_variant_runs_on_the_same_samples(run_dir, result):
    rows = _rows(result)
    assert set(rows) == VARIANTS
    assert result["schema"] == "edgekit.compare/1"
    y = np.load(run_dir / "eval" / "eval.npz")["y"]
    assert result["samples"] == len(y) and result["errors"] == []
    assert result["reference"] == {"variant": "keras_float", "stage": "pruned",
                                   "file": "stages/pruned/model.keras", "matches_eval_ref": 1.0}
    for r in rows.values():
        assert r["error"] is None, r
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["agreement"] <= 1.0
        assert r["disagreements"] == round((1 - r["agreement"]) * len(y))
        assert 0.0 <= r["mean_abs_logit_diff"] <= r["max_abs_logit_diff"]
        assert sum(t["count"] for t in r["top_disagreement_classes"]) <= r["disagreements"]
        assert "diagnosis" not in r or r["name"] in result["below_threshold"]
    assert rows["keras_float"]["agreement"] == 1.0 and rows["keras_float"]["max_abs_logit_diff"] == 0.0
    # the run's own evaluator measured the same file on the same samples: same accuracy
    measured = json.loads((run_dir / "eval" / "cortex-m4.json").read_text())
    assert rows["tflm_int8:cortex-m4"]["accuracy"] == measured["accuracy"]


def test_float_forms_match_keras_float(result):
    rows = _rows(result)
    assert rows["tflite_float"]["agreement"] >= 0.99
    assert rows["tflite_float"]["max_abs_logit_diff"] < 1e-3
    assert rows["onnx:mobile"]["max_abs_logit_diff"] < 1e-3
    assert rows["tflite_fp16:mobile"]["max_abs_logit_diff"] < 0.05


def test_int8_forms_agree_and_carry_quantization_facts(result):
    rows = _rows(result)
    for name in INT8:
        assert rows[name]["agreement"] >= 0.9, rows[name]
    for name in INT8[1:]:
        q = rows[name]["quantization"]
        assert q["input"]["dtype"] == "int8" and q["output"]["scale"] > 0
        assert 0.0 <= q["output_saturated_share"] <= 1.0
        assert 0 <= rows[name]["agreement_with_keras_qat"] <= 1.0
    micro = rows["tflm_int8:cortex-m4"]
    assert micro["arena_bytes"] > 0
    # TFLM and LiteRT run the same int8 file: at most one output step apart
    step = micro["quantization"]["output"]["scale"]
    assert micro["litert_same_file"]["max_abs_diff"] <= step * 1.001


def test_writes_compare_json_atomically(run_dir, result):
    path = run_dir / "eval" / "compare.json"
    assert json.loads(path.read_text()) == result
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_render_is_a_table_with_every_variant(result):
    text = render_compare(result)
    assert "| variant | runtime | accuracy | vs teacher | agreement |" in text
    for name in VARIANTS:
        assert f"| {name} |" in text
    assert ("PASS" in text) == result["ok"]


@pytest.fixture
def run_copy(run_dir, tmp_path):
    """A copy of the run, so tests that rewrite eval/compare.json leave the shared one alone."""
    return shutil.copytree(run_dir, tmp_path / "run")


def test_forced_threshold_gives_a_diagnosis(run_copy):
    res = compare(run_copy, samples=40, threshold=1.01)
    assert res["samples"] == 40 and not res["ok"]
    rows = _rows(res)
    assert set(res["below_threshold"]) == set(INT8)
    for name in INT8:
        diagnosis = rows[name]["diagnosis"]
        assert diagnosis and all(set(d) == {"cause", "evidence", "try"} for d in diagnosis)
        assert any("representative" in d["cause"] for d in diagnosis)
    assert "diagnosis" not in rows["tflite_float"]
    assert "Diagnosis for tflm_int8:cortex-m4" in render_compare(res)


def test_a_tflite_micro_crash_is_an_error_row_not_a_crash(run_copy, monkeypatch):
    """A 100-byte arena makes TFLM fail (it can SIGSEGV): the child process takes it."""
    monkeypatch.setattr(parity.variants, "_arena_bytes", lambda run_dir, artifact: 100)
    res = compare(run_copy, samples=10)
    rows = _rows(res)
    assert res["errors"] == ["tflm_int8:cortex-m4"] and not res["ok"]
    assert "arena" in rows["tflm_int8:cortex-m4"]["error"]
    assert rows["tflm_int8:cortex-m4"]["agreement"] is None
    assert rows["tflite_int8:mobile"]["error"] is None
    assert "| tflm_int8:cortex-m4 | tflite_micro | error:" in render_compare(res)


def test_top_classes_counts_by_reference_class():
    ref = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 2, 1, 0, 0, 0, 2, 1])
    assert _top_classes(ref, pred) == [
        {"class": 2, "count": 3, "of": 4, "predicted_as": {"0": 2, "1": 1}},
        {"class": 0, "count": 2, "of": 3, "predicted_as": {"1": 1, "2": 1}},
        {"class": 1, "count": 1, "of": 2, "predicted_as": {"0": 1}},
    ]
    assert _top_classes(ref, ref) == []


def test_errors_name_what_is_missing(tmp_path):
    with pytest.raises(EdgekitError, match="not a folder"):
        compare(tmp_path / "nope")
    with pytest.raises(DataError, match="eval.npz|not found"):
        compare(tmp_path)


@pytest.mark.slow  # the CLI's exit codes of --compare (test_quality.py runs it in the default suite; the threshold in-process below)
def test_cli_eval_compare(run_dir):
    from click.testing import CliRunner

    from edgekit.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["eval", str(run_dir), "--compare", "--json", "--threshold", "0.5"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["schema"] == "edgekit.compare/1"
    res = runner.invoke(main, ["eval", str(run_dir), "--compare", "--threshold", "1.01"], catch_exceptions=False)
    assert res.exit_code == 1
    assert "tflm_int8:cortex-m4" in res.output


def test_reference_is_the_last_float_stage_the_run_has(tmp_path):
    """Without pruning the reference is the student (the run above has pruning): the stage
    eval.npz's ``ref`` came from, else the first of pruned > student > teacher that exists."""
    from edgekit.parity import _float_stage

    for stage in ("teacher", "student"):
        (tmp_path / "stages" / stage).mkdir(parents=True)
        (tmp_path / "stages" / stage / "model.keras").write_bytes(b"")
    assert _float_stage(tmp_path, {"stages": {}}, {}) == "student"
    assert _float_stage(tmp_path, {"stages": {}}, {"student": "failed"}) == "teacher"
    named = {"stages": {"eval-data": {"metrics": {"reference": "teacher"}}}}
    assert _float_stage(tmp_path, named, {}) == "teacher"
