"""Results of :mod:`edgekit.tune`: a trial's measured numbers, the best trial, the Pareto
fronts, and the files a study writes (``tune.json``, ``tune.md``, ``tune.html``, ``best.yaml``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .._io import write_json, write_text
from ..recipe import Recipe, load_recipe, resolved_yaml
from ..report.tune import SCHEME_TEXT
from .space import Space

SCHEMA = "edgekit.tune/1"


def measured_row(report: dict, budget, *, floor: float) -> dict[str, Any]:
    """A trial's numbers from its run's ``report.json``: flash, arena, latency (with its basis),
    accuracy, and whether it fits the budgets and meets the accuracy ``floor``."""
    t = report["targets"][0]
    on = str(t.get("measured_on") or "")
    p50 = (t.get("latency_ms") or {}).get("p50")
    if p50 is not None and on and not on.startswith("host-"):
        latency, basis = p50, "measured"
    elif t.get("latency_estimate_ms") is not None and t.get("estimate_in_range") is not False:
        latency, basis = t["latency_estimate_ms"], "estimate"  # an estimate outside its calibration range decides nothing
    else:
        latency, basis = None, None
    b = t.get("budget") or {}
    acc = t.get("accuracy")
    stages = {s["name"]: s for s in report.get("stages", [])}
    pruned = stages.get("pruned") or {}
    row = {"flash_bytes": t.get("size_bytes"), "gzip_bytes": t.get("gzip_bytes"), "arena_bytes": t.get("arena_bytes"),
           "latency_ms": latency, "latency_basis": basis, "host_p50_ms": p50 if basis != "measured" else None,
           "measured_on": on or None, "accuracy": acc, "format": t.get("format"),
           "agreement_with_float": t.get("agreement_with_float"),
           "sparsity": pruned.get("sparsity"),
           "fits": bool(b.get("ok")), "violations": list(b.get("violations") or []),
           "unchecked": list(b.get("unchecked") or []),
           "meets_floor": acc is not None and acc >= floor - 1e-12}

    def excess(value, limit):
        return 0.0 if value is None or limit is None else (value - limit) / limit

    row["constraints"] = [excess(row["flash_bytes"], budget.flash_bytes), excess(row["arena_bytes"], budget.ram_bytes),
                          excess(latency, budget.latency_ms), (floor - acc) if acc is not None else 1.0]
    if not row["fits"]:  # a violation the numbers above do not show (e.g. measured latency): infeasible
        row["constraints"][0] = max(row["constraints"][0], 1e-6)
    return row



_ROW_KEYS = ("flash_bytes", "gzip_bytes", "arena_bytes", "latency_ms", "latency_basis", "host_p50_ms", "measured_on",
             "accuracy", "agreement_with_float", "format", "student_params", "sparsity", "fits", "meets_floor", "violations",
             "unchecked", "flash_lower_bytes", "arena_lower_bytes", "pruned_reason", "error", "seconds", "run_dir",
             "duplicate_of", "retry_of", "interrupted", "origin", "host")


def trial_row(t) -> dict[str, Any]:
    """One stored trial as a ``tune.json`` row (missing numbers are null)."""
    a = t.user_attrs
    row = {"number": t.number, "state": t.state.name, "params": dict(t.params)}
    row.update({k: a.get(k) for k in _ROW_KEYS})
    row["fits"] = bool(a.get("fits")) if t.state.name == "COMPLETE" else False
    row["meets_floor"] = bool(a.get("meets_floor")) if t.state.name == "COMPLETE" else False
    row["feasible"] = row["fits"] and row["meets_floor"]
    row["interrupted"] = bool(a.get("interrupted"))
    return row


def pick_best(rows: list[dict]) -> dict | None:
    """The smallest feasible trial: fits every budget and meets the accuracy floor; ties go to
    lower latency, higher accuracy, then the earlier trial. Duplicates are left out."""
    feasible = [r for r in rows if r["feasible"] and r.get("duplicate_of") is None]
    return min(feasible, key=lambda r: (r["flash_bytes"], math.inf if r["latency_ms"] is None else r["latency_ms"],
                                        -r["accuracy"], r["number"]), default=None)


def pareto_numbers(rows: list[dict], x_key: str) -> list[int]:
    """Trial numbers on the front of accuracy (higher better) against ``x_key`` (smaller better),
    among completed trials that fit the budgets and have both numbers."""
    from ..report.view import mark_pareto

    pts = [{"number": r["number"], "x": r[x_key], "accuracy": r["accuracy"]} for r in rows
           if r["fits"] and r.get("duplicate_of") is None and r[x_key] is not None and r["accuracy"] is not None]
    return sorted(p["number"] for p in mark_pareto(pts, x_key="x") if p["pareto"])


def write_outputs(study, out: Path, base: Recipe, profile, *, teacher_acc: float, max_accuracy_drop: float,
                  space: Space, seconds: float, storage: str = "sqlite:///study.db") -> dict[str, Any]:
    """Write ``tune.json``, ``tune.md``, ``tune.html`` and (with a best trial) ``best.yaml``, all
    from the trials stored in the study; returns the ``tune.json`` dict. ``storage``: the study's
    database URL as shown (password masked). The best trial may have run on another machine:
    its recipe is then rebuilt from its parameters (the same function made it there)."""
    from .space import trial_recipe
    from ..report.tune import render_tune_html, render_tune_markdown

    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    best = pick_best(rows)
    result = {
        "schema": SCHEMA, "recipe": base.name, "target": profile.name, "kind": profile.kind,
        "board": profile.board, "budget": profile.budget.model_dump(), "teacher_accuracy": teacher_acc,
        "max_accuracy_drop_points": max_accuracy_drop, "accuracy_floor": teacher_acc - max_accuracy_drop / 100.0,
        "study": {"name": study.study_name, "storage": storage, "sampler": "TPESampler",
                  "seed": base.seed, "directions": ["maximize accuracy", "minimize flash_bytes"]},
        "space": space.as_json(), "selection": "smallest flash among trials that fit every budget and meet the "
                                                "accuracy floor; ties: lower latency, higher accuracy, earlier trial",
        "counts": {s: sum(1 for r in rows if r["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        "pareto": {"flash": pareto_numbers(rows, "flash_bytes"), "latency": pareto_numbers(rows, "latency_ms")},
        "best": best, "best_recipe": "best.yaml" if best else None, "seconds_this_call": round(seconds, 3),
        "trials": rows,
    }
    if best is not None:
        local = out / best["run_dir"] / "recipe.yaml" if best.get("run_dir") else None
        recipe = load_recipe(local) if local is not None and local.is_file() else trial_recipe(base, best["params"])
        tuned = Recipe.model_validate({**recipe.model_dump(mode="json"), "name": f"{base.name}-tuned"})
        p = best["params"]
        header = (f"# edgekit tune: best of study {study.study_name!r} for {profile.name} (trial {best['number']}):\n"
                  f"# width {p['width']:g}, prune {p['prune']}, {SCHEME_TEXT[p['scheme']]}; measured flash "
                  f"{best['flash_bytes']} B, arena {best['arena_bytes']} B, accuracy {100 * best['accuracy']:.2f} % "
                  f"(teacher {100 * teacher_acc:.2f} %)\n# run it: edgekit run best.yaml --out runs/best\n")
        write_text(out / "best.yaml", header + resolved_yaml(tuned))
    md, html = render_tune_markdown(result), render_tune_html(result)
    write_json(out / "tune.json", result)
    write_text(out / "tune.md", md)
    write_text(out / "tune.html", html)
    return result


def load_result(out: Path) -> dict[str, Any]:
    """The ``tune.json`` of a tune directory."""
    return json.loads((Path(out) / "tune.json").read_text())
