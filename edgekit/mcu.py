"""TensorFlow Lite Micro target helpers: op check, op resolver, C array, measured tensor arena.

A microcontroller runs a ``.tflite`` model with TensorFlow Lite Micro (TFLM), which needs three
things from the host side, all produced here:

* the model's ops, each with a TFLM kernel (:func:`model_ops`, :data:`TFLM_OPS`,
  :func:`check_ops`) and registered in a ``MicroMutableOpResolver`` sized to exactly those ops
  (:func:`write_op_resolver`);
* the model bytes as a 16-byte aligned C array (:func:`write_c_array`, read back with
  :func:`read_c_array`);
* a tensor arena that is big enough, *measured* by running the model in the tflite-micro Python
  interpreter (:func:`measure_arena`, one trial per subprocess with :func:`try_arena`).

Example::

    from edgekit import mcu

    data = Path("model_int8.tflite").read_bytes()
    ops = mcu.model_ops(data)            # ['CONV_2D', 'FULLY_CONNECTED', ...]
    mcu.check_ops(ops)                   # ConversionError if TFLM lacks one
    arena = mcu.measure_arena("model_int8.tflite")
    mcu.write_op_resolver(ops, out / "op_resolver.h")
    mcu.write_c_array(data, out, arena_bytes=arena)

This module never imports TensorFlow; ``tflite_micro`` is imported lazily inside the functions
that parse a model, and the interpreter only ever runs in a child process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import types
from collections.abc import Iterable
from pathlib import Path

from ._io import write_text
from .errors import ConversionError

log = logging.getLogger(__name__)

__all__ = [
    "TFLM_INT16X8_OPS",
    "TFLM_OPS",
    "ArenaMeasurement",
    "ArenaTrial",
    "check_ops",
    "measure_arena",
    "model_ops",
    "read_c_array",
    "try_arena",
    "write_c_array",
    "write_op_resolver",
]

_ALIGN = 16  # bytes: TFLM arena alignment, the C array alignment and the arena search resolution

# TFLite op name -> TFLM ``MicroMutableOpResolver`` method that registers its kernel, taken from
# tensorflow/lite/micro/micro_mutable_op_resolver.h (tflite-micro main, 2026). Builtin ops by
# their schema name (``BuiltinOperator``); custom ops that TFLM ships a kernel for as
# ``CUSTOM:<custom_code>``. An op missing here is treated as unsupported.
TFLM_OPS: types.MappingProxyType[str, str] = types.MappingProxyType({
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice",
    "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
    # custom ops with a TFLM kernel (registered under these custom codes)
    "CUSTOM:CIRCULAR_BUFFER": "AddCircularBuffer",
    "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "CUSTOM:TFLM_DECODE": "AddDecode",
    "CUSTOM:SignalDelay": "AddDelay",
    "CUSTOM:SignalEnergy": "AddEnergy",
    "CUSTOM:SignalFftAutoScale": "AddFftAutoScale",
    "CUSTOM:SignalFilterBank": "AddFilterBank",
    "CUSTOM:SignalFilterBankLog": "AddFilterBankLog",
    "CUSTOM:SignalFilterBankSquareRoot": "AddFilterBankSquareRoot",
    "CUSTOM:SignalFilterBankSpectralSubtraction": "AddFilterBankSpectralSubtraction",
    "CUSTOM:SignalFramer": "AddFramer",
    "CUSTOM:SignalIrfft": "AddIrfft",
    "CUSTOM:SignalOverlapAdd": "AddOverlapAdd",
    "CUSTOM:SignalPCAN": "AddPCAN",
    "CUSTOM:SignalRfft": "AddRfft",
    "CUSTOM:SignalStacker": "AddStacker",
    "CUSTOM:SignalWindow": "AddWindow",
})

# The ops TFLM runs with int16 activations and int8 weights (the 16x8 scheme) *as edgekit's
# quantizer (litert-quantizer 0.11.0) writes them*: each was converted with int16 activations and
# run in the tflite-micro interpreter (tests/test_selective.py checks the table). Left out because
# the quantizer keeps them float in a 16x8 model (DEQUANTIZE -> float op -> QUANTIZE), which an
# integer-only MCU model cannot have: RELU6, LEAKY_RELU, HARD_SWISH, PRELU, REDUCE_MAX. A layer
# made of other ops is never given int16 activations on an MCU (:mod:`edgekit.selective`).
TFLM_INT16X8_OPS: frozenset[str] = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "LOGISTIC",
    "MAX_POOL_2D", "MEAN", "MUL", "PAD", "QUANTIZE", "RELU", "RESHAPE", "RESIZE_NEAREST_NEIGHBOR", "SOFTMAX",
    "TANH", "TRANSPOSE_CONV",
})

_TARGETS = ("tflite-micro",)
_C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# --------------------------------------------------------------------------------------------
# ops


def model_ops(model: bytes | bytearray | memoryview | os.PathLike) -> list[str]:
    """The ops a TFLite model uses: sorted, unique names, e.g. ``["CONV_2D", "RESHAPE"]``.

    ``model`` is the flatbuffer (bytes) or the path of a ``.tflite`` file. Builtin ops are named
    as in the TFLite schema (``BuiltinOperator``), custom ops as ``"CUSTOM:<custom_code>"``;
    TensorFlow select ops therefore appear as ``"CUSTOM:Flex<TfOp>"``. Only ops that some
    operator of some subgraph uses are listed.

    Raises :class:`ConversionError` when the bytes are not a TFLite flatbuffer (wrong file
    identifier, truncated or corrupt tables) or the path is no file. No side effects; read by
    :func:`edgekit.tflite_file.read` (``tflite_micro``'s schema), never TensorFlow.
    """
    from .tflite_file import read

    return read(model).ops


def check_ops(ops: Iterable[str], *, target: str = "tflite-micro") -> None:
    """Fail unless TFLite Micro has a kernel for every op in ``ops`` (names as :func:`model_ops`).

    Raises :class:`ConversionError` naming every op missing from :data:`TFLM_OPS`, with the list
    of supported ops; TensorFlow select (Flex) ops get a hint, since TFLM has no TensorFlow
    fallback. Raises ``ValueError`` for an unknown ``target``. No side effects.
    """
    if target not in _TARGETS:
        raise ValueError(f"unknown target {target!r}: expected one of {', '.join(_TARGETS)}")
    if isinstance(ops, str):
        raise TypeError("ops must be a list of op names, not one string")
    ops = sorted(set(ops))
    missing = [op for op in ops if op not in TFLM_OPS]
    if not missing:
        return
    shown = [f"{op} (TensorFlow select op {op[len('CUSTOM:Flex'):]}; TFLM cannot run Flex ops)"
             if op.startswith("CUSTOM:Flex") else op for op in missing]
    raise ConversionError(
        f"ops not supported by TFLite Micro: {', '.join(shown)}. Replace the layers that produce "
        f"them with ones TFLM has kernels for (supported: {', '.join(sorted(TFLM_OPS))})")


def write_op_resolver(ops: Iterable[str], path: os.PathLike | str, *,
                      name: str = "OpResolver") -> Path:
    """Write a C++ header that registers exactly ``ops`` in a TFLM ``MicroMutableOpResolver``.

    The header holds an include guard,
    ``#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"``,
    ``using <name> = tflite::MicroMutableOpResolver<N>;`` with N the number of distinct ops, and
    ``inline TfLiteStatus RegisterOps(<name>& resolver)`` that calls one ``Add*`` per op and
    returns ``kTfLiteError`` as soon as one fails. Usage on the device::

        static OpResolver resolver;
        if (RegisterOps(resolver) != kTfLiteOk) { /* report */ }

    Side effects: writes ``path`` atomically (temp file in the same folder, then rename),
    creating its folder. Raises :class:`ConversionError` (nothing written) when an op has no
    TFLM kernel, ``ValueError`` for an empty op list or a ``name`` that is not a C identifier.
    Returns the path written.
    """
    if isinstance(ops, str):
        raise TypeError("ops must be a list of op names, not one string")
    ops = sorted(set(ops))
    if not ops:
        raise ValueError("write_op_resolver needs at least one op (MicroMutableOpResolver<0> "
                         "is not valid C++)")
    if not _C_IDENT.match(name):
        raise ValueError(f"name {name!r} is not a C identifier")
    check_ops(ops)
    path = Path(path)
    guard = _guard(path)
    lines = [
        "// Generated by edgekit: TensorFlow Lite Micro op resolver for the model's "
        f"{len(ops)} ops.",
        f"// Ops: {', '.join(ops)}",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        "",
        f"using {name} = tflite::MicroMutableOpResolver<{len(ops)}>;",
        "",
        "// Registers every op the model uses; returns kTfLiteError if a registration fails.",
        f"inline TfLiteStatus RegisterOps({name}& resolver) {{",
    ]
    for op in ops:
        lines.append(f"  if (resolver.{TFLM_OPS[op]}() != kTfLiteOk) return kTfLiteError;"
                     f"  // {op}")
    lines += ["  return kTfLiteOk;", "}", "", f"#endif  // {guard}", ""]
    write_text(path, "\n".join(lines))
    return path


# --------------------------------------------------------------------------------------------
# C array


def _c_float(v: float) -> str:
    text = f"{float(v):.9g}"
    return (text if any(ch in text for ch in ".e") else text + ".0") + "f"


def _io_constants(io: dict | None, preprocess: dict | None) -> list[str]:
    """Header lines with the I/O quantization and the preprocessing constants (C++ constexpr, C macros)."""
    h: list[str] = []
    if io:
        pairs = [(f"k{side.capitalize()}", io[side]) for side in ("input", "output")
                 if io.get(side) and io[side].get("scale") is not None]
        if pairs:
            h += ["", "// Input and output quantization, read from the model: q = round(x / scale) + zero_point,",
                  "// x = (q - zero_point) * scale."]
            cxx = [f"constexpr float {n}Scale = {_c_float(q['scale'])};\nconstexpr int {n}ZeroPoint = {int(q['zero_point'])};"
                   for n, q in pairs]
            c = [f"#define {n}Scale {_c_float(q['scale'])}\n#define {n}ZeroPoint ({int(q['zero_point'])})" for n, q in pairs]
            h += ["#ifdef __cplusplus", *"\n".join(cxx).split("\n"), "#else", *"\n".join(c).split("\n"), "#endif"]
    if preprocess:
        off, sc = [_c_float(v) for v in preprocess["offset"]], [_c_float(v) for v in preprocess["scale"]]
        shape = "[" + ", ".join(str(d) for d in preprocess.get("shape") or [len(off)]) + "]"
        h += ["", f"// Preprocessing of a raw input, fitted on the training split ({preprocess.get('normalize')}):",
              f"// x_model = (x_raw - kPreprocessOffset[i]) / kPreprocessScale[i], shape {shape} broadcast over the",
              "// input; then quantize x_model with kInputScale and kInputZeroPoint.",
              "#ifdef __cplusplus",
              f"constexpr unsigned int kPreprocessLen = {len(off)};",
              f"constexpr float kPreprocessOffset[{len(off)}] = {{{', '.join(off)}}};",
              f"constexpr float kPreprocessScale[{len(sc)}] = {{{', '.join(sc)}}};",
              "#else",
              f"enum {{ kPreprocessLen = {len(off)} }};",
              f"#define EDGEKIT_PREPROCESS_OFFSET_INIT {{{', '.join(off)}}}",
              f"#define EDGEKIT_PREPROCESS_SCALE_INIT {{{', '.join(sc)}}}",
              "#endif"]
    elif io is not None:
        h += ["", "// Preprocessing: none; the model takes the data as loaded."]
    return h


def write_c_array(model: bytes, out_dir: os.PathLike | str, *, name: str = "g_model",
                  arena_bytes: int | ArenaMeasurement | None, header: str = "model_data.h",
                  source: str = "model_data.cc", io: dict | None = None,
                  preprocess: dict | None = None, arena_name: str = "kTensorArenaSize") -> tuple[Path, Path]:
    """Write ``model`` as a C array: a header with declarations and a source with the bytes.

    ``<header>`` declares ``extern const unsigned char <name>[];`` and
    ``extern const unsigned int <name>_len;`` (C linkage, usable from C and C++) and, unless
    ``arena_bytes`` is None, the tensor arena size in bytes: ``constexpr unsigned int
    kTensorArenaSize = N;`` in C++ (an ``enum`` constant in C), with a comment saying where the
    number comes from. Pass the :class:`ArenaMeasurement` from :func:`measure_arena` to record
    how it was measured (its ``recommended_bytes`` is used); a plain int is recorded as given
    by the caller. ``io`` (:func:`edgekit.opcosts.io_quantization` of the model) adds the input
    and output scale and zero point (``kInputScale``, ``kInputZeroPoint``, ``kOutputScale``,
    ``kOutputZeroPoint``); ``preprocess`` (``preprocess.json``: offset and scale fitted on the
    training split) adds ``kPreprocessLen`` and the arrays ``kPreprocessOffset`` /
    ``kPreprocessScale`` (in C: the initializer macros ``EDGEKIT_PREPROCESS_OFFSET_INIT`` /
    ``EDGEKIT_PREPROCESS_SCALE_INIT``), so firmware can turn a raw input into the model's
    int8 input without reading preprocess.json. ``<source>`` includes the header and defines ``alignas(16) const unsigned
    char <name>[] = {0x.., ...};`` (12 bytes per line; TFLM and some MCUs need the 16-byte
    alignment) and ``<name>_len``. Compile the source as C++11 or later. ``arena_name`` names the
    arena constant (a second model in the same firmware, such as the audio front end, takes
    another name: ``kFrontendArenaSize``).

    Side effects: creates ``out_dir`` and writes both files atomically (temp file + rename).
    Raises ``ValueError`` for an empty model, a ``name`` that is not a C identifier, file names
    with a path separator, or a negative arena. Returns ``(header_path, source_path)``.
    """
    data = bytes(model)
    if not data:
        raise ValueError("model is empty")
    for ident in (name, arena_name):
        if not _C_IDENT.match(ident):
            raise ValueError(f"name {ident!r} is not a C identifier")
    for fname in (header, source):
        if not fname or Path(fname).name != fname:
            raise ValueError(f"file name {fname!r} must be a plain file name, without folders")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h_path, c_path = out / header, out / source
    guard = _guard(h_path)
    digest = hashlib.sha256(data).hexdigest()

    h = [
        f"// Generated by edgekit: TFLite model as a C array ({len(data)} bytes, sha256 {digest}).",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        "// The .tflite flatbuffer, 16-byte aligned; defined in " + source + ".",
        f"extern const unsigned char {name}[];",
        f"extern const unsigned int {name}_len;  // bytes",
        "",
        "#ifdef __cplusplus",
        '}  // extern "C"',
        "#endif",
    ]
    if arena_bytes is not None:
        size, note = _arena_note(arena_bytes)
        h += [
            "",
            *[f"// {line}" for line in note],
            "#ifdef __cplusplus",
            f"constexpr unsigned int {arena_name} = {size};",
            "#else",
            f"enum {{ {arena_name} = {size} }};",
            "#endif",
        ]
    h += _io_constants(io, preprocess)
    h += ["", f"#endif  // {guard}", ""]

    c = [
        f"// Generated by edgekit: TFLite model as a C array ({len(data)} bytes, sha256 {digest}).",
        f'#include "{header}"',
        "",
        "// alignas(16): TFLM reads the flatbuffer in place; misaligned data can hard-fault",
        "// some MCUs.",
        f"alignas(16) const unsigned char {name}[] = {{",
    ]
    for i in range(0, len(data), 12):
        c.append("    " + ", ".join(f"0x{b:02x}" for b in data[i:i + 12]) + ",")
    c += ["};", f"const unsigned int {name}_len = {len(data)};", ""]

    write_text(h_path, "\n".join(h))
    write_text(c_path, "\n".join(c))
    return h_path, c_path


def read_c_array(source_path: os.PathLike | str) -> bytes:
    """Parse a source written by :func:`write_c_array` back into the model bytes.

    Reads the first ``... [] = { 0x.., ... };`` initializer and checks its length against the
    ``<name>_len = N;`` definition when present. Raises :class:`ConversionError` when no array
    is found, a token is not a byte, or the length disagrees. No side effects.
    """
    text = Path(source_path).read_text()
    m = re.search(r"\b([A-Za-z_]\w*)\s*\[\s*\]\s*=\s*\{(.*?)\}\s*;", text, re.S)
    if not m:
        raise ConversionError(f"{source_path}: no C array initializer '<name>[] = {{...}};' found")
    array, body = m.group(1), m.group(2)
    tokens = [t.strip() for t in body.split(",") if t.strip()]
    try:
        values = [int(t, 0) for t in tokens]
    except ValueError as e:
        raise ConversionError(f"{source_path}: array {array} has a token that is not an "
                              f"integer literal ({e})") from e
    if any(not 0 <= v <= 255 for v in values):
        raise ConversionError(f"{source_path}: array {array} has a value outside 0..255")
    data = bytes(values)
    n = re.search(rf"\b{re.escape(array)}_len\s*=\s*(\d+)\s*;", text)
    if n and int(n.group(1)) != len(data):
        raise ConversionError(f"{source_path}: {array}_len says {n.group(1)} bytes but the "
                              f"array holds {len(data)}")
    return data


# --------------------------------------------------------------------------------------------
# tensor arena


@dataclasses.dataclass(frozen=True)
class ArenaTrial:
    """One run of the model in the tflite-micro interpreter, in its own subprocess."""

    arena_bytes: int
    ok: bool                          # allocated, one invoke succeeded, process exited 0
    returncode: int | None            # negative: killed by that signal; None: timed out
    reported_total_bytes: int | None  # "Arena allocation total N bytes" (only when ok)
    pointer_bits: int | None          # of the process that ran it (only when ok)
    tflm_version: str | None          # tflite_micro.__version__ (only when ok)
    error: str                        # last stderr line or why it failed; "" when ok
    seconds: float


@dataclasses.dataclass(frozen=True)
class ArenaMeasurement:
    """The tensor arena a model needs in TFLite Micro, measured on this host.

    ``min_bytes`` is the smallest multiple of 16 bytes with which the model allocates and one
    invoke succeeds (``min_bytes - 16`` failed), so the true minimum lies in
    ``(min_bytes - 16, min_bytes]``. ``recommended_bytes`` adds ``margin_bytes`` and is rounded
    up to 16. ``reported_total_bytes`` is what ``print_allocations()`` reported with a large
    arena (None if it could not be parsed). ``pointer_bits`` says which host measured it: a
    32-bit MCU needs somewhat less than a 64-bit host (pointers and structs are smaller).
    """

    min_bytes: int
    recommended_bytes: int
    reported_total_bytes: int | None
    pointer_bits: int
    runs: int               # subprocess trials made
    margin_bytes: int
    seconds: float          # wall time of the whole measurement
    tflm_version: str


# Runs in a fresh interpreter: argv = [model_path, arena_bytes]. A too-small arena raises or
# crashes the process; either way the parent sees a non-zero exit status.
_TRIAL_CODE = r"""
import json, struct, sys
import numpy as np
import tflite_micro
from tflite_micro.python.tflite_micro import runtime
path, arena = sys.argv[1], int(sys.argv[2])
with open(path, "rb") as f:
    n_inputs = runtime.schema_fb.Model.GetRootAsModel(f.read(), 0).Subgraphs(0).InputsLength()
interp = runtime.Interpreter.from_file(path, arena_size=arena)
for i in range(n_inputs):
    d = interp.get_input_details(i)
    interp.set_input(np.zeros(d["shape"], dtype=d["dtype"]), i)
interp.invoke()
sys.stderr.flush()
interp.print_allocations()
print(json.dumps({"ok": True, "pointer_bits": struct.calcsize("P") * 8,
                  "tflm_version": tflite_micro.__version__}), flush=True)
"""

_TOTAL_RE = re.compile(r"Arena allocation total (\d+) bytes")


def try_arena(model_path: os.PathLike | str, arena_bytes: int, *,
              timeout_s: float = 60.0) -> ArenaTrial:
    """Run ``model_path`` once in the tflite-micro interpreter with an arena of ``arena_bytes``.

    The trial runs in a fresh ``sys.executable`` subprocess (an arena that is too small can
    crash the whole process instead of raising): it creates
    ``runtime.Interpreter.from_file(path, arena_size=arena_bytes)``, sets every input to zeros
    of its dtype and shape, invokes once and prints the allocations. A non-zero exit, a signal
    or ``timeout_s`` seconds without finishing is a failure (``ok=False``, with the reason in
    ``error``); this function itself never raises for a failing trial.
    """
    start = time.perf_counter()
    cmd = [sys.executable, "-c", _TRIAL_CODE, os.fspath(model_path), str(int(arena_bytes))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ArenaTrial(arena_bytes, False, None, None, None, None,
                          f"timed out after {timeout_s:g} s", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    info: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith('{"ok"'):
            info = json.loads(line)
    ok = proc.returncode == 0 and bool(info.get("ok"))
    total = _TOTAL_RE.search(proc.stderr)
    if ok:
        error = ""
    else:
        error = _trial_error(proc.stderr)
        if proc.returncode < 0:
            error += f" (killed by {_signal_name(-proc.returncode)})"
        else:
            error += f" (exit status {proc.returncode})"
    return ArenaTrial(arena_bytes, ok, proc.returncode,
                      int(total.group(1)) if (ok and total) else None,
                      info.get("pointer_bits"), info.get("tflm_version"), error, seconds)


def measure_arena(model_path: os.PathLike | str, *, margin_bytes: int | None = None,
                  margin_fraction: float = 0.1, upper_bytes: int = 4 * 1024 * 1024,
                  timeout_s: float = 60.0) -> ArenaMeasurement:
    """Measure the TFLite Micro tensor arena ``model_path`` needs, by running it.

    First one trial (see :func:`try_arena`) with ``upper_bytes`` (bytes) reads the
    "Arena allocation total" that ``print_allocations()`` reports. That number is not always
    enough, so the smallest working arena is then searched among multiples of 16 bytes: a probe
    at the reported total, a doubling step (16, 32, 64, ... bytes) away from it until the
    outcome flips, and a bisection of the last step; without a reported total, a bisection of
    ``(0, upper_bytes]``. Typically 3-15 subprocesses of about 0.2-1 s each.

    The margin is ``margin_bytes`` if given, else ``ceil(min_bytes * margin_fraction)``;
    ``recommended_bytes = round_up_16(min_bytes + margin)``. The search assumes that a bigger
    arena never fails where a smaller one worked.

    Raises :class:`ConversionError` when the model does not run even with ``upper_bytes``
    (unsupported op, bad model, or a bigger arena needed), with the interpreter's error lines
    and the ops missing from :data:`TFLM_OPS`; ``ValueError`` for negative margins or
    ``upper_bytes < 16``; ``FileNotFoundError`` when the file does not exist.
    Side effects: starts subprocesses; writes nothing, except that with ``$EDGEKIT_ARENA_CACHE``
    set to a folder a measurement is cached there by the sha256 of the model bytes and the
    tflite-micro version (the test suite sets it, so the same model is not searched twice).
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if margin_bytes is not None and margin_bytes < 0:
        raise ValueError(f"margin_bytes must be >= 0, got {margin_bytes}")
    if not margin_fraction >= 0:
        raise ValueError(f"margin_fraction must be >= 0, got {margin_fraction}")
    if upper_bytes < _ALIGN:
        raise ValueError(f"upper_bytes must be >= {_ALIGN}, got {upper_bytes}")
    cache = _arena_cache_file(path, margin_bytes, margin_fraction, upper_bytes)
    if cache is not None:
        try:
            cached = ArenaMeasurement(**json.loads(cache.read_text()))
            log.info("tensor arena for %s: %d B (cached measurement of the same bytes, %s)", path.name,
                     cached.min_bytes, cache.name)
            return cached
        except (OSError, ValueError, TypeError):
            pass  # not there yet, or unreadable: measure
    result = _measure_arena(path, margin_bytes=margin_bytes, margin_fraction=margin_fraction,
                            upper_bytes=upper_bytes, timeout_s=timeout_s)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(dataclasses.asdict(result)))
            os.replace(tmp, cache)
        except OSError as exc:  # a cache that cannot be written only costs time
            log.debug("arena cache not written: %s", exc)
    return result


