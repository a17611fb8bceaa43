"""Per-layer int8 error in every run, and selective precision chosen automatically.

Called by each target kind's conversion (:func:`edgekit.targets.base.precision_artifacts`) once
the target's int8 model is written:

1. **Per-layer error** (``convert.per_layer_samples`` validation samples, the test split when the
   validation split is empty): :func:`edgekit.layer_error.layer_errors` of the int8 model against
   the float Keras model it was made from, named by Keras layer; recorded as the target's
   ``per_layer_error``. Not measurable without a Keras float model (a given converted
   ``.tflite``/``.onnx`` student): ``per_layer_error_reason`` says so.

2. **Selective precision** (``convert.selective: auto``): when the int8 model loses more than the
   quality gate allows on the validation split (accuracy in LiteRT against the teacher's, in
   points), layers are kept at the kind's higher precision (``TargetKindSpec.higher_precision``:
   float on mobile and rpi, int16 activations with int8 weights on mcu), the largest SNR drop
   first, until the gate holds; then each kept layer whose removal still holds the gate is given
   back to int8, so the model is the smallest found that holds. A layer the kind cannot run at
   the higher precision (on a microcontroller: an op without a TFLite Micro int16x8 kernel,
   :data:`edgekit.mcu.TFLM_INT16X8_OPS`) is refused before any model is built, and the built
   model is checked again (integer-only on an MCU, every int16 op with a kernel). Models are
   post-training quantized from the float model by litert-quantizer with layer-scoped rules
   (:func:`edgekit.external.quantize.quantize_tflite`); the cost in bytes is measured against the
   same quantizer's all-int8 model and against the target's int8 model. The selected model ships
   as ``model_selective.tflite`` (a variant the evaluator measures on the test split);
   ``selective_precision`` records the choice, every model tried and why.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from .errors import ConversionError

log = logging.getLogger(__name__)

MAX_CANDIDATES = 8       # layers tried at higher precision, at most (the most sensitive first)
MAX_SELECT_SAMPLES = 2000  # validation samples the accuracy of each tried model is measured on
SELECTIVE_FILE = "model_selective.tflite"


def _split(data, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``n`` samples of the validation split (the test split when it is empty)."""
    if len(data.x_val):
        return data.x_val[:n], data.y_val[:n], "val"
    return data.x_test[:n], data.y_test[:n], "test"


def for_target(source, spec, ctx, int8) -> list:
    """See :func:`edgekit.targets.base.precision_artifacts`."""
    cfg = ctx.cfg
    models = getattr(source, "models", None)
    float_model = models.get("float") if isinstance(models, dict) else None
    if cfg.per_layer_samples == 0:
        int8.extra["per_layer_error"] = None
        int8.extra["per_layer_error_reason"] = "convert.per_layer_samples: 0 (not measured)"
    elif float_model is None:
        int8.extra["per_layer_error"] = None
        int8.extra["per_layer_error_reason"] = ("no Keras float model to compare with: the student is a given "
                                                "converted model")
    else:
        try:
            int8.extra["per_layer_error"] = per_layer_error(float_model, int8.path, ctx.data, cfg.per_layer_samples)
        except Exception as exc:  # noqa: BLE001 - a diagnosis that cannot be made does not fail the target
            int8.extra["per_layer_error"] = None
            int8.extra["per_layer_error_reason"] = f"could not be measured: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            log.warning("%s: per-layer error %s", int8.path, int8.extra["per_layer_error_reason"])
    if cfg.selective == "off":
        return []
    try:
        record, blob = choose(source, spec, ctx, int8)
    except ConversionError as exc:  # the quantizer could not make it, or made what the target cannot run
        record = {"status": "unavailable", "precision": spec.higher_precision, "layers": [], "refused": [],
                  "max_accuracy_drop": ctx.max_accuracy_drop, "int8": {"file": int8.path.name}, "selective": None,
                  "tried": [], "reason": str(exc).splitlines()[0]}
        blob = None
        log.warning("%s: selective precision unavailable: %s", int8.path, record["reason"])
        log.debug("selective precision failed", exc_info=True)
    int8.extra["selective_precision"] = record
    if blob is None:
        return []
    from ._io import write_text
    from .convert import Artifact

    path = write_text(ctx.out_dir / SELECTIVE_FILE, blob)
    kept = {r["layer"]: r["precision"] for r in record["layers"]}
    fmt = "tflite-full-selective" if spec.integer_only else "tflite-selective"
    return [Artifact(path, fmt, int8.runtime, {"selective_layers": kept})]


