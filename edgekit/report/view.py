"""What a report shows, as formatted tables and facts: the one place both renderers read.

Every function here takes the ``report.json`` dict and returns strings already formatted by
:mod:`edgekit.report.fmt`. ``markdown.py`` and ``html.py`` only lay these out, so a number is
formatted once and reads the same in ``report.md`` and ``report.html``. Nothing here touches
the run directory: a report renders the same from its ``report.json`` anywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .fmt import (DASH, fmt_bytes, fmt_delta, fmt_drop, fmt_int, fmt_latency, fmt_latency_pcts, fmt_ms, fmt_ms_unit, fmt_pct,
                  fmt_points, fmt_ratio, fmt_seconds, fmt_share, fmt_text)

BUDGET_NAME = {"flash": "flash", "ram": "RAM", "latency": "latency", "quality": "quality"}
STATUS_WORD = {"pass": "pass", "fail": "FAIL", "unchecked": "unchecked", "none": "no budget"}


@dataclasses.dataclass(frozen=True)
class Table:
    """A rendered table: header, rows of formatted cells, and hints for layout.

    ``numeric[i]``: column ``i`` holds numbers (right-aligned in HTML). ``keys[r]``: what row
    ``r`` is about (a stage or target name). ``status[r][i]``: ``pass``/``fail``/``unchecked``/
    ``none`` for a budget cell, else ``None``. ``variant[r]``: the row is a secondary format of
    the target above it.
    """

    id: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    keys: tuple[str, ...]
    status: tuple[tuple[str | None, ...], ...] = ()
    variant: tuple[bool, ...] = ()
    words: tuple[tuple[str | None, ...], ...] = ()

    def word(self, r: int, i: int) -> str | None:
        """The verdict word of a budget cell (``pass, estimated`` for an estimated latency), else None."""
        st = self.status[r][i] if self.status else None
        if st is None:
            return None
        return (self.words[r][i] if self.words else None) or STATUS_WORD[st]

    def cell(self, r: int, i: int) -> str:
        """Cell text as the Markdown shows it: budget cells lead with their verdict word."""
        word = self.word(r, i)
        text = self.rows[r][i]
        if word is None:
            return text
        return word if text == DASH else f"{word}: {text}"


# ----------------------------------------------------------------------------- the task's main metric


def _fmt_auc(v) -> str:
    return DASH if v is None else f"{v:.3f}"


@dataclasses.dataclass(frozen=True)
class MainMetric:
    """The number a report ranks models by: accuracy (classification), MAE (regression) or
    ROC-AUC (anomaly), how it is formatted, and which way is better."""

    task: str
    key: str                              # the key in an entry's ``metrics``
    label: str                            # column and axis label
    higher_is_better: bool
    fmt: Callable[[Any], str]
    fmt_delta: Callable[[Any], str]
    share: bool                           # a value in [0, 1] shown as a percentage

    def value(self, entry: dict) -> float | None:
        """The metric of a stage or target entry of ``report.json`` (None when not measured)."""
        if self.task == "classification":
            return entry.get("accuracy")
        return (entry.get("metrics") or {}).get(self.key)


MAIN_METRICS = {
    "classification": MainMetric("classification", "accuracy", "accuracy", True, fmt_pct, fmt_points, True),
    "regression": MainMetric("regression", "mae", "MAE", False, fmt_text, fmt_delta, False),
    "anomaly": MainMetric("anomaly", "roc_auc", "ROC-AUC", True, _fmt_auc, lambda v: fmt_delta(v, 2), False),
}

# every metric of a task, in the order the metrics table shows them: (key, column label, formatter)
TASK_METRICS = {
    "regression": (("mae", "MAE", fmt_text), ("rmse", "RMSE", fmt_text), ("r2", "R²", fmt_text),
                   ("bias", "bias", fmt_text)),
    "anomaly": (("roc_auc", "ROC-AUC", _fmt_auc), ("precision", "precision", fmt_pct), ("recall", "recall", fmt_pct),
                ("f1", "F1", fmt_pct), ("threshold", "threshold", fmt_text)),
}


def main_metric(report: dict) -> MainMetric:
    """The :class:`MainMetric` of the report's ``task`` (reports without one are classification)."""
    return MAIN_METRICS[report.get("task") or "classification"]


def metric_note(report: dict) -> str:
    """What the main metric is, in one sentence for the report's intro."""
    task = report.get("task") or "classification"
    if task == "regression":
        return ("MAE (mean absolute error, in the label's units; lower is better), RMSE, R² and bias (mean "
                "prediction − mean label) are on the test split")
    if task == "anomaly":
        return ("ROC-AUC of the anomaly score (the autoencoder's mean squared reconstruction error) is on the test "
                "split; precision and recall are at the threshold chosen on the validation split")
    return "Accuracy is top-1 on the test split"


# ----------------------------------------------------------------------------- budget


_VIOLATION_PREFIX = {"flash": "flash:", "ram": "ram:", "latency": "latency:", "quality": "quality:"}
_UNCHECKED_PREFIX = {"flash": "flash_bytes:", "ram": "ram_bytes:", "latency": "latency_ms:", "quality": "quality:"}


# ----------------------------------------------------------------------------- the quality gate


QUALITY_UNIT = {"classification": "pt", "anomaly": "pt", "regression": "%"}


def quality_gate(task: str, teacher: dict | None, entry: dict, max_drop: float) -> dict[str, Any]:
    """How much of the teacher's quality ``entry`` (a target or variant) lost, against ``max_drop``.

    The loss is in points of the task's main metric: accuracy percentage points
    (classification), ROC-AUC points ×100 (anomaly), or the MAE increase in percent of the
    teacher's MAE (regression: relative, so one gate reads the same for any label scale).
    ``ok`` is None when either metric was not measured. ``report.json`` stores it as
    ``quality`` on every target and variant when the recipe has a ``quality:`` gate.
    """
    m = MAIN_METRICS[task]
    t, v = (m.value(teacher) if teacher else None), m.value(entry)
    drop = None
    if None not in (t, v):
        if task == "regression":
            drop = (v - t) / t * 100 if t else None
        else:
            drop = (t - v) * 100
    unit = QUALITY_UNIT[task]
    return {"metric": m.label, "teacher": t, "value": v, "drop": None if drop is None else round(drop, 4),
            "max_drop": max_drop, "unit": unit, "ok": None if drop is None else drop <= max_drop + 1e-9}


