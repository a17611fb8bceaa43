"""Parity of a finished run: the same test samples through every form the model took.

A run leaves the model in several forms: the last float Keras stage, the QAT Keras model, and
per target TFLite files (int8 with float I/O, fp16, full int8 for TensorFlow Lite Micro) and
ONNX. :func:`compare` runs the same samples from ``eval/eval.npz`` through each of them and
compares every output with the Keras float model's: accuracy, agreement (share of equal
argmax), the largest and mean absolute output (logit) difference after dequantization, and the
classes where the predictions part most. When a quantized form agrees less than ``threshold``
it adds a ``diagnosis``: likely causes derived from facts it checks in the run (size of the
representative set, output saturation, int8 output resolution, input range, QAT or not), each
with what to try.

What runs where: Keras models in this process (``tf_keras``); ``.tflite`` files in LiteRT
(``ai_edge_litert``) and ``.onnx`` files in ONNX Runtime, in this process, through the
standalone evaluator's :func:`~edgekit.ondevice.evaluate.predict_outputs` (same input
quantization and output dequantization as the on-device evaluator); the TFLite Micro model in a
child Python running the evaluator's command line with ``--dump-outputs``, with the arena the
run measured, so a TFLM crash cannot take the caller down. A float TFLite model is converted
from the Keras float model into a temp folder (it is not an artifact of the run).

Example::

    >>> from edgekit.parity import compare, render_compare
    >>> result = compare(Path("runs/quickstart"))           # writes runs/quickstart/eval/compare.json
    >>> print(render_compare(result))

The package, by concern: :mod:`.variants` runs every form of the model, :mod:`.comparison`
compares them and writes the result, :mod:`.diagnose` reasons about low agreement, and
:mod:`.render` writes the Markdown table.
"""

from __future__ import annotations

# the private names stay importable from here for the tests and callers that used parity.py
from .comparison import SCHEMA, TOP_CLASSES, _quant_facts, _row, _top_classes, compare  # noqa: F401
from .diagnose import SATURATION_SHARE
from .diagnose import diagnose as _diagnose  # noqa: F401
from .render import render_compare
from .variants import (FLOAT_STAGES, HOST_TFLITE_RUNTIME, MICRO_TIMEOUT_S, REFERENCE, _artifacts,  # noqa: F401
                       _float_stage, _io_quantization, _read_json)

__all__ = ["FLOAT_STAGES", "HOST_TFLITE_RUNTIME", "MICRO_TIMEOUT_S", "REFERENCE", "SATURATION_SHARE", "SCHEMA",
           "TOP_CLASSES", "compare", "render_compare"]
