"""Nothing outside the run is ever touched (issue 20, first half), table-driven.

Categories, one table each:
- OUT_POLICY: what ``--out`` may be (absent, empty, or an edgekit run), for every command that
  takes one; ``/``, the home folder, the checkout and folders above the working directory or the
  recipe are refused whatever ``--force`` says.
- DESTRUCTIVE: every path that removes or overwrites (``--force``, a failed run, ``--resume``,
  ``--only``, odd target names, an interrupted stage) run beside canary files planted beside,
  above and inside ``--out`` and behind symlinks inside it; every canary must stay byte-identical.
- NAMES: names that become paths are identifiers, checked by ``recipes validate``.
- FINGERPRINT: a file source's content is part of the run's fingerprint.
- INJECTION: deploy's remote arguments, the Airflow DAG source and report.md carry values, never
  code or markup.
- NONE_METRICS: summaries of runs whose task has no accuracy (regression, anomaly) do not crash.
- INTERRUPTED: a stage left "running" by a killed process is not finished, and edgekit says so.

No test here trains a model: a finished run is the session's (conftest.finished_run, copied),
and runs that must fail do so on their data, before training.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import copy_run
from edgekit.cli import main

ROOT = Path(__file__).resolve().parents[1]
BAD_CSV = "a,b,label\n1,2,0\n1,abc,1\n"   # fails in data loading, after the run directory is prepared


def _cli(*argv: str):
    return CliRunner().invoke(main, [str(a) for a in argv])


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (not following symlinks) with its sha256, and every symlink with
    its target: a byte-identical picture."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Canaries:
    """Files a user owns beside, above and inside a run directory, and outside folders that
    symlinks inside the run directory point to."""

    def __init__(self, top: Path, out: Path):
        self.top, self.out = top, out
        self.outside = top / "outside"            # what symlinks inside --out point to
        for p in (top / "canary.txt", out.parent / "canary.txt", self.outside / "keep.txt",
                  self.outside / "eval" / "mobile.json", self.outside / "model_int8.tflite"):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"user data {p.name}\n")
        self.before = _tree(top)

    def plant_inside(self) -> None:
        """User files inside an existing run, and symlinks from it to the outside folder."""
        (self.out / "user_notes.txt").write_text("mine\n")
        (self.out / "stages" / "teacher" / "user.txt").write_text("mine too\n")
        (self.out / "link_out").symlink_to(self.outside)
        (self.out / "file_link").symlink_to(self.outside / "keep.txt")
        self.before = _tree(self.top)

    def assert_untouched(self, *, edgekit_may_change: tuple[str, ...] = ()) -> None:
        """Every canary outside ``--out`` is identical; inside, only edgekit's own names changed."""
        after = _tree(self.top)
        out_rel = str(self.out.relative_to(self.top))
        own = tuple(f"{out_rel}/{n}" for n in edgekit_may_change)

        def mine(rel: str) -> bool:
            return not (rel == out_rel or rel.startswith(out_rel + "/")) or not rel.startswith(own)

        lost = {k: v for k, v in self.before.items() if mine(k) and after.get(k) != v}
        assert not lost, f"changed or removed: {sorted(lost)}"
        if not self.out.exists():
            return
        extra = [k for k in after if k not in self.before and mine(k)
                 and not (k.startswith(out_rel + "/") and k[len(out_rel) + 1:].startswith(_EDGEKIT_NAMES))]
        assert not extra, f"written outside what edgekit owns: {extra}"


_EDGEKIT_NAMES = ("stages", "targets", "eval", "report.", "recipe.resolved.yaml", "manifest.json", ".edgekit.lock",
                  "logs")
_RUN_OWN = ("stages", "targets", "eval", "report.json", "report.md", "report.html", "recipe.resolved.yaml",
            "manifest.json")


def _bad_data_recipe(folder: Path, name: str = "tiny", extra: str = "") -> Path:
    (folder / "bad.csv").write_text(BAD_CSV)
    p = folder / f"{name}-bad.yaml"
    p.write_text(f"name: {name}\ndata: {{source: 'csv:bad.csv'}}\nteacher: {{model: mlp_small, epochs: 1}}\n"
                 f"student: null\nprune: null\nqat: null\ntargets: [mobile]\n{extra}")
    return p


# ----------------------------------------------------------------------------- OUT_POLICY


def _home(t: Path, mp) -> list:
    mp.setenv("HOME", str(t / "home"))
    (t / "home").mkdir()
    return ["run", _bad_data_recipe(t), "--out", t / "home", "--force"]


