"""Hand-written inline SVG plots for ``report.html`` (no plotting library, no JavaScript).

Each function returns one ``<svg>`` element as a string with a fixed ``viewBox`` (CSS scales
it down on narrow screens), a ``<title>`` for screen readers and ``<title>`` tooltips on marks.
Inputs are plain numbers from ``report.json``; labels arrive already formatted.
"""

from __future__ import annotations

import math
from html import escape
from typing import Iterable

PALETTE = ("#2563eb", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777")
STAGE_COLOR = "#64748b"
PARETO_COLOR = "#16a34a"
STATUS_COLOR = {"pass": "#16a34a", "fail": "#dc2626", "unchecked": "#94a3b8", "none": "#cbd5e1"}
GRID = "#e2e8f0"
AXIS = "#475569"
CHAR_W = 6.4  # average glyph width at 11px, to keep labels apart


def _e(s) -> str:
    return escape(str(s), quote=True)


def _svg(width: int, height: int, label: str, body: Iterable[str], cls: str = "plot") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{_e(label)}">'
            f"<title>{_e(label)}</title>{''.join(body)}</svg>")


def _text(x: float, y: float, s: str, *, size: int = 11, anchor: str = "start", fill: str = AXIS,
          weight: str | None = None, extra: str = "") -> str:
    w = f' font-weight="{weight}"' if weight else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{w}{extra}>'
            f"{_e(s)}</text>")


def _diamond(cx: float, cy: float, r: float) -> str:
    return f"M{cx:.1f},{cy - r:.1f}L{cx + r:.1f},{cy:.1f}L{cx:.1f},{cy + r:.1f}L{cx - r:.1f},{cy:.1f}Z"


def _merge_labels(labels: list[str]) -> str:
    """One label for marks drawn on the same spot: ``mobile, rpi4 · tflite-dynamic`` when they share a format."""
    labels = list(dict.fromkeys(labels))
    parts = [lab.partition(" · ") for lab in labels]
    suffixes = {p[2] for p in parts}
    if len(labels) > 1 and len(suffixes) == 1 and "" not in suffixes:
        return f"{', '.join(p[0] for p in parts)} · {suffixes.pop()}"
    return ", ".join(labels)