def apply_quality_gate(target: dict, gate: dict) -> None:
    """Record the gate's verdict in ``target['budget']`` like a budget's: a ``quality:`` violation
    (the target's ``ok`` turns false: exit 6) or an unchecked note; idempotent."""
    b = target.setdefault("budget", {"violations": [], "unchecked": [], "ok": True})
    b["max_accuracy_drop"] = gate["max_drop"]
    b["violations"] = [v for v in b.get("violations", []) if not v.startswith("quality:")]
    b["unchecked"] = [u for u in b.get("unchecked", []) if not u.startswith("quality:")]
    if gate["ok"] is False:
        b["violations"].append(f"quality: {gate['metric']} lost {fmt_drop(gate['drop'], gate['unit'])} against the "
                               f"teacher > max_accuracy_drop {fmt_drop(gate['max_drop'], gate['unit'])}")
    elif gate["ok"] is None:
        b["unchecked"].append(f"quality: {gate['metric']} of the target or the teacher not measured")
    b["ok"] = not b["violations"]


def latency_source(entry: dict) -> dict[str, Any]:
    """Where the latencies of a target or variant entry come from; ``report.json`` stores it as
    ``latency_source`` on every target and variant.

    ``kind``: ``device`` (measured on the device itself: ``on`` names it, e.g. ``rpi:pi4``),
    ``host`` (measured on the machine that ran edgekit; never a device verdict), ``emulated``
    (an emulated device; never a verdict either) or ``none``; ``label``: the words every
    rendered latency carries (``measured on rpi:pi4``, ``host x86_64, not the device``).
    ``estimate``: the calibrated estimate for the target's board, or None: its ``ms``, ``label``
    (``estimated``; ``estimated ±N %`` only where held-out points support a 90 % band),
    ``in_range`` (false: the model lies outside what the calibration set was fitted on, and the
    estimate gives no verdict; ``out_of_range`` says why), ``band_pct`` and ``no_band`` (why no
    band is stated). ``verdict_from``: what the latency budget was checked against
    (``device``, ``estimate`` or None when it was not checked).
    """
    lat = entry.get("latency_ms") or {}
    on = str(entry.get("measured_on") or "")
    if lat.get("p50") is None:
        kind, label = "none", "not measured"
    elif on.startswith("host"):
        kind, label = "host", f"host {on[5:] or on}, not the device".replace("host host", "host")
    elif on.startswith("emulated"):
        kind, label = "emulated", f"{on}, not the device"
    else:
        kind, label = "device", f"measured on {on}"
    est = None
    if entry.get("latency_estimate_ms") is not None:
        basis = entry.get("estimate_basis") or {}
        fit = basis.get("fit") or {}
        in_range = entry.get("estimate_in_range") is not False
        band = fit.get("band") or {}
        pct = band.get("pct") if in_range else None
        if not in_range:
            elabel = "estimated outside its calibration range, no verdict"
        elif pct is not None:
            elabel = f"estimated ±{pct:.0f} %"
        else:
            elabel = "estimated"
        est = {"ms": entry["latency_estimate_ms"], "label": elabel, "board": basis.get("board"),
               "calibration_set": basis.get("calibration_set"), "in_range": in_range,
               "out_of_range": entry.get("estimate_range_reason") if not in_range else None,
               "band_pct": pct,
               "no_band": None if pct is not None else (fit.get("band_note") or "no error band: too few held-out "
                                                        "points support one")}
    basis_used = (entry.get("budget") or {}).get("latency_basis")
    verdict_from = {"measured": "device", "estimate": "estimate"}.get(basis_used)
    return {"kind": kind, "on": on or None, "label": label, "decides_budget": kind == "device",
            "estimate": est, "verdict_from": verdict_from}


def budget_checks(target: dict) -> list[dict[str, Any]]:
    """One entry per budget of ``target``: what was measured against which limit, and the verdict.

    The verdict is the evaluator's (``budget.violations`` / ``budget.unchecked``); this adds the
    measured number, the share of the budget it uses and the headroom, so a reader sees by how
    much a budget was met or missed. RAM is the tensor arena on an MCU and the RSS growth caused
    by loading the model elsewhere (the rule of :func:`edgekit.evaluate.check_budget`). The
    latency check carries ``source`` (the label of :func:`latency_source`: where the number
    comes from) and ``estimated`` (its verdict rests on an estimate, not a measurement).
    ``report.json`` stores the result under ``targets[].budget.checks``.
    """
    b = target.get("budget") or {}
    mcu = target.get("kind") == "mcu"
    lat = target.get("latency_ms") or {}
    src = latency_source(target)
    rows = [("flash", "model file", b.get("flash_bytes"), target.get("size_bytes"), "bytes", None),
            ("ram", "tensor arena" if mcu else "RSS growth on load", b.get("ram_bytes"),
             target.get("arena_bytes") if mcu else target.get("rss_growth_bytes"), "bytes", None),
            ("latency", f"p50 on {target.get('measured_on') or 'nothing'}", b.get("latency_ms"), lat.get("p50"), "ms",
             src["label"])]
    gate = target.get("quality") or {}
    if b.get("max_accuracy_drop") is not None:
        rows.append(("quality", f"{gate.get('metric', 'main metric')} lost against the teacher",
                     b["max_accuracy_drop"], gate.get("drop"), gate.get("unit", "pt"), None))
    estimated = b.get("latency_basis") == "estimate"
    if estimated:  # checked against the calibrated estimate, not a host time
        board = (target.get("estimate_basis") or {}).get("board") or "a calibrated board"
        rows[2] = ("latency", f"estimated p50 ({board})", b.get("latency_ms"), target.get("latency_estimate_ms"), "ms",
                   (src["estimate"] or {}).get("label", "estimated"))
    elif src["kind"] != "device" and src["estimate"] is not None and not src["estimate"]["in_range"]:
        rows[2] = ("latency", "estimated p50, outside its calibration range", b.get("latency_ms"),
                   src["estimate"]["ms"], "ms", src["estimate"]["label"])
    checks = []
    for name, what, limit, measured, unit, source in rows:
        note = None
        if limit is None:
            status = "none"
        elif any(v.startswith(_VIOLATION_PREFIX[name]) for v in b.get("violations", [])):
            status = "fail"
        else:
            unchecked = [u for u in b.get("unchecked", []) if u.startswith(_UNCHECKED_PREFIX[name])]
            status = "unchecked" if unchecked else "pass"
            if unchecked:
                note = unchecked[0].split(":", 1)[1].strip()
        share = float(f"{measured / limit:.6g}") if limit and measured is not None and name != "quality" else None
        check = {"budget": name, "what": what, "unit": unit, "measured": measured, "limit": limit,
                 "share": share, "status": status, "note": note}
        if name == "latency":
            check["source"] = source
            check["estimated"] = estimated and status in ("pass", "fail")
        checks.append(check)
    return checks


