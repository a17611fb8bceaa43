"""Tests of the standalone on-device evaluator ``edgekit/ondevice/evaluate.py``.

The evaluator is copied to devices as a single file, so most tests run it the way a device does:
``python evaluate.py ...`` in a subprocess (which also keeps a TFLite Micro crash away from
pytest). In-process calls go through the same file imported as ``edgekit.ondevice.evaluate``.

Tolerances: accuracy, confusion matrices, quantized inputs and ROC AUC are compared exactly
(integer counts and rank statistics); float/int8 accuracy floors are 0.8 and agreement floors 0.9
(the tiny digits CNN reaches about 0.97 and 1.0).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from edgekit.ondevice import evaluate as ev

EVALUATE_PY = Path(ev.__file__).resolve()
FAST = dict(warmup=2, runs=20)


def _cli(*args: str, cwd: Path | None = None, python: str = sys.executable,
         timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(EVALUATE_PY), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("evaluate.py: error: "), lines[0]
    return lines[0]


def _litert_predictions(model: Path, x: np.ndarray) -> np.ndarray:
    """Independent reference: run the model with ai_edge_litert, one sample per invoke."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    preds = []
    for sample in x:
        v = sample[None].astype(np.float32)
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            v = np.clip(np.round(v.astype(np.float64) / scale) + zero, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], v)
        it.invoke()
        o = it.get_tensor(out["index"]).astype(np.float64)
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            o = (o - zero) * scale
        preds.append(int(o.argmax()))
    return np.array(preds)


# ------------------------------------------------------------------------------ correctness

@pytest.mark.parametrize("which", ["float_tflite", "full_int8_tflite"])
def test_accuracy_equals_independent_interpreter_run(tiny_models, which):
    model = getattr(tiny_models, which)
    x, y = tiny_models.x_test, tiny_models.y_test
    result = ev.evaluate(model, x, y, ref=tiny_models.keras_pred, runtime="ai_edge_litert", **FAST)

    pred = _litert_predictions(model, x)
    assert result["samples"] == len(y)
    assert result["accuracy"] == np.mean(pred == y)
    cm = np.zeros((10, 10), dtype=int)
    np.add.at(cm, (y, pred), 1)
    assert result["confusion_matrix"] == cm.tolist()
    assert result["agreement_with_float"] == np.mean(pred == tiny_models.keras_pred)


@pytest.mark.parametrize("which, io_dtype", [("float_tflite", "float32"),
                                             ("int8_tflite", "float32"),
                                             ("full_int8_tflite", "int8")])
def test_float_and_int8_io_paths_are_accurate(tiny_models, which, io_dtype):
    result = ev.evaluate(getattr(tiny_models, which), tiny_models.x_test, tiny_models.y_test,
                         ref=tiny_models.keras_pred, **FAST)
    assert result["runtime"]["name"] == "ai_edge_litert"
    assert result["runtime"]["version"]
    assert result["input"]["dtype"] == io_dtype and result["output"]["dtype"] == io_dtype
    if io_dtype == "int8":
        assert result["input"]["scale"] > 0 and isinstance(result["input"]["zero_point"], int)
    else:
        assert result["input"]["scale"] is None and result["input"]["zero_point"] is None
    assert result["accuracy"] > 0.8
    assert result["agreement_with_float"] > 0.9
    assert result["num_threads"] == 1 and result["arena_bytes"] is None
    assert result["roc_auc"] is None  # ten classes
    assert [c["class"] for c in result["per_class"]] == list(range(10))
    assert sum(c["support"] for c in result["per_class"]) == len(tiny_models.y_test)


