"""A tiny recipe through the whole pipeline, then --resume behaviour."""

from __future__ import annotations

import json

import pytest

from edgekit.errors import EdgekitError
from edgekit.pipeline import Run
from edgekit.recipe import load_recipe

from conftest import TINY_RECIPE as TINY, copy_run  # noqa: E402 - the shared tiny recipe


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, finished_run):
    """This module's own copy of the session's finished tiny run (the tests below change it)."""
    run = copy_run(finished_run, tmp_path_factory.mktemp("tiny"))
    return run.recipe_path, run.out, run.report


def test_report_shape(tiny_run):
    _, out, report = tiny_run
    assert report["schema"] == "edgekit.report/1"
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "pruned", "qat"]
    kinds = {t["kind"]: t for t in report["targets"]}
    assert set(kinds) == {"mobile", "rpi", "mcu"}
    qat = next(s for s in report["stages"] if s["name"] == "qat")
    for t in report["targets"]:
        assert t["accuracy"] >= qat["accuracy"] - 0.05, t["name"]  # int8 of the QAT model: about its accuracy
        assert t["size_bytes"] == (out / "targets" / t["name"] / t["file"]).stat().st_size
        assert t["latency_ms"]["p50"] > 0
        assert t["budget"]["ok"] is (not t["budget"]["violations"])
        assert t["budget"]["ok"], t["budget"]["violations"]  # a tiny digits CNN fits every built-in board
    assert kinds["mcu"]["arena_bytes"] > 0
    assert kinds["mcu"]["input"]["dtype"] == "int8"
    assert {v["format"] for v in kinds["mobile"]["variants"]} == {"tflite-fp16", "onnx"}
    assert json.loads((out / "report.json").read_text()) == report
    assert "| cortex-m4 |" in (out / "report.md").read_text()


def test_artifact_layout(tiny_run):
    _, out, _ = tiny_run
    for rel in ["recipe.resolved.yaml", "manifest.json", "stages/teacher/model.keras", "stages/qat/metrics.json",
                "targets/mobile/model_int8.tflite", "targets/mobile/model_fp16.tflite", "targets/mobile/model.onnx",
                "targets/rpi4/bundle/run.sh", "targets/rpi4/bundle/evaluate.py", "targets/rpi4/bundle/eval.npz",
                "targets/cortex-m4/model_data.cc", "targets/cortex-m4/op_resolver.h", "eval/cortex-m4.json"]:
        assert (out / rel).is_file(), rel
    leftovers = [p for p in out.rglob(".*") if p.is_file() and p.name != ".edgekit.lock"]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(e["status"] == "done" for e in manifest["stages"].values())
    assert manifest["versions"]["tensorflow"] == "2.21.0"


def test_existing_run_needs_resume_or_force(tiny_run):
    recipe_path, out, _ = tiny_run
    with pytest.raises(EdgekitError, match="already holds a run"):
        Run(load_recipe(recipe_path), recipe_path, out)


