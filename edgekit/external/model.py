"""A given float model file (``.tflite`` or ``.onnx``): read, checked, measured, never written.

:func:`inspect_model` reads the file once and returns a :class:`GivenModel`: its kind, sha256,
input and output shapes, parameter counts and a Keras-like ``predict`` that runs it in its own
runtime (LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``) through the on-device evaluator's
batch-1 path, so the float accuracy a report shows is measured the way every target's is.
:func:`check_fits` compares it with the recipe's data before anything is converted.

Refused, with one line naming the file and the fix: a file that is not a model of its kind, a
model with more than one input or output, a non-float input, an already quantized model (give
the float model: edgekit quantizes it), and shapes that do not match the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .._io import sha256_path
from ..errors import RecipeError

# ONNX ops that only occur in quantized graphs (QDQ, QOperator or dynamic quantization)
ONNX_QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
    "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "ConvInteger", "MatMulInteger",
    "DynamicQuantizeMatMul", "QGemm", "QAttention"})


@dataclasses.dataclass(frozen=True)
class GivenModel:
    """A user's float model file, as read once (the file itself is never written).

    ``input_shape`` / ``output_shape`` leave out the batch dimension; ``None`` marks a dimension
    the model leaves dynamic. ``params``: elements of the float constant tensors (weights and
    biases); ``nonzero_params``: those that are not zero.
    """

    kind: str                               # "tflite" | "onnx"
    path: Path
    sha256: str
    size_bytes: int
    input_name: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    params: int
    nonzero_params: int
    signature: str | None = None            # TFLite signature key and its input's name: litert-quantizer
    signature_input: str | None = None      # calibrates through the signature

    @property
    def runtime(self) -> str:
        """The evaluator runtime that runs the file."""
        return "ai_edge_litert" if self.kind == "tflite" else "onnxruntime"

    def source(self) -> dict[str, Any]:
        """What the manifest and report record about the given file."""
        return {"kind": self.kind, "path": str(self.path.resolve()), "sha256": self.sha256,
                "size_bytes": self.size_bytes}

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        """The model's outputs on ``x`` (N, ...) as float32 (N, outputs), one sample per run, in
        its own runtime. Keras' ``predict`` signature, so :mod:`edgekit.tasks` scores it as it
        scores a Keras model (``batch_size`` and ``verbose`` are accepted and unused)."""
        from ..ondevice import evaluate as ev

        try:
            return ev.predict_outputs(str(self.path), np.asarray(x, np.float32), runtime=self.runtime)
        except ev.EvaluationError as exc:
            raise RecipeError(f"{self.path}: the given {self.kind} model does not run in {self.runtime}: {exc}") from None




def inspect_model(path: Path, kind: str | None = None) -> GivenModel:
    """Read ``path`` (kind from the suffix unless given) and check it is a float model with one
    input and one output. Raises :class:`RecipeError` naming the file and the fix."""
    path = Path(path)
    kind = kind or {".tflite": "tflite", ".onnx": "onnx"}.get(path.suffix.lower())
    if kind not in ("tflite", "onnx"):
        raise RecipeError(f"{path}: not a .tflite or .onnx file")
    if not path.is_file():
        raise RecipeError(f"{path}: no such {kind} model file")
    return _inspect_tflite(path) if kind == "tflite" else _inspect_onnx(path)


def _inspect_tflite(path: Path) -> GivenModel:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    blob = path.read_bytes()
    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise RecipeError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier at byte 4); give a float .tflite "
                          "file as the TFLite converter writes it")
    try:
        it = Interpreter(model_content=blob,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError with its reason
        raise RecipeError(f"{path}: LiteRT cannot load it: {str(exc).strip().splitlines()[0]}") from None
    ins, outs = it.get_input_details(), it.get_output_details()
    _one_in_one_out(path, len(ins), len(outs))
    if np.dtype(ins[0]["dtype"]) != np.float32:
        raise RecipeError(f"{path}: input {ins[0]['name']!r} is {np.dtype(ins[0]['dtype']).name}, not float32; give "
                          "the float model (edgekit quantizes it)")
    tensors = it.get_tensor_details()
    quantized = [t["name"] for t in tensors if np.asarray(t["quantization_parameters"]["scales"]).size]
    if quantized:
        raise RecipeError(f"{path}: already quantized ({len(quantized)} quantized tensors, e.g. {quantized[0]!r}); "
                          "give the float model: edgekit quantizes it for each target")
    sigs = it.get_signature_list()
    sig = next((k for k, v in sigs.items() if len(v.get("inputs", [])) == 1), None)
    produced = {i for op in it._get_ops_details() for i in op["outputs"]}  # noqa: SLF001 - only tensor indices
    inputs = {d["index"] for d in ins}
    params = nonzero = 0
    for t in tensors:
        if t["index"] in produced or t["index"] in inputs or np.dtype(t["dtype"]).kind != "f":
            continue
        try:
            value = it.get_tensor(t["index"])
        except ValueError:  # not a constant (a variable or an unallocated intermediate)
            continue
        params += int(value.size)
        nonzero += int(np.count_nonzero(value))
    return GivenModel("tflite", path, hashlib.sha256(blob).hexdigest(), len(blob), ins[0]["name"],
                      _dims(ins[0].get("shape_signature", ins[0]["shape"]))[1:],
                      _dims(outs[0].get("shape_signature", outs[0]["shape"]))[1:], params, nonzero,
                      signature=sig, signature_input=sigs[sig]["inputs"][0] if sig else None)


def _inspect_onnx(path: Path) -> GivenModel:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # DecodeError, OSError for missing external data
        raise RecipeError(f"{path}: not a readable ONNX model ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    ins = [i for i in graph.input if i.name not in init_names]
    _one_in_one_out(path, len(ins), len(graph.output))
    quantized = sorted({n.op_type for n in graph.node if n.op_type in ONNX_QUANTIZED_OPS})
    if quantized:
        raise RecipeError(f"{path}: already quantized (ops {', '.join(quantized)}); give the float model: edgekit "
                          "quantizes it for each target")
    elem = ins[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise RecipeError(f"{path}: input {ins[0].name!r} is {onnx.TensorProto.DataType.Name(elem).lower()}, not "
                          "float32; give the float model (edgekit quantizes it)")
    params = nonzero = 0
    for t in graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            a = numpy_helper.to_array(t, base_dir=str(path.parent))
            params += int(a.size)
            nonzero += int(np.count_nonzero(a))

    def shape(vi) -> tuple[int | None, ...]:
        return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in vi.type.tensor_type.shape.dim)

    return GivenModel("onnx", path, sha256_path(path), path.stat().st_size, ins[0].name, shape(ins[0])[1:],
                      shape(graph.output[0])[1:], params, nonzero)


def _one_in_one_out(path: Path, n_in: int, n_out: int) -> None:
    if n_in != 1 or n_out != 1:
        raise RecipeError(f"{path}: the model has {n_in} inputs and {n_out} outputs; edgekit takes models with one "
                          "input and one output (export the part that maps the data to its prediction)")


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(int(d) if int(d) > 0 else None for d in np.asarray(shape).ravel())


def check_fits(model: GivenModel, input_shape: tuple[int, ...], *, num_classes: int, task: str) -> None:
    """Check the model takes the data's samples and gives the task's output. Raises
    :class:`RecipeError` naming both shapes, and saying so when the model is channels-first where
    the data is channels-last."""
    want = tuple(input_shape)
    got = model.input_shape
    fits = len(got) == len(want) and all(g is None or g == w for g, w in zip(got, want))
    if not fits:
        hint = ""
        if len(got) == len(want) >= 2 and tuple(got[1:]) + (got[0],) == want:
            hint = (" (the model is channels-first, the data channels-last: export it channels-last, e.g. with "
                    "onnx2tf or litert-torch's to_channel_last_io, or store the data channels-first)")
        elif len(got) == len(want) >= 2 and (got[-1],) + tuple(got[:-1]) == want:
            hint = " (the model is channels-last, the data channels-first: store the data channels-last)"
        raise RecipeError(f"{model.path}: the model takes inputs of shape {_fmt(got)}, the data has samples of shape "
                          f"{_fmt(want)}{hint}")
    out = int(np.prod([d for d in model.output_shape if d is not None])) if model.output_shape else 1
    expected = {"classification": num_classes, "regression": 1, "anomaly": int(np.prod(want))}.get(task)
    if expected is not None and None not in model.output_shape and out != expected:
        what = {"classification": f"{num_classes} class scores", "regression": "one value",
                "anomaly": "a reconstruction of its input"}[task]
        raise RecipeError(f"{model.path}: the model gives {out} outputs per sample, the {task} task needs {what} "
                          f"({expected})")


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
