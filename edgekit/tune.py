"""Auto-compress to a device budget: search for the smallest model that fits one target.

``tune(recipe_path, target=..., out=...)`` searches the student's width, pruning (a sparsity or
an m:n pattern, or none) and the quantization scheme (QAT int8, post-training int8, and on
microcontrollers post-training int16x8) for models that fit the target's flash, RAM and latency
budgets and stay within ``max_accuracy_drop`` points of the teacher's accuracy. Every trial is a
real, ordinary pipeline run of a recipe (:class:`edgekit.pipeline.Run`) in ``trials/<n>/``, in its
own process; its flash (model file), tensor arena and accuracy are measured by the evaluator, as
in ``edgekit run``. Latency is the device's measurement when there is one, else the calibrated
estimate of :mod:`edgekit.estimate` (``latency_basis`` says which; ``null`` when neither).

Before training, a trial whose student cannot fit is pruned early from lower bounds read off the
untrained Keras model (:func:`footprint_bounds`): the bytes of its weights alone, and the largest
input + output activation pair one op needs at once. Both are bounds, not guesses: a model whose
bound is over the budget cannot fit, so no trial that would have fitted is pruned. The flash bound
counts every weight, zero or not: TFLite (and TFLite Micro) store pruned tensors dense, so
sparsity does not shrink the model file; it only helps compressed (gzip) sizes.

The teacher is trained once (``teacher/``, a run of ``base.yaml`` up to the teacher) and its stage
is linked into every trial's run directory with its manifest entry, so the pipeline's fingerprints
find it current and skip it.

The study lives in an Optuna SQLite database (``study.db``): ``resume=True`` continues it. A trial
still ``RUNNING`` there when the study starts again was interrupted: it is marked ``FAIL``
(``interrupted``), its parameters are queued again, and the retry continues in the interrupted
trial's run directory, so its finished stages are not trained twice. Finished trials are never
rerun. Trials run in parallel worker processes (``jobs``), each training with
``cores // jobs`` threads.

The best trial is the one with the smallest model file among those that fit every budget and
meet the accuracy floor (ties: lower latency, then higher accuracy, then the earlier trial). Its
recipe is written as ``best.yaml`` (``edgekit run best.yaml --out DIR`` reproduces it), and
``tune.json``, ``tune.md`` and ``tune.html`` list every trial and the Pareto fronts (accuracy
against flash and against latency, among the trials that fit the budgets).

Example::

    result = tune(Path("recipes/quickstart.yaml"), target="cortex-m4", out=Path("runs/tune"),
                  max_accuracy_drop=1.0, trials=12)
    result["best"]["flash_bytes"], result["best"]["accuracy"]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from ._io import check_out_dir, guard, remove, run_lock, write_json, write_text
from .errors import BudgetError, EdgekitError, RecipeError
from .recipe import (TARGETS_DIR, Recipe, absolute_source, find_target, load_recipe, load_target, resolved_yaml,
                     with_model_paths)
from .report.tune import SCHEME_TEXT

log = logging.getLogger(__name__)

SCHEMA = "edgekit.tune/1"
WIDTHS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
PRUNINGS = ("none", "0.3", "0.5", "0.7", "2:4")
SCHEMES = ("qat-int8", "ptq-int8", "ptq-int16x8")
THREADS_ENV = "EDGEKIT_TUNE_THREADS"  # read by the worker process only
MAX_REPEATS = 25  # points in a row the sampler proposes that were already measured before the study stops

Event = Callable[[str, dict], None]


# ----------------------------------------------------------------------------- search space


@dataclasses.dataclass(frozen=True)
class Space:
    """The choices of a study. ``prunings``: ``"none"``, a sparsity (``"0.5"``) or ``"m:n"``."""

    widths: tuple[float, ...] = WIDTHS
    prunings: tuple[str, ...] = PRUNINGS
    schemes: tuple[str, ...] = SCHEMES

    def distributions(self) -> dict:
        from optuna.distributions import CategoricalDistribution

        return {"width": CategoricalDistribution(self.widths), "prune": CategoricalDistribution(self.prunings),
                "scheme": CategoricalDistribution(self.schemes)}

    def size(self) -> int:
        return len(self.widths) * len(self.prunings) * len(self.schemes)

    def as_json(self) -> dict:
        return {"width": list(self.widths), "prune": list(self.prunings), "scheme": list(self.schemes)}


def prune_choice(recipe: Recipe) -> str:
    """A recipe's pruning as a search-space choice: ``none``, ``"0.6"`` or ``"2:4"``."""
    if recipe.prune is None:
        return "none"
    return recipe.prune.structure or f"{recipe.prune.target_sparsity:g}"


