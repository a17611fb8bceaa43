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
from .view import budget_checks

__all__ = ["SCHEMA", "build_report", "load_report", "render_html", "render_markdown", "write_reports"]

SCHEMA = "edgekit.report/1"

_STAGE_KEYS = ("params", "nonzero_params", "sparsity", "sparsity_overall", "size_bytes", "gzip_bytes",
               "size_format", "accuracy")
_STAGE_EXTRAS = ("target_sparsity", "per_layer", "kernel_sparsity_after", "scheme", "strategy", "replicas",
                 "temperature", "alpha", "baseline_accuracy", "baseline_metrics", "distillation_gain",
                 "threshold_rule", "given", "source", "onnx2tf")


def build_report(recipe, dataset: dict, manifest, targets: list[dict], *, reference: str,
                 features: dict | None = None) -> dict[str, Any]:
    """Assemble the report from the recipe, the dataset summary, the manifest and target results.

    ``task`` is the recipe's; every stage carries ``metrics`` (the task's metrics on the test
    split, beside ``accuracy``, which is null for tasks other than classification) as every
    target does (measured by the evaluator). ``features``: the input reduction (kind, input size
    before and after, variance kept), or null. Adds to each target its
    ``compression_vs_teacher`` and ``budget.checks`` (measured amount, limit, share of the
    budget and verdict per budget, see :func:`view.budget_checks`). The pruned stage keeps its
    ``per_layer`` sparsity.
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
    for t in targets:
        size = t.get("size_bytes")
        t["compression_vs_teacher"] = round(teacher_size / size, 2) if teacher_size and size else None
        if isinstance(t.get("budget"), dict):
            t["budget"]["checks"] = budget_checks(t)
    data = manifest.data
    return {"schema": SCHEMA, "recipe": recipe.name, "seed": recipe.seed,
            "task": getattr(recipe.task, "value", recipe.task),
            "dataset": {k: dataset[k] for k in ("name", "train", "val", "test", "classes")},
            "features": features,
            "reference_for_agreement": reference,
            # the given model file (kind, path, sha256): the run's, else the last stage that took one
            "source": data.get("source") or next((s["source"] for s in reversed(stages) if s.get("source")), None),
            "stages": stages, "targets": targets,
            "versions": data.get("versions"), "git_commit": data.get("git_commit"),
            "created": data.get("created"), "recipe_sha256": data.get("recipe_sha256")}


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
