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

Static modes need ``calibration``: float32 samples of the training split (batch 1 each). An op
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


def quantization_recipe(mode: str) -> list:
    """The litert-quantizer recipe (a list of rules) for ``mode`` (see the module docstring)."""
    from litert_quantizer import algorithm_manager, qtyping, recipe_manager

    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r} (modes: {', '.join(MODES)})")
    alg, op = algorithm_manager.AlgorithmName, qtyping.TFLOperationName
    rm = recipe_manager.RecipeManager()
    if mode in STATIC_MODES:
        rm.add_static_config(".*", op.ALL_SUPPORTED, activation_num_bits=16 if "int16" in mode else 8,
                             weight_num_bits=8)
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
                    calibration: Iterable[np.ndarray] | None = None, threads: int = 1) -> bytes:
    """Quantize the float TFLite model ``blob``; returns the quantized flatbuffer.

    ``calibration``: float32 samples with the batch dimension (``x[i:i+1]``), required for the
    static modes; ``signature`` / ``signature_input``: the model's signature key and the name of
    its input in that signature (:class:`~edgekit.external.model.GivenModel` has both). Raises :class:`ConversionError` with
    litert-quantizer's reason when it cannot quantize the model.
    """
    from litert_quantizer import quantizer

    recipe = quantization_recipe(mode)
    try:
        with _quiet():
            q = quantizer.Quantizer(bytearray(blob))
            q.load_quantization_recipe(recipe)
            calibrated = None
            if q.need_calibration:
                samples = [np.asarray(s, np.float32) for s in (calibration or [])]
                if not samples:
                    raise ConversionError(f"{mode} quantization needs calibration samples from the training split")
                if signature is None or signature_input is None:
                    raise ConversionError("the model has no signature; litert-quantizer calibrates a model through "
                                          "its signature (convert it with a signature, e.g. from a Keras model or "
                                          "tf.function)")
                calibrated = q.calibrate({signature: [{signature_input: s} for s in samples]}, num_threads=threads)
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


@contextlib.contextmanager
def _quiet():
    """Keep litert-quantizer's calibration progress bar (tqdm, on sys.stderr) and its interpreter's
    debugging-mode warning out of edgekit's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        with contextlib.redirect_stderr(io.StringIO()):
            yield
