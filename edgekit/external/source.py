"""A given float model as the source :func:`edgekit.convert.convert_target` makes targets from.

:class:`GivenSource` offers what :class:`edgekit.convert.KerasSource` offers (``tflite(mode)``,
``onnx(out_dir)``, ``onnx_only``), so every target kind is written, checked and measured by the
same code as in a Keras run: the op checks, the TFLite Micro arena search, the C array and the
Pi bundle are :mod:`edgekit.convert`'s and :mod:`edgekit.mcu`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._io import write_text
from ..convert import Artifact, representative
from ..errors import ConversionError
from .model import GivenModel
from .onnx import MIN_AGREEMENT, argmax_agreement, from_tflite, qdq_int8
from .quantize import quantize_tflite

log = logging.getLogger(__name__)


class GivenSource:
    """Targets from a given float model.

    ``given``: the model as the user gave it (a run keeps a copy in its student stage);
    ``float_tflite``: the float ``.tflite`` to quantize (``given`` itself for a ``.tflite``,
    the onnx2tf conversion for an ``.onnx``; None when no target needs one). ``data``, ``cfg``
    and ``seed`` choose the calibration samples (:func:`edgekit.convert.representative`).
    """

    def __init__(self, given: GivenModel, float_tflite: GivenModel | None, data, cfg, seed: int, *,
                 threads: int = 1):
        self.given, self.float_tflite = given, float_tflite
        self.data, self.cfg, self.seed, self.threads = data, cfg, seed, threads

    @property
    def onnx_only(self) -> bool:
        """A given ``.onnx`` is measured in ONNX Runtime for mobile targets (float and static int8)."""
        return self.given.kind == "onnx"

    def calibration(self) -> list[np.ndarray]:
        """The calibration samples (batch 1 each) drawn from the training split."""
        return [batch[0] for batch in representative(self.data, self.cfg.representative_samples, self.seed)()]

    def tflite(self, mode: str, *, signature: bool = True,  # noqa: ARG002 - the given file's signatures are kept
               batch: int | None = None) -> bytes:  # noqa: ARG002 - and its batch size
        """The float .tflite quantized by litert-quantizer in ``mode`` (:mod:`.quantize`), with the
        signatures and the input batch size the given file has."""
        src = self.float_tflite
        if src is None:
            raise ConversionError(f"{self.given.path.name}: this target needs a float .tflite and none was made "
                                  "from the .onnx (onnx2tf runs when the recipe has an rpi or mcu target)")
        return quantize_tflite(src.path.read_bytes(), mode, signature=src.signature,
                               signature_input=src.signature_input, calibration=self.calibration(),
                               threads=self.threads)

    def onnx(self, out_dir: Path) -> list[Artifact]:
        """ONNX artifacts: for a given ``.onnx``, ``model_int8.onnx`` (ONNX Runtime static QDQ
        int8, the target's primary model) and ``model.onnx`` (the given model as it is); for a
        given ``.tflite``, ``model.onnx`` converted by tf2onnx and checked against the .tflite."""
        if self.given.kind == "onnx":
            q = write_text(out_dir / "model_int8.onnx",
                           qdq_int8(self.given.path, self.given.input_name, self.calibration()))
            f = write_text(out_dir / "model.onnx", self.given.path.read_bytes())
            return [Artifact(q, "onnx-int8-qdq", "onnxruntime", {"quantizer": "onnxruntime.quantize_static"}),
                    Artifact(f, "onnx", "onnxruntime", {"given": True})]
        blob = from_tflite(self.given.path)
        x = self.data.x_test
        import onnxruntime as ort

        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        got = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
        want = self.given.predict(x)
        agree = argmax_agreement(want, got, self.data.task)
        check = {"onnx_agreement_with_source": agree, "onnx_max_abs_diff": float(np.max(np.abs(
            got.reshape(len(x), -1).astype(np.float64) - want.reshape(len(x), -1)))), "onnx_samples": int(len(x))}
        if agree < MIN_AGREEMENT:
            raise ConversionError(f"tf2onnx's ONNX version of {self.given.path.name} disagrees with it: agreement "
                                  f"{agree:.4f} on {len(x)} test samples < {MIN_AGREEMENT}")
        return [Artifact(write_text(out_dir / "model.onnx", blob), "onnx", "onnxruntime", check)]
