"""What a report shows, as formatted tables and facts: the one place both renderers read.

Every function here takes the ``report.json`` dict and returns strings already formatted by
:mod:`edgekit.report.fmt`. ``markdown.py`` and ``html.py`` only lay these out, so a number is
formatted once and reads the same in ``report.md`` and ``report.html``. Nothing here touches
the run directory: a report renders the same from its ``report.json`` anywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .fmt import (DASH, fmt_bytes, fmt_delta, fmt_int, fmt_ms, fmt_ms_unit, fmt_pct, fmt_points, fmt_ratio,
                  fmt_seconds, fmt_share, fmt_text)

BUDGET_NAME = {"flash": "flash", "ram": "RAM", "latency": "latency"}
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

    def cell(self, r: int, i: int) -> str:
        """Cell text as the Markdown shows it: budget cells lead with their verdict word."""
        st = self.status[r][i] if self.status else None
        text = self.rows[r][i]
        if st is None:
            return text
        return STATUS_WORD[st] if text == DASH else f"{STATUS_WORD[st]}: {text}"


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


_VIOLATION_PREFIX = {"flash": "flash:", "ram": "ram:", "latency": "latency:"}
_UNCHECKED_PREFIX = {"flash": "flash_bytes:", "ram": "ram_bytes:", "latency": "latency_ms:"}


def budget_checks(target: dict) -> list[dict[str, Any]]:
    """One entry per budget of ``target``: what was measured against which limit, and the verdict.

    The verdict is the evaluator's (``budget.violations`` / ``budget.unchecked``); this adds the
    measured number, the share of the budget it uses and the headroom, so a reader sees by how
    much a budget was met or missed. RAM is the tensor arena on an MCU and the RSS growth caused
    by loading the model elsewhere (the rule of :func:`edgekit.evaluate.check_budget`).
    ``report.json`` stores the result under ``targets[].budget.checks``.
    """
    b = target.get("budget") or {}
    mcu = target.get("kind") == "mcu"
    lat = target.get("latency_ms") or {}
    rows = [("flash", "model file", b.get("flash_bytes"), target.get("size_bytes"), "bytes"),
            ("ram", "tensor arena" if mcu else "RSS growth on load", b.get("ram_bytes"),
             target.get("arena_bytes") if mcu else target.get("rss_growth_bytes"), "bytes"),
            ("latency", f"p50 on {target.get('measured_on') or 'nothing'}", b.get("latency_ms"), lat.get("p50"), "ms")]
    if b.get("latency_basis") == "estimate":  # checked against the calibrated estimate, not a host time
        board = (target.get("estimate_basis") or {}).get("board") or "a calibrated board"
        rows[2] = ("latency", f"estimated p50 ({board})", b.get("latency_ms"), target.get("latency_estimate_ms"), "ms")
    checks = []
    for name, what, limit, measured, unit in rows:
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
        share = float(f"{measured / limit:.6g}") if limit and measured is not None else None
        checks.append({"budget": name, "what": what, "unit": unit, "measured": measured, "limit": limit,
                       "share": share, "status": status, "note": note})
    return checks


def _checks(target: dict) -> list[dict]:
    return (target.get("budget") or {}).get("checks") or budget_checks(target)


def _amount(v, unit: str) -> str:
    return fmt_bytes(v) if unit == "bytes" else fmt_ms_unit(v)


def check_text(c: dict) -> str:
    """``8.2 KiB of 977 KiB = 0.8 %, 969 KiB left`` (or ``… over``); the limit alone when unmeasured."""
    if c["limit"] is None:
        return DASH
    if c["measured"] is None:
        return f"not measured, limit {_amount(c['limit'], c['unit'])}"
    text = f"{_amount(c['measured'], c['unit'])} of {_amount(c['limit'], c['unit'])} = {fmt_share(c['share'])}"
    if c["status"] == "unchecked":
        return text
    diff = c["limit"] - c["measured"]
    return f"{text}, {_amount(abs(diff), c['unit'])} {'left' if diff >= 0 else 'over'}"


def latency_shown(target: dict) -> tuple[float | None, str]:
    """The latency a verdict rests on and where it comes from: ``(ms, source)``.

    ``source`` is ``"on <device>"`` for a device measurement, ``"estimated ±N %"`` for a
    calibrated estimate (N: the fit's median leave-one-out error, when known) and ``"host, not the
    device"`` for a time measured on the machine that ran edgekit, which never decides a budget.
    """
    b = target.get("budget") or {}
    p50 = (target.get("latency_ms") or {}).get("p50")
    where = target.get("measured_on") or ""
    if b.get("latency_basis") == "estimate" and target.get("latency_estimate_ms") is not None:
        err = (((target.get("estimate_basis") or {}).get("fit") or {}).get("loo_median_abs_pct_error"))
        return target["latency_estimate_ms"], "estimated" + (f" ±{err:.0f} %" if err is not None else "")
    if where and not where.startswith("host"):
        return p50, f"on {where}"
    return p50, "host, not the device" if p50 is not None else "not measured"


def terminal_verdict(target: dict) -> str:
    """``pass``, ``pass, estimated`` (a latency budget met only by an estimate), ``OVER BUDGET: flash``, ..."""
    checks = _checks(target)
    failed = [c["budget"] for c in checks if c["status"] == "fail"]
    if failed:
        return "OVER BUDGET: " + ", ".join(BUDGET_NAME[f] for f in failed)
    estimated = (target.get("budget") or {}).get("latency_basis") == "estimate"
    unchecked = [BUDGET_NAME[c["budget"]] for c in checks if c["status"] == "unchecked"]
    text = "pass, estimated" if estimated else "pass"
    return text + (f" ({', '.join(unchecked)} unchecked)" if unchecked else "")


def budget_bar_rows(target: dict) -> list[dict[str, Any]]:
    """Flash and RAM of ``target`` for the budget plot: label, share of the budget, status, text."""
    return [{"label": {"flash": "flash", "ram": "RAM"}[c["budget"]], "share": c["share"], "status": c["status"],
             "text": check_text(c)} for c in _checks(target) if c["budget"] in ("flash", "ram")]


def budget_table(report: dict) -> Table:
    """Per target: flash, RAM and latency against their budgets, the verdict, and why unchecked."""
    rows, status, keys = [], [], []
    for t in report["targets"]:
        checks = {c["budget"]: c for c in _checks(t)}
        notes = ([f"RAM = {checks['ram']['what']}"] if checks["ram"]["status"] != "none" else [])
        notes += [f"{BUDGET_NAME[n]} unchecked: {c['note']}" for n, c in checks.items() if c["status"] == "unchecked"]
        ok = (t.get("budget") or {}).get("ok")
        rows.append((t["name"], *(check_text(checks[n]) for n in ("flash", "ram", "latency")),
                     DASH if ok is None else ("pass" if ok else "FAIL"), "; ".join(notes) or DASH))
        status.append((None, *(checks[n]["status"] for n in ("flash", "ram", "latency")), None, None))
        keys.append(t["name"])
    return Table("budgets", ("target", "flash", "RAM", "latency (p50)", "verdict", "notes"), tuple(rows),
                 (False,) * 6, tuple(keys), tuple(status))


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
        lat = v.get("latency_ms") or {}
        rows.append((label, fmt_text(v.get("format")), fmt_text((v.get("runtime") or {}).get("name")),
                     fmt_bytes(v.get("size_bytes")), fmt_bytes(v.get("gzip_bytes")), fmt_bytes(v.get("arena_bytes")),
                     m.fmt(m.value(v)),
                     fmt_pct(v.get("agreement_with_float")) if classify else fmt_text(v.get("mean_abs_diff_vs_float")),
                     fmt_ms(lat.get("p50")), fmt_ms(lat.get("p90")), fmt_ms(lat.get("p99")),
                     fmt_text(v.get("measured_on"))))
        keys.append(v["name"])
        variant.append(is_variant)
    return Table("targets", ("target", "format", "runtime", "size", "gzip", "arena", m.label,
                             "agrees w/ float" if classify else "mean |Δ| vs float",
                             "p50 ms", "p90 ms", "p99 ms", "measured on"), tuple(rows),
                 (False, False, False, True, True, True, True, True, True, True, True, False),
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
    """Per measured artifact: label, measured_on and the latency percentiles (ms) with their text."""
    out = []
    for label, v, is_variant in target_entries(report):
        lat = v.get("latency_ms") or {}
        if lat.get("p50") is None:
            continue
        out.append({"label": label, "name": v["name"], "variant": is_variant,
                    "measured_on": v.get("measured_on"), **{k: lat.get(k) for k in ("p50", "p90", "p99", "mean")},
                    **{f"{k}_text": fmt_ms(lat.get(k)) for k in ("p50", "p90", "p99")},
                    "text": f"p50 {fmt_ms(lat.get('p50'))} · p90 {fmt_ms(lat.get('p90'))} · "
                            f"p99 {fmt_ms(lat.get('p99'))} ms"})
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
    if over:
        return "fail", f"Over budget: {'; '.join(over)}.{tail}"
    return "pass", f"All {n} target{'s' if n != 1 else ''} within budget.{tail}"


def headline(report: dict) -> list[dict[str, str]]:
    """One card per target: the main metric (under ``accuracy``), change against the teacher,
    size, compression, p50, verdict."""
    m = main_metric(report)
    teacher = next((s for s in report["stages"] if s["name"] == "teacher"), None)
    cards = []
    for t in report["targets"]:
        acc = m.value(t)
        t_acc = m.value(teacher) if teacher else None
        delta = acc - t_acc if teacher and None not in (acc, t_acc) else None
        ok = (t.get("budget") or {}).get("ok")
        cards.append({"name": t["name"], "board": fmt_text(t.get("board")), "format": fmt_text(t.get("format")),
                      "accuracy": m.fmt(acc), "delta": m.fmt_delta(delta), "size": fmt_bytes(t.get("size_bytes")),
                      "compression": fmt_ratio(t.get("compression_vs_teacher")),
                      "p50": fmt_ms_unit((t.get("latency_ms") or {}).get("p50")),
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
                         f"{kinds[task]}"),
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


def sparsity_facts(report: dict) -> list[tuple[str, str]]:
    """(label, value) about sparsity: the target, what the pruned layers and all weights reached, after QAT."""
    stages = {s["name"]: s for s in report["stages"]}
    p = next((s for s in report["stages"] if s.get("per_layer") or s.get("target_sparsity") is not None), None)
    if p is None:
        return []
    facts = [("target", fmt_pct(p.get("target_sparsity"))), ("pruned layers", fmt_pct(p.get("sparsity"))),
             ("all weights", fmt_pct(p.get("sparsity_overall")))]
    if "qat" in stages:
        facts.append(("after QAT", fmt_pct(stages["qat"].get("sparsity"))))
    return facts


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
