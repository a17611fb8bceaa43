"""The one reader of ``.tflite`` flatbuffers: ops, tensors and I/O of a model, without running it
(and its edits: :func:`with_signature`, a signature def written into a model that has none;
:func:`with_buffers`, constant tensors given other values of the same size; :func:`tensor_data`
reads them; :func:`strip_names`, the strings TFLite Micro never reads taken out of a model and
:func:`with_names` putting them back; :func:`read_named`, a shipped file with its names from the
sidecar :func:`names_path` beside it).

:func:`read` parses a model once (bytes or a path) into frozen objects: the operators of every
subgraph with their builtin names (custom ops as ``CUSTOM:<custom_code>``, so TensorFlow select
ops appear as ``CUSTOM:Flex<TfOp>``), the tensors with shape, type, whether they hold constant
data and their quantization, and each subgraph's inputs and outputs. :mod:`edgekit.mcu` (the ops
TFLite Micro must have), :mod:`edgekit.opcosts` (MACs and bytes per op) and :mod:`edgekit.parity`
(the int8 ranges at the model's edges) read models through it.

Example::

    from edgekit.tflite_file import read

    m = read("model_int8.tflite")
    m.ops                         # ['CONV_2D', 'FULLY_CONNECTED', 'RESHAPE', ...]
    sg = m.subgraphs[0]
    sg.tensors[sg.inputs[0]].dtype, sg.tensors[sg.inputs[0]].scale   # ('INT8', (0.0039...,))

The schema comes from ``tflite_micro`` (imported on first use), never TensorFlow. Bytes that
are not a TFLite flatbuffer (wrong file identifier, truncated or corrupt tables, an operator
naming an opcode that does not exist, no subgraph) raise :class:`ConversionError`, as does a
path that is no file. No side effects.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ConversionError

__all__ = ["NAMES_SCHEMA", "Operator", "Subgraph", "TFLiteModel", "Tensor", "names_path", "read", "read_named",
           "strip_names", "tensor_data", "with_buffers", "with_names", "with_signature"]

NAMES_SCHEMA = "edgekit.tensor_names/1"

# Builtin options read into Operator.options, per op: (options table, {key: accessor}). Only what
# a reader here needs; add a row for another op's options.
_OPTIONS = {
    "BATCH_MATMUL": ("BatchMatMulOptions", {"adj_x": "AdjX", "adj_y": "AdjY"}),
}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph. ``dtype``: the schema's ``TensorType`` name (``"INT8"``,
    ``"FLOAT32"``; ``"UNKNOWN"`` for a code this schema lacks); ``const``: it has data in the
    model's buffers (weights, biases, shape operands); ``scale``/``zero_point``: its
    quantization, one entry per tensor or per channel (empty: not quantized)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    const: bool
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0  # the channel axis of a per-channel quantized tensor

    @property
    def per_tensor(self) -> tuple[float, int] | None:
        """``(scale, zero_point)`` of a per-tensor quantized tensor (zero point 0 when the model
        stores none), else None."""
        if len(self.scale) != 1:
            return None
        return self.scale[0], (self.zero_point[0] if self.zero_point else 0)


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator: its op name, the tensor indices it reads (``-1``: an optional input left
    out) and writes, and the builtin options of :data:`_OPTIONS` (``{}`` for other ops)."""

    index: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Subgraph:
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]     # in execution order
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, index: int) -> Tensor | None:
        """The tensor at ``index``, None for ``-1`` or an index out of range."""
        return self.tensors[index] if 0 <= index < len(self.tensors) else None


@dataclasses.dataclass(frozen=True)
class TFLiteModel:
    """A parsed ``.tflite`` file; ``what`` names it in messages (its path, or ``model (N bytes)``)."""

    what: str
    size_bytes: int
    subgraphs: tuple[Subgraph, ...]

    @property
    def ops(self) -> list[str]:
        """The ops some operator of some subgraph uses: sorted, unique names."""
        return sorted({o.op for sg in self.subgraphs for o in sg.operators})


def read(model: bytes | bytearray | memoryview | os.PathLike | str) -> TFLiteModel:
    """Parse a TFLite model: its flatbuffer bytes, or the path (``str`` or path-like) of a
    ``.tflite`` file. Raises :class:`ConversionError` naming the file (or the byte count) when
    it is no file or not a valid TFLite flatbuffer."""
    data, what = _bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ConversionError(f"{what} is not a valid TFLite flatbuffer "
                              f"(expected file identifier 'TFL3' at byte 4, found {data[4:8]!r})")
    fb, op_names, type_names = _schema()
    try:
        root = fb.Model.GetRootAsModel(data, 0)
        codes = [_op_name(root.OperatorCodes(i), fb, op_names) for i in range(root.OperatorCodesLength())]
        if root.SubgraphsLength() == 0:
            raise ValueError("the model has no subgraph")
        subgraphs = tuple(_subgraph(root, s, codes, fb, type_names) for s in range(root.SubgraphsLength()))
    except Exception as e:  # flatbuffers raises struct.error / IndexError / UnicodeError on junk
        raise ConversionError(f"{what} is not a valid TFLite flatbuffer ({type(e).__name__}: {e})") from e
    return TFLiteModel(what, len(data), subgraphs)


