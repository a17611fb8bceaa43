"""Post-training quantization of a float ``.tflite`` with litert-quantizer (ai-edge-quantizer).

One entry, :func:`quantize_tflite`, with the conversion modes of :func:`edgekit.convert.to_tflite`:

==============  ===================================================================================
mode            what litert-quantizer is asked for
==============  ===================================================================================
int8            static int8 weights and activations (min/max calibrated), float32 input and output
                (the model's input and output are left unquantized: QUANTIZE/DEQUANTIZE at the edges)
full-int8       the same with int8 input and output (TensorFlow Lite Micro)
int16x8         int16 activations, int8 weights, float32 input and output
full-int16x8    the same with int16 input and output (TensorFlow Lite Micro, ``mcu_scheme: int16x8``)
dynamic         int8 weights, float activations quantized at run time (dynamic range)
fp16            float16 weights (float casting), float compute
==============  ===================================================================================

EXPAND_DIMS (how the TFLite converter writes a Keras ``Conv1D``) is replaced by the equivalent
RESHAPE first (:func:`reshape_for_expand_dims`): litert-quantizer has no EXPAND_DIMS and would
leave it float. Static modes need ``calibration``: float32 samples of the training split (batch 1 each). An op
litert-quantizer cannot quantize stays float; the caller checks the result (an "int8" model that
kept float ops is reported, and refused for MCUs, by :func:`edgekit.convert.check_integer_only`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable

import numpy as np

from ..errors import ConversionError

log = logging.getLogger(__name__)

MODES = ("int8", "full-int8", "int16x8", "full-int16x8", "dynamic", "fp16")
STATIC_MODES = ("int8", "full-int8", "int16x8", "full-int16x8")


def quantization_recipe(mode: str, keep: dict[str, str] | None = None) -> list:
    """The litert-quantizer recipe (a list of rules) for ``mode`` (see the module docstring).

    ``keep``: layer-scoped exceptions of a static mode, ``{regex: "int16" | "float"}``: the ops whose
    output tensor name the regex finds get int16 activations (int8 weights) or stay float; the
    quantizer puts QUANTIZE/DEQUANTIZE ops where the precision changes. A later rule overrides an
    earlier one for the ops both match."""
    from litert_quantizer import algorithm_manager, qtyping, recipe_manager

    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r} (modes: {', '.join(MODES)})")
    alg, op = algorithm_manager.AlgorithmName, qtyping.TFLOperationName
    rm = recipe_manager.RecipeManager()
    if mode in STATIC_MODES:
        rm.add_static_config(".*", op.ALL_SUPPORTED, activation_num_bits=16 if "int16" in mode else 8,
                             weight_num_bits=8)
        for regex, precision in (keep or {}).items():
            if precision == "int16":
                rm.add_static_config(regex, op.ALL_SUPPORTED, activation_num_bits=16, weight_num_bits=8)
            elif precision == "float":
                rm.add_quantization_config(regex, op.ALL_SUPPORTED, algorithm_key=alg.NO_QUANTIZE)
            else:
                raise ValueError(f"keep: unknown precision {precision!r} (int16 or float)")
        if not mode.startswith("full-"):
            # keep the model's own float input and output: the quantizer then adds QUANTIZE after
            # the input and DEQUANTIZE before the output
            for edge in (op.INPUT, op.OUTPUT):
                rm.add_quantization_config(".*", edge, algorithm_key=alg.NO_QUANTIZE)
    elif mode == "dynamic":
        rm.add_dynamic_config(".*", op.ALL_SUPPORTED, num_bits=8)
    else:  # fp16
        rm.add_weight_only_config(".*", op.ALL_SUPPORTED, num_bits=16, algorithm_key=alg.FLOAT_CASTING)
    return rm.get_quantization_recipe()


def quantize_tflite(blob: bytes, mode: str, *, signature: str | None = None, signature_input: str | None = None,
                    calibration: Iterable[np.ndarray] | None = None, threads: int = 1,
                    keep: dict[str, str] | None = None, qsvs: dict | None = None) -> bytes:
    """Quantize the float TFLite model ``blob``; returns the quantized flatbuffer.

    ``calibration``: float32 samples with the batch dimension (``x[i:i+1]``), required for the
    static modes; ``signature`` / ``signature_input``: the model's signature key and the name of
    its input in that signature (:class:`~edgekit.external.model.GivenModel` has both); ``keep``: the
    layer-scoped exceptions of :func:`quantization_recipe`; ``qsvs``: activation ranges from an
    earlier :func:`calibrate_tflite` of the same ``blob`` (then ``calibration`` is not needed: a
    search over layer-scoped recipes calibrates once). The ranges are always taken with the
    recipe without ``keep``, so every tensor has one (litert-quantizer's calibrator skips some
    tensors around a layer kept float, then refuses to quantize). Raises :class:`ConversionError`
    with litert-quantizer's reason when it cannot quantize the model.
    """
    from litert_quantizer import quantizer

    if keep and mode not in STATIC_MODES:
        raise ValueError(f"keep: layer-scoped precision needs a static mode ({', '.join(STATIC_MODES)}), not {mode!r}")
    recipe = quantization_recipe(mode, keep)
    blob, replaced = reshape_for_expand_dims(blob)
    if replaced:
        log.info("litert-quantizer: %d EXPAND_DIMS replaced by the equivalent RESHAPE (it has no int8 EXPAND_DIMS)",
                 replaced)
    try:
        with _quiet():
            q = quantizer.Quantizer(bytearray(blob))
            q.load_quantization_recipe(recipe)
            calibrated = qsvs
            if q.need_calibration and calibrated is None:
                calibrated = calibrate_tflite(blob, mode, signature=signature, signature_input=signature_input,
                                              calibration=calibration, threads=threads)
            result = q.quantize(calibrated, enable_progress_report=False)
    except ConversionError:
        raise
    except Exception as exc:  # litert-quantizer raises ValueError/RuntimeError/KeyError with its reason
        text = str(exc).strip()
        raise ConversionError(f"litert-quantizer ({mode}) failed: {type(exc).__name__}: "
                              f"{text.splitlines()[0] if text else ''}") from exc
    out = bytes(result.quantized_model)
    log.info("litert-quantizer %s: %d -> %d bytes", mode, len(blob), len(out))
    return out


def calibrate_tflite(blob: bytes, mode: str, *, signature: str | None, signature_input: str | None,
                     calibration: Iterable[np.ndarray] | None, threads: int = 1) -> dict:
    """The activation ranges (QSVs) of the float TFLite model ``blob`` for the static ``mode``, on
    ``calibration`` samples (see :func:`quantize_tflite`); ConversionError without samples or signature."""
    samples = [np.asarray(s, np.float32) for s in (calibration or [])]
    if not samples:
        raise ConversionError(f"{mode} quantization needs calibration samples from the training split")
    if signature is None or signature_input is None:
        raise ConversionError("the model has no signature; litert-quantizer calibrates a model through "
                              "its signature (convert it with a signature, e.g. from a Keras model or "
                              "tf.function)")
    blob, _ = reshape_for_expand_dims(blob)
    try:
        with _quiet():
            return _calibrate(blob, quantization_recipe(mode), {signature: [{signature_input: s} for s in samples]},
                              threads=threads)
    except Exception as exc:  # litert-quantizer's own exception types
        text = str(exc).strip()
        raise ConversionError(f"litert-quantizer calibration ({mode}) failed: {type(exc).__name__}: "
                              f"{text.splitlines()[0] if text else ''}") from exc


def _global_min_max(qsv: dict, new: dict) -> dict:
    """Merge one calibration sample's ranges into the ranges so far: the min and max over all samples."""
    if not qsv:
        return new
    return {**qsv, "min": np.minimum(qsv["min"], new["min"]), "max": np.maximum(qsv["max"], new["max"])}


