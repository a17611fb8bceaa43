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


def test_heavy_files_named_first_exist():
    """A renamed test file must not drop out of the order that balances the xdist workers."""
    folder = conftest.Path(conftest.__file__).parent
    assert [n for n in conftest.HEAVY_FIRST if not (folder / n).is_file()] == []
    assert len(set(conftest.HEAVY_FIRST)) == len(conftest.HEAVY_FIRST)


def test_a_session_build_runs_once_for_all_workers(tmp_path, monkeypatch):
    """_built_once under xdist: the first worker builds (under the lock), the next one reads the
    same folder without building; a build that failed is started again from an empty folder."""
    class Factory:  # what a worker's tmp_path_factory offers: its own base temp below a shared one
        def __init__(self, worker):
            self.base = tmp_path / worker
            self.base.mkdir(exist_ok=True)

        def getbasetemp(self):
            return self.base

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    calls = []

    def failing(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("the build failed")

    with pytest.raises(RuntimeError):
        conftest._built_once(Factory("gw0"), "bank", failing)

    def build(folder):
        calls.append(folder)
        assert list(folder.iterdir()) == []  # the failed build's file is gone
        (folder / "made").write_text("x")

    a = conftest._built_once(Factory("gw0"), "bank", build)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    b = conftest._built_once(Factory("gw1"), "bank", build)
    assert a == b == tmp_path / "built-once" / "bank" and len(calls) == 1 and (a / "made").is_file()
