"""Target kind ``mobile``: a phone app's interpreter (LiteRT, ONNX Runtime).

Ships the profile's ``formats`` (``model_int8.tflite`` int8 with float I/O, ``model_fp16.tflite``,
``model_full_int8.tflite``, ``model.onnx``) plus one ``model_<mode>.tflite`` per
``convert.ptq`` mode; a given float ``.onnx`` is shipped as ONNX only (its static int8 version
and the model as given); with an audio front end (``data.frontend``) also ``frontend.tflite`` and
``frontend.json``. RAM budget: the RSS growth of loading the model.
"""

from __future__ import annotations

from pathlib import Path

from .base import ConvertContext, TargetKindSpec, precision_artifacts, write_frontend, write_preprocess


def tflite_formats(source, profile, ctx: ConvertContext) -> list:
    """The artifacts of ``profile.formats`` and of the recipe's ``convert.ptq`` modes, written
    into ``ctx.out_dir`` (shared by the kinds that run an interpreter: mobile, rpi)."""
    from .._io import write_text
    from ..convert import Artifact, check_integer_only

    out_dir = ctx.out_dir
    arts = []
    for fmt in profile.formats:
        if fmt == "tflite-int8":
            blob = source.tflite("int8")
            info = check_integer_only(blob, require_int_io=False)
            p = write_text(out_dir / "model_int8.tflite", blob)
            arts.append(Artifact(p, fmt, profile.runtime, {"ops": info["ops"], "float_ops": info["float_ops"]}))
        elif fmt == "tflite-fp16":
            p = write_text(out_dir / "model_fp16.tflite", source.tflite("fp16"))
            arts.append(Artifact(p, fmt, profile.runtime))
        elif fmt == "onnx":
            arts += source.onnx(out_dir)
        elif fmt == "tflite-full-int8":
            blob = source.tflite("full-int8")
            check_integer_only(blob, require_int_io=True)
            arts.append(Artifact(write_text(out_dir / "model_full_int8.tflite", blob), fmt, profile.runtime))
    for mode in ctx.cfg.ptq:
        p = write_text(out_dir / f"model_{mode}.tflite", source.tflite(mode))
        arts.append(Artifact(p, f"tflite-{mode}", profile.runtime, {"ptq": mode}))
    int8 = next((a for a in arts if a.format in ("tflite-int8", "tflite-full-int8")), None)
    if int8 is not None:
        from . import get

        arts += precision_artifacts(source, get(profile.kind), ctx, int8)
    return arts


class MobileKind(TargetKindSpec):
    name = "mobile"
    takes_given_onnx = True

    def convert(self, source, profile, ctx: ConvertContext) -> tuple[list, list[Path]]:
        arts = source.onnx(ctx.out_dir) if source.onnx_only else tflite_formats(source, profile, ctx)
        return arts, [a.path for a in arts] + write_preprocess(ctx) + write_frontend(ctx)
