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
import tempfile
from pathlib import Path

from .base import ConvertContext, TargetKindSpec, precision_artifacts, write_frontend, write_preprocess

FIX = ("no kernel for it: replace the layer that makes it with Conv2D/DepthwiseConv2D/Dense/pooling/"
       "Add/Concatenate/ReLU/Reshape, or drop the target")


class McuKind(TargetKindSpec):
    name = "mcu"
    ram_key = "arena_bytes"
    ram_label = "arena"
    higher_precision = "int16"
    integer_only = True

    def higher_precision_problem(self, ops):
        from ..mcu import TFLM_INT16X8_OPS

        # the selective model is quantized by litert-quantizer, which writes a Conv1D's EXPAND_DIMS as the
        # equivalent RESHAPE (edgekit.external.quantize.reshape_for_expand_dims); the built model is checked again
        missing = sorted({op for op in ops if ("RESHAPE" if op == "EXPAND_DIMS" else op) not in TFLM_INT16X8_OPS})
        if missing:
            return (f"TFLite Micro has no int16x8 kernel for {', '.join(missing)} (as the quantizer writes it); "
                    "the layer stays int8")
        return None

    def checks_ops(self) -> bool:
        return True

    def check(self, ops, profile):
        from ..mcu import TFLM_OPS
        from ..preflight import Problem

        return [Problem(op, "TFLite op", f"target {profile.name} (TFLite Micro)", FIX)
                for op in ops if op not in TFLM_OPS]

    def convert(self, source, profile, ctx: ConvertContext) -> tuple[list, list[Path]]:
        from .. import mcu
        from .._io import write_json
        from ..convert import Artifact, check_integer_only, preprocess_json
        from ..opcosts import io_quantization
        from ..tflite_file import strip_names

        cfg, out_dir = ctx.cfg, ctx.out_dir
        if cfg.mcu_scheme == "int16x8":  # post-training from the float model (the recipe refuses it with QAT)
            # TFLite Micro calls no signature and runs one sample per invoke (batch 1 folds shape ops)
            blob = source.tflite("full-int16x8", signature=False, batch=1)
            fmt = "tflite-full-int16x8"
        else:
            blob = source.tflite("full-int8", signature=False, batch=1)
            fmt = "tflite-full-int8"
        ops = mcu.model_ops(blob)
        mcu.check_ops(ops)
        info = check_integer_only(blob, require_int_io=True)
        lut = plain = None
        if cfg.mcu_weight_bits is not None:  # look-up-table weights, decoded by TFLite Micro (edgekit.weight_lut)
            from ..weight_lut import compress

            unpacked = blob
            blob, plain, lut = compress(blob, cfg.mcu_weight_bits)
            ops = mcu.model_ops(blob)
            mcu.check_ops(ops)
        p = out_dir / "model_int8.tflite"
        blob, names = self._write(blob, p, strip=cfg.mcu_strip_names)
        if lut is not None and names:  # what the tables did to the file as it ships
            lut.update(size_bytes_before=len(strip_names(unpacked)[0]), size_bytes_after=len(blob))
        arena = mcu.measure_arena(p, margin_fraction=cfg.arena_margin)
        h, cc = mcu.write_c_array(blob, out_dir, arena_bytes=arena, io=io_quantization(blob),
                                  preprocess=preprocess_json(ctx.data))
        extra = {"ops": ops, "float_ops": info["float_ops"], "arena": dataclasses.asdict(arena)}
        if names:
            extra["tensor_names"] = names
        if lut is not None:
            extra["weight_lut"] = lut
        front = self._frontend(ctx, cfg) if ctx.data.frontend is not None else None
        resolver_ops = sorted(set(ops) | set(front["ops"])) if front else ops
        res = mcu.write_op_resolver(resolver_ops, out_dir / "op_resolver.h")
        if front:
            extra["frontend"] = {k: v for k, v in front.items() if k != "files"}
        write_json(out_dir / "arena.json", extra["arena"])
        art = Artifact(p, fmt, "tflite_micro", extra)
        files = [p, *([out_dir / names["file"]] if names else []), h, cc, res, out_dir / "arena.json",
                 *write_preprocess(ctx), *(front["files"] if front else [])]
        more = self._precision(source, ctx, art, plain if lut and lut["applied"] else None)
        for a in more:  # the selective model: the primary's checks, its own arena, C array and op resolver
            # measured with its names (edgekit.selective); shipped as the primary is
            sel_blob, sel_names = self._write(a.path.read_bytes(), a.path, strip=cfg.mcu_strip_names)
            if sel_names:
                files.append(a.path.parent / sel_names["file"])
                a.extra["tensor_names"] = sel_names
            sel_ops = mcu.model_ops(sel_blob)
            mcu.check_ops(sel_ops)
            sel_arena = mcu.measure_arena(a.path, margin_fraction=cfg.arena_margin)
            sub = out_dir / a.path.stem  # model_selective/: model_data.h/.cc and op_resolver.h of this model
            sub.mkdir(exist_ok=True)
            files += [a.path, *mcu.write_c_array(sel_blob, sub, arena_bytes=sel_arena, io=io_quantization(sel_blob),
                                                 preprocess=preprocess_json(ctx.data)),
                      mcu.write_op_resolver(sorted(set(sel_ops) | set(front["ops"])) if front else sel_ops,
                                            sub / "op_resolver.h")]
            a.extra.update(ops=sel_ops, float_ops=[], arena=dataclasses.asdict(sel_arena))
        return [art, *more], files

    @staticmethod
    def _write(blob: bytes, path: Path, *, strip: bool) -> tuple[bytes, dict | None]:
        """Write the model ``blob`` to ``path`` as it ships; with ``strip``, without the names
        TFLite Micro never reads (:func:`edgekit.tflite_file.strip_names`), which go to the sidecar
        beside it (``model_int8.tensor_names.json``, read back by
        :func:`edgekit.tflite_file.read_named` for edgekit's per-layer error). Returns the bytes
        written and ``{"file": sidecar name, "bytes_saved"}`` (None without ``strip``)."""
        from .._io import write_json, write_text
        from ..tflite_file import names_path, strip_names

        names = None
        if strip:
            stripped, taken = strip_names(blob)
            names = {"file": write_json(names_path(path), taken).name, "bytes_saved": len(blob) - len(stripped)}
            blob = stripped
        write_text(path, blob)
        return blob, names

    def _precision(self, source, ctx: ConvertContext, art, plain: bytes | None) -> list:
        """:func:`precision_artifacts` of the shipped model; for a look-up-table model measured on
        ``plain``, the same clustered weights stored plainly (the same int8 arithmetic: LiteRT,
        which the per-layer error runs, has no DECODE kernel)."""
        from ..convert import Artifact

        if plain is None:
            return precision_artifacts(source, self, ctx, art)
        with tempfile.TemporaryDirectory(prefix="edgekit-lut-") as tmp:
            twin = Artifact(Path(tmp) / "model_int8_plain_weights.tflite", art.format, art.runtime, {})
            twin.path.write_bytes(plain)
            more = precision_artifacts(source, self, ctx, twin)  # selective is refused with LUT weights
        for key in ("per_layer_error", "per_layer_error_reason"):
            if key in twin.extra:
                art.extra[key] = twin.extra[key]
        if art.extra.get("per_layer_error"):
            art.extra["per_layer_error"]["measured_on"] = ("the same clustered weights stored without look-up "
                                                           "tables (LiteRT has no DECODE kernel)")
        return more

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
