"""Export a recipe as an Apache Airflow DAG: one task per stage, a convert/eval branch per target.

``edgekit export airflow RECIPE --out DAGS_DIR`` writes two files into Airflow's dags folder:

- ``<dag_id>.py``: the DAG. Its tasks are ``train`` -> ``distill`` -> ``prune`` -> ``quantize``
  (the stages the recipe has), then ``convert_<target>`` -> ``eval_<target>`` for every target
  in parallel, optionally ``deploy_<host>`` for every Pi of an inventory file, and ``report``
  last. Each task runs one ``edgekit`` command on the run directory of its DAG run,
  ``<run root>/<dag_id>/<run_id>``, so a retried task finds the earlier stages finished there
  and redoes nothing of them; the run directory is the only state the tasks share.
- ``<dag_id>.recipe.yaml``: the recipe the DAG runs, found beside the DAG file (``__file__``)
  on whichever machine runs a task. Relative file references in the recipe (``data.source``
  ``npz:``/``csv:``/``images:`` paths, target profiles given as paths) would break there, so
  the copy names them by absolute path and the export warns about it.

This module writes the DAG as *source text* and never imports Airflow: Airflow usually lives
in its own virtualenv (its pins clash with TensorFlow's), and its tasks call the ``edgekit``
executable of edgekit's environment (Airflow Variable ``edgekit_bin`` or env ``EDGEKIT_BIN``).
The generated file imports only the standard library and ``airflow.sdk`` (Airflow 3).

Example::

    result = export_airflow(Path("recipes/quickstart.yaml"), Path("~/airflow/dags").expanduser())
    result.dag_file, result.tasks   # .../edgekit_digits-quickstart.py, ['train', 'distill', ...]
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, field_validator

from . import __version__
from ._io import write_text
from .errors import RecipeError
from .recipe import Recipe, _read_yaml, absolute_source, _Strict, _validate, find_target, load_recipe, load_target

__all__ = ["AIRFLOW_VERSION", "DeployHost", "ExportResult", "Inventory", "check_dag_id", "check_schedule",
           "export_airflow", "load_inventory", "render_dag"]

AIRFLOW_VERSION = "3.3.2"
"""The Airflow the generated DAG is tested with (``tools/airflow_env.sh``); it needs Airflow 3."""

LOCK_WAIT_S = 4 * 3600
"""How long a task of the DAG waits for another task of the same run to release the run directory."""

_CRON_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly",
                 "@annually", "@midnight")
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


# ------------------------------------------------------------------------------------ inventory


class DeployHost(_Strict):
    """One Raspberry Pi of a deploy inventory: where it is and which target's bundle it measures."""

    host: Annotated[str, Field(min_length=1, pattern=r"^[^\s@]+@[^\s@]+$")] = Field(
        description="the device as user@host, e.g. pi@raspberrypi.local")
    target: str | None = Field(
        None, description="the recipe's Pi target it measures; may be left out when the recipe has one Pi target")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(22, description="SSH port")
    key: str | None = Field(None, description="private key file on the Airflow worker (~/ allowed); "
                                              "null: ssh-agent, then ~/.ssh/id_*")
    known_hosts: str | None = Field(None, description="known_hosts file on the worker; null: ~/.ssh/known_hosts")
    python: str | None = Field(None, description="Python interpreter on the device (default python3)")
    install_runtime: bool = Field(False, description="pip install the bundle's runtime into a venv on the device "
                                                     "when it is missing")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(
        None, description="name in the task id deploy_<name>; default: the host name")


class Inventory(_Strict):
    """A deploy inventory (YAML): the Pis an exported DAG measures its Pi bundles on."""

    hosts: Annotated[list[DeployHost], Field(min_length=1)] = Field(description="the devices, one task each")

    @field_validator("hosts")
    @classmethod
    def _distinct(cls, hosts: list[DeployHost]) -> list[DeployHost]:
        seen: dict[str, int] = {}
        for i, h in enumerate(hosts):
            name = _host_task_name(h)
            if name in seen:
                raise ValueError(f"hosts.{i} and hosts.{seen[name]} would both be task deploy_{name}; "
                                 "give one of them a distinct name")
            seen[name] = i
        return hosts