def _calibrate(blob: bytes, recipe: list, data: dict, *, threads: int) -> dict:
    """Activation ranges of ``blob`` on ``data``: the min and max over all calibration samples, as
    the TFLite converter's post-training calibration takes them.

    litert-quantizer's own default merges the samples with a moving average (factor 0.95) of
    each sample's min and max, which on batch-1 samples is close to a typical sample's range: on
    MNIST-1D it calibrated the input to [-2.10, 1.76] where the samples span [-4.19, 4.40], and a
    PyTorch 1-D CNN lost 17 points of accuracy in int8 (91.6 % -> 74.5 %).
    """
    from litert_quantizer import calibrator, recipe_manager

    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(bytearray(blob), num_threads=threads, qsv_update_func=_global_min_max)
    calib.calibrate(data, rm)
    return calib.get_model_qsvs()


@contextlib.contextmanager
def _quiet():
    """Keep litert-quantizer's calibration progress bar (tqdm, on sys.stderr) and its interpreter's
    debugging-mode warning out of edgekit's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


def reshape_for_expand_dims(blob: bytes) -> tuple[bytes, int]:
    """``blob`` with every ``EXPAND_DIMS`` replaced by the ``RESHAPE`` to the same shape; returns
    the model and how many ops were replaced.

    The TFLite converter writes a Keras ``Conv1D`` as EXPAND_DIMS -> CONV_2D -> RESHAPE, and
    litert-quantizer 0.11.0 has no EXPAND_DIMS: it leaves that op float, so the model cannot be
    fully integer (TFLite Micro). With a static output shape (at most one dynamic dimension, the
    batch) the two ops compute the same tensor, which RESHAPE, an op it quantizes, takes over. An
    EXPAND_DIMS whose output has more than one dynamic dimension is left as it is.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(blob))
    codes = [fbu.get_builtin_code_from_operator_code(c) for c in model.operatorCodes]
    expand = [i for i, c in enumerate(codes) if c == fb.BuiltinOperator.EXPAND_DIMS]
    if not expand:
        return blob, 0
    reshape = next((i for i, c in enumerate(codes) if c == fb.BuiltinOperator.RESHAPE), None)
    if reshape is None:
        code = fb.OperatorCodeT()
        code.builtinCode = fb.BuiltinOperator.RESHAPE
        code.deprecatedBuiltinCode = fb.BuiltinOperator.RESHAPE
        code.version = 1
        model.operatorCodes.append(code)
        reshape = len(model.operatorCodes) - 1
    replaced = 0
    for sg in model.subgraphs:
        for op in sg.operators:
            if op.opcodeIndex not in expand:
                continue
            out = sg.tensors[op.outputs[0]]
            shape = [int(d) for d in (out.shapeSignature if out.shapeSignature is not None else out.shape)]
            if sum(d < 0 for d in shape) > 1:
                continue
            buf = fb.BufferT()
            buf.data = np.asarray(shape, np.int32).tobytes()
            model.buffers.append(buf)
            t = fb.TensorT()
            t.shape = np.asarray([len(shape)], np.int32)
            t.type = fb.TensorType.INT32
            t.buffer = len(model.buffers) - 1
            t.name = (out.name or b"expand_dims") + b"/reshape_shape" if isinstance(out.name, bytes) else \
                f"{out.name or 'expand_dims'}/reshape_shape"
            sg.tensors.append(t)
            opts = fb.ReshapeOptionsT()
            opts.newShape = list(shape)
            op.opcodeIndex = reshape
            op.inputs = np.asarray([op.inputs[0], len(sg.tensors) - 1], np.int32)
            op.builtinOptionsType = fb.BuiltinOptions.ReshapeOptions
            op.builtinOptions = opts
            replaced += 1
    return bytes(fbu.convert_object_to_bytearray(model)), replaced
