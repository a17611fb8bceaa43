"""Clusters for the teacher: a local one of worker processes on 127.0.0.1, or one task of a real one.

::

    edgekit train RECIPE --out DIR --workers 2           # local MultiWorkerMirroredStrategy cluster
    edgekit train RECIPE --out DIR --workers 2 --ps 1    # local ParameterServerStrategy cluster
    edgekit train RECIPE --out DIR --cluster cluster.yaml --task worker:0   # on each machine of a real one

Every task runs in its own process (``python -m edgekit.cluster task ...``) with its own
``TF_CONFIG``. Under ``multi_worker`` every worker trains and the chief (``worker:0``, or
``chief:0`` when the cluster names one) writes the artifacts; under ``parameter_server`` the
chief is the coordinator that runs ``model.fit`` and the workers and parameter servers run
``tf.distribute.Server``. A :class:`Supervisor` in the ``edgekit`` process watches the tasks it
started:

- a task that dies (killed, crashed, or failed because a peer did) makes it stop the tasks it
  runs and start them again (a local cluster on fresh ports), at most ``max_restarts`` times;
  training continues from the chief's last ``BackupAndRestore`` backup, so finished epochs are
  not redone (see :mod:`edgekit.train`);
- a task that fails with an edgekit error (a diverged loss, bad data...) is not restarted: the
  error is raised;
- each task's output goes to ``<out_dir>/.cluster/<type>-<index>.log`` and its events (start,
  epoch, done, error) to ``<type>-<index>.events.jsonl``; the chief's epochs drive the progress.

A cluster file (``--cluster``) lists ``host:port`` per job::

    worker: [10.0.0.1:2222, 10.0.0.2:2222]
    ps: [10.0.0.3:2222]          # optional: parameter-server training
    chief: [10.0.0.4:2222]       # the coordinator; required with ps

This module imports no TensorFlow; the task processes do.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable

from ._io import remove
from .errors import EdgekitError, RecipeError, StageError

if TYPE_CHECKING:  # pragma: no cover
    from .data import Dataset
    from .fitting import StageResult
    from .recipe import TeacherConfig

log = logging.getLogger(__name__)

WORK_DIR = ".cluster"
"""Folder inside the teacher's stage dir for the tasks' spec, logs and events."""


# ----------------------------------------------------------------------------- tasks and cluster specs


@dataclasses.dataclass(frozen=True, order=True)
class Task:
    """One task of a cluster: ``worker:1``, ``ps:0``, ``chief:0``."""

    type: str
    index: int

    def __str__(self) -> str:
        return f"{self.type}:{self.index}"

    @property
    def slug(self) -> str:
        """``worker-1``: the task in file names."""
        return f"{self.type}-{self.index}"


def parse_task(text: str) -> Task:
    """``"worker:1"`` -> ``Task("worker", 1)``; raises ``ValueError`` for anything else."""
    kind, sep, index = text.partition(":")
    if not sep or kind not in ("chief", "worker", "ps") or not index.isdigit():
        raise ValueError(f"{text!r} is not a task (expected chief:0, worker:I or ps:I)")
    return Task(kind, int(index))


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """``host:port`` addresses per job. With ``ps`` the cluster trains with parameter servers."""

    worker: tuple[str, ...]
    ps: tuple[str, ...] = ()
    chief: tuple[str, ...] = ()

    @property
    def strategy(self) -> str:
        """The teacher strategy this cluster runs: ``parameter_server`` or ``multi_worker``."""
        return "parameter_server" if self.ps else "multi_worker"

    def jobs(self) -> dict[str, list[str]]:
        return {job: list(addrs) for job in ("chief", "worker", "ps") if (addrs := getattr(self, job))}

    def tasks(self) -> list[Task]:
        return [Task(job, i) for job, addrs in self.jobs().items() for i in range(len(addrs))]

    def chief_task(self) -> Task:
        """The task that writes the artifacts (and, with ps, coordinates)."""
        return Task("chief", 0) if self.chief else Task("worker", 0)

    def trains(self, task: Task) -> bool:
        """Whether ``task`` runs ``model.fit`` (else it runs a ``tf.distribute.Server``)."""
        return task.type == "chief" if self.ps else task.type in ("chief", "worker")

    def tf_config(self, task: Task) -> str:
        """The ``TF_CONFIG`` JSON for ``task``."""
        return json.dumps({"cluster": self.jobs(), "task": {"type": task.type, "index": task.index}})

    @classmethod
    def from_tf_config(cls, tf_config: dict) -> ClusterSpec:
        c = tf_config.get("cluster", {})
        return cls(tuple(c.get("worker", ())), tuple(c.get("ps", ())), tuple(c.get("chief", ())))


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago (bound to port 0)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def local_cluster(workers: int, ps: int = 0) -> ClusterSpec:
    """A cluster of ``workers`` workers (and ``ps`` parameter servers plus a chief, the
    coordinator) on free 127.0.0.1 ports."""
    n = workers + ps + (1 if ps else 0)
    addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
    if ps:
        return ClusterSpec(tuple(addrs[1:1 + workers]), tuple(addrs[1 + workers:]), (addrs[0],))
    return ClusterSpec(tuple(addrs))


def tf_config_from_env() -> dict | None:
    """The parsed ``TF_CONFIG`` of this process, or None when unset."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    return json.loads(raw) if raw else None


