"""Per-layer quantization error, named by Keras layer: where does int8 lose accuracy?

The same samples go through the float Keras model and the int8 TFLite model (LiteRT with
``experimental_preserve_all_tensors=True`` and no default delegate, so every intermediate
tensor is kept). Each int8 op output is mapped back to the Keras layer it computes: TFLite names
a tensor after the ops fused into it (``model/activation_1/Relu;model/batch_normalization_1/...;
model/conv2d_1/Conv2D``), and the Keras layer named there that comes last in the model is the
one whose output the tensor holds (a QAT model's ``quant_`` prefixes are dropped; a model output
without such a name maps to the Keras output layer). Per layer, over all samples and elements:

- ``nmse``: ``sum((q - f)^2) / sum(f^2)``, the dequantized int8 activation ``q`` against the
  float one ``f`` (the error accumulated up to that layer), and ``snr_db = -10·log10(nmse)``;
- ``snr_drop_db``: how much SNR the layer itself lost: the lowest SNR of its inputs minus its
  own. The layers with the largest drop are where the error enters: the ``worst`` list.

The float reference of a run is its last float stage (the model its targets were converted
from, or the float model QAT started from).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EdgekitError
from .tflite_file import read, read_named
from .weight_lut import DECODE_OP

log = logging.getLogger(__name__)

SCHEMA = "edgekit.per_layer/1"


def _interpreter(path: Path):
    """LiteRT on the file at ``path``, every tensor kept; a microcontroller file's tensor names
    come back from the sidecar beside it (:func:`edgekit.tflite_file.read_named`)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=read_named(path), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def _layer_of(tensor_name: str, order: dict[str, int]) -> str | None:
    """The Keras layer a TFLite tensor holds the output of (the last one its name mentions)."""
    found = []
    for part in tensor_name.split(";"):
        for comp in part.split("/"):
            for cand in (comp, comp[len("quant_"):] if comp.startswith("quant_") else None):
                if cand in order:
                    found.append(cand)
    return max(found, key=order.__getitem__) if found else None


def _tensor_layers(it, model) -> dict[int, str]:
    """``{tensor index: Keras layer name}`` for the op outputs of the interpreter ``it`` (QUANTIZE
    and DEQUANTIZE outputs excluded) that name a layer of ``model`` (see the module docstring)."""
    details = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001 - the op list with input and output tensors
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    out_layer = model.layers[-1].name
    graph_outputs = {d["index"] for d in it.get_output_details()}
    feeds_output = {o["inputs"][0] for o in ops if o["op_name"] == "DEQUANTIZE" and set(o["outputs"]) & graph_outputs}
    tensor_layer: dict[int, str] = {}
    for op in ops:
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or len(op["outputs"]) != 1:
            continue
        t = int(op["outputs"][0])
        name = _layer_of(details[t]["name"], order)
        if name is None and (t in graph_outputs or t in feeds_output):
            name = out_layer
        if name is not None:
            tensor_layer[t] = name  # a later op naming the same layer overrides: its last op's output
    return tensor_layer


