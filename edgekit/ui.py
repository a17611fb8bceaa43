"""What the command line shows: progress while a run or a study works, and the closing text.

The presentation layer of :mod:`edgekit.cli`: :class:`RunProgress` (a bar per training stage, a
line per stage), :class:`TuneProgress` (a bar over a study's trials, a line per trial), the
closing table of a run (:func:`run_summary`) and the text of ``edgekit estimate``
(:func:`render_estimate`). Everything reads the dicts the library returns (``report.json``, an
estimate, tune events); nothing here computes a number. rich loads only when bars are drawn on a
terminal, and nothing here imports TensorFlow.
"""

from __future__ import annotations

import sys

__all__ = ["Bars", "RunProgress", "TuneProgress", "render_estimate", "run_summary"]


def run_summary(report: dict) -> str:
    """The closing table of a run: per target its size, main metric, latency with its source, verdict."""
    from .report.fmt import fmt_bytes, fmt_latency
    from .report.view import latency_shown, main_metric, terminal_verdict

    m = main_metric(report)  # accuracy, MAE or ROC-AUC
    rows = [("target", "format", "size", "arena", m.label, "latency p50", "verdict")]
    for t in report["targets"]:
        ms, source = latency_shown(t)
        rows.append((t["name"], t["format"], fmt_bytes(t.get("size_bytes")), fmt_bytes(t.get("arena_bytes")),
                     m.fmt(m.value(t)), fmt_latency(ms, source), terminal_verdict(t)))
    if len(rows) == 1:
        return "no targets in this run"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)