def test_resume_after_an_interrupt_reruns_only_what_changed(finished_run, tmp_path, monkeypatch):
    """On a private copy of the finished run: an unchanged --resume redoes nothing; with a longer
    QAT, Ctrl-C inside QAT's fit (the KeyboardInterrupt Ctrl-C raises) exits 130 and marks QAT
    failed; the manifest is then left as a killed process leaves it (QAT still "running"), and
    --resume retrains QAT only, leaving every later step out of date for the next run. The same
    with real signals to a real process: tests/test_interrupt.py (slow)."""
    from click.testing import CliRunner

    from edgekit import quantize
    from edgekit.cli import main

    run = copy_run(finished_run, tmp_path)
    recipe_path, out = run.recipe_path, run.out
    before = json.loads((out / "manifest.json").read_text())["stages"]
    seen = []
    Run(load_recipe(recipe_path), recipe_path, out, resume=True,
        on_stage=lambda s, status: seen.append((s, status))).execute()
    assert seen and all(status == "cached" for _, status in seen), seen
    assert json.loads((out / "manifest.json").read_text())["stages"] == before

    changed = recipe_path.parent / "tiny2.yaml"
    changed.write_text(TINY.replace("qat: {epochs: 1", "qat: {epochs: 3"))
    finished = {s: before[s] for s in ("teacher", "student", "pruned")}
    files = {rel: (out / rel).read_bytes() for e in finished.values() for rel in e["files"]}
    real, epochs_seen = quantize.run, []

    def interrupted(*args, **kwargs):
        def ctrl_c(stage, epoch, epochs, logs):
            epochs_seen.append(epoch)
            raise KeyboardInterrupt  # as Ctrl-C raises it in the main thread, here after epoch 1 of 3
        return real(*args, **{**kwargs, "progress": ctrl_c})

    monkeypatch.setattr(quantize, "run", interrupted)
    res = CliRunner().invoke(main, ["run", str(changed), "--out", str(out), "--resume", "--until", "qat"])
    assert res.exit_code == 130, res.output
    assert "interrupted; finished stages are kept, continue with --resume" in res.output
    assert epochs_seen == [1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["qat"]["status"] == "failed"
    manifest["stages"]["qat"]["status"] = "running"   # a killed process cannot say it failed
    (out / "manifest.json").write_text(json.dumps(manifest))

    monkeypatch.setattr(quantize, "run", real)
    res = CliRunner().invoke(main, ["run", str(changed), "--out", str(out), "--resume", "--until", "qat"])
    assert res.exit_code == 0, res.output
    assert "3 stages up to date, reused (teacher, student, pruned)" in res.output
    assert "qat                interrupted in an earlier run (killed or crashed): not finished" in res.output
    after = json.loads((out / "manifest.json").read_text())["stages"]
    for stage, entry in finished.items():
        assert after[stage] == entry, f"{stage} was redone"
    assert all((out / rel).read_bytes() == blob for rel, blob in files.items())
    assert after["qat"]["status"] == "done" and after["qat"]["fingerprint"] != before["qat"]["fingerprint"]
    assert json.loads((out / "stages" / "qat" / "metrics.json").read_text())["config"]["epochs"] == 3
    # everything after QAT is now out of date: the next --resume reruns it
    with pytest.raises(EdgekitError, match="earlier step 'eval-data' is not finished or out of date"):
        Run(load_recipe(changed), changed, out, resume=True).execute(only="report")


def test_stage_commands_rerun_one_stage(tiny_run):
    """`edgekit report RUN_DIR --json` prints the report; `edgekit prune RUN_DIR` reruns pruning
    only, after which later stages are out of date and `report` says so."""
    from click.testing import CliRunner

    from edgekit.cli import main

    _, out, _ = tiny_run
    runner = CliRunner()
    res = runner.invoke(main, ["--quiet", "report", str(out), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["schema"] == "edgekit.report/1"
    before = json.loads((out / "manifest.json").read_text())["stages"]
    res = runner.invoke(main, ["prune", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    after = json.loads((out / "manifest.json").read_text())["stages"]
    assert after["teacher"] == before["teacher"] and after["student"] == before["student"]
    assert after["pruned"]["status"] == "done" and after["pruned"]["seconds"] != before["pruned"]["seconds"]
    assert after["qat"] == before["qat"], "later stages are left for --resume"
    res = runner.invoke(main, ["report", str(out)])
    assert res.exit_code == 1 and "earlier step 'qat' is not finished or out of date" in res.output


def test_only_refuses_when_earlier_stage_is_missing(tmp_path):
    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(TINY)
    with pytest.raises(EdgekitError, match="earlier step 'teacher' is not finished"):
        Run(load_recipe(recipe_path), recipe_path, tmp_path / "run").execute(only="pruned")


def test_stage_command_on_a_folder_that_is_no_run(tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import main

    res = CliRunner().invoke(main, ["prune", str(tmp_path)])
    assert res.exit_code == 1 and "not a run directory" in res.output


def test_out_is_a_file(tmp_path):
    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(TINY)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgekitError, match="exists and is not a directory"):
        Run(load_recipe(recipe_path), recipe_path, tmp_path / "file")


def test_out_holding_another_recipes_run_is_refused(tiny_run, tmp_path):
    _, out, _ = tiny_run
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("name: tiny", "name: other"))
    with pytest.raises(EdgekitError, match="holds a run of recipe 'tiny', not 'other'"):
        Run(load_recipe(other), other, out, resume=True)


def test_two_runs_in_one_directory_at_once_are_refused(tiny_run):
    import fcntl

    recipe_path, out, _ = tiny_run
    with open(out / ".edgekit.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's run, as far as flock is concerned
        with pytest.raises(EdgekitError, match="is in use by another edgekit process"):
            Run(load_recipe(recipe_path), recipe_path, out, resume=True).execute(only="report")


def test_latency_estimates_beside_measurements(finished_run):
    """MCU and Pi targets carry a calibrated estimate, labelled as such; the tiny run's models lie far
    below what the rpi4 and cortex-m4 sets were fitted on, so the estimate is flagged and the
    latency budget stays unchecked (host timings are not device timings); a board without
    calibration data gets null with the reason."""
    targets = {t["name"]: t for t in finished_run.report["targets"]}
    m4 = targets["cortex-m4"]
    assert m4["latency_estimate_ms"] > 0 and "Nucleo-L4R5ZI" in m4["estimate_basis"]["board"]
    for t in (m4, targets["rpi4"]):
        assert t["estimate_in_range"] is False and "of the smallest calibration model's" in t["estimate_range_reason"]
        assert t["budget"]["latency_basis"] is None
        assert any("the estimate lies outside the range of" in u for u in t["budget"]["unchecked"]), t["budget"]
        check = next(c for c in t["budget"]["checks"] if c["budget"] == "latency")
        assert check["status"] == "unchecked" and check["measured"] == t["latency_estimate_ms"]
        assert check["source"] == "estimated outside its calibration range, no verdict"
    assert m4["measured_on"].startswith("host-")  # the measurement stays what it is
    mobile = targets["mobile"]
    assert mobile["latency_estimate_ms"] is None and "no published latency measurement" in mobile["estimate_basis"]["reason"]
    assert mobile["budget"]["latency_basis"] is None
    assert any(u.startswith("latency_ms") for u in mobile["budget"]["unchecked"])