def is_chief(tf_config: dict | None) -> bool:
    """Whether this process writes the artifacts: no cluster, ``chief:0``, or ``worker:0`` of a
    cluster without a chief job."""
    if not tf_config:
        return True
    task = tf_config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in tf_config.get("cluster", {})


def load_cluster(path: Path) -> ClusterSpec:
    """Parse a cluster file (YAML: ``worker``, optional ``ps`` and ``chief``, lists of host:port).

    Raises :class:`RecipeError` naming the file and key.
    """
    import yaml
    from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

    from .recipe import format_errors

    HostPort = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+:[0-9]{1,5}$")]

    class ClusterFile(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        worker: list[HostPort] = Field(min_length=1)
        ps: list[HostPort] = Field(default_factory=list)
        chief: list[HostPort] = Field(default_factory=list, max_length=1)

        @model_validator(mode="after")
        def _chief_with_ps(self):
            if self.ps and not self.chief:
                raise ValueError("chief: required with ps (the coordinator's host:port)")
            return self

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: cluster file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping with worker (and ps, chief) lists of host:port")
    try:
        f = ClusterFile.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_errors(path, exc, ClusterFile)) from None
    spec = ClusterSpec(tuple(f.worker), tuple(f.ps), tuple(f.chief))
    addrs = [a for addrs in spec.jobs().values() for a in addrs]
    if len(set(addrs)) != len(addrs):
        raise RecipeError(f"{path}: an address appears twice; every task needs its own host:port")
    return spec


