"""Stage 5: convert per target, with the real TFLite converter (and tf2onnx for ONNX).

One converter per target kind, behind one interface: ``convert_target(profile, models, data,
cfg, out_dir) -> TargetArtifacts``. What each kind ships:

- ``mobile``: ``model_int8.tflite`` (int8, float I/O), ``model_fp16.tflite``, ``model.onnx``
- ``rpi``:    ``model_int8.tflite`` and ``bundle/`` (model, standalone evaluator, test sample,
  requirements.txt, run.sh): copy it to a Pi and run ``sh run.sh``
- ``mcu``:    ``model_int8.tflite`` (full integer, int8 I/O), ``model_data.h/.cc`` (aligned C
  array + measured arena), ``op_resolver.h``

Int8 models come from the QAT model when there is one, else by post-training quantization of
the float model with a representative dataset drawn from the training split. After conversion
the op list is checked: an "int8" model that kept float ops is reported, and fails for MCUs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ._tf import tf
from .data import Dataset
from .errors import ConversionError
from .fitting import size_info, write_json, write_text
from .recipe import ConvertConfig, TargetKind, TargetProfile

log = logging.getLogger(__name__)

EVALUATOR = Path(__file__).parent / "ondevice" / "evaluate.py"
FLOAT_OPS_OK = {"QUANTIZE", "DEQUANTIZE"}


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One model file of a target: its format, the runtime that runs it, and what it is."""

    path: Path
    format: str          # tflite-int8 | tflite-fp16 | tflite-full-int8 | onnx
    runtime: str         # the runtime the evaluator should use
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TargetArtifacts:
    profile: TargetProfile
    artifacts: list[Artifact]       # the first one is the target's primary model
    files: list[Path]               # every file written (for the manifest)


def representative(data: Dataset, n: int, seed: int):
    """A generator of ``n`` training samples (batch 1) for calibrating int8 ranges."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(data.x_train))[: min(n, len(data.x_train))]

    def gen():
        for i in idx:
            yield [data.x_train[i : i + 1]]

    return gen


def to_tflite(model, *, mode: str, rep=None) -> bytes:
    """Convert a Keras model. ``mode``: float32 | fp16 | int8 (float I/O) | full-int8 (int8 I/O).

    ``rep`` (a representative-dataset generator) is required for int8 modes unless the model
    is quantization-aware trained. Raises :class:`ConversionError` with the converter's reason.
    """
    lite = tf().lite
    conv = lite.TFLiteConverter.from_keras_model(model)
    if mode == "fp16":
        conv.optimizations = [lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf().float16]
    elif mode in ("int8", "full-int8"):
        conv.optimizations = [lite.Optimize.DEFAULT]
        if rep is not None:
            conv.representative_dataset = rep
        if mode == "full-int8":
            conv.target_spec.supported_ops = [lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf().int8
            conv.inference_output_type = tf().int8
    elif mode != "float32":
        raise ValueError(f"unknown conversion mode {mode!r}")
    try:
        return conv.convert()
    except Exception as exc:  # the converter raises many types; keep its first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"TFLite conversion ({mode}) failed: {first}") from exc


def tensor_types(blob: bytes) -> dict[str, Any]:
    """Input/output dtypes and the ops of a TFLite model, read by the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    ops = sorted({op["op_name"] for op in it._get_ops_details()})  # noqa: SLF001 - only op names
    return {"input": str(np.dtype(it.get_input_details()[0]["dtype"])),
            "output": str(np.dtype(it.get_output_details()[0]["dtype"])), "ops": ops}


def check_integer_only(blob: bytes, *, require_int_io: bool) -> dict[str, Any]:
    """Verify an int8 model kept no float compute: every tensor feeding a non-(de)quantize op
    must be integer. Returns the type summary; raises ConversionError when ``require_int_io``
    and the model has float inputs, outputs or float compute."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    details = {d["index"]: d for d in it.get_tensor_details()}
    float_ops = []
    for op in it._get_ops_details():  # noqa: SLF001
        if op["op_name"] in FLOAT_OPS_OK:
            continue
        dtypes = {np.dtype(details[i]["dtype"]).kind for i in op["outputs"] if i in details}
        if "f" in dtypes:
            float_ops.append(op["op_name"])
    info = tensor_types(blob)
    info["float_ops"] = sorted(set(float_ops))
    if require_int_io and (info["float_ops"] or "float" in info["input"] or "float" in info["output"]):
        raise ConversionError(
            f"model is not fully integer: float ops {info['float_ops'] or 'none'}, input {info['input']}, "
            f"output {info['output']}; the target needs int8 everywhere")
    if info["float_ops"]:
        log.warning("int8 model kept float ops: %s", ", ".join(info["float_ops"]))
    return info


def to_onnx(model, path: Path) -> Path:
    """Export the float Keras model to ONNX with tf2onnx (opset 13), atomically."""
    import tf2onnx

    spec = (tf().TensorSpec((None, *model.input_shape[1:]), tf().float32, name="input"),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    except Exception as exc:
        raise ConversionError(f"ONNX export failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return write_text(path, proto.SerializeToString())


def write_eval_npz(path: Path, data: Dataset, reference_pred: np.ndarray, samples: int | None) -> Path:
    """The evaluator's input: ``x`` float32 test inputs, ``y`` labels, ``ref`` float predictions."""
    n = len(data.x_test) if samples is None else min(samples, len(data.x_test))
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, x=data.x_test[:n].astype("float32"), y=data.y_test[:n].astype("int64"),
                        ref=reference_pred[:n].astype("int64"))
    return write_text(path, buf.getvalue())


