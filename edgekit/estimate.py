"""Latency estimates for boards we cannot reach, calibrated on published measurements.

A latency measured on the device is always better than an estimate; this module is for the
boards edgekit cannot run on (a Cortex-M4 on someone's desk, a Pi in the field). It has two
halves:

* an **op-level cost model** read from the ``.tflite`` flatbuffer alone (no TensorFlow): for
  every operator its MACs (convolutions, depthwise convolutions, fully connected, batch matmul,
  transposed convolutions) and its memory traffic (bytes read and written), see
  :func:`op_costs`;
* **per-board coefficients**, fitted by non-negative least squares on *published measured*
  latencies of known models on real boards (MLPerf Tiny results, the XNNPACK Raspberry Pi
  table): cycles per MAC of the GEMM-like ops (convolutions, fully connected) and cycles per
  activation byte that any op reads or writes (what depthwise convolutions, pooling,
  elementwise ops, reshapes and (de)quantization cost, plus the im2col/requantization work of
  the GEMM ops). Every measured number and its source live in
  ``edgekit/data/latency_calibration.yaml``; the features of the calibration models are
  regenerated from the zoo by ``python tools/bench_estimate.py --update-features``.

Why two coefficients and not one per op class: a calibration set holds two to four measured
models, and a per-class fit on so few points memorizes them (its leave-one-out error is worse).
:func:`op_costs` still reports every op's class, MACs and bytes, and ``per_op`` in the estimate
splits the total by the fitted coefficients.

A target profile names the calibration set that was measured on its board (``calibration:`` in
``targets/*.yaml``) beside its ``core``, ``clock_mhz`` and ``kernels``. A profile without one gets
``latency_estimate_ms: None`` and a reason, never a guess. Every estimate carries the
leave-one-out error of its fit (each calibration model estimated by a fit that did not see it):
the error to expect on a new model of the same kind.

Example::

    from edgekit import estimate
    from edgekit.recipe import load_target

    est = estimate.estimate_model("model_int8.tflite", load_target("cortex-m4"))
    est["latency_estimate_ms"], est["estimate_basis"]["fit"]["loo_median_abs_pct_error"]

Nothing here imports TensorFlow: the flatbuffer schema comes from ``tflite_micro`` (imported
lazily), the fit needs numpy only.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConversionError, RecipeError

__all__ = [
    "CALIBRATION_PATH",
    "FEATURES",
    "OP_CLASSES",
    "SCHEMA",
    "Calibration",
    "CalibrationSet",
    "Fit",
    "OpCost",
    "estimate_model",
    "fit_set",
    "load_calibration",
    "model_features",
    "op_costs",
]

SCHEMA = "edgekit.estimate/1"
CALIBRATION_PATH = Path(__file__).parent / "data" / "latency_calibration.yaml"

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
_FEATURE_UNITS = {"macs_gemm": "cycles per MAC", "bytes_activations": "cycles per byte"}

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


def _read_model(model) -> tuple[bytes, str]:
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
    :class:`ConversionError` for a missing file or bytes that are not a TFLite flatbuffer.
    No side effects.
    """
    data, what = _read_model(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ConversionError(f"{what} is not a valid TFLite flatbuffer "
                              f"(expected file identifier 'TFL3' at byte 4, found {data[4:8]!r})")
    fb, op_names, type_names = _schema()
    try:
        root = fb.Model.GetRootAsModel(data, 0)
        codes = []
        for i in range(root.OperatorCodesLength()):
            oc = root.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == fb.BuiltinOperator.CUSTOM:
                custom = oc.CustomCode()
                codes.append("CUSTOM:" + (custom.decode("utf-8") if custom else "<unnamed>"))
            else:
                codes.append(op_names.get(code, f"BUILTIN_{code}"))
        if root.SubgraphsLength() == 0:
            raise ValueError("the model has no subgraph")
        sg = root.Subgraphs(0)
        tensors = []
        for t in range(sg.TensorsLength()):
            ten = sg.Tensors(t)
            shape = tuple(int(d) for d in ten.ShapeAsNumpy()) if ten.ShapeLength() else ()
            b = ten.Buffer()
            buf = root.Buffers(b) if 0 < b < root.BuffersLength() else None
            const = bool(buf is not None and (buf.DataLength() > 0 or buf.Size() > 0))
            tensors.append((shape, type_names.get(ten.Type(), "UNKNOWN"), const))
        costs = []
        for j in range(sg.OperatorsLength()):
            o = sg.Operators(j)
            name = codes[o.OpcodeIndex()]
            ins = [tensors[i] if 0 <= i < len(tensors) else None
                   for i in (o.InputsAsNumpy() if o.InputsLength() else [])]
            outs = [tensors[i] for i in (o.OutputsAsNumpy() if o.OutputsLength() else [])
                    if 0 <= i < len(tensors)]
            present = [t for t in ins if t is not None]
            costs.append(OpCost(
                index=j, op=name, op_class=_CLASS_OF.get(name, "other"),
                macs=int(_macs(name, ins, outs, o, fb)),
                bytes_read=sum(_nbytes(t) for t in present),
                bytes_written=sum(_nbytes(t) for t in outs),
                weight_bytes=sum(_nbytes(t) for t in present if t[2]),
                dtype=_activation_dtype(name, present),
                output_shape=outs[0][0] if outs else ()))
    except ConversionError:
        raise
    except Exception as e:  # flatbuffers raises struct.error / IndexError / UnicodeError on junk
        raise ConversionError(f"{what} is not a valid TFLite flatbuffer "
                              f"({type(e).__name__}: {e})") from e
    return costs


def _numel(shape: Sequence[int]) -> int:
    return math.prod(max(int(d), 1) for d in shape)


def _nbytes(t) -> int:
    shape, dtype, _ = t
    return math.ceil(_numel(shape) * _TYPE_BYTES.get(dtype, 4))


def _activation_dtype(name: str, present: list) -> str:
    if name == "TRANSPOSE_CONV" and len(present) > 2:   # inputs: output_shape, weights, input
        return present[2][1]
    variable = [t for t in present if not t[2]]
    return (variable or present or [((), "NONE", False)])[0][1]


def _macs(name: str, ins: list, outs: list, o, fb) -> int:
    if not outs:
        return 0
    n_out = _numel(outs[0][0])
    w = ins[1][0] if len(ins) > 1 and ins[1] is not None else ()
    if name == "CONV_2D" and len(w) == 4:             # filter [out_c, kh, kw, in_c / groups]
        return n_out * w[1] * w[2] * w[3]
    if name == "CONV_3D" and len(w) == 5:             # filter [kd, kh, kw, in_c, out_c]
        return n_out * w[0] * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D" and len(w) == 4:   # filter [1, kh, kw, out_c]
        return n_out * w[1] * w[2]
    if name == "TRANSPOSE_CONV":                      # inputs: output_shape, weights [oc, kh, kw, ic], input
        if len(ins) > 2 and ins[2] is not None and len(w) == 4:
            return _numel(ins[2][0]) * w[0] * w[1] * w[2]
        return 0
    if name == "FULLY_CONNECTED" and len(w) == 2:     # weights [units, depth]
        return n_out * w[1]
    if name == "BATCH_MATMUL":
        if not ins or ins[0] is None or len(ins[0][0]) < 2:
            return 0
        lhs = ins[0][0]
        adj_x = False
        opts = o.BuiltinOptions()
        if opts is not None and o.BuiltinOptionsType() == fb.BuiltinOptions.BatchMatMulOptions:
            bo = fb.BatchMatMulOptions()
            bo.Init(opts.Bytes, opts.Pos)
            adj_x = bool(bo.AdjX())
        return n_out * (lhs[-2] if adj_x else lhs[-1])
    if _CLASS_OF.get(name) == "fully_connected":      # recurrent cells: each weight matrix once per step
        weights = sum(_numel(t[0]) for t in ins[1:] if t is not None and t[2] and len(t[0]) == 2)
        steps = ins[0][0][1] if ins and ins[0] is not None and len(ins[0][0]) == 3 else 1
        return weights * max(int(steps), 1)
    return 0


def model_features(costs: Sequence[OpCost]) -> dict[str, int]:
    """The fit's features (:data:`FEATURES`) of a model from its :func:`op_costs`."""
    return {
        "macs_gemm": sum(c.macs for c in costs if c.op_class in _GEMM_CLASSES),
        "bytes_activations": sum(c.activation_bytes for c in costs if c.op_class not in _UNPRICED),
    }


def _summary(costs: Sequence[OpCost]) -> dict[str, Any]:
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
    }