def data_digest(data: Dataset) -> str:
    """sha256 of a dataset's arrays: every worker must load exactly the coordinator's data."""
    h = hashlib.sha256()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        a = getattr(data, name)
        h.update(f"{name}{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- launching


@dataclasses.dataclass(frozen=True)
class Launch:
    """Where the teacher trains: a local cluster (``workers``, ``ps``) or ``task`` of ``cluster``.

    :func:`edgekit.train.launching` makes :func:`edgekit.train.run` call :meth:`train`.
    """

    recipe_path: Path
    workers: int = 1
    ps: int = 0
    cluster: ClusterSpec | None = None
    task: Task | None = None
    max_restarts: int = 3
    timeout_s: float | None = None

    def __post_init__(self):
        if (self.cluster is None) != (self.task is None):
            raise ValueError("a real cluster needs both cluster and task")
        if self.cluster is not None and self.task not in self.cluster.tasks():
            tasks = ", ".join(map(str, self.cluster.tasks()))
            raise RecipeError(f"task {self.task} is not in the cluster (tasks: {tasks})")
        if self.cluster is None and self.workers < 1:
            raise ValueError("a local cluster needs at least one worker")

    @property
    def local(self) -> bool:
        return self.cluster is None

    @property
    def strategy(self) -> str:
        return self.cluster.strategy if self.cluster is not None else (
            "parameter_server" if self.ps else "multi_worker")

    @property
    def is_chief(self) -> bool:
        """Whether this machine writes the artifacts (and so runs the pipeline)."""
        return self.cluster is None or self.task == self.cluster.chief_task()

    def describe(self) -> str:
        if self.cluster is None:
            ps = f", {self.ps} parameter server(s) and a coordinator" if self.ps else ""
            return f"local cluster of {self.workers} worker(s){ps} on 127.0.0.1 ({self.strategy})"
        return f"task {self.task} of a {len(self.cluster.tasks())}-task cluster ({self.strategy})"

    def train(self, data: Dataset, cfg: TeacherConfig, *, seed: int, out_dir: Path,
              progress: Callable | None = None) -> StageResult:
        """Train on the cluster; the chief writes ``model.keras`` and ``metrics.json`` to ``out_dir``.

        Blocks until the chief finished; raises :class:`StageError` after ``max_restarts``.
        """
        from .fitting import StageResult

        if not self.is_chief:
            raise StageError(f"task {self.task} does not write the teacher; the chief {self.cluster.chief_task()} does")
        log.info("teacher: training on a %s", self.describe())
        restarts = Supervisor(self, data, cfg, seed=seed, out_dir=out_dir, progress=progress).run()
        saved = json.loads((out_dir / "metrics.json").read_text())
        config = saved.pop("config")
        saved.pop("stage", None)
        metrics = {**saved, "cluster": {"strategy": self.strategy, "tasks": self._task_count(), "restarts": restarts}}
        return StageResult("teacher", out_dir / "model.keras", metrics, config)

    def serve(self, data: Dataset, cfg: TeacherConfig, *, seed: int, out_dir: Path) -> int:
        """Run this machine's task (not the chief) until it is done; returns the restarts.

        A parameter-server worker or ps task serves until it is stopped (Ctrl-C).
        """
        log.info("teacher: running %s", self.describe())
        return Supervisor(self, data, cfg, seed=seed, out_dir=out_dir).run()

    def _task_count(self) -> int:
        return len(self.cluster.tasks()) if self.cluster is not None else self.workers + self.ps + bool(self.ps)


class Supervisor:
    """Starts this machine's tasks of a :class:`Launch`, restarts them when one fails, stops them."""

    POLL_S = 0.2
    GRACE_S = 30.0
    """How long the other tasks may take to exit on their own once the chief is done."""

    def __init__(self, launch: Launch, data: Dataset, cfg: TeacherConfig, *, seed: int, out_dir: Path,
                 progress: Callable | None = None):
        self.launch, self.cfg, self.progress = launch, cfg, progress
        self.out_dir = Path(out_dir)
        self.work = self.out_dir / WORK_DIR
        self.work.mkdir(parents=True, exist_ok=True)
        name = "spec.json" if launch.local else f"{launch.task.slug}.spec.json"
        self.spec_path = self.work / name
        from ._io import write_json

        write_json(self.spec_path, {"recipe": str(Path(launch.recipe_path).resolve()),
                                    "teacher": cfg.model_dump(mode="json"), "seed": seed,
                                    "out_dir": str(self.out_dir.resolve()), "work_dir": str(self.work.resolve()),
                                    "data_digest": data_digest(data)})
        self.procs: dict[Task, subprocess.Popen] = {}
        self.spec: ClusterSpec | None = None
        self.attempt = 0
        self._tail: _Tail | None = None

    # ------------------------------------------------------------------ processes

    def _tasks_here(self) -> list[Task]:
        return self.spec.tasks() if self.launch.local else [self.launch.task]

    def _start(self) -> None:
        self.attempt += 1
        self.spec = self.launch.cluster or local_cluster(self.launch.workers, self.launch.ps)
        if self.attempt == 1:
            for task in self._tasks_here():
                for suffix in (".log", ".events.jsonl"):
                    remove(self.work / f"{task.slug}{suffix}", root=self.work)
        chief = self.spec.chief_task()
        if chief in self._tasks_here() and self._tail is None:
            self._tail = _Tail(self.work / f"{chief.slug}.events.jsonl")
        pkg_root = str(Path(__file__).resolve().parent.parent)
        for task in self._tasks_here():
            env = {**os.environ, "TF_CONFIG": self.spec.tf_config(task),
                   "PYTHONPATH": os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")]))}
            env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # several local workers may share a GPU
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            cmd = [sys.executable, "-m", "edgekit.cluster", "task", "--spec", str(self.spec_path),
                   "--task", str(task), "--attempt", str(self.attempt), "--parent", str(os.getpid())]
            with open(self.work / f"{task.slug}.log", "ab") as out:
                out.write(f"--- attempt {self.attempt}: {task} of {self.spec.jobs()}\n".encode())
                out.flush()
                self.procs[task] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                                    stderr=subprocess.STDOUT, env=env)
        log.debug("cluster attempt %d: %s", self.attempt, {str(t): p.pid for t, p in self.procs.items()})

    def _stop(self, tasks: list[Task], *, grace_s: float = 0.0) -> None:
        """Let ``tasks`` exit on their own for ``grace_s``, then SIGKILL them.

        Not SIGTERM: TensorFlow's coordination service catches it in multi-worker processes (as
        a preemption notice) and the process carries on. Nothing is lost by killing a task: a
        restart continues from the chief's last backup, which is written atomically.
        """
        procs = [self.procs[t] for t in tasks if t in self.procs]
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(self.POLL_S)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Supervise until the chief (or, off the chief's machine, this machine's task) is done.

        Returns the number of restarts. Raises :class:`StageError` (or the task's own edgekit
        error) when a task cannot be brought back; every task started is stopped on the way out.
        """
        launch = self.launch
        deadline = time.monotonic() + launch.timeout_s if launch.timeout_s else None
        restarts = 0
        self._start()
        try:
            while True:
                self._pump()
                if self._done():
                    self._pump()
                    self._stop([t for t in self.procs if self.spec.trains(t)], grace_s=self.GRACE_S)
                    self._stop(list(self.procs))  # parameter-server workers and ps serve until killed
                    return restarts
                failed = self._failed()
                if failed is not None:
                    task, code = failed
                    error = self._error_event(task)
                    if error is not None:
                        cls = _error_class(error.get("kind"))
                        raise cls(f"{task}: {error.get('error')}")
                    restarts += 1
                    where = self.work / f"{task.slug}.log"
                    if restarts > launch.max_restarts:
                        raise StageError(f"teacher: {task} {_describe_exit(code)}; gave up after "
                                         f"{launch.max_restarts} restart(s). Last output: {_last_line(where)} "
                                         f"(log: {where})")
                    log.warning("teacher: %s %s; restarting %s from the last backup (restart %d of %d; log: %s)",
                                task, _describe_exit(code), "the cluster" if launch.local else str(task),
                                restarts, launch.max_restarts, where)
                    self._stop(list(self.procs))
                    self._start()
                if deadline is not None and time.monotonic() > deadline:
                    raise StageError(f"teacher: the cluster did not finish within {launch.timeout_s:g} s "
                                     f"(logs: {self.work})")
                time.sleep(self.POLL_S)
        finally:
            self._stop(list(self.procs))

    def _done(self) -> bool:
        chief = self.spec.chief_task()
        if chief in self.procs:
            return self.procs[chief].poll() == 0
        trainers = [t for t in self.procs if self.spec.trains(t)]
        return bool(trainers) and all(self.procs[t].poll() == 0 for t in trainers)

    def _failed(self) -> tuple[Task, int] | None:
        for task, p in sorted(self.procs.items()):
            code = p.poll()
            if code is None:
                continue
            if code != 0 or not self.spec.trains(task):  # a server never ends by itself
                return task, code
        return None

    def _error_event(self, task: Task) -> dict | None:
        for event in _read_events(self.work / f"{task.slug}.events.jsonl"):
            if event.get("attempt") == self.attempt and event.get("event") == "error":
                return event
        return None

    def _pump(self) -> None:
        """Pass the chief's finished epochs to the progress callback."""
        if self._tail is None:
            return
        for event in self._tail.read():
            if event.get("event") == "epoch" and self.progress is not None:
                self.progress("teacher", event["epoch"], event["epochs"], event.get("logs", {}))


class _Tail:
    """Reads the complete JSON lines appended to a file since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                blob = f.read()
        except FileNotFoundError:
            return []
        end = blob.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in blob[:end].splitlines() if line.strip()]


def _read_events(path: Path) -> list[dict]:
    return _Tail(path).read()


def read_events(out_dir: Path, task: Task | str) -> list[dict]:
    """Every event task ``task`` recorded in the stage dir ``out_dir`` (all attempts, in order)."""
    task = parse_task(task) if isinstance(task, str) else task
    return _read_events(Path(out_dir) / WORK_DIR / f"{task.slug}.events.jsonl")


def _error_class(name: str | None) -> type[EdgekitError]:
    from . import errors

    cls = getattr(errors, name or "", None)
    return cls if isinstance(cls, type) and issubclass(cls, EdgekitError) else StageError


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}" if code else "exited"


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"


# ----------------------------------------------------------------------------- the task process


class _Events:
    """Appends one JSON line per event to a task's events file (flushed at once)."""

    def __init__(self, path: Path, task: Task, attempt: int):
        self.path, self.task, self.attempt = path, task, attempt

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), "task": str(self.task), "attempt": self.attempt,
                           "event": event, **fields}, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def epoch(self, stage: str, done: int, total: int, logs: dict) -> None:
        """A :data:`edgekit.fitting.ProgressFn`: one ``epoch`` event per finished epoch."""
        self.emit("epoch", epoch=done, epochs=total, logs=logs)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent (the supervisor) dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _serve(spec: ClusterSpec, task: Task) -> None:
    from ._tf import tf

    t = tf()
    server = t.distribute.Server(t.train.ClusterSpec(spec.jobs()), job_name=task.type, task_index=task.index,
                                 protocol="grpc", start=True)
    server.join()


