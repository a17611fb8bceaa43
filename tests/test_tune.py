"""edgekit tune: search space, early pruning bounds, best trial, report, CLI errors, the resume
logic in process, and (slow) a real tiny study that is killed and resumed without rerunning its
finished trials."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.errors import RecipeError
from edgekit.recipe import REPO_ROOT, Budget, load_recipe
from edgekit.tune import (base_params, pareto_numbers, pick_best, space_for, trial_recipe, tuned_base)

QUICKSTART = REPO_ROOT / "recipes" / "quickstart.yaml"

# A tight microcontroller: the budgets of the issue (24 KiB flash, 12 KiB arena).
TIGHT_BOARD = """
name: tight-m4
kind: mcu
board: "a Cortex-M4 with 24 KiB of flash and 12 KiB of RAM left for the model"
runtime: tflite_micro
formats: [tflite-full-int8]
budget: {flash_bytes: 24576, ram_bytes: 12288, latency_ms: 100}
core: cortex-m4
clock_mhz: 120
kernels: cmsis-nn
calibration: nucleo-l4r5zi-tflm-2.3.1
"""


# ----------------------------------------------------------------------------- search space


def test_space_and_trial_recipes():
    base = tuned_base(load_recipe(QUICKSTART), QUICKSTART.parent, "cortex-m4")
    assert base.targets == ["cortex-m4"] and base.student.baseline is False
    assert base_params(base) == {"width": 1.0, "prune": "0.6", "scheme": "qat-int8"}
    mcu, phone = space_for(base, "mcu"), space_for(base, "mobile")
    assert "ptq-int16x8" in mcu.schemes and "ptq-int16x8" not in phone.schemes   # the primary artifact is int8
    assert "0.6" in mcu.prunings and "2:4" in mcu.prunings and 1.0 in mcu.widths  # the recipe's own choices

    r = trial_recipe(base, {"width": 2.5, "prune": "none", "scheme": "ptq-int8"})
    assert (r.student.width, r.prune, r.qat, r.convert.mcu_scheme) == (2.5, None, None, "int8")
    r = trial_recipe(base, {"width": 1.0, "prune": "2:4", "scheme": "ptq-int16x8"})
    assert (r.prune.structure, r.prune.target_sparsity, r.qat, r.convert.mcu_scheme) == ("2:4", 0.5, None, "int16x8")
    assert r.prune.epochs == base.prune.epochs                                   # other settings kept
    r = trial_recipe(base, {"width": 0.5, "prune": "0.3", "scheme": "qat-int8"})
    assert (r.prune.structure, r.prune.target_sparsity, r.qat) == (None, 0.3, base.qat)
    assert r.teacher == base.teacher and r.data == base.data and r.seed == base.seed  # the teacher is shared
    assert "channels-0.5" in mcu.prunings                                         # structured pruning
    r = trial_recipe(base, {"width": 1.0, "prune": "channels-0.5", "scheme": "qat-int8"})
    assert (r.prune.structure, r.prune.target_sparsity, r.qat) == ("channels", 0.5, base.qat)
    assert base_params(trial_recipe(base, {"width": 1.0, "prune": "channels-0.3", "scheme": "ptq-int8"}))["prune"] \
        == "channels-0.3"
    r = trial_recipe(r, {"width": 1.0, "prune": "2:4", "scheme": "qat-int8"})     # and back to m:n
    assert (r.prune.structure, r.prune.target_sparsity) == ("2:4", 0.5)


def test_tuned_base_makes_paths_absolute(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "board.yaml").write_text(TIGHT_BOARD)
    (tmp_path / "sub" / "d.npz").write_bytes(b"")
    (tmp_path / "sub" / "r.yaml").write_text("name: r\ndata: {source: 'npz:d.npz'}\ntargets: [board.yaml]\n")
    base = tuned_base(load_recipe(tmp_path / "sub" / "r.yaml"), tmp_path / "sub", "board.yaml")
    assert base.data.source == f"npz:{(tmp_path / 'sub' / 'd.npz').resolve()}"
    assert base.targets == [str((tmp_path / "sub" / "board.yaml").resolve())]


def test_int16x8_needs_post_training(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: r\nconvert: {mcu_scheme: int16x8}\n")  # qat defaults to on
    with pytest.raises(RecipeError, match=r"convert.mcu_scheme: int16x8 is post-training"):
        load_recipe(p)
    p.write_text("name: r\nqat: null\nconvert: {mcu_scheme: int16x8}\n")
    assert load_recipe(p).convert.mcu_scheme == "int16x8"


# ----------------------------------------------------------------------------- early pruning


# Lower bounds against real conversions of cnn_tiny on 8x8 digits (untrained weights; the file
# size and the arena depend on the shapes, not the values): the bound never exceeds the measured
# number (so early pruning never drops a model that would fit), and the rest - flatbuffer,
# quantization parameters, interpreter structures - stays within OVERHEAD bytes (measured here:
# flash about 4-5 KiB, arena about 2.3-3 KiB on this 64-bit host).
OVERHEAD_FLASH_BYTES = 8 * 1024
OVERHEAD_ARENA_BYTES = 4 * 1024


@pytest.mark.parametrize("width,scheme", [(0.5, "ptq-int8"), (2.0, "ptq-int8"), (2.0, "ptq-int16x8")])
def test_footprint_bounds_hold_on_real_conversions(tmp_path, digits_small, width, scheme):
    import numpy as np

    from edgekit import mcu
    from edgekit.convert import to_tflite
    from edgekit.models import create_model
    from edgekit.tune import footprint_bounds

    x = digits_small[0]
    model = create_model("cnn_tiny", input_shape=(8, 8, 1), num_classes=10, width=width, seed=0)
    bounds = footprint_bounds(model, scheme=scheme)
    mode = "full-int16x8" if scheme == "ptq-int16x8" else "full-int8"

    def rep():
        for i in range(32):
            yield [x[i: i + 1]]

    blob = to_tflite(model, mode=mode, rep=rep, signature=False, batch=1)  # as the mcu target makes it
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    arena = mcu.measure_arena(path).min_bytes
    print(f"width {width} {scheme}: flash {len(blob)} B (bound {bounds['flash_lower_bytes']}), "
          f"arena {arena} B (bound {bounds['arena_lower_bytes']})")
    assert bounds["flash_lower_bytes"] <= len(blob) <= bounds["flash_lower_bytes"] + OVERHEAD_FLASH_BYTES
    assert bounds["arena_lower_bytes"] <= arena <= bounds["arena_lower_bytes"] + OVERHEAD_ARENA_BYTES
    if scheme == "ptq-int8":  # pruning does not shrink the file: TFLite stores the zeros
        from edgekit.fitting import weighted_layers

        for layer in weighted_layers(model):
            layer.kernel.assign(np.where(np.abs(layer.kernel.numpy()) < 0.05, 0.0, layer.kernel.numpy()))
        assert len(to_tflite(model, mode=mode, rep=rep, signature=False, batch=1)) == len(blob)


def test_early_verdict_prunes_what_cannot_fit():
    from edgekit.models import create_model
    from edgekit.tune import early_verdict

    base = tuned_base(load_recipe(QUICKSTART), QUICKSTART.parent, "cortex-m4")
    wide = create_model("cnn_tiny", input_shape=(8, 8, 1), num_classes=10, width=3.0, seed=0)
    params = {"width": 3.0, "prune": "0.5", "scheme": "qat-int8"}
    bounds, reason = early_verdict(wide, params, trial_recipe(base, params), Budget(flash_bytes=24576, ram_bytes=12288))
    assert bounds["flash_lower_bytes"] > 24576 and reason.startswith("flash: the weights alone take")
    bounds, reason = early_verdict(wide, params, trial_recipe(base, params), Budget(flash_bytes=10 ** 6))
    assert reason is None
    narrow = create_model("cnn_tiny", input_shape=(8, 8, 1), num_classes=10, width=0.75, seed=0)  # 9 channels
    params = {"width": 0.75, "prune": "2:4", "scheme": "qat-int8"}
    _, reason = early_verdict(narrow, params, trial_recipe(base, params), Budget())
    assert "2:4 sparsity needs a multiple of 4 input channels" in reason


# ----------------------------------------------------------------------------- choosing and reporting


def _row(number, width, flash, acc, *, fits=True, floor=True, latency=1.0, state="COMPLETE", **kw):
    return {"number": number, "state": state, "params": {"width": width, "prune": "none", "scheme": "ptq-int8"},
            "flash_bytes": flash, "arena_bytes": 3000, "latency_ms": latency, "latency_basis": "estimate",
            "accuracy": acc, "fits": fits, "meets_floor": floor, "feasible": fits and floor, "duplicate_of": None,
            "violations": [] if fits else ["flash: model 30000 bytes > budget 24576 bytes"], "seconds": 10.0, **kw}


def _result(rows):
    return {"schema": "edgekit.tune/1", "recipe": "r", "target": "tight-m4", "board": "b", "kind": "mcu",
            "budget": {"flash_bytes": 24576, "ram_bytes": 12288, "latency_ms": 100}, "teacher_accuracy": 0.98,
            "max_accuracy_drop_points": 2.0, "accuracy_floor": 0.96,
            "study": {"name": "r@tight-m4", "sampler": "TPESampler", "seed": 0},
            "space": {"width": [1.0], "prune": ["none"], "scheme": ["qat-int8", "ptq-int8", "ptq-int16x8"]},
            "selection": "smallest", "counts": {"COMPLETE": 4, "PRUNED": 1, "FAIL": 0, "RUNNING": 0},
            "pareto": {"flash": pareto_numbers(rows, "flash_bytes"), "latency": pareto_numbers(rows, "latency_ms")},
            "best": pick_best(rows), "trials": rows}


def test_best_is_the_smallest_feasible_and_fronts_come_from_trials_that_fit():
    rows = [_row(0, 1.0, 9000, 0.975), _row(1, 0.5, 5000, 0.94, floor=False), _row(2, 0.75, 7000, 0.97),
            _row(3, 3.0, 30000, 0.99, fits=False), _row(4, 0.75, 7000, 0.97, duplicate_of=2),
            _row(5, 4.0, None, None, state="PRUNED", fits=False, floor=False, latency=None,
                 pruned_reason="flash: the weights alone take 45000 bytes > budget 24576 bytes")]
    assert pick_best(rows)["number"] == 2
    assert pareto_numbers(rows, "flash_bytes") == [0, 1, 2]   # 3 is over budget, 4 repeats 2, 5 never ran
    assert pick_best([r for r in rows if r["number"] in (1, 3)]) is None


def test_report_lists_every_trial_and_draws_both_fronts():
    from edgekit.report.tune import render_tune_html, render_tune_markdown

    rows = [_row(0, 1.0, 9000, 0.975), _row(1, 0.5, 5000, 0.94, floor=False),
            _row(2, 4.0, None, None, state="PRUNED", fits=False, floor=False, latency=None,
                 pruned_reason="flash: the weights alone take 45000 bytes > budget 24576 bytes")]
    result = _result(rows)
    md = render_tune_markdown(result)
    assert "**FOUND** — trial #0" in md and md.count("\n| #") == 3
    assert "pruned before training: flash: the weights alone take 45000 bytes" in md
    assert "accuracy below the floor 96.0 %" in md
    html = render_tune_html(result)
    assert html.count("<svg") == 2 and 'id="trials"' in html and "Accuracy against latency" in html


# ----------------------------------------------------------------------------- CLI errors (no TensorFlow)


def test_cli_refuses_bad_input(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["tune", str(QUICKSTART), "--target", "cortex-m9", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown target 'cortex-m9'; did you mean" in r.output
    no_student = tmp_path / "r.yaml"
    no_student.write_text("name: r\nstudent: null\n")
    r = runner.invoke(main, ["tune", str(no_student), "--target", "cortex-m4", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "student: null; tune searches the student's width" in r.output
    r = runner.invoke(main, ["tune", str(QUICKSTART), "--target", "cortex-m4", "--trials", "0"])
    assert r.exit_code == 2 and "--trials" in r.output
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "study.db").write_bytes(b"")
    r = runner.invoke(main, ["tune", str(QUICKSTART), "--target", "cortex-m4", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "already holds a study (study.db); pass --resume" in r.output


def test_tune_help_imports_neither_tensorflow_nor_optuna():
    code = ("import sys\nfrom edgekit.cli import main\ntry:\n    main(['tune', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('tensorflow', 'optuna', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "[]"


# ----------------------------------------------------------------------------- a real tiny study, killed and resumed


TINY = """
name: tiny-tune
seed: 1
data: {source: digits}
teacher: {model: cnn_tiny, epochs: 2, batch_size: 32, learning_rate: 0.01}
student: {model: cnn_tiny, epochs: 1, batch_size: 32, learning_rate: 0.01}
prune: {target_sparsity: 0.5, epochs: 1, batch_size: 32}
qat: {epochs: 1, batch_size: 32}
targets: [cortex-m4]
evaluate: {warmup: 1, runs: 5}
"""


def _tune(folder: Path, out: Path, *extra: str, quiet: bool = True) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgekit.cli", *(["-q"] if quiet else []), "tune",
                             str(folder / "tiny.yaml"),
                             "--target", str(folder / "board.yaml"), "--trials", "3", "--jobs", "2",
                             "--max-accuracy-drop", "30", "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _study_ready(out: Path) -> bool:
    """study.db holds the study, schema and version stamp included (read-only sqlite: opening an
    optuna storage before that would create or stamp the schema, racing the tune process)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)) as db:
            stamped = db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
            return stamped and db.execute("SELECT count(*) FROM studies").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def _trials(out: Path) -> list[dict]:
    """The trials stored in study.db, read with optuna as any user would (once it is ready)."""
    import optuna

    if not _study_ready(out):
        return []
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}", skip_table_creation=True)
    study = optuna.load_study(study_name="tiny-tune@board", storage=storage)
    return [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
             "attrs": t.user_attrs} for t in study.get_trials()]


