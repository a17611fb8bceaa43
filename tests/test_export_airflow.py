"""`edgekit export airflow`: the DAG source, the inventory, and the DAG's own runtime helpers.

Fast and without Airflow: the generated file is compiled and its imports inspected, then run
against a small stand-in for ``airflow.sdk`` that records the tasks and their order and lets a
task's function run with a fake edgekit executable. The real Airflow runs it in
tests/test_airflow_dag.py (slow).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgekit.cli import main

from conftest import TINY_RECIPE  # noqa: E402 - the shared tiny recipe (mobile, rpi4, cortex-m4)

STAGES = ["train", "distill", "prune", "quantize"]
BRANCHES = ["convert_mobile", "eval_mobile", "convert_rpi4", "eval_rpi4", "convert_cortex-m4", "eval_cortex-m4"]


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "src" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(TINY_RECIPE)
    return path


def _export(cli, recipe: Path, out: Path, *extra) -> dict:
    res = cli("export", "airflow", recipe, "--out", out, "--json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_writes_a_dag_and_the_recipe_beside_it(cli, recipe, tmp_path):
    out = tmp_path / "dags"
    res = _export(cli, recipe, out)
    assert res["dag_id"] == "edgekit_tiny" and res["warnings"] == []
    assert res["tasks"] == [*STAGES, *BRANCHES, "report"]
    dag = Path(res["dag_file"])
    assert dag == out / "edgekit_tiny.py"
    assert Path(res["recipe_file"]).read_text() == TINY_RECIPE  # copied as is (comments too)
    source = dag.read_text()
    compile(source, str(dag), "exec")
    # only the standard library and Airflow's SDK: the DAG never imports edgekit or TensorFlow
    tree = ast.parse(source)
    imported = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert imported <= {"__future__", "os", "re", "shlex", "shutil", "subprocess", "collections", "datetime",
                        "pathlib", "airflow"}, imported
    # nothing machine-specific: no path of this machine, no interpreter or venv
    for specific in (str(tmp_path), sys.prefix, sys.executable, os.getcwd(), str(Path.home())):
        assert specific not in source, specific
    assert "RUN_ROOT = None" in source and "SCHEDULE = None" in source


def test_cli_lines_and_options(cli, recipe, tmp_path):
    res = cli("export", "airflow", recipe, "--out", tmp_path / "dags", "--schedule", "0  3 * * 1",
              "--run-root", tmp_path / "runs", "--dag-id", "digits.nightly", "--retries", "3", "--retry-delay", "1.5")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].startswith(f"wrote {tmp_path / 'dags' / 'digits_nightly.py'} (DAG digits.nightly, "
                                                 "11 tasks: train, distill")
    source = (tmp_path / "dags" / "digits_nightly.py").read_text()
    assert "SCHEDULE = '0 3 * * 1'" in source and f"RUN_ROOT = {str(tmp_path / 'runs')!r}" in source
    assert "RETRIES = 3" in source and "RETRY_DELAY = timedelta(seconds=1.5)" in source
    assert (tmp_path / "dags" / "digits_nightly.recipe.yaml").is_file()


@pytest.mark.parametrize("args, message", [
    (["--schedule", "every day"], "Invalid value for '--schedule': 'every day' is not a cron expression"),
    (["--dag-id", "my dag"], "Invalid value for '--dag-id': 'my dag': a DAG id takes letters"),
    (["--retries", "-1"], "Invalid value for '--retries'"),
])
def test_bad_options(cli, recipe, tmp_path, args, message):
    res = cli("export", "airflow", recipe, "--out", tmp_path / "dags", *args)
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "dags").exists()


def test_bad_recipe_writes_nothing(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nteacher: {epochs: many}\n")
    res = cli("export", "airflow", bad, "--out", tmp_path / "dags")
    assert res.exit_code == 2 and res.output.startswith(f"error: {bad}: teacher.epochs")
    assert res.output.count("\n") == 1 and not (tmp_path / "dags").exists()


def test_skipped_stages_have_no_task(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(TINY_RECIPE.replace("prune: {target_sparsity: 0.5, epochs: 2, batch_size: 32}", "prune: null")
                    .replace("targets: [mobile, rpi4, cortex-m4]", "targets: [rpi4]"))
    res = _export(cli, path, tmp_path / "dags")
    assert res["tasks"] == ["train", "distill", "quantize", "convert_rpi4", "eval_rpi4", "report"]
    assert "train >> distill >> quantize\n" in Path(res["dag_file"]).read_text()


def test_relative_data_paths_become_absolute_with_a_warning(cli, tmp_path):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    import numpy as np

    np.savez(src / "data" / "d.npz", x=np.zeros((20, 4), "float32"), y=np.arange(20) % 2)
    recipe = src / "r.yaml"
    recipe.write_text("# mine\nname: npz-run\ndata: {source: npz:data/d.npz}\ntargets: [rpi4]\n")
    res = cli("export", "airflow", recipe, "--out", tmp_path / "dags")
    assert res.exit_code == 0, res.output
    assert "warning: " in res.output and "every Airflow worker must see them there" in res.output
    copy = yaml.safe_load((tmp_path / "dags" / "edgekit_npz_run.recipe.yaml").read_text())
    assert copy["data"]["source"] == f"npz:{(src / 'data' / 'd.npz').resolve()}"
    assert copy["targets"] == ["rpi4"] and copy["name"] == "npz-run"


def test_data_path_escaping_through_a_symlink_is_refused_not_made_absolute(cli, tmp_path):
    """The DAG's copy names files by absolute path: one reached through a symlink out of the
    recipe's folder is refused (as `edgekit run` refuses it), not written down."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "d.npz").write_bytes(b"x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "data").symlink_to(tmp_path / "outside")
    recipe = tmp_path / "src" / "r.yaml"
    recipe.write_text("name: npz-run\ndata: {source: npz:data/d.npz}\ntargets: [rpi4]\n")
    res = cli("export", "airflow", recipe, "--out", tmp_path / "dags")
    assert res.exit_code == 2, res.output
    assert "data.source 'data/d.npz' leads through a symlink to" in res.output
    assert not (tmp_path / "dags").exists() or not any((tmp_path / "dags").iterdir())


