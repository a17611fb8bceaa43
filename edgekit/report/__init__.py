"""The benchmark report: ``report.json`` (schema ``edgekit.report/1``), ``report.md`` and ``report.html``.

Every number comes from the run: stage metrics measured on the Keras models, target metrics
measured by the evaluator running each artifact in its own runtime. Missing values stay
``null``. The Markdown and HTML pages are rendered from the ``report.json`` dict only, through
the shared formatters in :mod:`edgekit.report.view`, so both show the same strings. No
TensorFlow is imported here.

Example::

    report = json.loads(Path("runs/quickstart/report.json").read_text())
    write_reports(Path("runs/quickstart"), report)   # report.json, report.md, report.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._io import write_json, write_text
from .html import render_html
from .markdown import render_markdown
from .view import apply_quality_gate, budget_checks, latency_source, quality_gate

__all__ = ["SCHEMA", "build_report", "load_report", "render_html", "render_markdown", "write_reports"]

SCHEMA = "edgekit.report/1"

_STAGE_KEYS = ("params", "nonzero_params", "sparsity", "sparsity_overall", "size_bytes", "gzip_bytes",
               "size_format", "accuracy")
_STAGE_EXTRAS = ("target_sparsity", "per_layer", "kernel_sparsity_after", "scheme", "strategy", "replicas",
                 "temperature", "alpha", "baseline_accuracy", "baseline_metrics", "distillation_gain",
                 "threshold_rule", "given", "source", "onnx2tf", "structure", "channels_removed")


def build_report(recipe, dataset: dict, manifest, targets: list[dict], *, reference: str,
                 features: dict | None = None, run_dir: Path | None = None) -> dict[str, Any]:
    """Assemble the report from the recipe, the dataset summary, the manifest and target results.

    ``task`` is the recipe's; every stage carries ``metrics`` (the task's metrics on the test
    split, beside ``accuracy``, which is null for tasks other than classification) as every
    target does (measured by the evaluator). ``features``: the input reduction (kind, input size
    before and after, variance kept), or null. Adds to each target its
    ``compression_vs_teacher`` and ``budget.checks`` (measured amount, limit, share of the
    budget and verdict per budget, see :func:`view.budget_checks`). The pruned stage keeps its
    ``per_layer`` sparsity. With ``run_dir``, every target gets ``ship`` (the files to put on the
    device with their sha256, what they need, the recommended artifact: :func:`ship.ship_plan`)
    and the report a top-level ``ship`` (target name -> recommended artifact). Every target and variant gets ``latency_source`` (where its latencies
    come from, :func:`view.latency_source`).
    """
    stages = []
    for name in ("teacher", "student", "pruned", "qat"):
        e = manifest.entry(name)
        if not e or e.get("status") != "done":
            continue
        m = e.get("metrics") or {}
        row = {"name": name, **{k: m.get(k) for k in _STAGE_KEYS}, "metrics": m.get("metrics"),
               "seconds": e.get("seconds")}
        if row["sparsity"] is None:
            row["sparsity"] = m.get("sparsity_overall")
        for extra in _STAGE_EXTRAS:
            if extra in m:
                row[extra] = m[extra]
        stages.append(row)
    teacher_size = next((s["size_bytes"] for s in stages if s["name"] == "teacher"), None)
    task = getattr(recipe.task, "value", recipe.task)
    quality = getattr(recipe, "quality", None)
    teacher = next((s for s in stages if s["name"] == "teacher"), None)
    for t in targets:
        _lift_precision(t)
    for t in targets:
        if quality is not None:
            t["quality"] = quality_gate(task, teacher, t, quality.max_accuracy_drop)
            for v in t.get("variants", []):
                v["quality"] = quality_gate(task, teacher, v, quality.max_accuracy_drop)
            apply_quality_gate(t, t["quality"])
        elif isinstance(t.get("budget"), dict) and "max_accuracy_drop" in t["budget"]:  # a gate since removed
            b = t["budget"]
            b.pop("max_accuracy_drop")
            b["violations"] = [v for v in b.get("violations", []) if not v.startswith("quality:")]
            b["unchecked"] = [u for u in b.get("unchecked", []) if not u.startswith("quality:")]
            b["ok"] = not b["violations"]
            t.pop("quality", None)
        size = t.get("size_bytes")
        t["compression_vs_teacher"] = round(teacher_size / size, 2) if teacher_size and size else None
        if isinstance(t.get("budget"), dict):
            t["budget"]["checks"] = budget_checks(t)
        t["latency_source"] = latency_source(t)
        for v in t.get("variants", []):
            v["latency_source"] = latency_source(v)
        if t.get("selective_precision"):
            _complete_selective(t, t["selective_precision"])
    data = manifest.data
    report = {"schema": SCHEMA, "recipe": recipe.name, "seed": recipe.seed,
            "task": task,
            "quality": quality.model_dump(mode="json") if quality is not None else None,
            "dataset": {**{k: dataset[k] for k in ("name", "train", "val", "test", "classes")},
                        **{k: dataset[k] for k in ("frontend", "label") if dataset.get(k)}},
            "features": features,
            "reference_for_agreement": reference,
            # the given model file (kind, path, sha256): the run's, else the last stage that took one
            "source": data.get("source") or next((s["source"] for s in reversed(stages) if s.get("source")), None),
            "stages": stages, "targets": targets,
            "versions": data.get("versions"), "git_commit": data.get("git_commit"),
            "created": data.get("created"), "recipe_sha256": data.get("recipe_sha256")}
    if run_dir is not None:
        from .ship import ship_plan

        plans = ship_plan(report, run_dir, max_accuracy_drop=quality.max_accuracy_drop if quality else None)
        for t in targets:
            t["ship"] = plans[t["name"]]
        report["ship"] = {name: p["recommended"] for name, p in plans.items()}
    return report


NOT_MEASURED = "not measured: the target was converted before edgekit measured per-layer error (rerun its convert step)"


_PRECISION_KEYS = ("per_layer_error", "per_layer_error_reason", "selective_precision")


def _lift_precision(t: dict) -> None:
    """Put the per-layer error and the selective-precision record on the target itself, from the
    entry (the target's or a variant's) of the int8 model they were measured on;
    ``per_layer_error_file`` names that file. A target converted before they existed gets
    ``per_layer_error: null`` and the reason. Variants are replaced by copies, not changed."""
    for i, e in enumerate([t, *t.get("variants", [])]):
        if "per_layer_error" in e or "per_layer_error_reason" in e:
            found = {k: e[k] for k in _PRECISION_KEYS if k in e}
            if i:
                t["variants"] = [{k: v for k, v in x.items() if k not in _PRECISION_KEYS} if x is e else x
                                 for x in t["variants"]]
            t.update(found)
            t["per_layer_error_file"] = e.get("file")
            t.setdefault("per_layer_error", None)
            return
    t.setdefault("per_layer_error", None)
    if not t.get("per_layer_error_reason"):
        fmt = str(t.get("format", ""))
        int8 = any(str(e.get("format", "")) in ("tflite-int8", "tflite-full-int8") for e in [t, *t.get("variants", [])])
        t["per_layer_error_reason"] = NOT_MEASURED if int8 or fmt.startswith("tflite-full") else \
            "the target has no int8 TFLite model to compare layer by layer"


def _complete_selective(t: dict, sel: dict) -> None:
    """The selective record with the measured test-split numbers of both models (size, accuracy,
    the quality gate's drop) and the cost in bytes of the layers kept at higher precision."""
    entries = {e.get("file"): e for e in [t, *t.get("variants", [])]}
    for key in ("int8", "selective"):
        part = sel.get(key)
        e = entries.get((part or {}).get("file"))
        if part is None or e is None:
            continue
        part["size_bytes"], part["accuracy"] = e.get("size_bytes"), e.get("accuracy")
        if isinstance(e.get("quality"), dict):
            part["drop_points"], part["quality_ok"] = e["quality"].get("drop"), e["quality"].get("ok")
    a, b = (sel.get("int8") or {}).get("size_bytes"), (sel.get("selective") or {}).get("size_bytes")
    sel["cost_bytes"] = b - a if None not in (a, b) else None


def write_reports(out_dir: Path, report: dict) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` atomically; returns their paths.

    Both pages are rendered before anything is written, so a rendering error leaves the
    previous reports untouched.
    """
    out_dir = Path(out_dir)
    md, html = render_markdown(report), render_html(report)
    return [write_json(out_dir / "report.json", report),
            write_text(out_dir / "report.md", md),
            write_text(out_dir / "report.html", html)]


def load_report(path: Path) -> dict[str, Any]:
    """The ``report.json`` of a run directory (or the file itself); ``EdgekitError`` when missing or foreign."""
    from ..errors import EdgekitError

    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise EdgekitError(f"{path}: no report.json; finish the run (edgekit run ... --resume) "
                           "or write it with `edgekit report RUN_DIR`")
    try:
        report = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise EdgekitError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise EdgekitError(f"{file}: not an edgekit report (schema {report.get('schema') if isinstance(report, dict) else None!r}, "
                           f"expected {SCHEMA!r})")
    return report
