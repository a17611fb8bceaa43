"""The benchmark report: ``report.json`` (schema ``edgekit.report/1``) and ``report.md``.

Every number comes from the run: stage metrics measured on the Keras models, target metrics
measured by the evaluator running each artifact in its own runtime. Missing values stay
``null``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fitting import write_json, write_text
from .markdown import render_markdown

SCHEMA = "edgekit.report/1"

_STAGE_KEYS = ("params", "nonzero_params", "sparsity", "sparsity_overall", "size_bytes", "gzip_bytes",
               "size_format", "accuracy")


def build_report(recipe, dataset: dict, manifest, targets: list[dict], *, reference: str) -> dict[str, Any]:
    """Assemble the report from the recipe, the dataset summary, the manifest and target results."""
    stages = []
    for name in ("teacher", "student", "pruned", "qat"):
        e = manifest.entry(name)
        if not e or e.get("status") != "done":
            continue
        m = e.get("metrics") or {}
        row = {"name": name, **{k: m.get(k) for k in _STAGE_KEYS}, "seconds": e.get("seconds")}
        if row["sparsity"] is None:
            row["sparsity"] = m.get("sparsity_overall")
        for extra in ("target_sparsity", "kernel_sparsity_after", "scheme", "strategy", "replicas",
                      "temperature", "alpha", "baseline_accuracy", "distillation_gain"):
            if extra in m:
                row[extra] = m[extra]
        stages.append(row)
    teacher_size = next((s["size_bytes"] for s in stages if s["name"] == "teacher"), None)
    for t in targets:
        size = t.get("size_bytes")
        t["compression_vs_teacher"] = round(teacher_size / size, 2) if teacher_size and size else None
    return {"schema": SCHEMA, "recipe": recipe.name, "seed": recipe.seed,
            "dataset": {k: dataset[k] for k in ("name", "train", "val", "test", "classes")},
            "reference_for_agreement": reference,
            "stages": stages, "targets": targets,
            "versions": manifest.data.get("versions"), "git_commit": manifest.data.get("git_commit")}


def write_reports(out_dir: Path, report: dict) -> list[Path]:
    """Write ``report.json`` and ``report.md`` atomically; returns their paths."""
    return [write_json(Path(out_dir) / "report.json", report),
            write_text(Path(out_dir) / "report.md", render_markdown(report))]