def scheme_choice(recipe: Recipe) -> str:
    """A recipe's quantization as a search-space choice."""
    if recipe.qat is not None:
        return "qat-int8"
    return "ptq-int16x8" if recipe.convert.mcu_scheme == "int16x8" else "ptq-int8"


def space_for(recipe: Recipe, kind: str) -> Space:
    """The default space for a target kind, with the recipe's own choices added: int16x8 only
    for ``mcu`` targets (elsewhere the primary artifact is int8)."""
    schemes = SCHEMES if kind == "mcu" else tuple(s for s in SCHEMES if s != "ptq-int16x8")
    widths = tuple(sorted({*WIDTHS, float(recipe.student.width)}))
    prunings = tuple(dict.fromkeys([*PRUNINGS, prune_choice(recipe)]))
    own = scheme_choice(recipe)
    return Space(widths, prunings, schemes if own in schemes else (*schemes, own))


def base_params(recipe: Recipe) -> dict[str, Any]:
    """The recipe's own choices as trial parameters (the study's first trial)."""
    return {"width": float(recipe.student.width), "prune": prune_choice(recipe), "scheme": scheme_choice(recipe)}


def trial_recipe(base: Recipe, params: dict[str, Any]) -> Recipe:
    """``base`` with a trial's width, pruning and scheme; validated like any recipe.

    ``prune: "none"`` drops pruning; a sparsity keeps the base's pruning settings (or the
    defaults) at that target; ``"m:n"`` sets the structure and its sparsity ``1 - m/n``.
    ``qat-int8`` keeps the base's QAT settings (or the defaults); ``ptq-*`` sets ``qat: null`` and
    ``convert.mcu_scheme``.
    """
    d = base.model_dump(mode="json")
    d["student"] = {**d["student"], "width": float(params["width"]), "baseline": False}
    choice = str(params["prune"])
    if choice == "none":
        d["prune"] = None
    else:
        prune = d["prune"] or {}
        if ":" in choice:
            m, n = map(int, choice.split(":"))
            d["prune"] = {**prune, "target_sparsity": 1 - m / n, "structure": choice}
        else:
            d["prune"] = {**prune, "target_sparsity": float(choice), "structure": None}
    scheme = params["scheme"]
    d["qat"] = (d["qat"] or {}) if scheme == "qat-int8" else None
    d["convert"] = {**d["convert"], "mcu_scheme": "int16x8" if scheme == "ptq-int16x8" else "int8"}
    try:
        return Recipe.model_validate(d)
    except Exception as exc:  # pydantic ValidationError: a choice the recipe cannot take
        raise RecipeError(f"trial parameters {params}: {exc}") from None


def tuned_base(recipe: Recipe, recipe_dir: Path, target: str) -> Recipe:
    """The recipe a study tunes: one target, the data and target paths made absolute (trial
    recipes live in ``trials/<n>/``, not beside the original), and no from-scratch student
    baseline (``student.baseline``: it would double every trial's distillation)."""
    if recipe.teacher is None or recipe.student is None:
        raise RecipeError("edgekit tune searches students distilled from a teacher; the recipe needs both "
                          "teacher and student (not null)")
    d = with_model_paths(recipe, recipe_dir).model_dump(mode="json")
    d["data"]["source"] = absolute_source(d["data"]["source"], recipe_dir)
    path = find_target(target, base=recipe_dir)
    d["targets"] = [path.stem if path.parent.resolve() == TARGETS_DIR.resolve() else str(path.resolve())]
    d["student"] = {**d["student"], "baseline": False}
    return Recipe.model_validate(d)


