"""The report of an ``edgekit tune`` study: ``tune.md`` and ``tune.html`` from ``tune.json``.

Every trial in one table, and the Pareto fronts of accuracy against flash and against latency
among the trials that fit the budgets (inline SVG, drawn by :func:`edgekit.report.svg.accuracy_vs_size`).
Layout only: numbers are formatted once here, through :mod:`edgekit.report.fmt`, for both pages.
"""

from __future__ import annotations

from html import escape
from typing import Any

from . import svg, view
from .fmt import DASH, fmt_bytes, fmt_latency, fmt_ms_unit, fmt_pct, fmt_points, fmt_seconds
from .html import page, table_html
from .markdown import md_text, table_md

SCHEME_TEXT = {"qat-int8": "QAT int8", "ptq-int8": "PTQ int8", "ptq-int16x8": "PTQ int16x8"}


def _prune_text(choice: str) -> str:
    if choice == "none":
        return "none"
    if choice.startswith("channels-"):  # structured: the share of prunable channels removed
        return f"{100 * float(choice.split('-', 1)[1]):.0f} % of channels"
    return f"{choice} (m:n)" if ":" in choice else f"{100 * float(choice):.0f} %"


def _latency_text(r: dict) -> str:
    """A trial's latency with where it comes from (:func:`edgekit.report.fmt.fmt_latency`)."""
    if r.get("latency_ms") is None:
        return DASH
    if r.get("latency_basis") == "estimate":
        return fmt_latency(r["latency_ms"], "estimated")
    if r.get("latency_basis") == "measured":
        return fmt_latency(r["latency_ms"], f"measured on {r.get('measured_on') or 'the device'}")
    return fmt_ms_unit(r["latency_ms"])


def verdict_word(r: dict) -> str:
    """``pass`` (fits and meets the floor), ``FAIL``, ``pruned`` (before training), ``failed`` or the state."""
    if r["state"] == "COMPLETE":
        return "pass" if r["feasible"] else "FAIL"
    return {"PRUNED": "pruned", "FAIL": "failed"}.get(r["state"], r["state"].lower())


def _note(r: dict, result: dict) -> str:
    notes = []
    best = result.get("best")
    if best is not None and r["number"] == best["number"]:
        notes.append("best")
    if r.get("duplicate_of") is not None:
        notes.append(f"same parameters as trial {r['duplicate_of']}: result repeated, nothing rerun")
    if r.get("retry_of") is not None:
        notes.append(f"retry of interrupted trial {r['retry_of']}")
    if r.get("interrupted"):
        notes.append("interrupted; queued again")
    if r.get("origin") == "recipe":
        notes.append("the recipe's own choices")
    if r.get("pruned_reason"):
        notes.append(f"pruned before training: {r['pruned_reason']}")
    notes += r.get("violations") or []
    notes += [f"unchecked: {u}" for u in r.get("unchecked") or []]
    if r["state"] == "COMPLETE" and not r["meets_floor"]:
        notes.append(f"accuracy below the floor {fmt_pct(result['accuracy_floor'])}")
    if r.get("error"):
        notes.append(r["error"])
    return "; ".join(notes)


def trials_table(result: dict) -> view.Table:
    """Every trial: its choices, state, measured numbers and verdict."""
    header = ("trial", "width", "pruning", "scheme", "flash", "arena", "latency", "accuracy", "vs teacher",
              "seconds", "verdict", "note")
    rows = []
    for r in result["trials"]:
        p = r["params"]
        acc = r.get("accuracy")
        rows.append((f"#{r['number']}", f"{p.get('width', 0):g}" if p else DASH, _prune_text(p["prune"]) if p else DASH,
                     SCHEME_TEXT.get(p.get("scheme"), DASH) if p else DASH,
                     fmt_bytes(r.get("flash_bytes")), fmt_bytes(r.get("arena_bytes")), _latency_text(r), fmt_pct(acc),
                     DASH if acc is None else fmt_points(acc - result["teacher_accuracy"]),
                     fmt_seconds(r.get("seconds")), verdict_word(r), _note(r, result)))
    return view.Table("trials", header, tuple(rows),
                      (False, True, False, False, True, True, True, True, True, True, False, False),
                      tuple(str(r["number"]) for r in result["trials"]))