def check_word(c: dict) -> str:
    """The verdict word of one budget check: ``pass``, ``FAIL``, ``unchecked``, ``no budget``, and
    ``pass, estimated`` / ``FAIL, estimated`` for a latency verdict that rests on an estimate."""
    word = STATUS_WORD[c["status"]]
    return f"{word}, estimated" if c.get("estimated") else word


def _checks(target: dict) -> list[dict]:
    # recomputed, not read from budget.checks: a report.json written before the latency checks
    # carried their source still renders every latency with it
    return budget_checks(target)


def _amount(v, unit: str, source: str | None = None) -> str:
    if unit == "bytes":
        return fmt_bytes(v)
    if unit in ("pt", "%"):
        return fmt_drop(v, unit)
    return fmt_latency(v, source) if source else fmt_ms_unit(v)


def check_text(c: dict) -> str:
    """``8.2 KiB of 977 KiB = 0.8 %, 969 KiB left`` (or ``… over``); the limit alone when unmeasured."""
    if c["limit"] is None:
        return DASH
    if c["measured"] is None:
        return f"not measured, limit {_amount(c['limit'], c['unit'])}"
    if c.get("budget") == "quality":  # "lost 10.8 pt of at most 1.0 pt, 9.8 pt over"
        text = f"lost {_amount(c['measured'], c['unit'])} of at most {_amount(c['limit'], c['unit'])}"
        diff = c["limit"] - c["measured"]
        return f"{text}, {_amount(abs(diff), c['unit'])} {'left' if diff >= 0 else 'over'}"
    text = (f"{_amount(c['measured'], c['unit'], c.get('source'))} of {_amount(c['limit'], c['unit'])} = "
            f"{fmt_share(c['share'])}")
    if c["status"] == "unchecked":
        return text
    diff = c["limit"] - c["measured"]
    return f"{text}, {_amount(abs(diff), c['unit'])} {'left' if diff >= 0 else 'over'}"


def latency_shown(target: dict) -> tuple[float | None, str]:
    """The latency a verdict rests on and where it comes from: ``(ms, source)``.

    ``source`` is the label of :func:`latency_source`: ``measured on <device>``, ``estimated``
    (``estimated ±N %`` where held-out points support a band; ``estimated outside its
    calibration range, no verdict``) or ``host <arch>, not the device`` for a time measured on the
    machine that ran edgekit, which never decides a budget.
    """
    src = latency_source(target)
    p50 = (target.get("latency_ms") or {}).get("p50")
    est = src["estimate"]
    if est is not None and (src["verdict_from"] == "estimate" or (src["kind"] != "device" and not est["in_range"]
                                                                  and src["verdict_from"] is None)):
        return est["ms"], est["label"]
    return p50, src["label"]


def terminal_verdict(target: dict) -> str:
    """``pass``, ``pass, estimated`` (a latency budget met only by an estimate), ``OVER BUDGET: flash``,
    ``OVER BUDGET: latency (estimated)``, ..."""
    checks = _checks(target)
    failed = [f"{BUDGET_NAME[c['budget']]}{' (estimated)' if c.get('estimated') else ''}"
              for c in checks if c["status"] == "fail"]
    if failed:
        return "OVER BUDGET: " + ", ".join(failed)
    estimated = any(c.get("estimated") for c in checks)
    unchecked = [BUDGET_NAME[c["budget"]] for c in checks if c["status"] == "unchecked"]
    text = "pass, estimated" if estimated else "pass"
    return text + (f" ({', '.join(unchecked)} unchecked)" if unchecked else "")


def budget_bar_rows(target: dict) -> list[dict[str, Any]]:
    """Flash and RAM of ``target`` for the budget plot: label, share of the budget, status, text."""
    return [{"label": {"flash": "flash", "ram": "RAM"}[c["budget"]], "share": c["share"], "status": c["status"],
             "text": check_text(c)} for c in _checks(target) if c["budget"] in ("flash", "ram")]


def budget_table(report: dict) -> Table:
    """Per target: flash, RAM and latency against their budgets (and the quality gate, when the
    recipe has one), the verdict, and why unchecked."""
    rows, status, keys, words = [], [], [], []
    gated = any((t.get("budget") or {}).get("max_accuracy_drop") is not None for t in report["targets"])
    cols = ("flash", "ram", "latency", "quality") if gated else ("flash", "ram", "latency")
    for t in report["targets"]:
        checks = {c["budget"]: c for c in _checks(t)}
        checks.setdefault("quality", {"budget": "quality", "status": "none", "limit": None, "measured": None})
        notes = ([f"RAM = {checks['ram']['what']}"] if checks["ram"]["status"] != "none" else [])
        if t.get("kind") == "mcu" and checks["flash"]["status"] != "none":
            notes.insert(0, "flash = the model array alone, not the TFLite Micro runtime")
        notes += [f"{BUDGET_NAME[n]} unchecked: {c['note']}" for n, c in checks.items() if c["status"] == "unchecked"]
        est = latency_source(t)["estimate"]
        if est is not None and est.get("no_band") and checks["latency"].get("estimated"):
            notes.append(f"latency estimated ({est['board'] or est['calibration_set']}); {est['no_band']}")
        ok = (t.get("budget") or {}).get("ok")
        rows.append((t["name"], *(check_text(checks[n]) for n in cols),
                     DASH if ok is None else target_verdict_word(t), "; ".join(notes) or DASH))
        status.append((None, *(checks[n]["status"] for n in cols), None, None))
        words.append((None, *(check_word(checks[n]) for n in cols), None, None))
        keys.append(t["name"])
    header = ("target", "flash", "RAM", "latency (p50)", *(("quality vs teacher",) if gated else ()), "verdict", "notes")
    return Table("budgets", header, tuple(rows), (False,) * len(header), tuple(keys), tuple(status),
                 words=tuple(words))