# ----------------------------------------------------------------------------- early pruning


_NO_OP_LAYERS = ("InputLayer", "Flatten", "Reshape", "Dropout", "BatchNormalization", "Activation")


def footprint_bounds(model, *, scheme: str = "qat-int8") -> dict[str, Any]:
    """Lower bounds of a Keras model's converted footprint, before any training (bytes).

    ``student_params``: every weight of the model. ``flash_lower_bytes``: the weights alone as the converted file stores them: one byte per
    weight (int8, stored dense: zeros count), biases at 4 bytes (int32; 8 for int16x8, int64);
    BatchNormalization is left out (it folds into the layer before it). ``arena_lower_bytes``: the
    largest input + output activations of one op, at one byte per value (two for int16x8): TFLite
    Micro holds both in its arena while the op runs. Layers that convert to no op or to a reshape
    (Flatten, Reshape, Dropout, BatchNormalization, Activation) are skipped. The real file adds the
    flatbuffer, quantization parameters and op list; the real arena adds scratch buffers and the
    interpreter's own structures: both are only larger.
    """
    import numpy as np

    act = 2 if scheme == "ptq-int16x8" else 1
    bias = 8 if scheme == "ptq-int16x8" else 4
    flash = 0
    arena = 0
    params = 0
    for layer in model.layers:
        cls = type(layer).__name__
        for w in layer.weights:
            n = int(np.prod(w.shape))
            params += n
            if cls == "BatchNormalization":
                continue
            flash += n * (bias if "bias" in w.name.split("/")[-1] else 1)
        if cls in _NO_OP_LAYERS:
            continue
        ins = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        outs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        size = sum(int(np.prod(t.shape[1:])) for t in [*ins, *outs])
        arena = max(arena, size * act)
    return {"student_params": params, "flash_lower_bytes": flash, "arena_lower_bytes": arena}


def early_verdict(model, params: dict[str, Any], recipe: Recipe, budget) -> tuple[dict[str, Any], str | None]:
    """(bounds, reason): the reason a trial cannot fit (or cannot run), or None to train it.

    Checks the flash and arena bounds of :func:`footprint_bounds` against ``budget``, and for an
    ``m:n`` pruning that every layer to prune has a multiple of ``n`` input channels.
    """
    bounds = footprint_bounds(model, scheme=params["scheme"])
    reasons = []
    if budget.flash_bytes is not None and bounds["flash_lower_bytes"] > budget.flash_bytes:
        reasons.append(f"flash: the weights alone take {bounds['flash_lower_bytes']} bytes > budget "
                       f"{budget.flash_bytes} bytes")
    if budget.ram_bytes is not None and bounds["arena_lower_bytes"] > budget.ram_bytes:
        reasons.append(f"ram: one op's input + output take {bounds['arena_lower_bytes']} bytes > budget "
                       f"{budget.ram_bytes} bytes")
    choice = str(params["prune"])
    if ":" in choice and recipe.prune is not None:
        from .prune import layers_to_prune

        n = int(choice.split(":")[1])
        try:
            names = layers_to_prune(model, recipe.prune.skip_layers)
        except EdgekitError as exc:
            names, _ = [], reasons.append(str(exc))
        bad = [f"{name} has {model.get_layer(name).kernel.shape[-2]}" for name in names
               if model.get_layer(name).kernel.shape[-2] % n]
        if bad:
            reasons.append(f"{choice} sparsity needs a multiple of {n} input channels in every pruned layer: "
                           f"{', '.join(bad)}")
    return bounds, ("; ".join(reasons) or None)


# ----------------------------------------------------------------------------- trial directories