# --------------------------------------------------------------------------------------------
# calibration data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where a number was published: a URL, or a repository + path (+ commit)."""

    url: str | None = None
    repo: str | None = None
    path: str | None = None
    commit: str | None = None
    quote: str | None = Field(None, description="the line of the source the number is read from")

    @model_validator(mode="after")
    def _somewhere(self):
        if not (self.url or (self.repo and self.path)):
            raise ValueError("a source needs a url, or a repo and a path")
        return self

    def cite(self) -> str:
        if self.repo:
            at = f"@{self.commit[:12]}" if self.commit else ""
            return f"github:{self.repo}{at}/{self.path}"
        return str(self.url)


class Measurement(_Strict):
    """One published latency of one calibration model on the set's board."""

    model: str
    latency_ms: Annotated[float, Field(gt=0)] | None = None
    throughput_ips: Annotated[float, Field(gt=0)] | None = Field(
        None, description="inferences per second as published; latency = 1000 / throughput")
    source: Source
    note: str | None = None

    @model_validator(mode="after")
    def _one_number(self):
        if (self.latency_ms is None) == (self.throughput_ips is None):
            raise ValueError("give exactly one of latency_ms or throughput_ips")
        return self

    @property
    def published_ms(self) -> float:
        return self.latency_ms if self.latency_ms is not None else 1000.0 / float(self.throughput_ips)