def _host_task_name(h: DeployHost) -> str:
    return h.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", h.host.rpartition("@")[2]).strip("-.") or "pi"


def load_inventory(path: Path, recipe: Recipe, *, recipe_path: Path) -> list[DeployHost]:
    """Read and check a deploy inventory for ``recipe``: ``yaml.safe_load``, validated like a recipe.

    Every host's ``target`` must be a Raspberry Pi target of the recipe (and is filled in when
    the recipe has exactly one); a target is measured on one host (the report holds one device
    measurement per target). A relative ``key`` / ``known_hosts`` path is taken relative to the
    inventory file. Raises :class:`RecipeError` (exit 2) as ``FILE: key.path: message``.
    """
    path = Path(path)
    inv = _validate(Inventory, _read_yaml(path, "inventory"), path)
    loaded = {t: load_target(t, base=recipe_path.parent) for t in recipe.targets}
    profiles = {p.name: p for p in loaded.values()}
    from . import targets

    pis = [name for name, p in profiles.items() if targets.get(p.kind).ssh_bundle]
    hosts, measured_by = [], {}
    for i, h in enumerate(inv.hosts):
        where = f"{path}: hosts.{i}"
        target = h.target
        if target is None:
            if len(pis) != 1:
                raise RecipeError(f"{where}.target: required key is missing (the recipe's Pi targets: "
                                  f"{', '.join(pis) or 'none'})")
            target = pis[0]
        else:
            target = loaded[target].name if target in loaded else target
            if target not in profiles:
                raise RecipeError(f"{where}.target: {h.target!r} is not a target of recipe {recipe.name!r} "
                                  f"(its Pi targets: {', '.join(pis) or 'none'})")
            if not targets.get(profiles[target].kind).ssh_bundle:
                raise RecipeError(f"{where}.target: {target!r} is a {profiles[target].kind} target; deploy "
                                  f"measures Raspberry Pi bundles (the recipe's Pi targets: {', '.join(pis) or 'none'})")
        if target in measured_by:
            raise RecipeError(f"{where}.target: {target!r} is already measured on hosts.{measured_by[target]}; the "
                              "report holds one device measurement per target")
        measured_by[target] = i
        files = {k: _inventory_path(getattr(h, k), path) for k in ("key", "known_hosts")}
        hosts.append(h.model_copy(update={"target": target, **files}))
    return hosts


def _inventory_path(value: str | None, inventory: Path) -> str | None:
    if value is None or value.startswith("~") or Path(value).is_absolute():
        return value
    return str((inventory.parent / value).resolve())


# ------------------------------------------------------------------------------------ checks


def check_schedule(text: str | None) -> str | None:
    """A cron expression (5 or 6 fields) or an Airflow preset such as ``@daily``; raises ValueError."""
    if text is None or text in _CRON_PRESETS:
        return text
    fields = text.split()
    if len(fields) not in (5, 6) or not all(re.fullmatch(r"[0-9A-Za-z*/,?#-]+", f) for f in fields):
        raise ValueError(f"{text!r} is not a cron expression (5 fields, e.g. '0 3 * * *') or a preset "
                         f"({', '.join(_CRON_PRESETS)})")
    return " ".join(fields)


def check_dag_id(text: str) -> str:
    """A DAG id Airflow accepts: letters, digits, ``_ . -``, at most 250 characters; raises ValueError."""
    if not _ID.match(text) or len(text) > 250:
        raise ValueError(f"{text!r}: a DAG id takes letters, digits, '_', '.' and '-' (at most 250 characters)")
    return text


