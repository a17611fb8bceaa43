"""Render a report dict as one self-contained HTML page (``report.html``).

Inline CSS and inline SVG plots; nothing is fetched, the file opens from disk. The page reads
without JavaScript; one small inline script only records, in ``<div id="selfcheck">``, the
rendered size of every figure and any script or console error, so a headless browser test can
check the page as a reader would see it. Layout only: numbers come formatted from
:mod:`edgekit.report.view`, the same strings as ``report.md``.
"""

from __future__ import annotations

from html import escape

from . import svg, view
from .fmt import fmt_bytes, fmt_int, fmt_pct

CSS = """
:root { --fg:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f8fafc; --pass:#16a34a; --fail:#dc2626;
        --unchecked:#64748b; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif; }
main { max-width:1200px; margin:0 auto; padding:24px 28px 40px; }
h1 { font-size:24px; margin:0 0 4px; }
h1 .name { color:var(--accent); }
h2 { font-size:17px; margin:0 0 10px; }
h3 { font-size:14px; margin:0 0 8px; color:var(--muted); font-weight:600; }
.sub { color:var(--muted); margin:0 0 14px; }
section, .panel { background:#fff; border:1px solid var(--line); border-radius:10px; padding:16px 18px; }
section { margin-top:18px; }
.grid2 { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:18px; margin-top:18px; }
.grid2 > .panel { margin:0; }
.verdict { border-radius:10px; padding:12px 16px; font-size:15px; border:1px solid; }
.verdict.pass { background:#f0fdf4; border-color:#bbf7d0; }
.verdict.fail { background:#fef2f2; border-color:#fecaca; }
.verdict b { margin-right:6px; }
.verdict.pass b { color:var(--pass); } .verdict.fail b { color:var(--fail); }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(210px,1fr)); gap:14px; margin-top:18px; }
.card { background:#fff; border:1px solid var(--line); border-top:4px solid var(--c,#94a3b8); border-radius:10px;
        padding:12px 14px; }
.card .head { display:flex; justify-content:space-between; align-items:center; gap:8px; }
.card .head b { font-size:15px; }
.card .board { color:var(--muted); font-size:12px; min-height:2.9em; margin:2px 0 6px; }
.card .big { font-size:26px; font-weight:700; font-variant-numeric:tabular-nums; }
.card .kv { display:flex; justify-content:space-between; font-size:13px; border-top:1px dashed var(--line);
            padding:3px 0; font-variant-numeric:tabular-nums; }
.card .kv span:first-child { color:var(--muted); }
.chip { display:inline-block; border-radius:999px; padding:0 8px; font-size:11px; font-weight:700;
        letter-spacing:.02em; white-space:nowrap; color:#fff; background:var(--unchecked); }
.chip.pass { background:var(--pass); } .chip.fail { background:var(--fail); }
.chip.none { background:#cbd5e1; color:#334155; }
table.data { border-collapse:collapse; width:100%; font-size:13px; }
table.data th { text-align:left; color:var(--muted); font-weight:600; border-bottom:2px solid var(--line);
                padding:6px 8px; white-space:nowrap; }
table.data td { border-bottom:1px solid var(--line); padding:6px 8px; vertical-align:top; }
table.data td:first-child { white-space:nowrap; font-weight:600; }
table.data td.num, table.data th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
table.data tr.variant td { color:#475569; background:#fbfdff; }
table.data tr.variant td:first-child { padding-left:22px; }
table.data td.budget { font-variant-numeric:tabular-nums; min-width:170px; }
#budgets td:last-child { color:var(--muted); font-size:12px; }
table.compare td:nth-child(2) { white-space:nowrap; color:var(--muted); }
table.compare tr.group td { border-top:2px solid #cbd5e1; }
.card.fail { border-color:#fecaca; box-shadow:0 0 0 2px #fecaca; }
table.data td.budget .chip { margin-right:6px; }
.scroll { overflow-x:auto; }
svg.plot { max-width:100%; height:auto; display:block; font-family:inherit; }
svg.cm { margin:0 auto; }
.note { color:var(--muted); font-size:12.5px; margin:8px 0 0; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; overflow-wrap:anywhere; }
.versions { display:flex; flex-wrap:wrap; gap:6px; margin-top:10px; }
.versions span { background:#f1f5f9; border-radius:6px; padding:1px 8px; font-size:12px; }
code { font-size:12.5px; }
footer { color:var(--muted); font-size:12px; margin-top:18px; text-align:center; }
@media (max-width: 900px) { .grid2 { grid-template-columns:1fr; } }
@media print { body { background:#fff; } section, .panel, .card { break-inside:avoid; } }
"""