def with_signature(model: bytes, *, key: str, input_name: str, output_name: str,
                   rename: Callable[[str], str] | None = None) -> bytes:
    """``model`` (flatbuffer bytes of one subgraph with one input and one output and no signature
    def) with the signature def ``key`` that maps ``input_name`` and ``output_name`` to them, and
    every tensor name of the subgraph passed through ``rename``. Raises ValueError for any other
    model. The flatbuffer is rebuilt with the schema's object API, as TensorFlow's converter does
    when it changes a model's I/O types."""
    fb = _schema()[0]
    m = fb.ModelT.InitFromPackedBuf(bytearray(model), 0)
    if len(m.subgraphs or []) != 1 or m.signatureDefs:
        raise ValueError("not a one-subgraph model without signatures")
    sg = m.subgraphs[0]
    if len(sg.inputs) != 1 or len(sg.outputs) != 1:
        raise ValueError("not one input and one output")
    if rename is not None:
        for tensor in sg.tensors:
            name = _text(tensor.name)
            if rename(name) != name:
                tensor.name = rename(name)
    sig = fb.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = key, 0
    sig.inputs, sig.outputs = [fb.TensorMapT()], [fb.TensorMapT()]
    sig.inputs[0].name, sig.inputs[0].tensorIndex = input_name, sg.inputs[0]
    sig.outputs[0].name, sig.outputs[0].tensorIndex = output_name, sg.outputs[0]
    m.signatureDefs = [sig]
    return _pack(m, len(model))


def tensor_data(model: bytes, indices) -> dict[int, bytes]:
    """The buffer bytes of the tensors ``indices`` of subgraph 0 (constants; a tensor without data
    is left out)."""
    fb = _schema()[0]
    root = fb.Model.GetRootAsModel(model, 0)
    sg = root.Subgraphs(0)
    out = {}
    for i in indices:
        buf = root.Buffers(sg.Tensors(int(i)).Buffer())
        if buf is not None and buf.DataLength() > 0:
            out[int(i)] = buf.DataAsNumpy().tobytes()
    return out


def with_buffers(model: bytes, data: dict[int, np.ndarray]) -> bytes:
    """``model`` with the constant tensors ``data`` keys (indices in subgraph 0) holding the
    given arrays' bytes instead (each the same size as before; ValueError otherwise), rebuilt
    with the object API like :func:`with_signature`."""
    fb = _schema()[0]
    m = fb.ModelT.InitFromPackedBuf(bytearray(model), 0)
    sg = m.subgraphs[0]
    for index, array in data.items():
        buf = m.buffers[sg.tensors[int(index)].buffer]
        raw = np.ascontiguousarray(array).tobytes()
        if buf.data is None or len(buf.data) != len(raw):
            raise ValueError(f"tensor {index}: {len(raw)} bytes given for a buffer of "
                             f"{0 if buf.data is None else len(buf.data)}")
        buf.data = np.frombuffer(raw, np.uint8)
    return _pack(m, len(model))


def strip_names(model: bytes) -> tuple[bytes, dict[str, Any]]:
    """``model`` without the strings no interpreter needs to run it: every tensor's and subgraph's
    name and the model's description (TensorFlow's ``strip_strings`` tool drops these too; the
    metadata, its buffers and any signature def stay here). Returns the new bytes and what was taken
    out, ``{"schema", "sha256" (of the new bytes), "description", "subgraphs": [{"name",
    "tensors": [names by index]}]}``, which :func:`with_names` puts back. A converted model's
    tensor names list every op fused into the tensor: a quarter of a few-KiB model's bytes."""
    fb = _schema()[0]
    m = fb.ModelT.InitFromPackedBuf(bytearray(model), 0)
    taken = {"schema": NAMES_SCHEMA, "description": _text(m.description),
             "subgraphs": [{"name": _text(sg.name), "tensors": [_text(t.name) for t in sg.tensors or []]}
                           for sg in m.subgraphs or []]}
    m.description = None
    for sg in m.subgraphs or []:
        sg.name = None
        for t in sg.tensors or []:
            t.name = None
    out = _pack(m, len(model))
    taken["sha256"] = hashlib.sha256(out).hexdigest()
    return out, taken


