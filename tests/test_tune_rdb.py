"""edgekit tune on a shared database: the --storage URL (parsing, masking, no password on the
command line) in process, and against a real PostgreSQL server on 127.0.0.1 (tests/pg.py): a
study's stale trials found by heartbeat, and (slow) two tune processes, as two machines would,
finishing one study's trials without running any twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require_tool
from pg import PgServer, bindir, skip_reason
from test_tune import TIGHT_BOARD, TINY

from edgekit.cli import main
from edgekit.errors import RecipeError
from edgekit.tune.storage import ENV, mask, resolve

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning")  # the tests ask directly


# ----------------------------------------------------------------------------- the URL (fast, no server)


def test_storage_url_resolves_masks_and_refuses_a_password_on_the_command_line():
    assert resolve(None, environ={}).url is None and resolve("sqlite", environ={}).shown == "sqlite:///study.db"
    s = resolve("postgresql://tuner@db.lan:5433/edgekit", environ={})
    assert s.shared and s.url == s.shown == "postgresql://tuner@db.lan:5433/edgekit"
    # the whole URL, password included, from the environment; shown masked
    env = {ENV: "postgresql+psycopg2://tuner:hunter2@db.lan/edgekit"}
    s = resolve(None, environ=env)
    assert s.url.endswith("tuner:hunter2@db.lan/edgekit") and "hunter2" not in s.shown and "***" in s.shown
    # the same server on the command line takes the password from the environment; another does not
    assert resolve("postgresql+psycopg2://tuner@db.lan/edgekit", environ=env).url == env[ENV]
    assert resolve("postgresql+psycopg2://tuner@db.lan/other", environ=env).url.endswith("@db.lan/other")
    assert mask("mysql+pymysql://u:p%40ss@h/db") == "mysql+pymysql://u:***@h/db" and "p@ss" not in mask("x://u:p@ss")
    with pytest.raises(RecipeError, match=r"holds a password.*PGPASSWORD.*EDGEKIT_TUNE_STORAGE") as e:
        resolve("postgresql://tuner:hunter2@db.lan/edgekit", environ={})
    assert "hunter2" not in str(e.value)
    for bad in ("not a url", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(RecipeError, match="--storage"):
            resolve(bad, environ={})


def test_cli_refuses_a_password_in_storage_before_running_anything(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    res = CliRunner().invoke(main, ["-q", "tune", str(tmp_path / "tiny.yaml"), "--target", "cortex-m4",
                                    "--storage", "postgresql://tuner:hunter2@127.0.0.1:9/edgekit",
                                    "--out", str(tmp_path / "study")])
    assert res.exit_code == 2, res.output
    assert "hunter2" not in res.output and "PGPASSWORD" in res.stderr
    assert not (tmp_path / "study").exists()


# ----------------------------------------------------------------------------- a real PostgreSQL


@pytest.fixture(scope="module")
def pg():
    require_tool(str(bindir() / "postgres") if bindir() else "postgres", missing=skip_reason())  # skips here, fails under CI=true
    folder = Path(tempfile.mkdtemp(prefix="edgekit-pg-"))  # not under pytest's 0700 tmp: the postgres user reads it
    folder.chmod(0o755)
    server = PgServer.start(folder / "pg")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _board(folder: Path) -> Path:
    (folder / "tiny.yaml").write_text(TINY)
    (folder / "board.yaml").write_text(TIGHT_BOARD.replace("name: tight-m4", "name: board"))
    return folder / "board.yaml"


def test_unknown_study_to_join_and_an_unreachable_server_are_one_clear_line(pg, tmp_path, monkeypatch):
    _board(tmp_path)
    monkeypatch.setenv("PGPASSWORD", "wrong-password")
    base = ["-q", "tune", str(tmp_path / "tiny.yaml"), "--target", str(tmp_path / "board.yaml"),
            "--out", str(tmp_path / "study"), "--storage", pg.url]
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 2 and "cannot open the study's database" in res.stderr, res.output
    assert "wrong-password" not in res.output
    monkeypatch.setenv("PGPASSWORD", "s3cret-Pa55")
    res = CliRunner().invoke(main, [*base, "--join", "--study", "nobody-started-this"])
    assert res.exit_code != 0 and "no study 'nobody-started-this' in postgresql://tuner@127.0.0.1" in res.stderr


def test_a_machine_that_loses_the_table_creation_race_opens_the_study_again(monkeypatch, tmp_path):
    """Two machines opening a fresh PostgreSQL database at once both create Optuna's tables; one
    loses with a unique violation (seen in CI). open_storage opens again, and gives up with the
    one-line error after CREATE_ATTEMPTS; any other error is not retried. (RDBStorage stands in
    for the race, which cannot be timed in a test; the retry is what is tested.)"""
    import optuna

    from edgekit.errors import RecipeError
    from edgekit.tune import storage as st

    calls = []

    def racing(url, **kw):
        calls.append(url)
        if len(calls) < 3:
            raise RuntimeError('(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint '
                               '"pg_type_typname_nsp_index"')
        return "storage"

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr("time.sleep", lambda s: None)
    url = st.Storage("postgresql://tuner@127.0.0.1:1/edgekit", "postgresql://tuner@127.0.0.1:1/edgekit")
    assert st.open_storage(url, tmp_path) == "storage" and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(st, "CREATE_ATTEMPTS", 2)
    with pytest.raises(RecipeError, match="cannot open the study's database: .*duplicate key value"):
        st.open_storage(url, tmp_path)
    assert len(calls) == 2

    def refused(url, **kw):
        calls.append(url)
        raise RuntimeError("connection refused")

    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage", refused)
    with pytest.raises(RecipeError, match="connection refused"):
        st.open_storage(url, tmp_path)
    assert len(calls) == 1


def test_a_trial_whose_machine_went_silent_is_failed_and_queued_again(pg, monkeypatch):
    """The heartbeat path in process: a RUNNING trial with an old heartbeat is stale; another
    worker fails it (``interrupted``) and queues its parameters once, even when two try."""
    import optuna

    from edgekit.tune import storage as st
    from edgekit.tune.study import _counted, _retry_stale

    monkeypatch.setenv(ENV, pg.url_with_password)
    monkeypatch.setattr(st, "GRACE_S", 0.4)
    monkeypatch.setattr(st, "HEARTBEAT_S", 0.4)
    rdb = st.open_storage(resolve(pg.url), Path("."))
    study = optuna.create_study(study_name="silent", storage=rdb, directions=["maximize", "minimize"])
    t = study.ask({"width": optuna.distributions.CategoricalDistribution([1.0, 2.0])})
    t.set_user_attr("host", "gone-machine")
    rdb.record_heartbeat(t._trial_id)
    time.sleep(1.0)
    stale = set(rdb._get_stale_trial_ids(study._study_id))
    assert stale == {t._trial_id}
    assert _retry_stale(study, stale) == [t.number]
    assert _retry_stale(study, stale) == []  # a second machine finds it finished: no second retry
    trials = study.get_trials()
    assert [x.state.name for x in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["interrupted"] and not _counted(trials[0])
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params == {} and \
        study.get_trials()[1].system_attrs["fixed_params"] == t.params


def _tune(folder: Path, out: Path, url: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PGPASSWORD": "s3cret-Pa55"}
    return subprocess.Popen([sys.executable, "-m", "edgekit.cli", "-q", "tune", str(folder / "tiny.yaml"),
                             "--target", str(folder / "board.yaml"), "--trials", "3", "--jobs", "1",
                             "--max-accuracy-drop", "30", "--out", str(out), "--storage", url, "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_two_machines_share_one_postgresql_study_and_run_no_trial_twice(pg, tmp_path):
    """Two tune processes with their own --out (two machines) on one PostgreSQL study: 3 trials
    in all, no trial number or point measured twice, each run directory on the machine that ran
    it, and --report-only writes the same outputs elsewhere from the database alone."""
    import optuna

    _board(tmp_path)
    a = _tune(tmp_path, tmp_path / "a", pg.url)
    rdb = optuna.storages.RDBStorage(pg.url_with_password)
    for _ in range(600):  # B joins once A created the study (and so queued the recipe's own point)
        if any(s.study_name == "tiny-tune@board" for s in optuna.get_all_study_summaries(rdb, False)):
            break
        assert a.poll() is None, a.communicate()
        time.sleep(0.5)
    b = _tune(tmp_path, tmp_path / "b", pg.url, "--join")
    out_a, err_a = a.communicate(timeout=1800)
    out_b, err_b = b.communicate(timeout=1800)
    assert a.returncode == 0, err_a[-3000:]
    assert b.returncode == 0, err_b[-3000:]
    study = optuna.load_study(study_name="tiny-tune@board", storage=rdb)
    trials = study.get_trials()
    measured = [t for t in trials if t.state.name in ("COMPLETE", "FAIL") and not t.user_attrs.get("duplicate_of")
                and t.user_attrs.get("run_dir")]
    counted = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")
               and t.user_attrs.get("duplicate_of") is None]
    assert len(counted) == 3, [(t.number, t.state.name, t.user_attrs) for t in trials]
    points = [tuple(sorted(t.params.items())) for t in measured]
    assert len(points) == len(set(points)), "a point was trained twice"
    hosts = {t.user_attrs.get("host") for t in trials}
    assert None not in hosts
    by_out = {"a": set(), "b": set()}
    for t in measured:
        where = [o for o in ("a", "b") if (tmp_path / o / t.user_attrs["run_dir"] / "worker.json").is_file()]
        assert len(where) == 1, (t.number, where)  # its run directory exists on one machine only
        by_out[where[0]].add(t.number)
    assert by_out["a"] and by_out["b"], by_out  # both machines ran trials
    for out, text in (("a", out_a), ("b", out_b)):
        result = json.loads(text)
        assert result["study"]["storage"] == pg.url and "s3cret" not in text
        assert (tmp_path / out / "tune.json").is_file()
        assert "s3cret" not in (tmp_path / out / "tune.md").read_text()
    last = json.loads(out_b if b.returncode == 0 else out_a)
    # whoever finished last saw every trial; --report-only elsewhere writes the same rows
    rep = CliRunner().invoke(main, ["-q", "tune", str(tmp_path / "tiny.yaml"), "--target", str(tmp_path / "board.yaml"),
                                    "--max-accuracy-drop", "30", "--out", str(tmp_path / "report"),
                                    "--storage", pg.url, "--report-only", "--json"],
                             env={"PGPASSWORD": "s3cret-Pa55"})
    assert rep.exit_code == 0, rep.output[-3000:]
    reported = json.loads(rep.stdout)
    assert [r["number"] for r in reported["trials"]] == [t.number for t in trials]
    assert {r["number"] for r in reported["trials"]} >= {r["number"] for r in last["trials"]}
    assert reported["best"] is not None and (tmp_path / "report" / "best.yaml").is_file()
    assert not (tmp_path / "report" / "trials").exists() and not (tmp_path / "report" / "teacher").exists()
    for f in ("tune.json", "tune.md", "tune.html", "best.yaml"):
        assert "s3cret" not in (tmp_path / "report" / f).read_text()


def test_ctrl_c_hands_back_only_this_machines_trials(pg, monkeypatch):
    """Stopping one machine fails and requeues its own running trials, never another machine's."""
    import optuna

    from edgekit.tune import storage as st
    from edgekit.tune.study import _Ctx

    monkeypatch.setenv(ENV, pg.url_with_password)
    rdb = st.open_storage(resolve(pg.url), Path("."))
    study = optuna.create_study(study_name="two-machines", storage=rdb, directions=["maximize", "minimize"])
    dist = {"width": optuna.distributions.CategoricalDistribution([1.0, 2.0])}
    mine, theirs = study.ask(dist), study.ask(dist)
    ctx = _Ctx(study, None, None, None, Path("."), 0.0, 1, lambda kind, info: None, shared=True)
    ctx._beating.add(mine._trial_id)
    ctx._abort()
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[mine.number] == "FAIL" and states[theirs.number] == "RUNNING"
    queued = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in queued] == [mine.number]
