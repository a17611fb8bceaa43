"""The house rules of issue 21 part 3: one helper for each job, one name for each document, and a
library that does not import the CLI's toolkit."""

from __future__ import annotations

import pytest

from edgekit.errors import one_line


@pytest.mark.parametrize("exc, expected", [
    (ValueError("bad\n  value\tat 3"), "bad value at 3"),
    (OSError(), "OSError"),
    (RuntimeError("   \n "), "RuntimeError"),
    (KeyError("k"), "'k'"),
])
def test_one_line_collapses_whitespace_and_names_a_silent_exception(exc, expected):
    assert one_line(exc) == expected


def test_one_line_cuts_at_the_limit():
    text = one_line(ValueError("x" * 1000), limit=50)
    assert len(text) == 50 and text.endswith("...") and text.startswith("x" * 47)
    assert one_line(ValueError("y" * 300)) == "y" * 300
    assert len(one_line(ValueError("y" * 301))) == 300


def test_each_document_has_its_own_schema_name():
    from edgekit.parity import SCHEMA as eval_compare
    from edgekit.report.compare import SCHEMA as runs_compare
    from edgekit.layer_error import SCHEMA as per_layer
    from edgekit.tune import SCHEMA as tune

    assert eval_compare == "edgekit.compare/1"  # edgekit eval --compare
    assert per_layer == "edgekit.per_layer/1"  # edgekit eval --compare --per-layer
    assert runs_compare == "edgekit.runs-compare/1"  # edgekit report RUN_A RUN_B --json
    assert len({eval_compare, runs_compare, tune, per_layer}) == 4


def test_the_cli_offers_the_pipelines_stage_list():
    from edgekit.cli import run
    from edgekit.pipeline import ALL_STAGES

    options = {p.name: p for p in run.params}
    assert tuple(options["until"].type.choices) == ALL_STAGES == tuple(options["only"].type.choices)


def test_the_cli_module_holds_commands_not_renderers():
    """Progress classes and renderers live in edgekit/ui.py; cli.py parses, calls and prints."""
    import ast
    from pathlib import Path

    import edgekit.cli

    tree = ast.parse(Path(edgekit.cli.__file__).read_text())
    assert [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)] == []


def test_the_library_imports_no_click():
    """Every module but the CLI imports without click (and without paramiko, rich or TensorFlow):
    the deploy command lives in edgekit/cli.py, progress in edgekit/ui.py loads its toolkits lazily."""
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, edgekit\n"
            "names = [m.name for m in pkgutil.walk_packages(edgekit.__path__, 'edgekit.')\n"
            "         if m.name != 'edgekit.cli' and not m.name.endswith('__main__')]\n"
            "assert 'edgekit.deploy' in names and 'edgekit.deploy.ssh' in names and 'edgekit.ui' in names, names\n"
            "for n in names:\n"
            "    importlib.import_module(n)\n"
            "print(sorted(m for m in ('click', 'paramiko', 'rich', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
