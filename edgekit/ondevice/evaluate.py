#!/usr/bin/env python3
"""Standalone on-device evaluator: task metrics, latency and memory of one model in one runtime.

This single file is copied as-is to a device (a Raspberry Pi, a phone shell, a host standing in
for a microcontroller). It needs only the Python standard library (3.9+), numpy and ONE model
runtime, imported lazily when it is chosen; it never imports edgekit, and imports TensorFlow only
when ``--runtime tensorflow`` is asked for or is the only TFLite runtime installed.

Runtimes: ``ai_edge_litert``, ``tflite_runtime``, ``tensorflow`` (``tf.lite.Interpreter``),
``tflite_micro`` (the TensorFlow Lite Micro Python interpreter, needs ``--arena-bytes``) for
``.tflite`` files, and ``onnxruntime`` for ``.onnx`` files. ``--runtime auto`` takes the first
importable of ai_edge_litert, tflite_runtime, tensorflow for ``.tflite``; onnxruntime for ``.onnx``.

Input ``eval.npz``: ``x`` (float32 model inputs, preprocessed but not quantized), ``y`` (labels),
optionally ``ref`` (the float reference model's output per sample), ``task`` (a 0-d string:
``classification`` when absent, ``regression`` or ``anomaly``) and, for anomaly, ``threshold``.
Integer model inputs are quantized from the input tensor's scale and zero point, integer outputs
dequantized; one sample per invoke (batch 1), as a device runs it. What the task means:

- ``classification``: ``y`` integer classes, ``ref`` the float model's predicted classes; the
  model's outputs are class scores (argmax; one column is thresholded). Metrics: accuracy.
- ``regression``: ``y`` float values, ``ref`` the float model's predictions; the model's one
  output is the prediction, in the label's units after dequantization. Metrics: MAE, RMSE, R²
  and bias (mean prediction - mean label); ``mean_abs_diff_vs_float`` against ``ref``.
- ``anomaly``: ``y`` 0 (normal) / 1 (anomaly), ``ref`` the float model's anomaly scores; the
  model is an autoencoder, a sample's score is the mean squared error between its (float) input
  and the dequantized reconstruction; score >= ``threshold`` flags an anomaly. Metrics: ROC-AUC,
  precision, recall and F1 at the threshold (the confusion matrix too).

Timing follows TFLite ``benchmark_model``: ``init_ms`` (interpreter creation + tensor
allocation), ``first_inference_ms``, ``warmup`` runs excluded, then ``runs`` timed single-sample
runs. ``latency_ms`` times ``invoke()`` alone for the TFLite runtimes, as ``benchmark_model``
does (``latency_scope: "invoke"``), and the whole ``session.run`` for ONNX Runtime, which cannot
separate it (``"run"``); ``latency_with_io_ms`` adds setting the input and reading the output.
The accuracy pass over the samples is separate.

Output: one JSON object shaped like a ``targets[]`` entry of edgekit's ``report.json``: ``task``
and the task's ``metrics`` (``accuracy`` and ``agreement_with_float`` are null for tasks other
than classification), per-class metrics, the confusion matrix and a binary ROC AUC. Fields that
cannot be measured in a runtime or on a platform are ``null``, never estimated.

What cannot be scored honestly is refused, never turned into a metric: NaN/inf in ``x`` or
``ref``, labels that are negative, above ``MAX_LABEL`` or not below the model's number of
outputs (a one-output model is binary: classes 0 and 1), NaN/inf model outputs. Before running
in this process, the CLI loads the model and runs it once on zeros in a child Python, so a
corrupt model that crashes the runtime (SIGSEGV) is one error line too (``--no-probe`` skips it).

Audio (``--wav FILE_OR_FOLDER``): for a model trained on an audio front end (edgekit's
``data.frontend``), classify ``.wav`` files instead of evaluating ``eval.npz``: each file (mono,
integer PCM, at the rate ``frontend.json`` names; shorter clips padded with silence at the end, as
in training, longer ones refused) is cut into frames, run frame by frame through
``frontend.tflite`` (``--frontend``, default beside ``--model``; its ``frontend.json`` says how to
frame), normalized with ``preprocess.json`` when there is one (``--preprocess``), run through the
model, and printed as ``FILE: LABEL (class I)`` with the class names of ``labels.txt``
(``--labels``; class numbers without it). ``--out`` writes the per-file scores as JSON.

Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 data (missing, unreadable, NaN/inf, labels out
of range), 4 runtime not installed, 5 model (corrupt, unsupported, NaN/inf outputs, outputs that
do not fit the task), 6 TFLite Micro arena too small, 7 the model crashed the runtime. Every
error is one line on stderr, ``evaluate.py: error: ...``.

Example::

    python3 evaluate.py --model model_int8.tflite --data eval.npz --runs 200 --out result.json
    python3 evaluate.py --model model_int8.tflite --data eval.npz --runs 0 --dump-outputs out.npy
    python3 evaluate.py --model model.tflite --wav recordings/     # needs frontend.tflite beside it

    >>> from evaluate import evaluate
    >>> result = evaluate("model_int8.tflite", x, y, ref=ref, runtime="ai_edge_litert")
    >>> result["accuracy"], result["latency_ms"]["p50"]
    >>> logits = predict_outputs("model_int8.tflite", x)   # (N, classes), dequantized
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import faulthandler
import gzip
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "EVALUATOR_VERSION",
    "RUNTIMES",
    "EvaluationError",
    "UsageError",
    "DataError",
    "RuntimeUnavailableError",
    "ModelError",
    "ArenaError",
    "ModelCrashError",
    "evaluate",
    "predict_outputs",
    "predict_classes",
    "TASKS",
    "classification_metrics",
    "regression_metrics",
    "reconstruction_error",
    "anomaly_metrics",
    "threshold_metrics",
    "quantize",
    "dequantize",
    "load_eval_data",
    "check_tflite_structure",
    "classify_wavs",
    "audio_features",
    "read_wav_clip",
    "main",
]

EVALUATOR_VERSION = "1"

#: What a model can be evaluated as (``eval.npz`` ``task``).
TASKS = ("classification", "regression", "anomaly")

#: Every runtime this evaluator can drive, in the order ``auto`` tries the TFLite ones.
RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow", "tflite_micro", "onnxruntime")
_AUTO_TFLITE = ("ai_edge_litert", "tflite_runtime", "tensorflow")

_INSTALL_HINT = {
    "ai_edge_litert": "pip install ai-edge-litert",
    "tflite_runtime": "pip install tflite-runtime 'numpy<2'",
    "tensorflow": "pip install tensorflow",
    "tflite_micro": "pip install tflite-micro (x86-64 Linux wheels only)",
    "onnxruntime": "pip install onnxruntime",
}
_DIST_NAMES = {
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime", "tflite-runtime-nightly"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tf-nightly"),
    "tflite_micro": ("tflite-micro", "tflite-micro-nightly"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
}
_QUANTIZED_DTYPES = (np.int8, np.uint8, np.int16)
_ONNX_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64,
}


# --------------------------------------------------------------------------------------- errors

class EvaluationError(Exception):
    """Base of the evaluator's errors: the CLI prints one line and exits with ``exit_code``."""

    exit_code = 1


class UsageError(EvaluationError):
    """A command-line option is missing, unknown or out of range."""

    exit_code = 2


class DataError(EvaluationError):
    """The eval data file is missing, unreadable or inconsistent (shapes, keys, lengths)."""

    exit_code = 3


class RuntimeUnavailableError(EvaluationError):
    """The requested runtime (or, for ``auto``, every candidate) cannot be imported."""

    exit_code = 4


class ModelError(EvaluationError):
    """The model file is missing, corrupt, of the wrong format for the runtime, or fails to run."""

    exit_code = 5


class ArenaError(EvaluationError):
    """TFLite Micro could not run the model in the given tensor arena (too small)."""

    exit_code = 6


class ModelCrashError(ModelError):
    """The model file crashed the runtime (a signal such as SIGSEGV) when it was first loaded and
    run once in a child process (see ``--no-probe``): the file is corrupt or hostile."""

    exit_code = 7


#: Largest class label the evaluator accepts in ``y`` before looking at the model (labels must
#: also be below the model's number of outputs); nothing is allocated per label before this check.
MAX_LABEL = 1_000_000

