"""Render a report dict as Markdown tables (stages, then targets with their budgets)."""

from __future__ import annotations


def _fmt(v, kind: str = "") -> str:
    if v is None:
        return "–"
    if kind == "pct":
        return f"{100 * v:.1f} %"
    if kind == "bytes":
        return f"{v / 1024:.1f} KiB" if v >= 1024 else f"{v} B"
    if kind == "ms":
        return f"{v:.3f}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    d = report["dataset"]
    out = [f"# edgekit report: {report['recipe']}", "",
           f"Dataset **{d['name']}**: {d['train']} train, {d.get('val', 0)} val, {d['test']} test, "
           f"{d['classes']} classes. Accuracy is top-1 on the test split; target numbers come from "
           "running each artifact in its own runtime.", "", "## Stages", ""]
    out.append(_table(
        ["stage", "params", "non-zero", "sparsity", "size", "gzip", "format", "accuracy", "seconds"],
        [[s["name"], _fmt(s["params"]), _fmt(s["nonzero_params"]), _fmt(s["sparsity"], "pct"),
          _fmt(s["size_bytes"], "bytes"), _fmt(s["gzip_bytes"], "bytes"), _fmt(s.get("size_format")),
          _fmt(s["accuracy"], "pct"), _fmt(s["seconds"])] for s in report["stages"]]))
    out += ["", "## Targets", ""]
    rows = []
    for t in report["targets"]:
        for v in [t, *t.get("variants", [])]:
            lat = v.get("latency_ms") or {}
            rows.append([t["name"], t["kind"], _fmt(v.get("format")), _fmt((v.get("runtime") or {}).get("name")),
                         _fmt(v.get("size_bytes"), "bytes"), _fmt(v.get("gzip_bytes"), "bytes"),
                         _fmt(v.get("accuracy"), "pct"), _fmt(v.get("agreement_with_float"), "pct"),
                         _fmt(lat.get("p50"), "ms"), _fmt(lat.get("p99"), "ms"),
                         _fmt(v.get("arena_bytes"), "bytes"), _fmt(v.get("measured_on"))])
    out.append(_table(["target", "kind", "format", "runtime", "size", "gzip", "accuracy", "agrees w/ float",
                       "p50 ms", "p99 ms", "arena", "measured on"], rows))
    out += ["", "## Budgets", ""]
    brows = []
    for t in report["targets"]:
        b = t.get("budget") or {}
        verdict = "pass" if b.get("ok") else "FAIL"
        notes = "; ".join(b.get("violations", []) + [f"unchecked: {u}" for u in b.get("unchecked", [])])
        brows.append([t["name"], _fmt(b.get("flash_bytes"), "bytes"), _fmt(b.get("ram_bytes"), "bytes"),
                      _fmt(b.get("latency_ms")), verdict, notes or "–"])
    out.append(_table(["target", "flash budget", "RAM budget", "latency budget ms", "verdict", "notes"], brows))
    out += ["", "Host latencies are host latencies: they say nothing about the device's speed.", ""]
    return "\n".join(out)
