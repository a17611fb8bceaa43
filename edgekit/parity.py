"""Parity of a finished run: the same test samples through every form the model took.

A run leaves the model in several forms: the last float Keras stage, the QAT Keras model, and
per target TFLite files (int8 with float I/O, fp16, full int8 for TensorFlow Lite Micro) and
ONNX. :func:`compare` runs the same samples from ``eval/eval.npz`` through each of them and
compares every output with the Keras float model's: accuracy, agreement (share of equal
argmax), the largest and mean absolute output (logit) difference after dequantization, and the
classes where the predictions part most. When a quantized form agrees less than ``threshold``
it adds a ``diagnosis``: likely causes derived from facts it checks in the run (size of the
representative set, output saturation, int8 output resolution, input range, QAT or not), each
with what to try.

What runs where: Keras models in this process (``tf_keras``); ``.tflite`` files in LiteRT
(``ai_edge_litert``) and ``.onnx`` files in ONNX Runtime, in this process, through the
standalone evaluator's :func:`~edgekit.ondevice.evaluate.predict_outputs` (same input
quantization and output dequantization as the on-device evaluator); the TFLite Micro model in a
child Python running the evaluator's command line with ``--dump-outputs``, with the arena the
run measured, so a TFLM crash cannot take the caller down. A float TFLite model is converted
from the Keras float model into a temp folder (it is not an artifact of the run).

Example::

    >>> from edgekit.parity import compare, render_compare
    >>> result = compare(Path("runs/quickstart"))           # writes runs/quickstart/eval/compare.json
    >>> print(render_compare(result))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._io import write_text
from .errors import DataError, EdgekitError, one_line

log = logging.getLogger(__name__)

SCHEMA = "edgekit.compare/1"
FLOAT_STAGES = ("pruned", "student", "teacher")   # the last float stage is the first that exists
REFERENCE = "keras_float"
HOST_TFLITE_RUNTIME = "ai_edge_litert"
TOP_CLASSES = 3
#: a share of outputs at the int8 limits above this is reported as saturation
SATURATION_SHARE = 0.01
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


# ------------------------------------------------------------------------------------ compare

def compare(run_dir: Path, *, samples: int | None = None, threshold: float = 0.98) -> dict[str, Any]:
    """Run the test samples through every form of the model in ``run_dir`` and compare them.

    Args:
      run_dir: a finished run folder (``edgekit run ... --out DIR``): needs ``eval/eval.npz`` and
        a float stage (``stages/{pruned,student,teacher}/model.keras``); uses ``stages/qat``,
        ``targets/*`` and ``manifest.json`` / ``report.json`` / ``recipe.resolved.yaml`` when
        present.
      samples: compare on the first ``samples`` samples of ``eval.npz`` (default: all of them).
      threshold: agreement with Keras float (a share, 0..1) below which a quantized variant
        gets a ``diagnosis`` and the result is not ``ok``; a value above 1 diagnoses them all.

    Returns the result dict (schema ``edgekit.compare/1``, see :func:`render_compare`), also
    written to ``run_dir/eval/compare.json`` atomically (temp file + ``os.replace``).

    A variant that cannot be run (missing runtime, a TFLM crash) is kept with its ``error`` and
    null numbers, and makes the result not ``ok``; it does not stop the others.

    Raises:
      DataError: ``eval/eval.npz`` is missing or unreadable, or ``samples`` < 1.
      EdgekitError: ``run_dir`` is not a run folder or holds no float Keras model.
    """
    from .ondevice import evaluate as ev

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgekitError(f"{run_dir} is not a folder; pass the --out folder of `edgekit run`")
    if samples is not None and samples < 1:
        raise DataError(f"samples must be >= 1, got {samples}")
    if not threshold >= 0.0:
        raise EdgekitError(f"threshold is a share of samples (0..1; above 1 diagnoses every "
                           f"quantized variant), got {threshold}")
    npz = run_dir / "eval" / "eval.npz"
    try:
        x, y, ref = ev.load_eval_data(str(npz))
        task, _ = ev.load_eval_task(str(npz))
    except ev.EvaluationError as exc:
        raise DataError(f"{exc}; run the pipeline at least up to the eval stage "
                        "(edgekit run RECIPE --out DIR --until eval)") from exc
    if task != "classification":
        raise EdgekitError(f"eval --compare diagnoses classifiers (argmax agreement); this run's task is {task}: "
                           "its targets' metrics and mean |difference| from the float model are in report.json")
    if samples is not None:
        x, y, ref = x[:samples], y[:samples], (ref[:samples] if ref is not None else None)
    y = y.argmax(1) if y.ndim == 2 else y
    y = y.astype(np.int64)
    manifest = _read_json(run_dir / "manifest.json") or {}
    stage_status = {k: v.get("status") for k, v in (manifest.get("stages") or {}).items()}
    float_stage = _float_stage(run_dir, manifest, stage_status)
    qat_used = (run_dir / "stages" / "qat" / "qat.weights.h5").is_file() and \
        stage_status.get("qat", "done") == "done"

    with tempfile.TemporaryDirectory(prefix="edgekit-compare-") as tmp:
        tmp_dir = Path(tmp)
        float_model = _load_float(run_dir, float_stage)
        variants = [_keras_variant(REFERENCE, f"stages/{float_stage}/model.keras",
                                   lambda: float_model, x, quantized=False)]
        # the float stages before the reference (teacher, student), so the loss of every stage shows
        earlier = [st for st in reversed(FLOAT_STAGES) if st != float_stage
                   and FLOAT_STAGES.index(st) > FLOAT_STAGES.index(float_stage)
                   and (run_dir / "stages" / st / "model.keras").is_file() and stage_status.get(st, "done") == "done"]
        for st in earlier:
            variants.append(_keras_variant(f"keras_{st}", f"stages/{st}/model.keras",
                                           lambda st=st: _load_float(run_dir, st), x, quantized=False))
        if qat_used:
            from . import quantize

            variants.append(_keras_variant("keras_qat", "stages/qat", lambda: quantize.load(
                run_dir / "stages" / "qat"), x, quantized=True))
        variants.append(_tflite_float_variant(float_model, x, tmp_dir, float_stage))
        variants += _target_variants(run_dir, manifest, x, y, tmp_dir)

    ref_out = variants[0].outputs
    if ref_out is None:
        raise EdgekitError(f"the Keras float model of stage {float_stage} failed to run: "
                           f"{variants[0].error}")
    ref_pred = ev.predict_classes(ref_out)
    qat_pred = next((ev.predict_classes(v.outputs) for v in variants
                     if v.variant == "keras_qat" and v.outputs is not None), None)
    facts = _facts(run_dir, x, qat_used, manifest)
    by_name = {v.name: v for v in variants}
    rows = [_row(v, y, ref_out, ref_pred, qat_pred, ev) for v in variants]
    # in pipeline order: teacher, student, the reference float stage, QAT, then the files
    order = [f"keras_{st}" for st in reversed(FLOAT_STAGES)] + [REFERENCE]
    rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    teacher = next((r for r in rows if r["name"] == "keras_teacher"), None) or \
        (rows[0] if float_stage == "teacher" else None)
    for row in rows:
        row["stage"] = float_stage if row["name"] == REFERENCE else (
            row["name"][len("keras_"):] if row["name"].startswith("keras_") else None)
        t_acc = teacher["accuracy"] if teacher else None
        row["vs_teacher_points"] = (round((row["accuracy"] - t_acc) * 100, 4)
                                    if t_acc is not None and row["accuracy"] is not None else None)
    for row in rows:
        if row["quantized"] and row["error"] is None and row["agreement"] < threshold:
            row["diagnosis"] = _diagnose(row, rows, facts, by_name[row["name"]], ref_out,
                                         ref_pred, threshold)
    below = [r["name"] for r in rows
             if r["quantized"] and r["error"] is None and r["agreement"] < threshold]
    errors = [r["name"] for r in rows if r["error"] is not None]
    result = {
        "schema": SCHEMA,
        "run": manifest.get("recipe") or run_dir.name,
        "samples": int(len(x)),
        "threshold": float(threshold),
        "reference": {
            "variant": REFERENCE, "stage": float_stage,
            "file": f"stages/{float_stage}/model.keras",
            # share of samples where the Keras float argmax equals eval.npz's ``ref``; below 1
            # means eval.npz was written by another model (a stale run folder)
            "matches_eval_ref": (float(np.mean(ref_pred == ref)) if ref is not None else None),
        },
        "facts": facts,
        "variants": rows,
        "below_threshold": below,
        "errors": errors,
        "ok": not below and not errors,
    }
    from .fitting import write_json

    write_json(run_dir / "eval" / "compare.json", result)
    return result


# ----------------------------------------------------------------------------------- variants

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
    from .fitting import load_model

    return load_model(run_dir / "stages" / stage / "model.keras")


def _keras_variant(name: str, source: str, load: Callable[[], Any], x: np.ndarray, *,
                   quantized: bool) -> _Outputs:
    from ._tf import keras

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
    from .convert import to_tflite

    v = _Outputs("tflite_float", "tflite_float", f"converted from stages/{stage}/model.keras",
                 HOST_TFLITE_RUNTIME, quantized=False)
    try:
        path = tmp_dir / "model_float32.tflite"
        write_text(path, to_tflite(model, mode="float32"), root=tmp_dir)
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
                # the same file in LiteRT: tells TFLM kernel differences from quantization
                lite = _predict(path, x, HOST_TFLITE_RUNTIME)
                v.extra["litert_same_file"] = {
                    "agreement": float(np.mean(_argmax(lite) == _argmax(v.outputs))),
                    "max_abs_diff": float(np.abs(lite - v.outputs).max())}
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
    from .ondevice import evaluate as ev

    # probe: load and run once in a child first, so a corrupt file is an error, not a crash of edgekit
    return ev.predict_outputs(str(path), x, runtime=runtime, probe=True).reshape(len(x), -1)


def _predict_micro(path: Path, x: np.ndarray, y: np.ndarray, arena_bytes: int,
                   tmp_dir: Path) -> np.ndarray:
    """TFLite Micro outputs from a child process running the evaluator's CLI (crash-safe)."""
    from .ondevice import evaluate as ev

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
    from .tflite_file import read

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


# ------------------------------------------------------------------------------------ metrics

def _argmax(outputs: np.ndarray) -> np.ndarray:
    from .ondevice import evaluate as ev

    return ev.predict_classes(outputs)


def _row(v: _Outputs, y: np.ndarray, ref_out: np.ndarray, ref_pred: np.ndarray,
         qat_pred: np.ndarray | None, ev) -> dict[str, Any]:
    row: dict[str, Any] = {"name": v.name, "variant": v.variant, "target": v.target,
                           "source": v.source, "runtime": v.runtime, "quantized": v.quantized,
                           "accuracy": None, "agreement": None, "disagreements": None,
                           "max_abs_logit_diff": None, "mean_abs_logit_diff": None,
                           "top_disagreement_classes": [], "error": v.error}
    row.update({k: val for k, val in v.extra.items() if k != "quant"})
    if v.outputs is None:
        return row
    if v.outputs.shape != ref_out.shape:
        row["error"] = (f"outputs have shape {v.outputs.shape[1:]} per batch, the Keras float "
                        f"model's {ref_out.shape[1:]}")
        return row
    pred = ev.predict_classes(v.outputs)
    diff = np.abs(v.outputs.astype(np.float64) - ref_out.astype(np.float64))
    row.update({
        "accuracy": float(np.mean(pred == y)),
        "agreement": float(np.mean(pred == ref_pred)),
        "disagreements": int(np.sum(pred != ref_pred)),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "top_disagreement_classes": _top_classes(ref_pred, pred),
    })
    if qat_pred is not None and v.variant not in (REFERENCE, "keras_qat") and v.quantized:
        row["agreement_with_keras_qat"] = float(np.mean(pred == qat_pred))
    if "quant" in v.extra:
        row["quantization"] = _quant_facts(v.extra["quant"], v.outputs, ref_out, ref_pred, pred)
    return row


def _top_classes(ref_pred: np.ndarray, pred: np.ndarray) -> list[dict[str, Any]]:
    """The classes (as the Keras float model predicts them) where the variant differs most."""
    differ = ref_pred != pred
    if not differ.any():
        return []
    classes, counts = np.unique(ref_pred[differ], return_counts=True)
    order = sorted(zip(classes.tolist(), counts.tolist()), key=lambda t: (-t[1], t[0]))[:TOP_CLASSES]
    rows = []
    for cls, count in order:
        became, n = np.unique(pred[differ & (ref_pred == cls)], return_counts=True)
        rows.append({"class": int(cls), "count": int(count), "of": int(np.sum(ref_pred == cls)),
                     "predicted_as": {str(int(b)): int(c) for b, c in zip(became, n)}})
    return rows


def _quant_facts(quant: dict, outputs: np.ndarray, ref_out: np.ndarray, ref_pred: np.ndarray,
                 pred: np.ndarray) -> dict[str, Any]:
    """Checked facts about int8 I/O: saturation, output resolution vs logit margins."""
    facts: dict[str, Any] = {"input": quant.get("input"), "output": quant.get("output")}
    q = quant.get("output")
    if q is None:
        return facts
    levels = np.rint(outputs.astype(np.float64) / q["scale"]) + q["zero_point"]
    at_min, at_max = levels <= q["qmin"], levels >= q["qmax"]
    top_at_max = at_max[np.arange(len(outputs)), _argmax(outputs)]
    ordered = np.sort(ref_out.astype(np.float64), axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if ref_out.shape[1] > 1 else np.abs(ordered[:, 0])
    low_margin = margin < q["scale"]
    differ = pred != ref_pred
    facts.update({
        "output_saturated_share": float(np.mean(at_min | at_max)),
        "output_at_min_share": float(np.mean(at_min)),
        "output_at_max_share": float(np.mean(at_max)),
        "top1_saturated_samples": int(top_at_max.sum()),
        "top1_tied_at_max_samples": int(np.sum(top_at_max & (at_max.sum(axis=1) >= 2))),
        "float_logit_range": [float(ref_out.min()), float(ref_out.max())],
        "low_margin_samples": int(low_margin.sum()),
        "disagreements_in_low_margin": int(np.sum(differ & low_margin)),
    })
    return facts


def _facts(run_dir: Path, x: np.ndarray, qat_used: bool, manifest: dict) -> dict[str, Any]:
    """Facts about the run the diagnosis reasons from; ``None`` where the run does not say."""
    recipe = _read_yaml(run_dir / "recipe.resolved.yaml") or {}
    report = _read_json(run_dir / "report.json") or {}
    dataset = report.get("dataset") or {}
    rep = ((recipe.get("convert") or {}).get("representative_samples"))
    train = dataset.get("train")
    return {
        "representative_samples": rep,
        "representative_samples_used": (min(rep, train) if rep and train else rep),
        "train_samples": train,
        "classes": dataset.get("classes"),
        "representative_class_balance": ("unknown: convert draws the representative set at "
                                         "random from the training split and does not record "
                                         "its labels"),
        "qat_used": qat_used,
        "qat_scheme": (_read_json(run_dir / "stages" / "qat" / "metrics.json") or {}).get("scheme")
        if qat_used else None,
        "x_range": [float(x.min()), float(x.max())],
    }


# ---------------------------------------------------------------------------------- diagnosis

def _diagnose(row: dict, rows: list[dict], facts: dict, v: _Outputs, ref_out: np.ndarray,
              ref_pred: np.ndarray, threshold: float) -> list[dict[str, str]]:
    """Likely causes of a quantized variant's low agreement, most specific first.

    Each entry: ``cause``, ``evidence`` (the checked numbers) and ``try`` (what to change).
    """
    out: list[dict[str, str]] = []
    by = {r["name"]: r for r in rows}
    qf = row.get("quantization") or {}
    agree = row["agreement"]

    flt = by.get("tflite_float")
    if (row["variant"] != "keras_qat" and flt and flt["agreement"] is not None
            and flt["disagreements"] and flt["agreement"] < threshold):
        out.append({"cause": "conversion, not quantization",
                    "evidence": f"the float TFLite model already agrees only {flt['agreement']:.4f} "
                                "with Keras float",
                    "try": "check for layers the converter rewrites (custom layers, unsupported "
                           "ops, training-only behaviour such as dropout or batch norm in training mode)"})
    micro = row.get("litert_same_file")
    if micro and micro["agreement"] < 1.0:
        out.append({"cause": "TFLite Micro kernels differ from LiteRT on the same file",
                    "evidence": f"TFLM and LiteRT agree on {micro['agreement']:.4f} of samples, "
                                f"max output difference {micro['max_abs_diff']:.4g}",
                    "try": "compare per-op outputs; update tflite-micro; check the op resolver "
                           "uses the reference (not optimized) kernels on the host"})

    if row["variant"] == "keras_qat":
        if row["disagreements"]:
            out.append({"cause": "QAT fine-tuning moved the model away from the float model",
                        "evidence": f"the Keras QAT model itself agrees {agree:.4f} with Keras float "
                                    f"(accuracy {row['accuracy']:.4f} vs "
                                    f"{by[REFERENCE]['accuracy']:.4f})",
                        "try": "lower qat.learning_rate or train more qat.epochs so it recovers; "
                               "the int8 files follow the QAT model, not the float one"})
    elif "agreement_with_keras_qat" in row:
        with_qat = row["agreement_with_keras_qat"]
        qat_row = by.get("keras_qat") or {}
        if qat_row.get("disagreements") and with_qat >= agree:
            out.append({"cause": "the QAT model, not the converter",
                        "evidence": f"this file agrees {with_qat:.4f} with the Keras QAT model it "
                                    f"was converted from, which agrees {qat_row['agreement']:.4f} "
                                    "with Keras float",
                        "try": "improve QAT (see the keras_qat row); conversion kept what QAT "
                               "learned"})
        if with_qat < 1.0:
            out.append({"cause": "conversion changes the QAT model's predictions",
                        "evidence": f"this file agrees {with_qat:.4f} with the Keras QAT model it "
                                    "was converted from",
                        "try": "check that the converter kept QAT's ranges (no float fallback, "
                               "same input preprocessing as in training)"})

    q_out = qf.get("output")
    if q_out is not None:
        sat = qf.get("output_saturated_share", 0.0)
        top = qf.get("top1_saturated_samples", 0)
        ties = qf.get("top1_tied_at_max_samples", 0)
        lo, hi = qf.get("float_logit_range", [None, None])
        if top or sat > SATURATION_SHARE:
            tied = (f", {ties} of them with another class tied there (argmax then picks the lower "
                    "class index)" if ties else ", none tied with another class, so it clips "
                    "logits (see the max logit difference) without flipping a prediction by itself")
            if facts["qat_used"]:
                fix = ("the output range comes from QAT's moving-average range trackers (tfmot "
                       "starts them at [-6, 6]): train more qat.epochs so they follow the logits, "
                       "or keep logits smaller (l2, fewer epochs at high learning rate)")
            else:
                fix = ("calibrate on more (and more varied) samples: raise "
                       "convert.representative_samples; or enable QAT so the range is learned")
            out.append({"cause": "int8 output saturation",
                        "evidence": f"{sat:.1%} of int8 outputs sit at the limits "
                                    f"({qf['output_at_min_share']:.1%} at {q_out['qmin']}, "
                                    f"{qf['output_at_max_share']:.1%} at {q_out['qmax']}); "
                                    f"{top} samples have their top output at {q_out['qmax']}{tied}; "
                                    f"float logits span [{lo:.3g}, {hi:.3g}], the int8 output "
                                    f"covers [{q_out['range'][0]:.3g}, {q_out['range'][1]:.3g}]",
                        "try": fix})
        low, in_low = qf.get("low_margin_samples", 0), qf.get("disagreements_in_low_margin", 0)
        if low:
            out.append({"cause": "coarse int8 output resolution",
                        "evidence": f"{low} samples have top-1/top-2 float logits closer than one "
                                    f"output step ({q_out['scale']:.4g}); {in_low} of "
                                    f"{row['disagreements']} disagreements are among them",
                        "try": "these flips are expected at int8; QAT or a wider margin (more "
                               "training, label smoothing off) reduces them"})

    q_in = qf.get("input")
    if q_in is not None:
        x_lo, x_hi = facts["x_range"]
        r_lo, r_hi = q_in["range"]
        if x_lo < r_lo - q_in["scale"] / 2 or x_hi > r_hi + q_in["scale"] / 2:
            out.append({"cause": "test inputs outside the input quantization range",
                        "evidence": f"test x spans [{x_lo:.4g}, {x_hi:.4g}], int8 input covers "
                                    f"[{r_lo:.4g}, {r_hi:.4g}]: values outside are clipped",
                        "try": "calibrate on data preprocessed exactly like the test data; check "
                               "scaling/normalization in the data source"})
        elif (x_hi - x_lo) < 0.5 * (r_hi - r_lo):
            used = int(round((x_hi - x_lo) / q_in["scale"])) + 1
            out.append({"cause": "test inputs use a small part of the input range",
                        "evidence": f"test x spans [{x_lo:.4g}, {x_hi:.4g}] of [{r_lo:.4g}, {r_hi:.4g}]: "
                                    f"about {used} of 256 input levels",
                        "try": "calibrate on data preprocessed like the test data"})

    rep, used, train = (facts["representative_samples"], facts["representative_samples_used"],
                        facts["train_samples"])
    classes = facts["classes"]
    if rep is not None:
        per_class = f" (about {used / classes:.0f} per class if balanced)" if classes and used else ""
        of = f" of {train} training samples" if train else ""
        bigger = min(train, max(4 * used, 1000)) if train and used else max(4 * rep, 1000)
        note = ("; with QAT the activation ranges come mostly from QAT's own range tracking, "
                "so this matters less" if facts["qat_used"] else "")
        out.append({"cause": "representative (calibration) set too small or unbalanced",
                    "evidence": f"int8 ranges were calibrated on {used} samples{of}{per_class}; "
                                f"its class balance is unknown (not recorded){note}",
                    "try": f"raise convert.representative_samples (e.g. to {bigger})"})
    else:
        out.append({"cause": "representative (calibration) set unknown",
                    "evidence": "recipe.resolved.yaml has no convert.representative_samples",
                    "try": "rerun with the current edgekit, which records it"})
    if not facts["qat_used"] and row["variant"] != "keras_qat":
        out.append({"cause": "post-training quantization only",
                    "evidence": "the run has no QAT stage (stages/qat)",
                    "try": "enable QAT in the recipe, e.g. qat: {epochs: 3}"})
    top = row.get("top_disagreement_classes") or []
    if top:
        names = ", ".join(f"{t['class']} ({t['count']} of {t['of']})" for t in top)
        out.append({"cause": "class-specific loss",
                    "evidence": f"disagreements concentrate in classes {names}",
                    "try": "make sure these classes are in the representative set; look at their "
                           "confusions in eval/<target>.json"})
    return out


# ------------------------------------------------------------------------------------ render

def render_compare(result: dict[str, Any]) -> str:
    """A markdown table of :func:`compare`'s result, then each diagnosis as a list.

    Columns: variant, runtime, accuracy, its change against the teacher (points; every stage
    from the teacher on is a row, so the loss of each shows), agreement with Keras float, max and mean absolute
    output (logit) difference after dequantization, the three classes (as Keras float predicts
    them) with the most disagreements as ``class: count/of``.
    """
    ref = result["reference"]
    lines = [f"Parity of `{result['run']}` on {result['samples']} test samples; reference: Keras "
             f"float (stage `{ref['stage']}`); agreement threshold {result['threshold']:g}", "",
             "| variant | runtime | accuracy | vs teacher | agreement | max abs logit diff | mean abs logit diff "
             "| most disagreeing classes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["variants"]:
        if r["error"] is not None:
            lines.append(f"| {r['name']} | {r['runtime']} | error: {r['error']} | | | | | |")
            continue
        vs = r.get("vs_teacher_points")
        vs = "–" if vs is None else ("±0.0 pt" if round(vs, 1) == 0 else f"{vs:+.1f} pt".replace("-", "−"))
        classes = ", ".join(f"{t['class']}: {t['count']}/{t['of']}" for t in r["top_disagreement_classes"]) or "–"
        flag = " ⚠" if r["name"] in result["below_threshold"] else ""
        lines.append(f"| {r['name']} | {r['runtime']} | {r['accuracy']:.4f} | {vs} | {r['agreement']:.4f}{flag} "
                     f"| {r['max_abs_logit_diff']:.3g} | {r['mean_abs_logit_diff']:.3g} | {classes} |")
    f = result["facts"]
    lines += ["", f"Representative set: {f['representative_samples_used']} of {f['train_samples']} "
                  f"training samples (class balance unknown); QAT: "
                  f"{'yes (' + str(f['qat_scheme']) + ')' if f['qat_used'] else 'no'}; "
                  f"test x range [{f['x_range'][0]:.4g}, {f['x_range'][1]:.4g}]."]
    if ref.get("matches_eval_ref") is not None and ref["matches_eval_ref"] < 1.0:
        lines.append(f"Warning: the Keras float model matches eval.npz's reference predictions on "
                     f"only {ref['matches_eval_ref']:.4f} of samples; eval.npz may be stale.")
    for r in result["variants"]:
        if not r.get("diagnosis"):
            continue
        lines += ["", f"Diagnosis for {r['name']} (agreement {r['agreement']:.4f} < "
                      f"{result['threshold']:g}):"]
        lines += [f"- {d['cause']}: {d['evidence'].rstrip('.')}. Try: {d['try'].rstrip('.')}."
                  for d in r["diagnosis"]]
    lines.append("")
    lines.append("PASS: every quantized variant agrees at or above the threshold." if result["ok"]
                 else f"FAIL: below threshold: {', '.join(result['below_threshold']) or 'none'}; "
                      f"errors: {', '.join(result['errors']) or 'none'}.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ helpers

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
