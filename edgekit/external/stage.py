"""The student stage of a run whose ``student.model`` is an already converted float model.

Nothing is trained: :func:`take_given` copies the user's file into the stage folder (the file
itself is only read), checks it against the data, measures it on the test split in its own
runtime and, for an ``.onnx`` that rpi or mcu targets need as TFLite, converts the copy to a
float ``.tflite`` with onnx2tf and checks that conversion against the ONNX model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from .._io import write_json, write_text
from ..errors import ConversionError, RecipeError
from .model import check_fits, inspect_model
from .onnx import MIN_AGREEMENT, argmax_agreement, to_float_tflite

log = logging.getLogger(__name__)


def given_files(out_dir: Path, kind: str) -> tuple[Path, Path | None]:
    """Where a student stage keeps the given model's copy and the float .tflite made from it
    (None: the copy is the .tflite)."""
    return out_dir / f"model.{kind}", (out_dir / "model.tflite" if kind == "onnx" else None)


def check_given(path: Path, kind: str, data) -> None:
    """Check, without converting anything, that the float model at ``path`` loads and fits
    ``data`` (its input without the channel axis of size 1 when the model takes ``(features,)``).
    Raises :class:`RecipeError` naming the file (``edgekit recipes validate`` calls this)."""
    from .._keras3 import ShapeMismatch, shape_fit

    given = inspect_model(Path(path), kind)
    shape = tuple(data.input_shape)
    try:
        if shape_fit(given.input_shape, shape) == "squeeze":
            shape = shape[:-1]
    except ShapeMismatch:
        pass  # check_fits says both shapes
    check_fits(given, shape, num_classes=data.num_classes, task=data.task)


def take_given(path: Path, kind: str, data, *, out_dir: Path, needs_tflite: bool) -> tuple[list[Path], dict[str, Any]]:
    """Take the float model at ``path`` as the run's student. Returns the files written into
    ``out_dir`` (the copy, the onnx2tf .tflite when ``needs_tflite``, ``metrics.json``) and the
    stage metrics: ``given``, ``source`` (the user's path, sha256, size), params, sizes and the
    task's metrics measured on the test split. Raises :class:`RecipeError` for a model that does
    not fit the data and :class:`ConversionError` when onnx2tf fails or changes the model."""
    from .. import tasks
    from ..fitting import size_info

    start = time.perf_counter()
    path = Path(path)
    if data.reduction is not None:
        raise RecipeError(f"{path}: features: an already converted model takes the data as it is; remove features "
                          "(or fold the reduction into the model before converting it)")
    blob = path.read_bytes()  # read once: the copy is exactly what the sha256 names
    source = {"kind": kind, "path": str(path.resolve()), "sha256": hashlib.sha256(blob).hexdigest(),
              "size_bytes": len(blob)}
    copy, tflite_path = given_files(out_dir, kind)
    write_text(copy, blob)
    try:
        given = inspect_model(copy, kind)
    except RecipeError as exc:  # name the user's file, not the copy
        raise RecipeError(str(exc).replace(str(copy), str(path))) from None
    try:
        check_fits(given, data.input_shape, num_classes=data.num_classes, task=data.task)
    except RecipeError as exc:
        raise RecipeError(str(exc).replace(str(copy), str(path))) from None
    files = [copy]
    metrics: dict[str, Any] = {}
    if kind == "onnx" and needs_tflite:
        t0 = time.perf_counter()
        to_float_tflite(copy, tflite_path, input_name=given.input_name,
                        keep_input_layout=tuple(given.input_shape) == tuple(data.input_shape))
        tfl = inspect_model(tflite_path, "tflite")
        check_fits(tfl, data.input_shape, num_classes=data.num_classes, task=data.task)
        agree = argmax_agreement(given.predict(data.x_test), tfl.predict(data.x_test), data.task)
        if agree < MIN_AGREEMENT:
            raise ConversionError(f"onnx2tf changed the model: its .tflite agrees with {path.name} on {agree:.4f} of "
                                  f"{len(data.x_test)} test samples (< {MIN_AGREEMENT})")
        metrics["onnx2tf"] = {"agreement_with_onnx": agree, "size_bytes": tflite_path.stat().st_size,
                              "seconds": round(time.perf_counter() - t0, 3)}
        files.append(tflite_path)
    scored = tasks.get(data.task).stage_metrics(given, data)
    params = given.params
    metrics = {"given": True, "source": source, "params": params, "nonzero_params": given.nonzero_params,
               "sparsity": round(1 - given.nonzero_params / params, 6) if params else 0.0,
               **size_info(blob), "size_format": f"{kind}-float32 (given)", **scored, **metrics,
               "input_shape": list(data.input_shape), "measure_seconds": round(time.perf_counter() - start, 3)}
    files.append(write_json(out_dir / "metrics.json", {"stage": "student", **metrics}))
    log.info("student: given %s model %s (sha256 %s…), %s %s", kind, path.name, source["sha256"][:12],
             "accuracy" if scored.get("accuracy") is not None else "metrics",
             scored.get("accuracy") if scored.get("accuracy") is not None else scored.get("metrics"))
    return files, metrics
