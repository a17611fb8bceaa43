#!/usr/bin/env python3
"""Compression benchmark: run recipes end to end and print, per stage and target, params,
non-zero params, sparsity, size raw/gzip, accuracy and the float-teacher-size / size ratio.

Every number comes from the runs' report.json (measured by running the artifacts). Usage:

    .venv/bin/python tools/bench_compression.py [RECIPE ...] [--out DIR] [--json]

Defaults to recipes/quickstart.yaml and recipes/mnist1d.yaml. Runs are resumed when --out
already holds them, so a second call only prints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = [ROOT / "recipes" / "quickstart.yaml", ROOT / "recipes" / "mnist1d.yaml"]


def run_recipe(recipe: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "edgekit.cli", "-q", "run", str(recipe), "--out", str(out), "--no-budget"]
    if (out / "manifest.json").is_file():
        cmd.append("--resume")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{recipe}: run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads((out / "report.json").read_text())


def rows(report: dict) -> list[dict]:
    teacher = next(s for s in report["stages"] if s["name"] == "teacher")
    out = []
    for s in report["stages"]:
        out.append({"recipe": report["recipe"], "what": f"stage {s['name']}", "format": s.get("size_format"),
                    "params": s["params"], "nonzero": s["nonzero_params"], "sparsity": s["sparsity"],
                    "size": s["size_bytes"], "gzip": s["gzip_bytes"], "accuracy": s["accuracy"],
                    "ratio": teacher["size_bytes"] / s["size_bytes"]})
    last = report["stages"][-1]
    for t in report["targets"]:
        for v in [t, *t.get("variants", [])]:
            out.append({"recipe": report["recipe"], "what": f"target {t['name']}", "format": v.get("format"),
                        "params": last["params"], "nonzero": last["nonzero_params"], "sparsity": last["sparsity"],
                        "size": v["size_bytes"], "gzip": v["gzip_bytes"], "accuracy": v["accuracy"],
                        "ratio": teacher["size_bytes"] / v["size_bytes"] if v["size_bytes"] else None})
    return out


def render(all_rows: list[dict]) -> str:
    head = ["recipe", "what", "format", "params", "nonzero", "sparsity", "size B", "gzip B", "accuracy", "teacher/size"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in all_rows:
        lines.append("| " + " | ".join([
            r["recipe"], r["what"], str(r["format"]), str(r["params"]), str(r["nonzero"]), f"{r['sparsity']:.3f}",
            str(r["size"]), str(r["gzip"]), f"{r['accuracy']:.4f}",
            f"{r['ratio']:.1f}x" if r["ratio"] else "–"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", type=Path, default=DEFAULT)
    ap.add_argument("--out", type=Path, help="folder for the runs (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    base = args.out or Path(tempfile.mkdtemp(prefix="edgekit-bench-"))
    all_rows = []
    for recipe in args.recipes:
        all_rows += rows(run_recipe(recipe, base / recipe.stem))
    print(json.dumps(all_rows, indent=1) if args.json else render(all_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