# Records script errors and console.error before anything else runs (used by the self-check).
HEAD_SCRIPT = """window.__edgekitErrors = [];
window.addEventListener("error", function (e) { window.__edgekitErrors.push(String(e.message || e)); });
(function () { var orig = console.error; console.error = function () {
  window.__edgekitErrors.push(Array.prototype.join.call(arguments, " ")); return orig.apply(console, arguments); }; })();"""

SELFCHECK_SCRIPT = """(function () {
  function check() {
    var figs = [], ok = true;
    document.querySelectorAll("svg.plot, img").forEach(function (el) {
      var r = el.getBoundingClientRect();
      var good = r.width > 0 && r.height > 0;
      ok = ok && good;
      figs.push({label: el.getAttribute("aria-label") || el.getAttribute("alt") || el.tagName,
                 width: Math.round(r.width), height: Math.round(r.height)});
    });
    var errors = window.__edgekitErrors || [];
    var out = document.getElementById("selfcheck");
    out.textContent = JSON.stringify({ok: ok && errors.length === 0, figures: figs, errors: errors});
    out.setAttribute("data-ok", String(ok && errors.length === 0));
  }
  check();
  window.addEventListener("load", check);
})();"""


def _e(s) -> str:
    return escape(str(s), quote=True)


def table_html(t: view.Table) -> str:
    """A :class:`view.Table` as an HTML table with ``id``, numeric columns right-aligned."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if num else f"<th>{_e(h)}</th>"
                   for h, num in zip(t.header, t.numeric))
    body = []
    for r, row in enumerate(t.rows):
        classes = (["variant"] if t.variant and t.variant[r] else []) + \
                  (["group"] if r and t.keys[r] != t.keys[r - 1] else [])
        cls = f' class="{" ".join(classes)}"' if classes else ""
        cells = []
        for i, text in enumerate(row):
            st = t.status[r][i] if t.status else None
            if st:
                rest = "" if text == view.DASH else f" {_e(text)}"
                cells.append(f'<td class="budget"><span class="chip {st}">{_e(t.word(r, i))}</span>{rest}</td>')
            elif t.header[i] == "verdict" and text.split(",")[0] in ("pass", "FAIL"):
                cells.append(f'<td><span class="chip {"pass" if text.startswith("pass") else "fail"}">{_e(text)}</span>'
                             "</td>")
            else:
                cells.append(f'<td class="num">{_e(text)}</td>' if t.numeric[i] else f"<td>{_e(text)}</td>")
        body.append(f'<tr data-key="{_e(t.keys[r])}"{cls}>{"".join(cells)}</tr>')
    kind = " compare" if t.id.startswith("compare") else ""
    return (f'<div class="scroll"><table class="data{kind}" id="{_e(t.id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _cards(report: dict, colors: dict[str, str]) -> str:
    m = view.main_metric(report)
    teacher = next((s for s in report["stages"] if s["name"] == "teacher"), None)
    out = []
    if teacher:
        out.append('<div class="card"><div class="head"><b>teacher</b><span class="chip none">reference</span></div>'
                   f'<div class="board">float model before compression ({_e(teacher.get("size_format") or "")}, '
                   f'Keras {_e(m.label)})</div>'
                   f'<div class="big">{_e(m.fmt(m.value(teacher)))}</div>'
                   f'<div class="kv"><span>size</span><b>{_e(fmt_bytes(teacher.get("size_bytes")))}</b></div>'
                   f'<div class="kv"><span>params</span><b>{_e(fmt_int(teacher.get("params")))}</b></div></div>')
    for c in view.headline(report):
        word = {"pass": "within budget", "fail": "OVER BUDGET", "none": "no verdict"}[c["status"]]
        if c["verdict"].endswith("estimated"):
            word += ", estimated"
        lat = "".join(f'<div class="kv latency"><span>{what}</span><b>{_e(text)}</b></div>'
                      for what, text in (("latency p50", c["latency_measured"]),
                                         ("latency p50 on the board", c["latency_estimated"])) if text)
        out.append(f'<div class="card {c["status"]}" style="--c:{colors.get(c["name"], "#94a3b8")}">'
                   f'<div class="head"><b>{_e(c["name"])}</b><span class="chip {c["status"]}">{word}</span></div>'
                   f'<div class="board">{_e(c["board"])}</div>'
                   f'<div class="big">{_e(c["accuracy"])}</div>'
                   f'<div class="kv"><span>vs teacher</span><b>{_e(c["delta"])}</b></div>'
                   f'<div class="kv"><span>size ({_e(c["format"])})</span><b>{_e(c["size"])}</b></div>'
                   f'<div class="kv"><span>smaller than teacher</span><b>{_e(c["compression"])}</b></div>'
                   f'{lat}</div>')
    return f'<div class="cards">{"".join(out)}</div>'


def _budget_bar_rows(report: dict) -> list[dict]:
    rows = []
    for t in report["targets"]:
        for c in view.budget_bar_rows(t):
            rows.append({"label": f"{t['name']} {c['label']}", "share": c["share"], "status": c["status"],
                         "text": c["text"]})
    return rows


def render_html(report: dict) -> str:
    """The whole ``report.html`` for ``report`` (a ``report.json`` dict)."""
    name = report["recipe"]
    colors = svg.color_for([t["name"] for t in report["targets"]])
    status, sentence = view.verdict(report)
    d = report.get("dataset") or {}
    commit = (report.get("git_commit") or "")[:12] or "no git commit"
    where = sorted({v.get("measured_on") or "–" for _, v, _ in view.target_entries(report)})
    sub = (f"dataset {d.get('name')} ({d.get('test')} test samples) · {len(report['targets'])} targets measured on "
           f"{', '.join(where)} · commit {commit}" + (f" · run started {report['created']}" if report.get("created") else ""))
    parts = [f'<h1>edgekit report: <span class="name">{_e(name)}</span></h1><p class="sub">{_e(sub)}</p>',
             f'<div class="verdict {status}"><b>{"PASS" if status == "pass" else "OVER BUDGET"}</b>'
             f"{_e(sentence)}</div>", _cards(report, colors)]

    m = view.main_metric(report)
    points = view.size_accuracy_points(report)
    for p in points:
        p["tip"] = f"{p['label']} ({p['format']}): {fmt_bytes(p['size_bytes'])}, {m.fmt(p['accuracy'])}"
    if m.task == "classification":
        parts.append('<section id="pareto"><h2>Accuracy against size</h2>'
                     + svg.accuracy_vs_size(points, colors)
                     + f'<p class="note">Pareto front (no other model is both smaller and more accurate), smallest '
                       f"first: {_e(view.pareto_text(report))}. Stage accuracies are Keras on the test split; target "
                       "accuracies come from running each artifact in its runtime.</p></section>")
    else:
        better = "higher" if m.higher_is_better else "lower"
        parts.append(f'<section id="pareto"><h2>{_e(m.label)} against size</h2>'
                     + svg.accuracy_vs_size(points, colors, y_label=f"test {m.label} ({better} is better)",
                                            share=False, tick_fmt=m.fmt, higher_is_better=m.higher_is_better)
                     + f'<p class="note">Pareto front (no other model is both smaller and better), smallest first: '
                       f"{_e(view.pareto_text(report))}. Stage numbers are Keras on the test split; target numbers "
                       "come from running each artifact in its runtime.</p></section>")

    parts.append('<div class="grid2">'
                 '<div class="panel" id="budget-plot"><h2>Flash and RAM against the budget</h2>'
                 + svg.budget_bars(_budget_bar_rows(report))
                 + '<p class="note">Flash: the model file. RAM: the tensor arena on a microcontroller, the RSS '
                   "growth caused by loading the model elsewhere.</p></div>"
                 '<div class="panel" id="latency-plot"><h2>Latency</h2>'
                 + svg.latency(view.latency_rows(report), colors)
                 + '<p class="note">Box p50–p90, whisker to p99, dot at p50; single-sample inference, warm-up '
                   "excluded. Each row says where its latency comes from: measured on a device, on the host "
                   "(which says nothing about the device's speed and decides no budget), or estimated for the "
                   "target's board from published measurements (a diamond).</p></div></div>")

    parts.append('<section><h2>Budgets</h2>' + table_html(view.budget_table(report)) + "</section>")
    if m.task == "classification":
        agreement = ("Agreement: share of test samples where the artifact predicts what the float "
                     f"<b>{_e(report.get('reference_for_agreement') or '–')}</b> model predicts.")
    else:
        agreement = ("Mean |Δ| vs float: mean absolute difference between the artifact's "
                     f"{'predictions' if m.task == 'regression' else 'anomaly scores'} and the float "
                     f"<b>{_e(report.get('reference_for_agreement') or '–')}</b> model's.")
    parts.append('<section><h2>Targets</h2>' + table_html(view.target_table(report))
                 + f'<p class="note">{agreement} Arena: '
                 + _e(view.arena_note(report) or "the tensor arena measured in the TFLite Micro interpreter")
                 + "." + "".join(f" Names: {_e(n)}." for n in view.names_notes(report)) + "</p></section>")
    ship = view.ship_table(report)
    if ship is not None:
        notes = "".join(f'<p class="note">{_e(n)}</p>' for n in view.ship_notes(report))
        parts.append('<section id="ship"><h2>What to ship</h2>' + table_html(ship) + notes
                     + '<h3 style="margin-top:12px">Every file, with its sha256</h3>'
                     + table_html(view.ship_files_table(report)) + "</section>")
    parts.append('<section><h2>Stages</h2>' + table_html(view.stage_table(report))
                 + '<p class="note">Size: the stage exported to TFLite (raw and gzip, so the effect of pruning on '
                   "compressed size is visible)."
                 + (f" Flash: {_e(view.pruning_flash_note(report))}." if view.pruning_flash_note(report) else "")
                 + "".join(f" Weights: {_e(n)}." for n in view.weight_lut_notes(report))
                 + "</p></section>")
    metrics = view.metrics_table(report)
    if metrics is not None:
        parts.append('<section><h2>Task metrics</h2>' + table_html(metrics)
                     + f'<p class="note">{_e(view.metric_note(report))}. Stages: Keras models; targets: measured '
                       "by the evaluator in each artifact's runtime.</p></section>")

    groups, missing = view.per_layer_groups(report), view.per_layer_missing(report)
    if groups or missing:
        body = "".join(f'<div class="panel"><p class="note">{_e(view.per_layer_caption(g))}.</p>'
                       + svg.layer_error_bars(g["bars"], g["worst"]) + table_html(g["table"]) + "</div>"
                       for g in groups)
        body += "".join(f'<p class="note">{_e(m)}</p>' for m in missing)
        parts.append('<section id="per-layer"><h2>Per-layer quantization error</h2>'
                     '<p class="note">Each layer\'s int8 activations against the float model\'s on the same samples '
                     "(named by Keras layer). SNR drop: what the layer itself lost (its inputs' SNR minus its own); "
                     "the worst layers are red.</p>" + f'<div class="grid2">{body}</div></section>')
    sel = view.selective_table(report)
    if sel is not None:
        notes = "".join(f'<p class="note">{_e(n)}</p>' for n in view.selective_notes(report))
        parts.append('<section id="selective"><h2>Selective precision</h2>' + table_html(sel)
                     + '<p class="note">The layers kept out of int8 (float on mobile and Raspberry Pi, int16 '
                       "activations on a microcontroller where TFLite Micro has the kernel), what it cost in bytes "
                       "and what it gave, both models measured by the evaluator on the test split.</p>"
                     + notes + "</section>")

    panels = []
    layers = view.per_layer_sparsity(report)
    if layers:
        stage, target, items = layers
        panels.append(f'<div class="panel" id="sparsity-plot"><h2>Per-layer sparsity ({_e(stage)})</h2>'
                      + svg.sparsity_bars(items, target, [fmt_pct(v) for _, v in items], fmt_pct(target))
                      + '<p class="note">Share of zero weights in each pruned layer\'s kernel.</p>'
                      + '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>"
                                                      for k, v in view.sparsity_facts(report)) + "</dl></div>")
    kept = view.channels_kept(report)
    if kept:
        stage, items = kept
        panels.append(f'<div class="panel" id="channels-kept"><h2>Channels kept ({_e(stage)})</h2><table>'
                      + "<tr><th>layer</th><th>kept</th><th>of</th></tr>"
                      + "".join(f"<tr><td>{_e(name)}</td><td>{k}</td><td>{n}</td></tr>" for name, k, n in items)
                      + '</table><dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>"
                                                             for k, v in view.sparsity_facts(report)) + "</dl></div>")
    cm = view.confusion(report)
    if cm:
        caption, matrix, labels = cm
        panels.append('<div class="panel" id="confusion"><h2>Confusion matrix</h2>'
                      + svg.confusion_matrix(matrix, labels)
                      + f'<p class="note">{_e(caption)}. Rows: true class; columns: predicted.</p></div>')
    if panels:
        parts.append(f'<div class="grid2">{"".join(panels)}</div>')

    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in view.summary_facts(report))
    versions = "".join(f"<span>{_e(k)} <b>{_e(v)}</b></span>" for k, v in view.version_items(report))
    parts.append(f'<section id="run"><h2>Run</h2><dl class="facts">{facts}</dl>'
                 f'<div class="versions">{versions}</div></section>')
    parts.append(f"<footer>Rendered from report.json (schema {_e(report.get('schema'))}) by edgekit. "
                 "Every number on this page is in report.json.</footer>")
    return page(f"edgekit report: {name}", "".join(parts))


def page(title: str, body: str) -> str:
    """A complete HTML document around ``body`` with the shared CSS and the self-check."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><script>{HEAD_SCRIPT}</script><style>{CSS}</style></head>"
            f'<body><main>{body}</main><div id="selfcheck" hidden></div>'
            f"<script>{SELFCHECK_SCRIPT}</script></body></html>\n")