def prepare_trial_dir(trial_dir: Path, teacher_dir: Path, recipe: Recipe, *, header: str = "") -> Path:
    """Make ``trial_dir`` a run directory whose teacher stage is the shared teacher's.

    The teacher's files are hard-linked (copied where links fail) into ``stages/teacher`` and its
    manifest entry is copied, so :class:`~edgekit.pipeline.Run` finds the stage current (same
    config, data and seed, same file hashes) and skips it. A directory that already holds a
    manifest (a retried trial) keeps its finished stages. Writes ``recipe.yaml``; returns its path.
    """
    trial_dir.mkdir(parents=True, exist_ok=True)
    src = teacher_dir / "stages" / "teacher"
    dst = trial_dir / "stages" / "teacher"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not (dst / f.name).exists():
            guard(dst / f.name, trial_dir)
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)
    if not (trial_dir / "manifest.json").is_file():
        manifest = json.loads((teacher_dir / "manifest.json").read_text())
        manifest["stages"] = {"teacher": manifest["stages"]["teacher"]}
        write_json(trial_dir / "manifest.json", manifest)
    path = trial_dir / "recipe.yaml"
    write_text(path, header + resolved_yaml(recipe))
    return path


def _worker_main(argv: list[str]) -> int:
    """``python -m edgekit.tune TRIAL_DIR``: run the trial's recipe (resume) in its directory.

    Writes ``worker.json`` (``ok``, ``error``, ``exit_code``, ``seconds``) and exits with the
    error's exit code. Ends itself when the study process that started it is gone.
    """
    trial_dir = Path(argv[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(137)  # the study is gone (killed): stop training for nobody

    threading.Thread(target=watch, daemon=True).start()
    threads = int(os.environ.get(THREADS_ENV, "0") or 0)
    if threads:
        from ._tf import tf

        tf().config.threading.set_intra_op_parallelism_threads(threads)
        tf().config.threading.set_inter_op_parallelism_threads(threads)
    start = time.perf_counter()
    result: dict[str, Any] = {"ok": True, "error": None, "exit_code": 0}
    try:
        from .pipeline import Run

        path = trial_dir / "recipe.yaml"
        Run(load_recipe(path), path, trial_dir, resume=True).execute()
    except EdgekitError as exc:
        result = {"ok": False, "error": str(exc).splitlines()[0], "exit_code": exc.exit_code}
    except Exception as exc:  # noqa: BLE001 - a trial that crashes is a failed trial, with its reason
        log.exception("trial failed")
        text = " ".join(str(exc).split())[:400]
        result = {"ok": False, "error": f"{type(exc).__name__}: {text}", "exit_code": 1}
    result["seconds"] = round(time.perf_counter() - start, 3)
    write_json(trial_dir / "worker.json", result)
    return int(result["exit_code"])


# ----------------------------------------------------------------------------- the study


def _study_name(recipe: Recipe, target: str) -> str:
    return f"{recipe.name}@{Path(target).stem}"


def constraints(frozen_trial) -> list[float]:
    """Optuna constraints (<= 0 is feasible): budget excess and accuracy shortfall, as stored."""
    return list(frozen_trial.user_attrs.get("constraints", [1.0]))


def measured_row(report: dict, budget, *, floor: float) -> dict[str, Any]:
    """A trial's numbers from its run's ``report.json``: flash, arena, latency (with its basis),
    accuracy, and whether it fits the budgets and meets the accuracy ``floor``."""
    t = report["targets"][0]
    on = str(t.get("measured_on") or "")
    p50 = (t.get("latency_ms") or {}).get("p50")
    if p50 is not None and on and not on.startswith("host-"):
        latency, basis = p50, "measured"
    elif t.get("latency_estimate_ms") is not None:
        latency, basis = t["latency_estimate_ms"], "estimate"
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


def _retry_stale(study) -> list[int]:
    """Mark trials left RUNNING by an interrupted study FAIL (``interrupted``) and queue their
    parameters again; returns their numbers."""
    from optuna.trial import TrialState

    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)  # noqa: SLF001 - optuna's storage API
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # noqa: SLF001
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            log.warning("trial %d was interrupted (still RUNNING in study.db): marked FAIL, its parameters are "
                        "queued again; the retry continues in its run directory", t.number)
        else:  # stopped while the sampler was choosing: nothing ran
            log.warning("trial %d was interrupted before its parameters were chosen: marked FAIL", t.number)
        stale.append(t.number)
    return stale


def _counted(t) -> bool:
    """A finished trial that counts toward ``trials``: interrupted ones are retried and repeats of
    a point already measured (``duplicate_of``) cost nothing, so neither counts."""
    return t.state.is_finished() and not t.user_attrs.get("interrupted") and t.user_attrs.get("duplicate_of") is None


def default_jobs() -> int:
    """Parallel trials by default: the usable cores, at most 2."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 2))


@dataclasses.dataclass
class _Running:
    trial: Any
    params: dict
    dir: Path
    proc: subprocess.Popen
    log: Any
    start: float
    bounds: dict


def tune(recipe_path: Path, *, target: str, out: Path, max_accuracy_drop: float = 1.0, trials: int = 20,
         timeout_s: float | None = None, jobs: int | None = None, resume: bool = False,
         on_event: Event | None = None, space: Space | None = None) -> dict[str, Any]:
    """Run (or with ``resume`` continue) a study into ``out``; returns the ``tune.json`` dict.

    ``max_accuracy_drop``: percentage points below the teacher's test accuracy a trial may lose;
    ``trials``: finished trials the study should hold (a resumed study runs the rest); ``timeout_s``:
    no trial starts after that many seconds of this call (running ones finish); ``jobs``: trials
    in parallel (default :func:`default_jobs`); ``space``: the choices (default
    :func:`space_for`). ``on_event(kind, info)`` hears ``teacher``, ``start``, ``trial`` (one
    finished) and ``done``.

    Writes ``study.db``, ``base.yaml``, ``teacher/``, ``trials/<n>/``, ``tune.json``, ``tune.md``,
    ``tune.html`` and, when a trial fits, ``best.yaml``. Raises :class:`RecipeError` for a recipe
    tune cannot search (no student, a task other than classification) or a study in ``out`` made
    from another recipe, :class:`EdgekitError` when ``out`` holds a study and ``resume`` is off,
    and :class:`BudgetError` (after writing the report) when no trial fits the budgets within the
    accuracy floor. Ctrl-C stops the workers and marks their trials for a retry on ``resume``.
    """
    import optuna

    on_event = on_event or (lambda kind, info: None)
    recipe_path, out = Path(recipe_path), Path(out)
    user = load_recipe(recipe_path)
    if user.student is None:
        raise RecipeError(f"{recipe_path}: student: null; tune searches the student's width, so the recipe "
                          "needs a student")
    if user.task.value != "classification":
        raise RecipeError(f"{recipe_path}: task {user.task.value}: tune keeps an accuracy floor and supports "
                          "task classification only")
    profile = load_target(target, base=recipe_path.parent)
    base = tuned_base(user, recipe_path.parent, target)
    space = space or space_for(base, profile.kind.value)
    jobs = jobs or default_jobs()
    check_out_dir(out, markers=("study.db", "base.yaml", "tune.json"), what="edgekit tune study",
                  above=[recipe_path.resolve().parent])
    started = time.perf_counter()
    with run_lock(out, busy_hint="another edgekit tune is running there; wait for it or choose another --out"):
        db = out / "study.db"
        base_yaml = resolved_yaml(base)
        settings = {"recipe": base.name, "target": profile.name, "base_yaml": base_yaml,
                    "max_accuracy_drop": max_accuracy_drop, "space": space.as_json()}
        if db.exists() and not resume:
            raise EdgekitError(f"{out} already holds a study (study.db); pass --resume to continue it or choose "
                               "another --out")
        write_text(out / "base.yaml", "# the recipe edgekit tune searches around (paths absolute, one target)\n"
                   + base_yaml)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}",
                                             engine_kwargs={"connect_args": {"timeout": 60}})
        study = optuna.create_study(study_name=_study_name(base, target), storage=storage,
                                    directions=["maximize", "minimize"], load_if_exists=True)
        with warnings.catch_warnings():  # constraints_func is marked experimental in optuna 4
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # seeded by the recipe, and by the trials already stored, so a resumed study does not draw
            # the same points again
            study.sampler = optuna.samplers.TPESampler(
                seed=base.seed + len(study.get_trials(deepcopy=False)), constraints_func=constraints)
        stored = study.user_attrs.get("settings")
        if stored is None:
            study.set_user_attr("settings", settings)
        elif stored != settings:
            changed = [k for k in settings if stored.get(k) != settings[k]]
            raise RecipeError(f"{out}: the study there was started with another {', '.join(changed)} "
                              f"(recipe {stored.get('recipe')!r}, target {stored.get('target')!r}, "
                              f"--max-accuracy-drop {stored.get('max_accuracy_drop')}); resume it with the same "
                              "recipe and options, or choose another --out")
        _retry_stale(study)
        teacher_acc = _teacher(base, out, on_event)
        floor = teacher_acc - max_accuracy_drop / 100.0
        study.set_user_attr("teacher_accuracy", teacher_acc)
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(base_params(base), user_attrs={"origin": "recipe"})
        ctx = _Ctx(study, space, base, profile, out, floor, jobs, on_event)
        on_event("start", {"trials": trials, "done": sum(map(_counted, study.get_trials(deepcopy=False))),
                           "jobs": jobs})
        try:
            ctx.loop(trials, None if timeout_s is None else started + timeout_s)
        finally:
            result = write_outputs(study, out, base, profile, teacher_acc=teacher_acc,
                                   max_accuracy_drop=max_accuracy_drop, space=space,
                                   seconds=time.perf_counter() - started)
    on_event("done", result)
    if result["best"] is None:
        fitting = [r for r in result["trials"] if r.get("fits")]
        best_fit = max(fitting, key=lambda r: r["accuracy"] or 0, default=None)
        extra = (f"; the most accurate trial that fits, {best_fit['number']}, reached "
                 f"{100 * best_fit['accuracy']:.1f} %" if best_fit else "; none fits the budgets at all")
        raise BudgetError(f"no trial fits {profile.name}'s budgets within {max_accuracy_drop:g} points of the "
                          f"teacher ({100 * teacher_acc:.1f} %, floor {100 * floor:.1f} %){extra}; see "
                          f"{out / 'tune.md'} (try more --trials or a larger --max-accuracy-drop)")
    return result


def _teacher(base: Recipe, out: Path, on_event: Event) -> float:
    """Train (or find) the shared teacher in ``out/teacher``; returns its test accuracy."""
    from .pipeline import Run

    on_event("teacher", {"status": "running"})
    Run(base, out / "base.yaml", out / "teacher", resume=True).execute(until="teacher")
    entry = json.loads((out / "teacher" / "manifest.json").read_text())["stages"]["teacher"]
    acc = float(entry["metrics"]["accuracy"])
    on_event("teacher", {"status": "done", "accuracy": acc})
    return acc


class _Ctx:
    """The study loop: ask, prune early or start a worker, tell; ask/tell in this thread only."""

    def __init__(self, study, space: Space, base: Recipe, profile, out: Path, floor: float, jobs: int,
                 on_event: Event):
        self.study, self.space, self.base, self.profile = study, space, base, profile
        self.out, self.floor, self.jobs, self.on_event = out, floor, jobs, on_event
        self.running: list[_Running] = []
        self._models: dict[float, Any] = {}
        self.repeats, self.said_exhausted = 0, False

    def loop(self, trials: int, deadline: float | None) -> None:
        try:
            while True:
                while len(self.running) < self.jobs and self._wanted(trials) > 0 and not self._exhausted() and \
                        (deadline is None or time.perf_counter() < deadline):
                    self._ask()
                if not self.running:
                    break
                time.sleep(0.5)
                for r in [r for r in self.running if r.proc.poll() is not None]:
                    self.running.remove(r)
                    self._finish(r)
        except BaseException:
            self._abort()
            raise

    def _exhausted(self) -> bool:
        """True when every point of the space was tried, or the sampler keeps repeating itself."""
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        tried = {tuple(sorted(t.params.items())) for t in done}
        running = {tuple(sorted(r.params.items())) for r in self.running}
        if len(tried | running) >= self.space.size() or self.repeats >= MAX_REPEATS:
            if not self.said_exhausted:
                log.warning("stopping: %s", "every point of the search space was tried"
                            if len(tried | running) >= self.space.size() else
                            f"the sampler proposed {MAX_REPEATS} points in a row that were already measured")
                self.said_exhausted = True
            return True
        return False

    def _wanted(self, trials: int) -> int:
        done = sum(map(_counted, self.study.get_trials(deepcopy=False)))
        return trials - done - len(self.running)

    def _ask(self) -> None:
        from optuna.trial import TrialState

        trial = self.study.ask(self.space.distributions())
        params = dict(trial.params)
        same = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                if t.params == params and not t.user_attrs.get("duplicate_of")]
        if same:  # the sampler asked for a point it already has: repeat its result, run nothing
            first = same[0]
            for k, v in first.user_attrs.items():
                if k not in ("origin", "retry_of"):
                    trial.set_user_attr(k, v)
            trial.set_user_attr("duplicate_of", first.number)
            self.study.tell(trial, first.values if first.state == TrialState.COMPLETE else None, state=first.state)
            self.repeats += 1
            self._event(trial.number)
            return
        self.repeats = 0
        recipe = trial_recipe(self.base, params)
        bounds, reason = early_verdict(self._student(recipe), params, recipe, self.profile.budget)
        for k, v in bounds.items():
            trial.set_user_attr(k, v)
        if reason is not None:
            trial.set_user_attr("pruned_reason", reason)
            trial.set_user_attr("constraints", [1.0])
            self.study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned before training: %s", trial.number, reason)
            self._event(trial.number)
            return
        self._start(trial, params, recipe, bounds)

    def _student(self, recipe: Recipe):
        """The untrained student at the trial's width (built once per width)."""
        width = recipe.student.width
        if width not in self._models:
            from .data import load_for_recipe
            from .models import create_model

            if not hasattr(self, "_data"):
                self._data = load_for_recipe(self.base)
            d = self._data
            self._models[width] = create_model(recipe.student.model, input_shape=d.input_shape,
                                               num_classes=d.num_classes, width=width, seed=recipe.seed,
                                               reduction=d.reduction)
        return self._models[width]

    def _start(self, trial, params: dict, recipe: Recipe, bounds: dict) -> None:
        trials_dir = self.out / "trials"
        trial_dir = trials_dir / str(trial.number)
        retry_of = trial.user_attrs.get("retry_of")
        if retry_of is not None and (trials_dir / str(retry_of)).is_dir() and not trial_dir.exists():
            guard(trials_dir / str(retry_of), self.out)
            guard(trial_dir, self.out)
            (trials_dir / str(retry_of)).rename(trial_dir)  # continue its finished stages
            remove(trial_dir / "worker.json", root=self.out)
        header = (f"# edgekit tune: trial {trial.number} of study {self.study.study_name!r}: width {params['width']:g}, "
                  f"prune {params['prune']}, {SCHEME_TEXT[params['scheme']]}\n")
        prepare_trial_dir(trial_dir, self.out / "teacher", recipe, header=header)
        trial.set_user_attr("run_dir", str(trial_dir.relative_to(self.out)))
        env = dict(os.environ)
        if self.jobs > 1:
            env[THREADS_ENV] = str(max(1, default_cores() // self.jobs))
        logf = open(trial_dir / "worker.log", "a")
        logf.write(f"--- worker started {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        logf.flush()
        proc = subprocess.Popen([sys.executable, "-m", "edgekit.tune", str(trial_dir)], stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.info("trial %d started: %s (pid %d)", trial.number, params, proc.pid)
        self.running.append(_Running(trial, params, trial_dir, proc, logf, time.perf_counter(), bounds))

    def _finish(self, r: _Running) -> None:
        from optuna.trial import TrialState

        r.log.close()
        trial = r.trial
        trial.set_user_attr("seconds", round(time.perf_counter() - r.start, 3))
        worker = _read_json(r.dir / "worker.json") or {"ok": False, "error": f"worker exited with status "
                                                        f"{r.proc.returncode} and wrote no result (see worker.log)"}
        report = _read_json(r.dir / "report.json") if worker.get("ok") else None
        if report is None:
            trial.set_user_attr("error", worker.get("error") or "no report.json")
            trial.set_user_attr("constraints", [1.0])
            self.study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, worker.get("error"))
        else:
            row = measured_row(report, self.profile.budget, floor=self.floor)
            for k, v in row.items():
                trial.set_user_attr(k, v)
            if row["accuracy"] is None or row["flash_bytes"] is None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, [row["accuracy"], row["flash_bytes"]])
        self._event(trial.number)

    def _event(self, number: int) -> None:
        t = self.study.get_trials(deepcopy=False)[number]
        self.on_event("trial", trial_row(t))

    def _abort(self) -> None:
        """Stop running workers (Ctrl-C or an error): their trials are left for a retry on resume."""
        for r in self.running:
            r.proc.terminate()
        for r in self.running:
            try:
                r.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
            r.log.close()
        _retry_stale(self.study)
        self.running = []


def default_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------- results


_ROW_KEYS = ("flash_bytes", "gzip_bytes", "arena_bytes", "latency_ms", "latency_basis", "host_p50_ms", "measured_on",
             "accuracy", "agreement_with_float", "format", "student_params", "sparsity", "fits", "meets_floor", "violations",
             "unchecked", "flash_lower_bytes", "arena_lower_bytes", "pruned_reason", "error", "seconds", "run_dir",
             "duplicate_of", "retry_of", "interrupted", "origin")


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
    from .report.view import mark_pareto

    pts = [{"number": r["number"], "x": r[x_key], "accuracy": r["accuracy"]} for r in rows
           if r["fits"] and r.get("duplicate_of") is None and r[x_key] is not None and r["accuracy"] is not None]
    return sorted(p["number"] for p in mark_pareto(pts, x_key="x") if p["pareto"])


def write_outputs(study, out: Path, base: Recipe, profile, *, teacher_acc: float, max_accuracy_drop: float,
                  space: Space, seconds: float) -> dict[str, Any]:
    """Write ``tune.json``, ``tune.md``, ``tune.html`` and (with a best trial) ``best.yaml``, all
    from the trials stored in the study; returns the ``tune.json`` dict."""
    from .report.tune import render_tune_html, render_tune_markdown

    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    best = pick_best(rows)
    result = {
        "schema": SCHEMA, "recipe": base.name, "target": profile.name, "kind": profile.kind.value,
        "board": profile.board, "budget": profile.budget.model_dump(), "teacher_accuracy": teacher_acc,
        "max_accuracy_drop_points": max_accuracy_drop, "accuracy_floor": teacher_acc - max_accuracy_drop / 100.0,
        "study": {"name": study.study_name, "storage": "sqlite:///study.db", "sampler": "TPESampler",
                  "seed": base.seed, "directions": ["maximize accuracy", "minimize flash_bytes"]},
        "space": space.as_json(), "selection": "smallest flash among trials that fit every budget and meet the "
                                                "accuracy floor; ties: lower latency, higher accuracy, earlier trial",
        "counts": {s: sum(1 for r in rows if r["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        "pareto": {"flash": pareto_numbers(rows, "flash_bytes"), "latency": pareto_numbers(rows, "latency_ms")},
        "best": best, "best_recipe": "best.yaml" if best else None, "seconds_this_call": round(seconds, 3),
        "trials": rows,
    }
    if best is not None:
        recipe = load_recipe(out / best["run_dir"] / "recipe.yaml")
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


if __name__ == "__main__":  # the trial worker: python -m edgekit.tune TRIAL_DIR
    sys.exit(_worker_main(sys.argv[1:]))