# ------------------------------------------------------------------------------------ export


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the DAG file, the recipe copy beside it, the task ids in order."""

    dag_id: str
    dag_file: Path
    recipe_file: Path
    tasks: tuple[str, ...]
    warnings: tuple[str, ...]


def export_airflow(recipe_path: Path, out_dir: Path, *, schedule: str | None = None, run_root: Path | None = None,
                   inventory: Path | None = None, dag_id: str | None = None, retries: int = 2,
                   retry_delay_s: float = 60.0) -> ExportResult:
    """Write ``out_dir/<dag_id>.py`` and ``out_dir/<dag_id>.recipe.yaml`` for ``recipe_path``.

    The recipe (and the inventory) are validated first; nothing is written when they are bad
    (:class:`RecipeError`). ``run_root``: where run directories go, baked into the DAG (made
    absolute); ``None`` leaves it to the worker (Variable ``edgekit_run_root``, env
    ``EDGEKIT_RUN_ROOT``, else ``$AIRFLOW_HOME/edgekit-runs``). Both files are written
    atomically; an existing export of the same DAG id is replaced.
    """
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path)
    dag_id = check_dag_id(dag_id or f"edgekit_{recipe.name}")
    schedule = check_schedule(schedule)
    if retries < 0 or retry_delay_s < 0:
        raise ValueError("retries and retry delay must be >= 0")
    hosts = load_inventory(inventory, recipe, recipe_path=recipe_path) if inventory is not None else []
    targets = [load_target(t, base=recipe_path.parent).name for t in recipe.targets]
    text, warnings = _portable_recipe(recipe_path, recipe)
    stem = re.sub(r"[^A-Za-z0-9_]", "_", dag_id)
    out_dir = Path(out_dir)
    recipe_file = out_dir / f"{stem}.recipe.yaml"
    dag_file = out_dir / f"{stem}.py"
    source, tasks = render_dag(recipe, dag_id=dag_id, recipe_file=recipe_file.name, source_name=recipe_path.name,
                               targets=targets, hosts=hosts, schedule=schedule,
                               run_root=None if run_root is None else Path(run_root).expanduser().absolute(),
                               retries=retries, retry_delay_s=retry_delay_s)
    compile(source, str(dag_file), "exec")  # a template bug shows here, not in Airflow's import errors
    _check_ours(out_dir, dag_file, recipe_file)
    write_text(recipe_file, text, root=out_dir)
    write_text(dag_file, source, root=out_dir)
    load_recipe(recipe_file)  # the copy means the same as the original
    return ExportResult(dag_id, dag_file, recipe_file, tuple(tasks), tuple(warnings))


DAG_MARK = "Generated by `edgekit export airflow`"
"""In the docstring of every DAG file edgekit writes: an export replaces only a file that has it."""


def _check_ours(out_dir: Path, dag_file: Path, recipe_file: Path) -> None:
    """Refuse (exit 2) a dags folder that is ``/``, the home folder..., or files of these names
    that edgekit did not write there."""
    from ._io import check_not_special

    check_not_special(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RecipeError(f"--out {out_dir}: exists and is not a folder; give Airflow's dags folder")
    ours = False
    if dag_file.is_symlink() or (dag_file.exists() and not dag_file.is_file()):
        raise RecipeError(f"{dag_file}: not a regular file; edgekit replaces only a DAG file it wrote (choose "
                          "another --dag-id or --out)")
    if dag_file.is_file():
        with open(dag_file, "rb") as f:
            ours = DAG_MARK.encode() in f.read(4096)
        if not ours:
            raise RecipeError(f"{dag_file}: exists and was not written by edgekit export airflow; edgekit does not "
                              "overwrite it (choose another --dag-id or --out)")
    if (recipe_file.exists() or recipe_file.is_symlink()) and (not ours or not recipe_file.is_file()
                                                               or recipe_file.is_symlink()):
        raise RecipeError(f"{recipe_file}: exists beside no DAG that edgekit wrote; edgekit does not overwrite it "
                          "(choose another --dag-id or --out)")


def _portable_recipe(path: Path, recipe: Recipe) -> tuple[str | bytes, list[str]]:
    """The recipe for beside the DAG: as is, or with its relative file references made absolute."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    changed = []
    new = absolute_source(recipe.data.source, path.parent)
    if new != recipe.data.source:
        raw["data"]["source"] = new
        changed.append(f"data.source {recipe.data.source} -> {new}")
    from .model_source import absolute_model, classify

    for key in ("teacher", "student"):
        cfg = getattr(recipe, key)
        if cfg is not None and classify(cfg.model).kind != "zoo":
            new = absolute_model(cfg.model, path.parent)
            if new != cfg.model:
                raw[key]["model"] = new
                changed.append(f"{key}.model {cfg.model} -> {new}")
    for i, t in enumerate(recipe.targets):
        if (t.endswith((".yaml", ".yml")) or "/" in t) and not Path(t).is_absolute():
            new = str(find_target(t, base=path.parent).resolve())
            raw["targets"][i] = new
            changed.append(f"targets.{i} {t} -> {new}")
    if not changed:
        return path.read_bytes(), []
    header = (f"# {ascii(path.name)} for an Airflow DAG (edgekit export airflow): its relative file references are\n"
              "# absolute here; every Airflow worker must see these files at these paths.\n")
    warning = (f"{path}: the DAG's copy of the recipe names files by absolute path ({'; '.join(changed)}); "
               "every Airflow worker must see them there (shared storage), or make the paths absolute yourself")
    return header + yaml.safe_dump(raw, sort_keys=False), [warning]