def _above_cwd(t: Path, mp) -> list:
    (t / "a" / "b").mkdir(parents=True)
    mp.chdir(t / "a" / "b")
    return ["run", _bad_data_recipe(t), "--out", t / "a"]


def _above_recipe(t: Path, mp) -> list:
    (t / "p" / "recipes").mkdir(parents=True)
    return ["run", _bad_data_recipe(t / "p" / "recipes"), "--out", t / "p", "--force"]


def _nonempty(t: Path, mp, *extra) -> list:
    (t / "o" / "targets").mkdir(parents=True)
    (t / "o" / "report.html").write_text("my page")
    (t / "o" / "targets" / "x.txt").write_text("mine")
    return ["run", _bad_data_recipe(t), "--out", t / "o", *extra]


def _manifest(t: Path, text: str, *extra) -> list:
    (t / "o").mkdir()
    (t / "o" / "manifest.json").write_text(text)
    return ["run", _bad_data_recipe(t), "--out", t / "o", *extra]


def _tune_recipe(t: Path) -> Path:
    p = t / "tune.yaml"
    p.write_text("name: tiny\nteacher: {model: cnn_tiny, epochs: 1}\nstudent: {model: cnn_tiny, epochs: 1}\n"
                 "targets: [cortex-m4]\n")
    return p


def _tune(t: Path, mp) -> list:
    (t / "o").mkdir()
    (t / "o" / "notes.txt").write_text("mine")
    return ["tune", _tune_recipe(t), "--target", "cortex-m4", "--out", t / "o"]


def _export_foreign_dag(t: Path, mp) -> list:
    (t / "dags").mkdir()
    (t / "dags" / "edgekit_tiny.py").write_text("# someone else's DAG\n")
    return ["export", "airflow", _bad_data_recipe(t), "--out", t / "dags"]


def _export_foreign_recipe(t: Path, mp) -> list:
    (t / "dags").mkdir()
    (t / "dags" / "edgekit_tiny.recipe.yaml").write_text("name: mine\n")
    return ["export", "airflow", _bad_data_recipe(t), "--out", t / "dags"]


# (id, build(tmp, monkeypatch) -> argv, exit code, fragment of the one error line)
OUT_POLICY = [
    ("root", lambda t, mp: ["run", _bad_data_recipe(t), "--out", "/"], 2, "file system root"),
    ("root with --force", lambda t, mp: ["run", _bad_data_recipe(t), "--out", "/", "--force"], 2,
     "file system root"),
    ("home folder", _home, 2, "your home folder"),
    ("checkout root", lambda t, mp: ["run", _bad_data_recipe(t), "--out", ROOT, "--force"], 2, "edgekit checkout"),
    ("above the checkout", lambda t, mp: ["run", _bad_data_recipe(t), "--out", ROOT.parent], 2, "edgekit checkout"),
    ("above the working directory", _above_cwd, 2, "above the working directory"),
    ("above the recipe's folder", _above_recipe, 2, "or a folder above it"),
    ("a file", lambda t, mp: ["run", _bad_data_recipe(t), "--out", _touch(t / "f")], 2, "is a file"),
    ("a symlink to a file", lambda t, mp: ["run", _bad_data_recipe(t), "--out", _link(t / "l", _touch(t / "f"))], 2,
     "is a file"),
    ("non-empty, no manifest", lambda t, mp: _nonempty(t, mp), 2, "holds no edgekit run (manifest.json)"),
    ("non-empty, no manifest, --force", lambda t, mp: _nonempty(t, mp, "--force"), 2, "--force included"),
    ("non-empty, no manifest, --resume", lambda t, mp: _nonempty(t, mp, "--resume"), 2, "not empty"),
    ("manifest is a JSON list", lambda t, mp: _manifest(t, "[1, 2]"), 1, "holds a JSON list, not an object"),
    ("manifest is a JSON string", lambda t, mp: _manifest(t, '"x"', "--resume"), 1, "JSON str"),
    ("manifest of another schema", lambda t, mp: _manifest(t, '{"schema": "other/1"}', "--resume"), 1,
     "schema 'other/1'"),
    ("manifest stages not an object", lambda t, mp: _manifest(t, json.dumps(
        {"schema": "edgekit.manifest/1", "stages": [1]}), "--resume"), 1, "'stages' is not an object"),
    ("manifest is a folder", lambda t, mp: (t / "o" / "manifest.json").mkdir(parents=True) or
     ["run", _bad_data_recipe(t), "--out", t / "o"], 1, "not a regular file"),
    ("train into a non-empty folder", lambda t, mp: ["train", *_nonempty(t, mp)[1:]], 2, "holds no"),
    ("tune into a non-empty folder", _tune, 2, "holds no edgekit tune study"),
    ("tune --out /", lambda t, mp: ["tune", _tune_recipe(t), "--target", "cortex-m4", "--out", "/"], 2,
     "file system root"),
    ("export airflow over a foreign DAG", _export_foreign_dag, 2, "not written by edgekit"),
    ("export airflow over a foreign recipe copy", _export_foreign_recipe, 2, "beside no DAG that edgekit wrote"),
    ("export airflow --out /", lambda t, mp: ["export", "airflow", _bad_data_recipe(t), "--out", "/"], 2,
     "file system root"),
    ("stage command on a folder without a run", lambda t, mp: ["convert", _mkdir(t / "empty")], 1,
     "not a run directory"),
    ("report of a folder without a run", lambda t, mp: ["report", _mkdir(t / "empty"), "--out", t / "x.html"], 1,
     "not a run directory"),
]