def target_verdict_word(target: dict) -> str:
    """The budget verdict of a whole target: ``pass``, ``FAIL``, or either with ``, estimated`` when
    its latency verdict rests on an estimate."""
    ok = (target.get("budget") or {}).get("ok")
    if ok is None:
        return DASH
    word = "pass" if ok else "FAIL"
    lat = next((c for c in _checks(target) if c["budget"] == "latency"), {})
    return f"{word}, estimated" if lat.get("estimated") else word


# ----------------------------------------------------------------------------- tables


def stage_table(report: dict) -> Table:
    """Stages in order: params, non-zero params, sparsity, TFLite size raw/gzip, the main metric
    (accuracy, MAE or ROC-AUC) and its change against the teacher, seconds."""
    m = main_metric(report)
    teacher = next((s for s in report["stages"] if s["name"] == "teacher"), None)
    rows = []
    for s in report["stages"]:
        v, t = m.value(s), (m.value(teacher) if teacher else None)
        delta = v - t if teacher and s is not teacher and None not in (v, t) else None
        rows.append((s["name"], fmt_int(s.get("params")), fmt_int(s.get("nonzero_params")),
                     fmt_pct(s.get("sparsity")), fmt_bytes(s.get("size_bytes")), fmt_bytes(s.get("gzip_bytes")),
                     fmt_text(s.get("size_format")), m.fmt(v), m.fmt_delta(delta),
                     fmt_seconds(s.get("seconds"))))
    return Table("stages", ("stage", "params", "non-zero", "sparsity", "size", "gzip", "format", m.label,
                            "vs teacher", "seconds"), tuple(rows),
                 (False, True, True, True, True, True, False, True, True, True),
                 tuple(s["name"] for s in report["stages"]))


def target_entries(report: dict) -> list[tuple[str, dict, bool]]:
    """(label, entry, is_variant) for every measured artifact: each target, then its variants."""
    out = []
    for t in report["targets"]:
        out.append((t["name"], t, False))
        for v in t.get("variants", []):
            out.append((f"{t['name']} · {v.get('format')}", {**v, "name": t["name"], "kind": t["kind"]}, True))
    return out


def target_table(report: dict) -> Table:
    """Every measured artifact: format, runtime, size, arena, the main metric, agreement with the
    float model (classification; else the mean absolute difference of the outputs or scores),
    latency p50/p90/p99."""
    m = main_metric(report)
    classify = m.task == "classification"
    rows, keys, variant = [], [], []
    for label, v, is_variant in target_entries(report):
        src = latency_source(v)
        est = src["estimate"]
        rows.append((label, fmt_text(v.get("format")), fmt_text((v.get("runtime") or {}).get("name")),
                     fmt_bytes(v.get("size_bytes")), fmt_bytes(v.get("gzip_bytes")), fmt_bytes(v.get("arena_bytes")),
                     m.fmt(m.value(v)),
                     fmt_pct(v.get("agreement_with_float")) if classify else fmt_text(v.get("mean_abs_diff_vs_float")),
                     fmt_latency_pcts(v.get("latency_ms"), src["label"]),
                     fmt_latency(est["ms"], est["label"]) if est else DASH))
        keys.append(v["name"])
        variant.append(is_variant)
    return Table("targets", ("target", "format", "runtime", "size", "gzip", "arena", m.label,
                             "agrees w/ float" if classify else "mean |Δ| vs float",
                             "latency, measured", "latency on the board, estimated"), tuple(rows),
                 (False, False, False, True, True, True, True, True, False, False),  # latency cells wrap
                 tuple(keys), variant=tuple(variant))


def metrics_table(report: dict) -> Table | None:
    """Every metric of the task (regression: MAE, RMSE, R², bias; anomaly: ROC-AUC, precision,
    recall, F1, threshold) for each stage and measured artifact; None for classification."""
    cols = TASK_METRICS.get(report.get("task") or "classification")
    if cols is None:
        return None
    rows, keys, variant = [], [], []
    entries = [(s["name"], s, False, s["name"]) for s in report["stages"]]
    entries += [(label, v, is_variant, v["name"]) for label, v, is_variant in target_entries(report)]
    for label, v, is_variant, key in entries:
        got = v.get("metrics") or {}
        rows.append((label, *(f(got.get(k)) for k, _, f in cols)))
        keys.append(key)
        variant.append(is_variant)
    return Table("metrics", ("model", *(lab for _, lab, _ in cols)), tuple(rows),
                 (False,) + (True,) * len(cols), tuple(keys), variant=tuple(variant))


# ----------------------------------------------------------------------------- facts


def primary_target(report: dict) -> dict | None:
    """The primary deployed model: the recipe's first target, its first (primary) format."""
    return report["targets"][0] if report["targets"] else None


def size_accuracy_points(report: dict) -> list[dict[str, Any]]:
    """Every stage and every measured artifact as (label, group, size, main metric), Pareto front marked.

    The main metric (:func:`main_metric`: accuracy, MAE or ROC-AUC) is under ``accuracy``. A
    point is on the front when no other point is at most as large and at least as good (and
    strictly better in one of the two). Points without a size or metric are left out.
    """
    m = main_metric(report)
    pts = [{"label": s["name"], "group": "stage", "name": s["name"], "format": s.get("size_format"),
            "size_bytes": s.get("size_bytes"), "accuracy": m.value(s)} for s in report["stages"]]
    pts += [{"label": label, "group": "variant" if is_variant else "target", "name": v["name"],
             "format": v.get("format"), "size_bytes": v.get("size_bytes"), "accuracy": m.value(v)}
            for label, v, is_variant in target_entries(report)]
    return mark_pareto([p for p in pts if p["size_bytes"] and p["accuracy"] is not None],
                       higher_is_better=m.higher_is_better)


