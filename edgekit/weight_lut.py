"""Look-up-table weight compression for TensorFlow Lite Micro: fewer flash bytes per weight.

An int8 weight takes a byte of flash. TFLite Micro can instead store a weight tensor as
``2**bits`` values per output channel plus a ``bits``-wide index per weight, and rebuild the int8
tensor at run time with its ``DECODE`` operator (tflite-micro's compression module and kernel).
For that every channel may hold at most ``2**bits`` distinct values, so :func:`compress` first
*clusters* each channel's int8 weights: a one-dimensional k-means over the channel's 255 possible
values, weighted by how often each occurs (deterministic: started at the quantiles), centers
rounded to integers, each weight replaced by its nearest center. Then tflite-micro's compressor
writes the tables, the packed indices and the DECODE operators.

What it costs, measured (``tests/test_weight_lut.py``, docs/compression.md): the decoded weights
live in the tensor arena while they are used, so flash shrinks and the arena grows; the tables
(``2**bits`` bytes per channel, and a copy of the quantization parameters for the decoded tensor)
make it a loss for tensors with few weights per channel (depthwise and 1x1 convolutions of narrow
layers), which are left as they are: a tensor is compressed only when that saves at least a
quarter of its bytes. The
clustering changes the weights: the accuracy is measured on the compressed file like any other.
LiteRT has no DECODE kernel; :func:`compress` also returns the clustered model with its weights
stored plainly (the same int8 arithmetic), which the host's per-layer error runs instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from typing import Any

import numpy as np

from .errors import ConversionError

log = logging.getLogger(__name__)

DECODE_OP = "CUSTOM:TFLM_DECODE"
"""How :func:`edgekit.tflite_file.read` names the op that rebuilds a look-up-table tensor."""

# op -> the index of its weight input (TFLite Micro's DECODE-aware kernels: tflite-micro's compression docs)
_WEIGHT_INPUTS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
_DECODE_BYTES = 160  # a DECODE op and its output and ancillary tensors (shapes, alignment), roughly
_HEADER_BYTES = 16  # the ancillary data's header (DCM) before the value tables
MIN_SAVING = 0.75  # a tensor is compressed when its estimated compressed bytes are at most this share


def cluster(values: np.ndarray, k: int, *, iterations: int = 30) -> np.ndarray:
    """``values`` (integers) with at most ``k`` distinct values: a one-dimensional k-means over
    the distinct values weighted by their counts, started at the weighted quantiles, its centers
    rounded to integers; each value becomes its nearest center. Deterministic."""
    v = np.asarray(values).astype(np.int64).reshape(-1)
    uniq, counts = np.unique(v, return_counts=True)
    if len(uniq) <= k:
        return np.asarray(values).copy()
    cdf = (np.cumsum(counts) - counts / 2) / counts.sum()
    centers = np.unique(np.interp((np.arange(k) + 0.5) / k, cdf, uniq.astype(np.float64)))
    for _ in range(iterations):
        assign = np.abs(uniq[:, None] - centers[None, :]).argmin(axis=1)
        new = np.array([np.average(uniq[assign == j], weights=counts[assign == j]) if np.any(assign == j)
                        else centers[j] for j in range(len(centers))])
        if np.allclose(new, centers):
            break
        centers = new
    levels = np.unique(np.round(centers)).astype(np.int64)
    # nearest level (ties to the lower one): O(n log k), not an n x k matrix, for large tensors
    nearest = levels[np.searchsorted((levels[:-1] + levels[1:]) / 2, v, side="left")]
    return nearest.reshape(np.shape(values)).astype(np.asarray(values).dtype)


def compress(blob: bytes, bits: int) -> tuple[bytes, bytes, dict[str, Any]]:
    """``blob`` (a full-integer .tflite) with its conv / depthwise / dense / transpose-conv int8
    weights clustered to ``2**bits`` values per output channel and stored as look-up tables.

    Returns ``(compressed, clustered, info)``: the file TFLite Micro runs (with DECODE ops), the
    same clustered weights stored plainly (what LiteRT can run), and ``{"method": "lut",
    "index_bits", "tensors": [{name, weights, bits, channels}], "size_bytes_before",
    "size_bytes_after", "applied"}`` (``reason`` when not applied). A tensor shared by several ops,
    or whose tables, indices and DECODE op would save less than a quarter of its bytes, is left as
    it is; with none left (or a compressed file no smaller), ``compressed`` is ``blob`` itself. Raises :class:`ConversionError` when tflite-micro's compressor fails.
    """
    from .tflite_file import read, tensor_data, with_buffers

    if not 1 <= int(bits) <= 7:
        raise ValueError(f"bits must be 1..7 (TFLite Micro's LUT indices), got {bits}")
    model = read(blob)
    sg = model.subgraphs[0]
    uses: dict[int, int] = {}
    for op in sg.operators:
        for t in op.inputs:
            if t >= 0:
                uses[t] = uses.get(t, 0) + 1
    candidates = [op.inputs[_WEIGHT_INPUTS[op.op]] for op in sg.operators
                  if op.op in _WEIGHT_INPUTS and len(op.inputs) > _WEIGHT_INPUTS[op.op]]
    data = tensor_data(blob, [i for i in candidates if i >= 0])
    chosen: dict[int, np.ndarray] = {}
    specs, tensors = [], []
    for index in candidates:
        t = sg.tensor(index)
        if t is None or index in chosen or uses.get(index, 0) != 1 or t.dtype != "INT8" or index not in data:
            continue
        w = np.frombuffer(data[index], np.int8).reshape(t.shape)
        per_channel = len(t.scale) > 1
        axis = t.quantized_dimension if per_channel else None
        channels = w.shape[axis] if per_channel else 1
        parts = [cluster(np.take(w, c, axis=axis), 2 ** bits) for c in range(channels)] if per_channel \
            else [cluster(w, 2 ** bits)]
        clustered = np.stack(parts, axis=axis) if per_channel else parts[0]
        levels = max(len(np.unique(part)) for part in parts)
        need = max(1, math.ceil(math.log2(levels))) if levels > 1 else 1
        # indices + value tables + the decoded tensor's copy of the quantization (float scales,
        # int64 zero points) + the names of the two new tensors + the DECODE op and the rest of them
        # (checked against the compressor's output: within 60 B of it on ResNet-8's tensors)
        cost = (math.ceil(w.size * need / 8) + channels * 2 ** need + _HEADER_BYTES
                + 4 * len(t.scale) + 8 * len(t.zero_point) + 2 * (len(t.name) + 8) + _DECODE_BYTES)
        if cost > MIN_SAVING * w.size:
            continue  # the tables would save less than a quarter of its bytes (and add all of them to the arena)
        chosen[index] = clustered.astype(np.int8)
        specs.append((index, need, axis))
        tensors.append({"name": t.name, "weights": int(w.size), "bits": need, "channels": int(channels)})
    info: dict[str, Any] = {"method": "lut", "index_bits": int(bits), "tensors": tensors,
                            "size_bytes_before": len(blob)}
    if not chosen:
        info.update(applied=False, size_bytes_after=len(blob),
                    reason="no weight tensor has enough weights per channel for its look-up tables to save a quarter "
                           "of its bytes")
        return blob, blob, info
    clustered_blob = with_buffers(blob, chosen)
    compressed = _tflm_compress(clustered_blob, specs)
    if len(compressed) >= len(blob):
        info.update(applied=False, size_bytes_after=len(blob),
                    reason=f"the compressed file ({len(compressed)} B) is not smaller than the plain one")
        return blob, blob, info
    info.update(applied=True, size_bytes_after=len(compressed))
    log.info("LUT weight compression: %d tensor(s) at <= %d bits, %d -> %d B", len(tensors), bits, len(blob),
             len(compressed))
    return compressed, clustered_blob, info


def _tflm_compress(blob: bytes, specs: list[tuple[int, int, int | None]]) -> bytes:
    """tflite-micro's compressor on ``blob`` for ``(tensor, bits, axis or None)`` specs; its
    prints and warnings go to the log."""
    from tflite_micro.tensorflow.lite.micro.compression import compress as tflm_compress
    from tflite_micro.tensorflow.lite.micro.compression import spec

    tensor_specs = [spec.Tensor(subgraph=0, tensor=int(i), compression=[spec.LookUpTableCompression(
        index_bitwidth=int(b), mode=spec.PerChannel(axis=int(a)) if a is not None else spec.PerTensor())])
        for i, b, a in specs]
    out = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            result = bytes(tflm_compress(blob, tensor_specs))
    except Exception as exc:  # noqa: BLE001 - the compressor's own errors name the tensor
        raise ConversionError(f"TFLite Micro weight compression failed: {str(exc).splitlines()[0]}") from exc
    for line in [*out.getvalue().splitlines(), *(str(w.message) for w in caught)]:
        if line.strip():
            log.debug("tflite-micro compressor: %s", line.strip())
    return result
