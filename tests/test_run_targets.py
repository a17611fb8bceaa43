"""One target's convert/eval steps on a shared run directory, and the lock tasks wait for.

The stage functions are replaced by stand-ins that write a small file each, so these tests
check the sequencing (what runs, what is left alone, what the manifest keeps) in seconds and
without TensorFlow; the real stages run through it in tests/test_airflow_dag.py (slow).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from edgekit._io import run_lock
from edgekit.errors import EdgekitError
from edgekit.pipeline import Run
from edgekit.recipe import load_recipe

from conftest import TINY_RECIPE  # noqa: E402 - the shared tiny recipe (mobile, rpi4, cortex-m4)


@pytest.fixture
def fake_stages(monkeypatch):
    """Stand-ins for every stage function; returns the list of steps they ran, in order."""
    calls: list[str] = []

    def writer(name: str, rel: str):
        def fn(self, *args):
            calls.append(name)
            path = self.out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{name} {time.monotonic_ns()}\n")  # new bytes every time it runs
            return [path], {"result": {"name": name}} if name.startswith("eval:") else {}
        return fn

    monkeypatch.setattr(Run, "data", property(lambda self: types.SimpleNamespace(
        input_shape=(8, 8, 1), num_classes=10, reduction=None)))
    monkeypatch.setattr("edgekit.preflight.run", lambda *a, **k: None)
    monkeypatch.setattr(Run, "_train_teacher", lambda self: writer("teacher", "stages/teacher/model.keras")(self))
    monkeypatch.setattr(Run, "_train", lambda self, name, cfg, src: writer(name, f"stages/{name}/model.keras")(self))
    monkeypatch.setattr(Run, "_eval_data", lambda self, npz: writer("eval-data", "eval/eval.npz")(self))
    monkeypatch.setattr(Run, "_convert", lambda self, p, npz: writer(f"convert:{p.name}", f"targets/{p.name}/m")(self))
    monkeypatch.setattr(Run, "_evaluate", lambda self, p, npz: writer(f"eval:{p.name}", f"eval/{p.name}.json")(self))
    monkeypatch.setattr(Run, "_report", lambda self, evals: writer("report", "report.json")(self))
    return calls


@pytest.fixture
def run_dir(tmp_path, fake_stages):
    """A finished (stand-in) run of the tiny recipe; returns (recipe path, run dir)."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "run"
    Run(load_recipe(recipe), recipe, out).execute()
    fake_stages.clear()
    return recipe, out


def _stages(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["stages"]


def _run(recipe: Path, out: Path, **kw) -> Run:
    return Run(load_recipe(recipe), recipe, out, resume=True, **kw)


def test_convert_stage_converts_every_target(run_dir, fake_stages):
    # the plan interleaves convert:T and eval:T; --only convert once stopped at the first eval step
    recipe, out = run_dir
    _run(recipe, out).execute(only="convert")
    assert fake_stages == ["eval-data", "convert:mobile", "convert:rpi4", "convert:cortex-m4"]
    fake_stages.clear()
    _run(recipe, out).execute(only="eval")
    assert fake_stages == ["eval:mobile", "eval:rpi4", "eval:cortex-m4"]


def test_one_target_leaves_the_others_alone(run_dir, fake_stages):
    recipe, out = run_dir
    before = _stages(out)
    mobile_file = (out / "targets/mobile/m").read_text()
    _run(recipe, out).execute(only="convert", targets=["rpi4"])
    assert fake_stages == ["convert:rpi4"]  # the shared eval data is current: not redone
    after = _stages(out)
    assert after["convert:rpi4"]["files"] != before["convert:rpi4"]["files"]
    for name in ("teacher", "student", "pruned", "qat", "eval-data", "convert:mobile", "eval:mobile",
                 "convert:cortex-m4", "eval:cortex-m4", "report"):
        assert after[name] == before[name], name
    assert (out / "targets/mobile/m").read_text() == mobile_file
    fake_stages.clear()
    _run(recipe, out).execute(only="eval", targets=["rpi4"])
    assert fake_stages == ["eval:rpi4"]


def test_one_target_does_not_need_the_others_converted(run_dir, fake_stages):
    recipe, out = run_dir
    (out / "targets/cortex-m4/m").write_text("damaged")  # convert:cortex-m4 is no longer current
    _run(recipe, out).execute(only="eval", targets=["mobile"])
    assert fake_stages == ["eval:mobile"]
    with pytest.raises(EdgekitError, match="convert:cortex-m4"):
        _run(recipe, out).execute(only="eval")


def test_target_selection_errors(run_dir):
    recipe, out = run_dir
    with pytest.raises(EdgekitError, match=r"--target rpi5: not a target of recipe 'tiny' \(its targets: mobile, "
                                           r"rpi4, cortex-m4\)"):
        _run(recipe, out).execute(only="convert", targets=["rpi5"])
    with pytest.raises(EdgekitError, match="use it with the convert or eval stage"):
        _run(recipe, out).execute(only="qat", targets=["rpi4"])


def test_stale_run_object_keeps_the_other_tasks_entries(run_dir, fake_stages):
    # two tasks start at once; the second reads the manifest only after it got the lock
    recipe, out = run_dir
    first, second = _run(recipe, out), _run(recipe, out)
    first.execute(only="convert", targets=["mobile"])
    mobile = _stages(out)["convert:mobile"]
    second.execute(only="convert", targets=["cortex-m4"])
    after = _stages(out)
    assert after["convert:mobile"] == mobile
    assert fake_stages == ["convert:mobile", "convert:cortex-m4"]


def test_cli_target_option(run_dir, fake_stages):
    from click.testing import CliRunner

    from edgekit.cli import main

    recipe, out = run_dir
    res = CliRunner().invoke(main, ["-q", "convert", str(out), "--target", "rpi4", "--target", "mobile"])
    assert res.exit_code == 0, res.output
    assert fake_stages == ["convert:mobile", "convert:rpi4"]
    res = CliRunner().invoke(main, ["convert", str(out), "--target", "rpi5"])
    assert res.exit_code == 2
    assert ("--target rpi5: not a target of recipe 'tiny' (its targets: mobile, rpi4, cortex-m4); did you mean "
            "'rpi4'?") in res.output
    res = CliRunner().invoke(main, ["eval", str(out), "--target", "rpi4", "--compare"])
    assert res.exit_code == 2 and "--compare covers every target" in res.output


_HOLD = """
import sys, time
from edgekit._io import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_lock_waits_or_fails(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = locked = time.monotonic()
        with pytest.raises(EdgekitError, match=r"in use by another edgekit process \(waited 0.3 s\)"):
            with run_lock(tmp_path, wait_s=0.3):
                pass
        assert 0.25 <= time.monotonic() - t0 < 1.0
        with pytest.raises(EdgekitError, match="in use by another edgekit process; wait for it"):
            with run_lock(tmp_path):  # the default: fail at once
                pass
        with run_lock(tmp_path, wait_s=30):  # waits until the holder lets go (after 1.5 s)
            assert time.monotonic() - locked >= 1.2
    finally:
        holder.kill()
        holder.wait()