#: Largest array of ``eval.npz`` (decompressed) the evaluator loads, read from the ``.npy``
#: header before loading: 4 GiB, or the ``EDGEKIT_MAX_ARRAY_BYTES`` environment variable.
MAX_ARRAY_BYTES = int(os.environ.get("EDGEKIT_MAX_ARRAY_BYTES", 4 << 30))


# ------------------------------------------------------------------------------- tensor details

@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Dtype, shape and (for integer tensors) the affine quantization of one model tensor.

    ``shape`` entries are ints, or ``None`` for dimensions the model leaves dynamic (ONNX).
    ``scale`` / ``zero_point`` are ``None`` for tensors that are not quantized.
    """

    dtype: np.dtype
    shape: Tuple[Optional[int], ...]
    scale: Optional[float]
    zero_point: Optional[int]

    def as_json(self) -> Dict[str, Any]:
        return {"dtype": self.dtype.name, "shape": list(self.shape),
                "scale": self.scale, "zero_point": self.zero_point}


def _tflite_quant(details: Dict[str, Any]) -> Tuple[Optional[float], Optional[int]]:
    """(scale, zero_point) of a TFLite tensor detail dict; (None, None) if not quantized.

    Raises ModelError for per-channel quantized model inputs/outputs, which batch-1 evaluation
    cannot map to a single scale.
    """
    params = details.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64).ravel()
    zeros = np.asarray(params.get("zero_points", []), dtype=np.int64).ravel()
    if scales.size == 0:
        scale, zero = details.get("quantization", (0.0, 0))
        scales, zeros = np.array([scale], dtype=np.float64), np.array([zero], dtype=np.int64)
    if scales.size > 1:
        raise ModelError(f"tensor {details.get('name', '?')!r} is quantized per channel "
                         f"({scales.size} scales); the evaluator needs one scale per input/output")
    if scales.size == 0 or float(scales[0]) == 0.0:
        return None, None
    return float(scales[0]), int(zeros[0]) if zeros.size else 0


def _tflite_info(details: Dict[str, Any]) -> TensorInfo:
    scale, zero = _tflite_quant(details)
    shape = tuple(int(d) for d in np.asarray(details["shape"]).ravel())
    return TensorInfo(np.dtype(details["dtype"]), shape, scale, zero)


# -------------------------------------------------------------------------------------- runners

class _Runner:
    """One loaded model in one runtime: ``run(batch1_input) -> raw output`` (no dequantization)."""

    name = ""
    version: Optional[str] = None
    num_threads: Optional[int] = None
    init_ms: Optional[float] = None
    rss_growth: Optional[int] = None
    input: TensorInfo
    output: TensorInfo

    latency_scope = "run"  # what timed_run's first number covers: "invoke" or the whole "run"

    def run(self, sample: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def timed_run(self, sample: np.ndarray) -> Tuple[float, float]:
        """One timed inference: (milliseconds of ``latency_scope``, milliseconds with I/O)."""
        t0 = time.perf_counter()
        self.run(sample)
        ms = (time.perf_counter() - t0) * 1e3
        return ms, ms


class _LiteRunner(_Runner):
    """``ai_edge_litert`` / ``tflite_runtime`` / ``tf.lite`` Interpreter (same API)."""

    def __init__(self, interpreter_cls: Callable[..., Any], model_path: str, threads: int):
        self.num_threads = threads
        it = interpreter_cls(model_path=model_path, num_threads=threads)
        inputs, outputs = it.get_input_details(), it.get_output_details()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(f"model has {len(inputs)} inputs and {len(outputs)} outputs; "
                             "the evaluator runs single-input models (first output is scored)")
        det = inputs[0]
        shape = [int(d) for d in det["shape"]]
        signature = [int(d) for d in det.get("shape_signature", det["shape"])]
        if shape and shape[0] != 1:
            if signature and signature[0] == -1:
                it.resize_tensor_input(det["index"], [1] + shape[1:])
            else:
                raise ModelError(f"model input has a fixed batch size of {shape[0]}; "
                                 "the evaluator runs batch 1 (convert with batch 1 or dynamic)")
        it.allocate_tensors()
        self._it = it
        self._in = it.get_input_details()[0]["index"]
        self._out = it.get_output_details()[0]["index"]
        self.input = _tflite_info(it.get_input_details()[0])
        self.output = _tflite_info(it.get_output_details()[0])

    latency_scope = "invoke"

    def run(self, sample: np.ndarray) -> np.ndarray:
        self._it.set_tensor(self._in, sample)
        self._it.invoke()
        return self._it.get_tensor(self._out)

    def timed_run(self, sample: np.ndarray) -> Tuple[float, float]:
        t0 = time.perf_counter()
        self._it.set_tensor(self._in, sample)
        t1 = time.perf_counter()
        self._it.invoke()
        t2 = time.perf_counter()
        self._it.get_tensor(self._out)
        t3 = time.perf_counter()
        return (t2 - t1) * 1e3, (t3 - t0) * 1e3


class _MicroRunner(_Runner):
    """TensorFlow Lite Micro's Python interpreter with a fixed tensor arena (no threads)."""

    def __init__(self, runtime_mod: Any, model_path: str, arena_bytes: int):
        self._it = runtime_mod.Interpreter.from_file(model_path, arena_size=arena_bytes)
        self.input = _tflite_info(self._it.get_input_details(0))
        self.output = _tflite_info(self._it.get_output_details(0))

    latency_scope = "invoke"

    def run(self, sample: np.ndarray) -> np.ndarray:
        self._it.set_input(sample, 0)
        self._it.invoke()
        return self._it.get_output(0)

    def timed_run(self, sample: np.ndarray) -> Tuple[float, float]:
        t0 = time.perf_counter()
        self._it.set_input(sample, 0)
        t1 = time.perf_counter()
        self._it.invoke()
        t2 = time.perf_counter()
        self._it.get_output(0)
        t3 = time.perf_counter()
        return (t2 - t1) * 1e3, (t3 - t0) * 1e3


class _OnnxRunner(_Runner):
    """onnxruntime ``InferenceSession`` on the CPU provider, ``threads`` intra-op threads."""

    def __init__(self, ort: Any, model_path: str, threads: int):
        self.num_threads = threads
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(model_path, sess_options=opts,
                                    providers=["CPUExecutionProvider"])
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(f"model has {len(inputs)} inputs and {len(outputs)} outputs; "
                             "the evaluator runs single-input models (first output is scored)")
        self._sess = sess
        self._in, self._out = inputs[0].name, [outputs[0].name]
        self.input = self._info(inputs[0])
        self.output = self._info(outputs[0])

    @staticmethod
    def _info(arg: Any) -> TensorInfo:
        if arg.type not in _ONNX_DTYPES:
            raise ModelError(f"ONNX tensor {arg.name!r} has unsupported type {arg.type}")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
        return TensorInfo(np.dtype(_ONNX_DTYPES[arg.type]), shape, None, None)

    def run(self, sample: np.ndarray) -> np.ndarray:
        return self._sess.run(self._out, {self._in: sample})[0]


def _version_of(runtime: str, module: Any) -> Optional[str]:
    """Installed version of a runtime: the module's ``__version__``, else its distribution's."""
    version = getattr(module, "__version__", None)
    if isinstance(version, str) and version:
        return version
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    for dist in _DIST_NAMES[runtime]:
        try:
            return metadata.version(dist)
        except Exception:
            continue
    return None


def _import_runtime(runtime: str) -> Tuple[Any, Optional[str]]:
    """Import one runtime lazily; return (interpreter class or module, version).

    Raises RuntimeUnavailableError when it is not installed or fails to import.
    """
    try:
        if runtime == "ai_edge_litert":
            import ai_edge_litert
            from ai_edge_litert.interpreter import Interpreter
            return Interpreter, _version_of(runtime, ai_edge_litert)
        if runtime == "tflite_runtime":
            import tflite_runtime
            from tflite_runtime.interpreter import Interpreter
            return Interpreter, _version_of(runtime, tflite_runtime)
        if runtime == "tensorflow":
            import tensorflow as tf
            return tf.lite.Interpreter, _version_of(runtime, tf)
        if runtime == "tflite_micro":
            import tflite_micro
            from tflite_micro.python.tflite_micro import runtime as micro_runtime
            return micro_runtime, _version_of(runtime, tflite_micro)
        if runtime == "onnxruntime":
            import onnxruntime
            return onnxruntime, _version_of(runtime, onnxruntime)
    except Exception as exc:  # ImportError, or a broken install (numpy ABI mismatch...)
        raise RuntimeUnavailableError(
            f"runtime {runtime!r} is not available ({type(exc).__name__}: {_one_line(exc)}); "
            f"install it with: {_INSTALL_HINT[runtime]}") from exc
    raise UsageError(f"unknown runtime {runtime!r}; choose from auto, {', '.join(RUNTIMES)}")


