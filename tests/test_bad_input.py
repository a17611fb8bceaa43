"""Bad data, bad models and bad recipes (issue 20): table-driven, one row per case, each through
the command a user runs. Every row asserts the exit code, that the one error line names the file,
key or value and the fix, and that nothing crashed (no traceback, no signal). No training: the
evaluator rows reuse the session's ``tiny_models`` and two tiny models built here.

Tables: DATA_CASES (``edgekit run`` refuses data before native code sees it, exit 3),
EVAL_CASES (``evaluate.py`` refuses what it cannot score honestly), RECIPE_CASES
(``edgekit recipes validate`` catches what is knowable without training, exit 2).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main

EVALUATOR = Path(__file__).resolve().parent.parent / "edgekit" / "ondevice" / "evaluate.py"
GOOD = ("name: h\nteacher: {{model: {model}, epochs: 1}}\nstudent: null\nprune: null\nqat: null\n"
        "targets: [rpi4]\n{extra}")


def _recipe(t: Path, extra: str = "", model: str = "cnn_tiny", text: str | None = None) -> str:
    p = t / "r.yaml"
    p.write_text(text if text is not None else GOOD.format(model=model, extra=extra))
    return str(p)


def _npz(t: Path, name: str = "d.npz", **arrays) -> str:
    np.savez(t / name, **arrays)
    return f"data: {{source: 'npz:{name}'}}\n"


def _csv(t: Path, text: str, *, bom: bool = False, name: str = "d.csv") -> str:
    (t / name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return f"data: {{source: 'csv:{name}'}}\n"


def _rows(n: int, *, header: str = "label,a,b", row=lambda i: f"{i % 2},{i},{i * 2}") -> str:
    return header + "\n" + "".join(row(i) + "\n" for i in range(n))


def _npy_header_only(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """The .npy header of a (huge) array followed by a few zero bytes: what an npz bomb declares."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