def test_quantize_matches_tflite_quantize_op(tiny_models):
    """Our float->int8 mapping equals the QUANTIZE op inside the float-io int8 model."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tiny_models.int8_tflite),
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    op = next(o for o in it._get_ops_details() if o["op_name"] == "QUANTIZE")
    q_index = int(op["outputs"][0])
    scale, zero = next(t for t in it.get_tensor_details() if t["index"] == q_index)["quantization"]
    info = ev.TensorInfo(np.dtype(np.int8), (1, 8, 8, 1), scale, zero)
    grid = np.linspace(-0.2, 1.2, 64 * 8, dtype=np.float32).reshape(8, 8, 8, 1)
    edges = (np.arange(64, dtype=np.float32) % 17 / 16).reshape(1, 8, 8, 1)  # digits' k/16 values
    for sample in np.concatenate([tiny_models.x_test[:50], grid, edges]):
        it.set_tensor(it.get_input_details()[0]["index"], sample[None])
        it.invoke()
        np.testing.assert_array_equal(ev.quantize(sample[None], info), it.get_tensor(q_index))


def test_metric_helpers_match_sklearn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    cm = ev.confusion_matrix(y, pred, 4)
    np.testing.assert_array_equal(cm, confusion_matrix(y, pred, labels=range(4)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    rows = ev.per_class_metrics(cm)
    np.testing.assert_allclose([row["precision"] for row in rows], p, rtol=1e-12)
    np.testing.assert_allclose([row["recall"] for row in rows], r, rtol=1e-12)
    np.testing.assert_allclose([row["f1"] for row in rows], f, rtol=1e-12)
    assert [row["support"] for row in rows] == s.tolist()

    yb = rng.integers(0, 2, 500)
    score = np.round(yb + rng.normal(0, 1.0, 500), 1)  # rounded: many ties
    assert ev.roc_auc(yb, score) == pytest.approx(roc_auc_score(yb, score), abs=1e-12)
    assert ev.roc_auc(np.ones(5, dtype=int), np.arange(5.0)) is None
    # a class never predicted has no precision; one never seen has no recall
    rows = ev.per_class_metrics(ev.confusion_matrix(np.array([0, 0]), np.array([0, 0]), 2))
    assert rows[1] == {"class": 1, "precision": None, "recall": None, "f1": None, "support": 0}


def _onnx_linear_model(path: Path, weights: np.ndarray, bias: np.ndarray) -> Path:
    """A MatMul + Add classifier on flattened inputs, input shape [N, features]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]),
         helper.make_node("Add", ["h", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weights.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", weights.shape[1]])],
        [numpy_helper.from_array(weights.astype(np.float32), "W"),
         numpy_helper.from_array(bias.astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _least_squares(x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.hstack([x.reshape(len(x), -1), np.ones((len(x), 1))])
    coef = np.linalg.lstsq(a, targets, rcond=None)[0]
    return coef[:-1], coef[-1]


def test_onnx_multiclass_and_binary_roc_auc(tmp_path, digits_small):
    from sklearn.metrics import roc_auc_score

    x_tr, y_tr, x_te, y_te = digits_small
    w, b = _least_squares(x_tr, np.eye(10)[y_tr])
    model = _onnx_linear_model(tmp_path / "linear.onnx", w, b)
    result = ev.evaluate(model, x_te, y_te, threads=2, **FAST)
    assert result["format"] == "onnx"
    assert result["runtime"]["name"] == "onnxruntime" and result["num_threads"] == 2
    assert result["input"] == {"dtype": "float32", "shape": [None, 64], "scale": None,
                               "zero_point": None}
    logits = x_te.reshape(len(x_te), -1) @ w + b
    assert result["accuracy"] == np.mean(logits.argmax(1) == y_te) > 0.8
    assert result["agreement_with_float"] is None and result["roc_auc"] is None

    # binary: "digit >= 5", two output columns; AUC from the positive-class score
    yb_tr, yb_te = (y_tr >= 5).astype(int), (y_te >= 5).astype(int)
    w2, b2 = _least_squares(x_tr, np.eye(2)[yb_tr])
    model2 = _onnx_linear_model(tmp_path / "binary.onnx", w2, b2)
    result = ev.evaluate(model2, x_te, yb_te, **FAST)
    scores = (x_te.reshape(len(x_te), -1) @ w2 + b2).astype(np.float32)
    assert len(result["per_class"]) == 2 and len(result["confusion_matrix"]) == 2
    assert result["roc_auc"] == pytest.approx(roc_auc_score(yb_te, scores[:, 1] - scores[:, 0]),
                                              abs=1e-3)
    assert result["roc_auc"] > 0.8


# ------------------------------------------------------------------------------ runtimes

def test_tflite_micro_runs_full_int8_in_subprocess(tiny_models, tmp_path):
    proc = _cli("--model", str(tiny_models.full_int8_tflite), "--data", str(tiny_models.eval_npz),
                "--runtime", "tflite_micro", "--arena-bytes", "200000", "--warmup", "2",
                "--runs", "20", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runtime"]["name"] == "tflite_micro" and result["runtime"]["version"]
    assert result["arena_bytes"] == 200_000
    assert result["num_threads"] is None
    assert result["input"]["dtype"] == "int8"
    assert result["accuracy"] > 0.8 and result["agreement_with_float"] > 0.9


def _litert_outputs(model: Path, x: np.ndarray) -> np.ndarray:
    """Independent reference: dequantized outputs from ai_edge_litert, one sample per invoke."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for sample in x:
        v = sample[None].astype(np.float32)
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            v = np.clip(np.round(v.astype(np.float64) / scale) + zero, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], v)
        it.invoke()
        o = it.get_tensor(out["index"]).astype(np.float64).reshape(-1)
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            o = (o - zero) * scale
        rows.append(o)
    return np.array(rows)


@pytest.mark.parametrize("which", ["float_tflite", "int8_tflite", "full_int8_tflite"])
def test_predict_outputs_are_the_dequantized_outputs(tiny_models, which):
    """predict_outputs equals an independent LiteRT run to float32 rounding (atol 1e-6), and
    its argmax gives evaluate()'s accuracy exactly."""
    model, x, y = getattr(tiny_models, which), tiny_models.x_test, tiny_models.y_test
    out = ev.predict_outputs(model, x, runtime="ai_edge_litert")
    assert out.dtype == np.float32 and out.shape == (len(x), 10)
    np.testing.assert_allclose(out, _litert_outputs(model, x), rtol=0, atol=1e-6)
    result = ev.evaluate(model, x, y, runtime="ai_edge_litert", warmup=0, runs=0)
    assert result["accuracy"] == np.mean(ev.predict_classes(out) == y)


def test_cli_dump_outputs_from_tflite_micro(tiny_models, tmp_path):
    """--dump-outputs writes the N x classes outputs TFLite Micro produced; with the same int8
    kernels as LiteRT's reference path they agree with LiteRT within one output step."""
    dump = tmp_path / "outputs.npy"
    proc = _cli("--model", str(tiny_models.full_int8_tflite), "--data", str(tiny_models.eval_npz),
                "--runtime", "tflite_micro", "--arena-bytes", "200000", "--warmup", "0",
                "--runs", "0", "--samples", "50", "--dump-outputs", str(dump), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    out = np.load(dump, allow_pickle=False)
    assert out.shape == (50, 10) and out.dtype == np.float32
    assert os.listdir(tmp_path) == ["outputs.npy"]
    assert result["accuracy"] == np.mean(out.argmax(1) == tiny_models.y_test[:50])
    step = result["output"]["scale"]
    lite = _litert_outputs(tiny_models.full_int8_tflite, tiny_models.x_test[:50])
    assert np.abs(out - lite).max() <= step * 1.001


def test_predict_outputs_rejects_bad_options(tiny_models):
    with pytest.raises(ev.UsageError, match="arena_bytes"):
        ev.predict_outputs(tiny_models.full_int8_tflite, tiny_models.x_test, runtime="tflite_micro")
    with pytest.raises(ev.DataError, match="no samples"):
        ev.predict_outputs(tiny_models.float_tflite, np.zeros((0, 8, 8, 1), np.float32))
    with pytest.raises(ev.ModelError, match="not found"):
        ev.predict_outputs("missing.tflite", tiny_models.x_test)


def test_tflite_micro_too_small_arena_is_one_clean_error(tiny_models, tmp_path):
    """A 100-byte arena crashes TFLM (SIGSEGV): the evaluator probes in a child and says so."""
    for arena in ("100", "1000"):
        proc = _cli("--model", str(tiny_models.full_int8_tflite), "--data",
                    str(tiny_models.eval_npz), "--runtime", "tflite_micro", "--arena-bytes", arena,
                    cwd=tmp_path)
        assert proc.returncode == ev.ArenaError.exit_code, proc.stderr
        assert "arena" in _error_line(proc) and proc.stdout == ""
    with pytest.raises(ev.ArenaError, match="arena_bytes=100"):
        ev.evaluate(tiny_models.full_int8_tflite, tiny_models.x_test, tiny_models.y_test,
                    runtime="tflite_micro", arena_bytes=100)


# ------------------------------------------------------------------------------------ CLI

def test_cli_writes_json_out_and_respects_runs(tiny_models, tmp_path):
    out = tmp_path / "res" / "int8.json"
    out.parent.mkdir()
    proc = _cli("--model", str(tiny_models.full_int8_tflite), "--data", str(tiny_models.eval_npz),
                "--warmup", "3", "--runs", "37", "--samples", "100", "--measured-on", "lab-pi",
                "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout) == result
    assert os.listdir(out.parent) == ["int8.json"]  # no temp file left behind
    lat = result["latency_ms"]
    assert set(lat) == {"mean", "std", "p50", "p90", "p99"}
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert result["timed_runs"] == 37 and result["warmup_runs"] == 3
    assert result["samples"] == 100
    assert result["measured_on"] == "lab-pi"
    for key in ("init_ms", "first_inference_ms", "peak_rss_bytes"):
        assert result[key] > 0, key
    assert result["rss_growth_bytes"] is not None
    assert result["size_bytes"] == tiny_models.full_int8_tflite.stat().st_size
    assert 0 < result["gzip_bytes"] < result["size_bytes"]
    assert result["model"] == "full_int8.tflite" and result["format"] == "tflite"
    assert result["evaluator_version"] == ev.EVALUATOR_VERSION
    assert set(result["host"]) == {"machine", "cpu", "os", "python"}
    expected = {"model", "format", "size_bytes", "gzip_bytes", "runtime", "num_threads", "samples",
                "accuracy", "agreement_with_float", "latency_ms", "init_ms",
                "first_inference_ms", "arena_bytes", "peak_rss_bytes", "rss_growth_bytes",
                "input", "output", "per_class", "confusion_matrix", "roc_auc", "measured_on",
                "host", "evaluator_version"}
    assert expected <= set(result)


def test_default_measured_on_names_the_host():
    label = ev.default_measured_on()
    assert label.startswith("rpi:") or label == f"host-{os.uname().machine}"


@pytest.mark.parametrize("case", ["missing model", "corrupt model", "corrupt with TFL3 header",
                                  "truncated model", "unknown runtime", "missing data",
                                  "data not npz",
                                  "micro without arena", "runtime not installed"])
def test_cli_errors_are_one_line_and_nonzero(tiny_models, tmp_path, case):
    model, data = str(tiny_models.full_int8_tflite), str(tiny_models.eval_npz)
    rng = np.random.default_rng(1)
    extra: list[str] = []
    expect = ""
    if case == "missing model":
        model, expect = str(tmp_path / "nope.tflite"), "model file not found"
    elif case == "corrupt model":
        (tmp_path / "bad.tflite").write_bytes(rng.bytes(5000))
        model, expect = str(tmp_path / "bad.tflite"), "no 'TFL3' identifier"
    elif case == "corrupt with TFL3 header":
        (tmp_path / "bad.tflite").write_bytes(rng.bytes(4) + b"TFL3" + rng.bytes(5000))
        model, expect = str(tmp_path / "bad.tflite"), "not a valid TFLite flatbuffer"
    elif case == "truncated model":
        blob = tiny_models.full_int8_tflite.read_bytes()
        (tmp_path / "cut.tflite").write_bytes(blob[: len(blob) * 2 // 3])
        model, expect = str(tmp_path / "cut.tflite"), "not a valid TFLite flatbuffer"
    elif case == "unknown runtime":
        extra, expect = ["--runtime", "tflite_nano"], "invalid choice: 'tflite_nano'"
    elif case == "missing data":
        data, expect = str(tmp_path / "nope.npz"), "eval data file not found"
    elif case == "data not npz":
        data, expect = model, "not a .npz file"
    elif case == "micro without arena":
        extra, expect = ["--runtime", "tflite_micro"], "needs arena_bytes"
    elif case == "runtime not installed":
        try:
            import tflite_runtime  # noqa: F401
            pytest.skip("tflite_runtime is installed here")
        except ImportError:
            pass
        extra, expect = ["--runtime", "tflite_runtime"], "pip install tflite-runtime"
    proc = _cli("--model", model, "--data", data, *extra, cwd=tmp_path)
    assert proc.returncode not in (0, None)
    assert proc.stdout == ""
    assert expect in _error_line(proc)


def test_structure_check_accepts_models_and_rejects_truncations(tiny_models):
    for path in (tiny_models.float_tflite, tiny_models.int8_tflite, tiny_models.full_int8_tflite):
        blob = path.read_bytes()
        assert ev.check_tflite_structure(blob) is None
        for cut in range(0, len(blob), 16):
            assert ev.check_tflite_structure(blob[:cut]) is not None, (path.name, cut)


def test_api_rejects_bad_options(tiny_models):
    x, y = tiny_models.x_test, tiny_models.y_test
    with pytest.raises(ev.UsageError, match="tflite_micro only"):
        ev.evaluate(tiny_models.float_tflite, x, y, arena_bytes=1000)
    with pytest.raises(ev.UsageError, match="runs"):
        ev.evaluate(tiny_models.float_tflite, x, y, runs=-1)
    with pytest.raises(ev.UsageError, match="runs .onnx models"):
        ev.evaluate(tiny_models.float_tflite, x, y, runtime="onnxruntime")
    with pytest.raises(ev.DataError, match="expected"):
        ev.evaluate(tiny_models.float_tflite, x, y[:-1])


# ------------------------------------------------------------------------- import hygiene

_WRAPPER = r"""
import json, runpy, sys
script, out, *argv = sys.argv[1:]
sys.argv = [script, *argv]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    code = exc.code
roots = sorted({m.split(".")[0] for m in sys.modules})
with open(out, "w") as f:
    json.dump({"code": code, "roots": roots}, f)
"""


@pytest.mark.parametrize("runtime", ["ai_edge_litert", "auto"])
def test_imports_no_edgekit_and_no_tensorflow(tiny_models, tmp_path, runtime):
    report = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(EVALUATE_PY), str(report), "--model",
         str(tiny_models.float_tflite), "--data", str(tiny_models.eval_npz), "--runtime", runtime,
         "--warmup", "1", "--runs", "5"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(report.read_text())
    assert info["code"] == 0
    assert json.loads(proc.stdout)["runtime"]["name"] == "ai_edge_litert"
    loaded = set(info["roots"])
    for heavy in ("edgekit", "tensorflow", "tf_keras", "keras", "onnxruntime", "tflite_micro",
                  "tflite_runtime", "sklearn"):
        assert heavy not in loaded, heavy


def test_source_is_python39_syntax_and_self_contained():
    tree = ast.parse(EVALUATE_PY.read_text(), feature_version=(3, 9))
    top_level, anywhere = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {(node.module or "").split(".")[0]}
        else:
            continue
        anywhere |= names
        if node in tree.body:
            top_level |= names
    # only numpy beyond the stdlib at import time; the runtimes lazily, inside functions
    assert top_level - set(sys.stdlib_module_names) == {"numpy"}
    runtimes = {"ai_edge_litert", "tflite_runtime", "tensorflow", "tflite_micro", "onnxruntime"}
    assert anywhere - set(sys.stdlib_module_names) == {"numpy"} | runtimes


# ------------------------------------------------------------------- clean venvs (slow)

def _make_venv(where: Path, packages: list[str]) -> str:
    """A venv WITHOUT system site-packages with ``packages`` from PyPI; skip if pip fails."""
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(where)
    python = str(where / "bin" / "python")
    proc = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                           *packages], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = " ".join(" ".join(proc.stderr.split()).split()[-40:])
        pytest.skip(f"pip install {' '.join(packages)} failed: {tail}")
    return python


def _run_copied(python: str, work: Path, tiny_models, model_attr: str) -> dict:
    shutil.copy(EVALUATE_PY, work / "evaluate.py")
    shutil.copy(tiny_models.eval_npz, work / "eval.npz")
    shutil.copy(getattr(tiny_models, model_attr), work / "model.tflite")
    proc = subprocess.run([python, "evaluate.py", "--model", "model.tflite", "--data", "eval.npz",
                           "--out", "result.json"], capture_output=True, text=True, cwd=work,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((work / "result.json").read_text())
    assert json.loads(proc.stdout) == result
    return result


@pytest.mark.slow
def test_clean_venv_with_ai_edge_litert(tiny_models, tmp_path):
    python = _make_venv(tmp_path / "venv", ["numpy", "ai-edge-litert==2.3.0"])
    for attr in ("float_tflite", "full_int8_tflite"):
        work = tmp_path / attr
        work.mkdir()
        result = _run_copied(python, work, tiny_models, attr)
        assert result["runtime"] == {"name": "ai_edge_litert", "version": "2.3.0"}
        assert result["accuracy"] > 0.8 and result["agreement_with_float"] > 0.9


@pytest.mark.slow
def test_clean_venv_with_tflite_runtime_2_14(tiny_models, tmp_path):
    python = _make_venv(tmp_path / "venv", ["numpy<2", "tflite-runtime==2.14.0"])
    for attr in ("float_tflite", "int8_tflite", "full_int8_tflite"):
        work = tmp_path / attr
        work.mkdir()
        result = _run_copied(python, work, tiny_models, attr)
        assert result["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}
        assert result["accuracy"] > 0.8 and result["agreement_with_float"] > 0.9
    # tflite_runtime 2.14 segfaults on a corrupt flatbuffer; the evaluator must refuse it first
    work = tmp_path / "full_int8_tflite"
    rng = np.random.default_rng(2)
    blob = tiny_models.full_int8_tflite.read_bytes()
    for bad in (rng.bytes(4) + b"TFL3" + rng.bytes(5000), blob[: len(blob) // 2]):
        (work / "model.tflite").write_bytes(bad)
        proc = subprocess.run([python, "evaluate.py", "--model", "model.tflite", "--data",
                               "eval.npz"], capture_output=True, text=True, cwd=work, timeout=120)
        assert proc.returncode == ev.ModelError.exit_code, proc.stderr
        assert "not a valid TFLite flatbuffer" in _error_line(proc)
