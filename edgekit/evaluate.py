"""Stage 6 (host side): run each target's model in its own runtime and check its budget.

The measuring is done by the standalone evaluator (``edgekit/ondevice/evaluate.py``), the same
file that ships to devices. Here it runs in a subprocess of this Python, so a runtime that
crashes (TFLite Micro with too small an arena) cannot take the pipeline down with it.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .convert import EVALUATOR, Artifact, TargetArtifacts
from .errors import DeviceError
from .recipe import Budget, EvaluateConfig
from .targets import get as target_kind

log = logging.getLogger(__name__)


def run_evaluator(model: Path, data: Path, *, runtime: str, cfg: EvaluateConfig,
                  arena_bytes: int | None = None, timeout_s: float = 900) -> dict[str, Any]:
    """Run ``evaluate.py`` on ``model`` with ``data`` (eval.npz); returns its JSON.

    The evaluator runs with ``--no-probe``: it is already a child process, and a model that
    crashes the runtime (a negative return code: killed by a signal) is reported here as
    "model file X crashed the interpreter (signal N)".

    Raises :class:`DeviceError` (exit 7) with the evaluator's last error line when it fails.
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-eval-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(EVALUATOR), "--model", str(model), "--data", str(data),
               "--runtime", runtime, "--warmup", str(cfg.warmup), "--runs", str(cfg.runs),
               "--threads", str(cfg.threads), "--out", str(out), "--no-probe"]
        if arena_bytes is not None:
            cmd += ["--arena-bytes", str(arena_bytes)]
        log.debug("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{model.name}: evaluator timed out after {timeout_s:.0f} s") from None
        if proc.returncode < 0:
            sig = -proc.returncode
            try:
                name = f" {signal.Signals(sig).name}"
            except ValueError:
                name = ""
            raise DeviceError(f"model file {model} crashed the interpreter ({runtime}, signal {sig}{name}): the "
                              "file is corrupt or not a model this runtime can run; re-create it (edgekit run "
                              "--resume redoes the conversion when its files are gone)")
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise DeviceError(f"{model.name}: evaluator failed ({runtime}): {last}")
        return json.loads(out.read_text())


def check_budget(result: dict[str, Any], budget: Budget, kind: str) -> dict[str, Any]:
    """Compare measured numbers with the profile's budget.

    Flash: the model file size. RAM: the number the kind's spec names (``ram_key`` in
    :mod:`edgekit.targets`: the tensor arena for MCUs, the RSS growth caused by loading the
    model elsewhere). Latency: against the p50 measured on the device itself when
    there is one (a host latency says nothing about a Pi), else against the calibrated estimate
    (``latency_estimate_ms``, :mod:`edgekit.estimate`) when the model lies inside the estimate's
    calibration range (``estimate_in_range``), else it is listed as unchecked;
    ``latency_basis`` says which.
    """
    violations, unchecked = [], []
    size = result.get("size_bytes")
    if budget.flash_bytes is not None:
        if size is None:
            unchecked.append("flash_bytes: model size not measured")
        elif size > budget.flash_bytes:
            violations.append(f"flash: model {size} bytes > budget {budget.flash_bytes} bytes")
    spec = target_kind(kind)
    ram = result.get(spec.ram_key)
    if budget.ram_bytes is not None:
        if ram is None:
            unchecked.append("ram_bytes: not measured")
        elif ram > budget.ram_bytes:
            violations.append(f"ram: {spec.ram_label} {ram} bytes > budget {budget.ram_bytes} bytes")
    basis = None
    if budget.latency_ms is not None:
        on = str(result.get("measured_on", ""))
        p50 = (result.get("latency_ms") or {}).get("p50")
        estimate = result.get("latency_estimate_ms")
        if on and not on.startswith(("host", "emulated")) and p50 is not None:  # a host or an emulator is no device
            basis = "measured"
            if p50 > budget.latency_ms:
                violations.append(f"latency: p50 {p50:.3f} ms > budget {budget.latency_ms} ms (measured on {on})")
        elif estimate is not None and result.get("estimate_in_range") is False:
            cal = (result.get("estimate_basis") or {}).get("calibration_set") or "its calibration set"
            unchecked.append(f"latency_ms: measured on {on or 'nothing'}, not on the device; the estimate lies outside "
                             f"the range of {cal} ({result.get('estimate_range_reason')}), so it gives no verdict")
        elif estimate is not None:
            basis = "estimate"
            board = (result.get("estimate_basis") or {}).get("board", "a calibrated board")
            if estimate > budget.latency_ms:
                violations.append(f"latency: estimated {estimate:.3g} ms > budget {budget.latency_ms} ms "
                                  f"(estimate calibrated on {board}; not measured on the device)")
        else:
            unchecked.append(f"latency_ms: measured on {on or 'nothing'}, not on the device, and no estimate")
    return {**budget.model_dump(), "ok": not violations, "violations": violations, "unchecked": unchecked,
            "latency_basis": basis}


