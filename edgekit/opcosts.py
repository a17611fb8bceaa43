"""The op-level cost model of a ``.tflite`` file, read from the flatbuffer alone (no TensorFlow).

For every operator its class, MACs (convolutions, depthwise convolutions, fully connected,
batch matmul, transposed convolutions, recurrent cells) and memory traffic (bytes read and
written, weights apart), see :func:`op_costs`; :func:`model_features` sums them into the
features the latency estimates (:mod:`edgekit.estimate`) are fitted on, and :func:`summary`
gives the totals per op class, the op kinds and the largest tensor (what a calibration set's
validity range is checked against). The model is read by :mod:`edgekit.tflite_file` (the
schema from ``tflite_micro``, imported lazily). No side effects.

Example::

    from edgekit.opcosts import op_costs, summary
    summary(op_costs("model_int8.tflite"))["macs"]
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

from .tflite_file import Operator, Tensor, read

__all__ = ["FEATURES", "OP_CLASSES", "OpCost", "io_quantization", "model_features", "op_costs", "summary"]

# op class of each TFLite builtin op (schema names); any other op is "other" (bytes only)
_CLASS_OF: dict[str, str] = {}
for _cls, _ops in {
    "conv": ("CONV_2D", "CONV_3D", "TRANSPOSE_CONV", "CONV_3D_TRANSPOSE"),
    "depthwise": ("DEPTHWISE_CONV_2D",),
    "fully_connected": ("FULLY_CONNECTED", "BATCH_MATMUL", "UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM",
                        "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN", "RNN", "SVDF"),
    "pool": ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D", "MEAN", "SUM", "REDUCE_MAX",
             "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL"),
    "elementwise": ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW",
                    "FLOOR_DIV", "FLOOR_MOD", "ADD_N", "RELU", "RELU6", "RELU_N1_TO_1",
                    "RELU_0_TO_1", "LEAKY_RELU", "PRELU", "HARD_SWISH", "LOGISTIC", "TANH", "ELU",
                    "GELU", "ABS", "NEG", "EXP", "LOG", "SQRT", "RSQRT", "SQUARE", "SIN", "COS",
                    "FLOOR", "CEIL", "ROUND", "SOFTMAX", "LOG_SOFTMAX", "L2_NORMALIZATION",
                    "LOCAL_RESPONSE_NORMALIZATION", "EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL",
                    "GREATER", "GREATER_EQUAL", "LOGICAL_AND", "LOGICAL_OR", "LOGICAL_NOT",
                    "SELECT", "SELECT_V2", "SIGN"),
    "data_movement": ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE", "DEQUANTIZE", "CAST",
                      "PAD", "PADV2", "MIRROR_PAD", "CONCATENATION", "TRANSPOSE", "STRIDED_SLICE",
                      "SLICE", "GATHER", "GATHER_ND", "SPLIT", "SPLIT_V", "PACK", "UNPACK",
                      "TILE", "BROADCAST_TO", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
                      "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "BATCH_TO_SPACE_ND",
                      "SPACE_TO_BATCH_ND", "REVERSE_V2", "FILL", "ZEROS_LIKE", "ONES_LIKE",
                      "SHAPE", "ARG_MAX", "ARG_MIN", "EMBEDDING_LOOKUP", "CUMSUM"),
}.items():
    for _op in _ops:
        _CLASS_OF[_op] = _cls

OP_CLASSES = ("conv", "depthwise", "fully_connected", "pool", "elementwise", "data_movement", "other")
_GEMM_CLASSES = ("conv", "fully_connected")
_MAC_CLASSES = ("conv", "depthwise", "fully_connected")
_INT_ACTIVATIONS = ("INT8", "UINT8")

# What a calibration set is fitted on, in this order (see model_features):
#   macs_gemm          MACs of convolutions and fully connected layers (GEMM-like kernels)
#   bytes_activations  bytes of the non-constant tensors that the computing ops read and write
#                      (depthwise, pooling, elementwise, and the GEMM ops' im2col/outputs); the
#                      data-movement ops (reshape, quantize, pad, concat...) are left out: the
#                      calibration models have almost none, so no fit can price them
FEATURES = ("macs_gemm", "bytes_activations")
_UNPRICED = ("data_movement",)

_TYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "BFLOAT16": 2, "INT32": 4, "UINT32": 4, "UINT8": 1,
               "INT8": 1, "INT16": 2, "UINT16": 2, "INT64": 8, "UINT64": 8, "FLOAT64": 8,
               "BOOL": 1, "COMPLEX64": 8, "COMPLEX128": 16, "INT4": 0.5, "STRING": 0,
               "RESOURCE": 0, "VARIANT": 0}


@dataclasses.dataclass(frozen=True)
class OpCost:
    """The work of one operator, from the tensor shapes stored in the flatbuffer.

    ``macs``: multiply-accumulates (0 for ops without a weight reduction); ``bytes_read``: every
    input tensor, constants (weights, biases) included; ``bytes_written``: every output tensor;
    ``weight_bytes``: the constant inputs alone; ``dtype``: the type of the first input (the
    activations). Shapes include the batch dimension.
    """

    index: int
    op: str
    op_class: str
    macs: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int
    dtype: str
    output_shape: tuple[int, ...]
    max_tensor_bytes: int = 0

    @property
    def activation_bytes(self) -> int:
        """Bytes of the non-constant tensors the op reads and writes."""
        return self.bytes_read - self.weight_bytes + self.bytes_written

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "op_class": self.op_class, "macs": self.macs,
                "bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
                "weight_bytes": self.weight_bytes, "dtype": self.dtype,
                "output_shape": list(self.output_shape)}


# --------------------------------------------------------------------------------------------
# op-level cost model


def op_costs(model: bytes | bytearray | memoryview | os.PathLike | str) -> list[OpCost]:
    """MACs and bytes of every operator of a TFLite model, in execution order (subgraph 0).

    ``model`` is the flatbuffer or the path of a ``.tflite`` file. MACs per op:

    * ``CONV_2D``: output elements x kernel height x kernel width x filter input channels
      (a grouped convolution counts its group's channels only); ``CONV_3D`` likewise;
    * ``DEPTHWISE_CONV_2D``: output elements x kernel height x kernel width;
    * ``TRANSPOSE_CONV``: input elements x kernel height x kernel width x output channels;
    * ``FULLY_CONNECTED``: output elements x input depth (the weights' second dimension);
      ``BATCH_MATMUL``: output elements x the contracted dimension;
    * LSTM/RNN/SVDF: the elements of their 2-D weight matrices x time steps (approximate).

    Every op also gets the bytes of its input and output tensors, the memory traffic that the
    memory-bound ops (depthwise, pooling, elementwise, reshape, quantize) cost. Raises
    :class:`ConversionError` for a missing file or bytes that are not a TFLite flatbuffer
    (:func:`edgekit.tflite_file.read`). No side effects.
    """
    sg = read(model).subgraphs[0]
    costs = []
    for o in sg.operators:
        name = o.op
        ins = [sg.tensor(i) for i in o.inputs]
        outs = [t for t in map(sg.tensor, o.outputs) if t is not None]
        present = [t for t in ins if t is not None]
        costs.append(OpCost(
            index=o.index, op=name, op_class=_CLASS_OF.get(name, "other"),
            macs=int(_macs(o, ins, outs)),
            bytes_read=sum(_nbytes(t) for t in present),
            bytes_written=sum(_nbytes(t) for t in outs),
            weight_bytes=sum(_nbytes(t) for t in present if t.const),
            dtype=_activation_dtype(name, present),
            output_shape=outs[0].shape if outs else (),
            max_tensor_bytes=max((_nbytes(t) for t in [*present, *outs] if not t.const), default=0)))
    return costs


def _numel(shape: Sequence[int]) -> int:
    return math.prod(max(int(d), 1) for d in shape)


def _nbytes(t: Tensor) -> int:
    return math.ceil(_numel(t.shape) * _TYPE_BYTES.get(t.dtype, 4))


def _activation_dtype(name: str, present: list[Tensor]) -> str:
    if name == "TRANSPOSE_CONV" and len(present) > 2:   # inputs: output_shape, weights, input
        return present[2].dtype
    variable = [t for t in present if not t.const]
    first = (variable or present or [None])[0]
    return first.dtype if first is not None else "NONE"


def _macs(o: Operator, ins: list[Tensor | None], outs: list[Tensor]) -> int:
    name = o.op
    if not outs:
        return 0
    n_out = _numel(outs[0].shape)
    w = ins[1].shape if len(ins) > 1 and ins[1] is not None else ()
    if name == "CONV_2D" and len(w) == 4:             # filter [out_c, kh, kw, in_c / groups]
        return n_out * w[1] * w[2] * w[3]
    if name == "CONV_3D" and len(w) == 5:             # filter [kd, kh, kw, in_c, out_c]
        return n_out * w[0] * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D" and len(w) == 4:   # filter [1, kh, kw, out_c]
        return n_out * w[1] * w[2]
    if name == "TRANSPOSE_CONV":                      # inputs: output_shape, weights [oc, kh, kw, ic], input
        if len(ins) > 2 and ins[2] is not None and len(w) == 4:
            return _numel(ins[2].shape) * w[0] * w[1] * w[2]
        return 0
    if name == "FULLY_CONNECTED" and len(w) == 2:     # weights [units, depth]
        return n_out * w[1]
    if name == "BATCH_MATMUL":
        if not ins or ins[0] is None or len(ins[0].shape) < 2:
            return 0
        lhs = ins[0].shape
        return n_out * (lhs[-2] if o.options.get("adj_x") else lhs[-1])
    if _CLASS_OF.get(name) == "fully_connected":      # recurrent cells: each weight matrix once per step
        weights = sum(_numel(t.shape) for t in ins[1:] if t is not None and t.const and len(t.shape) == 2)
        steps = ins[0].shape[1] if ins and ins[0] is not None and len(ins[0].shape) == 3 else 1
        return weights * max(int(steps), 1)
    return 0


def model_features(costs: Sequence[OpCost]) -> dict[str, int]:
    """The fit's features (:data:`FEATURES`) of a model from its :func:`op_costs`."""
    return {
        "macs_gemm": sum(c.macs for c in costs if c.op_class in _GEMM_CLASSES),
        "bytes_activations": sum(c.activation_bytes for c in costs if c.op_class not in _UNPRICED),
    }


def summary(costs: Sequence[OpCost]) -> dict[str, Any]:
    """Totals of a model's :func:`op_costs`: ops, MACs, bytes, per op class, the fit's features,
    the op kinds (``op_kinds``: sorted op names) and the largest tensor an op reads or writes
    (``max_tensor_bytes``)."""
    by_class: dict[str, dict[str, int]] = {}
    for c in costs:
        row = by_class.setdefault(c.op_class, {"ops": 0, "macs": 0, "bytes_read": 0, "bytes_written": 0})
        row["ops"] += 1
        row["macs"] += c.macs
        row["bytes_read"] += c.bytes_read
        row["bytes_written"] += c.bytes_written
    return {
        "ops": len(costs),
        "macs": sum(c.macs for c in costs),
        "bytes_read": sum(c.bytes_read for c in costs),
        "bytes_written": sum(c.bytes_written for c in costs),
        "weight_bytes": sum(c.weight_bytes for c in costs),
        "by_class": {k: by_class[k] for k in OP_CLASSES if k in by_class},
        "features": model_features(costs),
        "op_kinds": sorted({c.op for c in costs}),
        "max_tensor_bytes": max((c.max_tensor_bytes for c in costs), default=0),
    }


def io_quantization(model: bytes | bytearray | memoryview | os.PathLike | str) -> dict[str, Any]:
    """Type, shape, scale and zero point of the first input and output tensor (subgraph 0):
    ``{"input": {"dtype", "shape", "scale", "zero_point"}, "output": {...}}``; scale and zero
    point are None for a tensor without (per-tensor) quantization. Raises
    :class:`ConversionError` for bytes that are not a TFLite flatbuffer."""
    sg = read(model).subgraphs[0]

    def one(index: int) -> dict[str, Any]:
        t = sg.tensors[index]
        scale, zero = t.per_tensor or (None, None)
        return {"dtype": t.dtype.lower(), "shape": list(t.shape), "scale": scale, "zero_point": zero}

    return {"input": one(sg.inputs[0]), "output": one(sg.outputs[0])}
