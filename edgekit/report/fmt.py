"""How a number looks in a report: one formatter per kind of quantity, shared by every renderer.

``report.md``, ``report.html`` and the multi-run comparison format every value through these
functions, so the same number is the same string everywhere (the tests rely on it). Missing
values (``None``) render as an en dash.
"""

from __future__ import annotations

import math

DASH = "–"
KIB, MIB = 1024, 1024 * 1024


def _sig(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` significant digits, no exponent, no trailing zeros lost on purpose."""
    if v == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
    return f"{v:.{decimals}f}"


def fmt_bytes(v) -> str:
    """Bytes in B, KiB or MiB: ``512 B``, ``8.2 KiB``, ``977 KiB``, ``47.7 MiB``."""
    if v is None:
        return DASH
    if abs(v) < KIB:
        return f"{int(v)} B"
    unit, div = ("KiB", KIB) if abs(v) < MIB else ("MiB", MIB)
    x = v / div
    return f"{x:.0f} {unit}" if abs(x) >= 100 else f"{x:.1f} {unit}"


def fmt_pct(v) -> str:
    """A share in [0, 1] as a percentage with one decimal: ``98.6 %``."""
    return DASH if v is None else f"{100 * v:.1f} %"


def fmt_share(v) -> str:
    """A share of a budget; small shares keep two significant digits (``0.018 %``)."""
    if v is None:
        return DASH
    p = 100 * v
    return f"{p:.1f} %" if p >= 0.1 or p == 0 else f"{_sig(p, 2)} %"


def fmt_ms(v) -> str:
    """Milliseconds with three significant digits (``0.0702``, ``1.54``, ``123``), no unit."""
    if v is None:
        return DASH
    return f"{v:.0f}" if abs(v) >= 100 else _sig(v, 3)


def fmt_ms_unit(v) -> str:
    """:func:`fmt_ms` with its unit: ``0.0702 ms``."""
    return DASH if v is None else f"{fmt_ms(v)} ms"


def fmt_latency(v, source: str) -> str:
    """A latency with where it comes from, the one way a latency is shown in a report:
    ``3.89 ms (estimated)``, ``0.0569 ms (host x86_64, not the device)``, ``12.3 ms (measured on
    rpi:pi4)``. ``source`` is the label of :func:`edgekit.report.view.latency_source`. A latency
    that was not measured is an en dash; its source, when there is one, still follows it."""
    if v is None:
        return f"{DASH} ({source})" if source else DASH
    return f"{fmt_ms_unit(v)} ({source})"


def fmt_latency_pcts(lat: dict | None, source: str) -> str:
    """Measured percentiles with their source: ``p50 0.0569 · p90 0.0612 · p99 0.0901 ms (host x86_64,
    not the device)``; an en dash when nothing was measured."""
    lat = lat or {}
    if lat.get("p50") is None:
        return DASH
    return (f"p50 {fmt_ms(lat.get('p50'))} · p90 {fmt_ms(lat.get('p90'))} · p99 {fmt_ms(lat.get('p99'))} ms "
            f"({source})")


def fmt_seconds(v) -> str:
    """Wall-clock seconds with one decimal: ``32.6``."""
    return DASH if v is None else f"{v:.1f}"


def fmt_int(v) -> str:
    """An integer with thin grouping: ``343,408``."""
    return DASH if v is None else f"{int(v):,}"


def fmt_points(v) -> str:
    """An accuracy difference in percentage points with its sign: ``+0.3 pt``, ``−1.2 pt``."""
    if v is None:
        return DASH
    p = 100 * v
    if round(p, 1) == 0:
        return "±0.0 pt"
    return f"+{p:.1f} pt" if p > 0 else f"−{-p:.1f} pt"


def fmt_delta(v, digits: int = 3) -> str:
    """A signed difference of a metric in its own units: ``+1.23``, ``−0.0041``, ``±0``."""
    if v is None:
        return DASH
    if v == 0 or float(_sig(abs(v), digits)) == 0:
        return "±0"
    return f"+{_sig(v, digits)}" if v > 0 else f"−{_sig(-v, digits)}"


def fmt_drop(v, unit: str) -> str:
    """A loss of quality against the teacher in the quality gate's unit, one decimal: ``10.8 pt``
    (accuracy or ROC-AUC points), ``3.2 %`` (MAE increase in percent of the teacher's); a gain
    reads as a negative loss: ``−0.3 pt``."""
    if v is None:
        return DASH
    text = f"{abs(v):.1f} {unit}"
    return f"−{text}" if v < 0 and round(abs(v), 1) != 0 else text


def fmt_ratio(v) -> str:
    """A compression ratio: ``38.3×``."""
    return DASH if v is None else f"{v:.1f}×"


def fmt_text(v) -> str:
    """Any other value as text; floats get three significant digits."""
    if v is None:
        return DASH
    if isinstance(v, float):
        return _sig(v, 3)
    return str(v)


def fmt_num(v, spec: str = ".4f", missing: str = "n/a") -> str:
    """``v`` with the format ``spec`` for one-line summaries; ``missing`` when ``v`` is None or
    not a number (a metric the task or the device did not measure)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return missing
    return format(v, spec)