def _budget_text(result: dict) -> str:
    b = result["budget"]
    return (f"flash {fmt_bytes(b.get('flash_bytes'))}, RAM (arena) {fmt_bytes(b.get('ram_bytes'))}, "
            f"latency {fmt_ms_unit(b.get('latency_ms'))}")


def headline(result: dict) -> tuple[str, str]:
    """(``pass``/``fail``, a sentence): the best trial, or why there is none."""
    best = result["best"]
    if best is None:
        fits = sum(1 for r in result["trials"] if r["fits"])
        return "fail", (f"no trial fits {result['target']}'s budgets within {result['max_accuracy_drop_points']:g} "
                        f"points of the teacher ({fits} trial(s) fit the budgets, none reached the floor "
                        f"{fmt_pct(result['accuracy_floor'])})" if fits else
                        f"no trial fits {result['target']}'s budgets")
    p = best["params"]
    return "pass", (f"trial #{best['number']}: width {p['width']:g}, pruning {_prune_text(p['prune'])}, "
                    f"{SCHEME_TEXT[p['scheme']]}: flash {fmt_bytes(best['flash_bytes'])}, arena "
                    f"{fmt_bytes(best['arena_bytes'])}, latency {_latency_text(best)}, accuracy "
                    f"{fmt_pct(best['accuracy'])} ({fmt_points(best['accuracy'] - result['teacher_accuracy'])} "
                    "vs the teacher); recipe in best.yaml")


def facts(result: dict) -> list[tuple[str, str]]:
    c = result["counts"]
    return [("target", f"{result['target']} ({result['board']})" if result.get("board") else result["target"]),
            ("budget", _budget_text(result)),
            ("teacher accuracy", f"{fmt_pct(result['teacher_accuracy'])}; floor {fmt_pct(result['accuracy_floor'])} "
                                 f"(at most {result['max_accuracy_drop_points']:g} points below)"),
            ("trials", f"{c['COMPLETE']} measured, {c['PRUNED']} pruned before training, {c['FAIL']} failed or "
                       f"interrupted"),
            ("study", f"{result['study']['name']} in {_where(result)} ({result['study']['sampler']}, seed "
                      f"{result['study']['seed']})"),
            ("selection", result["selection"])]


def front_text(result: dict, which: str) -> str:
    """The Pareto front ``flash`` or ``latency``, smallest first: ``#3 (8.2 KiB, 98.1 %)``."""
    rows = {r["number"]: r for r in result["trials"]}
    key = "flash_bytes" if which == "flash" else "latency_ms"
    front = sorted((rows[n] for n in result["pareto"][which]), key=lambda r: r[key])
    fmt = fmt_bytes if which == "flash" else fmt_ms_unit
    return ", ".join(f"#{r['number']} ({fmt(r[key])}, {fmt_pct(r['accuracy'])})" for r in front) or DASH


def render_tune_markdown(result: dict) -> str:
    """``tune.md``: the verdict, the facts, both Pareto fronts and every trial."""
    status, sentence = headline(result)
    out = [f"# edgekit tune: {md_text(result['recipe'])} on {md_text(result['target'])}", "",
           f"**{'FOUND' if status == 'pass' else 'NOT FOUND'}** — {md_text(sentence)}", ""]
    out += [f"- **{md_text(k)}**: {md_text(v)}" for k, v in facts(result)]
    out += ["", "Flash is the model file and RAM the tensor arena measured in TFLite Micro (MCU targets); accuracy "
                "is measured by running each converted model on the test split. Latency is measured on the device "
                "when it was, else the calibrated estimate (est.); a dash where neither exists.", "",
            "Pareto fronts among the trials that fit the budgets (smaller first):", "",
            f"- accuracy vs flash: {front_text(result, 'flash')}",
            f"- accuracy vs latency: {front_text(result, 'latency')}", "",
            "## Trials", "", table_md(trials_table(result)), ""]
    return "\n".join(out)


