"""Every form a finished run's model took, run on the same samples: the Keras float stages and the
QAT model in this process, a float TFLite model converted into a temp folder, and each target's
files (LiteRT and ONNX Runtime in this process through the standalone evaluator; TFLite Micro in
a child process with the arena the run measured, so a crash cannot take the caller down).
A variant that cannot run keeps its ``error``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._io import write_text
from ..errors import EdgekitError, one_line

log = logging.getLogger(__name__)

FLOAT_STAGES = ("pruned", "student", "teacher")   # the last float stage is the first that exists
REFERENCE = "keras_float"
HOST_TFLITE_RUNTIME = "ai_edge_litert"
#: TFLM subprocess time limit, seconds
MICRO_TIMEOUT_S = 600.0


@dataclasses.dataclass
class _Outputs:
    """One variant's outputs on the samples, or why it has none."""

    name: str
    variant: str                   # keras_float | keras_qat | tflite_float | tflite_int8 | ...
    source: str                    # file, relative to the run folder (or how it was made)
    runtime: str
    quantized: bool
    target: str | None = None
    outputs: np.ndarray | None = None
    error: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _float_stage(run_dir: Path, manifest: dict, status: dict) -> str:
    """The last float stage: the one eval.npz's ``ref`` came from, else pruned > student > teacher."""
    named = (((manifest.get("stages") or {}).get("eval-data") or {}).get("metrics") or {}).get("reference")
    if named and (run_dir / "stages" / named / "model.keras").is_file():
        return named
    for stage in FLOAT_STAGES:
        if (run_dir / "stages" / stage / "model.keras").is_file() and status.get(stage, "done") == "done":
            return stage
    raise EdgekitError(f"{run_dir} holds no float Keras model (stages/pruned|student|teacher/"
                       "model.keras); is it the --out folder of a finished `edgekit run`?")


def _load_float(run_dir: Path, stage: str):
    from ..fitting import load_model

    return load_model(run_dir / "stages" / stage / "model.keras")


def _keras_variant(name: str, source: str, load: Callable[[], Any], x: np.ndarray, *,
                   quantized: bool) -> _Outputs:
    from .._tf import keras

    v = _Outputs(name, name, source, f"tf_keras {keras().__version__}", quantized)
    try:
        model = load()
        v.outputs = np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float32)
        v.outputs = v.outputs.reshape(len(x), -1)
    except Exception as exc:  # noqa: BLE001 - a broken stage is reported, not fatal
        v.error = one_line(exc)
        log.warning("%s: %s", name, v.error)
    return v


def _tflite_float_variant(model, x: np.ndarray, tmp_dir: Path, stage: str) -> _Outputs:
    from ..convert import to_tflite

    v = _Outputs("tflite_float", "tflite_float", f"converted from stages/{stage}/model.keras",
                 HOST_TFLITE_RUNTIME, quantized=False)
    try:
        path = tmp_dir / "model_float32.tflite"
        write_text(path, to_tflite(model, mode="float32", signature=False), root=tmp_dir)  # measured here only
        v.extra["size_bytes"] = path.stat().st_size
        v.outputs = _predict(path, x, HOST_TFLITE_RUNTIME)
    except Exception as exc:  # noqa: BLE001
        v.error = one_line(exc)
        log.warning("tflite_float: %s", v.error)
    return v


def _artifacts(run_dir: Path, manifest: dict) -> list[dict[str, Any]]:
    """Every target artifact: from the manifest's convert stages, else found under targets/."""
    found: list[dict[str, Any]] = []
    for stage, entry in sorted((manifest.get("stages") or {}).items()):
        if not stage.startswith("convert:") or entry.get("status") != "done":
            continue
        for a in (entry.get("metrics") or {}).get("artifacts") or []:
            if (run_dir / a["path"]).is_file():
                found.append({"target": stage.split(":", 1)[1], **a})
    if found:
        return found
    files = {"model_int8.tflite": "tflite-int8", "model_full_int8.tflite": "tflite-full-int8",
             "model_fp16.tflite": "tflite-fp16", "model.onnx": "onnx"}
    for folder in sorted(p for p in (run_dir / "targets").glob("*") if p.is_dir()):
        mcu = (folder / "arena.json").is_file()
        for fname, fmt in files.items():
            if (folder / fname).is_file():
                if mcu and fname == "model_int8.tflite":
                    fmt = "tflite-full-int8"
                found.append({"target": folder.name, "path": f"targets/{folder.name}/{fname}",
                              "format": fmt,
                              "runtime": "tflite_micro" if mcu else HOST_TFLITE_RUNTIME, "extra": {}})
    return found


_VARIANT_OF = {"tflite-int8": ("tflite_int8", True), "tflite-full-int8": ("tflite_full_int8", True),
               "tflite-fp16": ("tflite_fp16", False), "onnx": ("onnx", False)}