def _touch(p: Path) -> Path:
    p.write_text("x")
    return p


def _link(p: Path, to: Path) -> Path:
    p.symlink_to(to)
    return p


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.mark.parametrize("case,build,code,fragment", OUT_POLICY, ids=[c[0] for c in OUT_POLICY])
def test_out_policy(tmp_path, monkeypatch, case, build, code, fragment):
    work = tmp_path / "w"
    work.mkdir()
    argv = build(work, monkeypatch)
    before = _tree(tmp_path)
    res = _cli(*argv)
    errors = [ln for ln in res.output.strip().splitlines() if ln.lower().startswith("error: ")]
    assert res.exit_code == code, f"{case}: exit {res.exit_code}: {res.output}"
    assert len(errors) == 1 and "Traceback" not in res.output, res.output   # click's usage errors count too
    assert fragment in errors[0], errors[0]
    after = _tree(tmp_path)
    assert {k: v for k, v in before.items() if after.get(k) != v} == {}, "a refused command changed files"


@pytest.mark.parametrize("text", ["[1, 2]", '"x"', "{}", '{"schema": "edgekit.manifest/1", "stages": 3}', "{oops"])
def test_force_recovers_from_a_broken_manifest(tmp_path, text):
    """--force starts over in a folder whose manifest is unusable; user files there stay."""
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "manifest.json").write_text(text)
    (tmp_path / "o" / "mine.txt").write_text("mine")
    res = _cli("run", _bad_data_recipe(tmp_path), "--out", tmp_path / "o", "--force")
    assert res.exit_code == 3, res.output          # it got past the manifest, to the bad data
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["schema"] == "edgekit.manifest/1" and manifest["recipe"] == "tiny"
    assert (tmp_path / "o" / "mine.txt").read_text() == "mine"


def test_empty_or_new_out_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        res = _cli("run", _bad_data_recipe(tmp_path), "--out", out)
        assert res.exit_code == 3 and "line 3" in res.output, res.output   # refused for its data, not its --out
        assert (out / "manifest.json").is_file()


# ----------------------------------------------------------------------------- DESTRUCTIVE


