"""ONNX for given models: ONNX Runtime static QDQ int8, tf2onnx from a float ``.tflite``, and
onnx2tf (in its own virtualenv) from a float ``.onnx`` to a float ``.tflite``.

onnx2tf 2.x needs Python >= 3.12; on edgekit's Python 3.11 pip picks onnx2tf 1.29.24, which pins
tensorflow 2.19.0 and numpy 1.26.4 (edgekit pins 2.21.0 and 2.4.6). So it lives in its own
virtualenv, ``.venv-onnx2tf`` (``bash tools/onnx2tf_env.sh`` creates it, pinned by
``tools/constraints-onnx2tf.txt``), and edgekit runs it as a subprocess that hands back a float
``.tflite``. ``EDGEKIT_ONNX2TF_PYTHON`` names another interpreter with onnx2tf installed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ConversionError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
ONNX2TF_ENV = "EDGEKIT_ONNX2TF_PYTHON"
ONNX2TF_VENV = REPO_ROOT / ".venv-onnx2tf"
MIN_AGREEMENT = 0.99  # share of test samples whose argmax must agree across a format conversion


def qdq_int8(onnx_path: Path, input_name: str, calibration: Iterable[np.ndarray]) -> bytes:
    """ONNX Runtime static quantization of a float ONNX model in QDQ format: int8 weights (per
    channel) and int8 activations, MinMax ranges calibrated on ``calibration`` (float32 samples
    with the batch dimension). Returns the serialized model. Raises :class:`ConversionError`
    when ONNX Runtime fails or quantizes nothing."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    samples = [np.asarray(s, np.float32) for s in calibration]
    if not samples:
        raise ConversionError("ONNX static quantization needs calibration samples from the training split")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(samples)

        def get_next(self):
            s = next(self._it, None)
            return None if s is None else {input_name: s}

    with tempfile.TemporaryDirectory(prefix="edgekit-qdq-") as tmp:
        out = Path(tmp) / "model_int8.onnx"
        try:
            quantize_static(str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        except Exception as exc:  # onnxruntime raises many types; keep its first line
            text = str(exc).strip()
            raise ConversionError(f"ONNX Runtime static quantization failed: {type(exc).__name__}: "
                                  f"{text.splitlines()[0] if text else ''}") from exc
        blob = out.read_bytes()
    ops = {n.op_type for n in onnx.load_from_string(blob).graph.node}
    if "DequantizeLinear" not in ops:
        raise ConversionError("ONNX Runtime static quantization quantized no op of the model (it stayed float)")
    return blob


def from_tflite(tflite_path: Path, *, opset: int = 13) -> bytes:
    """A float ``.tflite`` as ONNX (tf2onnx's TFLite front end); returns the serialized model.
    Raises :class:`ConversionError` with tf2onnx's reason."""
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=opset)
    except Exception as exc:
        text = str(exc).strip()
        raise ConversionError(f"tf2onnx could not convert the .tflite to ONNX: "
                              f"{text.splitlines()[0] if text else type(exc).__name__}") from exc
    return proto.SerializeToString()


def onnx2tf_python() -> Path:
    """The Python that runs onnx2tf: ``$EDGEKIT_ONNX2TF_PYTHON``, else ``.venv-onnx2tf/bin/python``
    of this checkout. Raises :class:`ConversionError` saying how to create it when missing."""
    named = os.environ.get(ONNX2TF_ENV)
    exe = Path(named) if named else ONNX2TF_VENV / "bin" / "python"
    if not exe.is_file():
        where = f"{ONNX2TF_ENV}={named}" if named else str(exe)
        raise ConversionError(f"onnx2tf is not installed ({where} not found): run `bash tools/onnx2tf_env.sh` to "
                              f"create .venv-onnx2tf (about a minute, 2.6 GB), or set {ONNX2TF_ENV} to a Python with "
                              "onnx2tf 1.29.24; it turns the .onnx into the float .tflite that rpi and mcu targets need")
    return exe


def to_float_tflite(onnx_path: Path, out_path: Path, *, input_name: str, keep_input_layout: bool,
                    timeout_s: float = 1800) -> Path:
    """Convert a float ONNX model to a float ``.tflite`` with onnx2tf in its own Python; writes
    ``out_path`` atomically and returns it.

    ``keep_input_layout``: the ONNX input already has the data's (channels-last) layout, so
    onnx2tf must keep it (its ``-kat``); otherwise onnx2tf turns a channels-first input into
    channels-last, as TFLite runs it. Raises :class:`ConversionError` with onnx2tf's last error
    line when it fails or writes no float32 model.
    """
    exe = onnx2tf_python()
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx2tf-") as tmp:
        src = Path(tmp) / "model.onnx"
        shutil.copyfile(onnx_path, src)  # onnx2tf writes beside its input; never beside the user's file
        out_dir = Path(tmp) / "out"
        cmd = [str(exe), "-I", "-m", "onnx2tf", "-i", str(src), "-o", str(out_dir), "-osd", "-n"]
        if keep_input_layout:
            cmd += ["-kat", input_name]
        log.info("onnx2tf: %s", " ".join(cmd))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
        env["CUDA_VISIBLE_DEVICES"] = "-1"
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tmp, env=env)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"onnx2tf did not finish in {timeout_s:.0f} s") from None
        made = out_dir / "model_float32.tflite"
        if proc.returncode != 0 or not made.is_file():
            raise ConversionError(f"onnx2tf could not convert {onnx_path.name} to TFLite: "
                                  f"{_onnx2tf_reason(proc.stdout + proc.stderr, proc.returncode)[:500]}")
        from .._io import write_text

        return write_text(out_path, made.read_bytes())


def _onnx2tf_reason(output: str, returncode: int) -> str:
    """The exception onnx2tf died of (``ValueError: ...`` and the line after it, where TensorFlow
    says what did not fit), else its last line that mentions an error, else the exit code."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in output.splitlines()]
    lines = [ln for ln in lines if ln]
    for i in range(len(lines) - 1, -1, -1):
        if re.match(r"^[A-Za-z_.]*(Error|Exception): ", lines[i]):
            nxt = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith(("File ", "Traceback")) else ""
            return f"{lines[i]} {nxt}".strip()
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [f"exit code {returncode}"])[-1]


def argmax_agreement(a: np.ndarray, b: np.ndarray, task: str) -> float:
    """Share of samples on which two models' outputs agree: equal argmax for classification,
    every output within ``1e-3 · (1 + max |a|)`` for other tasks (values, not class scores)."""
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    if task == "classification":
        return float(np.mean(a.argmax(-1) == b.argmax(-1)))
    return float(np.mean(np.abs(a - b).max(1) <= 1e-3 * (1 + float(np.abs(a).max()))))
