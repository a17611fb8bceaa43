"""Rules the test suite keeps for itself: under CI=true a missing tool fails instead of skipping."""

from __future__ import annotations

import pytest

import conftest
from conftest import require_tool


@pytest.mark.parametrize("in_ci, outcome", [(False, pytest.skip.Exception), (True, pytest.fail.Exception)])
def test_a_missing_tool_skips_locally_and_fails_in_ci(monkeypatch, in_ci, outcome):
    monkeypatch.setattr(conftest, "IN_CI", in_ci)
    with pytest.raises(outcome, match="no-such-tool-edgekit not found on PATH"):
        require_tool("no-such-tool-edgekit")
    with pytest.raises(outcome, match=r"sshd broken \(install it\)"):
        require_tool("sh", missing="sshd broken", hint="install it")   # a reason beats PATH
    require_tool("sh")  # present: nothing happens


def test_hypothesis_takes_its_example_counts_from_the_profile():
    """Few examples locally, many under CI=true (HYPOTHESIS_PROFILE names another profile)."""
    import os

    from hypothesis import settings

    assert settings.get_profile("default").max_examples < settings.get_profile("ci").max_examples
    expected = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if conftest.IN_CI else "default")
    assert settings.default.max_examples == settings.get_profile(expected).max_examples
    here = conftest.Path(__file__)
    own = [f.name for f in here.parent.glob("test_*.py") if f != here and "max_examples=" in f.read_text()]
    assert not own, f"these set their own max_examples and ignore the profile: {own}"