def _force_failing(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
    return ["run", _bad_data_recipe(recipe.parent), "--out", c.out, "--force"], 3


def _force_other_recipe_name(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
    return ["run", _bad_data_recipe(recipe.parent, name="other"), "--out", c.out, "--force"], 3


def _failed_resume(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
    return ["run", _bad_data_recipe(recipe.parent), "--out", c.out, "--resume"], 3


def _eval_symlinked_out(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
    """eval/ replaced by a symlink to a folder outside: rewriting eval/eval.npz there is refused."""
    import shutil

    shutil.rmtree(c.out / "eval")
    (c.out / "eval").symlink_to(c.outside / "eval")
    c.before = _tree(c.top)
    return ["convert", c.out, "--target", "mobile"], 1


def _target_symlinked_out(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
    """targets/mobile replaced by a symlink to a folder outside: convert removes the link, not
    what it points to, and writes a fresh folder."""
    import shutil

    shutil.rmtree(c.out / "targets" / "mobile")
    (c.out / "targets" / "mobile").symlink_to(c.outside)
    c.before = _tree(c.top)
    return ["convert", c.out, "--target", "mobile"], 0


def _stages_symlinked_force(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
    """stages/ is a symlink to a folder outside (holding the user's copy): --force removes the
    link, not the folder it points to."""
    import shutil

    shutil.move(str(c.out / "stages"), str(c.outside / "stages"))
    (c.out / "stages").symlink_to(c.outside / "stages")
    return ["run", _bad_data_recipe(recipe.parent), "--out", c.out, "--force"], 3


def _manifest_symlinked_force(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
    """manifest.json and report.html are symlinks to the user's files: --force unlinks them."""
    import shutil

    for name in ("manifest.json", "report.html"):
        shutil.move(str(c.out / name), str(c.outside / name))
        (c.out / name).symlink_to(c.outside / name)
    return ["run", _bad_data_recipe(recipe.parent), "--out", c.out, "--force"], 3


def _interrupted_in_process(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
    """Ctrl-C in the middle of a stage (raised from inside it)."""
    from edgekit.pipeline import Run

    def boom(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "_report", boom)
    return ["report", c.out], 130


def _odd_target(name: str):
    def build(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
        prof = recipe.parent / "odd.yaml"
        prof.write_text(f"name: {json.dumps(name)}\nkind: mobile\nformats: [tflite-int8]\n")
        r = recipe.parent / "odd-recipe.yaml"
        r.write_text(recipe.read_text().replace("targets: [mobile, rpi4, cortex-m4]", "targets: [odd.yaml]"))
        return ["run", r, "--out", c.out, "--resume"], 2
    return build


def _odd_target_force(name: str):
    def build(c: Canaries, recipe: Path, monkeypatch) -> tuple[list, int]:
        argv, code = _odd_target(name)(c, recipe, monkeypatch)
        return argv + ["--force"], code
    return build


# (id, build(canaries, recipe, monkeypatch) -> (argv, exit code), names in --out edgekit may change)
DESTRUCTIVE = [
    ("--force, then a data failure", _force_failing, _RUN_OWN),
    ("--force with another recipe", _force_other_recipe_name, _RUN_OWN),
    ("--resume, then a data failure", _failed_resume, ("manifest.json", "recipe.resolved.yaml")),
    ("stages/ is a symlink out of the run, --force", _stages_symlinked_force, _RUN_OWN),
    ("manifest.json is a symlink out of the run, --force", _manifest_symlinked_force, _RUN_OWN),
    ("eval/ is a symlink out of the run", _eval_symlinked_out, ("manifest.json", "recipe.resolved.yaml")),
    ("targets/mobile is a symlink out of the run", _target_symlinked_out, _RUN_OWN),
    ("interrupted mid-stage (KeyboardInterrupt)", _interrupted_in_process, ("manifest.json", "recipe.resolved.yaml")),
    *[(f"target profile named {n!r}", _odd_target(n), ()) for n in ("../x", "/abs", "..", ".", "../../victim")],
    *[(f"target profile named {n!r}, --force", _odd_target_force(n), ()) for n in ("../x", "/abs", "..")],
]


@pytest.mark.parametrize("case,build,own", DESTRUCTIVE, ids=[c[0] for c in DESTRUCTIVE])
def test_destructive_paths_leave_canaries(finished_run, tmp_path, monkeypatch, case, build, own):
    top = tmp_path / "top"
    run = copy_run(finished_run, top / "beside")
    c = Canaries(top, run.out)
    c.plant_inside()
    argv, code = build(c, run.recipe_path, monkeypatch)
    c.before = _tree(top)   # with the recipe files the row wrote
    res = _cli(*argv)
    assert res.exit_code == code, f"{case}: exit {res.exit_code}: {res.output}"
    assert "Traceback" not in res.output
    c.assert_untouched(edgekit_may_change=own)
    assert (run.out / "user_notes.txt").read_text() == "mine\n"
    assert (run.out / "link_out").is_symlink() and (run.out / "file_link").is_symlink()


def test_failed_run_beside_canaries(tmp_path):
    """A run that fails (missing dataset) into a new folder touches nothing else."""
    top = tmp_path / "top"
    c = Canaries(top, top / "work" / "out")
    r = top / "work" / "missing.yaml"
    r.write_text("name: m\ndata: {source: 'npz:nope.npz'}\nstudent: null\nprune: null\nqat: null\n")
    c.before = _tree(top)
    res = _cli("run", r, "--out", c.out)
    assert res.exit_code in (2, 3) and "nope.npz" in res.output, res.output
    c.assert_untouched()


def test_remove_refuses_paths_outside_the_run(tmp_path):
    """The helper itself: names and symlinks that lead out of the root are refused."""
    from edgekit._io import remove, write_text
    from edgekit.errors import EdgekitError

    root = tmp_path / "run"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "f").write_text("keep")
    (root / "sub" / "link").symlink_to(tmp_path / "victim")
    for bad in (root / ".." / "victim", root / "sub" / ".." / ".." / "victim", tmp_path / "victim", root,
                root / ".", root / "sub" / "link" / "f", Path("/")):
        with pytest.raises(EdgekitError, match="outside the run directory"):
            remove(bad, root=root)
        with pytest.raises(EdgekitError, match="outside the run directory"):
            write_text(bad if bad != Path("/") else Path("/x"), "no", root=root)
    remove(root / "sub" / "link", root=root)         # the link itself goes, not what it points to
    assert (tmp_path / "victim" / "f").read_text() == "keep" and not (root / "sub" / "link").exists()
    with pytest.raises(EdgekitError, match="no run directory"):
        remove(root / "sub")


# ----------------------------------------------------------------------------- NAMES


def _profile(t: Path, name: str, file: str = "p.yaml", extra: str = "") -> str:
    (t / file).write_text(f"name: {json.dumps(name)}\nkind: mobile\nformats: [tflite-int8]\n{extra}")
    return file


# (id, recipe text for tmp, fragment of the error line)
NAMES = [
    *[(f"profile name {n!r}", lambda t, n=n: f"name: r\ntargets: [{_profile(t, n)}]\n", "is not a usable name")
      for n in ("../x", "/abs", "..", ".", "a/b", "-x", "x" * 65, "a..b", "", "a b", "a\nb", "ü")],
    *[(f"recipe name {n!r}", lambda t, n=n: f"name: {json.dumps(n)}\n", "is not a usable name")
      for n in ("..", ".", "../x", "-x", "x" * 65, "a/b")],
    ("two targets with one profile name", lambda t: f"name: r\ntargets: [mobile, {_profile(t, 'mobile2')}, "
     f"{_profile(t, 'mobile2', 'q.yaml')}]\n", "like targets.1"),
    ("the same target twice", lambda t: "name: r\ntargets: [rpi4, rpi4]\n", "like targets.0"),
    ("custom profile named like a built-in", lambda t: f"name: r\ntargets: [{_profile(t, 'rpi4')}]\n",
     "like the built-in profile"),
]


@pytest.mark.parametrize("case,build,fragment", NAMES, ids=[c[0] for c in NAMES])
def test_names_that_become_paths_are_checked_by_validate(tmp_path, case, build, fragment):
    r = tmp_path / "r.yaml"
    r.write_text(build(tmp_path))
    res = _cli("recipes", "validate", r)
    assert res.exit_code == 2, res.output
    assert fragment in res.output and str(r) in res.output, res.output
    assert "Traceback" not in res.output


def test_a_copy_of_a_builtin_profile_keeps_its_name(tmp_path):
    (tmp_path / "mobile.yaml").write_text((ROOT / "targets" / "mobile.yaml").read_text())
    r = tmp_path / "r.yaml"
    r.write_text("name: r\ntargets: [./mobile.yaml]\n")
    res = _cli("recipes", "validate", r)
    assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------------- FINGERPRINT


def _images(folder: Path) -> None:
    from PIL import Image

    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((4, 4, 3), 10 * i, np.uint8)).save(folder / c / f"{i}.png")


# (id, source, make(tmp), change(tmp)) -- each change keeps the path (and mostly the size)
FINGERPRINT = [
    ("npz, same size, other samples", "npz:d.npz",
     lambda t: np.savez(t / "d.npz", x=np.zeros((8, 3), "float32"), y=np.arange(8) % 2),
     lambda t: np.savez(t / "d.npz", x=np.ones((8, 3), "float32"), y=np.arange(8) % 2)),
    ("csv, one value changed", "csv:d.csv", lambda t: (t / "d.csv").write_text("a,label\n1,0\n2,1\n"),
     lambda t: (t / "d.csv").write_text("a,label\n1,0\n3,1\n")),
    ("images, one pixel changed", "images:imgs", lambda t: _images(t / "imgs"),
     lambda t: __import__("PIL.Image").Image.fromarray(np.full((4, 4, 3), 99, np.uint8)).save(t / "imgs/a/0.png")),
    ("images, a file renamed", "images:imgs", lambda t: _images(t / "imgs"),
     lambda t: (t / "imgs/a/0.png").rename(t / "imgs/a/9.png")),
    ("images, a file added", "images:imgs", lambda t: _images(t / "imgs"),
     lambda t: (t / "imgs/b/2.png").write_bytes((t / "imgs/b/0.png").read_bytes())),
    ("images, a file moved to another class", "images:imgs", lambda t: _images(t / "imgs"),
     lambda t: (t / "imgs/a/1.png").rename(t / "imgs/b/5.png")),
]


@pytest.mark.parametrize("case,source,make,change", FINGERPRINT, ids=[c[0] for c in FINGERPRINT])
def test_source_digest_follows_content(tmp_path, case, source, make, change):
    from edgekit.data import source_digest
    from edgekit.recipe import DataConfig

    make(tmp_path)
    cfg = DataConfig(source=source)
    first = source_digest(cfg, base=tmp_path)
    assert first == source_digest(cfg, base=tmp_path)       # stable
    change(tmp_path)
    assert source_digest(cfg, base=tmp_path) != first, case
    assert source_digest(DataConfig(source="digits"), base=tmp_path) is None


def test_resume_redoes_stages_when_the_data_file_changes(tmp_path, monkeypatch):
    """Through the pipeline: the teacher (stubbed: no training) is skipped on --resume while the
    npz is unchanged and redone once its samples change under the same path and size."""
    from edgekit.pipeline import Run

    calls = []

    def teacher(self):
        calls.append(1)
        out = self.out / "stages" / "teacher"
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.keras").write_bytes(b"stub")
        return self._stage_files("teacher"), {}

    monkeypatch.setattr(Run, "_train_teacher", teacher)
    monkeypatch.setattr("edgekit.preflight.run", lambda *a, **kw: None)
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1)).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4)
    r = tmp_path / "r.yaml"
    r.write_text("name: fp\ndata: {source: 'npz:d.npz'}\nteacher: {model: cnn_tiny, epochs: 1}\n"
                 "student: null\nprune: null\nqat: null\n")
    for argv, expect in ((["--until", "teacher"], 1), (["--until", "teacher", "--resume"], 1)):
        res = _cli("run", r, "--out", tmp_path / "o", *argv)
        assert res.exit_code == 0, res.output
        assert len(calls) == expect
    np.savez(tmp_path / "d.npz", x=x[::-1].copy(), y=np.arange(40) % 4)   # same path and size, other order
    res = _cli("run", r, "--out", tmp_path / "o", "--until", "teacher", "--resume")
    assert res.exit_code == 0, res.output
    assert len(calls) == 2


# ----------------------------------------------------------------------------- INJECTION


HOSTILE = ['1; touch pwned; echo', '$(touch pwned)', '`touch pwned`', "1 && touch pwned", "1\ntouch pwned",
           "10.5", True, [1], None, -1, 10**9, "10"]


@pytest.mark.parametrize("key", ["warmup_runs", "timed_runs", "num_threads"])
@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v) for v in HOSTILE])
def test_deploy_takes_only_integers_from_eval_json(finished_run, tmp_path, key, value):
    """Values of eval/<target>.json reach the device's command line only as integers in range."""
    from edgekit.deploy import make_plan
    from edgekit.errors import EdgekitError

    run = copy_run(finished_run, tmp_path).out
    path = run / "eval" / "rpi4.json"
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))
    if value is None:       # absent/null: the default
        plan = make_plan(run, "pi@localhost", target="rpi4")
        assert all(a.isdigit() for a in plan.evaluator_args[1::2])
        return
    with pytest.raises(EdgekitError, match=f"{key} is .*expected an integer"):
        make_plan(run, "pi@localhost", target="rpi4")