def _resolve_runtime(runtime: str, fmt: str) -> Tuple[str, Any, Optional[str]]:
    """Pick the runtime for a model format; ``auto`` takes the first importable one."""
    if runtime == "auto":
        candidates = _AUTO_TFLITE if fmt == "tflite" else ("onnxruntime",)
        reasons = []
        for name in candidates:
            try:
                return (name,) + _import_runtime(name)
            except RuntimeUnavailableError as exc:
                reasons.append(f"{name} ({type(exc.__cause__).__name__})")
        raise RuntimeUnavailableError(
            f"no runtime for a .{fmt} model is installed (tried {', '.join(reasons)}); "
            f"install one with: {_INSTALL_HINT[candidates[0]]}")
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose from auto, {', '.join(RUNTIMES)}")
    wanted = "onnx" if runtime == "onnxruntime" else "tflite"
    if fmt != wanted:
        raise UsageError(f"runtime {runtime!r} runs .{wanted} models, but the model is .{fmt}")
    return (runtime,) + _import_runtime(runtime)


# ------------------------------------------------------------------------------ TFLite Micro

_MICRO_PROBE = r"""
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
it = runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))
d = it.get_input_details(0)
it.set_input(np.zeros(tuple(int(s) for s in d["shape"]), dtype=d["dtype"]), 0)
it.invoke()
it.get_output(0)
"""
_ARENA_MARKERS = ("failed to allocate", "failed to resize buffer", "missing:",
                  "failed starting model allocation")


def _probe_micro(model_path: str, arena_bytes: int, timeout_s: float = 300.0) -> None:
    """Create the TFLM interpreter and invoke once in a child process.

    TFLite Micro can crash the whole process (SIGSEGV) instead of raising when the arena is too
    small, so the first attempt runs in a separate Python. Side effect: spawns
    ``sys.executable``. Raises ArenaError (arena too small / crash) or ModelError (other).
    """
    try:
        proc = subprocess.run([sys.executable, "-c", _MICRO_PROBE, model_path, str(arena_bytes)],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"tflite_micro did not finish one inference in {timeout_s:.0f} s") from exc
    if proc.returncode == 0:
        return
    log = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    last = log[-1] if log else "no output"
    native = next((line for line in log if any(m in line.lower() for m in _ARENA_MARKERS)), None)
    if proc.returncode < 0:
        raise ArenaError(
            f"tflite_micro crashed (signal {-proc.returncode}) with arena_bytes={arena_bytes}: "
            f"the arena is most likely too small ({native or last}); try a larger --arena-bytes")
    if native is not None:
        raise ArenaError(f"tflite_micro could not allocate tensors in arena_bytes={arena_bytes} "
                         f"({native}); try a larger --arena-bytes")
    raise ModelError(f"tflite_micro failed to load or run the model (corrupt or unsupported "
                     f"op?): {last}")


# ------------------------------------------------------------------------ crash-safe first run

_PROBE = r"""
import runpy, sys
runpy.run_path(sys.argv[1])["_probe_in_child"](*sys.argv[2:])
"""


def _probe_in_child(model_path: str, runtime: str, threads: str) -> None:
    """Child side of :func:`_probe`: load the model, allocate, run once on zeros; exit 0, or 1 on
    a Python error (the parent then reports that error itself)."""
    try:
        fmt = "onnx" if runtime == "onnxruntime" else "tflite"
        name, runtime_obj, _ = _resolve_runtime(runtime, fmt)
        if name == "onnxruntime":
            runner: _Runner = _OnnxRunner(runtime_obj, model_path, int(threads))
        else:
            runner = _LiteRunner(runtime_obj, model_path, int(threads))
        shape = tuple(1 if d is None else int(d) for d in runner.input.shape)
        runner.run(np.zeros(shape, dtype=runner.input.dtype))
    except Exception:
        sys.exit(1)
    sys.exit(0)


def _probe(model_path: str, runtime: str, threads: int, timeout_s: float = 300.0) -> None:
    """Load the model and run it once on zeros in a child Python before this process does.

    A corrupt model that passes :func:`check_tflite_structure` can still crash a runtime (a
    SIGSEGV inside the interpreter) instead of raising; the child takes the crash, and this
    raises :class:`ModelCrashError` naming the file and the signal. A Python error in the child
    is left for the in-process load to report. Side effect: spawns ``sys.executable`` once.
    """
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, os.path.abspath(__file__), model_path, runtime,
                               str(threads)], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"{runtime} did not load and run {os.path.basename(model_path)} once in "
                         f"{timeout_s:.0f} s") from exc
    if proc.returncode < 0:
        sig = -proc.returncode
        raise ModelCrashError(f"model file {model_path} crashed the interpreter ({runtime}, signal {sig}"
                              f"{' ' + _signal_name(sig) if _signal_name(sig) else ''}) when loaded and run "
                              "once in a child process: the file is corrupt or not a model this runtime "
                              "can run; re-export or re-copy it")


def _signal_name(sig: int) -> str:
    import signal

    try:
        return signal.Signals(sig).name
    except ValueError:
        return ""


# ------------------------------------------------------------------------------ data handling

def load_eval_data(path: str) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Read ``eval.npz``: returns (x, y, ref or None) as stored (see :func:`load_eval_task` for
    its task and threshold).

    Raises DataError when the file is missing or unreadable or a key is missing.
    """
    arrays = _read_npz(path)
    return arrays["x"], arrays["y"], arrays.get("ref")


def load_eval_task(path: str) -> Tuple[str, Optional[float]]:
    """The ``task`` (``classification`` when absent) and anomaly ``threshold`` (or None) of an
    ``eval.npz``. Raises DataError for an unknown task or a malformed threshold."""
    arrays = _read_npz(path)
    task = str(arrays["task"].item()) if "task" in arrays else "classification"
    threshold = float(np.asarray(arrays["threshold"]).item()) if "threshold" in arrays else None
    return _check_task(task, threshold)


def _check_task(task: Any, threshold: Any) -> Tuple[str, Optional[float]]:
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if task == "anomaly":
        if threshold is None or not np.isfinite(float(threshold)):
            raise DataError("task anomaly needs a finite threshold (eval.npz 'threshold', or threshold=)")
        return task, float(threshold)
    return task, None


def _read_npz(path: str) -> Dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise DataError(f"eval data file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise DataError(f"eval data {path} is not a .npz file (a zip archive of .npy arrays)")
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DataError(f"cannot read eval data {path} as .npz: {_one_line(exc)}") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"eval data {path} lacks array(s) {', '.join(missing)} "
                        f"(found: {', '.join(sorted(arrays)) or 'none'}); expected x, y[, ref, task, threshold]")
    return arrays


def _check_npz_sizes(path: str) -> None:
    """Refuse an array above MAX_ARRAY_BYTES from its ``.npy`` header, before it is loaded."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                size = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
                if size > MAX_ARRAY_BYTES:
                    raise DataError(f"eval data {path}: array {info.filename[:-4]!r} of shape {tuple(shape)} is "
                                    f"{size} bytes decompressed, above the limit of {MAX_ARRAY_BYTES} bytes "
                                    "(EDGEKIT_MAX_ARRAY_BYTES)")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read eval data {path} as .npz: {_one_line(exc)}") from exc


def _check_x(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise DataError("eval data x holds no samples")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"eval data x must be numeric, got dtype {x.dtype}")
    if x.dtype.kind in "fc":
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise DataError(f"eval data x holds NaN or inf in {int(bad.sum())} of {len(x)} samples (first: "
                            f"sample {int(bad.argmax())}); no metric can be computed honestly: clean or drop them")
    return x


