"""The quality gate (recipe ``quality: {max_accuracy_drop: POINTS}``): a target that loses more of
the teacher's main metric than allowed fails like one over budget (exit 6), on the session's
finished tiny run, rerunning only its report step (no training)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.report import view


def _with_gate(run, max_drop: float):
    text = run.recipe_path.read_text().rstrip() + f"\nquality: {{max_accuracy_drop: {max_drop}}}\n"
    run.recipe_path.write_text(text)


@pytest.fixture
def gated_run(tmp_path, finished_run):
    from conftest import copy_run

    return copy_run(finished_run, tmp_path)


def _drops(report):
    teacher = next(s for s in report["stages"] if s["name"] == "teacher")
    return {t["name"]: (teacher["accuracy"] - t["accuracy"]) * 100 for t in report["targets"]}


def test_a_target_that_loses_more_than_the_gate_fails_with_exit_6(gated_run):
    drops = _drops(gated_run.report)
    worst = max(drops.values())
    limit = round(worst - 0.5, 1)  # below the int8 targets' measured loss: every target fails the gate
    _with_gate(gated_run, limit)
    res = CliRunner().invoke(main, ["run", str(gated_run.recipe_path), "--out", str(gated_run.out), "--resume"],
                             catch_exceptions=False)
    assert res.exit_code == 6, res.output
    report = json.loads((gated_run.out / "report.json").read_text())
    assert report["quality"] == {"max_accuracy_drop": limit}
    failing = [t["name"] for t in report["targets"] if drops[t["name"]] > limit + 1e-9]
    assert failing
    for t in report["targets"]:
        q = t["quality"]
        assert q["drop"] == pytest.approx(drops[t["name"]], abs=1e-3) and q["unit"] == "pt"
        assert q["ok"] is (t["name"] not in failing)
        assert any(v.startswith("quality:") for v in t["budget"]["violations"]) is (t["name"] in failing)
        assert t["budget"]["ok"] is (t["name"] not in failing) or t["budget"]["ok"] is False
        for v in t.get("variants", []):
            assert v["quality"]["metric"] == "accuracy"
    # the banner names each failing target and by how much, in both pages and on the terminal
    status, sentence = view.verdict(report)
    assert status == "fail"
    md = (gated_run.out / "report.md").read_text()
    for name in failing:
        over = drops[name] - limit
        assert f"{name} quality lost" in sentence and f"{over:.1f} pt over" in sentence
        assert f"{name}: quality: accuracy lost" in res.output
    assert sentence in md and "quality vs teacher" in md
    # --no-budget: reported, exit 0
    again = ["report", str(gated_run.out), "--recipe", str(gated_run.recipe_path)]
    res = CliRunner().invoke(main, again, catch_exceptions=False)
    assert res.exit_code == 6, res.output
    res = CliRunner().invoke(main, [*again, "--no-budget"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads((gated_run.out / "report.json").read_text())["targets"][0]["quality"]["ok"] is not None


def test_a_gate_the_targets_meet_passes(gated_run):
    drops = _drops(gated_run.report)
    _with_gate(gated_run, round(max(drops.values()) + 1.0, 1))
    res = CliRunner().invoke(main, ["report", str(gated_run.out), "--recipe", str(gated_run.recipe_path)],
                             catch_exceptions=False)
    report = json.loads((gated_run.out / "report.json").read_text())
    assert all(t["quality"]["ok"] for t in report["targets"])
    assert not any(v.startswith("quality:") for t in report["targets"] for v in t["budget"]["violations"])
    assert res.exit_code == (0 if all(t["budget"]["ok"] for t in report["targets"]) else 6), res.output


def test_quality_gate_units_per_task():
    teacher = {"accuracy": 0.96, "metrics": {"mae": 2.0, "roc_auc": 0.9}}
    target = {"accuracy": 0.90, "metrics": {"mae": 2.5, "roc_auc": 0.85}}
    c = view.quality_gate("classification", teacher, target, 1.0)
    assert c["drop"] == pytest.approx(6.0) and c["ok"] is False and c["unit"] == "pt"
    r = view.quality_gate("regression", teacher, target, 30.0)
    assert r["drop"] == pytest.approx(25.0) and r["ok"] is True and r["unit"] == "%"  # MAE 2.0 -> 2.5: 25 % worse
    a = view.quality_gate("anomaly", teacher, target, 1.0)
    assert a["drop"] == pytest.approx(5.0) and a["ok"] is False
    assert view.quality_gate("classification", teacher, {"accuracy": None}, 1.0)["ok"] is None


def test_eval_compare_shows_the_loss_of_every_stage(finished_run, tmp_path):
    """``edgekit eval RUN --compare``: the teacher and the student are rows beside the reference float
    stage (pruned), QAT and the files, each with its change against the teacher."""
    from conftest import copy_run

    run = copy_run(finished_run, tmp_path)
    res = CliRunner().invoke(main, ["eval", str(run.out), "--compare", "--json", "--threshold", "0"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    rows = [r["name"] for r in result["variants"]]
    assert rows[:4] == ["keras_teacher", "keras_student", "keras_float", "keras_qat"], rows
    by = {r["name"]: r for r in result["variants"]}
    assert by["keras_float"]["stage"] == "pruned" and by["keras_teacher"]["vs_teacher_points"] == 0.0
    teacher = by["keras_teacher"]["accuracy"]
    for r in result["variants"]:
        assert r["vs_teacher_points"] == pytest.approx((r["accuracy"] - teacher) * 100, abs=1e-3)
    stages = {s["name"]: s for s in run.report["stages"]}
    for st in ("teacher", "student"):  # the same Keras models on eval.npz's samples (all 360 here)
        assert by[f"keras_{st}"]["accuracy"] == pytest.approx(stages[st]["accuracy"], abs=1e-6)
    from edgekit.parity.render import render_compare  # what `eval --compare` prints without --json

    md = render_compare(result)
    assert "| vs teacher |" in md and "| keras_teacher |" in md


def test_a_resumed_old_run_gets_the_estimate_range_check(finished_run, tmp_path):
    """An eval result written before estimates knew their range (no ``estimate_in_range``) is checked
    when the report is rebuilt: the tiny model lies outside cortex-m4's set, so no latency verdict."""
    from conftest import copy_run
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    run = copy_run(finished_run, tmp_path)
    m4 = next(t for t in run.report["targets"] if t["name"] == "cortex-m4")
    old = {k: v for k, v in m4.items() if k not in ("estimate_in_range", "estimate_range_reason", "budget")}
    old["budget"] = {**m4["budget"], "latency_basis": "estimate",
                     "unchecked": [u for u in m4["budget"]["unchecked"] if not u.startswith("latency_ms")]}
    r = Run(load_recipe(run.recipe_path), run.recipe_path, run.out, resume=True)
    new = r._with_estimate_range(old)
    assert new["estimate_in_range"] is False and new["budget"]["latency_basis"] is None
    assert any(u.startswith("latency_ms") for u in new["budget"]["unchecked"])
    assert r._with_estimate_range(m4) is m4  # a current result is left as it is
