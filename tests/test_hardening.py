"""Bad input and faults, table-driven through the CLI: each gets one line naming what is wrong,
the documented exit code (2 bad input, 3 data, 5 conversion, 6 budget, 7 device, 1 runtime
failure), and no traceback without --debug. Property-based tests fuzz the recipe loader and the
evaluator's input handling. Faults that need a trained run (SIGINT/SIGKILL mid-stage, an op a
target cannot run, an impossible budget, SSH failures) are covered in test_interrupt.py,
test_convert.py and test_deploy.py; docs/troubleshooting.md lists them all.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main

GOOD = "name: h\nteacher: {{model: cnn_tiny, epochs: 1}}\nstudent: null\nprune: null\nqat: null\ntargets: [rpi4]\n{extra}"


def _recipe(tmp: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


def _npz(tmp: Path, **arrays) -> str:
    np.savez(tmp / "d.npz", **arrays)
    return f"data: {{source: 'npz:{tmp / 'd.npz'}'}}\n"


def _tflite(tmp: Path, blob: bytes, name="m.tflite") -> Path:
    p = tmp / name
    p.write_bytes(blob)
    return p


def _eval_npz(tmp: Path) -> Path:
    np.savez(tmp / "e.npz", x=np.zeros((4, 8, 8, 1), "float32"), y=np.zeros(4, "int64"))
    return tmp / "e.npz"


# (id, build(tmp) -> argv, expected exit code, expected fragment of the one line)
CASES = [
    ("yaml syntax", lambda t: ["run", str(_recipe(t, "name: x\nteacher: {epochs: 3\n")), "--out", str(t / "o")], 2,
     "not valid YAML (line 3"),
    ("yaml not utf-8", lambda t: ["run", str(_recipe(t, b"name: caf\xe9\n")), "--out", str(t / "o")], 2, "not a text file"),
    ("yaml alias bomb", lambda t: ["recipes", "validate", str(_recipe(t, "name: x\na: &a [1]\n" + "".join(
        f"b{i}: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" for i in range(12))))], 2, "possible alias bomb"),
    ("huge number", lambda t: ["recipes", "validate", str(_recipe(t, "name: x\nteacher: {epochs: 1e400}\n"))], 2,
     "teacher.epochs"),
    ("misspelled key", lambda t: ["run", str(_recipe(t, "name: x\nteachr: {}\n")), "--out", str(t / "o")], 2,
     "did you mean 'teacher'"),
    ("wrong type", lambda t: ["run", str(_recipe(t, "name: x\nseed: [1]\n")), "--out", str(t / "o")], 2, "seed:"),
    ("out of range", lambda t: ["run", str(_recipe(t, "name: x\nprune: {target_sparsity: 1.5}\n")), "--out",
                                str(t / "o")], 2, "prune.target_sparsity: 1.5 is out of range"),
    ("recipe missing", lambda t: ["run", str(t / "none.yaml"), "--out", str(t / "o")], 2, "recipe file not found"),
    ("recipe is a folder", lambda t: ["recipes", "show", str(t)], 2, "recipe file not found"),
    ("unknown target", lambda t: ["run", str(_recipe(t, "name: x\ntargets: [esp32]\n")), "--out", str(t / "o")], 2,
     "unknown target 'esp32'"),
    ("unknown model", lambda t: ["run", str(_recipe(t, GOOD.format(extra="").replace("cnn_tiny", "cnn_huge"))),
                                 "--out", str(t / "o")], 2, "unknown model 'cnn_huge'"),
    ("dataset missing", lambda t: ["run", str(_recipe(t, GOOD.format(extra=f"data: {{source: 'npz:{t}/no.npz'}}\n"))),
                                   "--out", str(t / "o")], 3, "dataset file not found"),
    ("dataset empty file", lambda t: ["run", str(_recipe(t, GOOD.format(extra=(
        (t / "e.npz").write_bytes(b""), f"data: {{source: 'npz:{t}/e.npz'}}\n")[1]))), "--out", str(t / "o")], 3,
     "not a readable .npz file"),
    ("dataset NaN", lambda t: ["run", str(_recipe(t, GOOD.format(extra=_npz(
        t, x=np.full((30, 8, 8, 1), np.nan), y=np.arange(30) % 3)))), "--out", str(t / "o")], 3, "NaN or inf"),
    ("labels out of range", lambda t: ["run", str(_recipe(t, GOOD.format(extra=_npz(
        t, x=np.zeros((30, 8, 8, 1)), y=np.arange(30) % 3 - 1)))), "--out", str(t / "o")], 3, "labels out of range"),
    ("empty class", lambda t: ["run", str(_recipe(t, GOOD.format(extra=_npz(
        t, x=np.zeros((30, 8, 8, 1)), y=(np.arange(30) % 2) * 2)))), "--out", str(t / "o")], 3, "have no samples"),
    ("wrong-shape dataset", lambda t: ["run", str(_recipe(t, GOOD.format(extra=_npz(
        t, x=np.zeros((30, 16)), y=np.arange(30) % 3)))), "--out", str(t / "o")], 2, "takes inputs of rank 3"),
    ("pickled dataset", lambda t: ["run", str(_recipe(t, GOOD.format(extra=_npz(
        t, x=np.array([{"a": 1}] * 30, dtype=object), y=np.arange(30) % 3)))), "--out", str(t / "o")], 3,
     "not a readable .npz file"),
    ("out is a file", lambda t: ["run", str(_recipe(t, GOOD.format(extra=""))), "--out",
                                 str((t / "f").write_text("x") and t / "f")], 2, "is a file"),
    ("out holds a run of another recipe", lambda t: ["run", str(_recipe(t, GOOD.format(extra=""))), "--out",
                                                     str(_other_run(t)), "--resume"], 1, "holds a run of recipe 'other'"),
    ("out holds a corrupt manifest", lambda t: ["run", str(_recipe(t, GOOD.format(extra=""))), "--out",
                                                str(_corrupt_run(t)), "--resume"], 1, "unreadable or not an edgekit manifest"),
    ("stage command on a non-run", lambda t: ["prune", str(t)], 1, "not a run directory"),
    ("--only before earlier stages", lambda t: ["run", str(_recipe(t, GOOD.format(extra=""))), "--out", str(t / "o"),
                                                "--only", "convert"], 1, "is not finished or out of date"),
    ("report on a non-run", lambda t: ["report", str(t)], 1, "not a run directory (no manifest.json)"),
    ("compare on a non-run", lambda t: ["eval", str(t), "--compare"], 1, "not a run directory"),
    ("target profile bad kind", lambda t: ["targets", "show", str(_recipe(t, "name: b\nkind: fpga\n", "b.yaml"))], 2,
     "kind: unknown target kind 'fpga'; known kinds: mcu, mobile, rpi"),
    ("data path escapes through a symlink", lambda t: ["run", str(_escape(t, "data")), "--out", str(t / "o")], 2,
     "data.source 'data/d.npz' leads through a symlink to"),
    ("target path escapes through a symlink", lambda t: ["recipes", "validate", str(_escape(t, "target"))], 2,
     "target profile 'boards/b.yaml' leads through a symlink to"),
    ("deploy to a host that is down", lambda t: ["deploy", str(_fake_run(t)), "--host", "pi@127.0.0.1", "--port",
                                                 str(_free_port()), "--timeout", "5"], 7,
     ": connection refused; is sshd running on the device and is the port right (--port)?"),
]


def _escape(t: Path, what: str) -> Path:
    """A recipe in t/proj whose relative data (or target) path leads, through a symlink inside
    proj, to t/outside: a place the recipe does not name."""
    (t / "outside").mkdir()
    (t / "proj").mkdir()
    np.savez(t / "outside" / "d.npz", x=np.zeros((30, 8, 8, 1)), y=np.arange(30) % 3)
    (t / "outside" / "b.yaml").write_text("name: b\nkind: mcu\n")
    (t / "proj" / ("data" if what == "data" else "boards")).symlink_to(t / "outside")
    extra = "data: {source: 'npz:data/d.npz'}\n" if what == "data" else ""
    text = GOOD.format(extra=extra)
    if what == "target":
        text = text.replace("targets: [rpi4]", "targets: [boards/b.yaml]")
    return _recipe(t / "proj", text)


def _other_run(t: Path) -> Path:
    (t / "other").mkdir()
    (t / "other" / "manifest.json").write_text('{"schema": "edgekit.manifest/1", "recipe": "other", "stages": {}}')
    return t / "other"


def _corrupt_run(t: Path) -> Path:
    (t / "bad").mkdir()
    (t / "bad" / "manifest.json").write_text("{not json")
    return t / "bad"


def _fake_run(t: Path) -> Path:
    """A run folder with a Pi bundle (no model needed: the connection fails first)."""
    run = t / "run"
    (run / "targets" / "rpi4" / "bundle").mkdir(parents=True)
    for f in ("model.tflite", "evaluate.py", "eval.npz", "requirements.txt", "run.sh"):
        (run / "targets" / "rpi4" / "bundle" / f).write_text("x")
    (run / "manifest.json").write_text('{"schema": "edgekit.manifest/1", "recipe": "r", "stages": {}}')
    (run / "report.json").write_text('{"schema": "edgekit.report/1", "targets": [{"name": "rpi4", "kind": "rpi"}]}')
    return run


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case,build,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_and_exit_code(tmp_path, case, build, code, fragment):
    res = CliRunner().invoke(main, build(tmp_path))
    out = res.output.strip()
    assert res.exit_code == code, f"{case}: exit {res.exit_code}: {out}"
    assert "Traceback" not in out
    assert fragment in out, out
    if code != 2:  # click's usage errors (exit 2) add a "Try --help" line; ours are one line
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], out
    assert not (tmp_path / "o" / "stages").exists(), "no stage ran"


EVAL_CASES = [
    ("truncated tflite", lambda t, good: ["--model", str(_tflite(t, good.read_bytes()[:200])), "--data", str(_eval_npz(t))],
     5, "evaluate.py: error:"),
    ("random bytes tflite", lambda t, good: ["--model", str(_tflite(t, os.urandom(4096))), "--data", str(_eval_npz(t))],
     5, "evaluate.py: error:"),
    ("onnx where tflite expected", lambda t, good: ["--model", str(_tflite(t, b"\x08\x07\x12\x04onnx" * 50, "m.tflite")),
                                                   "--data", str(_eval_npz(t))], 5, "evaluate.py: error:"),
    ("input shape mismatch", lambda t, good: ["--model", str(good), "--data", str(
        (np.savez(t / "s.npz", x=np.zeros((4, 5, 5, 1), "float32"), y=np.zeros(4, "int64")), t / "s.npz")[1])],
     3, "evaluate.py: error:"),
    ("data missing", lambda t, good: ["--model", str(good), "--data", str(t / "none.npz")], 3, "evaluate.py: error:"),
    ("unknown runtime", lambda t, good: ["--model", str(good), "--data", str(_eval_npz(t)), "--runtime", "tvm"], 2,
     "evaluate.py: error: argument --runtime: invalid choice: 'tvm'"),
]


@pytest.mark.parametrize("case,build,code,fragment", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_evaluator_bad_input(tmp_path, tiny_models, case, build, code, fragment):
    from edgekit.ondevice import evaluate as ev

    proc = subprocess.run([sys.executable, ev.__file__, *build(tmp_path, tiny_models.int8_tflite)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EFBIG], ids=["ENOSPC", "EFBIG"])
def test_a_full_disk_in_a_stage_is_one_line_and_resume_finishes(finished_run, tmp_path, monkeypatch, err):
    """In process, on a copy of the session's finished run: the report stage's write fails as a
    full disk (or a file-size limit) makes it fail; one line, exit 1, the manifest names the
    failed stage, the finished ones are kept, and the same command without the fault finishes.
    The real file-size limit on a real run is the slow test below."""
    import edgekit.report as rep
    from conftest import copy_run

    run = copy_run(finished_run, tmp_path)
    before = json.loads((run.out / "manifest.json").read_text())["stages"]

    def full(out, report):
        raise OSError(err, os.strerror(err), str(out / "report.html"))

    monkeypatch.setattr(rep, "write_reports", full)
    res = CliRunner().invoke(main, ["--quiet", "report", str(run.out)])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (f"error: {run.out / 'report.html'}: {os.strerror(err)}; "
                                            "finished stages are kept"), lines
    after = json.loads((run.out / "manifest.json").read_text())["stages"]
    assert after["report"]["status"] == "failed"
    assert {k: v for k, v in after.items() if k != "report"} == {k: v for k, v in before.items() if k != "report"}
    monkeypatch.undo()
    res = CliRunner().invoke(main, ["--quiet", "report", str(run.out)])
    assert res.exit_code == 0, res.output
    assert json.loads((run.out / "manifest.json").read_text())["stages"]["report"]["status"] == "done"


@pytest.mark.slow
def test_no_space_left_is_one_line_and_keeps_finished_stages(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) makes the first large write fail: one line, exit 1,
    the manifest says which stage failed, and a resume without the limit finishes."""
    recipe = _recipe(tmp_path, GOOD.format(extra=""))
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (8_000, 8_000));"
            "from edgekit.cli import main; sys.argv = ['edgekit', '-q', 'run', sys.argv[1], '--out', sys.argv[2]]; main()")
    proc = subprocess.run([sys.executable, "-c", code, str(recipe), str(tmp_path / "o")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "File too large" in lines[0], proc.stderr[-2000:]
    assert "finished stages are kept" in lines[0]
    assert "Traceback" not in proc.stderr
    stages = json.loads((tmp_path / "o" / "manifest.json").read_text())["stages"]
    assert "failed" in {e["status"] for e in stages.values()}, stages
    resumed = subprocess.run([sys.executable, "-m", "edgekit.cli", "-q", "run", str(recipe), "--out",
                              str(tmp_path / "o"), "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (tmp_path / "o" / "report.json").is_file()


def test_recipe_paths_follow_symlinks_only_inside_the_recipe_folder(tmp_path, monkeypatch):
    from edgekit.errors import RecipeError
    from edgekit.recipe import recipe_relative

    proj, outside = tmp_path / "proj", tmp_path / "outside"
    (proj / "data").mkdir(parents=True)
    outside.mkdir()
    (proj / "data" / "d.npz").write_bytes(b"x")
    (outside / "o.npz").write_bytes(b"x")
    (proj / "alias").symlink_to(proj / "data")                 # a symlink inside the folder: fine
    (proj / "escape").symlink_to(outside)                      # leads out: refused
    assert recipe_relative("alias/d.npz", proj, "data.source") == proj / "alias" / "d.npz"
    assert recipe_relative("../outside/o.npz", proj, "data.source") == proj / "../outside/o.npz"  # named
    assert recipe_relative(str(outside / "o.npz"), proj, "data.source") == outside / "o.npz"    # named
    (proj / "link.npz").symlink_to(outside / "o.npz")
    for name in ("escape/o.npz", "link.npz"):
        with pytest.raises(RecipeError, match=f"data.source '{name}' leads through a symlink to {outside}"):
            recipe_relative(name, proj, "data.source")
    monkeypatch.chdir(proj)                                    # not under the recipe: relative to the cwd,
    with pytest.raises(RecipeError, match="outside"):           # checked the same way
        recipe_relative("escape/o.npz", tmp_path / "elsewhere", "data.source")


def test_read_only_out_is_one_line_and_writes_nothing(tmp_path):
    """--out inside a folder that cannot be written. Root ignores permissions, so under root the
    folder is a read-only tmpfs mount (EROFS); elsewhere a 0555 folder (EACCES)."""
    recipe = _recipe(tmp_path, GOOD.format(extra=""))
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                               capture_output=True, text=True)
        if mount.returncode != 0:
            pytest.skip(f"running as root and cannot mount a read-only tmpfs: {mount.stderr.strip()}")
        reason = "Read-only file system"
    else:
        ro.chmod(0o555)
        reason = "Permission denied"
    try:
        for out in (ro, ro / "run"):
            proc = subprocess.run([sys.executable, "-m", "edgekit.cli", "run", str(recipe), "--out", str(out)],
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 1, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {ro}") and reason in lines[0], lines
            assert list(ro.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=True)
        else:
            ro.chmod(0o755)


# ------------------------------------------------------------------------------ property-based

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                       max_leaves=12)
_keys = st.sampled_from(["name", "seed", "data", "teacher", "student", "prune", "qat", "convert", "targets",
                         "evaluate", "task", "features", "x"])


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(_keys, _values, max_size=6))
def test_fuzz_recipe_loader_raises_only_recipe_errors(tmp_path, doc):
    import yaml

    from edgekit.errors import RecipeError
    from edgekit.recipe import load_recipe

    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(doc))
    try:
        load_recipe(p)
    except RecipeError as exc:
        assert str(exc).startswith(str(p)) and "Traceback" not in str(exc)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_fuzz_recipe_text_raises_only_recipe_errors(tmp_path, text):
    from edgekit.errors import RecipeError
    from edgekit.recipe import load_recipe

    p = tmp_path / "fuzz.yaml"
    p.write_text(text)
    try:
        load_recipe(p)
    except RecipeError:
        pass


_arrays = st.one_of(
    st.none(), st.integers(), st.text(max_size=5),
    st.builds(lambda shape, kind: np.zeros(shape, dtype=kind),
              st.lists(st.integers(0, 4), max_size=4).map(tuple),
              st.sampled_from(["float32", "float64", "int64", "int8", "bool", "complex64", "U3"])),
    st.builds(lambda n: np.full((n, 8, 8, 1), np.nan, "float32"), st.integers(0, 3)),
)


@settings(deadline=None)
@given(x=_arrays, y=_arrays, ref=_arrays)
def test_fuzz_evaluator_input_raises_only_documented_errors(x, y, ref):
    from edgekit.ondevice import evaluate as ev

    try:
        ev._check_data(x, y, ref)  # noqa: SLF001 - the evaluator's input gate
    except ev.EvaluationError:
        pass