def per_layer_error(float_model, int8_path, data, n: int) -> dict[str, Any] | None:
    """The ``per_layer_error`` of a target: ``{split, samples, metric, layers, worst}``; ``layers``
    as :func:`edgekit.layer_error.layer_errors` gives them (execution order)."""
    from .layer_error import layer_errors

    x, _, split = _split(data, n)
    res = layer_errors(float_model, int8_path, np.asarray(x, np.float32))
    return {"split": split, "samples": res["samples"], "metric": "snr_drop_db", "layers": res["layers"],
            "worst": res["worst"]}


# ----------------------------------------------------------------------------- choosing


def _accuracy(blob: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the TFLite model ``blob`` on ``x`` in LiteRT (batch 1; integer inputs
    quantized, integer outputs dequantized with the model's own parameters)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=bytes(blob))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    correct = 0
    for i in range(len(x)):
        s = np.asarray(x[i:i + 1], np.float32)
        if inp["dtype"] != np.float32:
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            s = np.clip(np.round(s / scale + zp), info.min, info.max)
        it.set_tensor(inp["index"], s.astype(inp["dtype"]).reshape(inp["shape"]))
        it.invoke()
        o = np.asarray(it.get_tensor(out["index"]), np.float64)
        if out["dtype"] != np.float32:
            scale, zp = out["quantization"]
            o = (o - zp) * scale if scale else o
        correct += int(np.argmax(o.reshape(-1)) == int(y[i]))
    return correct / len(x) if len(x) else float("nan")


def _keras_accuracy(model, x, y) -> float:
    pred = np.asarray(model.predict(x, batch_size=256, verbose=0))
    return float(np.mean(pred.reshape(len(x), -1).argmax(-1) == np.asarray(y).reshape(-1)))


def higher_precision_ops(blob: bytes, precision: str) -> list[str]:
    """The ops of ``blob`` that compute at ``precision`` (``int16``: an int16 output; ``float``: a
    float32 output), QUANTIZE/DEQUANTIZE excluded unless they write int16 (a requantization the
    runtime must have a kernel for)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=bytes(blob),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    details = {t["index"]: t for t in it.get_tensor_details()}
    want = np.int16 if precision == "int16" else np.float32
    found = []
    for op in it._get_ops_details():  # noqa: SLF001 - op names and tensor indices
        if op["op_name"] == "DEQUANTIZE" or (op["op_name"] == "QUANTIZE" and precision != "int16"):
            continue
        if any(np.dtype(details[i]["dtype"]) == want for i in op["outputs"] if i in details):
            found.append(op["op_name"])
    return found


def _regex(tensors: list[str]) -> str:
    """A regex that finds exactly the ops writing these tensors: litert-quantizer matches an op's
    scope, its output tensor names each followed by ``;``."""
    return "^(?:" + "|".join(re.escape(t) for t in tensors) + ");$"


def choose(source, spec, ctx, int8) -> tuple[dict[str, Any], bytes | None]:
    """Choose the layers to keep at ``spec.higher_precision`` (see the module docstring); returns
    ``(record, model bytes or None)``. The record's ``status``: ``not_needed`` (the int8 model
    holds the gate), ``met`` (the selective model holds it on the validation split), ``not_met``
    (even every candidate layer kept does not; that model ships, so its cost is visible) or
    ``unavailable`` (with ``reason``)."""
    from .external.quantize import calibrate_tflite
    from .layer_error import layer_ops
    from .tflite_file import read_named

    cfg, data = ctx.cfg, ctx.data
    precision = spec.higher_precision
    record: dict[str, Any] = {"status": "unavailable", "precision": precision, "layers": [], "refused": [],
                              "max_accuracy_drop": ctx.max_accuracy_drop, "int8": {"file": int8.path.name},
                              "selective": None, "tried": []}
    models = getattr(source, "models", None)
    float_model = models.get("float") if isinstance(models, dict) else None
    per_layer = int8.extra.get("per_layer_error")
    reason = None
    if precision is None:
        reason = f"target kind {spec.name} runs no model part at a higher precision"
    elif float_model is None:
        reason = "no Keras float model to quantize selectively (the student is a given converted model)"
    elif not per_layer:
        reason = "no per-layer error to rank the layers by"
    elif ctx.max_accuracy_drop is None:
        reason = "no quality gate (quality: {max_accuracy_drop: POINTS}) to choose against"
    elif "int16" in int8.format:
        reason = "the target's model has int16 activations everywhere already (convert.mcu_scheme: int16x8)"
    if reason is not None:
        record["reason"] = reason
        log.info("selective precision: %s", reason)
        return record, None

    x, y, split = _split(data, MAX_SELECT_SAMPLES)
    x = np.asarray(x, np.float32)
    reference = models.get("teacher") or float_model
    ref_name = "teacher" if models.get("teacher") is not None else "float model"
    ref_acc = _keras_accuracy(reference, x, y)
    budget = ctx.max_accuracy_drop

    def drop(acc: float) -> float:
        return round((ref_acc - acc) * 100, 3)

    int8_blob = read_named(int8.path)  # a shipped mcu file's names are beside it
    int8_acc = _accuracy(int8_blob, x, y)
    record["search"] = {"split": split, "samples": int(len(x)), "reference": ref_name,
                        "reference_accuracy": round(ref_acc, 6), "int8_accuracy": round(int8_acc, 6),
                        "int8_drop_points": drop(int8_acc)}
    if drop(int8_acc) <= budget:
        record.update(status="not_needed", reason=f"the int8 model loses {drop(int8_acc):.2f} pt on the {split} "
                                                  f"split, within the gate's {budget:g} pt")
        return record, None

    # rank the layers, refuse the ones the kind cannot run at the higher precision (before building)
    ops_of = layer_ops(float_model, int8_blob)
    ranked = sorted((r for r in per_layer["layers"] if r.get("snr_drop_db") is not None and r["snr_drop_db"] > 0
                     and r["layer"] in ops_of), key=lambda r: -r["snr_drop_db"])
    candidates: list[tuple[str, tuple[str, ...]]] = []  # (ranked layer, the unit kept with it)
    seen: set[tuple[str, ...]] = set()
    for r in ranked:
        ops = ops_of[r["layer"]]["ops"]
        problem = spec.higher_precision_problem(ops)
        if problem:
            record["refused"].append({"layer": r["layer"], "ops": ops, "reason": problem})
            continue
        unit = tuple(n for n in (*_producers(float_model, r["layer"], ops_of), r["layer"])
                     if n in ops_of and spec.higher_precision_problem(ops_of[n]["ops"]) is None)
        if unit not in seen and len(candidates) < MAX_CANDIDATES:
            seen.add(unit)
            candidates.append((r["layer"], unit))
    if not candidates:
        record["reason"] = "no layer can be kept at higher precision on this target"
        return record, None

    # the run's conversion of its float model (only a KerasSource has a Keras float model, checked
    # above; its tflite() converts once for all targets of the run), for batch 1 where the primary
    # file is (TFLite Micro's), so that the two files differ only in the layers' precision
    float_blob = source.tflite("float32", batch=1 if spec.integer_only else None)
    tensors_of = layer_ops(float_model, float_blob)
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_content=float_blob).get_signature_list()
    signature = next(iter(sigs))
    signature_input = sigs[signature]["inputs"][0]
    from .convert import representative

    rep = [s[0] for s in representative(data, cfg.representative_samples, getattr(source, "seed", 0))()]
    mode = "full-int8" if spec.integer_only else "int8"
    try:
        return _search(record, candidates, float_model, float_blob, tensors_of, ops_of, per_layer, spec, mode, x, y,
                       drop, budget, split,
                       calibrate_tflite(float_blob, mode, signature=signature, signature_input=signature_input,
                                        calibration=rep),
                       dict(signature=signature, signature_input=signature_input))
    except ConversionError as exc:  # the quantizer could not make a model, or made one the target cannot run
        record.update(status="unavailable", layers=[], selective=None, reason=str(exc).splitlines()[0])
        log.warning("selective precision unavailable: %s", record["reason"])
        return record, None


def _search(record, candidates, float_model, float_blob, tensors_of, ops_of, per_layer, spec, mode, x, y, drop,
            budget, split, qsvs, sig) -> tuple[dict[str, Any], bytes]:
    """Build and measure models with more and more layers kept (see :func:`choose`)."""
    from .convert import check_integer_only
    from .external.quantize import quantize_tflite

    precision = spec.higher_precision
    built: dict[tuple[str, ...], tuple[bytes, float]] = {}

    def build(keep: tuple[str, ...]) -> tuple[bytes, float]:
        if keep not in built:
            rules = {_regex(tensors_of[name]["tensors"]): precision for name in keep if name in tensors_of}
            blob = quantize_tflite(float_blob, mode, keep=rules or None, qsvs=qsvs, **sig)
            acc = _accuracy(blob, x, y)
            built[keep] = (blob, acc)
            record["tried"].append({"layers": list(keep), "size_bytes": len(blob), "accuracy": round(acc, 6),
                                    "drop_points": drop(acc), "holds": drop(acc) <= budget})
        return built[keep]

    base_blob, _ = build(())  # the same quantizer's all-int8 model: the cost's baseline
    keep: tuple[str, ...] = ()
    for _, unit in candidates:  # forward: the most sensitive first, until the gate holds
        keep = (*keep, *(n for n in unit if n not in keep))
        if drop(build(keep)[1]) <= budget:
            break
    met = drop(build(keep)[1]) <= budget
    if met:  # backward: give back to int8 each kept layer the gate does not need
        for name in list(keep):
            trial = tuple(n for n in keep if n != name)
            blob, acc = build(trial)
            if drop(acc) <= budget and len(blob) <= len(built[keep][0]):
                keep = trial
    blob, acc = built[keep]
    _check_built(blob, spec, precision, check_integer_only)
    by_name = {r["layer"]: r for r in per_layer["layers"]}
    record["layers"] = [{"layer": n, "kind": by_name[n]["kind"], "ops": ops_of[n]["ops"], "precision": precision,
                         "snr_drop_db": by_name[n]["snr_drop_db"]} for n in keep]
    record["status"] = "met" if met else "not_met"
    record["int8_same_quantizer"] = {"size_bytes": len(base_blob), "accuracy_at_choice": round(built[()][1], 6)}
    record["selective"] = {"file": SELECTIVE_FILE, "size_bytes_at_choice": len(blob),
                           "accuracy_at_choice": round(acc, 6), "drop_points_at_choice": drop(acc)}
    record["cost_bytes_vs_same_quantizer"] = len(blob) - len(base_blob)
    if not met:
        record["reason"] = (f"even with {len(keep)} layer(s) at {precision} the model loses {drop(acc):.2f} pt on the "
                            f"{split} split, more than the gate's {budget:g} pt")
    log.info("selective precision: %s at %s, %d bytes (all-int8 %d), %s split drop %.2f pt (gate %g)",
             ", ".join(keep), precision, len(blob), len(base_blob), split, drop(acc), budget)
    return record, blob


def _producers(model, name: str, ops_of: dict, depth: int = 0) -> list[str]:
    """The layers whose output layer ``name`` reads, looking through layers that only reshape
    (or have no op of their own), so the kept unit reads its input at the higher precision too:
    the error a layer shows often entered in the tensor it reads (a wide-range activation whose
    quantization the energy-normalized error of its producer hides)."""
    layer = model.get_layer(name)
    found: list[str] = []
    for node in getattr(layer, "_inbound_nodes", []):
        inbound = node.inbound_layers
        for p in inbound if isinstance(inbound, (list, tuple)) else [inbound]:
            if type(p).__name__ == "InputLayer" or p.name in found:
                continue
            found.append(p.name)
            if depth < 4 and set(ops_of.get(p.name, {}).get("ops", [])) <= {"RESHAPE"}:
                found += [q for q in _producers(model, p.name, ops_of, depth + 1) if q not in found]
    return found


def _check_built(blob: bytes, spec, precision: str, check_integer_only) -> None:
    """The built model as the kind needs it: integer-only with integer I/O where the kind says so,
    and every op at the higher precision one the kind can run (else ConversionError)."""
    if spec.integer_only:
        check_integer_only(blob, require_int_io=True)
    ops = higher_precision_ops(blob, precision)
    problem = spec.higher_precision_problem(ops)
    if problem:
        raise ConversionError(f"the selectively quantized model has {precision} ops the target cannot run: {problem}")