def color_for(names: list[str]) -> dict[str, str]:
    """A stable colour per target name, in the order the targets appear."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(dict.fromkeys(names))}


# ----------------------------------------------------------------------------- scales


class _Log:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi, self.a, self.b = math.log(lo), math.log(hi), a, b

    def __call__(self, v: float) -> float:
        return self.a + (math.log(v) - self.lo) / (self.hi - self.lo) * (self.b - self.a)


class _Lin:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def _bytes_label(v: float) -> str:
    for unit, div in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if v >= div:
            x = v / div
            return f"{x:.0f} {unit}" if x == int(x) else f"{x:.1f} {unit}"
    return f"{v:.0f} B"


def _size_ticks(lo: float, hi: float) -> list[float]:
    """Byte ticks on a log axis: powers of two, with 1.25/1.5/1.75 steps between when the range is narrow."""
    k0, k1 = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    for mults in ((1.0,), (1.0, 1.5), (1.0, 1.25, 1.5, 1.75)):
        ticks = [m * 2.0 ** k for k in range(k0, k1 + 1) for m in mults if lo <= m * 2.0 ** k <= hi]
        if len(ticks) >= 4:
            break
    step = max(1, math.ceil(len(ticks) / 10))
    return ticks[::step]


def _decade_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        mults = (1, 2, 5) if math.log10(hi / lo) <= 2.5 else (1,)
        ticks += [m * 10.0 ** k for m in mults if lo <= m * 10.0 ** k <= hi]
    return ticks


def _lin_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    step = next(s for s in (0.001, 0.002, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0)
                if span / s <= n) if span > 0 else 0.1
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 6) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _pct_label(v: float, step: float) -> str:
    decimals = 0 if step >= 0.01 - 1e-12 else (1 if step >= 0.001 - 1e-12 else 2)
    return f"{100 * v:.{decimals}f} %"


# ----------------------------------------------------------------------------- accuracy vs size


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` ticks at 1/2/2.5/5 x 10^k steps between ``lo`` and ``hi`` (any scale)."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [float(f"{first + i * step:.10g}") for i in range(int((hi - first) / step + 1e-9) + 1)]


def accuracy_vs_size(points: list[dict], colors: dict[str, str], *, width: int = 1100, height: int = 420,
                     legend: bool = True, y_label: str = "test accuracy", share: bool = True,
                     tick_fmt=None, higher_is_better: bool = True, x_key: str = "size_bytes",
                     x_label: str = "size of the model file (log scale)", x_ticks=None, x_tick_fmt=None,
                     legend_items: tuple[tuple[str, str], ...] | None = None, title: str | None = None) -> str:
    """Scatter of accuracy (linear y) against size (log x) with the Pareto front as a step line.

    ``points``: dicts with ``label``, ``group`` (stage/target/variant), ``name``, ``size_bytes``,
    ``accuracy``, ``pareto`` and ``tip`` (tooltip text), as from
    :func:`edgekit.report.view.size_accuracy_points`. Targets are coloured by ``colors[name]``.
    Another metric than accuracy (MAE, ROC-AUC) is plotted under ``y_label``: ``share=False``
    lets the axis leave [0, 1] and labels its ticks with ``tick_fmt``; ``higher_is_better``
    only words the title. Another x than the size (smaller is better, log scale) is read from
    ``x_key`` and drawn with ``x_label``, ``x_ticks(lo, hi)`` and ``x_tick_fmt(v)`` (default: byte
    ticks); ``legend_items`` ((mark, text) with mark stage/target/variant/pareto) and ``title``
    replace the defaults.
    """
    ml, mr, mt, mb = 62, 18, 16, 64 if legend else 44
    if not points:
        return _svg(width, 60, "accuracy vs size: nothing measured", [_text(10, 30, "nothing measured")])
    sizes = [p[x_key] for p in points]
    accs = [p["accuracy"] for p in points]
    x = _Log(min(sizes) / 1.6, max(sizes) * 1.6, ml, width - mr)
    span = max(accs) - min(accs)
    pad = max(0.004, 0.15 * span)
    if share:
        y_lo, y_hi = max(0.0, min(accs) - pad), min(1.0, max(accs) + pad)
        if y_hi - y_lo < 0.01:
            y_lo, y_hi = max(0.0, y_hi - 0.01), max(y_hi, min(1.0, y_lo + 0.01))
    else:
        pad = 0.15 * span if span > 0 else max(1e-6, 0.05 * abs(max(accs)))
        y_lo, y_hi = min(accs) - pad, max(accs) + pad
    y = _Lin(y_lo, y_hi, height - mb, mt)
    body = []
    for t in (x_ticks or _size_ticks)(min(sizes) / 1.6, max(sizes) * 1.6):
        body.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{mt}" y2="{height - mb}" stroke="{GRID}"/>')
        body.append(_text(x(t), height - mb + 16, (x_tick_fmt or _bytes_label)(t), anchor="middle"))
    yt = _lin_ticks(y_lo, y_hi) if share else _nice_ticks(y_lo, y_hi)
    step = yt[1] - yt[0] if len(yt) > 1 else 0.01
    for t in yt:
        body.append(f'<line x1="{ml}" x2="{width - mr}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{GRID}"/>')
        label = _pct_label(t, step) if share else (tick_fmt(t) if tick_fmt else f"{t:g}")
        body.append(_text(ml - 6, y(t) + 4, label, anchor="end"))
    body.append(f'<rect x="{ml}" y="{mt}" width="{width - ml - mr}" height="{height - mt - mb}" fill="none" '
                f'stroke="{AXIS}" stroke-width="0.8"/>')
    body.append(_text((ml + width - mr) / 2, height - mb + 34, x_label, anchor="middle", size=12))
    body.append(_text(14, (mt + height - mb) / 2, y_label, anchor="middle", size=12,
                      extra=f' transform="rotate(-90 14 {(mt + height - mb) / 2:.1f})"'))
    # Pareto front: staircase from the smallest point on the front to the most accurate one
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p[x_key])
    if front:
        d = [f"M{x(front[0][x_key]):.1f},{y(front[0]['accuracy']):.1f}"]
        for p in front[1:]:
            d.append(f"H{x(p[x_key]):.1f}V{y(p['accuracy']):.1f}")
        d.append(f"H{width - mr}")
        body.append(f'<path d="{"".join(d)}" fill="none" stroke="{PARETO_COLOR}" stroke-width="1.6" '
                    f'stroke-dasharray="5 3"/>')
    # marks
    placed: list[tuple[float, float, float, float]] = []
    groups: dict[tuple[int, int], list[dict]] = {}
    for p in points:
        px, py = x(p[x_key]), y(p["accuracy"])
        key = next((k for k in groups if abs(k[0] - px) < 5 and abs(k[1] - py) < 5), (round(px), round(py)))
        groups.setdefault(key, []).append(p)
        placed.append((px - 6, py - 6, px + 6, py + 6))
        color = STAGE_COLOR if p["group"] == "stage" else colors.get(p["name"], PALETTE[0])
        tip = f"<title>{_e(p['tip'])}</title>"
        if p["pareto"]:
            body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="9" fill="none" stroke="{PARETO_COLOR}" '
                        f'stroke-width="2"/>')
        if p["group"] == "stage":
            body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{color}" stroke="#fff">{tip}</circle>')
        else:
            fill = color if p["group"] == "target" else "#fff"
            body.append(f'<path d="{_diamond(px, py, 6)}" fill="{fill}" stroke="{color}" stroke-width="1.8">'
                        f"{tip}</path>")
    for (gx, gy), members in groups.items():
        label = _merge_labels([m["label"] for m in members])
        w, h = CHAR_W * len(label) + 4, 13
        best = None
        for dx, dy in ((11, -8), (11, 12), (-11 - w, -8), (-11 - w, 12), (-w / 2, -14), (-w / 2, 24),
                       (11, -24), (11, 28), (-11 - w, -24), (-11 - w, 28), (-w / 2, -30), (-w / 2, 40),
                       (11, -40), (11, 44), (-11 - w, -40), (-11 - w, 44)):
            box = (gx + dx, gy + dy - h + 3, gx + dx + w, gy + dy + 3)
            inside = box[0] >= ml and box[2] <= width - mr and box[1] >= mt and box[3] <= height - mb
            hits = sum(1 for b in placed if box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3])
            score = hits + (0 if inside else 10)
            if best is None or score < best[0]:
                best = (score, dx, dy, box)
            if score == 0:
                break
        _, dx, dy, box = best
        placed.append(box)
        anyp = members[0]
        color = STAGE_COLOR if anyp["group"] == "stage" else colors.get(anyp["name"], PALETTE[0])
        # a leader line when the label had to move away from its mark
        nx, ny = min(max(gx, box[0]), box[2]), min(max(gy, box[1]), box[3])
        if math.hypot(nx - gx, ny - gy) > 14:
            body.append(f'<line x1="{gx:.1f}" y1="{gy:.1f}" x2="{nx:.1f}" y2="{ny:.1f}" stroke="{color}" '
                        f'stroke-width="0.8" stroke-opacity="0.6"/>')
        body.append(_text(gx + dx + 2, gy + dy, label, fill=color, weight="600"))
    # legend
    items = legend_items or (
        ("stage", "stage (its TFLite file; Keras accuracy)" if share else "stage (its TFLite file; Keras model)"),
        ("target", "target (measured in its runtime)"),
        ("variant", "other format of a target"), ("pareto", "on the Pareto front"))
    lx, ly = ml, height - 12
    for mark, label in items if legend else ():
        cx, cy = lx + 5, ly - 4
        if mark == "stage":
            body.append(f'<circle cx="{cx}" cy="{cy}" r="5" fill="{STAGE_COLOR}"/>')
        elif mark == "pareto":
            body.append(f'<circle cx="{cx}" cy="{cy}" r="6" fill="none" stroke="{PARETO_COLOR}" stroke-width="2"/>')
        else:
            fill = PALETTE[0] if mark == "target" else "#fff"
            body.append(f'<path d="{_diamond(cx, cy, 6)}" fill="{fill}" stroke="{PALETTE[0]}" stroke-width="1.5"/>')
        body.append(_text(lx + 16, ly, label))
        lx += 16 + CHAR_W * len(label) + 24
    title = title or ("Test accuracy against model size for every stage and target, Pareto front marked" if share else
                      f"{y_label[:1].upper()}{y_label[1:]} against model size for every stage and target, "
                      "Pareto front marked")
    return _svg(width, height, title, body)


# ----------------------------------------------------------------------------- latency


def latency(rows: list[dict], colors: dict[str, str], *, width: int = 520) -> str:
    """Per artifact: a p50–p90 box, a whisker to p99 and a dot at p50, on a log ms axis.

    ``rows``: dicts with ``label``, ``name``, ``measured_on``, ``p50``, ``p90``, ``p99``, their
    formatted ``p50_text``/``p90_text``/``p99_text`` and ``text`` (all three, for the tooltip), as
    from :func:`edgekit.report.view.latency_rows`. The percentiles stand in a column on the right.
    """
    ml, mr, mt, row_h = 250, 150, 12, 40
    rows = [r for r in rows if r["p50"]]
    width = max(width, 660)
    if not rows:
        return _svg(width, 60, "latency: nothing measured", [_text(10, 30, "no latency measured")])
    lo = min(r["p50"] for r in rows) / 1.3
    hi = max((r["p99"] or r["p90"] or r["p50"]) for r in rows) * 1.3
    height = mt + row_h * len(rows) + 46
    x = _Log(lo, hi, ml, width - mr)
    body = []
    bottom = mt + row_h * len(rows)
    for i in range(len(rows)):
        if i % 2 == 0:
            body.append(f'<rect x="0" y="{mt + row_h * i}" width="{width}" height="{row_h}" fill="#f8fafc"/>')
    for t in _decade_ticks(lo, hi):
        body.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{mt}" y2="{bottom}" stroke="{GRID}"/>')
        body.append(_text(x(t), bottom + 15, f"{t:g}", anchor="middle", size=10))
    body.append(_text((ml + width - mr) / 2, bottom + 33, "ms per inference (log scale)", anchor="middle"))
    for i, r in enumerate(rows):
        cy = mt + row_h * i + row_h / 2
        color = colors.get(r["name"], PALETTE[0])
        body.append(f'<g class="latency-row" data-source="{_e(r["source"])}">')
        body.append(_text(8, cy - 2, r["label"], fill="#0f172a", weight="600"))
        body.append(_text(8, cy + 12, r["source"], size=10))
        tip = f"<title>{_e(r['label'])}: {_e(r['text'])}</title>"
        if r.get("estimated"):
            body.append(f'<path d="{_diamond(x(r["p50"]), cy, 6)}" fill="#fff" stroke="{color}" stroke-width="1.5">'
                        f"{tip}</path>")
            body.append(_text(width - mr + 10, cy - 2, f"p50 {r['p50_text']} ms", size=11, fill="#0f172a",
                              weight="600"))
            body.append(_text(width - mr + 10, cy + 12, "estimated", size=10))
            body.append("</g>")
            continue
        p50, p90, p99 = r["p50"], r["p90"] or r["p50"], r["p99"] or r["p90"] or r["p50"]
        body.append(f'<line x1="{x(p50):.1f}" x2="{x(p99):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="{color}" '
                    f'stroke-width="1.5"/>')
        body.append(f'<line x1="{x(p99):.1f}" x2="{x(p99):.1f}" y1="{cy - 6:.1f}" y2="{cy + 6:.1f}" '
                    f'stroke="{color}" stroke-width="1.5"/>')
        bw = max(3.0, x(p90) - x(p50))
        body.append(f'<rect x="{x(p50):.1f}" y="{cy - 7:.1f}" width="{bw:.1f}" height="14" rx="2" fill="{color}" '
                    f'fill-opacity="0.35" stroke="{color}">{tip}</rect>')
        body.append(f'<circle cx="{x(p50):.1f}" cy="{cy:.1f}" r="3.5" fill="{color}"/>')
        body.append(_text(width - mr + 10, cy - 2, f"p50 {r['p50_text']} ms", size=11, fill="#0f172a",
                          weight="600"))
        body.append(_text(width - mr + 10, cy + 12, f"p90 {r['p90_text']} · p99 {r['p99_text']}", size=10))
        body.append("</g>")
    return _svg(width, height, "Latency per target: box p50 to p90, whisker to p99", body)


# ----------------------------------------------------------------------------- confusion matrix


def confusion_matrix(matrix: list[list[int]], labels: list[str]) -> str:
    """Rows true class, columns predicted; the diagonal in blue, errors in red, shaded by row share."""
    n = len(matrix)
    cell = max(8, min(34, 360 // max(n, 1)))
    ml, mt = 46, 40
    width, height = ml + cell * n + 12, mt + cell * n + 12
    body = [_text(ml + cell * n / 2, 14, "predicted class", anchor="middle", size=12),
            _text(12, mt + cell * n / 2, "true class", anchor="middle", size=12,
                  extra=f' transform="rotate(-90 12 {mt + cell * n / 2:.1f})"')]
    show_numbers = cell >= 18
    for j, lab in enumerate(labels):
        if show_numbers or j % 5 == 0:
            body.append(_text(ml + cell * j + cell / 2, mt - 6, lab, anchor="middle", size=10))
            body.append(_text(ml - 6, mt + cell * j + cell / 2 + 4, lab, anchor="end", size=10))
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, v in enumerate(row):
            share = v / total
            if v == 0:
                fill = "#ffffff"
            elif i == j:
                fill = f"rgba(37,99,235,{0.15 + 0.85 * share:.3f})"
            else:
                fill = f"rgba(220,38,38,{0.15 + 0.85 * min(1.0, share * 3):.3f})"
            cx, cy = ml + cell * j, mt + cell * i
            body.append(f'<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" fill="{fill}" stroke="{GRID}">'
                        f"<title>true {_e(labels[i])}, predicted {_e(labels[j])}: {v} ({100 * share:.1f} % of "
                        f"row)</title></rect>")
            if show_numbers and v:
                dark = (i == j and share > 0.5) or (i != j and share * 3 > 0.6)
                body.append(_text(cx + cell / 2, cy + cell / 2 + 4, str(v), anchor="middle", size=10,
                                  fill="#fff" if dark else "#0f172a"))
    return _svg(width, height, "Confusion matrix of the primary deployed model", body, cls="plot cm")


# ----------------------------------------------------------------------------- horizontal bars


def sparsity_bars(items: list[tuple[str, float]], target: float | None, labels: list[str], target_label: str = "",
                  *, width: int = 520) -> str:
    """Per layer: share of zero weights (0–100 %), a dashed line at the target sparsity.

    ``labels``: the formatted sparsity of each layer; ``target_label``: the formatted target.
    """
    ml, mr, mt, row_h = 130, 60, 24, 26
    height = mt + row_h * len(items) + 30
    x = _Lin(0.0, 1.0, ml, width - mr)
    body = []
    bottom = mt + row_h * len(items)
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        body.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{mt}" y2="{bottom}" stroke="{GRID}"/>')
        body.append(_text(x(t), bottom + 15, f"{100 * t:.0f} %", anchor="middle", size=10))
    for i, ((name, v), lab) in enumerate(zip(items, labels)):
        cy = mt + row_h * i + row_h / 2
        body.append(_text(ml - 8, cy + 4, name, anchor="end", fill="#0f172a"))
        body.append(f'<rect x="{ml}" y="{cy - 7:.1f}" width="{max(1.5, x(v) - ml):.1f}" height="14" rx="2" '
                    f'fill="{PALETTE[0]}"><title>{_e(name)}: {_e(lab)} zeros</title></rect>')
        body.append(_text(x(v) + 6, cy + 4, lab, size=10))
    if target is not None:
        body.append(f'<line x1="{x(target):.1f}" x2="{x(target):.1f}" y1="{mt - 4}" y2="{bottom}" '
                    f'stroke="{PARETO_COLOR}" stroke-width="1.5" stroke-dasharray="4 3"/>')
        body.append(_text(x(target), mt - 8, f"target {target_label}", anchor="middle", size=10,
                          fill=PARETO_COLOR))
    return _svg(width, height, "Sparsity of each pruned layer against the target", body)


def budget_bars(rows: list[dict], *, width: int = 520) -> str:
    """Per target and budget: the measured amount as a share of the budget (the track = 100 %).

    ``rows``: dicts with ``label``, ``share`` (None when unmeasured), ``status`` and ``text``.
    Over-budget bars run past the budget line in red.
    """
    ml, mr, mt, row_h = 120, 16, 10, 36
    rows = [r for r in rows if r["status"] != "none"]
    if not rows:
        return _svg(width, 40, "no flash or RAM budget", [_text(8, 24, "no flash or RAM budget to compare with")])
    height = mt + row_h * len(rows) + 30
    top = max([1.0, *[r["share"] or 0 for r in rows]])
    x = _Lin(0.0, top, ml, width - mr)
    body = []
    bottom = mt + row_h * len(rows)
    for i, r in enumerate(rows):
        cy = mt + row_h * i + 11
        color = STATUS_COLOR[r["status"]]
        body.append(_text(ml - 8, cy + 4, r["label"], anchor="end", fill="#0f172a"))
        body.append(f'<rect x="{ml}" y="{cy - 5}" width="{x(1.0) - ml:.1f}" height="10" rx="2" fill="#f1f5f9" '
                    f'stroke="#cbd5e1"/>')
        if r["share"] is not None:
            body.append(f'<rect x="{ml}" y="{cy - 5}" width="{max(2.0, x(r["share"]) - ml):.1f}" height="10" rx="2" '
                        f'fill="{color}"><title>{_e(r["label"])}: {_e(r["text"])}</title></rect>')
        body.append(_text(ml, cy + 19, r["text"], size=10))
    body.append(f'<line x1="{x(1.0):.1f}" x2="{x(1.0):.1f}" y1="{mt - 2}" y2="{bottom}" stroke="#0f172a" '
                f'stroke-dasharray="3 2"/>')
    body.append(_text(x(1.0), bottom + 14, "budget (100 %)", anchor="end", size=10))
    body.append(_text(ml, bottom + 14, "0", anchor="middle", size=10))
    return _svg(width, height, "Flash and RAM used, as a share of each target's budget", body)


def layer_error_bars(items: list[tuple[str, float | None, str | None]], worst: list[str], *, width: int = 520) -> str:
    """Per layer (execution order): the SNR the layer itself lost in int8 (dB), the worst layers in
    red; a layer kept at higher precision by selective precision says which (``(float)``)."""
    ml, mr, mt, row_h = 150, 70, 12, 22
    height = mt + row_h * len(items) + 30
    top = max([1.0, *[v for _, v, _ in items if v is not None and v > 0]])
    x = _Lin(0.0, top, ml, width - mr)
    body, bottom = [], mt + row_h * len(items)
    for t in _nice_ticks(0.0, top, 4):
        if 0 <= t <= top:
            body.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{mt}" y2="{bottom}" stroke="{GRID}"/>')
            body.append(_text(x(t), bottom + 15, f"{t:g} dB", anchor="middle", size=10))
    for i, (name, v, kept) in enumerate(items):
        cy = mt + row_h * i + row_h / 2
        label = f"{name} ({kept})" if kept else name
        body.append(_text(ml - 8, cy + 4, label, anchor="end", fill="#0f172a",
                          weight="bold" if name in worst else None))
        value = "–" if v is None else f"{v:.1f} dB"
        if v is not None and v > 0:
            color = STATUS_COLOR["fail"] if name in worst else PALETTE[0]
            body.append(f'<rect x="{ml}" y="{cy - 6:.1f}" width="{max(1.5, x(v) - ml):.1f}" height="12" rx="2" '
                        f'fill="{color}"><title>{_e(name)}: SNR drop {_e(value)}</title></rect>')
            body.append(_text(x(v) + 6, cy + 4, value, size=10))
        else:
            body.append(_text(ml + 4, cy + 4, value, size=10))
    body.append(_text(ml, bottom + 28, "SNR lost by the layer itself (its inputs' SNR minus its own)", size=10))
    return _svg(width, height + 10, "Per-layer int8 error: SNR drop of each layer", body)