def mark_pareto(points: list[dict], *, higher_is_better: bool = True, x_key: str = "size_bytes") -> list[dict]:
    """Set ``pareto`` on each point (dicts with ``x_key`` - smaller is better, ``size_bytes`` by
    default - and ``accuracy``, the metric whose larger values are better unless
    ``higher_is_better`` is false); returns ``points``."""
    sign = 1 if higher_is_better else -1
    for p in points:
        p["pareto"] = not any(q is not p and q[x_key] <= p[x_key]
                              and sign * q["accuracy"] >= sign * p["accuracy"]
                              and (q[x_key] < p[x_key] or sign * q["accuracy"] > sign * p["accuracy"])
                              for q in points)
    return points


def pareto_text(report: dict) -> str:
    """The Pareto front, smallest first: ``cortex-m4 (8.2 KiB, 98.6 %), qat (8.8 KiB, 98.6 %)``."""
    m = main_metric(report)
    front = sorted((p for p in size_accuracy_points(report) if p["pareto"]), key=lambda p: p["size_bytes"])
    return ", ".join(f"{p['label']} ({fmt_bytes(p['size_bytes'])}, {m.fmt(p['accuracy'])})" for p in front) or DASH


def latency_rows(report: dict) -> list[dict[str, Any]]:
    """Per measured artifact: label, measured_on, ``source`` (:func:`latency_source`'s label) and the
    latency percentiles (ms) with their text; then, for a target with a calibrated estimate, a row
    of the estimate alone (``estimated: True``, p50 only)."""
    out = []
    for label, v, is_variant in target_entries(report):
        lat = v.get("latency_ms") or {}
        src = latency_source(v)
        if lat.get("p50") is not None:
            out.append({"label": label, "name": v["name"], "variant": is_variant, "estimated": False,
                        "measured_on": v.get("measured_on"), "source": src["label"],
                        **{k: lat.get(k) for k in ("p50", "p90", "p99", "mean")},
                        **{f"{k}_text": fmt_ms(lat.get(k)) for k in ("p50", "p90", "p99")},
                        "text": fmt_latency_pcts(lat, src["label"])})
        est = src["estimate"]
        if est is not None:
            out.append({"label": label, "name": v["name"], "variant": is_variant, "estimated": True,
                        "measured_on": None, "source": est["label"], "p50": est["ms"], "p90": None, "p99": None,
                        "mean": None, "p50_text": fmt_ms(est["ms"]), "p90_text": DASH, "p99_text": DASH,
                        "text": fmt_latency(est["ms"], est["label"])})
    return out


def verdict(report: dict) -> tuple[str, str]:
    """(``pass``/``fail``, sentences): are all targets within their budgets, by how much not, what is unchecked."""
    over, unchecked = [], {}
    for t in report["targets"]:
        for c in _checks(t):
            if c["status"] == "fail":
                over.append(f"{t['name']} {BUDGET_NAME[c['budget']]} {check_text(c)}")
            elif c["status"] == "unchecked":
                unchecked.setdefault((BUDGET_NAME[c["budget"]], c["note"] or "not checked"), []).append(t["name"])
    n = len(report["targets"])
    if n == 0:
        return "pass", "No targets in this run."
    tail = ""
    if unchecked:
        tail = " Unchecked: " + "; ".join(f"{what} of {', '.join(names)} ({note})"
                                          for (what, note), names in unchecked.items()) + "."
    tail = latency_verdict_counts(report) + tail
    if over:
        return "fail", f"Over budget: {'; '.join(over)}.{tail}"
    return "pass", f"All {n} target{'s' if n != 1 else ''} within budget.{tail}"


def latency_verdict_counts(report: dict) -> str:
    """`` Latency verdicts: 1 measured on the device (rpi4), 2 estimated (cortex-m4, mobile), 1 unchecked.``
    (empty without latency budgets): estimated verdicts are counted apart from measured ones."""
    groups: dict[str, list[str]] = {"measured on the device": [], "estimated": [], "unchecked": []}
    for t in report["targets"]:
        c = next((c for c in _checks(t) if c["budget"] == "latency"), None)
        if c is None or c["status"] == "none":
            continue
        key = "unchecked" if c["status"] == "unchecked" else ("estimated" if c.get("estimated")
                                                             else "measured on the device")
        groups[key].append(t["name"])
    parts = [f"{len(names)} {what} ({', '.join(names)})" for what, names in groups.items() if names]
    return f" Latency verdicts: {', '.join(parts)}." if parts else ""


def headline(report: dict) -> list[dict[str, str]]:
    """One card per target: the main metric (under ``accuracy``), change against the teacher,
    size, compression, the measured p50 and the estimate, each with its source
    (``latency_measured``, ``latency_estimated``: None when there is none), verdict."""
    m = main_metric(report)
    teacher = next((s for s in report["stages"] if s["name"] == "teacher"), None)
    cards = []
    for t in report["targets"]:
        acc = m.value(t)
        t_acc = m.value(teacher) if teacher else None
        delta = acc - t_acc if teacher and None not in (acc, t_acc) else None
        ok = (t.get("budget") or {}).get("ok")
        src = latency_source(t)
        est, p50 = src["estimate"], (t.get("latency_ms") or {}).get("p50")
        cards.append({"name": t["name"], "board": fmt_text(t.get("board")), "format": fmt_text(t.get("format")),
                      "accuracy": m.fmt(acc), "delta": m.fmt_delta(delta), "size": fmt_bytes(t.get("size_bytes")),
                      "compression": fmt_ratio(t.get("compression_vs_teacher")),
                      "latency_measured": fmt_latency(p50, src["label"]) if p50 is not None else None,
                      "latency_estimated": fmt_latency(est["ms"], est["label"]) if est else None,
                      "verdict": target_verdict_word(t),
                      "measured_on": fmt_text(t.get("measured_on")),
                      "status": "pass" if ok else ("fail" if ok is not None else "none")})
    return cards