ARENA_CACHE_ENV = "EDGEKIT_ARENA_CACHE"
_ARENA_CACHE_SCHEMA = 1  # bump when the search or ArenaMeasurement changes


def _arena_cache_file(path: Path, margin_bytes, margin_fraction, upper_bytes) -> Path | None:
    """Where the measurement of these model bytes is cached, when ``$EDGEKIT_ARENA_CACHE`` names
    a folder: keyed by the sha256 of the bytes, the tflite-micro version and the search settings
    (the search is deterministic for them). Only real TFLite flatbuffers are cached."""
    folder = os.environ.get(ARENA_CACHE_ENV)
    if not folder:
        return None
    blob = path.read_bytes()
    if blob[4:8] != b"TFL3":
        return None
    try:
        from importlib.metadata import version

        tflm = version("tflite-micro")
    except Exception:  # noqa: BLE001 - no version, no cache
        return None
    key = hashlib.sha256(blob)
    key.update(json.dumps([_ARENA_CACHE_SCHEMA, tflm, margin_bytes, margin_fraction, upper_bytes,
                           _pointer_bits()]).encode())
    return Path(folder) / f"arena-{key.hexdigest()}.json"


def _measure_arena(path: Path, *, margin_bytes: int | None, margin_fraction: float, upper_bytes: int,
                   timeout_s: float) -> ArenaMeasurement:
    start = time.perf_counter()
    upper = _round_up(upper_bytes)
    first = try_arena(path, upper, timeout_s=timeout_s)
    runs = 1
    if not first.ok:
        try:
            missing = [op for op in model_ops(path) if op not in TFLM_OPS]
            hint = f" (ops without a TFLM kernel: {', '.join(missing)})" if missing else ""
        except ConversionError as e:
            hint = f" ({e})"
        raise ConversionError(f"{path}: model does not run in TFLite Micro even with "
                              f"{_human(upper)} arena: {first.error}{hint}")

    def works(n: int) -> bool:
        nonlocal runs
        runs += 1
        trial = try_arena(path, n, timeout_s=timeout_s)
        log.debug("arena %d bytes: %s", n, "ok" if trial.ok else trial.error)
        return trial.ok

    lo, hi = 0, upper  # invariant: an arena of `lo` bytes fails, one of `hi` bytes works
    reported = first.reported_total_bytes
    if reported:
        probe = min(_round_up(reported), hi)
        step = _ALIGN
        if probe < hi and works(probe):
            hi = probe
            while hi - step > lo:  # walk down until it fails
                if not works(hi - step):
                    lo = hi - step
                    break
                hi, step = hi - step, step * 2
        elif probe < hi:
            lo = probe
            # walk up until it works, from a quarter of the reported total: on a 64-bit host the
            # minimum lies 20-35 % above it (pointers), so 16-byte first steps took ~9 trials to get
            # there where these take 2-3 (the binary search below is then as long as before)
            step = max(_ALIGN, _round_up(reported // 4))
            while lo + step < hi:  # walk up until it works
                if works(lo + step):
                    hi = lo + step
                    break
                lo, step = lo + step, step * 2
    while hi - lo > _ALIGN:
        mid = (lo + hi) // 2 // _ALIGN * _ALIGN
        if works(mid):
            hi = mid
        else:
            lo = mid
    margin = margin_bytes if margin_bytes is not None else math.ceil(hi * margin_fraction)
    result = ArenaMeasurement(
        min_bytes=hi, recommended_bytes=_round_up(hi + margin), reported_total_bytes=reported,
        pointer_bits=first.pointer_bits or _pointer_bits(), runs=runs,
        margin_bytes=margin, seconds=round(time.perf_counter() - start, 3),
        tflm_version=first.tflm_version or "unknown")
    log.info("tensor arena for %s: min %d B, reported total %s B, recommended %d B "
             "(%d-bit host, %d runs, %.1f s)", path.name, result.min_bytes, reported,
             result.recommended_bytes, result.pointer_bits, runs, result.seconds)
    return result


# --------------------------------------------------------------------------------------------
# helpers


def _trial_error(stderr: str) -> str:
    """TFLM's own messages (printed before any Python traceback) plus the final line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return "no error message"
    head = lines
    if "Traceback (most recent call last):" in lines:
        head = lines[:lines.index("Traceback (most recent call last):")]
    tflm = [ln for ln in head[-3:] if not ln.startswith("[RecordingMicroAllocator]")]
    return "; ".join(dict.fromkeys([*tflm, lines[-1]]))


def _pointer_bits() -> int:
    """Pointer width of this Python process in bits (64 on x86-64 / aarch64 hosts)."""
    return 64 if sys.maxsize > 2**32 else 32


def _arena_note(arena: int | ArenaMeasurement) -> tuple[int, list[str]]:
    if isinstance(arena, ArenaMeasurement):
        reported = (f"reported {arena.reported_total_bytes} bytes" if arena.reported_total_bytes
                    else "reported no total")
        return arena.recommended_bytes, [
            "Tensor arena in bytes, measured by edgekit.mcu.measure_arena in the tflite-micro",
            f"{arena.tflm_version} Python interpreter on a {arena.pointer_bits}-bit host: "
            "the model allocated",
            f"and ran one inference with {arena.min_bytes} bytes, not with "
            f"{arena.min_bytes - _ALIGN} ({arena.runs} trial runs; print_allocations",
            f"{reported}). This value adds a margin of "
            f"{arena.margin_bytes} bytes. A 32-bit MCU",
            "needs somewhat less than a 64-bit host; re-measure on the device to trim it.",
        ]
    size = int(arena)
    if size < 0:
        raise ValueError(f"arena_bytes must be >= 0, got {size}")
    return size, ["Tensor arena in bytes, as given to edgekit (not measured by write_c_array)."]


def _guard(path: Path) -> str:
    return "EDGEKIT_" + re.sub(r"[^A-Za-z0-9]", "_", path.name).upper() + "_"


def _round_up(n: int, align: int = _ALIGN) -> int:
    return -(-int(n) // align) * align


def _human(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def _signal_name(num: int) -> str:
    import signal

    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
