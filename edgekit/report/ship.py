"""What to put on the device: per target the exact files, their sha256, what they need, and one
recommended artifact (the smallest that passes the budgets and the quality gate).

:func:`ship_plan` reads the run directory once, when the report is built; ``report.json``
stores the result as ``targets[].ship`` (and the recommendation per target under the top-level
``ship``), so the pages render it from ``report.json`` alone. No TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._io import sha256_path
from .view import _checks, quality_gate

# what each file of a target kind is for, in the order a reader needs them
_MCU_FILES = (("model_data.cc", "the model as a 16-byte aligned C array: compile it into the firmware"),
              ("model_data.h", "declares the array, kTensorArenaSize, the input/output scale and zero point "
                               "and the preprocessing constants"),
              ("op_resolver.h", "registers exactly the TFLite Micro kernels the model (and its audio front end) uses"))
_PREPROCESS = ("preprocess.json", "how to normalize a raw input before quantizing it")
# the audio front end (data.frontend), shipped by every target of a run that has one
_FRONTEND_FILES = (("frontend.tflite", "the audio front end: one 30 ms frame (480 samples at 16 kHz) -> that frame's "
                                       "features, 49 frames per 1 s clip, run before the model"),
                   ("frontend.json", "how to frame the audio for frontend.tflite, its constants, size, sha256 and "
                                     "tolerance against the training features"),
                   ("labels.txt", "the class names, one a line, class 0 first"))
_MCU_FRONTEND_FILES = (("frontend_data.cc", "the audio front end as a 16-byte aligned C array (g_frontend)"),
                       ("frontend_data.h", "declares g_frontend and kFrontendArenaSize, its own measured arena"))

RUNTIME_NEEDS = {
    "tflite_micro": "TensorFlow Lite Micro (the interpreter and the kernels in op_resolver.h, linked into the "
                    "firmware)",
    "ai_edge_litert": "LiteRT (pip install ai-edge-litert) or any TFLite interpreter",
    "tflite_runtime": "tflite-runtime (numpy < 2) or LiteRT",
    "onnxruntime": "ONNX Runtime",
}

FLASH_NOTE_MCU = ("flash figures are the model array alone: the TensorFlow Lite Micro runtime (interpreter and "
                  "kernels) and the application come on top")


def _file(run_dir: Path, path: Path, role: str) -> dict[str, Any]:
    return {"path": str(path.relative_to(run_dir)), "bytes": path.stat().st_size, "sha256": sha256_path(path),
            "role": role}


def _passes(entry: dict, target: dict, gate: dict | None) -> tuple[bool, list[str]]:
    """Whether an artifact fits the target's budgets and the quality gate; the reasons it does not."""
    b = target.get("budget") or {}
    why = []
    if entry is target:
        why = [c["budget"] for c in _checks(target) if c["status"] == "fail"]
    else:  # a variant: its own size and memory against the target's limits
        mem = entry.get("arena_bytes") if target.get("kind") == "mcu" else entry.get("rss_growth_bytes")
        for name, got, limit in (("flash", entry.get("size_bytes"), b.get("flash_bytes")),
                                 ("RAM", mem, b.get("ram_bytes"))):
            if limit is not None and got is not None and got > limit:
                why.append(name)
        if gate is not None and gate.get("ok") is False:
            why.append("quality")
    return not why, why


def ship_plan(report: dict, run_dir: Path, *, max_accuracy_drop: float | None = None) -> dict[str, dict]:
    """Per target name: ``artifacts`` (every measured artifact: format, files with path relative to
    the run directory, bytes, sha256 and role; runtime, arena, input and output dtype/scale/zero
    point, whether it passes) and ``recommended`` (the smallest passing artifact, or None with
    ``why_none``). Files that are not there (a run directory moved without them) are left out."""
    run_dir = Path(run_dir)
    task = report.get("task") or "classification"
    teacher = next((s for s in report["stages"] if s["name"] == "teacher"), None)
    plans = {}
    for t in report["targets"]:
        folder = run_dir / "targets" / t["name"]
        entries = [t, *[{**v, "kind": t["kind"]} for v in t.get("variants", [])]]
        arts = []
        for e in entries:
            gate = e.get("quality") or (quality_gate(task, teacher, e, max_accuracy_drop)
                                        if max_accuracy_drop is not None else None)
            rt = (e.get("runtime") or {})
            model = folder / str(e.get("file") or "")
            files = []
            if t["kind"] == "mcu":
                # a variant's C array and op resolver lie in a folder named after its model (model_selective/)
                c_dir = folder if e is t else folder / model.stem
                files = [_file(run_dir, c_dir / n, role) for n, role in _MCU_FILES if (c_dir / n).is_file()]
                if model.is_file():
                    files.append(_file(run_dir, model, "the same model as a .tflite file (not needed on the device)"))
            elif model.is_file():
                files.append(_file(run_dir, model, f"the model, run by {rt.get('name')}"))
            if (folder / _PREPROCESS[0]).is_file():
                files.append(_file(run_dir, folder / _PREPROCESS[0], _PREPROCESS[1]))
            front = _FRONTEND_FILES + (_MCU_FRONTEND_FILES if t["kind"] == "mcu" else ())
            files += [_file(run_dir, folder / n, role) for n, role in front if (folder / n).is_file()]
            ok, why = _passes(e if e is not t else t, t, gate)
            arts.append({"format": e.get("format"), "files": files,
                         "size_bytes": e.get("size_bytes"),
                         "runtime": rt.get("name"), "runtime_version": rt.get("version"),
                         "needs": RUNTIME_NEEDS.get(rt.get("name"), rt.get("name")),
                         "arena_bytes": e.get("arena_bytes") if t["kind"] == "mcu" else None,
                         "input": e.get("input"), "output": e.get("output"),
                         "passes": ok, "fails": why})
        passing = sorted((a for a in arts if a["passes"] and a["size_bytes"] is not None),
                         key=lambda a: a["size_bytes"])
        rec = passing[0] if passing else None
        plans[t["name"]] = {
            "recommended": None if rec is None else {"format": rec["format"], "size_bytes": rec["size_bytes"],
                                                     "files": [f["path"] for f in rec["files"]
                                                               if "not needed" not in f["role"]]},
            "why_none": None if rec else "no artifact passes: " + "; ".join(
                f"{a['format']} fails {', '.join(a['fails'])}" for a in arts),
            "flash_note": FLASH_NOTE_MCU if t["kind"] == "mcu" else None,
            "artifacts": arts,
        }
    return plans