def summary_facts(report: dict) -> list[tuple[str, str]]:
    """(label, value) lines of the run summary: recipe, dataset, reference, commit, where measured."""
    d = report.get("dataset") or {}
    measured = {}
    for label, v, _ in target_entries(report):
        rt = v.get("runtime") or {}
        measured.setdefault(v.get("measured_on") or DASH, []).append(
            f"{label} ({rt.get('name', DASH)} {rt.get('version', '')})".replace(" )", ")"))
    task = report.get("task") or "classification"
    kinds = {"classification": f"{d.get('classes')} classes", "regression": "regression",
             "anomaly": "anomaly detection (0 normal, 1 anomaly)"}
    facts = [("recipe", f"{report.get('recipe')} (seed {report.get('seed', DASH)})"),
             ("dataset", f"{d.get('name')}: {d.get('train')} train, {d.get('val', 0)} val, {d.get('test')} test, "
                         f"{kinds[task]}" + (f" ({d['label']})" if d.get("label") else "")),
             ("stage numbers", "Keras models on the build host, test split; sizes are each stage's TFLite file"),
             *((f"measured on {on}", "; ".join(items)) for on, items in measured.items()),
             ("agreement reference", f"{report.get('reference_for_agreement') or DASH} (float model)"),
             ("git commit", report.get("git_commit") or DASH)]
    extra = [("task", task)] if task != "classification" else []
    f = report.get("features")
    if f:
        what = "explained variance" if f.get("reduce") == "pca" else "between-class variance (LDA)"
        extra.append(("input reduction", f"{str(f.get('reduce')).upper()} in the model's first layer: "
                                         f"{f.get('input_size')} → {f.get('reduced_size')} inputs, {what} kept "
                                         f"{fmt_pct(f.get('variance_kept'))}"))
    if d.get("frontend"):
        extra.append(("audio front end", f"{d['frontend']}: features of 49 frames (30 ms, 20 ms apart) of each 1 s "
                                         "clip at 16 kHz; every target ships it as frontend.tflite"))
    rule = next((s.get("threshold_rule") for s in reversed(report["stages"]) if s.get("threshold_rule")), None)
    if rule:
        extra.append(("anomaly threshold", f"chosen on the validation split for each stage ({rule}); the targets "
                                           f"use the {report.get('reference_for_agreement') or DASH} stage's"))
    facts[2:2] = extra
    if report.get("recipe_sha256"):
        facts.append(("recipe sha256", report["recipe_sha256"]))
    if report.get("created"):
        facts.append(("run started", report["created"]))
    return facts


def version_items(report: dict) -> list[tuple[str, str]]:
    """(package, version) pairs from ``report.versions``."""
    return [(k, str(v)) for k, v in (report.get("versions") or {}).items()]


def per_layer_sparsity(report: dict) -> tuple[str, float | None, list[tuple[str, float]]] | None:
    """(stage, target sparsity, [(layer, sparsity)]) of the pruned stage, or None without one."""
    for s in report["stages"]:
        if s.get("per_layer"):
            return s["name"], s.get("target_sparsity"), list(s["per_layer"].items())
    return None


def channels_kept(report: dict) -> tuple[str, list[tuple[str, int, int]]] | None:
    """(stage, [(layer, channels kept, channels before)]) of a structured (channel) pruning, or None."""
    for s in report["stages"]:
        st = s.get("structure")
        if isinstance(st, dict) and st.get("kind") == "channels":
            return s["name"], [(name, int(k), int(n)) for name, (k, n) in st.get("kept", {}).items()]
    return None


def sparsity_facts(report: dict) -> list[tuple[str, str]]:
    """(label, value) about sparsity: the target, what the pruned layers and all weights reached, after QAT
    (for structured pruning: the channels removed and the parameters before and after)."""
    stages = {s["name"]: s for s in report["stages"]}
    p = next((s for s in report["stages"] if s.get("per_layer") or s.get("target_sparsity") is not None), None)
    if p is None:
        return []
    if isinstance(p.get("structure"), dict):
        st = p["structure"]
        facts = [("target", f"{fmt_pct(p.get('target_sparsity'))} of the prunable channels"),
                 ("channels removed", fmt_pct(p.get("channels_removed"))),
                 ("parameters", f"{st.get('params_before')} → {st.get('params_after')}")]
        note = pruning_flash_note(report)
        return facts + ([("flash", note)] if note else [])
    facts = [("target", fmt_pct(p.get("target_sparsity"))), ("pruned layers", fmt_pct(p.get("sparsity"))),
             ("all weights", fmt_pct(p.get("sparsity_overall")))]
    if "qat" in stages:
        facts.append(("after QAT", fmt_pct(stages["qat"].get("sparsity"))))
    note = pruning_flash_note(report)
    if note:
        facts.append(("flash", note))
    return facts


def pruning_flash_note(report: dict) -> str | None:
    """What pruning did to the file: zeros are stored densely, so the pruned TFLite file is as large
    as the unpruned one and only the gzip size shrinks (None without a pruned stage)."""
    stages = {s["name"]: s for s in report["stages"]}
    pruned = next((s for s in report["stages"] if s.get("per_layer") or s.get("target_sparsity") is not None), None)
    if pruned is None:
        return None
    before = next((stages[n] for n in ("student", "teacher") if n in stages and n != pruned["name"]), None)
    if isinstance(pruned.get("structure"), dict):
        text = (f"structured pruning removed {fmt_pct(pruned.get('channels_removed'))} of the prunable channels "
                "and rebuilt a smaller dense model")
        if before and None not in (before.get("size_bytes"), pruned.get("size_bytes")):
            change = pruned["size_bytes"] / before["size_bytes"] - 1
            verb = "the file shrank" if change < 0 else "the file did not shrink"
            text += (f": {verb} ({pruned['name']} {fmt_bytes(pruned['size_bytes'])}, {before['name']} "
                     f"{fmt_bytes(before['size_bytes'])}, {change:+.0%}); a device runs this smaller model")
        return text
    text = ("pruning stores its zeros densely: the file does not shrink, only its compressed (gzip) size does, "
            "and a device runs the dense model")
    if before and None not in (before.get("size_bytes"), pruned.get("size_bytes")):
        text += (f" ({pruned['name']} {fmt_bytes(pruned['size_bytes'])}, {before['name']} "
                 f"{fmt_bytes(before['size_bytes'])}; gzip {fmt_bytes(before.get('gzip_bytes'))} → "
                 f"{fmt_bytes(pruned.get('gzip_bytes'))})")
    return text