def _int8(models, data, cfg, seed, *, full: bool) -> bytes:
    mode = "full-int8" if full else "int8"
    if models.get("qat") is not None:
        return to_tflite(models["qat"], mode=mode, rep=representative(data, cfg.representative_samples, seed))
    return to_tflite(models["float"], mode=mode, rep=representative(data, cfg.representative_samples, seed))


def convert_target(profile: TargetProfile, models: dict, data: Dataset, cfg: ConvertConfig, out_dir: Path,
                   *, seed: int, eval_npz: Path) -> TargetArtifacts:
    """Write the artifacts of ``profile`` into ``out_dir``.

    ``models``: ``{"float": keras float model, "qat": QAT model or None}``. Raises
    :class:`ConversionError` when a format cannot be produced or an op cannot run on the target.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    arts: list[Artifact] = []
    files: list[Path] = []
    kind = profile.kind
    if kind in (TargetKind.mobile, TargetKind.rpi):
        for fmt in profile.formats:
            if fmt == "tflite-int8":
                blob = _int8(models, data, cfg, seed, full=False)
                info = check_integer_only(blob, require_int_io=False)
                p = write_text(out_dir / "model_int8.tflite", blob)
                arts.append(Artifact(p, fmt, profile.runtime, {"ops": info["ops"], "float_ops": info["float_ops"]}))
            elif fmt == "tflite-fp16":
                p = write_text(out_dir / "model_fp16.tflite", to_tflite(models["float"], mode="fp16"))
                arts.append(Artifact(p, fmt, profile.runtime))
            elif fmt == "onnx":
                arts.append(Artifact(to_onnx(models["float"], out_dir / "model.onnx"), fmt, "onnxruntime"))
            elif fmt == "tflite-full-int8":
                blob = _int8(models, data, cfg, seed, full=True)
                check_integer_only(blob, require_int_io=True)
                arts.append(Artifact(write_text(out_dir / "model_full_int8.tflite", blob), fmt, profile.runtime))
        files += [a.path for a in arts]
        if kind is TargetKind.rpi:
            files += write_bundle(out_dir / "bundle", arts[0].path, eval_npz, profile)
    elif kind is TargetKind.mcu:
        from . import mcu

        blob = _int8(models, data, cfg, seed, full=True)
        ops = mcu.model_ops(blob)
        mcu.check_ops(ops)
        info = check_integer_only(blob, require_int_io=True)
        p = write_text(out_dir / "model_int8.tflite", blob)
        arena = mcu.measure_arena(p, margin_fraction=cfg.arena_margin)
        h, cc = mcu.write_c_array(blob, out_dir, arena_bytes=arena)
        res = mcu.write_op_resolver(ops, out_dir / "op_resolver.h")
        extra = {"ops": ops, "float_ops": info["float_ops"], "arena": dataclasses.asdict(arena)}
        write_json(out_dir / "arena.json", extra["arena"])
        arts.append(Artifact(p, "tflite-full-int8", "tflite_micro", extra))
        files += [p, h, cc, res, out_dir / "arena.json"]
    else:  # pragma: no cover - TargetKind is closed
        raise ConversionError(f"unknown target kind {kind}")
    for a in arts:
        log.info("%s: %s %s (%d bytes)", profile.name, a.format, a.path.name, size_info(a.path.read_bytes())["size_bytes"])
    return TargetArtifacts(profile, arts, files)


RUN_SH = """#!/bin/sh
# Run the edgekit evaluator on this device and print its JSON report.
# Usage: sh run.sh [extra evaluate.py options, e.g. --threads 4 --runs 200]
set -e
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
exec "$PY" evaluate.py --model model.tflite --data eval.npz "$@"
"""


def write_bundle(folder: Path, model: Path, eval_npz: Path, profile: TargetProfile) -> list[Path]:
    """A self-contained folder to copy to a Pi: model, evaluator, test sample, requirements, run.sh."""
    folder.mkdir(parents=True, exist_ok=True)
    runtime_req = {"tflite_runtime": "tflite-runtime==2.14.0\nnumpy<2\n",
                   "ai_edge_litert": "ai-edge-litert==2.3.0\nnumpy>=1.26\n"}.get(profile.runtime,
                                                                                 "ai-edge-litert==2.3.0\nnumpy>=1.26\n")
    out = [write_text(folder / "model.tflite", model.read_bytes()),
           write_text(folder / "evaluate.py", EVALUATOR.read_bytes()),
           write_text(folder / "eval.npz", eval_npz.read_bytes()),
           write_text(folder / "requirements.txt", f"# runtime for {profile.board or profile.name}\n{runtime_req}"),
           write_text(folder / "run.sh", RUN_SH)]
    (folder / "run.sh").chmod(0o755)
    return out

