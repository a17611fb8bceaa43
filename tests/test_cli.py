"""The CLI through click's runner, and the promise that config commands import no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("args", [[], ["run"], ["recipes"], ["recipes", "validate"], ["recipes", "show"],
                                  ["targets"], ["targets", "list"], ["targets", "show"], ["models", "list"],
                                  ["datasets", "list"], ["deploy"], ["estimate"], ["train"], ["distill"], ["prune"],
                                  ["quantize"], ["convert"], ["eval"], ["report"], ["tune"],
                                  ["export"], ["export", "airflow"], ["compress"]])
def test_help_everywhere(cli, args):
    res = cli(*args, "--help")
    assert res.exit_code == 0
    assert "Usage:" in res.output


def test_validate_ok_and_bad(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprune: {target_sparsity: 1.2}\n")
    res = cli("recipes", "validate", "recipes/quickstart.yaml", str(bad))
    assert res.exit_code == 2
    assert "recipes/quickstart.yaml: ok" in res.output
    assert f"{bad}: prune.target_sparsity: 1.2 is out of range" in res.output
    res = cli("recipes", "validate", "--json", str(bad))
    assert json.loads(res.stdout)[0]["ok"] is False


def test_show_resolved(cli):
    res = cli("recipes", "show", "recipes/quickstart.yaml")
    assert res.exit_code == 0 and "arena_margin" in res.output


def test_run_with_bad_recipe_is_one_line_exit_2(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nteacher: {epochs: many}\n")
    res = cli("run", str(bad), "--out", str(tmp_path / "out"))
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0, res.output
    assert res.output.startswith(f"error: {bad}: teacher.epochs")
    assert not (tmp_path / "out").exists()


def test_lists(cli):
    assert "cortex-m4" in cli("targets", "list").output
    targets = json.loads(cli("targets", "list", "--json").stdout)
    assert {t["kind"] for t in targets} == {"mobile", "rpi", "mcu"}
    assert json.loads(cli("targets", "show", "rpi4").stdout)["kind"] == "rpi"
    assert "cnn_tiny" in json.loads(cli("models", "list", "--json").stdout)
    assert "digits" in cli("datasets", "list").output
    res = cli("targets", "show", "rpi5")
    assert res.exit_code == 2 and "did you mean 'rpi4'" in res.output


def test_config_commands_import_no_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from edgekit.cli import main; r = CliRunner();"
            "[r.invoke(main, a) for a in (['--help'], ['recipes', 'validate', 'recipes/quickstart.yaml'],"
            " ['recipes', 'show', 'recipes/quickstart.yaml'], ['targets', 'list'], ['models', 'list'],"
            " ['datasets', 'list'], ['recipes', 'list'])];"
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'sklearn', 'tflite_micro') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_ctrl_c_that_tensorflow_turns_into_another_error_is_still_an_interrupt(monkeypatch, tmp_path):
    """A Ctrl-C inside TensorFlow's tracing can come out as an AssertionError ("Concurrent access?",
    raised by a context manager while the KeyboardInterrupt unwinds; seen in tests/test_interrupt.py):
    the CLI still says "interrupted" and exits 130, not 1 with that error."""
    from edgekit.pipeline import Run

    def interrupted(self, *args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise AssertionError("Concurrent access?")  # noqa: B904 - TensorFlow's context manager does this

    monkeypatch.setattr(Run, "execute", interrupted)
    res = CliRunner().invoke(main, ["run", str(ROOT / "recipes" / "quickstart.yaml"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 130, res.output
    assert "interrupted; finished stages are kept" in res.stderr and "Concurrent access" not in res.stderr

    def failing(self, *args, **kwargs):
        raise AssertionError("a real bug")

    monkeypatch.setattr(Run, "execute", failing)
    res = CliRunner().invoke(main, ["run", str(ROOT / "recipes" / "quickstart.yaml"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 1 and "AssertionError: a real bug" in res.stderr