def _workers_of(out: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"edgekit.tune" in cmd and any(str(out).encode() in c for c in cmd):
                pids.append(int(proc.name))
    return pids


def test_nothing_fits_exits_6_after_pruning_every_trial_before_training(tmp_path):
    """Through the CLI in process (no trial starts a worker: each is pruned before training)."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "board.yaml").write_text(TIGHT_BOARD.replace("name: tight-m4", "name: board")
                                         .replace("flash_bytes: 24576", "flash_bytes: 1000"))
    res = CliRunner().invoke(main, ["-q", "tune", str(tmp_path / "tiny.yaml"), "--target", str(tmp_path / "board.yaml"),
                                    "--trials", "3", "--jobs", "2", "--max-accuracy-drop", "30",
                                    "--out", str(tmp_path / "study"), "--json"])
    assert res.exit_code == 6, res.output[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith("error: no trial fits board's budgets within 30 points")
    result = json.loads(res.stdout)
    assert result["best"] is None and result["counts"]["PRUNED"] == 3 and result["counts"]["COMPLETE"] == 0
    assert all(r["pruned_reason"].startswith("flash: the weights alone take") for r in result["trials"])
    assert not (tmp_path / "study" / "best.yaml").exists() and not (tmp_path / "study" / "trials").exists()
    assert "**NOT FOUND**" in (tmp_path / "study" / "tune.md").read_text()


def test_stale_trials_of_a_killed_study_are_failed_and_queued_again():
    """What a resume does first, in process: trials a killed study left RUNNING become FAIL
    (``interrupted``); those that had parameters are queued again (``retry_of``), those killed
    while the sampler chose are not; finished trials are untouched and none of the interrupted
    ones counts toward --trials. The process-level kill is the slow test below."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from edgekit.tune.study import _counted, _retry_stale

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"width": CategoricalDistribution([0.5, 1.0]), "prune": CategoricalDistribution(["none", "0.5"])}
    done = study.ask(dist)
    study.tell(done, [0.97, 9000.0])
    training = study.ask(dist)          # killed while its worker trained
    choosing = study.ask()              # killed while the sampler was choosing: no parameters yet
    stale = _retry_stale(study)
    assert stale == [training.number, choosing.number]
    trials = study.get_trials()
    assert trials[done.number].state == TrialState.COMPLETE and trials[done.number].values == [0.97, 9000.0]
    for n in stale:
        assert trials[n].state == TrialState.FAIL and trials[n].user_attrs["interrupted"] is True
        assert not _counted(trials[n])
    assert _counted(trials[done.number])
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.user_attrs["retry_of"], t.system_attrs["fixed_params"]) for t in waiting] == \
        [(training.number, training.params)]
    retry = study.ask(dist)             # the next trial asked for is the queued retry, same point
    assert retry.params == training.params and retry.user_attrs["retry_of"] == training.number
    assert _retry_stale(study) == [retry.number]  # asked but never told: stale again if killed now


