"""report.json, report.md and report.html from one real tiny run; the page in headless Chromium;
several runs compared through the CLI.

The run (digits, targets mobile, rpi4 and cortex-m4) is the session's tiny run (tests/conftest.py).
Numbers are compared as the strings :mod:`edgekit.report.fmt` makes of report.json, so the
tolerance is the formatting itself (0.1 % for accuracy, 3 significant digits for ms).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.report import budget_checks, render_html, render_markdown, write_reports
from edgekit.report import view
from edgekit.report.fmt import fmt_bytes, fmt_latency, fmt_latency_pcts, fmt_ms, fmt_pct, fmt_share

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, finished_run):
    """A finished tiny run (this module's copy of the session's): (run directory, report dict)."""
    from conftest import copy_run

    run = copy_run(finished_run, tmp_path_factory.mktemp("report"))
    return run.out, run.report


# ----------------------------------------------------------------------------- parsing helpers


class _Tables(HTMLParser):
    """Cell texts of every ``<table id=...>``, row by row, and each row's ``data-key``."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self._table = self._row = self._cell = None
        self._key = None
        self.selfcheck: str | None = None
        self._in_selfcheck = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row, self._key = [], a.get("data-key")
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "div" and a.get("id") == "selfcheck":
            self._in_selfcheck, self.selfcheck = True, ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._key is not None:  # body rows only
                self._table.append((self._key, self._row))
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._in_selfcheck:
            self._in_selfcheck = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_selfcheck:
            self.selfcheck += data


def html_tables(text: str) -> _Tables:
    p = _Tables()
    p.feed(text)
    return p


def md_tables(text: str) -> dict[str, list[list[str]]]:
    """Body rows of each Markdown table, keyed by the ``##``/``###`` heading above it."""
    out, heading = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not line.startswith("|---"):
            out.setdefault(heading, []).append([c.strip() for c in line.strip("|").split(" | ")])
    return {k: rows[1:] for k, rows in out.items()}  # drop the header row


def _budget_word(cell: str) -> str:
    """An HTML budget cell reads ``pass 8.2 KiB …``; the Markdown one ``pass: 8.2 KiB …``."""
    for word in ("pass, estimated", "FAIL, estimated", "pass", "FAIL", "unchecked"):
        if cell.startswith(word + " "):
            return f"{word}: {cell[len(word) + 1:]}"
    return cell


# ----------------------------------------------------------------------------- report content


def test_report_files_and_additions(tiny_run):
    out, report = tiny_run
    assert json.loads((out / "report.json").read_text()) == report
    for name in ("report.md", "report.html"):
        assert (out / name).stat().st_size > 1000
    assert not [p for p in out.glob(".report*")], "temporary files left behind"
    pruned = next(s for s in report["stages"] if s["name"] == "pruned")
    metrics = json.loads((out / "stages" / "pruned" / "metrics.json").read_text())
    assert pruned["per_layer"] == metrics["per_layer"] and pruned["per_layer"]
    for t in report["targets"]:
        checks = {c["budget"]: c for c in t["budget"]["checks"]}
        assert checks["flash"]["measured"] == t["size_bytes"]
        assert checks["flash"]["share"] == pytest.approx(t["size_bytes"] / t["budget"]["flash_bytes"], rel=1e-5)
        ram = t["arena_bytes"] if t["kind"] == "mcu" else t["rss_growth_bytes"]
        assert checks["ram"]["measured"] == ram
        # measured on the host, never passed off as a device number: checked against the calibrated
        # estimate where the board has one, else unchecked
        if t["budget"]["latency_basis"] == "estimate":
            assert checks["latency"]["what"].startswith("estimated p50")
            assert checks["latency"]["measured"] == t["latency_estimate_ms"] and checks["latency"]["status"] != "unchecked"
        else:  # no estimate, or one outside its calibration range: no verdict
            assert t["latency_estimate_ms"] is None or t["estimate_in_range"] is False
            assert checks["latency"]["status"] == "unchecked"
        failed = {c["budget"] for c in checks.values() if c["status"] == "fail"}
        assert bool(failed) == (not t["budget"]["ok"])


