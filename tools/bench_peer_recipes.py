#!/usr/bin/env python3
"""Recorded-data recipes side by side (issue 25): the float teacher, edgekit's int8 target and the
tfmot guides' peer flow (tools/peer_flow.py) on the same split.

For each recipe and seed: ``edgekit run`` of the recipe (seed set, ``--no-budget``), then the peer
flow on the dataset the recipe loads for that seed (the same train/validation/test split), with the
recipe's student architecture and width trained from scratch for the student's epochs, pruning
fine-tuning for ``prune.epochs`` (2 without pruning in the recipe) and QAT for ``qat.epochs`` (2
without QAT in the recipe). Metric: accuracy (classification) or ROC-AUC (anomaly), of each
.tflite run by edgekit's evaluator in tflite-micro on the test split. Flash: the teacher's float32
TFLite file, the int8 files; arena: the recommended TFLite Micro arena, also for the teacher's
float32 file (TFLite Micro runs float models).

    .venv/bin/python tools/bench_peer_recipes.py [--recipes recipes/har-basicmotions-m4.yaml ...] [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from bench_budget import cell, compare, run_report, summary  # noqa: E402 - same folder

RECIPES = [ROOT / "recipes" / "har-basicmotions-m4.yaml", ROOT / "recipes" / "ts-anomaly-gunpoint-m4.yaml"]


def metric(d: dict) -> float | None:
    m = d.get("metrics") or {}
    return d.get("roc_auc") if d.get("roc_auc") is not None else (m.get("roc_auc") or d.get("accuracy"))


def teacher_arena(stage_dir: Path, folder: Path) -> int | None:
    """Recommended TFLite Micro arena of the teacher as a float32 .tflite (None when not measurable)."""
    from edgekit._tf import keras
    from edgekit.convert import to_tflite
    from edgekit.mcu import measure_arena

    try:
        model = keras().models.load_model(stage_dir / "model.keras", compile=False)
        path = folder / "teacher_float32.tflite"
        path.write_bytes(to_tflite(model, mode="float32"))
        return measure_arena(path).recommended_bytes
    except Exception as exc:  # noqa: BLE001 - reported as not measured
        print(f"teacher arena not measured: {exc}", file=sys.stderr)
        return None


def one(recipe_path: Path, seed: int, out: Path) -> dict:
    from edgekit.data import load_for_recipe
    from edgekit.recipe import load_recipe
    from peer_flow import peer_flow

    folder = out / recipe_path.stem / f"seed{seed}"
    raw = yaml.safe_load(recipe_path.read_text())
    raw["seed"] = seed
    try:
        report = run_report(raw, folder)
    except RuntimeError as exc:
        raise SystemExit(f"{recipe_path.name} seed {seed}: {exc}") from None
    path = folder / "recipe.yaml"
    teacher = next(s for s in report["stages"] if s["name"] == "teacher")
    target = report["targets"][0]
    recipe = load_recipe(path)
    data = load_for_recipe(recipe, base=path.parent)
    s = recipe.student
    peer = peer_flow(data, model=s.model, width=s.width, seed=seed, out_dir=folder / "peer", epochs=s.epochs,
                     prune_epochs=recipe.prune.epochs if recipe.prune else 2,
                     qat_epochs=recipe.qat.epochs if recipe.qat else 2, batch_size=s.batch_size,
                     learning_rate=s.learning_rate)
    return {"recipe": recipe_path.stem, "seed": seed, "task": recipe.task.value,
            "teacher": {"metric": metric(teacher), "flash_bytes": teacher["size_bytes"],
                        "arena_bytes": teacher_arena(folder / "run" / "stages" / "teacher", folder)},
            "edgekit": {"metric": metric(target), "flash_bytes": target["size_bytes"],
                        "arena_bytes": target.get("arena_bytes")},
            "peer": {"metric": metric(peer), "flash_bytes": peer["flash_bytes"], "arena_bytes": peer["arena_bytes"]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", type=Path, default=RECIPES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_peer_recipes_"))
    results = out / "results.jsonl"
    done = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done[(r["recipe"], r["seed"])] = r
    for rp in args.recipes:
        for seed in args.seeds:
            if (rp.stem, seed) not in done:
                r = one(rp.resolve(), seed, out)
                done[(rp.stem, seed)] = r
                with results.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"results in {results}; mean [95 % t-interval] over the seeds; flash/arena in bytes")
    print("| recipe | model | seeds | accuracy / ROC-AUC | flash | arena | vs edgekit int8 |")
    print("|---|---|---|---|---|---|---|")
    for rp in args.recipes:
        rows = [done[(rp.stem, s)] for s in args.seeds if (rp.stem, s) in done]
        name = "ROC-AUC" if rows and rows[0]["task"] == "anomaly" else "accuracy"
        ek = summary([r["edgekit"]["metric"] for r in rows])
        for who, label in (("teacher", "float teacher"), ("edgekit", "edgekit int8 target"),
                           ("peer", "peer flow (tfmot guides) int8")):
            m = summary([r[who]["metric"] for r in rows])
            vs = "–" if who == "edgekit" else compare(m, ek)
            print(f"| {rp.stem} | {label} | {len(rows)} | {name} {cell(m, '.4f')} | "
                  f"{cell(summary([r[who]['flash_bytes'] for r in rows]), '.0f')} | "
                  f"{cell(summary([r[who]['arena_bytes'] for r in rows]), '.0f')} | {vs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
