"""The exported DAG under a real Apache Airflow (slow: installs Airflow once, then ~3-5 min).

Airflow lives in its own virtualenv, .venv-airflow (tools/airflow_env.sh, pinned by
tools/constraints-airflow.txt; its pins clash with TensorFlow's), with a SQLite metadata
database in a temporary AIRFLOW_HOME. The DAG's tasks call the `edgekit` of the environment
running these tests (PATH starts with its bin folder), as a deployment's workers would call
the one EDGEKIT_BIN names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# what DESIGN.md's report.json schema promises for every stage and target entry
STAGE_FIELDS = {"name", "params", "nonzero_params", "sparsity", "size_bytes", "gzip_bytes", "accuracy", "seconds"}
TARGET_FIELDS = {"name", "kind", "format", "runtime", "size_bytes", "gzip_bytes", "accuracy", "agreement_with_float",
                 "latency_ms", "init_ms", "first_inference_ms", "arena_bytes", "peak_rss_bytes", "measured_on",
                 "budget"}


@dataclasses.dataclass(frozen=True)
class Airflow:
    exe: Path
    home: Path
    dags: Path
    env: dict

    def __call__(self, *args, timeout: float = 120, check: bool = True, env: dict | None = None):
        proc = subprocess.run([str(self.exe), *map(str, args)], env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"airflow {' '.join(map(str, args))}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        return proc

    def json(self, *args):
        """A --output json command's result (Airflow prints warnings before it on stdout)."""
        return json.loads(self(*args, "-o", "json").stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Airflow:
    from conftest import wait_for_background_venvs

    wait_for_background_venvs()
    t0 = time.monotonic()
    setup = subprocess.run(["bash", str(ROOT / "tools" / "airflow_env.sh")], capture_output=True, text=True,
                           timeout=1800)
    assert setup.returncode == 0, "\n".join(setup.stderr.splitlines()[-30:])
    venv = Path(setup.stdout.strip().splitlines()[-1])
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EDGEKIT_"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False",
               # the edgekit these tests run (.venv/bin/edgekit) is the one the DAG's tasks find
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    af = Airflow(venv / "bin" / "airflow", home, home / "dags", env)
    af("db", "migrate")  # SQLite in AIRFLOW_HOME
    print(f"airflow: venv ready and database migrated in {time.monotonic() - t0:.1f} s")
    return af


def _tiny_quickstart(folder: Path, *, epochs: int = 2, **changes) -> Path:
    """recipes/quickstart.yaml with a few epochs (as tests/conftest.py's TINY_RECIPE)."""
    raw = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    raw["teacher"].update(epochs=epochs + 1, learning_rate=0.01)
    raw["student"].update(epochs=epochs, learning_rate=0.01, baseline=False)
    raw["prune"].update(target_sparsity=0.5, epochs=epochs, batch_size=32)
    raw["qat"].update(epochs=1, batch_size=32)
    raw["evaluate"].update(warmup=2, runs=10)
    raw.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _edgekit(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _export(recipe: Path, airflow: Airflow, *options) -> dict:
    return json.loads(_edgekit("export", "airflow", recipe, "--out", airflow.dags, "--json", *options).stdout)


def _started(log: str, task_id: str) -> int:
    """How often Airflow's `dags test` started a task (each try once)."""
    return log.count(f"[DAG TEST] starting task_id={task_id} ")


def test_quickstart_dag_runs_like_edgekit_run(airflow, tmp_path):
    recipe = _tiny_quickstart(tmp_path / "src")
    exported = _export(recipe, airflow)  # no --run-root: the worker's EDGEKIT_RUN_ROOT decides
    dag_id = exported["dag_id"]
    assert airflow.json("dags", "list-import-errors", "--local") == []
    assert dag_id in {d["dag_id"] for d in airflow.json("dags", "list", "--local")}
    tasks = set(airflow("tasks", "list", dag_id).stdout.split())
    assert set(exported["tasks"]) <= tasks
    assert {"train", "distill", "prune", "quantize", "convert_cortex-m4", "eval_rpi4", "report"} <= tasks

    # the plain `edgekit run` of the same recipe goes on meanwhile (mostly one core each)
    t0 = time.monotonic()
    plain_run = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "-q", "run", str(recipe), "--out",
                                  str(tmp_path / "plain")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        proc = airflow("dags", "test", dag_id, timeout=1800, env={"EDGEKIT_RUN_ROOT": str(tmp_path / "runs")})
        dag_s = time.monotonic() - t0
        plain_out, _ = plain_run.communicate(timeout=900)
    finally:
        plain_run.kill()
    print(f"airflow dags test {dag_s:.1f} s, plain edgekit run beside it {time.monotonic() - t0:.1f} s")
    assert plain_run.returncode == 0, plain_out[-3000:]
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    log = proc.stdout + proc.stderr
    assert all(_started(log, t) == 1 for t in exported["tasks"]), "a task ran more than once"

    (run_dir,) = (tmp_path / "runs" / dag_id).iterdir()  # <run root>/<dag_id>/<run_id>
    report = json.loads((run_dir / "report.json").read_text())
    for key in ("schema", "recipe", "task", "dataset", "features"):
        assert report[key] == plain[key], key
    assert sorted(report) == sorted(plain)
    assert [s["name"] for s in report["stages"]] == [s["name"] for s in plain["stages"]] == \
        ["teacher", "student", "pruned", "qat"]
    for got, want in zip(report["stages"], plain["stages"]):
        assert STAGE_FIELDS <= set(got) and set(got) == set(want), got["name"]
        assert got["params"] == want["params"], got["name"]  # the same models
        assert 0.5 < got["accuracy"] <= 1.0
    assert [(t["name"], t["kind"], t["format"], t["runtime"]) for t in report["targets"]] == \
        [(t["name"], t["kind"], t["format"], t["runtime"]) for t in plain["targets"]]
    for got, want in zip(report["targets"], plain["targets"]):
        assert TARGET_FIELDS <= set(got) and set(got) == set(want), got["name"]
        assert set(got["latency_ms"]) == set(want["latency_ms"]) and set(got["budget"]) == set(want["budget"])
        assert got["measured_on"] == want["measured_on"]
        assert 0.5 < got["accuracy"] <= 1.0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(e["status"] == "done" for e in manifest["stages"].values())
    assert (run_dir / "report.html").is_file() and (run_dir / "targets" / "rpi4" / "bundle" / "run.sh").is_file()


def test_retry_continues_the_run_directory(airflow, tmp_path):
    """``targets/`` made a symlink that leads out of the run fails rpi4's conversion (edgekit
    refuses to write or remove outside the run directory); it is removed before Airflow's retry,
    which converts rpi4 without redoing train, distill, prune or quantize."""
    recipe = _tiny_quickstart(tmp_path / "src", epochs=1, name="digits-retry", targets=["rpi4"])
    exported = _export(recipe, airflow, "--run-root", tmp_path / "runs", "--retries", "1", "--retry-delay", "3")
    dag_id = exported["dag_id"]
    runs = tmp_path / "runs" / dag_id
    seen: dict = {}

    def operator():
        """Plant the fault when the run starts; when the conversion has failed, note what the earlier
        stages look like, then clear the fault (before the retry delay is up)."""
        deadline = time.monotonic() + 1500
        while time.monotonic() < deadline and not seen.get("fixed"):
            time.sleep(0.1)
            run_dir = next(runs.iterdir(), None) if runs.is_dir() else None
            if run_dir is None:
                continue
            stray = run_dir / "targets"
            if "planted" not in seen:
                elsewhere = tmp_path / "elsewhere"
                (elsewhere / "rpi4").mkdir(parents=True, exist_ok=True)
                (elsewhere / "rpi4" / "canary").write_text("not edgekit's\n")
                stray.symlink_to(elsewhere, target_is_directory=True)
                seen["planted"] = time.monotonic()
                continue
            try:
                stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
            except (OSError, ValueError):
                continue
            if stages.get("convert:rpi4", {}).get("status") == "failed":
                seen["failed"] = stages
                seen["mtimes"] = _mtimes(run_dir)
                stray.unlink()
                seen["fixed"] = True

    watcher = threading.Thread(target=operator, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    proc = airflow("dags", "test", dag_id, timeout=1800)
    print(f"airflow dags test with one retry {time.monotonic() - t0:.1f} s")
    watcher.join(timeout=5)
    log = proc.stdout + proc.stderr
    assert seen.get("fixed"), f"the conversion never failed: {log[-3000:]}"
    failed = seen["failed"]
    assert "outside the run" in failed["convert:rpi4"]["error"], failed["convert:rpi4"]
    assert (tmp_path / "elsewhere" / "rpi4" / "canary").read_text() == "not edgekit's\n"  # never touched

    # Airflow ran convert_rpi4 twice (the failure and its retry) and everything else once
    assert _started(log, "convert_rpi4") == 2
    for task_id in ("train", "distill", "prune", "quantize", "eval_rpi4", "report"):
        assert _started(log, task_id) == 1, task_id
    # ...and the retry redid nothing before it: same manifest entries, same files untouched
    (run_dir,) = runs.iterdir()
    after = json.loads((run_dir / "manifest.json").read_text())["stages"]
    for stage in ("teacher", "student", "pruned", "qat", "eval-data"):
        assert failed[stage]["status"] == "done" and after[stage] == failed[stage], stage
    before = seen["mtimes"]
    now = _mtimes(run_dir)
    assert before and all(now[p] == m for p, m in before.items() if p.startswith(("stages/", "eval/eval.npz"))), \
        "an earlier stage's file was rewritten"
    assert after["convert:rpi4"]["status"] == "done" and after["report"]["status"] == "done"
    report = json.loads((run_dir / "report.json").read_text())
    assert [t["name"] for t in report["targets"]] == ["rpi4"]


def _mtimes(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
