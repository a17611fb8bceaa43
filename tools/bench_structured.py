#!/usr/bin/env python3
"""Magnitude pruning vs structured (channel) pruning at the same target, side by side.

Runs the quickstart recipe (cortex-m4 target only, no from-scratch baseline) twice per seed: once
with ``prune: {target_sparsity: S}`` (magnitude) and once with ``prune: {structure: channels,
target_sparsity: S}``; the teacher and student are trained once per seed and shared (the second
run resumes a copy of the first). Prints, per method, what the runs measured: the pruned stage's
params and float TFLite size, and the cortex-m4 target's full-int8 file size (flash), tensor
arena (measured in tflite-micro), host latency and accuracy on the test split. Usage:

    .venv/bin/python tools/bench_structured.py [--sparsity 0.5] [--seeds 0 1 2 3 4] [--out DIR] [--json]

With 5 or more seeds each number is a mean with a 95 % t-interval; with fewer they are
one-seed (or few-seed) measurements, not a claim that one method beats the other.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
METHODS = ("magnitude", "channels")
T975 = {4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def recipe_for(method: str, sparsity: float, seed: int) -> dict:
    r = yaml.safe_load(QUICKSTART.read_text())
    r["seed"] = seed
    r["data"]["source"] = "digits"
    r["student"]["baseline"] = False
    r["targets"] = ["cortex-m4"]
    prune = {k: v for k, v in r["prune"].items() if k not in ("schedule", "frequency")}
    prune["target_sparsity"] = sparsity
    if method == "channels":
        prune["structure"] = "channels"
    else:
        prune["schedule"] = r["prune"].get("schedule", "polynomial")
    r["prune"] = prune
    return r


def run(recipe: dict, folder: Path, resume: bool) -> dict:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    cmd = [sys.executable, "-m", "edgekit.cli", "-q", "run", str(path), "--out", str(folder / "run"), "--no-budget"]
    if resume:
        cmd.append("--resume")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{folder.name}: run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads((folder / "run" / "report.json").read_text())


def numbers(report: dict) -> dict:
    stages = {s["name"]: s for s in report["stages"]}
    t = report["targets"][0]
    lat = t.get("latency_ms") or {}
    return {"pruned_params": stages["pruned"]["params"], "pruned_float_bytes": stages["pruned"]["size_bytes"],
            "flash_bytes": t.get("size_bytes"), "arena_bytes": t.get("arena_bytes"),
            "latency_ms": lat.get("p50") if isinstance(lat, dict) else None, "accuracy": t.get("accuracy")}


def summary(values: list[float | None]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "mean": None, "ci95": None}
    n = len(vals)
    mean = sum(vals) / n
    if n < 5:
        return {"n": n, "mean": mean, "ci95": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = T975.get(n, 1.96) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95": [mean - half, mean + half]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, help="keep the runs here (resumed when present)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base = args.out or Path(tempfile.mkdtemp(prefix="bench_structured_"))
    per: dict[str, list[dict]] = {m: [] for m in METHODS}
    for seed in args.seeds:
        first = base / f"seed{seed}-magnitude"
        first.mkdir(parents=True, exist_ok=True)
        per["magnitude"].append(numbers(run(recipe_for("magnitude", args.sparsity, seed), first,
                                            resume=(first / "run" / "manifest.json").is_file())))
        second = base / f"seed{seed}-channels"
        if not (second / "run" / "manifest.json").is_file():  # start from the same teacher and student
            shutil.copytree(first / "run", second / "run", dirs_exist_ok=True)
        per["channels"].append(numbers(run(recipe_for("channels", args.sparsity, seed), second, resume=True)))
    keys = list(per["magnitude"][0])
    table = {m: {k: summary([r[k] for r in per[m]]) for k in keys} for m in METHODS}
    if args.json:
        print(json.dumps({"sparsity": args.sparsity, "seeds": args.seeds, "runs": per, "summary": table}, indent=2))
        return 0
    kind = "mean [95 % interval]" if len(args.seeds) >= 5 else \
        f"measured, {len(args.seeds)} seed(s): not a claim that one method beats the other"
    print(f"quickstart recipe, prune target {args.sparsity:g}, cortex-m4 target ({kind}); runs in {base}")
    print("| method | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for m in METHODS:
        cells = []
        for k in keys:
            s = table[m][k]
            if s["mean"] is None:
                cells.append("n/a")
            elif s["ci95"]:
                cells.append(f"{s['mean']:.6g} [{s['ci95'][0]:.6g}, {s['ci95'][1]:.6g}]")
            else:
                cells.append(f"{s['mean']:.6g}")
        print(f"| {m} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