def evaluate_target(target: TargetArtifacts, eval_npz: Path, cfg: EvaluateConfig) -> dict[str, Any]:
    """Measure every artifact of a target; the first is the target's entry, the rest ``variants``."""
    entries = [_measure(a, eval_npz, cfg) for a in target.artifacts]
    main = entries[0]
    p = target.profile
    main = {"name": p.name, "kind": p.kind, "board": p.board, **main, **latency_estimate(target.artifacts[0], p)}
    main["budget"] = check_budget(main, p.budget, p.kind)
    if len(entries) > 1:
        main["variants"] = entries[1:]
    return main


def latency_estimate(artifact: Artifact, profile) -> dict[str, Any]:
    """The calibrated latency estimate for the profile's board (:mod:`edgekit.estimate`), kept
    apart from anything measured: ``latency_estimate_ms`` (None with a reason when the board has
    no calibration or the model no priced ops) and ``estimate_basis``."""
    if artifact.path.suffix != ".tflite":
        return {"latency_estimate_ms": None, "estimate_basis": {"reason": "estimates cover .tflite models only"}}
    from .errors import EdgekitError
    from .estimate import estimate_model

    try:
        est = estimate_model(artifact.path, profile)
    except EdgekitError as exc:
        return {"latency_estimate_ms": None, "estimate_basis": {"reason": str(exc)}}
    basis = dict(est.get("estimate_basis") or {})
    if est.get("latency_estimate_ms") is None:
        basis["reason"] = est.get("reason")
    return {"latency_estimate_ms": est.get("latency_estimate_ms"), "estimate_basis": basis,
            "estimate_in_range": est.get("estimate_in_range"), "estimate_range_reason": est.get("estimate_range_reason")}


def host_runtime(runtime: str) -> tuple[str, str | None]:
    """The runtime to measure with on this host: the profile's own when it is installed; for a
    TFLite interpreter that is not (tflite-runtime needs numpy<2, beside numpy 2 here), LiteRT
    runs the same file, and the note says so. The bundle still names the profile's runtime."""
    import importlib.util

    module = {"tflite_runtime": "tflite_runtime", "ai_edge_litert": "ai_edge_litert"}.get(runtime)
    if module is None or importlib.util.find_spec(module) is not None:
        return runtime, None
    return "ai_edge_litert", (f"{runtime} is not installed on this host; measured with ai_edge_litert "
                              f"(the same .tflite file); the device bundle uses {runtime}")


def _measure(a: Artifact, eval_npz: Path, cfg: EvaluateConfig) -> dict[str, Any]:
    arena = (a.extra.get("arena") or {}).get("recommended_bytes")
    runtime, note = host_runtime(a.runtime)
    res = run_evaluator(a.path, eval_npz, runtime=runtime, cfg=cfg, arena_bytes=arena)
    if note:
        res["runtime_note"] = note
    res["format"] = a.format
    res["file"] = a.path.name
    for key in ("ops", "float_ops", "onnx_agreement_with_keras", "onnx_agreement_with_source", "onnx_max_abs_diff",
                "onnx_samples", "quantizer", "frontend", "per_layer_error", "per_layer_error_reason",
                "selective_precision", "selective_layers", "weight_lut", "tensor_names"):
        if key in a.extra:
            res[key] = a.extra[key]
    if "arena" in a.extra:
        res["arena"] = a.extra["arena"]
    return res
