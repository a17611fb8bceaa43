#!/usr/bin/env python3
"""Leave-one-out check of the latency estimates, per calibration set.

For every calibration set in edgekit/data/latency_calibration.yaml: the fitted coefficients,
and for every published measurement the estimate of the fit on all points (in-sample) and of a
fit that left that model out (LOO). The LOO median is the error docs/targets.md states. Usage:

    .venv/bin/python tools/bench_estimate.py [--json] [--set NAME ...]
    .venv/bin/python tools/bench_estimate.py --update-features   # rebuild the calibration models

``--update-features`` builds every model of the file's ``models:`` section (zoo models and Keras
applications with random weights), converts it to full int8 with TensorFlow, and writes its
features (edgekit.estimate.model_features) back into the file; run it after changing the
features of edgekit.estimate. Only that needs TensorFlow; the check itself is numpy only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit import estimate  # noqa: E402


def check(sets: list[str] | None = None, path: Path | None = None) -> list[dict]:
    cal = estimate.load_calibration(path)
    out = []
    for name in sets or list(cal.sets):
        s = cal.sets[name]
        fit = estimate.fit_set(name, cal)
        out.append({"set": name, "board": s.board, "core": s.core, "clock_mhz": s.clock_mhz,
                    "kernels": s.kernels, "runtime": s.runtime, "threads": s.threads, **fit.as_dict()})
    return out


def band(path: Path | None = None) -> dict:
    """The pooled held-out check of :func:`edgekit.estimate.error_band`."""
    return estimate.error_band(estimate.load_calibration(path))


def render(results: list[dict]) -> str:
    lines = []
    for r in results:
        coef = ", ".join(f"{v['value']:g} {v['unit']} ({k})" for k, v in r["coefficients"].items())
        lines.append(f"## {r['set']}: {r['core']} @ {r['clock_mhz']:g} MHz, runtime {r['runtime']}, {r['kernels']}"
                     f"{'' if r['threads'] == 1 else ', multi-threaded'}")
        lines.append(f"   {r['board']}")
        lines.append(f"   fit: {coef}")
        lines.append("   | model | published ms | in-sample ms | error | leave-one-out ms | LOO error |")
        lines.append("   |---|---|---|---|---|---|")
        for ins, loo in zip(r["in_sample"], r["loo"]):
            loo_ms = "-" if loo["loo_estimate_ms"] is None else f"{loo['loo_estimate_ms']:.3g}"
            loo_err = "-" if loo["pct_error"] is None else f"{loo['pct_error']:+.0f} %"
            lines.append(f"   | {ins['model']} | {ins['published_ms']:.4g} | {ins['estimate_ms']:.4g} | "
                         f"{ins['pct_error']:+.0f} % | {loo_ms} | {loo_err} |")
        if r["loo_meaningful"]:
            lines.append(f"   LOO |error|: median {r['loo_median_abs_pct_error']} %, "
                         f"max {r['loo_max_abs_pct_error']} % over {r['n_points']} models")
        else:
            lines.append(f"   LOO |error|: none stated: {r['loo_note']}")
        if r["fixed_costs"]["note"]:
            lines.append(f"   fixed per-op / per-invoke cost: {r['fixed_costs']['note']}")
        rng = r["range"]
        lines.append(f"   range: GEMM MACs {rng['macs_gemm'][0]:,}–{rng['macs_gemm'][1]:,}, activation bytes "
                     f"{rng['bytes_activations'][0]:,}–{rng['bytes_activations'][1]:,} (×{rng['factor']:g} margin); "
                     f"op kinds {', '.join(rng['op_kinds']) if rng['op_kinds'] else 'not generated'}")
        lines.append("")
    return "\n".join(lines)


def render_band(b: dict) -> str:
    cov = "-" if b["coverage"] is None else f"{100 * b['coverage']:.0f}"
    head = (f"Error band: {b['held_out']} held-out points pooled over {len(b['sets'])} sets "
            f"({', '.join(b['sets'])}); 90th percentile of |LOO error| {b['p90_abs_pct_error']} %, "
            f"a band from the other sets held {cov} % of the points.")
    return head + ("\n" + (f"Stated band: ±{b['pct']} % (90 %)." if b["pct"] is not None else b["note"] + "."))


# ---------------------------------------------------------------------------- --update-features


def build_tflite(build: dict) -> bytes:
    """Build one calibration model with random weights and convert it to full int8."""
    import numpy as np

    from edgekit._tf import keras
    from edgekit.convert import to_tflite
    from edgekit.models import create_model

    shape = tuple(build["input_shape"])
    if "zoo" in build:
        model = create_model(build["zoo"], input_shape=shape, num_classes=build["num_classes"], seed=0)
    else:
        k = keras()
        k.utils.set_random_seed(0)
        model = getattr(k.applications, build["keras_application"])(
            weights=None, input_shape=shape, classes=build["num_classes"])
    x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)

    def rep():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return to_tflite(model, mode="full-int8", rep=rep)


def update_features(path: Path) -> dict[str, dict]:
    """Rebuild every model of ``models:`` and rewrite its generated lines in ``path``."""
    import yaml

    from edgekit._tf import tf

    raw = yaml.safe_load(path.read_text())
    version = tf().__version__
    generated = {}
    for name, spec in raw["models"].items():
        costs = estimate.op_costs(build_tflite(spec["build"]))
        summ = estimate._summary(costs)
        generated[name] = {"features": estimate.model_features(costs),
                           "macs": sum(c.macs for c in costs), "ops": summ["ops"],
                           "op_kinds": summ["op_kinds"], "max_tensor_bytes": summ["max_tensor_bytes"]}
        print(f"{name}: {generated[name]}", file=sys.stderr)
    text = path.read_text()
    head, models = text.split("\nmodels:\n", 1)
    blocks = re.split(r"(?m)^(?=  \S)", models)
    out = []
    for block in blocks:
        m = re.match(r"  (\S+):", block)
        if not m or m.group(1) not in generated:
            out.append(block)
            continue
        kept = [ln for ln in block.rstrip("\n").split("\n")
                if not ln.startswith(("    features:", "    macs:", "    built_with:", "    ops:", "    op_kinds:",
                                      "    max_tensor_bytes:"))]
        g = generated[m.group(1)]
        feats = ", ".join(f"{k}: {v}" for k, v in g["features"].items())
        kept += [f"    features: {{{feats}}}", f"    macs: {g['macs']}", f"    ops: {g['ops']}",
                 f"    op_kinds: [{', '.join(g['op_kinds'])}]", f"    max_tensor_bytes: {g['max_tensor_bytes']}",
                 f"    built_with: full-int8 from tensorflow {version}, random weights (generated)"]
        out.append("\n".join(kept) + "\n")
    text = head + "\nmodels:\n" + "".join(out)
    text = re.sub(r"(?m)^features: \[.*\]$", f"features: [{', '.join(estimate.FEATURES)}]", text, count=1)
    path.write_text(text)
    estimate.load_calibration(path)   # validates what was written
    return generated


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ap.add_argument("--set", action="append", dest="sets", help="only this calibration set (repeatable)")
    ap.add_argument("--calibration", type=Path, default=None, help="calibration file (default: the shipped one)")
    ap.add_argument("--update-features", action="store_true",
                    help="rebuild the calibration models with TensorFlow and rewrite their features")
    args = ap.parse_args(argv)
    path = args.calibration or estimate.CALIBRATION_PATH
    if args.update_features:
        update_features(path)
    results = check(args.sets, path)
    b = band(path)
    print(json.dumps({"sets": results, "band": b}, indent=2) if args.json else render(results) + "\n" + render_band(b))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
