"""Target kind ``mcu``: a microcontroller running TensorFlow Lite Micro.

Ships ``model_int8.tflite`` (full integer, int8 I/O; with ``convert.mcu_scheme: int16x8`` the
same file name holds the int16x8 model), ``model_data.h/.cc`` (the aligned C array and the
measured arena), ``op_resolver.h`` and ``arena.json``; with an audio front end (``data.frontend``)
also ``frontend.tflite``/``frontend.json`` and its C array ``frontend_data.h/.cc`` (``g_frontend``,
``kFrontendArenaSize``), its ops registered in the same ``op_resolver.h``. Every op must have a TFLite Micro kernel:
checked before training (preflight) and again before any file is written. RAM budget: the
tensor arena, measured by :func:`edgekit.mcu.measure_arena`. The toolchain is :mod:`edgekit.mcu`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .base import ConvertContext, TargetKindSpec, write_frontend, write_preprocess

FIX = ("no kernel for it: replace the layer that makes it with Conv2D/DepthwiseConv2D/Dense/pooling/"
       "Add/Concatenate/ReLU/Reshape, or drop the target")


class McuKind(TargetKindSpec):
    name = "mcu"
    ram_key = "arena_bytes"
    ram_label = "arena"

    def checks_ops(self) -> bool:
        return True

    def check(self, ops, profile):
        from ..mcu import TFLM_OPS
        from ..preflight import Problem

        return [Problem(op, "TFLite op", f"target {profile.name} (TFLite Micro)", FIX)
                for op in ops if op not in TFLM_OPS]

    def convert(self, source, profile, ctx: ConvertContext) -> tuple[list, list[Path]]:
        from .. import mcu
        from .._io import write_json, write_text
        from ..convert import Artifact, check_integer_only, preprocess_json
        from ..opcosts import io_quantization

        cfg, out_dir = ctx.cfg, ctx.out_dir
        if cfg.mcu_scheme == "int16x8":  # post-training from the float model (the recipe refuses it with QAT)
            blob = source.tflite("full-int16x8")
            fmt = "tflite-full-int16x8"
        else:
            blob = source.tflite("full-int8")
            fmt = "tflite-full-int8"
        ops = mcu.model_ops(blob)
        mcu.check_ops(ops)
        info = check_integer_only(blob, require_int_io=True)
        p = write_text(out_dir / "model_int8.tflite", blob)
        arena = mcu.measure_arena(p, margin_fraction=cfg.arena_margin)
        h, cc = mcu.write_c_array(blob, out_dir, arena_bytes=arena, io=io_quantization(blob),
                                  preprocess=preprocess_json(ctx.data))
        extra = {"ops": ops, "float_ops": info["float_ops"], "arena": dataclasses.asdict(arena)}
        front = self._frontend(ctx, cfg) if ctx.data.frontend is not None else None
        resolver_ops = sorted(set(ops) | set(front["ops"])) if front else ops
        res = mcu.write_op_resolver(resolver_ops, out_dir / "op_resolver.h")
        if front:
            extra["frontend"] = {k: v for k, v in front.items() if k != "files"}
        write_json(out_dir / "arena.json", extra["arena"])
        art = Artifact(p, fmt, "tflite_micro", extra)
        return [art], [p, h, cc, res, out_dir / "arena.json", *write_preprocess(ctx), *(front["files"] if front else [])]

    @staticmethod
    def _frontend(ctx: ConvertContext, cfg) -> dict:
        """The audio front end beside the model: ``frontend.tflite``/``.json`` and its C array
        ``frontend_data.h/.cc`` (``g_frontend``, ``kFrontendArenaSize``: its own measured arena; the
        firmware runs it per 30 ms frame into the model's input). Its ops join op_resolver.h, so
        one resolver serves both interpreters."""
        from .. import mcu
        from .._io import write_text
        from ..audio import frontend_tflite

        blob = frontend_tflite(ctx.data.frontend)
        ops = mcu.model_ops(blob)
        mcu.check_ops(ops)
        path = write_text(ctx.out_dir / "frontend.tflite", blob)  # measured here; write_frontend adds the json
        arena = mcu.measure_arena(path, margin_fraction=cfg.arena_margin)
        files = write_frontend(ctx, arena=dataclasses.asdict(arena))
        h, cc = mcu.write_c_array(blob, ctx.out_dir, name="g_frontend", arena_bytes=arena, header="frontend_data.h",
                                  source="frontend_data.cc", arena_name="kFrontendArenaSize")
        return {"ops": ops, "size_bytes": len(blob), "arena": dataclasses.asdict(arena), "files": [*files, h, cc]}