# ------------------------------------------------------------------------------------ inventory

INVENTORY = """
hosts:
  - host: pi@raspberrypi.local
    key: ~/.ssh/id_ed25519
    known_hosts: keys/known_hosts
  - host: pi@10.0.0.7
    target: rpi-zero2
    port: 2222
    name: zero
    install_runtime: true
"""


def test_inventory_adds_a_deploy_task_per_host(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY_RECIPE.replace("targets: [mobile, rpi4, cortex-m4]", "targets: [rpi4, rpi-zero2, mobile]"))
    inv = tmp_path / "hosts.yaml"
    inv.write_text(INVENTORY.replace("  - host: pi@raspberrypi.local\n", "  - host: pi@raspberrypi.local\n"
                                                                         "    target: rpi4\n"))
    res = _export(cli, recipe, tmp_path / "dags", "--deploy-inventory", inv)
    assert res["tasks"][-4:] == ["report_host", "deploy_raspberrypi.local", "deploy_zero", "report"]
    source = Path(res["dag_file"]).read_text()
    assert ("'raspberrypi.local': ['--target', 'rpi4', '--host', 'pi@raspberrypi.local', '--port', '22', '--key', "
            f"'~/.ssh/id_ed25519', '--known-hosts', {str(tmp_path / 'keys' / 'known_hosts')!r}],") in source
    assert "'zero': ['--target', 'rpi-zero2', '--host', 'pi@10.0.0.7', '--port', '2222', '--install-runtime']," in source


@pytest.mark.parametrize("text, message", [
    ("hosts:\n  - host: pi@a\n    port: 70000\n", "hosts.0.port: 70000 is out of range"),
    ("hosts:\n  - host: pi@a\n    knownhosts: x\n", "hosts.0.knownhosts: unknown key; did you mean 'known_hosts'?"),
    ("hosts:\n  - host: raspberrypi\n", "hosts.0.host: string should match pattern"),
    ("hosts: []\n", "hosts: list should have at least 1 item"),
    ("- pi@a\n", "expected a mapping of keys at the top level"),
    ("hosts:\n  - host: pi@a\n    target: cortex-m4\n", "hosts.0.target: 'cortex-m4' is a mcu target; deploy measures "
                                                      "Raspberry Pi bundles (the recipe's Pi targets: rpi4)"),
    ("hosts:\n  - host: pi@a\n    target: rpi5\n", "hosts.0.target: 'rpi5' is not a target of recipe 'tiny'"),
    ("hosts:\n  - host: pi@a\n  - host: pi@b\n", "hosts.1.target: 'rpi4' is already measured on hosts.0"),
    ("hosts:\n  - host: pi@a\n  - host: pi2@a\n", "hosts.1 and hosts.0 would both be task deploy_a"),
    ("hosts: [", "not valid YAML"),
])
def test_bad_inventory_is_one_line(cli, recipe, tmp_path, text, message):
    inv = tmp_path / "hosts.yaml"
    inv.write_text(text)
    res = cli("export", "airflow", recipe, "--out", tmp_path / "dags", "--deploy-inventory", inv)
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: {inv}: ") and message in res.output, res.output
    assert res.output.count("\n") == 1
    assert not (tmp_path / "dags").exists()