def arena_note(report: dict) -> str | None:
    """Where the arena numbers come from: the tflite-micro interpreter on this host, its pointer
    width, the margin added (None when no target measured an arena)."""
    arenas = [t["arena"] for t in report.get("targets", []) if isinstance(t.get("arena"), dict)]
    if not arenas:
        return None
    bits = sorted({a.get("pointer_bits") for a in arenas if a.get("pointer_bits")})
    versions = sorted({a.get("tflm_version") for a in arenas if a.get("tflm_version")})
    host = f"a {'/'.join(map(str, bits))}-bit host" if bits else "this host"
    version = f" {', '.join(versions)}" if versions else ""
    text = (f"the smallest tensor arena that ran the file in the tflite-micro{version} interpreter on {host}, "
            "plus the recipe's margin (convert.arena_margin)")
    if 64 in bits:
        text += "; a 32-bit microcontroller needs somewhat less (its pointers are half as wide): re-measure on the device"
    return text


def names_notes(report: dict) -> list[str]:
    """Per target whose file ships without tensor names (``convert.mcu_strip_names``): how many bytes
    that saved and where the names are."""
    return [f"{t['name']}: the file ships without its tensor names, which TFLite Micro never reads "
            f"({fmt_bytes(n.get('bytes_saved'))} less); they are in targets/{t['name']}/{n.get('file')}"
            for t in report.get("targets", []) if isinstance(n := t.get("tensor_names"), dict)]


def weight_lut_notes(report: dict) -> list[str]:
    """Per target with ``convert.mcu_weight_bits``: what the look-up-table weights did to the file
    and where the decoded weights go (the arena), or why the weights stayed plain."""
    out = []
    for t in report.get("targets", []):
        lut = t.get("weight_lut")
        if not lut:
            continue
        if lut.get("applied"):
            out.append(f"{t['name']}: {len(lut.get('tensors') or [])} weight tensor(s) stored as look-up tables "
                       f"(indices of at most {lut.get('index_bits')} bits, decoded at run time by TFLite Micro's "
                       f"DECODE op): the file {fmt_bytes(lut.get('size_bytes_before'))} → "
                       f"{fmt_bytes(lut.get('size_bytes_after'))}; the decoded weights live in the tensor arena, "
                       f"measured with them ({fmt_bytes(t.get('arena_bytes'))})")
        else:
            out.append(f"{t['name']}: weights stored plainly, not as look-up tables: {lut.get('reason')}")
    return out


def confusion(report: dict) -> tuple[str, list[list[int]], list[str]] | None:
    """(caption, matrix, class labels) of the primary deployed model, or None when not measured."""
    t = primary_target(report)
    if not t or not t.get("confusion_matrix"):
        return None
    m = t["confusion_matrix"]
    labels = [str(c.get("class", i)) for i, c in enumerate(t.get("per_class") or [])] or [str(i) for i in range(len(m))]
    if len(labels) != len(m):
        labels = [str(i) for i in range(len(m))]
    rt = (t.get("runtime") or {}).get("name", DASH)
    caption = (f"{t['name']} ({t.get('format')}, {rt}, measured on {t.get('measured_on')}): "
               f"{sum(map(sum, m))} test samples, accuracy {fmt_pct(t.get('accuracy'))}")
    if report.get("task") == "anomaly":
        got = t.get("metrics") or {}
        labels = ["normal", "anomaly"] if len(m) == 2 else labels
        caption = (f"{t['name']} ({t.get('format')}, {rt}, measured on {t.get('measured_on')}): "
                   f"{sum(map(sum, m))} test samples flagged at score ≥ {fmt_text(got.get('threshold'))}: "
                   f"precision {fmt_pct(got.get('precision'))}, recall {fmt_pct(got.get('recall'))}")
    return caption, m, labels


# ----------------------------------------------------------------------------- what to ship


def _io_text(io: dict | None) -> str:
    """``int8 [1, 8, 8, 1], scale 0.00392, zero point −128`` or ``float32 [1, 10]``."""
    if not io:
        return DASH
    shape = "[" + ", ".join("?" if d is None else str(d) for d in io.get("shape") or []) + "]"
    text = f"{io.get('dtype')} {shape}"
    if io.get("scale") is not None:
        text += f", scale {fmt_text(float(io['scale']))}, zero point {io.get('zero_point')}"
    return text


def ship_table(report: dict) -> Table | None:
    """Per target, its recommended artifact (the smallest that passes the budgets and the quality
    gate; budgets that could not be checked are named beside it) and what it needs: runtime, arena, input and output dtype/scale/zero point; None for a
    report without ``ship`` (written before it existed)."""
    rows, keys = [], []
    for t in report["targets"]:
        plan = t.get("ship")
        if plan is None:
            return None
        rec = plan["recommended"]
        art = next((a for a in plan["artifacts"] if rec and a["format"] == rec["format"]), None)
        if art is None:
            rows.append((t["name"], f"none: {plan['why_none']}", DASH, DASH, DASH, DASH, DASH))
        else:
            unchecked = [BUDGET_NAME[c["budget"]] for c in _checks(t) if c["status"] == "unchecked"]
            rows.append((t["name"], f"{art['format']} ({fmt_bytes(art['size_bytes'])})"
                         + (f"; {', '.join(unchecked)} unchecked" if unchecked else ""),
                         ", ".join(rec["files"]) or DASH,
                         f"{art['needs']}; measured with {art['runtime']} {art.get('runtime_version') or ''}".rstrip(),
                         fmt_bytes(art.get("arena_bytes")), _io_text(art.get("input")), _io_text(art.get("output"))))
        keys.append(t["name"])
    return Table("ship", ("target", "recommended", "files to put on the device", "needs", "arena", "input", "output"),
                 tuple(rows), (False, False, False, False, True, False, False), tuple(keys))


def ship_files_table(report: dict) -> Table | None:
    """Every file of every artifact with its size and sha256, and whether the artifact passes."""
    rows, keys = [], []
    for t in report["targets"]:
        plan = t.get("ship")
        if plan is None:
            return None
        for a in plan["artifacts"]:
            verdict = "passes" if a["passes"] else "fails " + ", ".join(a["fails"])
            for f in a["files"]:
                rows.append((t["name"], f"{a['format']} ({verdict})", f["path"], fmt_bytes(f["bytes"]), f["sha256"],
                             f["role"]))
                keys.append(t["name"])
    return Table("ship-files", ("target", "artifact", "file", "size", "sha256", "what it is"), tuple(rows),
                 (False, False, False, True, False, False), tuple(keys))


