"""Several runs side by side, from their ``report.json`` files only (no TensorFlow, no rerun).

:func:`compare_runs` loads the reports and returns a JSON-ready dict (schema
``edgekit.runs-compare/1``): per run its recipe, dataset, commit and verdict; per stage and per
target the numbers of every run (``null`` where a run lacks it). The renderers lay it out as
Markdown (stdout of ``edgekit report A B``) or as one self-contained HTML page (``--out``).
The first run is the baseline: other runs' cells also show the change against it.

Example::

    result = compare_runs([Path("runs/a"), Path("runs/b")])
    print(render_compare_markdown(result))
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from . import load_report, svg, view
from .fmt import DASH, fmt_bytes, fmt_ms, fmt_pct, fmt_points, fmt_text
from .html import page, table_html
from .markdown import md_text, table_md

SCHEMA = "edgekit.runs-compare/1"


def _labels(paths: list[Path]) -> list[str]:
    names = [p.resolve().name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def compare_runs(paths: list[Path]) -> dict[str, Any]:
    """Load ``report.json`` of each run directory and line their numbers up; ``EdgekitError`` if one is missing."""
    paths = [Path(p) for p in paths]
    return compare_reports(list(zip(_labels(paths), (load_report(p) for p in paths), map(str, paths))))


def compare_reports(runs: list[tuple[str, dict, str]]) -> dict[str, Any]:
    """The comparison of already loaded reports: ``runs`` is a list of (label, report, path)."""
    out_runs, stage_names, target_names = [], [], []
    for label, r, path in runs:
        status, sentence = view.verdict(r)
        d = r.get("dataset") or {}
        out_runs.append({"label": label, "path": path, "recipe": r.get("recipe"), "dataset": d.get("name"),
                         "test_samples": d.get("test"), "git_commit": r.get("git_commit"), "created": r.get("created"),
                         "ok": status == "pass", "verdict": sentence})
        stage_names += [s["name"] for s in r["stages"] if s["name"] not in stage_names]
        target_names += [t["name"] for t in r["targets"] if t["name"] not in target_names]
    stages = []
    for name in stage_names:
        cells = []
        for _, r, _ in runs:
            s = next((s for s in r["stages"] if s["name"] == name), None)
            cells.append(None if s is None else {k: s.get(k) for k in ("accuracy", "size_bytes", "gzip_bytes",
                                                                       "sparsity", "size_format")})
        stages.append({"name": name, "runs": cells})
    targets = []
    for name in target_names:
        cells = []
        for _, r, _ in runs:
            t = next((t for t in r["targets"] if t["name"] == name), None)
            if t is None:
                cells.append(None)
                continue
            checks = (t.get("budget") or {}).get("checks") or view.budget_checks(t)
            cells.append({"format": t.get("format"), "accuracy": t.get("accuracy"), "size_bytes": t.get("size_bytes"),
                          "p50_ms": (t.get("latency_ms") or {}).get("p50"),
                          "p50_source": view.latency_source(t)["label"], "arena_bytes": t.get("arena_bytes"),
                          "measured_on": t.get("measured_on"), "ok": (t.get("budget") or {}).get("ok"),
                          "budget": [{k: c[k] for k in ("budget", "measured", "limit", "share", "status", "unit")}
                                     for c in checks if c["status"] != "none"]})
        targets.append({"name": name, "runs": cells})
    return {"schema": SCHEMA, "runs": out_runs, "stages": stages, "targets": targets}


# ----------------------------------------------------------------------------- tables


def _change(v, base, kind: str) -> str:
    """`` (−1.4 pt)`` / `` (−26 %)`` against the baseline run; empty when either is missing."""
    if v is None or base is None or kind == "text":
        return ""
    if kind == "pct":
        return f" ({fmt_points(v - base)})"
    if base == 0:
        return ""
    ratio = v / base
    if ratio >= 2 or ratio <= 0.5:
        return f" (×{ratio:.2g})" if ratio < 10 else f" (×{ratio:.0f})"
    ch = 100 * (ratio - 1)
    if round(ch) == 0:
        return " (±0 %)"
    return f" (+{ch:.0f} %)" if ch > 0 else f" (−{-ch:.0f} %)"


_FMT = {"pct": fmt_pct, "bytes": fmt_bytes, "ms": fmt_ms, "text": fmt_text}


def _metric_rows(entity: str, name: str, cells: list, metrics: list[tuple[str, str, str]]):
    rows, keys = [], []
    for key, label, kind in metrics:
        values = [c.get(key) if c else None for c in cells]
        if all(v is None for v in values):
            continue
        base = values[0]
        row = [name if not rows else "", label]
        for i, v in enumerate(values):
            if cells[i] is None:
                row.append("not in this run")
            else:
                text = _FMT[kind](v) + (_change(v, base, kind) if i and v is not None else "")
                if key == "p50_ms" and v is not None:  # a latency says where it comes from
                    text += f" ({cells[i].get('p50_source') or 'source unknown'})"
                row.append(text)
        rows.append(tuple(row))
        keys.append(name)
    return rows, keys


def runs_table(result: dict) -> view.Table:
    """One row per run: label, recipe, dataset, commit, verdict."""
    rows = [(r["label"], fmt_text(r["recipe"]), f"{r['dataset']} ({r['test_samples']} test)",
             (r["git_commit"] or DASH)[:12], "pass" if r["ok"] else "FAIL") for r in result["runs"]]
    return view.Table("runs", ("run", "recipe", "dataset", "commit", "verdict"), tuple(rows), (False,) * 5,
                      tuple(r["label"] for r in result["runs"]))


def stages_table(result: dict) -> view.Table:
    """Per stage: accuracy, size, gzip size and sparsity of every run, side by side."""
    rows, keys = [], []
    metrics = [("accuracy", "accuracy", "pct"), ("size_bytes", "size", "bytes"), ("gzip_bytes", "gzip", "bytes"),
               ("sparsity", "sparsity", "pct")]
    for s in result["stages"]:
        r, k = _metric_rows("stage", s["name"], s["runs"], metrics)
        rows += r
        keys += k
    labels = tuple(r["label"] for r in result["runs"])
    return view.Table("compare-stages", ("stage", "metric", *labels), tuple(rows),
                      (False,) * (2 + len(labels)), tuple(keys))


def targets_table(result: dict) -> view.Table:
    """Per target: format, accuracy, size, p50, arena and the budget verdict of every run."""
    rows, keys, status = [], [], []
    metrics = [("format", "format", "text"), ("accuracy", "accuracy", "pct"), ("size_bytes", "size", "bytes"),
               ("p50_ms", "p50 ms", "ms"), ("arena_bytes", "arena", "bytes"), ("measured_on", "measured on", "text")]
    n = len(result["runs"])
    for t in result["targets"]:
        r, k = _metric_rows("target", t["name"], t["runs"], metrics)
        rows += r
        keys += k
        status += [(None,) * (2 + n)] * len(r)
        cells, st = [], []
        for c in t["runs"]:
            if c is None:
                cells.append("not in this run")
                st.append(None)
                continue
            failed = [x for x in c["budget"] if x["status"] == "fail"]
            shown = failed or [x for x in c["budget"] if x["budget"] in ("flash", "ram")]
            text = "; ".join(f"{view.BUDGET_NAME[x['budget']]} {view.check_text({**x, 'note': None})}" for x in shown)
            cells.append(text or DASH)
            st.append("pass" if c["ok"] else ("fail" if c["ok"] is not None else "none"))
        rows.append((t["name"] if not r else "", "budget", *cells))
        keys.append(t["name"])
        status.append((None, None, *st))
    labels = tuple(r["label"] for r in result["runs"])
    return view.Table("compare-targets", ("target", "metric", *labels), tuple(rows),
                      (False,) * (2 + len(labels)), tuple(keys), tuple(status))


# ----------------------------------------------------------------------------- renderers


def render_compare_markdown(result: dict) -> str:
    """The comparison as Markdown: runs, stages side by side, targets side by side."""
    labels = [r["label"] for r in result["runs"]]
    out = [f"# edgekit comparison: {md_text(', '.join(labels))}", "",
           f"Baseline: **{md_text(labels[0])}**; changes in parentheses are against it.", "",
           "## Runs", "", table_md(runs_table(result)), ""]
    out += [f"- **{md_text(r['label'])}**: {md_text(r['verdict'])}" for r in result["runs"]]
    out += ["", "## Targets", "", table_md(targets_table(result)), "",
            "## Stages", "", table_md(stages_table(result)), ""]
    return "\n".join(out)


def render_compare_html(result: dict) -> str:
    """The comparison as one self-contained HTML page (same tables, plus accuracy against size)."""
    labels = [r["label"] for r in result["runs"]]
    colors = svg.color_for(labels)
    points = []
    for t in result["targets"]:
        for label, c in zip(labels, t["runs"]):
            if c and c.get("size_bytes") and c.get("accuracy") is not None:
                points.append({"label": f"{t['name']} ({label})", "group": "target", "name": label,
                               "format": c.get("format"), "size_bytes": c["size_bytes"], "accuracy": c["accuracy"],
                               "tip": f"{t['name']} in {label} ({c.get('format')}): {fmt_bytes(c['size_bytes'])}, "
                                      f"{fmt_pct(c['accuracy'])}"})
    view.mark_pareto(points)
    e = lambda s: escape(str(s), quote=True)  # noqa: E731
    verdicts = "".join(f'<div class="verdict {"pass" if r["ok"] else "fail"}" style="margin-top:8px">'
                       f'<b>{e(r["label"])}</b>{e(r["verdict"])}</div>' for r in result["runs"])
    legend = "".join(f'<span style="color:{colors[lab]};font-weight:700;margin-right:14px">◆ {e(lab)}</span>'
                     for lab in labels)
    body = (f'<h1>edgekit comparison: <span class="name">{e(", ".join(labels))}</span></h1>'
            f'<p class="sub">Baseline: {e(labels[0])}; changes in parentheses are against it.</p>'
            f"{verdicts}"
            f'<section><h2>Runs</h2>{table_html(runs_table(result))}</section>'
            f'<section id="pareto"><h2>Targets: accuracy against size</h2><p class="note">{legend}</p>'
            f"{svg.accuracy_vs_size(points, colors, height=380, legend=False)}</section>"
            f'<section><h2>Targets</h2>{table_html(targets_table(result))}</section>'
            f'<section><h2>Stages</h2>{table_html(stages_table(result))}</section>'
            f"<footer>Rendered from the runs' report.json files by edgekit ({SCHEMA}).</footer>")
    return page(f"edgekit comparison: {', '.join(labels)}", body)