def _check_data(x: Any, y: Any, ref: Any,
                task: str = "classification") -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    x = _check_x(x)
    y = np.asarray(y)
    if task != "classification":
        return _check_task_data(x, y, ref, task)
    if y.ndim == 2 and y.size and y.dtype.kind in "iufb":
        y = y.argmax(axis=1)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"eval data y has shape {y.shape}; expected ({len(x)},) labels "
                        f"for x of shape {x.shape}")
    if y.dtype.kind not in "iufb" or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
        raise DataError("eval data y must hold integer class labels (finite whole numbers)")
    if y.size == 0:
        raise DataError("eval data y is empty")
    if y.min() < 0:
        raise DataError(f"eval data y holds negative labels (first: {_num(y.min())}); labels are class "
                        "indices 0..K-1")
    if y.max() > MAX_LABEL:
        raise DataError(f"eval data y holds label {_num(y.max())}, above the evaluator's limit of {MAX_LABEL}; "
                        "labels are class indices 0..K-1 below the model's number of outputs")
    y = y.astype(np.int64)
    if ref is not None:
        ref = np.asarray(ref)
        if ref.ndim == 2 and ref.size and ref.dtype.kind in "iufb":
            ref = ref.argmax(axis=1)
        if ref.shape != y.shape or ref.dtype.kind not in "iufb":
            raise DataError(f"eval data ref has shape {ref.shape} ({ref.dtype}); expected {y.shape} "
                            "integers (one float-model prediction per sample)")
        if ref.dtype.kind == "f" and not np.all(np.isfinite(ref)):
            raise DataError("eval data ref holds NaN or inf; expected the float model's predicted classes")
        ref = ref.astype(np.int64)
    return x.astype(np.float32, copy=False), y, ref


def _check_task_data(x: np.ndarray, y: np.ndarray, ref: Any,
                     task: str) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Regression: float labels and predictions; anomaly: 0/1 labels and float scores."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"eval data y has shape {y.shape}; expected ({len(x)},) for x of shape {x.shape}")
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"eval data y must be numeric, got dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        raise DataError("eval data y holds NaN or inf")
    if task == "anomaly":
        if not np.all((y == 0) | (y == 1)):
            raise DataError("task anomaly needs labels 0 (normal) and 1 (anomaly) in eval data y")
        y = y.astype(np.int64)
    else:
        y = y.astype(np.float64)
    if ref is not None:
        ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
        if ref.shape != (len(y), 1):
            raise DataError(f"eval data ref has shape {ref.shape}; expected ({len(y)},) float-model "
                            f"{'predictions' if task == 'regression' else 'anomaly scores'}")
        ref = ref[:, 0]
        if not np.all(np.isfinite(ref)):
            raise DataError("eval data ref holds NaN or inf; expected the float model's "
                            f"{'predictions' if task == 'regression' else 'anomaly scores'}")
    return x.astype(np.float32, copy=False), y, ref


def _num(v: Any) -> str:
    v = v.item() if hasattr(v, "item") else v
    return f"{v:g}" if isinstance(v, float) else str(v)


def _check_labels_fit(y: np.ndarray, outputs: int) -> None:
    """Classification labels must be below the model's number of classes (one output column is
    a binary model: classes 0 and 1); checked before any per-class array is allocated."""
    classes = outputs if outputs > 1 else 2
    top = int(y.max())
    if top >= classes:
        raise DataError(f"eval data y holds label {top}, but the model has {outputs} output"
                        f"{'s' if outputs != 1 else ''} (classes 0..{classes - 1}): the labels do not fit "
                        "this model (wrong model, or labels not numbered 0..K-1)")


def _check_outputs(outputs: np.ndarray, runtime: str) -> None:
    bad = ~np.isfinite(outputs).all(axis=1) if outputs.size else np.zeros(len(outputs), bool)
    if bad.any():
        raise ModelError(f"the model produced NaN or inf outputs ({runtime}) for {int(bad.sum())} of {len(outputs)} "
                         f"samples (first: sample {int(bad.argmax())}); no metric is reported: the model or "
                         "its quantization is broken")


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float values -> the integer input dtype: ``round(x / scale) + zero_point``, clipped.

    Rounds half away from zero in float32, as TFLite's reference Quantize does.
    """
    if info.scale is None or info.zero_point is None:
        raise ModelError(f"model input is {info.dtype.name} but carries no quantization "
                         "scale/zero point; the evaluator cannot map float data onto it")
    v = np.asarray(x, dtype=np.float32) / np.float32(info.scale)
    v = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    lim = np.iinfo(info.dtype)
    return np.clip(v.astype(np.int64) + info.zero_point, lim.min, lim.max).astype(info.dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Integer outputs -> float32 ``(q - zero_point) * scale``; float outputs pass through."""
    if info.scale is None or info.zero_point is None:
        return np.asarray(q, dtype=np.float32)
    return ((np.asarray(q, dtype=np.int64) - info.zero_point) * info.scale).astype(np.float32)


def _prepare_inputs(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Reshape samples to the model's per-sample input shape and cast/quantize to its dtype."""
    want = info.shape[1:]
    have = x.shape[1:]
    if len(want) != len(have) or any(w is not None and w != h for w, h in zip(want, have)):
        sizes_differ = (any(w is None for w in want)
                        or int(np.prod(want, dtype=np.int64)) != int(np.prod(have, dtype=np.int64)))
        if sizes_differ:
            raise DataError(f"eval samples have shape {tuple(have)}, the model input wants "
                            f"{tuple(want)} per sample and the sizes differ")
        x = x.reshape((len(x),) + tuple(int(w) for w in want))
    if info.dtype in [np.dtype(t) for t in _QUANTIZED_DTYPES]:
        return np.ascontiguousarray(quantize(x, info))
    if np.issubdtype(info.dtype, np.floating):
        return np.ascontiguousarray(x.astype(info.dtype))
    raise ModelError(f"model input dtype {info.dtype.name} is not supported "
                     "(expected float or int8/uint8/int16)")


# ----------------------------------------------------------------------------------- metrics

def predict_classes(scores: np.ndarray) -> np.ndarray:
    """Class predictions (int64) from per-sample scores, as the evaluator scores them.

    ``scores`` is (N, C): argmax over C > 1 columns; one column is thresholded (see _predict).
    """
    scores = np.asarray(scores)
    return _predict(scores.reshape(len(scores), -1))


def _predict(scores: np.ndarray) -> np.ndarray:
    """Class predictions from per-sample scores: argmax, or a threshold for one output column.

    A single output column is read as a probability (threshold 0.5) when every score lies in
    [0, 1], otherwise as a logit (threshold 0).
    """
    if scores.shape[1] > 1:
        return scores.argmax(axis=1).astype(np.int64)
    s = scores[:, 0]
    threshold = 0.5 if (s.min() >= 0.0 and s.max() <= 1.0) else 0.0
    return (s >= threshold).astype(np.int64)


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``num_classes`` x ``num_classes`` counts; rows are true labels, columns predictions."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def per_class_metrics(cm: np.ndarray) -> List[Dict[str, Any]]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    Precision is null for a class never predicted, recall null for a class absent from the
    labels, F1 (= 2TP / (2TP + FP + FN)) null when both are.
    """
    rows = []
    for k in range(cm.shape[0]):
        tp = int(cm[k, k])
        predicted = int(cm[:, k].sum())
        support = int(cm[k, :].sum())
        denom = predicted + support
        rows.append({
            "class": k,
            "precision": tp / predicted if predicted else None,
            "recall": tp / support if support else None,
            "f1": 2 * tp / denom if denom else None,
            "support": support,
        })
    return rows


def roc_auc(y: np.ndarray, score: np.ndarray) -> Optional[float]:
    """Binary ROC AUC by the rank statistic (Mann-Whitney U, ties get average ranks).

    ``y`` holds 0/1 labels, ``score`` the positive-class score. None when a class is absent.
    """
    y = np.asarray(y)
    n_pos = int((y == 1).sum())
    n_neg = int(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(np.asarray(score, dtype=np.float64),
                                   return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0            # 1-based average rank of each distinct value
    ranks = avg_rank[inverse.ravel()]
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_metrics(y: np.ndarray, scores: np.ndarray) -> Dict[str, Any]:
    """``{"accuracy"}``: top-1 accuracy of per-sample class ``scores`` (N, C) against labels ``y``."""
    pred = predict_classes(scores)
    return {"accuracy": float((pred == np.asarray(y)).sum()) / len(pred)}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> Dict[str, Any]:
    """MAE, RMSE, R² and bias (mean prediction - mean label) of predictions ``pred`` against ``y``.

    Units are the label's (R² has none). R² is null when the labels are all equal.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    err = pred - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": 1.0 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else None,
            "bias": float(pred.mean() - y.mean())}