def with_names(model: bytes, names: dict[str, Any]) -> bytes:
    """``model`` with the names :func:`strip_names` took out of it put back. Raises ValueError when
    ``names`` does not fit the model (another number of subgraphs or tensors)."""
    fb = _schema()[0]
    m = fb.ModelT.InitFromPackedBuf(bytearray(model), 0)
    subgraphs = names.get("subgraphs") or []
    if len(subgraphs) != len(m.subgraphs or []) or any(
            len(n.get("tensors") or []) != len(sg.tensors or []) for n, sg in zip(subgraphs, m.subgraphs or [])):
        raise ValueError("the names are of another model (the number of subgraphs or tensors differs)")
    m.description = names.get("description") or None
    for n, sg in zip(subgraphs, m.subgraphs):
        sg.name = n.get("name") or None
        for t, name in zip(sg.tensors or [], n["tensors"]):
            t.name = name or None
    return _pack(m, len(model) + sum(len(x or "") for n in subgraphs for x in n["tensors"]))


def names_path(model_path: os.PathLike | str) -> Path:
    """Where the names of a stripped file are kept: ``model_int8.tflite`` ->
    ``model_int8.tensor_names.json`` beside it."""
    p = Path(model_path)
    return p.with_name(p.stem + ".tensor_names.json")


def read_named(model_path: os.PathLike | str) -> bytes:
    """The bytes of the ``.tflite`` file ``model_path``, its names put back from :func:`names_path`
    when that sidecar exists and was written for exactly these bytes (its ``sha256``); otherwise the
    file as it is."""
    data, _ = _bytes(model_path)
    side = names_path(model_path)
    if not side.is_file():
        return data
    try:
        names = json.loads(side.read_text())
    except (OSError, ValueError):
        return data
    if not isinstance(names, dict) or names.get("sha256") != hashlib.sha256(data).hexdigest():
        return data
    return with_names(data, names)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")


def _pack(m, size: int) -> bytes:
    """The object-API model ``m`` as flatbuffer bytes (``size``: about how many)."""
    import flatbuffers

    builder = flatbuffers.Builder(size + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _bytes(model) -> tuple[bytes, str]:
    if isinstance(model, (os.PathLike, str)):
        path = Path(model)
        if not path.is_file():
            raise ConversionError(f"{path}: model file not found")
        return path.read_bytes(), str(path)
    data = bytes(model)
    return data, f"model ({len(data)} bytes)"


@functools.cache
def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    def names(enum_cls) -> dict[int, str]:
        return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}

    return fb, names(fb.BuiltinOperator), names(fb.TensorType)


def _op_name(oc, fb, op_names: dict[int, str]) -> str:
    code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # the schema's rule for both fields
    if code == fb.BuiltinOperator.CUSTOM:
        custom = oc.CustomCode()
        return "CUSTOM:" + (custom.decode("utf-8") if custom else "<unnamed>")
    return op_names.get(code, f"BUILTIN_{code}")


def _ints(length: int, as_numpy) -> tuple[int, ...]:
    return tuple(int(i) for i in as_numpy()) if length else ()


def _subgraph(root, s: int, codes: list[str], fb, type_names: dict[int, str]) -> Subgraph:
    sg = root.Subgraphs(s)
    tensors = []
    for t in range(sg.TensorsLength()):
        ten = sg.Tensors(t)
        b = ten.Buffer()
        buf = root.Buffers(b) if 0 < b < root.BuffersLength() else None
        q = ten.Quantization()
        scale = tuple(float(v) for v in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else ()
        zero = tuple(int(v) for v in q.ZeroPointAsNumpy()) if q is not None and q.ZeroPointLength() else ()
        tensors.append(Tensor(index=t, name=(ten.Name() or b"").decode("utf-8", "replace"),
                              shape=_ints(ten.ShapeLength(), ten.ShapeAsNumpy),
                              dtype=type_names.get(ten.Type(), "UNKNOWN"),
                              const=bool(buf is not None and (buf.DataLength() > 0 or buf.Size() > 0)),
                              scale=scale, zero_point=zero,
                              quantized_dimension=int(q.QuantizedDimension()) if q is not None else 0))
    operators = []
    for j in range(sg.OperatorsLength()):
        o = sg.Operators(j)
        idx = o.OpcodeIndex()
        if not 0 <= idx < len(codes):
            raise ValueError(f"operator {j} of subgraph {s} uses opcode index {idx}, "
                             f"but the model has {len(codes)} operator codes")
        operators.append(Operator(index=j, op=codes[idx], inputs=_ints(o.InputsLength(), o.InputsAsNumpy),
                                  outputs=_ints(o.OutputsLength(), o.OutputsAsNumpy),
                                  options=_options(o, codes[idx], fb)))
    return Subgraph(tuple(tensors), tuple(operators), _ints(sg.InputsLength(), sg.InputsAsNumpy),
                    _ints(sg.OutputsLength(), sg.OutputsAsNumpy))


def _options(o, op: str, fb) -> dict[str, Any]:
    spec = _OPTIONS.get(op)
    table = o.BuiltinOptions() if spec is not None else None
    if table is None or o.BuiltinOptionsType() != getattr(fb.BuiltinOptions, spec[0]):
        return {}
    opts = getattr(fb, spec[0])()
    opts.Init(table.Bytes, table.Pos)
    return {key: getattr(opts, accessor)() for key, accessor in spec[1].items()}