class CalibrationSet(_Strict):
    """Measurements of known models on one board with one software stack."""

    board: str
    core: str
    clock_mhz: Annotated[float, Field(gt=0)]
    clock_note: str | None = None
    kernels: str
    runtime: str
    software: str
    threads: Annotated[int, Field(ge=1)] | None = Field(1, description="null: not stated by the source")
    system_source: Source | None = None
    note: str | None = None
    measurements: Annotated[list[Measurement], Field(min_length=1)]


class CalibrationModel(_Strict):
    """A model measured in some calibration set: how it is built and its fit features."""

    description: str
    build: dict[str, Any] = Field(description="how tools/bench_estimate.py rebuilds it")
    features: dict[str, int] | None = Field(None, description="generated: model_features of the built model")
    macs: int | None = None
    built_with: str | None = None


class Calibration(_Strict):
    """The whole calibration file."""

    schema_: str = Field(alias="schema")
    features: list[str]
    sets: dict[str, CalibrationSet]
    models: dict[str, CalibrationModel]
    path: str = ""

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        if tuple(self.features) != FEATURES:
            problems.append(f"features {self.features} differ from this edgekit's {list(FEATURES)}: "
                            "run python tools/bench_estimate.py --update-features")
        for name, s in self.sets.items():
            for i, m in enumerate(s.measurements):
                if m.model not in self.models:
                    problems.append(f"sets.{name}.measurements.{i}.model: {m.model!r} is not in models")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> Calibration:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{p}: expected a mapping at the top level")
    try:
        return Calibration.model_validate({**raw, "path": str(p)})
    except ValidationError as exc:
        lines = [f"{p}: {'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise RecipeError("\n".join(lines)) from None


def load_calibration(path: os.PathLike | str | None = None) -> Calibration:
    """Load and validate the calibration file (default: the one shipped in the package).

    Raises :class:`RecipeError` naming the file and key for a malformed file. Cached per file
    modification time.
    """
    p = Path(path) if path is not None else CALIBRATION_PATH
    if not p.is_file():
        raise RecipeError(f"{p}: calibration file not found")
    return _load_cached(str(p.resolve()), p.stat().st_mtime_ns)


# --------------------------------------------------------------------------------------------
# fitting


@dataclasses.dataclass(frozen=True)
class Fit:
    """Coefficients of one calibration set and their leave-one-out check.

    ``coefficients``: cycles per unit of each feature (:data:`FEATURES`); ``loo``: for every
    measured model, its published latency and the estimate of a fit that did not see it.
    """

    set_name: str
    coefficients: dict[str, float]
    n_points: int
    loo: list[dict[str, Any]]
    residuals: list[dict[str, Any]]

    @property
    def loo_abs_pct_errors(self) -> list[float]:
        return [abs(r["pct_error"]) for r in self.loo if r["pct_error"] is not None]

    @property
    def loo_median_abs_pct_error(self) -> float | None:
        errs = sorted(self.loo_abs_pct_errors)
        if not errs:
            return None
        mid = len(errs) // 2
        return round(errs[mid] if len(errs) % 2 else (errs[mid - 1] + errs[mid]) / 2, 1)

    @property
    def loo_max_abs_pct_error(self) -> float | None:
        errs = self.loo_abs_pct_errors
        return round(max(errs), 1) if errs else None

    def cycles(self, features: dict[str, float]) -> float:
        return sum(self.coefficients[f] * float(features[f]) for f in FEATURES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_points": self.n_points,
            "features": list(FEATURES),
            "coefficients": {f: {"value": _sig(self.coefficients[f]), "unit": _FEATURE_UNITS[f]}
                             for f in FEATURES},
            "loo_median_abs_pct_error": self.loo_median_abs_pct_error,
            "loo_max_abs_pct_error": self.loo_max_abs_pct_error,
            "loo": self.loo,
            "in_sample": self.residuals,
        }


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if x else 0.0


def _nnls(rows: list[list[float]], targets: list[float]) -> list[float]:
    """Non-negative least squares, relative: minimize sum(((x . c) - y) / y)^2 over c >= 0.

    Exact by enumerating active sets (there are only len(FEATURES) features); ties (an
    under-determined fit) go to the smallest set of features, earliest in FEATURES order.
    """
    import numpy as np

    X = np.asarray(rows, dtype=float)
    y = np.asarray(targets, dtype=float)
    A = X / y[:, None]
    scale = np.where(A.max(axis=0) > 0, A.max(axis=0), 1.0)
    A = A / scale
    b = np.ones(len(y))
    best, best_loss = np.zeros(X.shape[1]), float(len(y))  # all-zero coefficients: every error -100 %
    n = X.shape[1]
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            sol, *_ = np.linalg.lstsq(A[:, cols], b, rcond=None)
            if np.any(sol < 0):
                continue
            c = np.zeros(n)
            c[list(cols)] = sol
            loss = float(np.sum((A @ c - b) ** 2))
            if loss < best_loss - 1e-12 * max(1.0, best_loss):
                best, best_loss = c, loss
    return list(best / scale)


def fit_set(set_name: str, calibration: Calibration | None = None) -> Fit:
    """Fit one calibration set's coefficients and run the leave-one-out check.

    Cycles of a measured model = published latency x the set's clock. Raises
    :class:`RecipeError` for an unknown set or a calibration model without features.
    """
    cal = calibration or load_calibration()
    if set_name not in cal.sets:
        close = difflib.get_close_matches(set_name, list(cal.sets), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"unknown calibration set {set_name!r}{hint} "
                          f"(known: {', '.join(sorted(cal.sets))}; in {cal.path})")
    s = cal.sets[set_name]
    rows, cycles, names, published = [], [], [], []
    for m in s.measurements:
        feats = cal.models[m.model].features
        if feats is None:
            raise RecipeError(f"{cal.path}: models.{m.model}.features is missing: "
                              "run python tools/bench_estimate.py --update-features")
        rows.append([float(feats[f]) for f in FEATURES])
        cycles.append(m.published_ms * s.clock_mhz * 1e3)
        names.append(m.model)
        published.append(round(m.published_ms, 4))
    coef = _nnls(rows, cycles)
    to_ms = 1.0 / (s.clock_mhz * 1e3)
    residuals = [{"model": n, "published_ms": p, "estimate_ms": round(_dot(coef, r) * to_ms, 4),
                  "pct_error": round(100 * (_dot(coef, r) * to_ms - p) / p, 1)}
                 for n, p, r in zip(names, published, rows)]
    loo = []
    for i, (n, p, r) in enumerate(zip(names, published, rows)):
        rest = [j for j in range(len(rows)) if j != i]
        if not rest:
            loo.append({"model": n, "published_ms": p, "loo_estimate_ms": None, "pct_error": None})
            continue
        c = _nnls([rows[j] for j in rest], [cycles[j] for j in rest])
        est = _dot(c, r) * to_ms
        loo.append({"model": n, "published_ms": p, "loo_estimate_ms": round(est, 4),
                    "pct_error": round(100 * (est - p) / p, 1)})
    return Fit(set_name=set_name, coefficients=dict(zip(FEATURES, coef)), n_points=len(rows),
               loo=loo, residuals=residuals)


def _dot(coef: Sequence[float], row: Sequence[float]) -> float:
    return sum(c * x for c, x in zip(coef, row))


# --------------------------------------------------------------------------------------------
# estimates


def estimate_model(model: bytes | bytearray | memoryview | os.PathLike | str, profile, *,
                   calibration: Calibration | os.PathLike | str | None = None) -> dict[str, Any]:
    """Estimate the latency of a ``.tflite`` model on a target profile's board.

    ``model``: the flatbuffer or a path; ``profile``: a :class:`~edgekit.recipe.TargetProfile`
    (``load_target("cortex-m4")``); ``calibration``: a :class:`Calibration` or the path of a
    calibration file (default: the shipped one). Returns a JSON-ready dict (schema
    ``edgekit.estimate/1``):

    * ``latency_estimate_ms``: the estimate, or ``None`` when the profile names no calibration
      set, the model runs its MAC ops in float (every calibration set measured int8 models), or
      the set cannot be fitted; then ``reason`` says why;
    * ``estimate_basis``: board, core, clock_mhz, kernels, runtime and threads of the
      calibration set, the profile's own clock, the sources, and ``fit`` (coefficients,
      ``n_points``, ``loo_median_abs_pct_error``, ``loo_max_abs_pct_error``, the per-model
      leave-one-out estimates);
    * ``macs``, ``ops``, ``bytes_read``, ``bytes_written``, ``weight_bytes``, ``by_class``,
      ``features``: the op-level cost model of the file;
    * ``per_op``: every op's class, MACs, bytes and (when estimated) its share ``estimate_ms``;
    * ``calibration_match``: when the model has the shape of a calibration model of the set
      (same GEMM MACs, activation bytes within 5 %), its published latency and the estimate of
      the fit that left it out -- the honest number for a model the fit has seen;
    * ``notes``: caveats (clock scaling, kernels or core that differ from the profile's,
      calibration measured with several threads).

    Raises :class:`ConversionError` for a file that is not a TFLite model and
    :class:`RecipeError` for an unknown calibration set or a malformed calibration file.
    No side effects.
    """
    costs = op_costs(model)
    summary = _summary(costs)
    cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "target": profile.name,
        "latency_estimate_ms": None,
        "reason": None,
        "estimate_basis": {"calibration_set": profile.calibration, "board": profile.board or None,
                           "core": profile.core, "clock_mhz": profile.clock_mhz,
                           "kernels": profile.kernels, "runtime": profile.runtime},
        **summary,
        "per_op": [c.as_dict() for c in costs],
        "calibration_match": None,
        "notes": [],
    }
    if profile.calibration is None:
        out["reason"] = _uncalibrated_reason(profile, cal)
        return out
    fit = fit_set(profile.calibration, cal)   # RecipeError for an unknown set
    s = cal.sets[profile.calibration]
    float_ops = sorted({c.op for c in costs if c.op_class in _MAC_CLASSES and c.dtype not in _INT_ACTIVATIONS})
    basis = {
        "calibration_set": profile.calibration,
        "board": s.board,
        "core": s.core,
        "clock_mhz": s.clock_mhz,
        "target_clock_mhz": profile.clock_mhz or s.clock_mhz,
        "kernels": s.kernels,
        "runtime": s.runtime,
        "software": s.software,
        "threads": s.threads,
        "sources": sorted({m.source.cite() for m in s.measurements}),
        "fit": fit.as_dict(),
    }
    out["estimate_basis"] = basis
    if float_ops:
        dtypes = sorted({c.dtype for c in costs if c.op_class in _MAC_CLASSES and c.dtype not in _INT_ACTIVATIONS})
        out["reason"] = (f"the model runs {', '.join(float_ops)} on {', '.join(dtypes)} activations, but "
                         f"calibration set {profile.calibration!r} measured int8 models; convert to int8 "
                         "(tflite-int8 / tflite-full-int8) for an estimate")
        return out
    clock = profile.clock_mhz or s.clock_mhz
    to_ms = 1.0 / (clock * 1e3)
    est = fit.cycles(summary["features"]) * to_ms
    out["latency_estimate_ms"] = round(est, 4)
    for row, c in zip(out["per_op"], costs):
        cyc = (fit.coefficients["macs_gemm"] * (c.macs if c.op_class in _GEMM_CLASSES else 0)
               + fit.coefficients["bytes_activations"] * (c.activation_bytes if c.op_class not in _UNPRICED else 0))
        row["estimate_ms"] = round(cyc * to_ms, 6)
    out["calibration_match"] = _match(summary["features"], s, cal, fit, clock)
    out["notes"] = _notes(profile, s, clock)
    moved = sum(c.activation_bytes for c in costs if c.op_class in _UNPRICED)
    if moved > 0.1 * max(summary["features"]["bytes_activations"], 1):
        ops = sorted({c.op for c in costs if c.op_class in _UNPRICED})
        out["notes"].append(f"{moved} bytes of data-movement ops ({', '.join(ops)}) are not priced: the "
                            "calibration models have almost none; the estimate leaves them out")
    return out