def _npz_bomb(t: Path) -> str:
    """An npz whose x declares 2**31 x 4 float64 (64 GiB) in a member of a few hundred bytes."""
    import zipfile

    with zipfile.ZipFile(t / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", _npy_header_only((2**31, 4)))
        z.writestr("y.npy", _npy_header_only((2**31,), "<i8"))
    return "data: {source: 'npz:bomb.npz'}\n"


def _png_bomb(path: Path, w: int, h: int) -> None:
    """A PNG whose header declares w x h RGB pixels, with one row of data: a few hundred bytes
    on disk; decoding it would need w*h*3 bytes (34000 x 34000: 3.5 GB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * (w * 3 + 1), 9)) + chunk(b"IEND", b""))


def _images(t: Path, *, bomb: tuple[int, int] | None = None, junk: bool = False) -> str:
    from PIL import Image

    root = t / "imgs"
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(8):
            Image.fromarray(np.full((8, 8, 3), 10 * i + (100 if c == "dogs" else 0), np.uint8)).save(root / c / f"{i}.png")
    if bomb:
        _png_bomb(root / "dogs" / "huge.png", *bomb)
    if junk:
        (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (root / ".git").mkdir()
        (root / "cats" / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble")
        (root / "dogs" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (root / "dogs" / "notes.txt").write_text("labels checked by hand")
    return "data: {source: 'images:imgs'}\n"


X8 = np.zeros((30, 8, 8, 1))
Y3 = np.arange(30) % 3

# (id, build(tmp) -> recipe path, exit code, fragments the one error line must hold)
DATA_CASES = [
    ("npz zero features", lambda t: _recipe(t, _npz(t, x=np.zeros((30, 0)), y=Y3)), 3,
     ["d.npz", "zero features", "at least one feature"]),
    ("npz zero features in an image axis", lambda t: _recipe(t, _npz(t, x=np.zeros((30, 8, 0, 1)), y=Y3)), 3,
     ["d.npz", "zero features"]),
    ("npz x without a feature axis", lambda t: _recipe(t, _npz(t, x=np.zeros(30), y=Y3)), 3,
     ["d.npz", "expected (samples, features...)"]),
    ("csv only the label column", lambda t: _recipe(t, _csv(t, _rows(30, header="label", row=lambda i: str(i % 2)))), 3,
     ["d.csv", "only the label column", "add the features"]),
    ("npz zero samples", lambda t: _recipe(t, _npz(t, x=np.zeros((0, 8, 8, 1)), y=np.zeros(0, int))), 3,
     ["d.npz", "no samples", "add samples"]),
    ("csv header only", lambda t: _recipe(t, _csv(t, "label,a,b\n\n\n")), 3, ["d.csv", "no data rows", "add samples"]),
    ("too few samples", lambda t: _recipe(t, _npz(t, x=np.zeros((5, 8, 8, 1)), y=np.arange(5) % 2)), 3,
     ["'d'", "only 5 samples"]),
    ("given split: empty test split", lambda t: _recipe(t, _npz(
        t, x_train=X8, y_train=Y3, x_test=np.zeros((0, 8, 8, 1)), y_test=np.zeros(0, int))), 3,
     ["d.npz (test split)", "no samples"]),
    ("given split: too few to hold out validation", lambda t: _recipe(t, _npz(
        t, x_train=X8[:1], y_train=Y3[:1], x_test=X8[:3], y_test=Y3[:3])), 3,
     ["data.val_split", "too few", "add samples or change data.val_split"]),
    ("NaN in x", lambda t: _recipe(t, _npz(t, x=np.where(np.arange(30)[:, None, None, None] == 7, np.nan, X8), y=Y3)),
     3, ["d.npz", "1 samples hold NaN or inf", "clean or drop"]),
    ("inf in x", lambda t: _recipe(t, _npz(t, x=np.full((30, 8, 8, 1), np.inf), y=Y3)), 3,
     ["d.npz", "30 samples hold NaN or inf"]),
    ("float64 overflowing float32", lambda t: _recipe(t, _npz(t, x=np.full((30, 8, 8, 1), 1e300), y=Y3)), 3,
     ["d.npz", "NaN or inf"]),
    ("csv inf value", lambda t: _recipe(t, _csv(t, _rows(30, row=lambda i: f"{i % 2},{'inf' if i == 3 else i},1"))),
     3, ["d.csv", "NaN or inf"]),
    ("label 200,000,000", lambda t: _recipe(t, _npz(t, x=X8, y=np.where(Y3 == 2, 200_000_000, Y3))), 3,
     ["d.npz", "label 200000000 is out of range", "at most 10000 classes", "renumber"]),
    ("csv label 200,000,000", lambda t: _recipe(t, _csv(t, _rows(30, row=lambda i: f"{200_000_000 if i == 0 else i % 2},{i},1"))),
     3, ["d.csv", "label 200000000", "at most 10000 classes"]),
    ("labels with thousands of empty classes", lambda t: _recipe(t, _npz(t, x=X8, y=np.where(Y3 == 2, 9999, Y3))), 3,
     ["class(es) [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...] (9997 classes) have no samples", "0..9999"]),
    ("npz bomb: 64 GiB declared", lambda t: _recipe(t, _npz_bomb(t)), 3,
     ["bomb.npz", "array 'x'", "decompressed", "EDGEKIT_MAX_ARRAY_BYTES"]),
    ("npz of Python objects", lambda t: _recipe(t, _npz(t, x=np.array([{"a": 1}] * 30, dtype=object), y=Y3)), 3,
     ["d.npz", "Python objects", "unpickling"]),
    ("csv label column twice", lambda t: _recipe(t, _csv(t, _rows(30, header="label,a,label",
                                                                    row=lambda i: f"{i % 2},{i},{i % 2}"))), 3,
     ["d.csv", "label column 'label' appears 2 times", "leak"]),
    ("png bomb: 34000x34000 in a few hundred bytes", lambda t: _recipe(t, _images(t, bomb=(34000, 34000))), 3,
     ["huge.png", "decompression bomb"]),
    ("png above edgekit's pixel limit", lambda t: _recipe(t, _images(t, bomb=(5000, 5000))), 3,
     ["huge.png", "5000x5000", "EDGEKIT_MAX_IMAGE_PIXELS"]),
]


@pytest.mark.parametrize("case,build,code,fragments", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_one_line_before_native_code(tmp_path, case, build, code, fragments):
    res = CliRunner().invoke(main, ["run", build(tmp_path), "--out", str(tmp_path / "o")])
    out = res.output.strip()
    assert res.exit_code == code, f"{case}: exit {res.exit_code}: {out}"
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    manifest = tmp_path / "o" / "manifest.json"
    if manifest.is_file():  # no stage was started, so none can be left "running"
        stages = json.loads(manifest.read_text()).get("stages", {})
        assert not [s for s, e in stages.items() if e.get("status") == "running"], stages


@pytest.mark.parametrize("source", ["label", "bomb"])
def test_huge_label_and_npz_bomb_fail_without_a_big_allocation(tmp_path, source):
    """The label of 200,000,000 used to allocate 10 GB (bincount) before failing; an npz bomb
    loaded what its header declared. Both now fail having traced far less than that."""
    from edgekit.data import load_dataset
    from edgekit.errors import DataError
    from edgekit.recipe import DataConfig

    if source == "label":
        np.savez(tmp_path / "d.npz", x=X8, y=np.where(Y3 == 2, 200_000_000, Y3))
    else:
        _npz_bomb(tmp_path)
    name = "d.npz" if source == "label" else "bomb.npz"
    tracemalloc.start()
    try:
        with pytest.raises(DataError):
            load_dataset(DataConfig(source=f"npz:{tmp_path / name}"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"peak {peak} bytes"


def test_csv_with_a_bom_finds_its_label_column(tmp_path):
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    _csv(tmp_path, _rows(30), bom=True)
    data = load_dataset(DataConfig(source=f"csv:{tmp_path / 'd.csv'}"))
    assert data.input_shape == (2, 1) and data.num_classes == 2


def test_images_folder_skips_hidden_and_non_image_files_with_a_warning(tmp_path, caplog):
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    _images(tmp_path, junk=True)
    with caplog.at_level("WARNING", logger="edgekit.data"):
        data = load_dataset(DataConfig(source=f"images:{tmp_path / 'imgs'}"))
    assert data.num_classes == 2 and data.input_shape == (8, 8, 3)
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 16
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in (".DS_Store", ".git", "cats/._0.png", "dogs/Thumbs.db", "dogs/notes.txt"):
        assert name in warned, warned


# ------------------------------------------------------------------------------- the evaluator


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory, tiny_models):
    """A one-output model (scored against ten classes it cannot tell apart) and a model whose
    weights are NaN (NaN outputs), both float TFLite; and a bit-flipped copy of
    tiny_models.float_tflite that passes the structure check but crashes the interpreter."""
    from edgekit._tf import keras, tf

    k = keras()
    out = tmp_path_factory.mktemp("odd_models")
    paths = {}
    for name, units, fill in (("one_output", 1, None), ("nan_output", 10, np.nan)):
        model = k.Sequential([k.layers.Input((8, 8, 1)), k.layers.Flatten(), k.layers.Dense(units)])
        if fill is not None:
            model.set_weights([np.full(w.shape, fill, w.dtype) for w in model.get_weights()])
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(tf().lite.TFLiteConverter.from_keras_model(model).convert())
    paths["segfault"] = _bit_flipped_crasher(tiny_models.float_tflite, out / "flipped.tflite")
    return paths


_FLIP_SEARCH = r'''
import os, resource, runpy, signal, sys
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

evaluator, src, dest = sys.argv[1:]
check = runpy.run_path(evaluator)["check_tflite_structure"]
blob = open(src, "rb").read()
sg = schema.Model.GetRootAsModel(blob, 0).Subgraphs(0)
start = sg._tab.Vector(sg._tab.Offset(10))  # Subgraph.operators: uoffsets to the Operator tables
for k in reversed(range(sg.OperatorsLength())):
    for pos in (start + 4 * k, start + 4 * k + 1):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[pos] ^= 1 << bit
            flipped = bytes(flipped)
            if check(flipped) is not None:
                continue
            pid = os.fork()
            if pid == 0:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
                resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
                try:
                    it = Interpreter(model_content=flipped)
                    it.allocate_tensors()
                    d = it.get_input_details()[0]
                    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
                    it.invoke()
                except BaseException:
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGSEGV, signal.SIGBUS):
                open(dest, "wb").write(flipped)
                print(pos, bit, os.WTERMSIG(status))
                sys.exit(0)
sys.exit(3)
'''


def _bit_flipped_crasher(src: Path, dest: Path) -> Path:
    """A copy of ``src`` with one bit flipped that still passes the evaluator's structure check
    but makes the interpreter segfault on its first invoke.

    Found deterministically, in a child Python (each try in a forked grandchild, 2 GiB address
    space): bits 0-7 of the low two bytes of each entry of subgraph 0's operator-offset vector,
    last operator first. Such a flip points an operator at another operator's table (same
    opcode and tensors twice), so the graph's output tensor is never written and the runtime
    dereferences it. On the tiny digits CNN the first candidate tried that crashes is byte 0
    bit 6 of the last operator's offset; a search takes well under a second.
    """
    proc = subprocess.run([sys.executable, "-c", _FLIP_SEARCH, str(EVALUATOR), str(src), str(dest)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"no bit flip of {src.name} crashes the interpreter: {proc.stderr[-500:]}")
    return dest


def _eval_npz(t: Path, tiny_models, name: str = "e.npz", **override) -> str:
    arrays = {"x": tiny_models.x_test[:20], "y": tiny_models.y_test[:20]}
    arrays.update(override)
    np.savez(t / name, **arrays)
    return str(t / name)


# (id, build(tmp, tiny_models, odd_models) -> argv, exit code, fragments of the one error line)
EVAL_CASES = [
    ("NaN in x", lambda t, m, o: ["--model", str(m.float_tflite), "--data", _eval_npz(
        t, m, x=np.where(np.arange(20)[:, None, None, None] == 4, np.nan, m.x_test[:20]))], 3,
     ["x holds NaN or inf in 1 of 20 samples", "sample 4", "clean or drop"]),
    ("inf in x", lambda t, m, o: ["--model", str(m.float_tflite), "--data", _eval_npz(
        t, m, x=np.full((20, 8, 8, 1), np.inf, np.float32))], 3, ["x holds NaN or inf in 20 of 20"]),
    ("NaN in ref", lambda t, m, o: ["--model", str(m.float_tflite), "--data", _eval_npz(
        t, m, ref=np.full(20, np.nan))], 3, ["ref holds NaN or inf"]),
    ("negative label", lambda t, m, o: ["--model", str(m.float_tflite), "--data", _eval_npz(
        t, m, y=np.where(np.arange(20) == 0, -1, m.y_test[:20]))], 3, ["negative labels", "-1", "0..K-1"]),
    ("label = number of outputs", lambda t, m, o: ["--model", str(m.float_tflite), "--data", _eval_npz(
        t, m, y=np.where(np.arange(20) == 0, 10, m.y_test[:20]))], 3,
     ["label 10", "the model has 10 outputs (classes 0..9)"]),
    ("huge label", lambda t, m, o: ["--model", str(m.float_tflite), "--data", _eval_npz(
        t, m, y=np.where(np.arange(20) == 0, 200_000_000, m.y_test[:20]))], 3,
     ["label 200000000", "limit of 1000000"]),
    ("huge float label", lambda t, m, o: ["--model", str(m.float_tflite), "--data", _eval_npz(
        t, m, y=np.where(np.arange(20) == 0, 1e30, m.y_test[:20].astype(float)))], 3, ["label 1e+30"]),
    ("one-output model against ten classes", lambda t, m, o: ["--model", str(o["one_output"]), "--data",
                                                             _eval_npz(t, m)], 3,
     ["the model has 1 output (classes 0..1)", "do not fit"]),
    ("NaN outputs", lambda t, m, o: ["--model", str(o["nan_output"]), "--data", _eval_npz(t, m)], 5,
     ["NaN or inf outputs", "20 of 20 samples", "no metric is reported"]),
    ("eval.npz bomb: 64 GiB declared", lambda t, m, o: ["--model", str(m.float_tflite), "--data",
                                                        str(t / _npz_bomb(t).split("npz:")[1].split("'")[0])], 3,
     ["bomb.npz", "array 'x'", "above the limit", "EDGEKIT_MAX_ARRAY_BYTES"]),
    ("bit-flipped model segfaults the interpreter", lambda t, m, o: ["--model", str(o["segfault"]), "--data",
                                                                     _eval_npz(t, m)], 7,
     ["flipped.tflite crashed the interpreter", "signal 11", "SIGSEGV"]),
]


@pytest.mark.parametrize("case,build,code,fragments", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_evaluator_refuses_what_it_cannot_score(tmp_path, tiny_models, odd_models, case, build, code, fragments):
    proc = subprocess.run([sys.executable, str(EVALUATOR), *build(tmp_path, tiny_models, odd_models), "--runs", "2",
                           "--warmup", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert proc.stdout == "", "no JSON (no metric) on failure"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error: "), proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_the_api_refuses_labels_before_allocating_per_label(tiny_models):
    from edgekit.ondevice import evaluate as ev

    y = tiny_models.y_test[:20].copy()
    y[0] = 10**12
    tracemalloc.start()
    try:
        with pytest.raises(ev.DataError, match="label 1000000000000"):
            ev.evaluate(str(tiny_models.float_tflite), tiny_models.x_test[:20], y, runs=0, warmup=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"peak {peak} bytes"


def test_edgekit_reports_an_interpreter_crash_as_one_line_exit_7(odd_models, tiny_models, tmp_path):
    """edgekit's host side runs the evaluator without its own probe (it is already a child) and
    turns the signal into a DeviceError (exit 7) naming the file."""
    from edgekit.errors import DeviceError
    from edgekit.evaluate import run_evaluator
    from edgekit.recipe import EvaluateConfig

    with pytest.raises(DeviceError) as info:
        run_evaluator(odd_models["segfault"], Path(_eval_npz(tmp_path, tiny_models)), runtime="ai_edge_litert",
                      cfg=EvaluateConfig(runs=1, warmup=0))
    text = str(info.value)
    assert info.value.exit_code == 7
    assert "\n" not in text and "flipped.tflite crashed the interpreter" in text and "signal 11" in text, text


def test_predict_outputs_with_probe_survives_the_crash(odd_models, tiny_models):
    """parity predicts in this process; with probe=True a crashing model is an error, not the end
    of the process."""
    from edgekit.ondevice import evaluate as ev

    with pytest.raises(ev.ModelCrashError, match="signal 11"):
        ev.predict_outputs(str(odd_models["segfault"]), tiny_models.x_test[:2], runtime="ai_edge_litert", probe=True)


# ---------------------------------------------------------------------------- recipes validate


def _deep(t: Path) -> str:
    return _recipe(t, text="name: x\nteacher: " + "[" * 5000 + "]" * 5000 + "\n")


# (id, build(tmp) -> recipe path, exit code, fragments of the (first) error line)
RECIPE_CASES = [
    ("duplicate top-level key", lambda t: _recipe(t, text="name: x\nseed: 1\nseed: 2\n"), 2,
     ["r.yaml", "duplicate key 'seed'", "line 3", "keep one"]),
    ("duplicate nested key", lambda t: _recipe(t, text="name: x\nteacher: {epochs: 1, epochs: 50}\n"), 2,
     ["duplicate key 'epochs'"]),
    ("duplicate key in a block mapping", lambda t: _recipe(t, text="name: x\nprune:\n  target_sparsity: 0.5\n"
                                                                   "  target_sparsity: 0.9\n"), 2,
     ["duplicate key 'target_sparsity'", "first at line 3"]),
    ("deep flow nesting", _deep, 2, ["r.yaml", "nested 5000 levels deep", "limit 50"]),
    ("deep block nesting", lambda t: _recipe(t, text="name: x\nteacher:\n" + "".join(
        " " * (i + 1) + f"k{i}:\n" for i in range(300)) + " " * 301 + "v\n"), 2, ["r.yaml", "levels deep", "limit 50"]),
    ("seed 2**32", lambda t: _recipe(t, text="name: x\nseed: 4294967296\n"), 2, ["seed: 4294967296 is out of range"]),
    ("negative seed", lambda t: _recipe(t, text="name: x\nseed: -1\n"), 2, ["seed: -1 is out of range"]),
    ("prune.frequency 1e23", lambda t: _recipe(t, text="name: x\nprune: {frequency: 1.0e+23}\n"), 2,
     ["prune.frequency"]),
    ("prune.frequency above a million", lambda t: _recipe(t, text="name: x\nprune: {frequency: 1000001}\n"), 2,
     ["prune.frequency: 1000001 is out of range"]),
    ("l2 infinite", lambda t: _recipe(t, text="name: x\nteacher: {l2: .inf}\n"), 2, ["teacher.l2", "finite"]),
    ("learning rate NaN", lambda t: _recipe(t, text="name: x\nstudent: {learning_rate: .nan}\n"), 2,
     ["student.learning_rate", "finite"]),
    ("temperature 0", lambda t: _recipe(t, text="name: x\nstudent: {temperature: 0}\n"), 2,
     ["student.temperature: 0 is out of range"]),
    ("alpha above 1", lambda t: _recipe(t, text="name: x\nstudent: {alpha: 1.5}\n"), 2, ["student.alpha: 1.5"]),
    ("batch size 0", lambda t: _recipe(t, text="name: x\nqat: {batch_size: 0}\n"), 2, ["qat.batch_size: 0"]),
    ("patience above 10000", lambda t: _recipe(t, text="name: x\nteacher: {early_stopping: {patience: 99999}}\n"),
     2, ["teacher.early_stopping.patience: 99999"]),
    ("evaluate.runs huge", lambda t: _recipe(t, text="name: x\nevaluate: {runs: 100000000}\n"), 2,
     ["evaluate.runs: 100000000 is out of range"]),
    ("evaluate.warmup huge", lambda t: _recipe(t, text="name: x\nevaluate: {warmup: 100000000}\n"), 2,
     ["evaluate.warmup: 100000000"]),
    ("evaluate.samples 0", lambda t: _recipe(t, text="name: x\nevaluate: {samples: 0}\n"), 2, ["evaluate.samples: 0"]),
    ("missing npz file", lambda t: _recipe(t, "data: {source: 'npz:data/none.npz'}\n"), 2,
     ["r.yaml: data.source: file 'data/none.npz' not found", str(Path("data") / "none.npz"), "fix the path"]),
    ("missing csv file", lambda t: _recipe(t, "data: {source: 'csv:none.csv'}\n", model="mlp_tiny"), 2,
     ["data.source: file 'none.csv' not found"]),
    ("missing images folder", lambda t: _recipe(t, "data: {source: 'images:pics'}\n"), 2,
     ["data.source: folder 'pics' not found"]),
    ("csv without the label column", lambda t: _recipe(t, _csv(t, _rows(5, header="y,a,b")), model="mlp_tiny"), 2,
     ["data.label: no column 'label'", "columns: y, a, b", "set data.label"]),
    ("csv with the label column twice", lambda t: _recipe(t, _csv(t, _rows(5, header="label,a,label")),
                                                          model="mlp_tiny"), 2,
     ["data.label: column 'label' appears 2 times", "leak"]),
    # the model loader (edgekit.model_source, tests/test_user_models.py) checks paths exist and open
    ("a missing model path", lambda t: _recipe(t, model="models/mine.keras"), 2,
     ["teacher.model: models/mine.keras: no such keras model file"]),
    ("a missing builder file", lambda t: _recipe(t, model="zoo.py:build"), 2,
     ["teacher.model: zoo.py: no such builder file"]),
    ("unknown model", lambda t: _recipe(t, model="cnn_smal"), 2,
     ["teacher.model: unknown model 'cnn_smal'", "did you mean 'cnn_small'", "known: cnn_small, cnn_tiny"]),
    ("image model on flat npz features", lambda t: _recipe(t, _npz(t, x=np.zeros((30, 16)), y=Y3)), 2,
     ["teacher.model: 'cnn_tiny' takes inputs of rank 3", "d.npz (x per sample (16, 1)) is rank 2",
      "models that fit: conv1d_small, conv1d_tiny, fc_autoencoder, mlp_small, mlp_tiny"]),
    ("sequence model on images", lambda t: _recipe(t, _images(t), model="mlp_tiny"), 2,
     ["'mlp_tiny' takes inputs of rank 2", "images:imgs", "rank 3", "models that fit: cnn_small"]),
    ("image model on a csv", lambda t: _recipe(t, _csv(t, _rows(5))), 2, ["'cnn_tiny' takes inputs of rank 3"]),
    ("image model on mnist1d", lambda t: _recipe(t, "data: {source: mnist1d}\n"), 2,
     ["data.source mnist1d is rank 2"]),
    ("more components than features", lambda t: _recipe(
        t, _npz(t, x=np.zeros((30, 6)), y=Y3) + "features: {reduce: pca, components: 8}\n", model="mlp_tiny"), 2,
     ["features.components: 8 > 6", "choose at most 6"]),
    ("npz with fewer than 10 samples", lambda t: _recipe(t, _npz(t, x=np.zeros((4, 8, 8, 1)), y=np.arange(4) % 2)),
     2, ["has only 4 samples", "add samples"]),
    ("image model behind an input reduction", lambda t: _recipe(
        t, "features: {reduce: pca, components: 4}\n"), 2, ["features.reduce pca gives (K, 1) vectors"]),
]

# recipes that must stay valid (no false alarms)
RECIPE_OK = [
    ("keys merged with << may be overridden", lambda t: _recipe(
        t, text="name: x\nteacher: &t {model: cnn_small, epochs: 1}\nstudent: {<<: *t, model: cnn_tiny}\n")),
    ("matching rank from an npz header", lambda t: _recipe(t, _npz(t, x=np.zeros((30, 16)), y=Y3), model="mlp_tiny")),
    ("csv with a BOM", lambda t: _recipe(t, _csv(t, _rows(5), bom=True), model="mlp_tiny")),
    ("seed 2**32-1", lambda t: _recipe(t, "seed: 4294967295\n")),
]


@pytest.mark.parametrize("case,build,code,fragments", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_recipes_validate_catches_it_without_training(tmp_path, case, build, code, fragments):
    res = CliRunner().invoke(main, ["recipes", "validate", build(tmp_path)])
    out = res.output.strip()
    assert res.exit_code == code, f"{case}: exit {res.exit_code}: {out}"
    assert "Traceback" not in out and res.exception is None or isinstance(res.exception, SystemExit), out
    first = out.splitlines()[0]
    for fragment in fragments:
        assert fragment in first, first


@pytest.mark.parametrize("case,build", RECIPE_OK, ids=[c[0] for c in RECIPE_OK])
def test_recipes_validate_has_no_false_alarms(tmp_path, case, build):
    res = CliRunner().invoke(main, ["recipes", "validate", build(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith(": ok")


def test_is_model_reference_hook():
    from edgekit.recipe import _is_model_reference

    assert all(_is_model_reference(v) for v in ("a/b.keras", "m.keras", "zoo.py:build", "/abs/m.h5"))
    assert not any(_is_model_reference(v) for v in ("cnn_tiny", "cnn_smal", "resnet8"))


def test_generated_shapes_are_what_the_sources_yield():
    from edgekit.data import _SOURCES
    from edgekit.recipe import GENERATED_SHAPES

    for name, shape in GENERATED_SHAPES.items():
        got = _SOURCES[name]()
        x = (got[0] if isinstance(got, list) else got)[0]
        assert tuple(x.shape[1:]) + ((1,) if x.ndim == 2 else ()) == shape, name
