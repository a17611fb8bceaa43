"""The comparison: every variant's outputs against the Keras float model's (accuracy, argmax
agreement, logit differences, the classes that part most, int8 I/O facts), the run's facts the
diagnosis reasons from, and the result document (``edgekit.compare/1``, ``eval/compare.json``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, EdgekitError
from .diagnose import diagnose as _diagnose
from .variants import (FLOAT_STAGES, REFERENCE, _argmax, _float_stage, _keras_variant, _load_float, _Outputs, _read_json,
                       _read_yaml, _target_variants, _tflite_float_variant)

SCHEMA = "edgekit.compare/1"
TOP_CLASSES = 3


def compare(run_dir: Path, *, samples: int | None = None, threshold: float = 0.98) -> dict[str, Any]:
    """Run the test samples through every form of the model in ``run_dir`` and compare them.

    Args:
      run_dir: a finished run folder (``edgekit run ... --out DIR``): needs ``eval/eval.npz`` and
        a float stage (``stages/{pruned,student,teacher}/model.keras``); uses ``stages/qat``,
        ``targets/*`` and ``manifest.json`` / ``report.json`` / ``recipe.resolved.yaml`` when
        present.
      samples: compare on the first ``samples`` samples of ``eval.npz`` (default: all of them).
      threshold: agreement with Keras float (a share, 0..1) below which a quantized variant
        gets a ``diagnosis`` and the result is not ``ok``; a value above 1 diagnoses them all.

    Returns the result dict (schema ``edgekit.compare/1``, see :func:`render_compare`), also
    written to ``run_dir/eval/compare.json`` atomically (temp file + ``os.replace``).

    A variant that cannot be run (missing runtime, a TFLM crash) is kept with its ``error`` and
    null numbers, and makes the result not ``ok``; it does not stop the others.

    Raises:
      DataError: ``eval/eval.npz`` is missing or unreadable, or ``samples`` < 1.
      EdgekitError: ``run_dir`` is not a run folder or holds no float Keras model.
    """
    from ..ondevice import evaluate as ev

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgekitError(f"{run_dir} is not a folder; pass the --out folder of `edgekit run`")
    if samples is not None and samples < 1:
        raise DataError(f"samples must be >= 1, got {samples}")
    if not threshold >= 0.0:
        raise EdgekitError(f"threshold is a share of samples (0..1; above 1 diagnoses every "
                           f"quantized variant), got {threshold}")
    npz = run_dir / "eval" / "eval.npz"
    try:
        x, y, ref = ev.load_eval_data(str(npz))
        task, _ = ev.load_eval_task(str(npz))
    except ev.EvaluationError as exc:
        raise DataError(f"{exc}; run the pipeline at least up to the eval stage "
                        "(edgekit run RECIPE --out DIR --until eval)") from exc
    if task != "classification":
        raise EdgekitError(f"eval --compare diagnoses classifiers (argmax agreement); this run's task is {task}: "
                           "its targets' metrics and mean |difference| from the float model are in report.json")
    if samples is not None:
        x, y, ref = x[:samples], y[:samples], (ref[:samples] if ref is not None else None)
    y = y.argmax(1) if y.ndim == 2 else y
    y = y.astype(np.int64)
    manifest = _read_json(run_dir / "manifest.json") or {}
    stage_status = {k: v.get("status") for k, v in (manifest.get("stages") or {}).items()}
    float_stage = _float_stage(run_dir, manifest, stage_status)
    qat_used = (run_dir / "stages" / "qat" / "qat.weights.h5").is_file() and \
        stage_status.get("qat", "done") == "done"

    with tempfile.TemporaryDirectory(prefix="edgekit-compare-") as tmp:
        tmp_dir = Path(tmp)
        float_model = _load_float(run_dir, float_stage)
        variants = [_keras_variant(REFERENCE, f"stages/{float_stage}/model.keras",
                                   lambda: float_model, x, quantized=False)]
        # the float stages before the reference (teacher, student), so the loss of every stage shows
        earlier = [st for st in reversed(FLOAT_STAGES) if st != float_stage
                   and FLOAT_STAGES.index(st) > FLOAT_STAGES.index(float_stage)
                   and (run_dir / "stages" / st / "model.keras").is_file() and stage_status.get(st, "done") == "done"]
        for st in earlier:
            variants.append(_keras_variant(f"keras_{st}", f"stages/{st}/model.keras",
                                           lambda st=st: _load_float(run_dir, st), x, quantized=False))
        if qat_used:
            from .. import quantize

            variants.append(_keras_variant("keras_qat", "stages/qat", lambda: quantize.load(
                run_dir / "stages" / "qat"), x, quantized=True))
        variants.append(_tflite_float_variant(float_model, x, tmp_dir, float_stage))
        variants += _target_variants(run_dir, manifest, x, y, tmp_dir)

    ref_out = variants[0].outputs
    if ref_out is None:
        raise EdgekitError(f"the Keras float model of stage {float_stage} failed to run: "
                           f"{variants[0].error}")
    ref_pred = ev.predict_classes(ref_out)
    qat_pred = next((ev.predict_classes(v.outputs) for v in variants
                     if v.variant == "keras_qat" and v.outputs is not None), None)
    facts = _facts(run_dir, x, qat_used, manifest)
    by_name = {v.name: v for v in variants}
    rows = [_row(v, y, ref_out, ref_pred, qat_pred, ev) for v in variants]
    # in pipeline order: teacher, student, the reference float stage, QAT, then the files
    order = [f"keras_{st}" for st in reversed(FLOAT_STAGES)] + [REFERENCE]
    rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    teacher = next((r for r in rows if r["name"] == "keras_teacher"), None) or \
        (rows[0] if float_stage == "teacher" else None)
    for row in rows:
        row["stage"] = float_stage if row["name"] == REFERENCE else (
            row["name"][len("keras_"):] if row["name"].startswith("keras_") else None)
        t_acc = teacher["accuracy"] if teacher else None
        row["vs_teacher_points"] = (round((row["accuracy"] - t_acc) * 100, 4)
                                    if t_acc is not None and row["accuracy"] is not None else None)
    for row in rows:
        if row["quantized"] and row["error"] is None and row["agreement"] < threshold:
            row["diagnosis"] = _diagnose(row, rows, facts, by_name[row["name"]], ref_out,
                                         ref_pred, threshold)
    below = [r["name"] for r in rows
             if r["quantized"] and r["error"] is None and r["agreement"] < threshold]
    errors = [r["name"] for r in rows if r["error"] is not None]
    result = {
        "schema": SCHEMA,
        "run": manifest.get("recipe") or run_dir.name,
        "samples": int(len(x)),
        "threshold": float(threshold),
        "reference": {
            "variant": REFERENCE, "stage": float_stage,
            "file": f"stages/{float_stage}/model.keras",
            # share of samples where the Keras float argmax equals eval.npz's ``ref``; below 1
            # means eval.npz was written by another model (a stale run folder)
            "matches_eval_ref": (float(np.mean(ref_pred == ref)) if ref is not None else None),
        },
        "facts": facts,
        "variants": rows,
        "below_threshold": below,
        "errors": errors,
        "ok": not below and not errors,
    }
    from ..fitting import write_json

    write_json(run_dir / "eval" / "compare.json", result)
    return result


def _row(v: _Outputs, y: np.ndarray, ref_out: np.ndarray, ref_pred: np.ndarray,
         qat_pred: np.ndarray | None, ev) -> dict[str, Any]:
    row: dict[str, Any] = {"name": v.name, "variant": v.variant, "target": v.target,
                           "source": v.source, "runtime": v.runtime, "quantized": v.quantized,
                           "accuracy": None, "agreement": None, "disagreements": None,
                           "max_abs_logit_diff": None, "mean_abs_logit_diff": None,
                           "top_disagreement_classes": [], "error": v.error}
    row.update({k: val for k, val in v.extra.items() if k != "quant"})
    if v.outputs is None:
        return row
    if v.outputs.shape != ref_out.shape:
        row["error"] = (f"outputs have shape {v.outputs.shape[1:]} per batch, the Keras float "
                        f"model's {ref_out.shape[1:]}")
        return row
    pred = ev.predict_classes(v.outputs)
    diff = np.abs(v.outputs.astype(np.float64) - ref_out.astype(np.float64))
    row.update({
        "accuracy": float(np.mean(pred == y)),
        "agreement": float(np.mean(pred == ref_pred)),
        "disagreements": int(np.sum(pred != ref_pred)),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "top_disagreement_classes": _top_classes(ref_pred, pred),
    })
    if qat_pred is not None and v.variant not in (REFERENCE, "keras_qat") and v.quantized:
        row["agreement_with_keras_qat"] = float(np.mean(pred == qat_pred))
    if "quant" in v.extra:
        row["quantization"] = _quant_facts(v.extra["quant"], v.outputs, ref_out, ref_pred, pred)
    return row


def _top_classes(ref_pred: np.ndarray, pred: np.ndarray) -> list[dict[str, Any]]:
    """The classes (as the Keras float model predicts them) where the variant differs most."""
    differ = ref_pred != pred
    if not differ.any():
        return []
    classes, counts = np.unique(ref_pred[differ], return_counts=True)
    order = sorted(zip(classes.tolist(), counts.tolist()), key=lambda t: (-t[1], t[0]))[:TOP_CLASSES]
    rows = []
    for cls, count in order:
        became, n = np.unique(pred[differ & (ref_pred == cls)], return_counts=True)
        rows.append({"class": int(cls), "count": int(count), "of": int(np.sum(ref_pred == cls)),
                     "predicted_as": {str(int(b)): int(c) for b, c in zip(became, n)}})
    return rows


def _quant_facts(quant: dict, outputs: np.ndarray, ref_out: np.ndarray, ref_pred: np.ndarray,
                 pred: np.ndarray) -> dict[str, Any]:
    """Checked facts about int8 I/O: saturation, output resolution vs logit margins."""
    facts: dict[str, Any] = {"input": quant.get("input"), "output": quant.get("output")}
    q = quant.get("output")
    if q is None:
        return facts
    levels = np.rint(outputs.astype(np.float64) / q["scale"]) + q["zero_point"]
    at_min, at_max = levels <= q["qmin"], levels >= q["qmax"]
    top_at_max = at_max[np.arange(len(outputs)), _argmax(outputs)]
    ordered = np.sort(ref_out.astype(np.float64), axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if ref_out.shape[1] > 1 else np.abs(ordered[:, 0])
    low_margin = margin < q["scale"]
    differ = pred != ref_pred
    facts.update({
        "output_saturated_share": float(np.mean(at_min | at_max)),
        "output_at_min_share": float(np.mean(at_min)),
        "output_at_max_share": float(np.mean(at_max)),
        "top1_saturated_samples": int(top_at_max.sum()),
        "top1_tied_at_max_samples": int(np.sum(top_at_max & (at_max.sum(axis=1) >= 2))),
        "float_logit_range": [float(ref_out.min()), float(ref_out.max())],
        "low_margin_samples": int(low_margin.sum()),
        "disagreements_in_low_margin": int(np.sum(differ & low_margin)),
    })
    return facts


def _facts(run_dir: Path, x: np.ndarray, qat_used: bool, manifest: dict) -> dict[str, Any]:
    """Facts about the run the diagnosis reasons from; ``None`` where the run does not say."""
    recipe = _read_yaml(run_dir / "recipe.resolved.yaml") or {}
    report = _read_json(run_dir / "report.json") or {}
    dataset = report.get("dataset") or {}
    rep = ((recipe.get("convert") or {}).get("representative_samples"))
    train = dataset.get("train")
    return {
        "representative_samples": rep,
        "representative_samples_used": (min(rep, train) if rep and train else rep),
        "train_samples": train,
        "classes": dataset.get("classes"),
        "representative_class_balance": ("unknown: convert draws the representative set at "
                                         "random from the training split and does not record "
                                         "its labels"),
        "qat_used": qat_used,
        "qat_scheme": (_read_json(run_dir / "stages" / "qat" / "metrics.json") or {}).get("scheme")
        if qat_used else None,
        "x_range": [float(x.min()), float(x.max())],
    }
