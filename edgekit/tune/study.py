"""The study of :mod:`edgekit.tune`: an Optuna study in ``study.db`` (or a shared database), its ask/tell loop over
parallel worker processes, interrupted trials retried on resume, and :func:`tune` itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from .._io import check_out_dir, guard, remove, run_lock, write_text
from ..errors import BudgetError, EdgekitError, RecipeError
from ..recipe import Recipe, load_recipe, load_target, resolved_yaml
from ..report.tune import SCHEME_TEXT
from .bounds import early_verdict
from .results import measured_row, trial_row, write_outputs
from .storage import Storage, open_storage, resolve
from .space import Space, base_params, space_for, trial_recipe, tuned_base
from .worker import THREADS_ENV, prepare_trial_dir

log = logging.getLogger(__name__)

MAX_REPEATS = 25  # points in a row the sampler proposes that were already measured before the study stops

Event = Callable[[str, dict], None]


def _study_name(recipe: Recipe, target: str) -> str:
    return f"{recipe.name}@{Path(target).stem}"


def constraints(frozen_trial) -> list[float]:
    """Optuna constraints (<= 0 is feasible): budget excess and accuracy shortfall, as stored."""
    return list(frozen_trial.user_attrs.get("constraints", [1.0]))


def _retry_stale(study, trial_ids: set[int] | None = None) -> list[int]:
    """Mark trials left RUNNING by an interrupted study FAIL (``interrupted``) and queue their
    parameters again; returns their numbers. ``trial_ids``: only these (a shared study: the
    trials of this process, or those whose heartbeat stopped), else every RUNNING trial."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial_ids is not None and t._trial_id not in trial_ids:  # noqa: SLF001
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)  # noqa: SLF001 - optuna's storage API
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):  # noqa: SLF001
                continue
        except UpdateFinishedTrialError:  # another machine failed it first and queued the retry
            continue
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            log.warning("trial %d was interrupted (still RUNNING in the study%s): marked FAIL, its parameters are "
                        "queued again; the retry continues in its run directory where that is on this machine",
                        t.number, f", ran on {t.user_attrs['host']}" if t.user_attrs.get("host") else "")
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
         on_event: Event | None = None, space: Space | None = None, storage: Storage | str | None = None,
         study_name: str | None = None, join: bool = False, report_only: bool = False) -> dict[str, Any]:
    """Run (or with ``resume`` continue) a study into ``out``; returns the ``tune.json`` dict.

    ``max_accuracy_drop``: percentage points below the teacher's test accuracy a trial may lose;
    ``trials``: finished trials the study should hold (a resumed study runs the rest); ``timeout_s``:
    no trial starts after that many seconds of this call (running ones finish); ``jobs``: trials
    in parallel (default :func:`default_jobs`); ``space``: the choices (default
    :func:`space_for`). ``on_event(kind, info)`` hears ``teacher``, ``start``, ``trial`` (one
    finished) and ``done``.

    ``storage``: where the study lives (:func:`edgekit.tune.storage.resolve`; default
    ``out/study.db``). A shared database (PostgreSQL) lets several machines work on one study:
    ``join`` adds this process's workers to a study that exists there (``study_name``, default
    ``RECIPE@TARGET``); each trial runs in ``out/trials/<n>`` of the machine that ran it (its
    ``host`` is recorded), ``trials`` counts the study's trials on every machine, and a trial
    whose machine stops sending heartbeats is failed and queued again. ``report_only`` runs no
    trial: it writes the outputs from the stored trials.

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
    space = space or space_for(base, profile.kind)
    jobs = jobs or default_jobs()
    if not isinstance(storage, Storage):
        storage = resolve(storage)
    name = study_name or _study_name(base, target)
    check_out_dir(out, markers=("study.db", "base.yaml", "tune.json"), what="edgekit tune study",
                  above=[recipe_path.resolve().parent])
    started = time.perf_counter()
    with run_lock(out, busy_hint="another edgekit tune is running there; wait for it or choose another --out"):
        db = out / "study.db"
        base_yaml = resolved_yaml(base)
        settings = {"recipe": base.name, "target": profile.name, "base_yaml": base_yaml,
                    "max_accuracy_drop": max_accuracy_drop, "space": space.as_json()}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if not storage.shared and db.exists() and not (resume or join or report_only):
            raise EdgekitError(f"{out} already holds a study (study.db); pass --resume to continue it or choose "
                               "another --out")
        if not storage.shared and not db.exists() and (join or report_only):
            raise EdgekitError(f"{out} holds no study (study.db) to {'join' if join else 'report'}; give the "
                               "shared one with --storage URL (or $EDGEKIT_TUNE_STORAGE)")
        rdb = open_storage(storage, out)
        exists = any(s.study_name == name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False))
        if storage.shared and exists and not (resume or join or report_only):
            raise EdgekitError(f"study {name!r} already exists in {storage.shown}; pass --join to add workers to it "
                               "(or --resume), or choose another --study")
        if storage.shared and not exists and (join or report_only):
            raise EdgekitError(f"no study {name!r} in {storage.shown} to {'join' if join else 'report'}; start it "
                               "with edgekit tune --storage URL (without --join) first, or check --study")
        if not report_only:
            write_text(out / "base.yaml", "# the recipe edgekit tune searches around (paths absolute, one target)\n"
                       + base_yaml)
        study = optuna.create_study(study_name=name, storage=rdb, directions=["maximize", "minimize"],
                                    load_if_exists=True)
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
        if report_only:
            teacher_acc = study.user_attrs.get("teacher_accuracy")
            if teacher_acc is None:
                raise EdgekitError(f"study {name!r} in {storage.shown} has no teacher accuracy yet (its first "
                                   "edgekit tune is still training the teacher); report it later")
            result = write_outputs(study, out, base, profile, teacher_acc=teacher_acc,
                                   max_accuracy_drop=max_accuracy_drop, space=space,
                                   seconds=time.perf_counter() - started, storage=storage.shown)
        else:
            if storage.shared:  # only trials whose machine went silent; others may be running elsewhere
                _retry_stale(study, set(rdb._get_stale_trial_ids(study._study_id)))  # noqa: SLF001
            else:
                _retry_stale(study)
            teacher_acc = _teacher(base, out, on_event)
            shared_acc = study.user_attrs.get("teacher_accuracy") if storage.shared else None
            if shared_acc is not None and shared_acc != teacher_acc:  # one floor for every machine: the first's
                log.warning("the teacher here reached %.4f, the study's first machine %.4f; the study's floor uses "
                            "the latter", teacher_acc, shared_acc)
                teacher_acc = shared_acc
            floor = teacher_acc - max_accuracy_drop / 100.0
            if study.user_attrs.get("teacher_accuracy") is None or not storage.shared:
                study.set_user_attr("teacher_accuracy", teacher_acc)
            if not study.get_trials(deepcopy=False):
                study.enqueue_trial(base_params(base), user_attrs={"origin": "recipe"})
            ctx = _Ctx(study, space, base, profile, out, floor, jobs, on_event, shared=storage.shared)
            on_event("start", {"trials": trials, "done": sum(map(_counted, study.get_trials(deepcopy=False))),
                               "jobs": jobs})
            try:
                ctx.loop(trials, None if timeout_s is None else started + timeout_s)
            finally:
                result = write_outputs(study, out, base, profile, teacher_acc=teacher_acc,
                                       max_accuracy_drop=max_accuracy_drop, space=space,
                                       seconds=time.perf_counter() - started, storage=storage.shown)
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
    from ..pipeline import Run

    on_event("teacher", {"status": "running"})
    Run(base, out / "base.yaml", out / "teacher", resume=True).execute(until="teacher")
    entry = json.loads((out / "teacher" / "manifest.json").read_text())["stages"]["teacher"]
    acc = float(entry["metrics"]["accuracy"])
    on_event("teacher", {"status": "done", "accuracy": acc})
    return acc


class _Ctx:
    """The study loop: ask, prune early or start a worker, tell; ask/tell in this thread only."""

    def __init__(self, study, space: Space, base: Recipe, profile, out: Path, floor: float, jobs: int,
                 on_event: Event, shared: bool = False):
        self.study, self.space, self.base, self.profile = study, space, base, profile
        self.out, self.floor, self.jobs, self.on_event = out, floor, jobs, on_event
        self.shared, self.host = shared, socket.gethostname()
        self.running: list[_Running] = []
        self._models: dict[float, Any] = {}
        self.repeats, self.said_exhausted = 0, False
        self._beating: set[int] = set()   # trial ids whose heartbeat this process records (shared storage)
        self._stop = threading.Event()

    def loop(self, trials: int, deadline: float | None) -> None:
        beat = None
        if self.shared:
            beat = threading.Thread(target=self._heartbeats, name="tune-heartbeat", daemon=True)
            beat.start()
        try:
            while True:
                if self.shared:
                    _retry_stale(self.study, set(self.study._storage._get_stale_trial_ids(self.study._study_id)))  # noqa: SLF001
                while len(self.running) < self.jobs and self._wanted(trials) > 0 and not self._exhausted() and \
                        (deadline is None or time.perf_counter() < deadline):
                    self._ask()
                if not self.running and not self._elsewhere(trials, deadline):
                    break
                time.sleep(0.5 if self.running else 2.0)
                for r in [r for r in self.running if r.proc.poll() is not None]:
                    self.running.remove(r)
                    self._finish(r)
        except BaseException:
            self._abort()
            raise
        finally:
            self._stop.set()
            if beat is not None:
                beat.join()

    def _heartbeats(self) -> None:
        """Record a heartbeat for this process's running trials (a thread: the loop may be busy
        building a model); a trial whose heartbeat stops is failed and retried by any machine."""
        from .storage import HEARTBEAT_S

        storage = self.study._storage  # noqa: SLF001
        while True:
            for trial_id in list(self._beating):
                try:
                    storage.record_heartbeat(trial_id)
                except Exception as e:  # noqa: BLE001 - a database hiccup; the next beat may get through
                    log.warning("heartbeat of trial id %d not recorded: %s", trial_id, e)
            if self._stop.wait(HEARTBEAT_S / 2):
                return

    def _elsewhere(self, trials: int, deadline: float | None) -> bool:
        """Shared storage: wait while other machines still run trials this study may need (one of
        them may be interrupted and queued again); the outputs then hold every trial."""
        from optuna.trial import TrialState

        if not self.shared or (deadline is not None and time.perf_counter() >= deadline) or self.said_exhausted:
            return False
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return bool(running) or (bool(waiting) and self._wanted(trials) > 0)

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
        """Trials still to start: ``trials`` less the counted finished ones and those running (on
        any machine sharing the study)."""
        from optuna.trial import TrialState

        stored = self.study.get_trials(deepcopy=False)
        done = sum(map(_counted, stored))
        running = sum(1 for t in stored if t.state == TrialState.RUNNING)
        return trials - done - max(running, len(self.running))

    def _ask(self) -> None:
        from optuna.trial import TrialState

        with warnings.catch_warnings():  # optuna expects heartbeats with optimize(); this loop records them itself
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed", category=UserWarning)
            trial = self.study.ask(self.space.distributions())
        if self.shared:
            self._beating.add(trial._trial_id)  # noqa: SLF001
            self.study._storage.record_heartbeat(trial._trial_id)  # noqa: SLF001
        trial.set_user_attr("host", self.host)
        params = dict(trial.params)
        busy = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number != trial.number and t.params == params] if self.shared else []
        if busy:  # another machine is measuring this very point: run it once
            trial.set_user_attr("duplicate_of", busy[0].number)
            trial.set_user_attr("pruned_reason", f"the same point is trial {busy[0].number}, running on "
                                                 f"{busy[0].user_attrs.get('host') or 'another machine'}")
            trial.set_user_attr("constraints", [1.0])
            self._tell(trial, state=TrialState.PRUNED)
            self.repeats += 1
            self._event(trial.number)
            return
        same = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                if t.params == params and not t.user_attrs.get("duplicate_of")]
        if same:  # the sampler asked for a point it already has: repeat its result, run nothing
            first = same[0]
            for k, v in first.user_attrs.items():
                if k not in ("origin", "retry_of", "host"):
                    trial.set_user_attr(k, v)
            trial.set_user_attr("duplicate_of", first.number)
            self._tell(trial, first.values if first.state == TrialState.COMPLETE else None, state=first.state)
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
            self._tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned before training: %s", trial.number, reason)
            self._event(trial.number)
            return
        self._start(trial, params, recipe, bounds)

    def _student(self, recipe: Recipe):
        """The untrained student at the trial's width (built once per width)."""
        width = recipe.student.width
        if width not in self._models:
            from ..data import load_for_recipe
            from ..models import create_model

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
            self._tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, worker.get("error"))
        else:
            row = measured_row(report, self.profile.budget, floor=self.floor)
            for k, v in row.items():
                trial.set_user_attr(k, v)
            if row["accuracy"] is None or row["flash_bytes"] is None:
                self._tell(trial, state=TrialState.FAIL)
            else:
                self._tell(trial, [row["accuracy"], row["flash_bytes"]])
        self._event(trial.number)

    def _tell(self, trial, values=None, state=None) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        self._beating.discard(trial._trial_id)  # noqa: SLF001
        try:
            self.study.tell(trial, values, state=state)
        except (UpdateFinishedTrialError, RuntimeError, ValueError) as e:
            if not self.shared:
                raise
            # its heartbeat lapsed and another machine failed it and queued a retry meanwhile
            log.warning("trial %d was already finished by another machine (%s); its result here is dropped",
                        trial.number, e)

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
        _retry_stale(self.study, set(self._beating) if self.shared else None)
        self._beating.clear()
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
