"""Report merging: a target's entry in ``report.json`` with the device's measurements, the host's
kept under ``host_measurement`` and the budget checked again; and the one-line summary of a
device measurement."""

from __future__ import annotations

from typing import Any


def summary_line(target: str, result: dict[str, Any]) -> str:
    """One line for a device measurement: the task's main metric (accuracy, MAE or ROC-AUC, "n/a"
    when the evaluator could not measure it), p50 latency and the budget verdict."""
    from ..report.fmt import fmt_num as num

    lat = (result.get("latency_ms") or {}).get("p50") if isinstance(result.get("latency_ms"), dict) else None
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
    found = {k: result.get(k) if result.get(k) is not None else metrics.get(k) for k in ("accuracy", "mae", "roc_auc")}
    metric = next(((k, v) for k, v in found.items() if v is not None), ("accuracy", None))
    budget = result.get("budget") or {}
    return (f"{target} on {result.get('measured_on')} ({(result.get('device') or {}).get('machine')}): "
            f"{metric[0]} {num(metric[1], '.4f')}, p50 {num(lat, '.3f')} ms, budget "
            f"{'ok' if budget.get('ok') else 'OVER'}")


# The evaluator's keys that describe the artifact or the bundle rather than a measurement: the
# report keeps its own values ("format" is "tflite-int8" there, "model" the target's file name).
_NOT_MERGED = ("model", "format", "target", "model_sha256", "device")


def merge_entry(entry: dict[str, Any], result: dict[str, Any], profile) -> dict[str, Any]:
    """The report's target entry with the device's measurements; the host's move to
    ``host_measurement`` (kept from the first deploy when deploying again). The budget is checked
    again, now with the latency measured on the device."""
    from ..evaluate import check_budget

    measured = {k: v for k, v in result.items() if k not in _NOT_MERGED}
    host = entry.get("host_measurement")
    if host is None:
        host = {k: entry[k] for k in (*measured, "budget") if k in entry}
    new = {**entry, **measured, "device": result.get("device"), "host_measurement": host}
    new["budget"] = check_budget(new, profile.budget, profile.kind)
    try:  # the report's per-budget breakdown, when this version of edgekit.report has one
        from ..report.view import budget_checks
    except ImportError:
        budget_checks = None
    if budget_checks is not None:
        new["budget"]["checks"] = budget_checks(new)
    return new