@pytest.mark.slow
def test_tiny_study_killed_and_resumed_runs_no_finished_trial_again(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "board.yaml").write_text(TIGHT_BOARD.replace("name: tight-m4", "name: board"))
    out = tmp_path / "study"
    proc = _tune(tmp_path, out)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill the study once a trial finished and another is running
        if proc.poll() is not None:
            pytest.fail(f"tune ended before it could be killed: {proc.stderr.read()[-2000:]}")
        try:
            trials = _trials(out)
        except Exception:  # noqa: BLE001 - the database may not exist yet
            trials = []
        if any(t["state"] == "COMPLETE" for t in trials) and \
                any(t["state"] == "RUNNING" and "run_dir" in t["attrs"] for t in trials):  # a worker is training
            time.sleep(2.0)
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("no trial finished in time")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t["number"]: t for t in _trials(out) if t["state"] == "COMPLETE"}
    stale = [t["number"] for t in _trials(out) if t["state"] == "RUNNING"]
    mtimes = {n: (out / "trials" / str(n) / "report.json").stat().st_mtime_ns for n in before}
    gone = time.monotonic() + 15
    while _workers_of(out) and time.monotonic() < gone:  # the workers notice their study is gone
        time.sleep(0.5)
    assert not _workers_of(out), "trial workers outlived the killed study"

    proc = _tune(tmp_path, out, "--resume", quiet=False)  # warnings logged: the interrupted trials are named
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    after = _trials(out)
    by_number = {t["number"]: t for t in after}
    for n, t in before.items():  # finished trials: untouched, and run exactly once
        assert by_number[n]["state"] == "COMPLETE" and by_number[n]["params"] == t["params"]
        assert by_number[n]["values"] == t["values"]
        assert (out / "trials" / str(n) / "report.json").stat().st_mtime_ns == mtimes[n]
        assert (out / "trials" / str(n) / "worker.log").read_text().count("--- worker started") == 1
    assert stale
    for n in stale:  # the interrupted trials: FAIL, and (if they had parameters) queued again under a new number
        assert by_number[n]["state"] == "FAIL" and by_number[n]["attrs"]["interrupted"] is True
        retry = [t for t in after if t["attrs"].get("retry_of") == n]
        if not by_number[n]["params"]:  # killed while the sampler was choosing: nothing to retry
            assert not retry
            continue
        assert len(retry) == 1 and retry[0]["params"] == by_number[n]["params"]
        assert retry[0]["state"] in ("COMPLETE", "PRUNED", "FAIL")
        if "run_dir" in by_number[n]["attrs"] and retry[0]["state"] == "COMPLETE":  # continued in its run directory
            assert retry[0]["attrs"]["run_dir"] == f"trials/{retry[0]['number']}"
            assert not (out / "trials" / str(n)).exists()
            log = (out / retry[0]["attrs"]["run_dir"] / "worker.log").read_text()
            assert log.count("--- worker started") == 2
    counted = [t for t in after if t["state"] in ("COMPLETE", "PRUNED", "FAIL") and not t["attrs"].get("interrupted")
               and t["attrs"].get("duplicate_of") is None]
    assert len(counted) == 3
    assert "was interrupted" in stderr

    result = json.loads((out / "tune.json").read_text())
    assert [r["number"] for r in result["trials"]] == sorted(by_number)
    best = result["best"]
    assert best is not None and best["fits"] and best["flash_bytes"] <= 24576 and best["arena_bytes"] <= 12288
    # the tiny models lie outside the Cortex-M4 calibration set (far fewer MACs, MAX_POOL_2D): no latency verdict
    assert best["latency_basis"] is None and best["latency_ms"] is None
    tuned = load_recipe(out / "best.yaml")
    assert tuned.targets == [str((tmp_path / "board.yaml").resolve())]
    assert tuned.student.width == best["params"]["width"]
    assert yaml.safe_load((out / "best.yaml").read_text())["name"] == "tiny-tune-tuned"
    assert "<svg" in (out / "tune.html").read_text() and "## Trials" in (out / "tune.md").read_text()
    # the teacher was trained once, in teacher/, and every trial reused it
    for n in before:
        manifest = json.loads((out / "trials" / str(n) / "manifest.json").read_text())
        teacher = json.loads((out / "teacher" / "manifest.json").read_text())["stages"]["teacher"]
        assert manifest["stages"]["teacher"]["fingerprint"] == teacher["fingerprint"]
        assert os.path.samefile(out / "trials" / str(n) / "stages" / "teacher" / "model.keras",
                                out / "teacher" / "stages" / "teacher" / "model.keras")