def test_deploy_quotes_every_remote_argument(finished_run, tmp_path):
    import dataclasses

    from edgekit.deploy import make_plan

    plan = make_plan(copy_run(finished_run, tmp_path).out, "pi@localhost", target="rpi4",
                     python="/opt/my python/bin/python3; touch pwned", remote_dir="/tmp/a b;touch pwned")
    plan = dataclasses.replace(plan, evaluator_args=("--warmup", "1; touch pwned", "--runs", "$(id)"))
    cmd = plan.commands(measured_on="rpi:host;touch pwned")["evaluate"]
    words = shlex.split(cmd)
    for hostile in ("1; touch pwned", "$(id)", "rpi:host;touch pwned", "/opt/my python/bin/python3; touch pwned",
                    "/tmp/a b;touch pwned"):
        assert any(hostile in w for w in words), (hostile, words)
    assert "touch" not in [w for w in words]   # never a word of its own


HOSTILE_NAMES = ['q"""x', "q'''x", "new\nline", 'back\\slash', "q\"x'y", "{braces}", "uni\u2028code", "tab\tx",
                 '"""; import os; os.system("touch pwned"); """']


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n) for n in HOSTILE_NAMES])
def test_export_airflow_dag_carries_names_as_values(tmp_path, name):
    """A recipe file whose name holds quotes, newlines or code gives a DAG that parses and holds
    the exact name in its docstring, as text."""
    from edgekit.export_airflow import export_airflow

    src = tmp_path / f"{name}.yaml"
    src.write_text("name: tiny\nstudent: null\nprune: null\nqat: null\ntargets: [mobile]\n")
    res = export_airflow(src, tmp_path / "dags")
    text = res.dag_file.read_text()
    tree = ast.parse(text)
    assert src.name in ast.get_docstring(tree, clean=False)
    assert not any(isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "system" for n in ast.walk(tree))
    again = export_airflow(src, tmp_path / "dags")       # its own DAG is replaced
    assert again.dag_file.read_text() == text