def test_missing_inventory(cli, recipe, tmp_path):
    res = cli("export", "airflow", recipe, "--out", tmp_path / "dags", "--deploy-inventory", tmp_path / "nope.yaml")
    assert res.exit_code == 2 and "nope.yaml: inventory file not found" in res.output


def test_importing_edgekit_imports_no_airflow(recipe, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import edgekit, edgekit.cli, edgekit.export_airflow
        from click.testing import CliRunner
        r = CliRunner().invoke(edgekit.cli.main, ["export", "airflow", {str(recipe)!r}, "--out", {str(tmp_path / "d")!r}])
        assert r.exit_code == 0, r.output
        print(sorted(m for m in ("airflow", "tensorflow", "tf_keras") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ the DAG, run on a stand-in

STUB_SDK = '''
"""A stand-in for airflow.sdk: records the DAG's tasks and edges; tasks run as plain calls."""
TASKS, EDGES, VARIABLES, CONTEXT, DAGS = {}, [], {}, {}, []


class DAG:
    def __init__(self, dag_id, **kw):
        self.dag_id, self.kw = dag_id, kw
        DAGS.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Variable:
    @staticmethod
    def get(key, default=None):
        return VARIABLES.get(key, default)


def get_current_context():
    return CONTEXT


class Ref:
    def __init__(self, task_id, fn, args):
        self.task_id, self.fn, self.args = task_id, fn, args

    def __rshift__(self, other):
        EDGES.append((self.task_id, other.task_id))
        return other

    def run(self):
        return self.fn(*self.args)


class Task:
    def __init__(self, fn, **kw):
        self.fn, self.kw = fn, kw

    def override(self, **kw):
        return Task(self.fn, **{**self.kw, **kw})

    def __call__(self, *args):
        assert self.kw["task_id"] not in TASKS, self.kw["task_id"]
        TASKS[self.kw["task_id"]] = ref = Ref(self.kw["task_id"], self.fn, args)
        return ref


def task(fn=None, **kw):
    return Task(fn, **kw) if fn is not None else (lambda f: Task(f, **kw))
'''


@pytest.fixture
def stub_airflow(tmp_path, monkeypatch):
    pkg = tmp_path / "stub" / "airflow" / "sdk"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text(STUB_SDK)
    (pkg / "exceptions.py").write_text("class AirflowFailException(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "stub"))
    for name in [m for m in sys.modules if m == "airflow" or m.startswith("airflow.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m == "airflow" or m.startswith("airflow.")]:
        del sys.modules[name]


def _load_dag(path: Path):
    spec = importlib.util.spec_from_file_location(f"dag_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import airflow.sdk as sdk

    return module, sdk


def test_dag_structure(stub_airflow, cli, recipe, tmp_path):
    inv = tmp_path / "hosts.yaml"
    inv.write_text("hosts:\n  - host: pi@pi4\n")
    res = _export(cli, recipe, tmp_path / "dags", "--deploy-inventory", inv)
    _, sdk = _load_dag(Path(res["dag_file"]))
    assert list(sdk.TASKS) == ["train", "distill", "prune", "quantize", "report", "report_host",
                               *BRANCHES, "deploy_pi4"]
    assert set(sdk.TASKS) == set(res["tasks"])
    edges = set(sdk.EDGES)
    assert {("train", "distill"), ("distill", "prune"), ("prune", "quantize")} <= edges
    for t in ("mobile", "rpi4", "cortex-m4"):
        assert {("quantize", f"convert_{t}"), (f"convert_{t}", f"eval_{t}"), (f"eval_{t}", "report_host")} <= edges
    assert {("report_host", "deploy_pi4"), ("deploy_pi4", "report")} <= edges
    (dag,) = sdk.DAGS
    assert dag.dag_id == "edgekit_tiny" and dag.kw["catchup"] is False
    assert dag.kw["default_args"]["retries"] == 2


FAKE_EDGEKIT = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.txt"
echo "working on $4"
echo "error: something went wrong" >&2
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture
def fake_edgekit(tmp_path):
    exe = tmp_path / "bin" / "edgekit"
    exe.parent.mkdir()
    exe.write_text(FAKE_EDGEKIT)
    exe.chmod(0o755)
    return exe


def test_task_runs_edgekit_on_the_run_directory(stub_airflow, cli, recipe, tmp_path, fake_edgekit, monkeypatch,
                                                capfd):
    res = _export(cli, recipe, tmp_path / "dags")
    module, sdk = _load_dag(Path(res["dag_file"]))
    sdk.CONTEXT.update(dag=sdk.DAGS[0], run_id="manual__2026-01-02T03:04:05.678+00:00")
    monkeypatch.setenv("PATH", f"{fake_edgekit.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("EDGEKIT_BIN", raising=False)
    monkeypatch.delenv("EDGEKIT_RUN_ROOT", raising=False)
    sdk.TASKS["convert_rpi4"].run()
    run_dir = tmp_path / "airflow" / "edgekit-runs" / "edgekit_tiny" / "manual__2026-01-02T03-04-05.678-00-00"
    recipe_copy = tmp_path / "dags" / "edgekit_tiny.recipe.yaml"
    calls = (fake_edgekit.parent / "calls.txt").read_text().splitlines()
    assert calls == [f"--lock-wait 14400 convert {run_dir} --recipe {recipe_copy} --target rpi4"]
    assert f"working on {run_dir}" in capfd.readouterr().out  # edgekit's output goes to the task log
    # the first task starts the run from the recipe; a Variable / env var points elsewhere
    sdk.VARIABLES["edgekit_run_root"] = str(tmp_path / "runs")
    sdk.TASKS["train"].run()
    assert (fake_edgekit.parent / "calls.txt").read_text().splitlines()[-1] == (
        f"--lock-wait 14400 train {recipe_copy} --out {tmp_path / 'runs' / 'edgekit_tiny' / run_dir.name}")
    other = tmp_path / "other" / "edgekit"
    other.parent.mkdir()
    other.write_text(FAKE_EDGEKIT)
    other.chmod(0o755)
    monkeypatch.setenv("EDGEKIT_BIN", str(other))
    sdk.TASKS["report"].run()
    assert (other.parent / "calls.txt").is_file()


def test_task_failures(stub_airflow, cli, recipe, tmp_path, fake_edgekit, monkeypatch):
    res = _export(cli, recipe, tmp_path / "dags", "--run-root", tmp_path / "runs")
    module, sdk = _load_dag(Path(res["dag_file"]))
    from airflow.sdk.exceptions import AirflowFailException

    sdk.CONTEXT.update(dag=sdk.DAGS[0], run_id="r1")
    monkeypatch.setenv("EDGEKIT_BIN", str(fake_edgekit))
    monkeypatch.setenv("FAKE_EXIT", "1")  # may pass on a retry: an ordinary failure
    with pytest.raises(RuntimeError, match="edgekit prune exited 1: error: something went wrong"):
        sdk.TASKS["prune"].run()
    monkeypatch.setenv("FAKE_EXIT", "6")  # over budget: a retry would say the same
    with pytest.raises(AirflowFailException, match="exited 6: error: something went wrong "
                                                   r"\(over budget; not retried\)"):
        sdk.TASKS["report"].run()
    monkeypatch.setenv("EDGEKIT_BIN", str(tmp_path / "nowhere" / "edgekit"))
    with pytest.raises(AirflowFailException, match="not found on this worker; set the Airflow Variable edgekit_bin"):
        sdk.TASKS["report"].run()
    monkeypatch.setenv("EDGEKIT_BIN", f"{fake_edgekit} -v")  # a command line
    monkeypatch.setenv("FAKE_EXIT", "0")
    sdk.TASKS["eval_mobile"].run()
    assert (fake_edgekit.parent / "calls.txt").read_text().splitlines()[-1].startswith("-v --lock-wait 14400 eval ")
