"""The pipeline runner: sequences the stages, records timings, writes the manifest.

It owns no stage logic. For each stage it computes a fingerprint (its config + what it
consumed), skips it on ``--resume`` when the manifest says it finished with the same
fingerprint and unchanged files, and otherwise runs it and records status, seconds and the
sha256 of every file it wrote. A failed stage leaves the earlier stages' files and entries
intact, so ``--resume`` continues from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from .errors import EdgekitError, StageError
from .fitting import ProgressFn, write_json, write_text
from .manifest import Manifest, fingerprint
from .recipe import Recipe, load_target, resolved_yaml

log = logging.getLogger(__name__)

TRAIN_STAGES = ("teacher", "student", "pruned", "qat")
ALL_STAGES = (*TRAIN_STAGES, "convert", "eval", "report")


class Run:
    """One run of a recipe into ``out_dir``."""

    def __init__(self, recipe: Recipe, recipe_path: Path, out_dir: Path, *, resume: bool = False,
                 force: bool = False, progress: ProgressFn | None = None,
                 on_stage: Callable[[str, str], None] | None = None):
        self.recipe, self.recipe_path, self.out = recipe, Path(recipe_path), Path(out_dir)
        self.progress, self.on_stage = progress, on_stage or (lambda stage, status: None)
        recipe_sha = hashlib.sha256(self.recipe_path.read_bytes()).hexdigest()
        existing = Manifest.load(self.out)
        if existing is not None and not (resume or force):
            raise EdgekitError(f"{self.out} already holds a run; pass --resume to continue it "
                               "or --force to start over")
        if force and existing is not None:
            for sub in ("stages", "targets", "eval"):
                shutil.rmtree(self.out / sub, ignore_errors=True)
            existing = None
        self.out.mkdir(parents=True, exist_ok=True)
        self.manifest = existing or Manifest.new(self.out, recipe_name=recipe.name,
                                                 recipe_sha256=recipe_sha, seed=recipe.seed)
        self.manifest.refresh(recipe_sha256=recipe_sha)
        write_text(self.out / "recipe.resolved.yaml", resolved_yaml(recipe))
        self._data = None
        self._models: dict[str, Any] = {}
        self.results: dict[str, dict] = {}

    # -------------------------------------------------------------- helpers

    @property
    def data(self):
        if self._data is None:
            from .data import load_dataset

            self._data = load_dataset(self.recipe.data, seed=self.recipe.seed, base=self.recipe_path.parent)
        return self._data

    def _stage(self, name: str, fp: str, fn: Callable[[], tuple[list[Path], dict]]) -> tuple[dict, bool]:
        """Run ``fn`` unless the manifest says ``name`` is current; returns (metrics, ran)."""
        if self.manifest.is_current(name, fp):
            log.info("%s: up to date, skipped", name)
            self.on_stage(name, "cached")
            return self.manifest.entry(name).get("metrics") or {}, False
        self.on_stage(name, "running")
        self.manifest.mark(name, "running", fp=fp)
        start = time.perf_counter()
        try:
            files, metrics = fn()
        except BaseException as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.manifest.mark(name, "failed", fp=fp, seconds=time.perf_counter() - start, error=msg)
            self.on_stage(name, "failed")
            raise
        seconds = time.perf_counter() - start
        metrics = {**metrics, "seconds": round(seconds, 3)}
        self.manifest.mark(name, "done", fp=fp, seconds=seconds, files=files, metrics=metrics)
        self.on_stage(name, "done")
        return metrics, True

    def _stage_files(self, stage: str) -> list[Path]:
        return sorted(p for p in (self.out / "stages" / stage).iterdir() if p.is_file() and not p.name.startswith("."))

    def _model(self, stage: str):
        """The model a finished stage saved, loaded once."""
        if stage not in self._models:
            from . import quantize
            from .fitting import load_model

            folder = self.out / "stages" / stage
            self._models[stage] = quantize.load(folder) if stage == "qat" else load_model(folder / "model.keras")
        return self._models[stage]

    # -------------------------------------------------------------- stages

    def execute(self, *, until: str | None = None) -> dict | None:
        """Run every stage in order (stopping after ``until``); returns the report dict."""
        if until is not None and until not in ALL_STAGES:
            raise EdgekitError(f"unknown stage {until!r} (stages: {', '.join(ALL_STAGES)})")
        r, seed = self.recipe, self.recipe.seed
        from . import preflight

        preflight.run(r, input_shape=self.data.input_shape, num_classes=self.data.num_classes)
        fp = fingerprint("teacher", seed, r.data.model_dump(mode="json"), r.teacher.model_dump(mode="json"))
        float_stage = "teacher"

        def train_teacher():
            from . import train

            res = train.run(self.data, r.teacher, seed=seed, out_dir=self.out / "stages" / "teacher",
                            progress=self.progress)
            return self._stage_files("teacher"), res.metrics

        self.results["teacher"], _ = self._stage("teacher", fp, train_teacher)
        if until == "teacher":
            return None

        steps = [("student", r.student), ("pruned", r.prune), ("qat", r.qat)]
        qat_stage = None
        for name, cfg in steps:
            if cfg is None:
                fp = fingerprint(name, "skipped", fp)
                self.manifest.mark(name, "skipped", fp=fp)
                self.on_stage(name, "skipped")
            else:
                fp = fingerprint(name, fp, cfg.model_dump(mode="json"))
                src = float_stage
                self.results[name], _ = self._stage(name, fp, lambda n=name, c=cfg, s=src: self._train(n, c, s))
                if name == "qat":
                    qat_stage = "qat"
                else:
                    float_stage = name
            if until == name:
                return None
        models_fp = fp
        self.float_stage, self.qat_stage = float_stage, qat_stage

        from .convert import write_eval_npz

        eval_npz = self.out / "eval" / "eval.npz"
        data_fp = fingerprint("evaldata", models_fp, r.evaluate.samples)

        def make_npz():
            ref = self._model(float_stage).predict(self.data.x_test, batch_size=256, verbose=0).argmax(-1)
            return [write_eval_npz(eval_npz, self.data, ref, r.evaluate.samples)], {"reference": float_stage}

        self._stage("eval-data", data_fp, make_npz)
        targets = []
        for name in r.targets:
            profile = load_target(name, base=self.recipe_path.parent)
            cfp = fingerprint("convert", data_fp, profile.model_dump(mode="json"), r.convert.model_dump(mode="json"))
            self._stage(f"convert:{profile.name}", cfp,
                                          lambda p=profile: self._convert(p, eval_npz))
            if until == "convert":
                continue
            efp = fingerprint("eval", cfp, r.evaluate.model_dump(mode="json"))
            res, _ = self._stage(f"eval:{profile.name}", efp, lambda p=profile: self._evaluate(p, eval_npz))
            targets.append(res["result"])
        if until in ("convert", "eval"):
            return None
        from .report import build_report, write_reports

        report = build_report(self.recipe, self.data.summary(), self.manifest, targets,
                              reference=float_stage)
        write_reports(self.out, report)
        return report

    def _train(self, name: str, cfg, src: str):
        from . import distill, prune, quantize

        out = self.out / "stages" / name
        model = self._model(src)
        seed = self.recipe.seed
        if name == "student":
            res = distill.run(model, self.data, cfg, seed=seed, out_dir=out, progress=self.progress,
                              baseline=cfg.baseline)
        elif name == "pruned":
            res = prune.run(model, self.data, cfg, seed=seed, out_dir=out, progress=self.progress)
        elif name == "qat":
            res = quantize.run(model, self.data, cfg, seed=seed, out_dir=out, pruned=(src == "pruned"),
                               progress=self.progress)
        else:  # pragma: no cover
            raise StageError(f"unknown stage {name}")
        return self._stage_files(name), res.metrics

    def _convert(self, profile, eval_npz: Path):
        from .convert import convert_target

        folder = self.out / "targets" / profile.name
        shutil.rmtree(folder, ignore_errors=True)
        models = {"float": self._model(self.float_stage),
                  "qat": self._model(self.qat_stage) if self.qat_stage else None}
        arts = convert_target(profile, models, self.data, self.recipe.convert, folder,
                              seed=self.recipe.seed, eval_npz=eval_npz)
        return arts.files, {"artifacts": [_artifact_json(a, self.out) for a in arts.artifacts]}

    def _evaluate(self, profile, eval_npz: Path):
        from .convert import Artifact, TargetArtifacts
        from .evaluate import evaluate_target

        entry = self.manifest.entry(f"convert:{profile.name}")["metrics"]
        arts = TargetArtifacts(profile, [Artifact(self.out / a["path"], a["format"], a["runtime"], a["extra"])
                                         for a in entry["artifacts"]], [])
        result = evaluate_target(arts, eval_npz, self.recipe.evaluate)
        path = write_json(self.out / "eval" / f"{profile.name}.json", result)
        return [path], {"result": result}


def _artifact_json(a, root: Path) -> dict:
    return {"path": str(a.path.relative_to(root)), "format": a.format, "runtime": a.runtime, "extra": a.extra}


def load_report(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / "report.json").read_text())