MARKUP = ["<script>alert(1)</script>", "a|b", "`code`", "x & y", "line\nbreak", "<img src=x onerror=alert(1)>",
          "# heading", "**bold** <b>"]


@pytest.mark.parametrize("value", MARKUP, ids=[repr(m) for m in MARKUP])
def test_report_md_escapes_names(finished_run, value):
    """Names from a report (recipe, targets, stages, the device's host name) are text in report.md:
    no raw HTML, no broken table rows, no line breaks inside a cell or heading."""
    from edgekit.report import render_markdown

    report = json.loads(json.dumps(finished_run.report))
    report["recipe"] = value
    report["targets"][0]["name"] = value
    report["targets"][0]["measured_on"] = f"ssh:{value}"
    report["stages"][0]["name"] = value
    md = render_markdown(report)
    assert "<script" not in md and "<img" not in md and "<b>" not in md
    heading = md.splitlines()[0]
    assert heading.startswith("# edgekit report: ") and "\n" not in heading
    for block in md.split("\n\n"):
        rows = [ln for ln in block.splitlines() if ln.startswith("|")]
        if rows:
            widths = {len(_cells(r)) for r in rows}
            assert len(widths) == 1, block


def _cells(row: str) -> list[str]:
    """The cells of a Markdown table row, honouring escaped pipes."""
    import re

    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