def layer_ops(model, blob: bytes) -> dict[str, dict[str, list[str]]]:
    """Per Keras layer of ``model``, what the TFLite model ``blob`` computes it with:
    ``{layer: {"ops": [op names, in order], "tensors": [their output tensor names]}}`` (QUANTIZE
    and DEQUANTIZE are the edges between precisions, not a layer's ops). Layers that no op names
    (the input, a layer folded into another) are absent."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=bytes(blob),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    details = {t["index"]: t for t in it.get_tensor_details()}
    producer = {int(o["outputs"][0]): o["op_name"] for o in it._get_ops_details() if len(o["outputs"]) == 1}  # noqa: SLF001
    out: dict[str, dict[str, list[str]]] = {}
    for t, name in _tensor_layers(it, model).items():
        entry = out.setdefault(name, {"ops": [], "tensors": []})
        entry["ops"].append(producer[t])
        entry["tensors"].append(details[t]["name"])
    return out


def layer_errors(model, tflite_path: Path, x: np.ndarray) -> dict[str, Any]:
    """Per-layer error of the int8 model at ``tflite_path`` against the float Keras ``model`` on ``x``.

    Returns ``{"layers": [{layer, kind, tensor, op, nmse, snr_db, snr_drop_db, scale}...] in
    execution order, "worst": [layer names, largest SNR drop first (at most 3, only layers that lost
    SNR)], "samples": n}``.
    """
    from ._tf import keras

    k = keras()
    it = _interpreter(Path(tflite_path))
    details = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    tensor_layer = _tensor_layers(it, model)
    last_tensor = {}
    for t, name in tensor_layer.items():
        last_tensor[name] = t
    if not last_tensor:
        raise EdgekitError(f"{tflite_path}: no tensor name matches a layer of the Keras model; is it converted "
                           "from this model?")
    names = sorted(last_tensor, key=order.__getitem__)
    probe = k.Model(model.inputs, [model.get_layer(n).output for n in names])
    ref = probe.predict(x, batch_size=256, verbose=0)
    ref = ref if isinstance(ref, list) else [ref]
    inp = it.get_input_details()[0]
    err = {n: 0.0 for n in names}
    energy = {n: 0.0 for n in names}
    in_err, in_energy = 0.0, 0.0
    in_tensor = None
    for op in ops:
        if op["op_name"] == "QUANTIZE" and int(op["inputs"][0]) == inp["index"]:
            in_tensor = int(op["outputs"][0])
    for i in range(len(x)):
        sample = x[i:i + 1]
        if inp["dtype"] != np.float32:
            scale, zp = inp["quantization"]
            sample = np.clip(np.round(sample / scale + zp), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        it.set_tensor(inp["index"], sample.astype(inp["dtype"]).reshape(inp["shape"]))
        it.invoke()
        for j, n in enumerate(names):
            q = _dequantized(it, details[last_tensor[n]])
            f = np.asarray(ref[j][i], np.float64).reshape(-1)
            if q.size != f.size:
                continue
            err[n] += float(np.sum((q - f) ** 2))
            energy[n] += float(np.sum(f ** 2))
        src = in_tensor if in_tensor is not None else inp["index"]
        q = _dequantized(it, details[src])
        f = np.asarray(x[i], np.float64).reshape(-1)
        in_err, in_energy = in_err + float(np.sum((q - f) ** 2)), in_energy + float(np.sum(f ** 2))
    snr_of_tensor: dict[int, float] = {}
    if in_tensor is not None:
        snr_of_tensor[in_tensor] = _snr(in_err, in_energy)
    snr_of_tensor[inp["index"]] = _snr(in_err, in_energy)
    producer = {int(o["outputs"][0]): o for o in ops if len(o["outputs"]) == 1}
    rows = []
    for n in names:
        t = last_tensor[n]
        nmse = err[n] / energy[n] if energy[n] > 0 else None
        snr = _snr(err[n], energy[n])
        snr_of_tensor[t] = snr
        rows.append({"layer": n, "kind": model.get_layer(n).__class__.__name__, "tensor": details[t]["name"],
                     "op": producer[t]["op_name"] if t in producer else None,
                     "nmse": None if nmse is None else round(nmse, 8),
                     "snr_db": None if snr is None or math.isinf(snr) else round(snr, 3),
                     "scale": float(details[t]["quantization"][0]) or None, "_t": t})
    for r in rows:  # the SNR the layer started from: its inputs', traced back through unnamed ops
        r["snr_drop_db"] = None
        start = _input_snr(r["_t"], producer, snr_of_tensor, skip=r["_t"])
        own = snr_of_tensor[r["_t"]]
        if start is not None and own is not None:
            drop = start - own
            r["snr_drop_db"] = round(drop, 3) if math.isfinite(drop) else None
        del r["_t"]
    ranked = sorted((r for r in rows if r["snr_drop_db"] is not None and r["snr_drop_db"] > 0),
                    key=lambda r: -r["snr_drop_db"])  # a layer that lost no SNR is not where error enters
    return {"schema": SCHEMA, "samples": int(len(x)), "layers": rows, "worst": [r["layer"] for r in ranked[:3]]}


def _snr(err: float, energy: float) -> float | None:
    if energy <= 0:
        return None
    return math.inf if err <= 0 else 10.0 * math.log10(energy / err)


def _input_snr(t: int, producer: dict, snr: dict, *, skip: int, depth: int = 0) -> float | None:
    """Lowest measured SNR among the activation inputs of the op producing ``t``."""
    op = producer.get(t)
    if op is None or depth > 50:
        return None
    found = []
    for i in op["inputs"]:
        i = int(i)
        if i < 0:
            continue
        if i in snr and i != skip:
            found.append(snr[i])
        elif i in producer:
            v = _input_snr(i, producer, snr, skip=skip, depth=depth + 1)
            if v is not None:
                found.append(v)
    return min(found) if found else None


def _dequantized(it, detail) -> np.ndarray:
    v = np.asarray(it.get_tensor(detail["index"]), np.float64).reshape(-1)
    scale, zp = detail["quantization"]
    return (v - zp) * scale if scale else v


def for_run(run_dir: Path, *, samples: int | None = 200) -> dict[str, Any]:
    """:func:`layer_errors` of every int8 TFLite artifact of a finished run, against its float stage,
    on the first ``samples`` test samples of ``eval/eval.npz``."""
    from .fitting import load_model
    from .ondevice import evaluate as ev
    from .parity import _artifacts, _float_stage, _read_json

    run_dir = Path(run_dir)
    x, _, _ = ev.load_eval_data(str(run_dir / "eval" / "eval.npz"))
    x = x[:samples] if samples else x
    manifest = _read_json(run_dir / "manifest.json") or {}
    status = {k: v.get("status") for k, v in (manifest.get("stages") or {}).items()}
    stage = _float_stage(run_dir, manifest, status)
    model = load_model(run_dir / "stages" / stage / "model.keras")
    out: dict[str, Any] = {"schema": SCHEMA, "reference": f"stages/{stage}/model.keras", "samples": int(len(x)),
                           "artifacts": []}
    seen = set()
    for a in _artifacts(run_dir, manifest):
        if a["format"] not in ("tflite-int8", "tflite-full-int8") or a["path"] in seen:
            continue
        seen.add(a["path"])
        try:
            if DECODE_OP in read(run_dir / a["path"]).ops:
                measured = (a.get("extra") or {}).get("per_layer_error")
                raise EdgekitError("its weights are look-up tables that TFLite Micro's DECODE op rebuilds, which "
                                   "LiteRT cannot run; "
                                   + ("report.json has its per-layer error, measured at convert time on the same "
                                      "weights stored plainly" if measured else "convert without "
                                      "convert.mcu_weight_bits to compare it layer by layer"))
            res = layer_errors(model, run_dir / a["path"], x.astype(np.float32))
            out["artifacts"].append({"target": a["target"], "path": a["path"], "layers": res["layers"],
                                     "worst": res["worst"]})
        except Exception as exc:  # noqa: BLE001 - one artifact that cannot be read does not stop the others
            out["artifacts"].append({"target": a["target"], "path": a["path"], "error": str(exc).splitlines()[0]})
    return out


def render(result: dict[str, Any]) -> str:
    """Plain-text tables: per artifact, per layer SNR, SNR drop and NMSE; the worst layers named."""
    lines = [f"Per-layer int8 error against {result['reference']} ({result['samples']} test samples)"]
    for a in result["artifacts"]:
        lines.append("")
        if "error" in a:
            lines.append(f"{a['target']} {a['path']}: {a['error']}")
            continue
        lines.append(f"{a['target']} {a['path']}: worst layers (largest SNR drop): {', '.join(a['worst']) or '-'}")
        lines.append(f"  {'layer':<28} {'kind':<20} {'SNR dB':>8} {'drop dB':>8} {'NMSE':>10}")
        for r in a["layers"]:
            snr = ("inf" if r["nmse"] == 0 else "-") if r["snr_db"] is None else f"{r['snr_db']:.1f}"
            drop = "-" if r["snr_drop_db"] is None else f"{r['snr_drop_db']:.1f}"
            nmse = "-" if r["nmse"] is None else f"{r['nmse']:.2e}"
            lines.append(f"  {r['layer']:<28} {r['kind']:<20} {snr:>8} {drop:>8} {nmse:>10}")
    return "\n".join(lines)
