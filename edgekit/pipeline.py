"""The pipeline runner: sequences the stages, records timings, writes the manifest.

It owns no stage logic. For each stage it computes a fingerprint (its config + what it
consumed), skips it on ``--resume`` when the manifest says it finished with the same
fingerprint and unchanged files, and otherwise runs it and records status, seconds and the
sha256 of every file it wrote. A failed stage leaves the earlier stages' files and entries
intact, so ``--resume`` continues from there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import EdgekitError, RecipeError, StageError
from ._io import check_out_dir, remove, run_lock
from .fitting import ProgressFn, write_json, write_text
from .manifest import Manifest, fingerprint
from .recipe import Recipe, load_target, resolved_yaml, with_model_paths
from .stages import ALL_STAGES, TRAIN_STAGES  # noqa: F401 - TRAIN_STAGES: part of this module's API

log = logging.getLogger(__name__)

# what a run writes in its directory: all that --force removes (the lock file stays)
RUN_OUTPUTS = ("stages", "targets", "eval", "sources", "report.json", "report.md", "report.html",
               "recipe.resolved.yaml", "manifest.json")


@dataclasses.dataclass(frozen=True)
class Step:
    """One unit of work: its manifest name, stage group, the steps it consumes, its config."""

    name: str
    group: str
    after: list[str]
    config: Any
    fn: Callable[[], tuple[list[Path], dict]]
    target: str | None = None  # the target profile a convert:/eval: step is for


class Run:
    """One run of a recipe into ``out_dir``."""

    def __init__(self, recipe: Recipe, recipe_path: Path, out_dir: Path, *, resume: bool = False,
                 force: bool = False, progress: ProgressFn | None = None,
                 on_stage: Callable[[str, str], None] | None = None, lock_wait_s: float = 0.0):
        self.recipe_path, self.out = Path(recipe_path), Path(out_dir)
        self.recipe = with_model_paths(recipe, self.recipe_path.parent)
        self.progress, self.on_stage = progress, on_stage or (lambda stage, status: None)
        self.resume, self.force, self.lock_wait_s = resume, force, lock_wait_s
        check_out_dir(self.out, above=[self.recipe_path.resolve().parent], allow=self._own_recipe())
        existing = Manifest.load(self.out)
        self._check_existing(existing)
        self.manifest = None if force else existing
        self._data = None
        self._models: dict[str, Any] = {}
        self._tflite_cache: dict = {}  # conversions made for one target, reused by the next (convert.KerasSource)
        self._infos: dict[str, Any] = {}

    def _own_recipe(self) -> list[str]:
        """The recipe's file name when it lies in the run directory itself (``edgekit compress``
        writes ``OUT/recipe.yaml``, then runs it there): it does not make ``--out`` a foreign folder."""
        inside = self.recipe_path.resolve().parent == self.out.resolve()
        return [self.recipe_path.name] if inside else []

    def _check_existing(self, existing: Manifest | None) -> None:
        """Refuse a directory that holds something this run must not continue or overwrite."""
        problem = Manifest.problem(self.out) if existing is None else None
        if problem is not None and not self.force:
            raise EdgekitError(f"{self.out / 'manifest.json'} is unreadable or not an edgekit manifest ({problem}); "
                               "pass --force to start over (it removes only what edgekit wrote there)")
        if existing is not None and not (self.resume or self.force):
            raise EdgekitError(f"{self.out} already holds a run; pass --resume to continue it "
                               "or --force to start over")
        if existing is not None and not self.force and existing.data.get("recipe") != self.recipe.name:
            raise EdgekitError(f"{self.out} holds a run of recipe {existing.data.get('recipe')!r}, not "
                               f"{self.recipe.name!r}; choose another --out or pass --force to replace it")

    def _prepare(self) -> None:
        """Under the lock: clear a forced run, start or refresh the manifest, save the recipe."""
        if not self.force:
            # read the manifest again: another edgekit process (a task for another target) may
            # have written it while this one waited for the lock; its entries must not be lost
            existing = Manifest.load(self.out)
            self._check_existing(existing)
            self.manifest = existing
        recipe_sha = hashlib.sha256(self.recipe_path.read_bytes()).hexdigest()
        if self.force and self.manifest is None:
            check_out_dir(self.out, above=[self.recipe_path.resolve().parent],  # again, under the lock
                          allow=self._own_recipe())
            for name in RUN_OUTPUTS:
                remove(self.out / name, root=self.out)
        if self.manifest is not None:
            for name in self.manifest.mark_interrupted():
                log.warning("%s: stage %s was interrupted in an earlier run (its process was killed or crashed); "
                            "it is not finished and is redone", self.out, name)
                self.on_stage(name, "interrupted")
        if self.manifest is None:
            self.manifest = Manifest.new(self.out, recipe_name=self.recipe.name,
                                         recipe_sha256=recipe_sha, seed=self.recipe.seed)
        self.manifest.refresh(recipe_sha256=recipe_sha)
        self.manifest.data["recipe_path"] = str(self.recipe_path.resolve())
        self.manifest.save()  # the folder is an edgekit run from now on, even when the first stage fails
        write_text(self.out / "recipe.resolved.yaml", resolved_yaml(self.recipe))
        self.force, self.resume = False, True  # a second execute() of this object continues, it does not wipe again

    # -------------------------------------------------------------- helpers

    @property
    def data(self):
        """The recipe's dataset; without the channel axis of size 1 when a given model takes
        ``(features,)`` inputs (checked against every given model's input and output shapes)."""
        if self._data is None:
            from .data import load_for_recipe
            from .user_model import check_fits, squeeze_data

            raw = load_for_recipe(self.recipe, base=self.recipe_path.parent)
            self._data = raw
            for stage in ("teacher", "student"):
                info = self._source_info(stage)
                if info is not None and check_fits(info, raw, what=f"{stage}.model") == "squeeze":
                    self._data = squeeze_data(raw)
            if self.given is not None:  # a float .tflite/.onnx taking (features,): the same squeeze
                from ._keras3 import ShapeMismatch, shape_fit
                from .external import inspect_model

                try:
                    if shape_fit(inspect_model(self.given.path, self.given.kind).input_shape,
                                 raw.input_shape) == "squeeze":
                        self._data = squeeze_data(raw)
                except ShapeMismatch:
                    pass  # the student stage names the mismatch (external.check_fits)
        return self._data

    def _given(self, stage: str):
        """The ModelRef of ``stage``'s model when it is a given Keras model (file or SavedModel)."""
        from .model_source import classify

        cfg = getattr(self.recipe, stage)
        if cfg is None:
            return None
        ref = classify(cfg.model)
        return ref if ref.kind in ("keras", "savedmodel") else None  # a float .tflite/.onnx: see given

    def _source_info(self, stage: str) -> dict | None:
        """What opening ``stage``'s given model found (see :func:`edgekit.user_model.open_in_child`),
        opened once per file content into ``sources/<stage>.keras`` (a tf_keras copy; the user's
        file is only read)."""
        if self._given(stage) is None:
            return None
        if stage not in self._infos:
            self._open_given()
        found = self._infos[stage]
        if isinstance(found, Exception):
            raise found
        return found

    def _open_given(self) -> None:
        """Open every stage's given model that has no up-to-date copy in ``sources/`` in ONE
        child process (:func:`edgekit.user_model.open_many`); ``self._infos[stage]`` becomes
        what it found, or the error it raised."""
        import numpy as np

        from .model_source import sha256_of
        from .user_model import SAMPLE_ROWS, open_job, open_many

        folder = self.out / "sources"
        todo, jobs = [], []
        for stage in ("teacher", "student"):
            ref = self._given(stage)
            if ref is None or stage in self._infos:
                continue
            model_path, info_path = folder / f"{stage}.keras", folder / f"{stage}.json"
            sha = sha256_of(ref.path)
            info = None
            if info_path.is_file() and model_path.is_file():
                try:
                    info = json.loads(info_path.read_text())
                except ValueError:
                    info = None
                if not isinstance(info, dict) or info.get("sha256") != sha or info.get("path") != str(ref.path):
                    info = None
            if info is not None:
                self._infos[stage] = info
                continue
            raw = self._data
            sample = np.concatenate([raw.x_val, raw.x_test, raw.x_train])[:SAMPLE_ROWS]
            cfg = getattr(self.recipe, stage)
            todo.append((stage, info_path))
            jobs.append(open_job(cfg.model, model_path, sample=sample, input_shape=raw.input_shape,
                                 num_outputs=raw.num_classes, width=cfg.width, what=f"{stage}.model"))
        for (stage, info_path), found in zip(todo, open_many(jobs)):
            if isinstance(found, dict):
                write_json(info_path, found)
            self._infos[stage] = found

    def _given_model(self, stage: str):
        """The tf_keras copy of ``stage``'s given model (a final softmax made linear: logits)."""
        from .fitting import load_model
        from .user_model import strip_softmax

        self.data  # opens the given models  # noqa: B018
        model = load_model(self.out / "sources" / f"{stage}.keras")
        if self.data.task == "classification":
            model, stripped = strip_softmax(model)
            if stripped:
                log.info("%s.model ends in softmax: made linear (edgekit works on logits; same argmax)", stage)
                self._infos[stage]["softmax_removed"] = True
        return model

    def given_models(self) -> dict:
        """``{stage: tf_keras model}`` of the recipe's given models (for the preflight)."""
        return {stage: self._given_model(stage) for stage in ("teacher", "student") if self._given(stage)}

    def _adopt(self, stage: str, cfg, teacher=None):
        """A given model as ``stage``'s result: as it is (``epochs: 0``), or fine-tuned for
        ``epochs`` because the recipe says so; its source (kind, path, sha256) is recorded."""
        from .fitting import finish_stage
        from .user_model import fine_tune

        model = self._given_model(stage)
        info = self._infos[stage]
        epochs = fine_tune(model, self.data, cfg, seed=self.recipe.seed, progress=self.progress, stage=stage,
                           teacher=teacher) if cfg.epochs > 0 else 0
        source = {k: info.get(k) for k in ("kind", "path", "sha256", "format", "keras_version")}
        if info.get("converted_from_keras3"):
            source["rebuilt_from_keras3"] = {"max_abs_diff": info.get("max_abs_diff")}
        if info.get("softmax_removed"):
            source["softmax_removed"] = True
        if info.get("flattened"):
            source["flattened"] = info["flattened"]  # nested models whose layers now sit in the model itself
        metrics = {"source": source, "epochs_run": epochs, "used_as_given": epochs == 0}
        res = finish_stage(stage, model, self.out / "stages" / stage, metrics, cfg, data=self.data)
        return self._stage_files(stage), res.metrics

    def data_fingerprint(self) -> str:
        """What every step's fingerprint starts from: the seed, the data section (and task and
        features where they differ from the defaults), the audio front end's constants, the sha256
        of a file source's content. Runs without ``data.frontend`` keep the fingerprints they had."""
        r = self.recipe
        data_cfg = r.data.model_dump(mode="json", exclude={"frontend"} if r.data.frontend is None else None)
        base = fingerprint("run", r.seed, data_cfg)
        if r.task != "classification" or r.features is not None:  # classification runs keep their fingerprints
            base = fingerprint("run", r.seed, data_cfg, r.task.value,
                               r.features.model_dump(mode="json") if r.features else None)
        if r.data.frontend is not None:  # every constant of the front end: a change is other data
            from .audio import frontend_params

            base = fingerprint(base, {"frontend": frontend_params(r.data.frontend)})
        digest = self.data_digest()
        if digest is not None:  # a file source: its content counts, not only its name
            base = fingerprint(base, {"data_sha256": digest})
        return base

    def data_digest(self) -> str | None:
        """sha256 of the data source's files (None for generated sources), hashed once per run."""
        if not hasattr(self, "_data_digest"):
            from .data import source_digest

            self._data_digest = source_digest(self.recipe.data, base=self.recipe_path.parent)
        return self._data_digest

    def _stage(self, name: str, fp: str, fn: Callable[[], tuple[list[Path], dict]], *,
               force: bool = False) -> tuple[dict, bool]:
        """Run ``fn`` unless the manifest says ``name`` is current; returns (metrics, ran)."""
        if not force and self.manifest.is_current(name, fp):
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
            if stage == "student" and self.given is not None:
                from .external import inspect_model
                from .external.stage import given_files

                self._models[stage] = inspect_model(given_files(folder, self.given.kind)[0], self.given.kind)
            else:
                self._models[stage] = quantize.load(folder) if stage == "qat" else load_model(folder / "model.keras")
        return self._models[stage]

    # -------------------------------------------------------------- stages

    def plan(self) -> list[Step]:
        """The steps of this recipe in order, each with the step(s) whose output it consumes."""
        r = self.recipe
        steps, prev, float_stage = [], None, None
        if r.teacher is not None:
            steps.append(Step("teacher", "teacher", [], self._model_config(r.teacher), self._train_teacher))
            prev, float_stage = "teacher", "teacher"
        for name, cfg in (("student", r.student), ("pruned", r.prune), ("qat", r.qat)):
            if cfg is None:
                continue
            conf = self._model_config(cfg) if name == "student" else cfg.model_dump(mode="json")
            fn = lambda n=name, c=cfg, s=float_stage: self._train(n, c, s)  # noqa: E731
            if name == "student" and self.given is not None:
                conf["float_tflite"] = self._given_needs_tflite()
                fn = self._take_given
            steps.append(Step(name, name, [prev] if prev else [], conf, fn))
            prev = name
            if name != "qat":
                float_stage = name
        self.float_stage, self.qat_stage = float_stage, ("qat" if r.qat is not None else None)
        eval_npz = self.out / "eval" / "eval.npz"
        steps.append(Step("eval-data", "convert", [prev], {"samples": r.evaluate.samples, "reference": float_stage},
                          lambda: self._eval_data(eval_npz)))
        evals = []
        for target in r.targets:
            profile = load_target(target, base=self.recipe_path.parent)
            conv, ev = f"convert:{profile.name}", f"eval:{profile.name}"
            steps.append(Step(conv, "convert", ["eval-data"], [profile.model_dump(mode="json"), self._convert_config()],
                              lambda p=profile: self._convert(p, eval_npz), target=profile.name))
            steps.append(Step(ev, "eval", [conv], r.evaluate.model_dump(mode="json"),
                              lambda p=profile: self._evaluate(p, eval_npz), target=profile.name))
            evals.append(ev)
        # the quality gate is the report step's only setting (None keeps older runs' fingerprints)
        gate = r.quality.model_dump(mode="json") if r.quality is not None else None
        steps.append(Step("report", "report", evals, gate, lambda: self._report(evals)))
        return steps

    def _convert_config(self):
        """The convert steps' config for their fingerprint: the recipe's ``convert`` section without
        the per-layer and selective keys at their defaults (older runs keep their fingerprints), with
        the quality gate when ``convert.selective`` chooses against it."""
        from .recipe import ConvertConfig

        r = self.recipe
        conf = r.convert.model_dump(mode="json")
        defaults = ConvertConfig().model_dump(mode="json")
        for key in ("per_layer_samples", "selective"):
            if conf[key] == defaults[key]:
                conf.pop(key)
        if r.convert.selective != "off":
            conf["quality"] = r.quality.model_dump(mode="json") if r.quality is not None else None
        return conf

    def target_names(self) -> list[str]:
        """The profile names of the recipe's targets, in recipe order."""
        return [load_target(t, base=self.recipe_path.parent).name for t in self.recipe.targets]

    def select_targets(self, targets: Sequence[str]) -> set[str]:
        """Profile names for ``targets`` (profile names, or the recipe's own entries); raises
        :class:`RecipeError` (exit 2) naming the recipe's targets, and the closest one, for a
        target that is not in the recipe. The one check of ``--target`` (the CLI has no other)."""
        import difflib

        names = self.target_names()
        by_entry = dict(zip(self.recipe.targets, names))
        chosen = set()
        for t in targets:
            name = t if t in names else by_entry.get(t)
            if name is None:
                close = difflib.get_close_matches(t, names, n=1)
                raise RecipeError(f"--target {t}: not a target of recipe {self.recipe.name!r} "
                                  f"(its targets: {', '.join(names)})"
                                  + (f"; did you mean {close[0]!r}?" if close else ""))
            chosen.add(name)
        return chosen

    def execute(self, *, until: str | None = None, only: str | None = None,
                targets: Sequence[str] | None = None) -> dict | None:
        """Run the recipe's steps in order; returns the report dict (None when stopped early).

        ``until``: stop after this stage group. ``only``: rerun just this group; every earlier
        step must be finished and current (else :class:`EdgekitError`). Skipped stages
        (``prune: null``...) are recorded as skipped. ``targets`` (with ``only`` or ``until``
        ``convert`` or ``eval``): the convert/eval steps of just these targets; the other
        targets' steps are neither run nor checked, and the shared ``eval-data`` step runs only
        when it is not current, so tasks for different targets can take turns on one run
        directory without undoing each other. Waits up to ``lock_wait_s`` for the run
        directory's lock.
        """
        for flag, value in (("until", until), ("only", only)):
            if value is not None and value not in ALL_STAGES:
                raise EdgekitError(f"--{flag}: unknown stage {value!r} (stages: {', '.join(ALL_STAGES)})")
        chosen = None
        if targets is not None:
            if (only or until) not in ("convert", "eval"):
                raise EdgekitError("--target selects the convert and eval steps of a target; use it with the "
                                   "convert or eval stage")
            chosen = self.select_targets(targets)
        with run_lock(self.out, wait_s=self.lock_wait_s):
            self._prepare()
            return self._execute(until=until, only=only, targets=chosen)

    def _execute(self, *, until: str | None, only: str | None, targets: set[str] | None = None) -> dict | None:
        r = self.recipe
        if only is None and self.given is None:  # a given .tflite/.onnx is not trained: nothing to preflight
            from . import preflight

            preflight.run(r, input_shape=self.data.input_shape, num_classes=self.data.num_classes,
                          reduction=self.data.reduction, given=self.given_models(),
                          targets=[load_target(t, base=self.recipe_path.parent) for t in r.targets])
        for name, cfg in (("teacher", r.teacher), ("student", r.student), ("pruned", r.prune), ("qat", r.qat)):
            if cfg is None:
                self.manifest.mark(name, "skipped", fp="skipped", reason=self._skip_reason(name))
                self.on_stage(name, "skipped")
        base = self.data_fingerprint()
        fps: dict[str, str] = {}
        report = None
        stop = ALL_STAGES.index(only or until) if (only or until) else len(ALL_STAGES)
        for step in self.plan():
            group = ALL_STAGES.index(step.group)
            if group > stop:
                continue  # not break: the plan interleaves convert:T and eval:T per target
            if targets is not None and step.target is not None and step.target not in targets:
                continue  # another target's step: not run, not checked
            inputs = [(fps[a], self.manifest.entry(a).get("files")) for a in step.after] or [base]
            fp = fingerprint(step.name, inputs, step.config)
            if only is not None and group < stop:
                if not self.manifest.is_current(step.name, fp):
                    e = self.manifest.entry(step.name) or {}
                    how = ("was interrupted (its process was killed or crashed)"
                           if str(e.get("error", "")).startswith("interrupted") else "is not finished or out of date")
                    raise EdgekitError(f"--only {only}: earlier step {step.name!r} {how}; run without --only "
                                       "(or with --resume) first")
            else:
                # with --target the shared eval-data step is redone only when it is out of date
                # (rewriting it would put every other target's conversion out of date)
                shared = targets is not None and step.target is None
                metrics, _ = self._stage(step.name, fp, step.fn, force=(only is not None and not shared))
                if step.name == "report":
                    report = metrics.get("report")
            fps[step.name] = fp
        return report

    @property
    def given(self):
        """The :class:`~edgekit.model_source.ModelRef` of an already converted float student
        (``student.model: my.tflite`` / ``my.onnx``), else None."""
        from .model_source import classify

        s = self.recipe.student
        ref = classify(s.model) if s is not None else None
        return ref if ref is not None and ref.converted else None

    def _given_needs_tflite(self) -> bool:
        """Whether a given .onnx must become a float .tflite: the recipe has a target whose kind
        does not take the .onnx as it is (rpi, mcu: ``takes_given_onnx`` in :mod:`edgekit.targets`)."""
        from . import targets

        return self.given.kind == "onnx" and any(
            not targets.get(load_target(t, base=self.recipe_path.parent).kind).takes_given_onnx
            for t in self.recipe.targets)

    def _skip_reason(self, name: str) -> str:
        key = "prune" if name == "pruned" else name
        if self.given is not None:
            return (f"student.model is an already converted float {self.given.kind} model "
                    f"({self.given.path.name}), taken as it is: nothing to train ({key}: null)")
        return f"{key}: null in the recipe"

    def _take_given(self):
        from .external.stage import take_given

        ref = self.given
        remove(self.out / "stages" / "student", root=self.out)  # edgekit's own copy of a past take
        files, metrics = take_given(ref.path, ref.kind, self.data, out_dir=self.out / "stages" / "student",
                                    needs_tflite=self._given_needs_tflite())
        self.manifest.data["source"] = metrics["source"]
        self._models.pop("student", None)
        return files, metrics

    def _model_config(self, cfg) -> dict:
        """A training stage's config for its fingerprint: with the sha256 of a given model file or
        builder file, so a changed file is taken again on ``--resume``."""
        from .model_source import classify, sha256_of

        conf = cfg.model_dump(mode="json")
        ref = classify(cfg.model)
        if ref.kind != "zoo":
            conf["source_sha256"] = sha256_of(ref.path)
        return conf

    def _train_teacher(self):
        from . import train

        if self._given("teacher") is not None:
            return self._adopt("teacher", self.recipe.teacher)

        res = train.run(self.data, self.recipe.teacher, seed=self.recipe.seed,
                        out_dir=self.out / "stages" / "teacher", progress=self.progress)
        return self._stage_files("teacher"), res.metrics

    def _eval_data(self, eval_npz: Path):
        from .convert import write_eval_npz

        path = write_eval_npz(eval_npz, self.data, samples=self.recipe.evaluate.samples,
                              reference_model=self._model(self.float_stage))
        return [path], {"reference": self.float_stage}

    def _with_device_measurement(self, entry: dict) -> dict:
        """A target's entry with what ``edgekit deploy`` measured on the device, when it did
        (``eval/<target>-device.json``); the host's numbers stay under ``host_measurement``."""
        device = self.out / "eval" / f"{entry['name']}-device.json"
        if not device.is_file():
            return entry
        from .deploy import merge_entry

        return merge_entry(entry, json.loads(device.read_text()),
                           load_target(entry["name"], base=self.recipe_path.parent))

    def _with_estimate_range(self, entry: dict) -> dict:
        """An eval result from before estimates knew their calibration range gets the range check
        (and its budget the verdict that follows), so a resumed old run's report does not pass a
        latency budget on an estimate far outside what it was fitted on."""
        if entry.get("latency_estimate_ms") is None or "estimate_in_range" in entry or not entry.get("file"):
            return entry
        from .convert import Artifact
        from .evaluate import check_budget, latency_estimate

        profile = load_target(entry["name"], base=self.recipe_path.parent)
        path = self.out / "targets" / entry["name"] / entry["file"]
        if not path.is_file():
            return entry
        new = {**entry, **latency_estimate(Artifact(path, entry.get("format", ""), profile.runtime, {}), profile)}
        new["budget"] = check_budget(new, profile.budget, profile.kind)
        return new

    def _report(self, evals: list[str]):
        from .report import build_report, write_reports

        targets = [self._with_device_measurement(self._with_estimate_range(self.manifest.entry(e)["metrics"]["result"]))
                   for e in evals]
        report = build_report(self.recipe, self.data.summary(), self.manifest, targets, reference=self.float_stage,
                              features=self.data.reduction_info(), run_dir=self.out)
        return write_reports(self.out, report), {"report": report}

    def _train(self, name: str, cfg, src: str):
        from . import distill, prune, quantize

        out = self.out / "stages" / name
        model = self._model(src) if src is not None else None
        seed = self.recipe.seed
        if name == "student" and self._given("student") is not None:
            return self._adopt("student", cfg, teacher=model)
        if name == "student":
            res = distill.run(model, self.data, cfg, seed=seed, out_dir=out, progress=self.progress)
        elif name == "pruned" and cfg.structure == "channels":
            from . import structured

            res = structured.run(model, self.data, cfg, seed=seed, out_dir=out, progress=self.progress)
        elif name == "pruned":
            res = prune.run(model, self.data, cfg, seed=seed, out_dir=out, progress=self.progress)
        elif name == "qat":
            pruned_metrics = (self.manifest.entry("pruned") or {}).get("metrics", {})
            pruned_layers = pruned_metrics.get("pruned_layers", [])
            sparse = src == "pruned" and "channels_removed" not in pruned_metrics  # channel-pruned: dense
            res = quantize.run(model, self.data, cfg, seed=seed, out_dir=out, pruned=sparse,
                               pruned_layers=pruned_layers if src == "pruned" else [], progress=self.progress)
        else:  # pragma: no cover
            raise StageError(f"unknown stage {name}")
        return self._stage_files(name), res.metrics

    def _convert(self, profile, eval_npz: Path):
        from .convert import convert_target

        folder = self.out / "targets" / profile.name
        remove(folder, root=self.out)
        if self.given is not None:
            from .external import GivenSource, inspect_model
            from .external.stage import given_files

            given = self._model("student")
            made = given_files(self.out / "stages" / "student", given.kind)[1]
            float_tflite = given if given.kind == "tflite" else (
                inspect_model(made, "tflite") if made is not None and made.is_file() else None)
            models = GivenSource(given, float_tflite, self.data, self.recipe.convert, self.recipe.seed)
        else:
            models = {"float": self._model(self.float_stage),
                      "qat": self._model(self.qat_stage) if self.qat_stage else None}
            if self.recipe.convert.selective != "off" and self.recipe.teacher is not None:
                models["teacher"] = self._model("teacher")  # the quality gate's reference
        gate = self.recipe.quality.max_accuracy_drop if self.recipe.quality is not None else None
        arts = convert_target(profile, models, self.data, self.recipe.convert, folder,
                              seed=self.recipe.seed, eval_npz=eval_npz, max_accuracy_drop=gate,
                              tflite_cache=self._tflite_cache)
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
