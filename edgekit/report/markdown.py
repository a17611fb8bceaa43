"""Render a report dict as Markdown: summary, budgets, targets, stages, Pareto front, confusion matrix.

Layout only: every number comes formatted from :mod:`edgekit.report.view`, the same strings
``report.html`` shows.
"""

from __future__ import annotations

from . import view
from .fmt import fmt_pct


_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "\\`", "\r": " ", "\n": " "}


def md_text(s) -> str:
    """``s`` as literal Markdown text: HTML (``& < >``), pipes and backticks escaped, line breaks
    made spaces, so a name from a recipe or a device can neither inject HTML nor break a table
    or a heading."""
    return "".join(_MD_ESCAPES.get(c, c) for c in str(s))


def md_table(header, rows) -> str:
    """A GitHub Markdown table; every cell is :func:`md_text`."""
    esc = md_text
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def table_md(t: view.Table) -> str:
    """A :class:`view.Table` as Markdown (budget cells lead with their verdict word)."""
    return md_table(t.header, [[t.cell(r, i) for i in range(len(t.header))] for r in range(len(t.rows))])


def render_markdown(report: dict) -> str:
    """The whole ``report.md`` for ``report`` (a ``report.json`` dict)."""
    status, sentence = view.verdict(report)
    out = [f"# edgekit report: {md_text(report['recipe'])}", "",
           f"**{'PASS' if status == 'pass' else 'OVER BUDGET'}** — {md_text(sentence)}", ""]
    out += [f"- **{md_text(k)}**: {md_text(v)}" for k, v in view.summary_facts(report)]
    out += ["", f"{view.metric_note(report)}; target numbers come from running each artifact in its "
                "own runtime. Every latency says where it comes from: measured on a device, on the host "
                "(which says nothing about the device's speed and decides no budget), or estimated for the "
                "target's board from published measurements.", ""]
    out += ["## Budgets", "", table_md(view.budget_table(report)), ""]
    out += ["## Targets", "", table_md(view.target_table(report)), ""]
    if view.arena_note(report):
        out += [f"Arena: {md_text(view.arena_note(report))}.", ""]
    for note in view.names_notes(report):
        out += [f"Names: {md_text(note)}.", ""]
    ship = view.ship_table(report)
    if ship is not None:
        out += ["## What to ship", "", table_md(ship), ""]
        out += [*map(md_text, view.ship_notes(report)), "", table_md(view.ship_files_table(report)), ""]
    out += ["## Stages", "", table_md(view.stage_table(report)), ""]
    if view.pruning_flash_note(report):
        out += [f"Flash: {md_text(view.pruning_flash_note(report))}.", ""]
    for note in view.weight_lut_notes(report):
        out += [f"Weights: {md_text(note)}.", ""]
    metrics = view.metrics_table(report)
    if metrics is not None:
        out += ["## Task metrics", "", table_md(metrics), ""]
    out += [f"Pareto front (size vs {view.main_metric(report).label}, smallest first): "
            f"{md_text(view.pareto_text(report))}", ""]
    layers = view.per_layer_sparsity(report)
    if layers:
        stage, target, items = layers
        out += [f"### Per-layer sparsity ({md_text(stage)})", "",
                "; ".join(f"{md_text(k)}: {md_text(v)}" for k, v in view.sparsity_facts(report)) + ".", "",
                md_table(["layer", "sparsity"], [[name, fmt_pct(v)] for name, v in items]), ""]
    kept = view.channels_kept(report)
    if kept:
        stage, items = kept
        out += [f"### Channels kept ({md_text(stage)})", "",
                "; ".join(f"{md_text(k)}: {md_text(v)}" for k, v in view.sparsity_facts(report)) + ".", "",
                md_table(["layer", "kept", "of"], [[name, str(k), str(n)] for name, k, n in items]), ""]
    groups, missing = view.per_layer_groups(report), view.per_layer_missing(report)
    if groups or missing:
        out += ["## Per-layer quantization error", "",
                "Each layer's int8 activations against the float model's on the same samples; SNR drop: what the "
                "layer itself lost (its inputs' SNR minus its own).", ""]
        for g in groups:
            out += [md_text(view.per_layer_caption(g)) + ".", "", table_md(g["table"]), ""]
        out += [f"- {md_text(m)}" for m in missing] + ([""] if missing else [])
    sel = view.selective_table(report)
    if sel is not None:
        out += ["## Selective precision", "", table_md(sel), ""]
        out += [f"- {md_text(n)}" for n in view.selective_notes(report)] + [""]
    cm = view.confusion(report)
    if cm:
        caption, matrix, labels = cm
        out += ["### Confusion matrix", "", f"{md_text(caption)}. Rows: true class, columns: predicted class.", "",
                md_table(["true \\ pred", *labels], [[lab, *map(str, row)] for lab, row in zip(labels, matrix)]), ""]
    versions = view.version_items(report)
    if versions:
        out += ["## Versions", "", md_table(["package", "version"], versions), ""]
    return "\n".join(out)