# ----------------------------------------------------------------------------- NONE_METRICS


_REG = {"task": "regression", "accuracy": None, "mae": 0.5, "latency_ms": {"p50": 0.1}, "measured_on": "ssh:h",
        "device": {"machine": "x86_64"}, "budget": {"ok": True, "violations": []}}

# (id, result dict, fragments of the line)
NONE_METRICS = [
    ("regression", _REG, ["mae 0.5000", "p50 0.100 ms", "budget ok"]),
    ("anomaly", {**_REG, "task": "anomaly", "mae": None, "roc_auc": 0.75}, ["roc_auc 0.7500"]),
    ("metrics only under 'metrics'", {**_REG, "mae": None, "metrics": {"mae": 0.25, "rmse": 1.0}}, ["mae 0.2500"]),
    ("anomaly under 'metrics'", {**_REG, "mae": None, "metrics": {"roc_auc": 0.5}}, ["roc_auc 0.5000"]),
    ("nothing measured", {**_REG, "mae": None, "latency_ms": None, "device": None}, ["accuracy n/a", "p50 n/a"]),
    ("latency without p50", {**_REG, "latency_ms": {}}, ["p50 n/a"]),
    ("classification", {**_REG, "accuracy": 0.9, "mae": None}, ["accuracy 0.9000"]),
]


@pytest.mark.parametrize("case,result,fragments", NONE_METRICS, ids=[c[0] for c in NONE_METRICS])
def test_deploy_summary_line_with_missing_metrics(case, result, fragments):
    from edgekit.deploy import summary_line

    line = summary_line("rpi4", result)
    for f in fragments:
        assert f in line, line


def test_run_summary_with_missing_metrics(finished_run):
    from edgekit.ui import run_summary

    report = json.loads(json.dumps(finished_run.report))
    report["task"] = "regression"
    for entry in report["stages"] + report["targets"]:
        entry.update(accuracy=None, mae=None, size_bytes=None, sparsity=None, arena_bytes=None, latency_ms=None)
    text = run_summary(report)    # a dash where nothing was measured, no exception
    assert "MAE" in text and all(t["name"] in text for t in report["targets"]) and "–" in text


# ----------------------------------------------------------------------------- INTERRUPTED