def test_markdown_and_html_show_the_numbers_of_report_json(tiny_run):
    out, report = tiny_run
    md = (out / "report.md").read_text()
    page = html_tables((out / "report.html").read_text())
    md_t = md_tables(md)
    # the three tables hold the same cells in both renderings
    for table_id, heading in (("targets", "Targets"), ("stages", "Stages"), ("budgets", "Budgets")):
        html_rows = [[_budget_word(c) for c in row] for _, row in page.tables[table_id]]
        assert html_rows == md_t[heading], table_id
    # every target's accuracy, size and p50 appear, formatted the same, in its row of both
    md_rows = {row[0]: row for row in md_t["Targets"]}
    html_rows = {row[0]: row for _, row in page.tables["targets"]}
    for label, v, _ in view.target_entries(report):
        src = view.latency_source(v)
        expected = [fmt_pct(v["accuracy"]), fmt_bytes(v["size_bytes"]), fmt_latency_pcts(v["latency_ms"], src["label"]),
                    fmt_pct(v["agreement_with_float"])]
        if src["estimate"]:
            expected.append(fmt_latency(v["latency_estimate_ms"], src["estimate"]["label"]))
        for want in expected:
            assert want in md_rows[label], (label, want, md_rows[label])
            assert want in html_rows[label], (label, want, html_rows[label])
    mcu = next(t for t in report["targets"] if t["kind"] == "mcu")
    assert fmt_bytes(mcu["arena_bytes"]) in md_rows[mcu["name"]]
    # budgets: "flash 8.2 KiB of 977 KiB = 0.8 %" for each target, in both
    for t in report["targets"]:
        flash = f"{fmt_bytes(t['size_bytes'])} of {fmt_bytes(t['budget']['flash_bytes'])} = " \
                f"{fmt_share(t['size_bytes'] / t['budget']['flash_bytes'])}"
        assert flash in md and flash in (out / "report.html").read_text()
    for s in report["stages"]:
        assert fmt_pct(s["accuracy"]) in dict((r[0], r) for r in md_t["Stages"])[s["name"]]


def test_report_sections(tiny_run):
    out, report = tiny_run
    text = (out / "report.html").read_text()
    for anchor in ('id="pareto"', 'id="budget-plot"', 'id="latency-plot"', 'id="sparsity-plot"', 'id="confusion"',
                   'id="per-layer"', 'id="run"', report["git_commit"] or "git commit", report["versions"]["tensorflow"]):
        assert anchor in text, anchor
    groups = view.per_layer_groups(report)  # mobile and rpi4 share one int8 model's numbers; cortex-m4 its own
    assert sorted(len(g["targets"]) for g in groups) == [1, 2]
    assert text.count("<svg") == 5 + len(groups)
    # self-contained: nothing loaded from anywhere (the SVG namespace is a name, not a fetch)
    assert "<link" not in text and " src=" not in text and "@import" not in text
    assert text.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0
    md = (out / "report.md").read_text()
    assert "Pareto front" in md and "Confusion matrix" in md and "Per-layer sparsity" in md
    assert "## Per-layer quantization error" in md and "## Selective precision" not in md  # selective is off
    for t in report["targets"]:  # measured in the pipeline on the validation split, worst layers by Keras name
        pl = t["per_layer_error"]
        assert pl["split"] == "val" and 0 < pl["samples"] <= 200 and pl["worst"], t["name"]  # the val split: 144
        assert {r["layer"] for r in pl["layers"]} >= set(pl["worst"]) and pl["layers"][-1]["layer"] == "logits"
        assert f"worst layers (largest SNR drop: where the int8 error enters): {', '.join(pl['worst'])}" in md
        assert "selective_precision" not in t
    cm = view.confusion(report)
    assert sum(map(sum, cm[1])) == report["dataset"]["test"]


def test_formatting_is_shared():
    assert fmt_bytes(1_000_000) == "977 KiB" and fmt_bytes(8376) == "8.2 KiB" and fmt_bytes(512) == "512 B"
    assert fmt_bytes(50_000_000) == "47.7 MiB"
    assert fmt_share(6246 / 1_000_000) == "0.6 %" and fmt_share(9360 / 50_000_000) == "0.019 %"
    assert fmt_pct(0.98611) == "98.6 %" and fmt_pct(None) == "–"
    assert fmt_ms(0.0702365) == "0.0702" and fmt_ms(1.5438) == "1.54" and fmt_ms(123.4) == "123"
    c = {"limit": 1_000_000, "measured": 6246, "unit": "bytes", "share": 0.006246, "status": "pass", "note": None}
    assert view.check_text(c) == "6.1 KiB of 977 KiB = 0.6 %, 970 KiB left"