def reconstruction_error(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Anomaly score per sample: mean squared difference between input and reconstruction (float64)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    recon = np.asarray(recon, dtype=np.float64).reshape(len(recon), -1)
    if x.shape != recon.shape:
        raise ModelError(f"an autoencoder must output its input's shape: input has {x.shape[1]} values "
                         f"per sample, the output {recon.shape[1]}")
    return ((x - recon) ** 2).mean(axis=1)


def threshold_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> Dict[str, Any]:
    """Precision, recall and F1 of flagging ``scores >= threshold`` as anomalies (label 1).

    Precision is null when nothing is flagged, recall when there are no anomalies, F1 when both.
    """
    y = np.asarray(y).ravel()
    flagged = np.asarray(scores).ravel() >= threshold
    tp = int((flagged & (y == 1)).sum())
    fp = int((flagged & (y == 0)).sum())
    fn = int((~flagged & (y == 1)).sum())
    denom = 2 * tp + fp + fn
    return {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "f1": 2 * tp / denom if denom else None}


def anomaly_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> Dict[str, Any]:
    """ROC-AUC of the anomaly ``scores`` (threshold-free) and precision, recall, F1 at ``threshold``."""
    return {"roc_auc": roc_auc(np.asarray(y), scores), **threshold_metrics(y, scores, threshold),
            "threshold": float(threshold)}


def _latency_stats(times_ms: Sequence[float]) -> Optional[Dict[str, float]]:
    if not times_ms:
        return None
    t = np.asarray(times_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"mean": float(t.mean()), "std": float(t.std()),
            "p50": float(p50), "p90": float(p90), "p99": float(p99)}


# --------------------------------------------------------------------------- host and memory

def _rss_bytes() -> Optional[int]:
    """Current resident set size from /proc/self/statm, or None where there is no /proc."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _peak_rss_bytes() -> Optional[int]:
    """Peak RSS of this process (ru_maxrss: KiB on Linux, bytes on macOS); None if unavailable."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if peak <= 0:
        return None
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _cpu_name() -> Optional[str]:
    """CPU name: /proc/cpuinfo "model name" (x86), else "Model" (Raspberry Pi), else platform."""
    info = _read_text("/proc/cpuinfo") or ""
    fields: Dict[str, str] = {}
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields.get("model name") or fields.get("Model") or platform.processor() or None


def host_info() -> Dict[str, Any]:
    """Machine, CPU, OS and Python version of the host the evaluator runs on."""
    return {"machine": platform.machine() or None, "cpu": _cpu_name(),
            "os": platform.platform(), "python": platform.python_version()}


def default_measured_on() -> str:
    """``rpi:<hostname>`` on a Raspberry Pi (per /proc/device-tree/model), else ``host-<arch>``."""
    model = _read_text("/proc/device-tree/model") or ""
    if "Raspberry Pi" in model:
        return f"rpi:{socket.gethostname()}"
    return f"host-{platform.machine()}"


# ----------------------------------------------------------------------------------- evaluate

def _model_format(path: str, head: bytes) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".tflite" or (ext != ".onnx" and head[4:8] == b"TFL3"):
        return "tflite"
    if ext == ".onnx":
        return "onnx"
    raise ModelError(f"cannot tell the format of {path}: expected a .tflite or .onnx file")


class _Malformed(Exception):
    pass


def check_tflite_structure(blob: bytes) -> Optional[str]:
    """Structural sanity check of a TFLite flatbuffer; returns what is wrong, or None if sound.

    Checks the 'TFL3' identifier and that the model's tables and vectors (operator codes,
    subgraphs with their tensors and operators, buffers with their data) lie inside the file.
    Not a full flatbuffer verifier, but it rejects random or truncated files, which some
    runtimes (tflite_runtime 2.14, TFLite Micro) crash on instead of raising.
    """
    n = len(blob)

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise _Malformed(what)

    def u16(pos: int) -> int:
        return struct.unpack_from("<H", blob, pos)[0]

    def u32(pos: int) -> int:
        return struct.unpack_from("<I", blob, pos)[0]

    def table(pos: int, what: str) -> Tuple[int, int, int, int]:
        need(0 <= pos <= n - 4, f"{what} table lies outside the file")
        vtable = pos - struct.unpack_from("<i", blob, pos)[0]
        need(0 <= vtable <= n - 4, f"{what} vtable lies outside the file")
        vt_size, tbl_size = u16(vtable), u16(vtable + 2)
        need(vt_size >= 4 and vt_size % 2 == 0 and vtable + vt_size <= n,
             f"{what} vtable is malformed")
        need(tbl_size >= 4 and pos + tbl_size <= n, f"{what} table runs past the end")
        return pos, vtable, vt_size, tbl_size

    def offset_field(t: Tuple[int, int, int, int], i: int, what: str) -> Optional[int]:
        pos, vtable, vt_size, tbl_size = t
        if 4 + 2 * i + 2 > vt_size:
            return None
        off = u16(vtable + 4 + 2 * i)
        if off == 0:
            return None
        need(off + 4 <= tbl_size, f"{what} field lies outside its table")
        return pos + off + u32(pos + off)

    def vector(t: Tuple[int, int, int, int], i: int, elem_bytes: int,
               what: str) -> Tuple[int, int]:
        start = offset_field(t, i, what)
        if start is None:
            return 0, 0
        need(start + 4 <= n, f"{what} vector lies outside the file")
        count = u32(start)
        need(start + 4 + count * elem_bytes <= n, f"{what} vector runs past the end")
        return start + 4, count

    def tables(t: Tuple[int, int, int, int], i: int, what: str) -> List[Tuple[int, int, int, int]]:
        start, count = vector(t, i, 4, what)
        return [table(start + 4 * k + u32(start + 4 * k), what) for k in range(count)]

    try:
        need(n >= 8 and blob[4:8] == b"TFL3", "no 'TFL3' identifier at byte 4")
        model = table(u32(0), "model")
        tables(model, 1, "operator code")
        subgraphs = tables(model, 2, "subgraph")
        need(len(subgraphs) > 0, "the model has no subgraph")
        for sg in subgraphs:
            tables(sg, 0, "tensor")
            vector(sg, 1, 4, "subgraph inputs")
            vector(sg, 2, 4, "subgraph outputs")
            for op in tables(sg, 3, "operator"):
                vector(op, 1, 4, "operator inputs")
                vector(op, 2, 4, "operator outputs")
        for buf in tables(model, 4, "buffer"):
            vector(buf, 0, 1, "buffer data")
    except _Malformed as exc:
        return str(exc)
    except struct.error:
        return "an offset points outside the file"
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def evaluate(model_path: str, x: Any, y: Any, *, ref: Any = None, runtime: str = "auto",
             threads: int = 1, warmup: int = 10, runs: int = 100,
             arena_bytes: Optional[int] = None, measured_on: Optional[str] = None,
             samples: Optional[int] = None, task: str = "classification",
             threshold: Optional[float] = None, probe: bool = False) -> Dict[str, Any]:
    """Run ``model_path`` on ``x`` one sample at a time; return the task's metrics, latency and memory.

    Args:
      model_path: a ``.tflite`` or ``.onnx`` file.
      x: float inputs, shape (N, ...) (preprocessed, not quantized); y: N labels (integer classes;
      regression: numbers; anomaly: 0 normal, 1 anomaly);
      ref: optional N outputs of the float reference model: predicted classes (for
      ``agreement_with_float``), regression predictions or anomaly scores (for
      ``mean_abs_diff_vs_float``).
      task: ``classification``, ``regression`` or ``anomaly`` (see the module docstring);
      threshold: the anomaly score threshold (required for, and only used by, ``anomaly``).
      runtime: ``auto`` or one of :data:`RUNTIMES`.
      threads: interpreter threads (>= 1); ignored (reported null) for tflite_micro.
      warmup: untimed runs after the first inference; runs: timed runs (0 gives null latency).
      arena_bytes: TFLite Micro tensor arena in bytes; required for (and only for) tflite_micro.
      measured_on: label for where this ran; default from :func:`default_measured_on`.
      samples: evaluate accuracy on the first ``samples`` samples only (default: all).
      probe: first load the model and run it once on zeros in a child Python, so a model that
      crashes the runtime raises :class:`ModelCrashError` instead of taking this process down
      (the CLI does this unless ``--no-probe``; tflite_micro always does its own).

    Returns a JSON-ready dict (see the module docstring): times in milliseconds, sizes and
    memory in bytes, null where the runtime or platform cannot measure a field.

    Side effects: imports the chosen runtime; for tflite_micro, first runs one inference in a
    child Python process (TFLM may crash instead of raising on a too-small arena).

    Raises:
      UsageError, DataError, RuntimeUnavailableError, ModelError, ArenaError (all
      EvaluationError) with a one-line message saying what failed and how to fix it.
    """
    return _evaluate(model_path, x, y, ref=ref, runtime=runtime, threads=threads, warmup=warmup,
                     runs=runs, arena_bytes=arena_bytes, measured_on=measured_on,
                     samples=samples, task=task, threshold=threshold, probe=probe)[0]


def predict_outputs(model_path: str, x: Any, *, runtime: str = "auto", threads: int = 1,
                    arena_bytes: Optional[int] = None, probe: bool = False) -> np.ndarray:
    """Run ``model_path`` on every sample of ``x`` (batch 1); return the dequantized outputs.

    The same path as :func:`evaluate`'s accuracy pass (inputs quantized for integer models,
    outputs dequantized with the output tensor's scale and zero point), without any timing.

    Args: as :func:`evaluate`. Returns float32 of shape (N, outputs per sample): logits for a
    model that ends in logits. Side effects and errors: as :func:`evaluate` (tflite_micro first
    runs one inference in a child process; TFLM can still take this process down if the model
    misbehaves, so callers that must survive run the CLI with ``--dump-outputs`` instead).

    Example::

        >>> logits = predict_outputs("model_int8.tflite", x, runtime="ai_edge_litert")
        >>> (logits.argmax(1) == y).mean()
    """
    _check_options(runtime=runtime, threads=threads, arena_bytes=arena_bytes)
    x = _check_x(x).astype(np.float32, copy=False)
    runner, _, _ = _open(model_path, runtime, threads, arena_bytes, probe=probe)
    xq = _prepare_inputs(x, runner.input)
    return _run_all(runner, xq)


def _check_options(*, runtime: str, threads: Any, arena_bytes: Any, warmup: Any = 0,
                   runs: Any = 0, samples: Any = None) -> None:
    """Raise UsageError for an option out of range (the API's and the CLI's checks)."""
    for name, value, low in (("threads", threads, 1), ("warmup", warmup, 0), ("runs", runs, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
    if samples is not None and (not isinstance(samples, (int, np.integer)) or samples < 1):
        raise UsageError(f"samples must be an integer >= 1, got {samples!r}")
    if runtime != "auto" and runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose from auto, {', '.join(RUNTIMES)}")
    if runtime == "tflite_micro":
        if arena_bytes is None or not isinstance(arena_bytes, (int, np.integer)) or arena_bytes < 1:
            raise UsageError("runtime tflite_micro needs arena_bytes (--arena-bytes N, N >= 1): "
                             "the tensor arena size to run with")
    elif arena_bytes is not None:
        raise UsageError("arena_bytes (--arena-bytes) applies to --runtime tflite_micro only")


def _open(model_path: Any, runtime: str, threads: int,
          arena_bytes: Optional[int], probe: bool = False) -> Tuple[_Runner, str, bytes]:
    """Check the model file, pick the runtime and load the model: (runner, format, file bytes).

    ``runner.init_ms`` is the interpreter creation time (allocation included), and
    ``runner.rss_growth`` the RSS growth it caused (None without /proc).
    """
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise ModelError(f"model file not found: {model_path}")
    with open(model_path, "rb") as f:
        blob = f.read()
    fmt = _model_format(model_path, blob[:8])
    if fmt == "tflite":
        problem = check_tflite_structure(blob)
        if problem is not None:
            raise ModelError(f"{model_path} is not a valid TFLite flatbuffer ({problem}): the "
                             "file is corrupt, truncated or not a .tflite model")
    name, runtime_obj, version = _resolve_runtime(runtime, fmt)

    if name == "tflite_micro":
        _probe_micro(model_path, int(arena_bytes))
    elif probe:
        _probe(model_path, name, int(threads))

    rss_before = _rss_bytes()
    t0 = time.perf_counter()
    try:
        if name == "tflite_micro":
            runner: _Runner = _MicroRunner(runtime_obj, model_path, int(arena_bytes))
        elif name == "onnxruntime":
            runner = _OnnxRunner(runtime_obj, model_path, int(threads))
        else:
            runner = _LiteRunner(runtime_obj, model_path, int(threads))
    except EvaluationError:
        raise
    except Exception as exc:
        if name == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2:
            raise RuntimeUnavailableError(
                f"tflite_runtime {version} failed to create an interpreter under numpy "
                f"{np.__version__} ({type(exc).__name__}); tflite-runtime wheels are built for "
                "numpy 1.x: pip install 'numpy<2', or use ai-edge-litert") from exc
        raise ModelError(f"{name} cannot load {os.path.basename(model_path)} (corrupt or "
                         f"unsupported model?): {type(exc).__name__}: {_one_line(exc)}") from exc
    runner.init_ms = (time.perf_counter() - t0) * 1e3
    rss_after = _rss_bytes()
    runner.rss_growth = (rss_after - rss_before
                         if rss_before is not None and rss_after is not None else None)
    runner.name, runner.version = name, version
    return runner, fmt, blob


def _run_all(runner: _Runner, xq: np.ndarray) -> np.ndarray:
    """Every prepared sample through ``runner`` (batch 1); dequantized (N, outputs) float32."""
    try:
        outputs = [np.asarray(runner.run(xq[i:i + 1])).reshape(-1) for i in range(len(xq))]
    except EvaluationError:
        raise
    except Exception as exc:
        raise ModelError(f"{runner.name} failed while running the model: "
                         f"{type(exc).__name__}: {_one_line(exc)}") from exc
    return dequantize(np.stack(outputs), runner.output)


def _evaluate(model_path: Any, x: Any, y: Any, *, ref: Any, runtime: str, threads: int,
              warmup: int, runs: int, arena_bytes: Optional[int], measured_on: Optional[str],
              samples: Optional[int], task: str = "classification",
              threshold: Optional[float] = None, probe: bool = False) -> Tuple[Dict[str, Any], np.ndarray]:
    """:func:`evaluate`, also returning the dequantized outputs of the accuracy pass."""
    _check_options(runtime=runtime, threads=threads, arena_bytes=arena_bytes, warmup=warmup,
                   runs=runs, samples=samples)
    task, threshold = _check_task(task, threshold)
    x, y, ref = _check_data(x, y, ref, task)
    if samples is not None:
        x, y = x[:samples], y[:samples]
        ref = ref[:samples] if ref is not None else None

    model_path = os.fspath(model_path)
    runner, fmt, blob = _open(model_path, runtime, threads, arena_bytes, probe=probe)
    name, version = runner.name, runner.version
    known_outputs = [d for d in runner.output.shape[1:]]
    if task == "classification" and all(d is not None for d in known_outputs):
        _check_labels_fit(y, int(np.prod(known_outputs, dtype=np.int64)))

    xq = _prepare_inputs(x, runner.input)
    n = len(xq)
    try:
        first = xq[0:1]
        t0 = time.perf_counter()
        runner.run(first)
        first_ms = (time.perf_counter() - t0) * 1e3
        for i in range(warmup):
            runner.run(xq[(i + 1) % n:(i + 1) % n + 1])
        times_ms, io_times_ms = [], []
        for i in range(runs):
            j = (warmup + 1 + i) % n
            ms, io_ms = runner.timed_run(xq[j:j + 1])
            times_ms.append(ms)
            io_times_ms.append(io_ms)
    except EvaluationError:
        raise
    except Exception as exc:
        raise ModelError(f"{name} failed while running the model: "
                         f"{type(exc).__name__}: {_one_line(exc)}") from exc

    scores = _run_all(runner, xq)
    _check_outputs(scores, name)
    task_fields = _task_results(task, x, y, ref, scores, threshold)

    result = {
        "model": os.path.basename(model_path),
        "format": fmt,
        "size_bytes": len(blob),
        "gzip_bytes": len(gzip.compress(blob, compresslevel=9)),
        "runtime": {"name": name, "version": version},
        "num_threads": runner.num_threads,
        "samples": n,
        "task": task,
        "accuracy": task_fields.pop("accuracy"),
        "agreement_with_float": task_fields.pop("agreement_with_float"),
        "latency_ms": _latency_stats(times_ms),
        "latency_scope": runner.latency_scope,
        "latency_with_io_ms": _latency_stats(io_times_ms),
        "init_ms": runner.init_ms,
        "first_inference_ms": first_ms,
        "warmup_runs": int(warmup),
        "timed_runs": int(runs),
        "arena_bytes": int(arena_bytes) if name == "tflite_micro" else None,
        "peak_rss_bytes": _peak_rss_bytes(),
        "rss_growth_bytes": runner.rss_growth,
        "input": runner.input.as_json(),
        "output": runner.output.as_json(),
        **task_fields,
        "measured_on": measured_on or default_measured_on(),
        "host": host_info(),
        "evaluator_version": EVALUATOR_VERSION,
    }
    return result, scores


def _task_results(task: str, x: np.ndarray, y: np.ndarray, ref: Optional[np.ndarray],
                  outputs: np.ndarray, threshold: Optional[float]) -> Dict[str, Any]:
    """The result fields that depend on the task, from the dequantized ``outputs`` (N, values)."""
    n = len(outputs)
    if task == "regression":
        if outputs.shape[1] != 1:
            raise ModelError(f"task regression needs a model with one output value, this one has "
                             f"{outputs.shape[1]}")
        pred = outputs[:, 0].astype(np.float64)
        return {"accuracy": None, "agreement_with_float": None, "metrics": regression_metrics(y, pred),
                "mean_abs_diff_vs_float": float(np.abs(pred - ref).mean()) if ref is not None else None,
                "per_class": None, "confusion_matrix": None, "roc_auc": None}
    if task == "anomaly":
        score = reconstruction_error(x, outputs)
        if not np.all(np.isfinite(score)):
            raise ModelError("the reconstruction error overflows (inf) for some samples; no metric is "
                             "reported: the autoencoder's outputs are far outside its inputs' range")
        metrics = anomaly_metrics(y, score, threshold)
        cm = confusion_matrix(y, (score >= threshold).astype(np.int64), 2)
        return {"accuracy": None, "agreement_with_float": None, "metrics": metrics, "threshold": threshold,
                "mean_abs_diff_vs_float": float(np.abs(score - ref).mean()) if ref is not None else None,
                "per_class": per_class_metrics(cm), "confusion_matrix": cm.tolist(),
                "roc_auc": metrics["roc_auc"]}
    _check_labels_fit(y, outputs.shape[1])
    pred = _predict(outputs)
    num_classes = outputs.shape[1] if outputs.shape[1] > 1 else 2
    cm = confusion_matrix(y, pred, num_classes)
    auc = None
    if num_classes == 2:
        positive = outputs[:, 1] - outputs[:, 0] if outputs.shape[1] == 2 else outputs[:, 0]
        auc = roc_auc(y, positive)
    metrics = classification_metrics(y, outputs)
    return {"accuracy": metrics["accuracy"],
            "agreement_with_float": float((pred == ref).sum()) / n if ref is not None else None,
            "metrics": metrics, "per_class": per_class_metrics(cm), "confusion_matrix": cm.tolist(),
            "roc_auc": auc}


# ------------------------------------------------------------------------------ audio (.wav)

def read_wav_clip(path: str, rate_hz: int, samples: int) -> np.ndarray:
    """One mono integer-PCM ``.wav`` file as float32 ``(samples,)`` in [-1, 1) (8-bit: (u - 128) /
    128; 16/24/32-bit signed: / 2**(bits - 1)), padded with zeros at the end when shorter.
    DataError for another rate, more channels, a longer clip, or a file ``wave`` cannot read."""
    try:
        with wave.open(path, "rb") as w:
            rate, width, channels, frames = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            if rate != rate_hz:
                raise DataError(f"{path}: {rate} Hz; the front end takes {rate_hz} Hz "
                                f"(resample: sox IN -r {rate_hz} OUT.wav)")
            if channels != 1:
                raise DataError(f"{path}: {channels} channels; the front end takes mono (sox IN -c 1 OUT.wav)")
            if width not in (1, 2, 3, 4):
                raise DataError(f"{path}: {8 * width}-bit samples; integer PCM of 8, 16, 24 or 32 bits is read")
            if frames > samples:
                raise DataError(f"{path}: {frames} samples is longer than the {samples} ({samples / rate_hz:g} s) "
                                "the model was trained on; cut it (sox IN OUT.wav trim 0 1)")
            raw = w.readframes(frames)
    except DataError:
        raise
    except (wave.Error, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable PCM .wav file ({_one_line(exc)})") from None
    if len(raw) != frames * width:
        raise DataError(f"{path}: truncated: the header promises {frames} samples")
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    out = np.zeros(samples, dtype=np.float32)
    out[:len(x)] = x
    return out


def wav_paths(path: str) -> List[str]:
    """``path`` itself, or every ``*.wav`` under the folder ``path`` (sorted, hidden names skipped)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"--wav {path}: no such file or folder")
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(".wav") and not f.startswith(".")]
    if not found:
        raise DataError(f"--wav {path}: the folder holds no .wav files")
    return sorted(found)


def _read_json(path: str, what: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"{what} {path}: not readable JSON ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{what} {path}: expected a JSON object")
    return data


def audio_features(frontend_path: str, clips: np.ndarray, meta: Dict[str, Any], *, runtime: str = "auto",
                   threads: int = 1, arena_bytes: Optional[int] = None) -> np.ndarray:
    """Features of ``clips`` ((n, samples) float32) from ``frontend.tflite``, one frame per invoke,
    framed as ``meta`` (``frontend.json``'s ``params``) says: float32 (n, frames, K, 1). In
    tflite_micro the arena is ``arena_bytes``, else the one ``frontend.json`` records (1 MiB
    without one)."""
    p = meta["params"]
    frames, hop, win = int(p["frames"]), int(p["hop_samples"]), int(p["window_samples"])
    if runtime == "tflite_micro" and arena_bytes is None:
        arena_bytes = int((meta.get("tflm_arena") or {}).get("recommended_bytes") or 1 << 20)
    elif runtime != "tflite_micro":
        arena_bytes = None
    runner, _, _ = _open(frontend_path, runtime, threads, arena_bytes)
    out = np.empty((len(clips), frames, int(p["features_per_frame"]), 1), dtype=np.float32)
    for i, clip in enumerate(clips):
        for f in range(frames):
            frame = np.ascontiguousarray(clip[None, hop * f: hop * f + win], dtype=np.float32)
            out[i, f, :, 0] = np.asarray(runner.run(frame), dtype=np.float32).reshape(-1)
    return out


def classify_wavs(model_path: str, wav: str, *, frontend: Optional[str] = None,
                  preprocess: Optional[str] = None, labels: Optional[str] = None, runtime: str = "auto",
                  threads: int = 1, arena_bytes: Optional[int] = None) -> List[Dict[str, Any]]:
    """Classify the ``.wav`` file(s) at ``wav`` with ``model_path`` behind its audio front end.

    ``frontend`` (default ``frontend.tflite`` beside the model) with its ``frontend.json``;
    ``preprocess`` (default ``preprocess.json`` beside the model, if there) normalizes the
    features; ``labels`` (default ``labels.txt`` beside the model, if there) names the classes.
    Returns one dict per file: ``file``, ``class`` (index), ``label``, ``scores`` (dequantized).
    """
    here = os.path.dirname(os.path.abspath(model_path))
    frontend = frontend or os.path.join(here, "frontend.tflite")
    if not os.path.isfile(frontend):
        raise UsageError(f"--wav needs the audio front end: {frontend} not found (--frontend FILE)")
    meta = _read_json(os.path.splitext(frontend)[0] + ".json", "front end description")
    if not isinstance(meta.get("params"), dict):
        raise DataError(f"{os.path.splitext(frontend)[0]}.json: no 'params' (not an edgekit frontend.json)")
    p = meta["params"]
    names = wav_paths(wav)
    clips = np.stack([read_wav_clip(f, int(p["sample_rate_hz"]), int(p["clip_samples"])) for f in names])
    x = audio_features(frontend, clips, meta, runtime=runtime, threads=threads)  # its own arena (frontend.json)
    pre = preprocess or os.path.join(here, "preprocess.json")
    if preprocess or os.path.isfile(pre):
        norm = _read_json(pre, "--preprocess")
        shape = tuple(norm.get("shape") or [-1])
        x = ((x - np.asarray(norm["offset"], np.float32).reshape(shape))
             / np.asarray(norm["scale"], np.float32).reshape(shape)).astype(np.float32)
    lab = labels or os.path.join(here, "labels.txt")
    classes: Optional[List[str]] = None
    if labels or os.path.isfile(lab):
        try:
            with open(lab, encoding="utf-8") as f:
                classes = [ln.rstrip("\n") for ln in f if ln.strip()]
        except OSError as exc:
            raise DataError(f"--labels {lab}: {_one_line(exc)}") from None
    runner, _, _ = _open(model_path, runtime, threads, arena_bytes)
    scores = _run_all(runner, _prepare_inputs(x, runner.input))
    _check_outputs(scores, runner.name)
    pred = predict_classes(scores)
    return [{"file": f, "class": int(c), "label": classes[c] if classes and c < len(classes) else str(int(c)),
             "scores": [float(v) for v in s]} for f, c, s in zip(names, pred, scores)]


# ---------------------------------------------------------------------------------------- CLI

class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line) instead of printing usage and exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(message)


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not >= {low}")
        return value
    return parse


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="evaluate.py", description=(
        "Evaluate one .tflite/.onnx model on eval.npz with one runtime: accuracy, "
        "benchmark_model-style latency (ms), memory (bytes). Prints JSON."))
    p.add_argument("--model", required=True, help="model file (.tflite or .onnx)")
    p.add_argument("--data", default=None,
                   help="eval.npz with x (float32), y (labels), optional ref, task, threshold "
                        "(required unless --wav)")
    p.add_argument("--wav", default=None, metavar="FILE_OR_FOLDER",
                   help="classify .wav file(s) through the audio front end instead of evaluating --data")
    p.add_argument("--frontend", default=None,
                   help="with --wav: the front end model (default: frontend.tflite beside --model)")
    p.add_argument("--preprocess", default=None,
                   help="with --wav: feature normalization (default: preprocess.json beside --model, if any)")
    p.add_argument("--labels", default=None,
                   help="with --wav: class names, one a line (default: labels.txt beside --model, if any)")
    p.add_argument("--runtime", default="auto", choices=("auto",) + RUNTIMES,
                   help="model runtime (default: auto = first of ai_edge_litert, tflite_runtime, "
                        "tensorflow for .tflite; onnxruntime for .onnx)")
    p.add_argument("--threads", type=_int_at_least(1), default=1,
                   help="interpreter threads (default 1)")
    p.add_argument("--warmup", type=_int_at_least(0), default=10,
                   help="untimed warm-up runs (default 10)")
    p.add_argument("--runs", type=_int_at_least(0), default=100, help="timed runs (default 100)")
    p.add_argument("--samples", type=_int_at_least(1), default=None,
                   help="evaluate accuracy on the first N samples (default: all)")
    p.add_argument("--arena-bytes", type=_int_at_least(1), default=None,
                   help="tensor arena size in bytes (tflite_micro only, required for it)")
    p.add_argument("--measured-on", default=None,
                   help="label for where this ran (default: rpi:<hostname> or host-<arch>)")
    p.add_argument("--threshold", type=float, default=None,
                   help="anomaly score threshold (default: eval.npz's threshold; task anomaly only)")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip loading and running the model once in a child process first (that "
                        "first run turns a model that crashes the runtime into exit 7)")
    p.add_argument("--out", default=None, help="also write the JSON to this file (atomically)")
    p.add_argument("--dump-outputs", default=None, metavar="FILE.npy",
                   help="also write the dequantized outputs of every evaluated sample "
                        "(float32, N x outputs) to this .npy file (atomically)")
    return p


@contextlib.contextmanager
def _captured_native_output(box: Dict[str, str]) -> Iterator[None]:
    """Redirect file descriptors 1 and 2 (native runtime logs) into a temp file.

    Keeps stdout clean for the JSON and stderr to one line on errors. On exit the captured text
    is stored in ``box["text"]``. Side effects: swaps process-wide fds 1 and 2 while active, and
    points ``faulthandler`` at the real stderr so a native crash is still reported there.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    tmp = tempfile.TemporaryFile()
    crash_log = os.fdopen(os.dup(saved[1]), "w")
    was_enabled = faulthandler.is_enabled()
    try:
        faulthandler.enable(file=crash_log)
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        faulthandler.disable()
        crash_log.close()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        tmp.seek(0)
        box["text"] = tmp.read().decode("utf-8", "replace")
        tmp.close()
        if was_enabled:
            faulthandler.enable()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _write_atomic(path: str, text: Any) -> None:
    """Write ``text`` (str or bytes) to ``path`` via a temp file in the same folder and
    ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".evaluate-", suffix=".tmp", dir=folder)
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry: evaluate, print the JSON to stdout (and ``--out``), return exit code.

    On failure writes ONE line ``evaluate.py: error: ...`` to stderr and returns the error's
    ``exit_code``: 2 usage, 3 data (missing, unreadable, NaN/inf inputs, labels out of range or
    not fitting the model's outputs), 4 runtime missing, 5 model (corrupt, unsupported, NaN/inf
    outputs, an output size that does not fit the task), 6 arena, 7 the model crashed the
    runtime in the first, child-process run, 1 unexpected. Never exit 0 with a made-up metric.
    Native runtime logs are held back while evaluating and replayed to stderr on success.
    """
    box = {"text": ""}
    try:
        try:
            args = _build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        if not os.path.isfile(args.model):
            raise ModelError(f"model file not found: {args.model}")
        if args.wav is not None:
            return _main_wav(args, box)
        if any(v is not None for v in (args.frontend, args.preprocess, args.labels)):
            raise UsageError("--frontend, --preprocess and --labels apply to --wav only")
        if args.data is None:
            raise UsageError("the following arguments are required: --data (or --wav)")
        x, y, ref = load_eval_data(args.data)
        task, threshold = load_eval_task(args.data)
        if args.threshold is not None:
            threshold = args.threshold
        with _captured_native_output(box):
            result, scores = _evaluate(args.model, x, y, ref=ref, runtime=args.runtime,
                                       threads=args.threads, warmup=args.warmup, runs=args.runs,
                                       arena_bytes=args.arena_bytes,
                                       measured_on=args.measured_on, samples=args.samples,
                                       task=task, threshold=threshold, probe=args.probe)
        native = box["text"]
        if native:
            sys.stderr.write(native if native.endswith("\n") else native + "\n")
        text = json.dumps(result, indent=2, allow_nan=False) + "\n"
        if args.out:
            try:
                _write_atomic(args.out, text)
            except OSError as exc:
                raise UsageError(f"cannot write --out {args.out}: {_one_line(exc)}") from exc
        if args.dump_outputs:
            try:
                _write_atomic(args.dump_outputs, _npy_bytes(scores))
            except OSError as exc:
                raise UsageError(f"cannot write --dump-outputs {args.dump_outputs}: "
                                 f"{_one_line(exc)}") from exc
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    except EvaluationError as exc:
        message = _one_line(exc)
        lines = [ln.strip() for ln in box["text"].splitlines() if ln.strip()]
        if lines and lines[-1] not in message:
            message += f" [runtime log: {' '.join(lines[-1].split())[:200]}]"
        sys.stderr.write(f"evaluate.py: error: {message}\n")
        return exc.exit_code
    except Exception as exc:  # a bug or an unforeseen runtime failure: still one line
        sys.stderr.write(f"evaluate.py: error: unexpected {type(exc).__name__}: {_one_line(exc)}\n")
        return 1


def _main_wav(args: argparse.Namespace, box: Dict[str, str]) -> int:
    """``--wav``: one line ``FILE: LABEL (class I)`` per file on stdout; ``--out`` the JSON."""
    if args.data is not None:
        raise UsageError("--wav classifies .wav files; --data (eval.npz) is not read with it: give one of them")
    _check_options(runtime=args.runtime, threads=args.threads, arena_bytes=args.arena_bytes)
    with _captured_native_output(box):
        found = classify_wavs(args.model, args.wav, frontend=args.frontend, preprocess=args.preprocess,
                              labels=args.labels, runtime=args.runtime, threads=args.threads,
                              arena_bytes=args.arena_bytes)
    if args.out:
        try:
            _write_atomic(args.out, json.dumps({"predictions": found}, indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write --out {args.out}: {_one_line(exc)}") from exc
    sys.stdout.write("".join(f"{r['file']}: {r['label']} (class {r['class']})\n" for r in found))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