# ------------------------------------------------------------------------------------ the DAG source


def render_dag(recipe: Recipe, *, dag_id: str, recipe_file: str, source_name: str, targets: list[str],
               hosts: list[DeployHost], schedule: str | None, run_root: Path | None, retries: int,
               retry_delay_s: float) -> tuple[str, list[str]]:
    """The DAG's Python source and its task ids in order (no Airflow import here)."""
    stages = [("train", "teacher")] + [(cmd, key) for cmd, key in
                                       (("distill", "student"), ("prune", "prune"), ("quantize", "qat"))
                                       if getattr(recipe, key) is not None]
    tasks = [cmd for cmd, _ in stages]
    lines = ['    train = edgekit.override(task_id="train")("train", RECIPE, "--out", RUN_DIR)']
    for cmd, _ in stages[1:]:
        lines.append(f'    {cmd} = edgekit.override(task_id="{cmd}")("{cmd}", RUN_DIR, "--recipe", RECIPE)')
    lines.append("    " + " >> ".join(cmd for cmd, _ in stages))
    last = stages[-1][0]
    lines.append("")
    lines.append('    report = edgekit.override(task_id="report")("report", RUN_DIR, "--recipe", RECIPE)')
    measured = "report"
    if hosts:
        lines.append("    # deploy merges a device's numbers into report.json, so a first report comes before it")
        lines.append('    host_report = edgekit.override(task_id="report_host")("report", RUN_DIR, "--recipe", RECIPE)')
        measured = "host_report"
    lines += ["",
              "    # one branch per target: convert it, then measure it in its runtime",
              "    for target in TARGETS:",
              '        convert = edgekit.override(task_id=f"convert_{task_name(target)}")(',
              '            "convert", RUN_DIR, "--recipe", RECIPE, "--target", target)',
              '        measure = edgekit.override(task_id=f"eval_{task_name(target)}")(',
              '            "eval", RUN_DIR, "--recipe", RECIPE, "--target", target)',
              f"        {last} >> convert >> measure >> {measured}"]
    for t in targets:
        tasks += [f"convert_{_task_name(t)}", f"eval_{_task_name(t)}"]
    if hosts:
        tasks.append("report_host")
        lines += ["",
                  "    # one task per Raspberry Pi of the inventory: run the target's bundle there over SSH",
                  "    for name, options in DEPLOYS.items():",
                  '        deploy = edgekit.override(task_id=f"deploy_{name}")("deploy", RUN_DIR, *options)',
                  "        host_report >> deploy >> report"]
        tasks += [f"deploy_{_host_task_name(h)}" for h in hosts]
    tasks.append("report")
    deploys = {_host_task_name(h): _deploy_options(h) for h in hosts}
    settings = _SETTINGS.format(
        dag_id=dag_id, recipe_file=recipe_file, schedule=schedule, run_root=None if run_root is None else str(run_root),
        retries=retries, retry_delay=_num(retry_delay_s), lock_wait=LOCK_WAIT_S, targets=_tuple(targets),
        deploys=_deploys(deploys))
    doc = _DOC.format(dag_id=_in_doc(dag_id), name=_in_doc(repr(recipe.name)), source=_in_doc(source_name),
                      version=__version__, airflow=AIRFLOW_VERSION, recipe_file=_in_doc(recipe_file),
                      chain=" -> ".join(cmd for cmd, _ in stages),
                      deploy="\n    -> report_host -> deploy_<pi>   (one task per Pi of the inventory)" if hosts else "")
    dag = _DAG.format(description=repr(f"edgekit recipe {recipe.name}: train, compress, convert and measure"),
                      tasks="\n".join(lines))
    return doc + _IMPORTS + settings + _RUNTIME + dag, tasks