def _target_variants(run_dir: Path, manifest: dict, x: np.ndarray, y: np.ndarray,
                     tmp_dir: Path) -> list[_Outputs]:
    out: list[_Outputs] = []
    done: dict[tuple[str, str], _Outputs] = {}   # (sha256, runtime) -> variant already run
    for a in _artifacts(run_dir, manifest):
        kind, quantized = _VARIANT_OF.get(a["format"], (a["format"].replace("-", "_"), False))
        micro = a.get("runtime") == "tflite_micro"
        if micro:
            kind = "tflm_int8"
        runtime = "tflite_micro" if micro else ("onnxruntime" if a["format"] == "onnx"
                                                else HOST_TFLITE_RUNTIME)
        path = run_dir / a["path"]
        v = _Outputs(f"{kind}:{a['target']}", kind, a["path"], runtime, quantized, target=a["target"])
        key = (hashlib.sha256(path.read_bytes()).hexdigest(), runtime)
        if key in done:   # the same file in another target (rpi4 and mobile share int8 models)
            v.outputs, v.error = done[key].outputs, done[key].error
            v.extra = {**done[key].extra, "identical_to": done[key].name}
            out.append(v)
            continue
        try:
            if micro:
                arena = _arena_bytes(run_dir, a)
                v.extra["arena_bytes"] = arena
                v.outputs = _predict_micro(path, x, y, arena, tmp_dir)
                # the same file in LiteRT: tells TFLM kernel differences from quantization (a file
                # with ops only TFLite Micro has, e.g. DECODE of look-up-table weights, cannot be)
                try:
                    lite = _predict(path, x, HOST_TFLITE_RUNTIME)
                    v.extra["litert_same_file"] = {
                        "agreement": float(np.mean(_argmax(lite) == _argmax(v.outputs))),
                        "max_abs_diff": float(np.abs(lite - v.outputs).max())}
                except Exception as exc:  # noqa: BLE001 - the TFLM outputs stand on their own
                    v.extra["litert_same_file"] = {"error": one_line(exc)}
                    log.info("%s: not comparable in LiteRT: %s", v.name, one_line(exc))
            else:
                v.outputs = _predict(path, x, runtime)
            if quantized and path.suffix == ".tflite":
                v.extra["quant"] = _io_quantization(path)
        except Exception as exc:  # noqa: BLE001 - reported in the variant, never fatal
            v.error = one_line(exc)
            log.warning("%s: %s", v.name, v.error)
        done[key] = v
        out.append(v)
    return out


def _arena_bytes(run_dir: Path, artifact: dict) -> int:
    arena = (artifact.get("extra") or {}).get("arena") or {}
    if "recommended_bytes" not in arena:
        arena = _read_json(run_dir / "targets" / artifact["target"] / "arena.json") or {}
    if not arena.get("recommended_bytes"):
        raise EdgekitError(f"targets/{artifact['target']}/arena.json lacks recommended_bytes: "
                           "the tensor arena to run TFLite Micro with is unknown")
    return int(arena["recommended_bytes"])


def _predict(path: Path, x: np.ndarray, runtime: str) -> np.ndarray:
    from ..ondevice import evaluate as ev

    # probe: load and run once in a child first, so a corrupt file is an error, not a crash of edgekit
    return ev.predict_outputs(str(path), x, runtime=runtime, probe=True).reshape(len(x), -1)


def _predict_micro(path: Path, x: np.ndarray, y: np.ndarray, arena_bytes: int,
                   tmp_dir: Path) -> np.ndarray:
    """TFLite Micro outputs from a child process running the evaluator's CLI (crash-safe)."""
    from ..ondevice import evaluate as ev

    data, dump = tmp_dir / "micro.npz", tmp_dir / "micro_outputs.npy"
    np.savez(data, x=x, y=y)
    cmd = [sys.executable, ev.__file__, "--model", str(path), "--data", str(data),
           "--runtime", "tflite_micro", "--arena-bytes", str(arena_bytes), "--warmup", "0",
           "--runs", "0", "--dump-outputs", str(dump)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MICRO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EdgekitError(f"tflite_micro did not finish {len(x)} samples in "
                           f"{MICRO_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0 or not dump.is_file():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise EdgekitError(f"tflite_micro run failed: {why}")
    return np.load(dump, allow_pickle=False).reshape(len(x), -1)


def _io_quantization(path: Path) -> dict[str, Any]:
    """(scale, zero_point) of the int8 tensors at the model's input and output.

    For a full-int8 model these are the I/O tensors; for an int8 model with float I/O, the
    output of the first QUANTIZE op and the input of the last DEQUANTIZE op. Read from the
    flatbuffer (:mod:`edgekit.tflite_file`), subgraph 0.
    """
    from ..tflite_file import read

    sg = read(path).subgraphs[0]
    inp, out = sg.inputs[0], sg.outputs[0]

    def quant(index: int | None) -> dict[str, Any] | None:
        t = sg.tensor(index) if index is not None else None
        try:
            dtype = np.dtype(t.dtype.lower()) if t is not None else None
        except TypeError:  # a type numpy has no dtype for (INT4, RESOURCE...): not an integer I/O tensor
            dtype = None
        if dtype is None or dtype.kind not in "iu" or t.per_tensor is None:
            return None
        scale, zero = t.per_tensor
        if not scale:
            return None
        lim = np.iinfo(dtype)
        return {"dtype": dtype.name, "scale": float(scale),
                "zero_point": int(zero), "qmin": int(lim.min), "qmax": int(lim.max),
                "range": [float((lim.min - zero) * scale), float((lim.max - zero) * scale)]}

    q_in, q_out = quant(inp), quant(out)
    if q_in is None:
        op = next((o for o in sg.operators if o.op == "QUANTIZE" and inp in o.inputs), None)
        q_in = quant(op.outputs[0]) if op is not None else None
    if q_out is None:
        op = next((o for o in sg.operators if o.op == "DEQUANTIZE" and out in o.outputs), None)
        q_out = quant(op.inputs[0]) if op is not None else None
    return {"input": q_in, "output": q_out}


def _argmax(outputs: np.ndarray) -> np.ndarray:
    from ..ondevice import evaluate as ev

    return ev.predict_classes(outputs)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path) -> dict | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