def _points(result: dict, key: str) -> list[dict[str, Any]]:
    front = set(result["pareto"]["flash" if key == "flash_bytes" else "latency"])
    pts = []
    for r in result["trials"]:
        if r["state"] != "COMPLETE" or r.get(key) is None or r.get("accuracy") is None or r.get("duplicate_of") is not None:
            continue
        p = r["params"]
        value = fmt_bytes(r[key]) if key == "flash_bytes" else _latency_text(r)
        pts.append({"label": f"#{r['number']}", "group": "target" if r["feasible"] else "variant",
                    "name": p["scheme"], key: r[key], "accuracy": r["accuracy"], "pareto": r["number"] in front,
                    "tip": f"trial #{r['number']}: width {p['width']:g}, pruning {_prune_text(p['prune'])}, "
                           f"{SCHEME_TEXT[p['scheme']]}: {value}, {fmt_pct(r['accuracy'])} ({verdict_word(r)})"})
    return pts


_LEGEND = (("target", "fits the budgets and the accuracy floor"), ("variant", "over budget or below the floor"),
           ("pareto", "on the Pareto front (among trials that fit)"))


def render_tune_html(result: dict) -> str:
    """``tune.html``: one self-contained page (inline CSS and SVG), the same numbers as ``tune.md``."""
    e = lambda s: escape(str(s), quote=True)  # noqa: E731
    status, sentence = headline(result)
    colors = svg.color_for(list(SCHEME_TEXT))
    key_legend = "".join(f'<span style="color:{colors[k]};font-weight:700;margin-right:14px">◆ {e(v)}</span>'
                         for k, v in SCHEME_TEXT.items() if k in result["space"]["scheme"])
    flash_pts, lat_pts = _points(result, "flash_bytes"), _points(result, "latency_ms")
    basis = {r.get("latency_basis") for r in result["trials"] if r.get("latency_ms") is not None}
    lat_label = ("latency, ms (estimated; log scale)" if basis == {"estimate"} else "latency, ms (log scale)")
    flash_svg = svg.accuracy_vs_size(flash_pts, colors, height=380, legend_items=_LEGEND, x_key="flash_bytes",
                                     x_label="flash: size of the "
                                     "model file (log scale)", title="Accuracy against flash for every measured "
                                     "trial, Pareto front marked")
    lat_svg = (svg.accuracy_vs_size(lat_pts, colors, height=380, legend_items=_LEGEND, x_key="latency_ms",
                                    x_label=lat_label, x_ticks=svg._decade_ticks, x_tick_fmt=lambda v: f"{v:g} ms",
                                    title="Accuracy against latency for every measured trial, Pareto front marked")
               if lat_pts else '<p class="note">No trial has a measured or estimated latency.</p>')
    fact_items = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts(result))
    body = (f'<h1>edgekit tune: <span class="name">{e(result["recipe"])}</span> on {e(result["target"])}</h1>'
            f'<p class="sub">{e(_budget_text(result))}</p>'
            f'<div class="verdict {status}"><b>{"FOUND" if status == "pass" else "NOT FOUND"}</b>{e(sentence)}</div>'
            f'<section id="facts"><h2>Study</h2><dl class="facts">{fact_items}</dl></section>'
            f'<section id="pareto-flash"><h2>Accuracy against flash</h2><p class="note">{key_legend}</p>{flash_svg}'
            f'<p class="note">Front: {e(front_text(result, "flash"))}</p></section>'
            f'<section id="pareto-latency"><h2>Accuracy against latency</h2>{lat_svg}'
            f'<p class="note">Front: {e(front_text(result, "latency"))}. Latency is measured on the device when it was, '
            "else the calibrated estimate (est.).</p></section>"
            f'<section id="trials"><h2>Trials</h2>{table_html(trials_table(result))}</section>'
            f"<footer>Rendered from tune.json ({e(result['schema'])}) by edgekit; every trial is stored in "
            f"{e(_where(result))} and its run directory trials/&lt;n&gt;/ (on the machine that ran it).</footer>")
    return page(f"edgekit tune: {result['recipe']} on {result['target']}", body)


def _where(result: dict) -> str:
    """The study's storage as shown (a shared database's URL has its password masked)."""
    url = result["study"].get("storage") or "sqlite:///study.db"
    return "study.db" if url == "sqlite:///study.db" else url