def _match(features: dict[str, int], s: CalibrationSet, cal: Calibration, fit: Fit,
           clock: float) -> dict[str, Any] | None:
    for row in fit.loo:
        ref = cal.models[row["model"]].features or {}
        if (ref.get("macs_gemm") == features["macs_gemm"] and ref.get("bytes_activations")
                and abs(features["bytes_activations"] - ref["bytes_activations"]) <= 0.05 * ref["bytes_activations"]):
            note = ("this model is in the calibration set, so the estimate has seen its published "
                    "latency; loo_estimate_ms is what a fit without it predicts")
            if clock != s.clock_mhz:
                note += f" (both at the calibration board's {s.clock_mhz:g} MHz)"
            return {"model": row["model"], "clock_mhz": s.clock_mhz, "published_ms": row["published_ms"],
                    "loo_estimate_ms": row["loo_estimate_ms"], "loo_pct_error": row["pct_error"], "note": note}
    return None


def _notes(profile, s: CalibrationSet, clock: float) -> list[str]:
    notes = []
    if clock != s.clock_mhz:
        notes.append(f"clock-scaled from the calibration board's {s.clock_mhz:g} MHz to {clock:g} MHz "
                     "(memory wait states do not scale with the clock)")
    if profile.core and profile.core != s.core:
        notes.append(f"the profile's core is {profile.core}, the calibration board's is {s.core}")
    if profile.kernels and profile.kernels != s.kernels:
        notes.append(f"the profile's kernels are {profile.kernels}, the calibration measured {s.kernels}")
    if s.threads != 1:
        how = f"with {s.threads} threads" if s.threads else "multi-threaded (thread count not stated)"
        notes.append(f"the calibration latencies were measured {how}; a run with fewer threads is slower")
    if s.note:
        notes.append(s.note)
    return notes


def _uncalibrated_reason(profile, cal: Calibration) -> str:
    near = sorted(n for n, s in cal.sets.items() if profile.core and s.core == profile.core)
    msg = (f"no published latency measurement of board {profile.board or profile.name!r} is in the "
           f"calibration data, so target {profile.name!r} names no calibration set")
    if near:
        sets = ", ".join(f"{n} ({cal.sets[n].board}, {cal.sets[n].clock_mhz:g} MHz, {cal.sets[n].kernels})"
                         for n in near)
        msg += (f"; sets measured on the same core ({profile.core}): {sets}. Name one as `calibration:` "
                "in a profile of your own to get a clock-scaled estimate from that board")
    return msg
