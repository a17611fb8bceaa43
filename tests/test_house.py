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
    from edgekit.tune import SCHEMA as tune

    assert eval_compare == "edgekit.compare/1"  # edgekit eval --compare
    assert runs_compare == "edgekit.runs-compare/1"  # edgekit report RUN_A RUN_B --json
    assert len({eval_compare, runs_compare, tune}) == 3
