"""Already converted float models as input: a ``.tflite`` or ``.onnx`` file the user trained and
converted elsewhere, taken as it is and compressed for each target kind.

What each target kind gets from a given float model (file names as for Keras runs,
:mod:`edgekit.convert`):

==========  ===========================================  =============================================
target      from a float ``.tflite``                     from a float ``.onnx``
==========  ===========================================  =============================================
mobile      ``model_int8.tflite`` (int8, float I/O),     ``model_int8.onnx`` (ONNX Runtime static QDQ
            ``model_fp16.tflite``, ``model.onnx``        int8, calibrated), ``model.onnx`` (the given
            (tf2onnx from the .tflite)                   model, measured as it is)
rpi         ``model_int8.tflite`` + ``bundle/``          the same, from the float .tflite onnx2tf makes
mcu         ``model_int8.tflite`` (full int8 or int16x8  the same, from the float .tflite onnx2tf makes
            I/O), C array, op resolver, measured arena
==========  ===========================================  =============================================

Post-training quantization of a ``.tflite`` is done by litert-quantizer (:mod:`.quantize`),
calibrated on samples of the recipe's training split; ``convert.ptq`` adds dynamic-range, fp16
and int16x8 variants as for Keras runs. ONNX goes through ONNX Runtime's ``quantize_static``
and, for targets that run TFLite, through onnx2tf in its own virtualenv (:mod:`.onnx`). The
user's file is only read; its sha256 is recorded as the run's ``source``.

Example::

    from edgekit.external import inspect_model
    given = inspect_model(Path("my_model.tflite"))
    given.input_shape, given.params       # (8, 8, 1), 1290
    logits = given.predict(x_test)        # run in LiteRT, batch 1
"""

from __future__ import annotations

from .model import GivenModel, check_fits, inspect_model


def __getattr__(name: str):
    # GivenSource and take_given import edgekit.convert (TensorFlow, lazily); load them on use
    if name == "GivenSource":
        from .source import GivenSource

        return GivenSource
    if name == "take_given":
        from .stage import take_given

        return take_given
    raise AttributeError(name)


__all__ = ["GivenModel", "GivenSource", "check_fits", "inspect_model", "take_given"]