# ----------------------------------------------------------------------------- acceptance (slow)


# Digits, a quickstart-sized recipe, a Cortex-M4 with 24 KiB flash and 12 KiB arena for the model.
DIGITS = """
name: digits-m4-tune
seed: 0
data: {source: digits, test_split: 0.2, val_split: 0.1}
teacher: {model: cnn_small, epochs: 15, batch_size: 32, learning_rate: 0.002}
student: {model: cnn_tiny, epochs: 25, batch_size: 32, learning_rate: 0.005, temperature: 4.0, alpha: 0.7}
prune: {target_sparsity: 0.6, epochs: 4}
qat: {epochs: 2}
targets: [cortex-m4]
evaluate: {warmup: 2, runs: 20}
"""

# best.yaml rerun from scratch (teacher included, in a new process): the model file and arena
# depend on the architecture and scheme only and must be equal; accuracy may move by a few of
# the 360 test samples when TensorFlow's CPU kernels sum in another order.
REPRODUCE_ACCURACY_TOLERANCE = 0.015


@pytest.mark.slow
def test_digits_tight_mcu_budget_found_within_two_points_and_best_yaml_reproduces(tmp_path):
    (tmp_path / "digits.yaml").write_text(DIGITS)
    (tmp_path / "tight-m4.yaml").write_text(TIGHT_BOARD)
    out = tmp_path / "tune"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli", "tune", str(tmp_path / "digits.yaml"), "--target",
                           str(tmp_path / "tight-m4.yaml"), "--max-accuracy-drop", "2", "--trials", "6", "--jobs", "2",
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=1200)
    tune_seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    best, teacher = result["best"], result["teacher_accuracy"]
    assert best["flash_bytes"] <= 24576 and best["arena_bytes"] <= 12288 and best["fits"]
    assert best["accuracy"] >= teacher - 0.02
    start = time.perf_counter()
    rerun = subprocess.run([sys.executable, "-m", "edgekit.cli", "-q", "run", str(out / "best.yaml"), "--out",
                            str(tmp_path / "best"), "--json"], capture_output=True, text=True, timeout=900)
    rerun_seconds = time.perf_counter() - start
    assert rerun.returncode == 0, rerun.stderr[-3000:]  # within the budget again (else exit 6)
    target = json.loads(rerun.stdout)["targets"][0]
    print(f"\nteacher {teacher:.4f}; best trial {best['number']} {best['params']}: flash {best['flash_bytes']} B, "
          f"arena {best['arena_bytes']} B, latency {best['latency_ms']} ms ({best['latency_basis']}), accuracy "
          f"{best['accuracy']:.4f}; {result['counts']} in {tune_seconds:.0f} s; best.yaml rerun: flash "
          f"{target['size_bytes']} B, arena {target['arena_bytes']} B, accuracy {target['accuracy']:.4f} "
          f"in {rerun_seconds:.0f} s")
    for r in result["trials"]:
        print(f"  #{r['number']} {r['state']} {r['params']} flash {r['flash_bytes']} arena {r['arena_bytes']} "
              f"acc {r['accuracy']} {r['pruned_reason'] or ''}")
    assert target["size_bytes"] == best["flash_bytes"] and target["arena_bytes"] == best["arena_bytes"]
    assert abs(target["accuracy"] - best["accuracy"]) <= REPRODUCE_ACCURACY_TOLERANCE


def test_early_verdict_bounds_a_channel_pruning_by_the_smaller_model():
    """channels-0.5 builds a smaller model: its bounds, not the unpruned student's, decide."""
    from edgekit.models import create_model
    from edgekit.tune import early_verdict, footprint_bounds

    base = tuned_base(load_recipe(QUICKSTART), QUICKSTART.parent, "cortex-m4")
    wide = create_model("cnn_tiny", input_shape=(8, 8, 1), num_classes=10, width=3.0, seed=0)
    full = footprint_bounds(wide)["flash_lower_bytes"]
    params = {"width": 3.0, "prune": "channels-0.5", "scheme": "qat-int8"}
    bounds, reason = early_verdict(wide, params, trial_recipe(base, params), Budget(flash_bytes=full - 1))
    assert bounds["flash_lower_bytes"] < full - 1 and reason is None   # fits once half the channels are gone
    params = {"width": 3.0, "prune": "0.5", "scheme": "qat-int8"}      # magnitude: the file stays as large
    _, reason = early_verdict(wide, params, trial_recipe(base, params), Budget(flash_bytes=full - 1))
    assert reason.startswith("flash: the weights alone take")