def run_task(spec_path: Path, task: Task, attempt: int) -> int:
    """The body of one task process: serve (parameter-server workers and ps) or train."""
    spec = json.loads(Path(spec_path).read_text())
    events = _Events(Path(spec["work_dir"]) / f"{task.slug}.events.jsonl", task, attempt)
    events.emit("start", pid=os.getpid())
    cluster = ClusterSpec.from_tf_config(tf_config_from_env() or {})
    if not cluster.trains(task):
        events.emit("serving")
        _serve(cluster, task)
        return 0
    from . import train
    from .data import load_for_recipe
    from .errors import DataError
    from .recipe import Strategy, TeacherConfig, load_recipe

    try:
        recipe_path = Path(spec["recipe"])
        recipe = load_recipe(recipe_path)
        data = load_for_recipe(recipe, base=recipe_path.parent)  # what the pipeline loads
        if data_digest(data) != spec["data_digest"]:
            raise DataError(f"{task} loaded other data than the process that started it; the data source "
                            f"{recipe.data.source!r} must give the same arrays on every machine")
        cfg = TeacherConfig.model_validate(spec["teacher"]).model_copy(
            update={"strategy": Strategy(cluster.strategy)})
        res = train.run(data, cfg, seed=spec["seed"], out_dir=Path(spec["out_dir"]), progress=events.epoch)
    except EdgekitError as exc:
        events.emit("error", error=str(exc), kind=type(exc).__name__)
        log.error("%s: %s", task, exc)
        return exc.exit_code
    events.emit("done", chief=is_chief(tf_config_from_env()), metrics=res.metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m edgekit.cluster task --spec FILE --task worker:0 --attempt N --parent PID``."""
    parser = argparse.ArgumentParser(prog="python -m edgekit.cluster",
                                     description="One task of an edgekit training cluster (started by edgekit train).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("task", help="run one task with the TF_CONFIG in the environment")
    p.add_argument("--spec", type=Path, required=True, help="the spec.json the supervisor wrote")
    p.add_argument("--task", type=parse_task, required=True, help="chief:0, worker:I or ps:I")
    p.add_argument("--attempt", type=int, default=1)
    p.add_argument("--parent", type=int, default=None, help="exit when this process (the supervisor) dies")
    args = parser.parse_args(argv)
    if args.parent is not None:
        _die_with_parent(args.parent)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.task} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # one "Sharding callback" line per checkpoint
    return run_task(args.spec, args.task, args.attempt)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