class Bars:
    """Progress on stderr (nothing when not ``enabled``).

    On a terminal: live rich bars (description, bar, done/total, an info field, time elapsed)
    with lines printed above them. Elsewhere (a pipe, a CI log): no bars, only the lines, so a
    log holds each stage once instead of redrawn frames.
    """

    label_width = 16

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn(f"{{task.description:<{self.label_width}}}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=False)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def say(self, text: str) -> None:
        """One line above the bars (or on its own without a terminal)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            import click

            click.echo(text, err=True)



class RunProgress(Bars):
    """A bar per training stage (epochs) on a terminal, and one line per stage when it ends."""

    label_width = 18

    _SHOWN = ("loss", "accuracy", "val_accuracy", "mae", "val_mae", "val_loss")

    def __init__(self, enabled: bool):
        super().__init__(enabled)
        self._tasks: dict[str, int] = {}
        self._epochs: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._cached: list[str] = []

    def __exit__(self, *exc):
        self._flush_cached()
        super().__exit__(*exc)

    def _flush_cached(self) -> None:
        cached, self._cached = self._cached, []
        if cached:
            names = ", ".join(cached) if len(cached) <= 6 else f"{cached[0]} … {cached[-1]}"
            self.say(f"  {len(cached)} stage{'s' if len(cached) != 1 else ''} up to date, reused ({names})")

    def stage(self, name: str, status: str) -> None:
        import time

        if status == "cached":
            self._cached.append(name)
            return
        self._flush_cached()
        if status == "interrupted":
            self.say(f"  {name:<{self.label_width}} interrupted in an earlier run (killed or crashed): not finished")
            return
        if status == "running":
            self._started[name] = time.perf_counter()
            return
        took = time.perf_counter() - self._started.pop(name, time.perf_counter())
        if status == "done" and name in self._tasks:
            return  # its bar says it
        detail = self._epochs.get(name, "")
        timing = f" in {took:.1f} s" if status in ("done", "failed") else ""
        self.say(f"  {name:<{self.label_width}} {status}{timing}{'  ' + detail if detail else ''}")

    def epoch(self, stage: str, done: int, total: int, logs: dict) -> None:
        info = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k in self._SHOWN)
        self._epochs[stage] = f"epoch {done}/{total} {info}".rstrip()
        if self._bar is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total, info="")
        self._bar.update(self._tasks[stage], completed=done, info=info)



class TuneProgress(Bars):
    """A progress bar over a study's trials, a line per finished trial."""

    label_width = 8

    def __init__(self, enabled: bool):
        super().__init__(enabled)
        self._task = None

    def event(self, kind: str, info: dict) -> None:
        if not self.enabled:
            return
        from .report.tune import SCHEME_TEXT, verdict_word

        if kind == "teacher":
            acc = info.get("accuracy")
            self.say("  teacher: training (once for all trials)" if acc is None else
                     f"  teacher: accuracy {100 * acc:.2f} %")
        elif kind == "start" and self._bar is not None:
            self._task = self._bar.add_task("trials", total=info["trials"], completed=info["done"],
                                            info=f"{info['jobs']} in parallel")
        elif kind == "trial":
            p = info["params"]
            acc = "" if info.get("accuracy") is None else f" acc {100 * info['accuracy']:.2f} %"
            flash = "" if info.get("flash_bytes") is None else f" flash {info['flash_bytes']} B"
            arena = "" if info.get("arena_bytes") is None else f" arena {info['arena_bytes']} B"
            self.say(f"  #{info['number']} width {p['width']:g} prune {p['prune']} "
                     f"{SCHEME_TEXT[p['scheme']]}: {verdict_word(info)}{flash}{arena}{acc}")
            if self._task is not None and not info.get("interrupted") and info.get("duplicate_of") is None:
                self._bar.advance(self._task)



def render_estimate(r: dict, *, per_op: bool) -> str:
    """An ``edgekit estimate`` result as text: the estimate with its basis, whether the model lies
    inside the calibration set's range, the expected error (where the fit can state one), the
    error band check and sources (or why there is no estimate), and with ``per_op`` a table of
    every op."""
    b = r["estimate_basis"]
    by_class = ", ".join(f"{k} {v['macs'] / 1e6:.3g} M" for k, v in r["by_class"].items() if v["macs"])
    lines = [f"model: {r['macs'] / 1e6:.4g} M MACs ({by_class or 'none'}) in {r['ops']} ops, "
             f"{r['weight_bytes']} weight bytes"]
    if r["latency_estimate_ms"] is None:
        lines.insert(0, f"{r['target']}: no estimate: {r['reason']}")
    else:
        fit = b["fit"]
        flagged = r.get("estimate_in_range") is False
        lines.insert(0, f"{r['target']}: {r['latency_estimate_ms']:.4g} ms estimated"
                        f"{' OUTSIDE its calibration range, no verdict' if flagged else ''} "
                        f"({b['core']} @ {b['target_clock_mhz']:g} MHz, {b['kernels']}"
                        f"{'' if b['runtime'] == b['kernels'] else ', ' + b['runtime']})")
        if flagged:
            lines.append(f"out of range: {r['estimate_range_reason']}")
        if fit.get("loo_meaningful") is False:
            lines.append(f"expected error: none stated: {fit['loo_note']}")
        else:
            lines.append(f"expected error: leave-one-out median {fit['loo_median_abs_pct_error']} %, "
                         f"max {fit['loo_max_abs_pct_error']} % over {fit['n_points']} published models")
        lines.append(f"error band: ±{fit['band']['pct']} % (90 %)" if fit.get("band") else
                     f"error band: none ({fit.get('band_note') or 'not supported by held-out points'})")
        lines.append(f"calibrated on: {b['board']} ({b['calibration_set']})")
        lines += [f"  source: {s}" for s in b["sources"]]
        m = r["calibration_match"]
        if m:
            loo = "n/a" if m["loo_estimate_ms"] is None else f"{m['loo_estimate_ms']:.4g} ms ({m['loo_pct_error']:+.0f} %)"
            lines.append(f"this is calibration model {m['model']}: published {m['published_ms']:.4g} ms; "
                         f"a fit without it estimates {loo}")
        lines += [f"note: {n}" for n in r["notes"]]
    if per_op:
        lines.append("| # | op | class | MACs | bytes read | bytes written | est. ms |")
        lines.append("|---|---|---|---|---|---|---|")
        for o in r["per_op"]:
            est = o.get("estimate_ms")
            lines.append(f"| {o['index']} | {o['op']} | {o['op_class']} | {o['macs']} | {o['bytes_read']} | "
                         f"{o['bytes_written']} | {'-' if est is None else f'{est:.4g}'} |")
    return "\n".join(lines)