def _task_name(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", target)


def _deploy_options(h: DeployHost) -> list[str]:
    options = ["--target", h.target, "--host", h.host, "--port", str(h.port)]
    for flag, value in (("--key", h.key), ("--known-hosts", h.known_hosts), ("--python", h.python)):
        if value is not None:
            options += [flag, value]
    if h.install_runtime:
        options.append("--install-runtime")
    return options


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _tuple(items: list[str]) -> str:
    return repr(tuple(items))


def _deploys(deploys: dict[str, list[str]]) -> str:
    if not deploys:
        return "{}"
    rows = [f"    {name!r}: {options!r}," for name, options in deploys.items()]
    return "{\n" + "\n".join(rows) + "\n}"


def _in_doc(text: str) -> str:
    """``text`` for inside the generated module's (non-raw) triple-quoted docstring: backslashes,
    quotes and control characters escaped, so the docstring ends where the template ends it and
    holds ``text`` exactly."""
    out = []
    for ch in text:
        if ch == "\\" or ch == '"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])  # \n, \x00, \u2028 ...
    return "".join(out)


_DOC = '''"""Airflow DAG {dag_id}: the edgekit recipe {name}, one task per stage.

Generated by `edgekit export airflow` (edgekit {version}; tested with Airflow {airflow})
from {source}. The recipe it runs is beside this file:
    {recipe_file}
Change the recipe you exported from and export again rather than editing this file.

Tasks:
    {chain}
    -> convert_<target> -> eval_<target>   (one branch per target, in parallel){deploy}
    -> report

Each task runs one `edgekit` command on the run directory of its DAG run,
<run root>/<dag_id>/<run_id>, so a retried task finds the stages before it finished there and
redoes none of them. The run directory is the only state the tasks share (nothing goes
through XCom); with the Celery or Kubernetes executor it must be on storage that every worker
mounts at the same path. Tasks of one run take turns on it (edgekit's run-directory lock,
waited for up to LOCK_WAIT_S seconds).

Read when a task runs, on its worker:
- the edgekit command: Airflow Variable `edgekit_bin` (or env AIRFLOW_VAR_EDGEKIT_BIN), else
  env EDGEKIT_BIN, else `edgekit` on PATH; e.g. /opt/edgekit/.venv/bin/edgekit
- the run root, unless RUN_ROOT below is set: Variable `edgekit_run_root`, else env
  EDGEKIT_RUN_ROOT, else $AIRFLOW_HOME/edgekit-runs
"""
'''

_IMPORTS = '''
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import DAG, Variable, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException
'''

_SETTINGS = '''
# what `edgekit export airflow` was asked for
DAG_ID = {dag_id!r}
RECIPE_FILE = {recipe_file!r}  # beside this file
SCHEDULE = {schedule!r}  # --schedule; None: runs are triggered (UI, CLI, API)
RUN_ROOT = {run_root!r}  # --run-root; None: decided on the worker, see run_directory()
RETRIES = {retries}
RETRY_DELAY = timedelta(seconds={retry_delay})
LOCK_WAIT_S = {lock_wait}  # how long a task waits for another task of its run to release the run directory
TARGETS = {targets}
DEPLOYS = {deploys}  # from the deploy inventory: task name -> `edgekit deploy` options

# edgekit exit codes that a retry would only repeat: the task fails without retrying
FINAL_EXIT_CODES = {{2: "bad recipe or usage", 6: "over budget"}}

# placeholders in a task's arguments, filled in when the task runs (on its worker)
RECIPE = "<recipe>"
RUN_DIR = "<run-dir>"
'''

_RUNTIME = '''

def setting(variable: str, env: str) -> str | None:
    """An Airflow Variable (AIRFLOW_VAR_<NAME> in the environment works too), else an env variable."""
    return Variable.get(variable, default=None) or os.environ.get(env) or None


def run_directory(dag_id: str, run_id: str) -> Path:
    """<run root>/<dag_id>/<run_id>: one run directory per DAG run, the same for every try of a task."""
    root = RUN_ROOT or setting("edgekit_run_root", "EDGEKIT_RUN_ROOT")
    if not root:
        home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
        root = os.path.join(home, "edgekit-runs")
    root = Path(os.path.expanduser(root))
    if not root.is_absolute():
        raise AirflowFailException(f"run root {root}: give an absolute path (tasks run in temporary folders)")
    return root / dag_id / (re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.") or "run")


def edgekit_command() -> list[str]:
    """The edgekit executable (a command line, e.g. "/opt/edgekit/.venv/bin/edgekit")."""
    command = shlex.split(setting("edgekit_bin", "EDGEKIT_BIN") or "edgekit")
    if not command or shutil.which(command[0]) is None:
        raise AirflowFailException(
            f"edgekit executable {command[0] if command else ''!r} not found on this worker; set the Airflow "
            "Variable edgekit_bin (or env EDGEKIT_BIN) to the edgekit of the environment edgekit is installed in")
    return command


def task_name(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", target)


@task(do_xcom_push=False)
def edgekit(*args: str) -> None:
    """Run `edgekit ARGS` on this DAG run's run directory; the task fails when edgekit does.

    RECIPE and RUN_DIR in ARGS become the recipe beside this file and the run's directory; an
    argument starting with ~/ is a path in the worker user's home.
    """
    context = get_current_context()
    values = {RECIPE: str(Path(__file__).resolve().parent / RECIPE_FILE),
              RUN_DIR: str(run_directory(context["dag"].dag_id, context["run_id"]))}
    argv = [*edgekit_command(), "--lock-wait", str(LOCK_WAIT_S)]
    argv += [values.get(a) or (os.path.expanduser(a) if a.startswith("~/") else a) for a in args]
    print("$ " + shlex.join(argv), flush=True)
    last = deque(maxlen=3)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.strip():
                last.append(line.strip())
        code = proc.wait()
    except BaseException:  # the task is being stopped (timeout, marked failed): stop edgekit too
        proc.terminate()
        proc.wait()
        raise
    if code != 0:
        message = f"edgekit {args[0]} exited {code}: {last[-1] if last else 'no output'}"
        if code in FINAL_EXIT_CODES:
            raise AirflowFailException(f"{message} ({FINAL_EXIT_CODES[code]}; not retried)")
        raise RuntimeError(message)
'''

_DAG = '''

with DAG(
    dag_id=DAG_ID,
    description={description},
    doc_md=__doc__,
    schedule=SCHEDULE,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={{"retries": RETRIES, "retry_delay": RETRY_DELAY}},
    tags=["edgekit"],
):
{tasks}
'''