def ship_notes(report: dict) -> list[str]:
    """Sentences under the ship tables: the MCU flash note, where the preprocessing constants are."""
    notes = []
    if any(t.get("kind") == "mcu" for t in report["targets"]):
        notes.append("Microcontrollers: the " + next(t["ship"]["flash_note"] for t in report["targets"]
                                                     if t.get("kind") == "mcu" and t.get("ship")) +
                     ". model_data.h carries the input and output scale and zero point and the preprocessing "
                     "constants, so firmware can quantize a raw input without reading preprocess.json.")
    return notes


# ----------------------------------------------------------------------------- per-layer error, selective precision


def _db(v) -> str:
    return DASH if v is None else f"{v:.1f} dB"


def per_layer_groups(report: dict) -> list[dict[str, Any]]:
    """The per-layer int8 error of the targets, one group per distinct measurement (targets whose
    int8 models measured the same are one group): ``{targets, file, split, samples, worst, table,
    bars}``; ``bars``: ``[(layer, SNR drop dB or None, precision kept or None)]`` for the plot."""
    groups: dict[str, dict[str, Any]] = {}
    for t in report["targets"]:
        pl = t.get("per_layer_error")
        if not pl or not pl.get("layers"):
            continue
        kept = {r["layer"]: r["precision"] for r in (t.get("selective_precision") or {}).get("layers", [])}
        key = repr((pl["layers"], sorted(kept.items())))
        if key in groups:
            groups[key]["targets"].append(t["name"])
            continue
        header = ("layer", "kind", "op", "SNR", "SNR drop", "NMSE") + (("selective",) if t.get("selective_precision")
                                                                        else ())
        rows, keys = [], []
        for r in pl["layers"]:
            snr = ("∞" if r.get("nmse") == 0 else DASH) if r.get("snr_db") is None else _db(r["snr_db"])
            nmse = DASH if r.get("nmse") is None else f"{r['nmse']:.2e}"
            row = (r["layer"], r.get("kind") or DASH, r.get("op") or DASH, snr, _db(r.get("snr_drop_db")), nmse)
            if t.get("selective_precision"):
                row += (kept.get(r["layer"], "int8"),)
            rows.append(row)
            keys.append(r["layer"])
        table = Table(f"per-layer-{len(groups) + 1}", header, tuple(rows), (False, False, False, True, True, True)
                      + ((False,) if len(header) > 6 else ()), tuple(keys))
        groups[key] = {"targets": [t["name"]], "file": t.get("per_layer_error_file"), "split": pl.get("split"),
                       "samples": pl.get("samples"), "worst": list(pl.get("worst") or []), "table": table,
                       "bars": [(r["layer"], r.get("snr_drop_db"), kept.get(r["layer"])) for r in pl["layers"]]}
    return list(groups.values())


def per_layer_caption(g: dict[str, Any]) -> str:
    """One line on a per-layer group: whose model, on what, and the worst layers by name."""
    worst = ", ".join(g["worst"]) or DASH
    return (f"{', '.join(g['targets'])} ({g['file'] or 'int8 model'}) against the float model on {g['samples']} "
            f"{g['split']} samples; worst layers (largest SNR drop: where the int8 error enters): {worst}")


def per_layer_missing(report: dict) -> list[str]:
    """Why a target has no per-layer error, one line each."""
    return [f"{t['name']}: {t.get('per_layer_error_reason') or 'not measured'}" for t in report["targets"]
            if not (t.get("per_layer_error") or {}).get("layers")]


def selective_table(report: dict) -> Table | None:
    """Per target with ``convert.selective``: the layers kept at higher precision and what it cost,
    both models measured on the test split (None when no target chose)."""
    rows, keys = [], []
    for t in report["targets"]:
        s = t.get("selective_precision")
        if not s:
            continue
        i8, sel = s.get("int8") or {}, s.get("selective") or {}
        kept = ", ".join(f"{r['layer']} ({r['precision']})" for r in s.get("layers", [])) or "none"
        refused = ", ".join(r["layer"] for r in s.get("refused", [])) or DASH
        cost = DASH if s.get("cost_bytes") is None else (f"+{fmt_bytes(s['cost_bytes'])}" if s["cost_bytes"] >= 0
                                                          else f"−{fmt_bytes(-s['cost_bytes'])}")
        rows.append((t["name"], s.get("status", DASH), kept, refused, fmt_bytes(i8.get("size_bytes")),
                     fmt_bytes(sel.get("size_bytes")) if sel else DASH, cost if sel else DASH,
                     fmt_pct(i8.get("accuracy")), fmt_pct(sel.get("accuracy")) if sel else DASH))
        keys.append(t["name"])
    if not rows:
        return None
    return Table("selective", ("target", "status", "kept at higher precision", "refused (no kernel)", "int8 size",
                               "selective size", "cost", "int8 accuracy", "selective accuracy"),
                 tuple(rows), (False, False, False, False, True, True, True, True, True), tuple(keys))


def selective_notes(report: dict) -> list[str]:
    """How each target's choice was made, and why a layer was refused or nothing was kept."""
    notes = []
    for t in report["targets"]:
        s = t.get("selective_precision")
        if not s:
            continue
        q = s.get("search") or {}
        text = f"{t['name']}: {s.get('status')}"
        if q:
            text += (f"; chosen on {q.get('samples')} {q.get('split')} samples against the {q.get('reference')} "
                     f"(int8 there lost {fmt_drop(q.get('int8_drop_points'), 'pt')}; gate {fmt_drop(s.get('max_accuracy_drop'), 'pt')}), "
                     f"{len(s.get('tried', []))} models tried")
        if s.get("reason"):
            text += f"; {s['reason']}"
        if s.get("cost_bytes_vs_same_quantizer") is not None:
            text += (f"; against the same quantizer's all-int8 model "
                     f"({fmt_bytes((s.get('int8_same_quantizer') or {}).get('size_bytes'))}) the cost is "
                     f"{fmt_bytes(s['cost_bytes_vs_same_quantizer'])}")
        notes.append(text)
        notes += [f"{t['name']}: {r['layer']} refused: {r['reason']}" for r in s.get("refused", [])]
    return notes