def _set_running(out: Path, stage: str) -> None:
    m = json.loads((out / "manifest.json").read_text())
    m["stages"][stage]["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(m))


# (id, stage left running, argv(out) -> command, exit code, fragment of the output)
INTERRUPTED = [
    ("report after a killed convert", "convert:mobile", lambda o: ["report", o], 1,
     "earlier step 'convert:mobile' was interrupted"),
    ("report after a killed teacher", "teacher", lambda o: ["report", o], 1, "'teacher' was interrupted"),
    ("eval of the target whose convert was killed", "convert:mobile",
     lambda o: ["eval", o, "--target", "mobile"], 1, "was interrupted"),
]


@pytest.mark.parametrize("case,stage,argv,code,fragment", INTERRUPTED, ids=[c[0] for c in INTERRUPTED])
def test_a_stage_left_running_is_not_finished(finished_run, tmp_path, case, stage, argv, code, fragment):
    out = copy_run(finished_run, tmp_path).out
    _set_running(out, stage)
    res = _cli(*argv(out))
    assert res.exit_code == code, res.output
    assert fragment in res.output, res.output
    entry = json.loads((out / "manifest.json").read_text())["stages"][stage]
    assert entry["status"] == "failed" and entry["error"].startswith("interrupted"), entry


def test_manifest_is_current_never_for_running(finished_run):
    from edgekit.manifest import Manifest

    m = Manifest.load(finished_run.out)
    data = json.loads(json.dumps(m.data))
    data["stages"]["teacher"]["status"] = "running"
    m2 = Manifest(finished_run.out, data)
    assert not m2.is_current("teacher", data["stages"]["teacher"]["fingerprint"])
    assert m2.interrupted() == ["teacher"]


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume(tmp_path):
    """A real process killed while training: the manifest says "running"; the next run marks it
    interrupted and redoes it, and nothing beside the run changes."""
    top = tmp_path / "top"
    c = Canaries(top, top / "w" / "out")
    r = top / "w" / "r.yaml"
    r.write_text("name: k\nteacher: {model: cnn_small, epochs: 200}\nstudent: null\nprune: null\nqat: null\n")
    c.before = _tree(top)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "run", str(r), "--out", str(c.out), "--until",
                             "teacher"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            m = c.out / "manifest.json"
            if m.is_file() and '"running"' in m.read_text():
                break
            time.sleep(0.2)
        else:
            pytest.fail("the teacher never started")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((c.out / "manifest.json").read_text())["stages"]["teacher"]["status"] == "running"
    res = _cli("report", c.out)
    assert res.exit_code == 1 and "was interrupted" in res.output, res.output
    c.assert_untouched(edgekit_may_change=_RUN_OWN)


# ----------------------------------------------------------------------------- report --out FILE

# (id, what FILE holds before (None: absent; "link": a symlink to a user file), exit code)
REPORT_OUT = [
    ("new file", None, 0),
    ("an edgekit page", "edgekit", 0),
    ("a user's page", "<!DOCTYPE html>\n<html><head><title>My notes</title></head></html>\n", 2),
    ("a user's text", "notes\n", 2),
    ("a symlink to a user file", "link", 2),
]


@pytest.mark.parametrize("case,before,code", REPORT_OUT, ids=[c[0] for c in REPORT_OUT])
def test_report_out_overwrites_only_edgekit_pages(finished_run, tmp_path, case, before, code):
    """`edgekit report A B --out FILE` (no TensorFlow, nothing rerun) replaces only a page it wrote."""
    target = tmp_path / "page.html"
    user = tmp_path / "user.txt"
    user.write_text("mine\n")
    if before == "edgekit":
        target.write_text((finished_run.out / "report.html").read_text())
    elif before == "link":
        target.symlink_to(user)
    elif before is not None:
        target.write_text(before)
    snapshot = target.read_bytes() if target.exists() else None
    res = _cli("report", finished_run.out, finished_run.out, "--out", target)
    assert res.exit_code == code, res.output
    assert user.read_text() == "mine\n"
    if code:
        assert "edgekit does not overwrite it" in res.output or "not a regular file" in res.output, res.output
        assert (target.read_bytes() if target.exists() else None) == snapshot
    else:
        assert target.read_text().startswith("<!DOCTYPE html>")


def test_lock_file_symlink_is_not_followed(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "r").out
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (out / ".edgekit.lock").unlink()
    (out / ".edgekit.lock").symlink_to(victim)
    res = _cli("report", out)
    assert res.exit_code == 1 and "error: " in res.output and "Traceback" not in res.output, res.output
    assert victim.read_text() == "mine\n"