def _over_budget(report: dict) -> dict:
    """A copy of ``report`` whose MCU model is 1.2 MB against its 1 MB flash budget."""
    r = copy.deepcopy(report)
    t = next(t for t in r["targets"] if t["kind"] == "mcu")
    t["size_bytes"] = 1_234_567
    t["budget"].update(flash_bytes=1_000_000, ok=False,
                       violations=["flash: model 1234567 bytes > budget 1000000 bytes"])
    t["budget"]["checks"] = budget_checks(t)
    return r


def test_over_budget_says_by_how_much(tiny_run):
    _, report = tiny_run
    r = _over_budget(report)
    mcu = next(t for t in r["targets"] if t["kind"] == "mcu")
    flash = next(c for c in mcu["budget"]["checks"] if c["budget"] == "flash")
    assert flash["status"] == "fail" and flash["share"] > 1
    assert view.verdict(r)[0] == "fail"
    md, html = render_markdown(r), render_html(r)
    line = "1.2 MiB of 977 KiB = 123.5 %, 229 KiB over"
    assert "**OVER BUDGET**" in md and f"FAIL: {line}" in md
    assert line in html and '<span class="chip fail">FAIL</span>' in html


def test_write_reports_is_atomic_and_renders_first(tmp_path, tiny_run, monkeypatch):
    _, report = tiny_run
    write_reports(tmp_path, report)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"report.json", "report.md", "report.html"}
    import edgekit.report as rep

    def boom(_):
        raise RuntimeError("render failed")

    monkeypatch.setattr(rep, "render_html", boom)
    with pytest.raises(RuntimeError):
        rep.write_reports(tmp_path, {**report, "recipe": "changed"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ----------------------------------------------------------------------------- in a real browser


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def chromium_dom(page: Path, *, screenshot: Path | None = None) -> str:
    """The DOM of ``page`` as headless Chromium renders it from disk (scripts run); asserts that
    Chromium exited cleanly and logged no console error or uncaught exception. Without Chromium
    the calling test skips, and fails under CI=true (tests/conftest.py require_tool)."""
    from conftest import require_tool

    require_tool("chromium", missing=None if CHROMIUM else "chromium not found",
                 hint="apt-get install chromium; CI installs it")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    shot = [f"--screenshot={screenshot}"] if screenshot else []
    try:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
             "--window-size=1280,4000", *shot, "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    return proc.stdout


def test_html_in_headless_chromium(tiny_run, tmp_path):
    """Open report.html from disk in Chromium: every figure has a size, no script or console error,
    the rendered tables hold report.json's numbers, and a screenshot is taken."""
    out, report = tiny_run
    shot = tmp_path / "report.png"
    page = html_tables(chromium_dom(out / "report.html", screenshot=shot))
    check = json.loads(page.selfcheck)
    assert check["errors"] == [] and check["ok"] is True, check
    assert len(check["figures"]) == 5 + len(view.per_layer_groups(report))  # + one per-layer plot per int8 model
    for fig in check["figures"]:
        assert fig["width"] > 100 and fig["height"] > 50, fig
    rows = {row[0]: row for _, row in page.tables["targets"]}
    for label, v, _ in view.target_entries(report):
        for want in (fmt_pct(v["accuracy"]), fmt_bytes(v["size_bytes"]),
                     fmt_latency_pcts(v["latency_ms"], view.latency_source(v)["label"])):
            assert want in rows[label], (label, want)
    assert len(page.tables["stages"]) == len(report["stages"])
    assert _png_size(shot) == (1280, 4000) and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")


# ----------------------------------------------------------------------------- every latency has a source

# a latency as any page shows it: a number followed by "ms", or a percentile label
_LATENCY = re.compile(r"\d ms\b|\bp50 \d")
# where it comes from, in the same cell: measured on a named device, on the host (never a device
# verdict) or estimated
_SOURCE = re.compile(r"\((measured on [^)]+|host [^)]*, not the device|[^)]*emulated[^)]*, not the device|"
                     r"estimated[^)]*)\)|\bestimated\b")


def _estimate_in_range(report: dict, name: str) -> dict:
    """A copy of ``report`` whose ``name`` target's estimate lies inside its calibration range and
    decides its latency budget (as for a model the size of the calibration models)."""
    r = copy.deepcopy(report)
    t = next(t for t in r["targets"] if t["name"] == name)
    t["estimate_in_range"], t["estimate_range_reason"] = True, None
    t["budget"].update(latency_basis="estimate", unchecked=[u for u in t["budget"]["unchecked"]
                                                            if not u.startswith("latency_ms")])
    t["budget"]["checks"] = budget_checks(t)
    t["latency_source"] = view.latency_source(t)
    return r


class _Blocks(HTMLParser):
    """The text of every block a reader sees as one cell: table cells, card lines, list and fact
    items, notes, the banner, each SVG latency row and SVG tooltip."""

    BLOCK_TAGS = ("td", "th", "dd", "dt", "li", "p", "title")
    BLOCK_CLASSES = ("kv", "verdict", "latency-row")

    def __init__(self):
        super().__init__()
        self.blocks: list[tuple[str, str]] = []
        self._open: list[tuple[str, list[str]] | None] = []

    def handle_starttag(self, tag, attrs):
        cls = (dict(attrs).get("class") or "").split()
        block = tag in self.BLOCK_TAGS or any(c in self.BLOCK_CLASSES for c in cls)
        self._open.append((tag, []) if block else None)

    def handle_endtag(self, tag):
        while self._open:
            top = self._open.pop()
            if top is not None:
                self.blocks.append((top[0], " ".join("".join(top[1]).split())))
            if top is None or top[0] == tag:
                break

    def handle_data(self, data):
        for b in self._open:
            if b is not None:
                b[1].append(data)


def _unsourced(blocks: list[str]) -> list[str]:
    return [b for b in blocks if _LATENCY.search(b) and not _SOURCE.search(b)]


def test_every_latency_in_report_md_says_where_it_comes_from(tiny_run):
    out, report = tiny_run
    md = (out / "report.md").read_text()
    cells = [c for line in md.splitlines() for c in (line.strip("|").split(" | ") if line.startswith("|") else [line])]
    latency_cells = [c for c in cells if _LATENCY.search(c)]
    assert len(latency_cells) >= len(view.target_entries(report)), latency_cells
    assert _unsourced(cells) == []
    # the tiny models lie outside the calibration ranges: their estimates are flagged, no verdict
    by_name = {row[0]: row for row in md_tables(md)["Budgets"]}
    flagged = [t["name"] for t in report["targets"] if t.get("estimate_in_range") is False]
    assert set(flagged) == {"rpi4", "cortex-m4"}
    for name in flagged:
        assert by_name[name][3].startswith("unchecked: ") and "(estimated outside its calibration range, no verdict)" \
            in by_name[name][3], by_name[name]
    assert f"{len(report['targets'])} unchecked" in md.splitlines()[2]
    # a budget verdict that rests on an estimate (a model inside the range) says so, and the banner
    # counts those apart from measured ones
    r = _estimate_in_range(report, "cortex-m4")
    md2 = render_markdown(r)
    row = {row[0]: row for row in md_tables(md2)["Budgets"]}["cortex-m4"]
    assert row[3].startswith("pass, estimated: ") and "(estimated)" in row[3] and row[4] == "pass, estimated"
    assert "Latency verdicts: 1 estimated (cortex-m4), 2 unchecked (mobile, rpi4)." in md2.splitlines()[2]
    assert _unsourced([c for line in md2.splitlines() for c in line.split(" | ")]) == []
    for t in report["targets"]:
        assert t["latency_source"] == view.latency_source(t)
        assert t["latency_source"]["kind"] == "host" and not t["latency_source"]["decides_budget"]
        for v in t.get("variants", []):
            assert v["latency_source"]["label"] == "host x86_64, not the device" or v["latency_source"]["kind"] == "host"


def test_every_latency_in_report_html_says_where_it_comes_from(tiny_run):
    """Every cell, card line, note, SVG row and tooltip of the rendered page that shows a latency
    carries its source in the same block."""
    out, report = tiny_run
    p = _Blocks()
    p.feed(chromium_dom(out / "report.html"))
    texts = [t for _, t in p.blocks]
    shown = [t for t in texts if _LATENCY.search(t)]
    # each target's card, its budget cell, every artifact's table row, SVG row and tooltip
    assert len(shown) >= 3 * len(view.target_entries(report)), shown
    assert _unsourced(texts) == []
    rows = [t for tag, t in p.blocks if tag == "g"]
    assert len(rows) == len(view.latency_rows(report))
    estimated = [r for r in view.latency_rows(report) if r["estimated"]]
    assert estimated and sum("estimated" in r for r in rows) >= len(estimated)


# ----------------------------------------------------------------------------- several runs


@pytest.fixture
def two_runs(tiny_run, tmp_path):
    """The tiny run's report.json in ``base/`` and an over-budget variant of it in ``bigger/``."""
    _, report = tiny_run
    a, b = tmp_path / "base", tmp_path / "bigger"
    a.mkdir()
    b.mkdir()
    (a / "report.json").write_text(json.dumps(report))
    (b / "report.json").write_text(json.dumps(_over_budget(report)))
    return a, b, report


def test_compare_runs_through_the_cli(two_runs, tmp_path):
    a, b, report = two_runs
    runner = CliRunner()
    res = runner.invoke(main, ["report", str(a), str(b)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    md = res.stdout
    assert "# edgekit comparison: base, bigger" in md
    assert "| base | tiny |" in md and "FAIL" in md
    for t in report["targets"]:
        assert f"| {t['name']} | format |" in md
        assert fmt_pct(t["accuracy"]) in md and fmt_ms(t["latency_ms"]["p50"]) in md
    assert "1.2 MiB (×" in md and "flash 1.2 MiB of 977 KiB = 123.5 %, 229 KiB over" in md

    res = runner.invoke(main, ["report", str(a), str(b), "--json"], catch_exceptions=False)
    result = json.loads(res.stdout)
    assert result["schema"] == "edgekit.runs-compare/1"
    assert [r["label"] for r in result["runs"]] == ["base", "bigger"]
    assert [r["ok"] for r in result["runs"]] == [all(t["budget"]["ok"] for t in report["targets"]), False]
    mcu = next(t for t in result["targets"] if t["name"] == "cortex-m4")
    assert mcu["runs"][1]["size_bytes"] == 1_234_567 and mcu["runs"][0]["accuracy"] == mcu["runs"][1]["accuracy"]

    page_file = tmp_path / "cmp" / "compare.html"
    res = runner.invoke(main, ["report", str(a), str(b), "--out", str(page_file)], catch_exceptions=False)
    assert res.exit_code == 0
    page = html_tables(page_file.read_text())
    assert [key for key, _ in page.tables["runs"]] == ["base", "bigger"]
    cells = " ".join(" ".join(row) for _, row in page.tables["compare-targets"])
    for t in report["targets"]:
        assert fmt_pct(t["accuracy"]) in cells and fmt_bytes(t["size_bytes"]) in cells


def test_compare_needs_report_json(two_runs, tmp_path):
    a, _, _ = two_runs
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["report", str(a), str(empty)])
    assert res.exit_code == 1 and "no report.json" in res.output
    res = CliRunner().invoke(main, ["report", str(a), str(a), "--recipe", "x.yaml"])
    assert res.exit_code == 2 and "one RUN_DIR" in res.output


def test_compare_imports_no_tensorflow(two_runs):
    a, b, _ = two_runs
    code = ("import sys\nfrom edgekit.cli import main\n"
            f"try:\n    main(['report', {str(a)!r}, {str(b)!r}])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "edgekit comparison" in proc.stdout


def test_report_command_rerenders_one_run(tiny_run, tmp_path):
    out, report = tiny_run
    (out / "report.html").unlink()
    copy_to = tmp_path / "copy.html"
    res = CliRunner().invoke(main, ["--quiet", "report", str(out), "--out", str(copy_to)], catch_exceptions=False)
    assert all(t["budget"]["ok"] for t in report["targets"])  # the tiny run fits every board: exit 0
    assert res.exit_code == 0, res.output
    assert (out / "report.html").read_text() == copy_to.read_text()
    assert json.loads((out / "report.json").read_text())["targets"] == report["targets"]


def test_report_says_where_the_arena_was_measured():
    from edgekit.report import view

    arena = {"min_bytes": 3000, "recommended_bytes": 3312, "pointer_bits": 64, "tflm_version": "0.dev1"}
    note = view.arena_note({"targets": [{"name": "cortex-m4", "arena": arena}, {"name": "mobile"}]})
    assert "tflite-micro 0.dev1 interpreter on a 64-bit host" in note and "32-bit microcontroller needs" in note
    assert "32-bit microcontroller" not in view.arena_note({"targets": [{"arena": {**arena, "pointer_bits": 32}}]})
    assert view.arena_note({"targets": [{"name": "mobile"}]}) is None


def test_report_says_the_mcu_file_ships_without_names_and_where_they_are(tiny_run):
    out, report = tiny_run
    (m4,) = [t for t in report["targets"] if t["name"] == "cortex-m4"]
    names = m4["tensor_names"]
    assert names["bytes_saved"] > 0 and (out / "targets" / "cortex-m4" / names["file"]).is_file()
    assert all("tensor_names" not in t for t in report["targets"] if t["name"] != "cortex-m4")
    line = f"targets/cortex-m4/{names['file']}"
    assert line in (out / "report.md").read_text() and line in (out / "report.html").read_text()
