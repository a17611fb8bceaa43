"""The ``edgekit`` command line.

Config-only commands (``recipes``, ``targets``, ``models``, ``datasets``) import no TensorFlow.
Errors become one line on stderr and the exit code of their :mod:`edgekit.errors` class;
``--debug`` shows the traceback. Exit codes: 0 ok, 1 error, 2 bad recipe or usage, 3 data,
4 stage, 5 conversion, 6 budget, 7 device, or a given model that cannot be opened, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
from pathlib import Path

import click

from .deploy import DEFAULT_TIMEOUT_S
from .errors import EdgekitError
from .stages import ALL_STAGES

log = logging.getLogger("edgekit")


def _interrupted(exc: BaseException) -> bool:
    """Whether a Ctrl-C is what raised ``exc``: a KeyboardInterrupt that another error replaced while
    unwinding (TensorFlow's tracing context managers assert "Concurrent access?" on the way out of
    one; seen in tests/test_interrupt.py)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = (ctx.find_root().obj or {}).get("debug", False)
        try:
            return fn(*args, **kwargs)
        except EdgekitError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; finished stages are kept, continue with --resume", err=True)
            ctx.exit(130)
        except OSError as exc:  # disk full, file too large, permission denied...
            if debug:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}; finished stages are kept", err=True)
            ctx.exit(1)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - anything else (e.g. TensorFlow's own I/O errors): one line
            if _interrupted(exc):
                click.echo("interrupted; finished stages are kept, continue with --resume", err=True)
                ctx.exit(130)
            if debug:
                raise
            text = " ".join(str(exc).split())
            click.echo(f"error: {type(exc).__name__}: {text[:400] or 'no message'}; finished stages are kept "
                       "(--debug shows the traceback)", err=True)
            ctx.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--lock-wait", "lock_wait_s", type=click.FloatRange(min=0), default=0, show_default=True,
              metavar="SECONDS",
              help="Wait up to SECONDS for a run directory that another edgekit process is writing "
                   "(0: fail at once). The tasks of an exported Airflow DAG wait this way.")
@click.version_option(package_name="edgekit")
@click.pass_context
def main(ctx, verbose: int, quiet: bool, debug: bool, lock_wait_s: float):
    """edgekit: train, distill, prune, quantize and convert a model for edge devices, and
    measure the result on the device's own runtime.

    \b
    Example:
      edgekit run recipes/quickstart.yaml --out runs/quickstart
    """
    from .console import Console, level_from_env
    from .interrupt import INTERRUPT, on_sigint

    INTERRUPT.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)  # a Ctrl-C that Python drops is seen after the next batch

    # -q / -v on this command, else the level of the edgekit process that started this one
    verbosity = -1 if quiet else verbose if verbose else level_from_env()
    console = Console(verbosity).start()
    ctx.call_on_close(console.close)
    ctx.obj = {"debug": debug, "quiet": verbosity < 0, "verbosity": verbosity, "console": console,
               "lock_wait_s": lock_wait_s}


# ----------------------------------------------------------------------------- run


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory (created).")
@click.option("--resume", is_flag=True, help="Continue a run: skip stages whose inputs are unchanged.")
@click.option("--force", is_flag=True, help="Start over in a directory that already holds a run.")
@click.option("--until", type=click.Choice(ALL_STAGES),
              help="Stop after this stage.")
@click.option("--only", type=click.Choice(ALL_STAGES),
              help="Rerun just this stage; earlier stages must be finished.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout when done.")
@click.option("--no-budget", is_flag=True, help="Report budget violations but exit 0.")
@click.pass_context
@_handle_errors
def run(ctx, recipe: Path, out: Path, resume: bool, force: bool, until: str | None, only: str | None,
        as_json: bool, no_budget: bool):
    """Run RECIPE end to end into --out.

    \b
    Example:
      edgekit run recipes/quickstart.yaml --out runs/quickstart
      edgekit run recipes/quickstart.yaml --out runs/quickstart --resume
    """
    from .recipe import load_recipe

    rec = load_recipe(recipe)
    _execute(ctx, rec, recipe, out, resume=resume or only is not None, force=force, until=until, only=only,
             as_json=as_json, no_budget=no_budget)


def _execute(ctx, rec, recipe: Path, out: Path, *, resume: bool, force: bool, until: str | None,
             only: str | None, as_json: bool, no_budget: bool, targets: tuple[str, ...] | None = None) -> None:
    from .pipeline import Run
    from .ui import RunProgress, run_summary

    quiet = ctx.obj.get("quiet") or as_json
    with RunProgress(enabled=not quiet) as prog:
        def on_stage(name: str, status: str) -> None:
            _attach_log(ctx, out, "run")  # the first stage event comes after the manifest is written
            prog.stage(name, status)

        r = Run(rec, recipe, out, resume=resume, force=force, progress=prog.epoch, on_stage=on_stage,
                lock_wait_s=ctx.obj.get("lock_wait_s", 0.0))
        try:
            report = r.execute(until=until, only=only, targets=targets or None)
        finally:
            logfile = _attach_log(ctx, out, "run")
    stopped = until or only
    if as_json and report is not None:
        click.echo(json.dumps(report, indent=2))
    elif not ctx.obj.get("quiet"):
        if report is None:
            click.echo(f"stopped after {stopped}; artifacts in {out}", err=True)
        else:
            click.echo(run_summary(report), err=True)
            click.echo(f"report: {out / 'report.html'}", err=True)
            click.echo(f"        {out / 'report.md'}", err=True)
        if logfile is not None:
            click.echo(f"log:    {logfile}", err=True)
    over = [f"{t['name']}: {v}" for t in (report or {}).get("targets", []) for v in t["budget"]["violations"]]
    if over and rec.convert.check_budget and not no_budget:
        for line in over:
            gate = ": quality: " in line  # the quality gate fails like a budget
            click.echo(f"{'below the quality gate' if gate else 'over budget'}: {line}", err=True)
        for t in report["targets"]:  # a variant that passes (e.g. convert.selective's model) is worth naming
            shipped = (report.get("ship") or {}).get(t["name"])
            if t["budget"]["violations"] and shipped and shipped.get("format") != t.get("format"):
                click.echo(f"  {t['name']}: its {shipped['format']} variant passes: see 'What to ship' in the report",
                           err=True)
        ctx.exit(6)


def _attach_log(ctx, run_dir: Path, command: str) -> Path | None:
    """Move this command's log (native and library output) into ``run_dir/logs/``; its path.

    Only into a directory that edgekit's manifest marks as a run (never into a folder that a
    refused or failed command would otherwise leave non-empty). None: the log stays where it is.
    """
    console = (ctx.find_root().obj or {}).get("console")
    if console is None or not (Path(run_dir) / "manifest.json").is_file():
        return None
    return console.attach(run_dir, command)


# ----------------------------------------------------------------------------- one stage at a time


def _stage_command(name: str, stage: str, summary: str, example: str, extra=()):
    @click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
    @click.option("--recipe", type=click.Path(dir_okay=False, path_type=Path),
                  help="Recipe to use (default: the one the run was started with).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output (report.json, or the comparison).")
    @click.option("--no-budget", is_flag=True, help="Report budget violations but exit 0.")
    @click.pass_context
    @_handle_errors
    def command(ctx, run_dir: Path, recipe: Path | None, as_json: bool, no_budget: bool, **kw):
        from .manifest import run_recipe

        rec, path = run_recipe(run_dir, recipe)
        targets = kw.get("targets_") or ()
        if kw.get("baseline"):
            rec = rec.model_copy(update={"student": rec.student.model_copy(update={"baseline": True})})
        if kw.get("per_layer") and not kw.get("compare"):
            raise click.UsageError("--per-layer goes with --compare: edgekit eval RUN --compare --per-layer")
        if kw.get("compare"):
            if targets:
                raise click.UsageError("--compare covers every target; leave out --target")
            from .parity import compare, render_compare

            result = compare(run_dir, threshold=kw["threshold"])
            text = None if as_json else render_compare(result)
            if kw.get("per_layer"):
                from . import layer_error

                per_layer = layer_error.for_run(run_dir)
                result = {**result, "per_layer": per_layer}
                text = None if as_json else f"{text}\n\n{layer_error.render(per_layer)}"
            click.echo(json.dumps(result, indent=2) if as_json else text)
            if not result["ok"]:
                ctx.exit(1)
            return
        _execute(ctx, rec, path, run_dir, resume=True, force=False, until=None, only=stage, as_json=as_json,
                 no_budget=no_budget, targets=targets)

    command.__doc__ = f"""{summary}

    Reruns only this stage in RUN_DIR (earlier stages must be finished); later stages see the
    new files and rerun on the next `edgekit run --resume`.

    \b
    Example:
      {example}
    """
    for option in extra:
        command = option(command)
    return main.command(name)(command)


_TARGET_OPTION = click.option(
    "--target", "targets_", multiple=True, metavar="NAME",
    help="Only this target (repeatable): its steps rerun, the other targets' files and manifest entries stay "
         "as they are, and the shared eval data is redone only when out of date.")


@main.command("train")
@click.argument("target", metavar="RECIPE|RUN_DIR", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory for a RECIPE (created, or continued).")
@click.option("--recipe", type=click.Path(dir_okay=False, path_type=Path),
              help="With a RUN_DIR: recipe to use (default: the one the run was started with).")
@click.option("--workers", type=click.IntRange(1, 256), metavar="N",
              help="Start a local cluster of N worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy).")
@click.option("--ps", type=click.IntRange(1, 64), metavar="M",
              help="With --workers: M parameter servers and a coordinator (ParameterServerStrategy).")
@click.option("--cluster", "cluster_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="cluster.yaml of a real cluster: worker (and ps, chief) lists of host:port.")
@click.option("--task", metavar="TYPE:I", help="With --cluster: the task this machine runs, e.g. worker:0.")
@click.option("--max-restarts", type=click.IntRange(0, 1000), default=3, metavar="K", show_default=True,
              help="Restarts from the last backup when a worker process dies.")
@click.option("--force", is_flag=True, help="With a RECIPE: start over in a directory that already holds a run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-budget", is_flag=True, help="Report budget violations but exit 0.")
@click.pass_context
@_handle_errors
def train(ctx, target: Path, out: Path | None, recipe: Path | None, workers: int | None, ps: int | None,
          cluster_file: Path | None, task: str | None, max_restarts: int, force: bool, as_json: bool,
          no_budget: bool):
    """Train the teacher of a RECIPE into --out, or rerun the teacher of a RUN_DIR.

    A RECIPE starts (or continues) a run in --out up to the teacher; `edgekit run RECIPE --out
    DIR --resume` takes it from there. A RUN_DIR reruns its teacher in place (earlier stages
    must be finished); later stages see the new files and rerun on the next `--resume`.

    --workers N (and --ps M) train on a local cluster of worker processes on 127.0.0.1, for
    trying a cluster on one machine. On a real cluster every machine runs the same command
    with --cluster cluster.yaml --task TYPE:I; the chief (worker:0, or chief:0) writes the
    artifacts. A worker that dies is restarted and training continues from the last backup.

    \b
    Examples:
      edgekit train recipes/quickstart.yaml --out runs/q
      edgekit train recipes/quickstart.yaml --out runs/q --workers 2
      edgekit train recipes/quickstart.yaml --out runs/q --workers 2 --ps 1
      edgekit train recipes/quickstart.yaml --out /shared/q --cluster cluster.yaml --task worker:1
      edgekit train runs/quickstart
    """
    from .manifest import run_recipe
    from .recipe import load_recipe

    if target.is_dir():
        for flag, value in (("--out", out), ("--force", force)):
            if value:
                raise click.UsageError(f"{flag} goes with a RECIPE; a RUN_DIR is trained in place")
        rec, path = run_recipe(target, recipe)
        run_dir = target
    else:
        if recipe is not None:
            raise click.UsageError("--recipe goes with a RUN_DIR; pass the recipe as the argument")
        if out is None:
            raise click.UsageError("--out is required with a RECIPE (or pass an existing RUN_DIR)")
        rec, path, run_dir = load_recipe(target), target, out
    launch = _launch(rec, path, workers=workers, ps=ps, cluster_file=cluster_file, task=task,
                     max_restarts=max_restarts)
    if launch is not None and not launch.is_chief:
        from .data import load_for_recipe

        data = load_for_recipe(rec, base=path.parent)
        restarts = launch.serve(data, rec.teacher, seed=rec.seed, out_dir=run_dir / "stages" / "teacher")
        if not ctx.obj.get("quiet"):
            click.echo(f"{launch.task} done ({restarts} restart(s)); the chief {launch.cluster.chief_task()} "
                       "writes the teacher", err=True)
        return
    from . import train as train_mod

    with train_mod.launching(launch):
        if target.is_dir():
            _execute(ctx, rec, path, run_dir, resume=True, force=False, until=None, only="teacher",
                     as_json=as_json, no_budget=no_budget)
        else:
            _execute(ctx, rec, path, run_dir, resume=True, force=force, until="teacher", only=None, as_json=as_json,
                     no_budget=no_budget)


def _launch(rec, recipe: Path, *, workers: int | None, ps: int | None, cluster_file: Path | None,
            task: str | None, max_restarts: int):
    """The cluster the teacher trains on (None: in this process), from the train options."""
    from .cluster import Launch, load_cluster, parse_task

    if ps is not None and workers is None:
        raise click.UsageError("--ps needs --workers (a local parameter-server cluster)")
    if cluster_file is not None and workers is not None:
        raise click.UsageError("--cluster and --workers exclude each other (a real cluster, or a local one)")
    if (cluster_file is None) != (task is None):
        raise click.UsageError("--cluster and --task go together")
    if cluster_file is not None:
        try:
            me = parse_task(task)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--task") from None
        return Launch(recipe, cluster=load_cluster(cluster_file), task=me, max_restarts=max_restarts)
    if workers is None:
        return None
    if rec.teacher is None:
        raise click.UsageError("--workers trains the teacher, and this recipe has teacher: null")
    if ps is None and rec.teacher.strategy.value == "parameter_server":
        log.info("teacher.strategy is parameter_server: one parameter server (--ps 1)")
        ps = 1
    return Launch(recipe, workers=workers, ps=ps or 0, max_restarts=max_restarts)


_stage_command("distill", "student", "Distill the teacher into the student.", "edgekit distill runs/quickstart --baseline",
               [click.option("--baseline", is_flag=True, help="Also train the student from scratch; report the gain.")])
_stage_command("prune", "pruned", "Prune the student.", "edgekit prune runs/quickstart")
_stage_command("quantize", "qat", "Quantization-aware train the pruned student.", "edgekit quantize runs/quickstart")
_stage_command("convert", "convert", "Convert for every target (or the --target ones).",
               "edgekit convert runs/quickstart\n      edgekit convert runs/quickstart --target rpi4",
               [_TARGET_OPTION])
_stage_command("eval", "eval", "Measure every target (or the --target ones) in its runtime.",
               "edgekit eval runs/quickstart --compare\n      edgekit eval runs/quickstart --target rpi4",
               [_TARGET_OPTION,
                click.option("--compare", is_flag=True,
                             help="Run the test split through Keras float, TFLite float, int8 and TFLite Micro "
                                  "and report their agreement (exit 1 when a variant is below --threshold)."),
                click.option("--threshold", type=click.FloatRange(0, 1.01), default=0.98, show_default=True,
                             help="Lowest acceptable agreement with the float model (with --compare)."),
                click.option("--per-layer", "per_layer", is_flag=True,
                             help="With --compare: each Keras layer's int8 activation error (SNR, NMSE) against "
                                  "the float model on the same samples, naming the worst layers.")])


@main.command("report")
@click.argument("run_dirs", metavar="RUN_DIR [RUN_DIR...]", nargs=-1, required=True,
                type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--recipe", type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe to use (default: the one the run was started with; one RUN_DIR only).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json (one RUN_DIR) or the comparison as JSON.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the HTML page to this file (with several RUN_DIRs: the comparison).")
@click.option("--no-budget", is_flag=True, help="Report budget violations but exit 0 (one RUN_DIR).")
@click.pass_context
@_handle_errors
def report(ctx, run_dirs: tuple[Path, ...], recipe: Path | None, as_json: bool, out_file: Path | None,
           no_budget: bool):
    """Write report.json, report.md and report.html of RUN_DIR, or compare several runs.

    With one RUN_DIR the report step reruns from the run's measured artifacts (earlier stages
    must be finished) and exits 6 when a target is over budget. With several, their
    report.json files are compared side by side: Markdown on stdout (--json: JSON), and with
    --out an HTML page; nothing is rerun and no TensorFlow is loaded.

    \b
    Example:
      edgekit report runs/quickstart
      edgekit report runs/quickstart runs/mnist1d --out compare.html
    """
    from ._io import check_page_out, write_text
    from .manifest import run_recipe

    if out_file is not None:
        check_page_out(out_file)
    if len(run_dirs) == 1:
        run_dir = run_dirs[0]
        rec, path = run_recipe(run_dir, recipe)

        def copy_html():
            if out_file is not None:
                write_text(out_file, (run_dir / "report.html").read_bytes())
                if not as_json and not ctx.obj.get("quiet"):
                    click.echo(f"html: {out_file}", err=True)

        try:
            _execute(ctx, rec, path, run_dir, resume=True, force=False, until=None, only="report", as_json=as_json,
                     no_budget=no_budget)
        except click.exceptions.Exit:
            copy_html()  # over budget (exit 6): the report was written all the same
            raise
        copy_html()
        return
    if recipe is not None:
        raise click.UsageError("--recipe applies to one RUN_DIR only")
    from .report.compare import compare_runs, render_compare_html, render_compare_markdown

    result = compare_runs(list(run_dirs))
    click.echo(json.dumps(result, indent=2) if as_json else render_compare_markdown(result))
    if out_file is not None:
        write_text(out_file, render_compare_html(result))
        if not ctx.obj.get("quiet"):
            click.echo(f"comparison: {out_file}", err=True)


@main.command("compress")
@click.argument("model")
@click.option("--data", "data", required=True, metavar="SOURCE",
              help="Data to calibrate and measure on: digits, mnist1d, npz:PATH, csv:PATH, images:DIR, or a "
                   ".npz/.csv file or image folder.")
@click.option("--target", "targets", multiple=True, required=True, metavar="TARGET",
              help="A target profile (name or .yaml path); repeat for several.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (default: runs/<model name>).")
@click.option("--task", type=click.Choice(["classification", "regression", "anomaly"]), default="classification",
              show_default=True, help="What the model predicts.")
@click.option("--label", default=None, metavar="COLUMN", help="Label column of a csv: source (default: label).")
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Training epochs: 0 (default) takes a trained model as it is; a builder FILE.py:FUNCTION is "
                   "trained (default 10).")
@click.option("--resume", is_flag=True, help="Continue the run in --out (its recipe.yaml must be unchanged).")
@click.option("--force", is_flag=True, help="Start over in --out, replacing its recipe.yaml.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout when done.")
@click.option("--no-budget", is_flag=True, help="Report budget violations but exit 0.")
@click.option("--mcu-weight-bits", "mcu_weight_bits", type=click.IntRange(1, 7), default=None, metavar="N",
              help="Microcontroller targets: store large weight tensors as 2**N values per channel plus N-bit "
                   "indices (TFLite Micro's DECODE op): less flash, more arena, both measured "
                   "(convert.mcu_weight_bits).")
@click.pass_context
@_handle_errors
def compress(ctx, model: str, data: str, targets: tuple[str, ...], out: Path | None, task: str, label: str | None,
             epochs: int | None, resume: bool, force: bool, as_json: bool, no_budget: bool,
             mcu_weight_bits: int | None):
    """Compress a model file for devices: quantize, convert and measure it per target.

    MODEL is a float .tflite or .onnx, a .keras/.h5 file, a SavedModel folder or FILE.py:FUNCTION.
    The recipe it runs is written to OUT/recipe.yaml: edit it and rerun with
    `edgekit run OUT/recipe.yaml --out OUT --resume`.

    \b
    Example:
      edgekit compress my_model.tflite --data npz:features.npz --target rpi4 --target cortex-m4
      edgekit compress net.onnx --data digits --target mobile --out runs/net
    """
    from . import compress as comp
    from .recipe import load_recipe

    out = out or comp.default_out(model)
    path = comp.write_recipe(model, data=data, targets=list(targets), out=out, task=task, epochs=epochs,
                             label=label, resume=resume, force=force, mcu_weight_bits=mcu_weight_bits)
    if not (ctx.obj.get("quiet") or as_json):
        click.echo(f"recipe: {path} (edit it and rerun: edgekit run {path} --out {out} --resume)", err=True)
    _execute(ctx, load_recipe(path), path, out, resume=resume, force=force, until=None, only=None,
             as_json=as_json, no_budget=no_budget)


@main.command("estimate")
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--target", "targets_", multiple=True, required=True, metavar="NAME|PATH",
              help="Target profile by name or path (repeatable).")
@click.option("--calibration", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Calibration file (default: the one shipped with edgekit).")
@click.option("--per-op", is_flag=True, help="Also print every op's class, MACs, bytes and estimated share.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one object per target).")
@_handle_errors
def estimate(model: Path, targets_: tuple[str, ...], calibration: Path | None, per_op: bool, as_json: bool):
    """Estimate the latency of a .tflite MODEL on boards edgekit cannot run on.

    The estimate comes from the model's MACs and bytes (read from the file, no TensorFlow) and
    per-board coefficients fitted on published latencies measured on the target's board; it
    states its sources and the leave-one-out error of the fit (where the fit has points enough
    for one), and flags a model outside what the board's calibration set was fitted on. A target whose board has no
    published measurement gets no estimate ("latency_estimate_ms": null) and the reason.

    \b
    Examples:
      edgekit estimate runs/q/targets/cortex-m4/model_int8.tflite --target cortex-m4
      edgekit estimate model.tflite --target rpi4 --target cortex-m7 --json
    """
    from .estimate import estimate_model, load_calibration
    from .recipe import load_target
    from .ui import render_estimate

    cal = load_calibration(calibration)
    results = [estimate_model(model, load_target(t), calibration=cal) for t in targets_]
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return
    for i, r in enumerate(results):
        if i:
            click.echo("")
        click.echo(render_estimate(r, per_op=per_op))


# ----------------------------------------------------------------------------- tune


@main.command("tune")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "target", required=True, metavar="NAME|PATH",
              help="The target profile whose flash, RAM and latency budgets the model must fit.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 100), default=1.0, show_default=True, metavar="POINTS",
              help="Percentage points of test accuracy a model may lose against the teacher.")
@click.option("--trials", type=click.IntRange(1, 100_000), default=20, show_default=True, metavar="N",
              help="Finished trials the study should hold (a resumed study runs the rest).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), metavar="SECONDS",
              help="Start no trial after this many seconds (running trials finish).")
@click.option("--jobs", type=click.IntRange(1, 64), metavar="J",
              help="Trials in parallel, one process each (default: usable cores, at most 2).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Study directory (default: runs/tune-RECIPE-TARGET).")
@click.option("--resume", is_flag=True, help="Continue the study in --out; finished trials are not rerun.")
@click.option("--storage", metavar="URL",
              help="The study's database, any Optuna RDB (SQLAlchemy) URL, e.g. postgresql://USER@HOST/DB, "
                   "shared by several machines (default: OUT/study.db, SQLite; also $EDGEKIT_TUNE_STORAGE). "
                   "No password here: set PGPASSWORD, ~/.pgpass, or the whole URL in $EDGEKIT_TUNE_STORAGE.")
@click.option("--study", "study_name", metavar="NAME", help="The study's name in --storage (default: RECIPE@TARGET).")
@click.option("--join", is_flag=True,
              help="Add this machine's workers to a study that exists in --storage (trials run in this --out).")
@click.option("--report-only", is_flag=True,
              help="Run no trial: write best.yaml, tune.json, tune.md and tune.html into --out from the stored study.")
@click.option("--json", "as_json", is_flag=True, help="Print tune.json to stdout when done.")
@click.pass_context
@_handle_errors
def tune(ctx, recipe: Path, target: str, max_accuracy_drop: float, trials: int, timeout_s: float | None,
         jobs: int | None, out: Path | None, resume: bool, storage: str | None, study_name: str | None, join: bool,
         report_only: bool, as_json: bool):
    """Find the smallest model of RECIPE that fits --target within an accuracy floor.

    Searches the student's width, pruning (sparsity or m:n) and quantization (QAT int8, PTQ int8,
    and for microcontrollers PTQ int16x8). Every trial is a real short run of the pipeline whose
    flash, arena and accuracy the evaluator measures; a trial whose weights or activations alone
    exceed the budget is pruned before training. The teacher is trained once. The study is stored
    in OUT/study.db (Optuna, SQLite): --resume continues it. Writes OUT/best.yaml (run it with
    `edgekit run`), OUT/tune.json, tune.md and tune.html (every trial, Pareto fronts).
    With --storage postgresql://... several machines work on one study: start it on one, add
    workers with --join on others (each keeps its trials' run directories); whoever finishes, or
    --report-only, writes the outputs from the shared study.
    Exit 0 when a trial fits, 6 when none does, 2 for a bad recipe or option.

    \b
    Example:
      edgekit tune recipes/quickstart.yaml --target cortex-m4 --trials 12 --out runs/tune
      edgekit tune recipes/quickstart.yaml --target cortex-m4 --trials 20 --out runs/tune --resume
      edgekit run runs/tune/best.yaml --out runs/best
      PGPASSWORD=... edgekit tune recipes/quickstart.yaml --target cortex-m4 --storage postgresql://tuner@db/edgekit
      PGPASSWORD=... edgekit tune recipes/quickstart.yaml --target cortex-m4 --storage postgresql://tuner@db/edgekit --join
    """
    from .errors import BudgetError
    from .tune import load_result
    from .tune import tune as run_tune
    from .tune.storage import resolve

    where = resolve(storage)  # before anything runs: a password on the command line is refused
    from .ui import TuneProgress

    out = out or Path("runs") / f"tune-{recipe.stem}-{Path(target).stem}"
    quiet = ctx.obj.get("quiet") or as_json
    with TuneProgress(enabled=not quiet) as prog:
        try:
            result = run_tune(recipe, target=target, out=out, max_accuracy_drop=max_accuracy_drop, trials=trials,
                              timeout_s=timeout_s, jobs=jobs, resume=resume, on_event=prog.event,
                              storage=where, study_name=study_name, join=join, report_only=report_only)
        except BudgetError:
            if as_json and (out / "tune.json").is_file():
                click.echo(json.dumps(load_result(out), indent=2))
            raise
        finally:
            if (out / "study.db").is_file() or (where.shared and (out / "base.yaml").is_file()):
                console = ctx.obj.get("console")
                console and console.attach(out, "tune")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not ctx.obj.get("quiet"):
        from .report.tune import headline

        click.echo(headline(result)[1], err=True)
        click.echo(f"best recipe: {out / 'best.yaml'}; report: {out / 'tune.html'} (and tune.md, tune.json)",
                   err=True)


# ----------------------------------------------------------------------------- config commands


@main.group()
def recipes():
    """List, copy, validate and show recipes (no TensorFlow needed)."""


@recipes.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.pass_context
def recipes_validate(ctx, files: tuple[Path, ...], as_json: bool):
    """Check recipe FILES; one line per problem, exit 2 if any is invalid.

    Beyond the schema (keys, types, ranges, duplicate keys, target profiles) it checks what is
    knowable without training: the data file or folder exists, zoo model names, and that each
    model's input rank fits the data's (read from the data's shape only).

    A recipe that gives its own model (a .keras/.h5 file, a SavedModel folder, FILE.py:FUNCTION
    or a float .tflite/.onnx) has it opened in a child process, without training, and its input
    and output shapes checked against the recipe's data (this imports TensorFlow in the child
    only; a builder runs your code). The models of all FILES share one child; when it crashes,
    each model it did not finish is opened in its own child, so the crash names the file.

    \b
    Example:
      edgekit recipes validate recipes/*.yaml
    """
    from .errors import RecipeError
    from .recipe import check_inputs, load_recipe

    results, pending = [], []
    for f in files:
        try:
            rec = load_recipe(f)
            problems = check_inputs(rec, f)
            result = {"file": str(f), "ok": not problems, "errors": problems}
            if not problems:
                pending.append((result, rec, f))
            results.append(result)
        except RecipeError as exc:
            results.append({"file": str(f), "ok": False, "errors": str(exc).splitlines()})
    if pending:
        from .user_model import check_given_models

        # every recipe's given models are opened in one child process (TensorFlow imported once)
        for (result, _, _), problem in zip(pending, check_given_models([(rec, f) for _, rec, f in pending])):
            if problem is not None:
                result.update(ok=False, errors=str(problem).splitlines())
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if r["ok"]:
                click.echo(f"{r['file']}: ok")
            for e in r["errors"]:
                click.echo(e, err=True)
    if not all(r["ok"] for r in results):
        ctx.exit(2)


@recipes.command("show")
@click.argument("file", type=click.Path(path_type=Path))
@_handle_errors
def recipes_show(file: Path):
    """Print FILE resolved, every default filled in (YAML).

    \b
    Example:
      edgekit recipes show recipes/quickstart.yaml
    """
    from .recipe import load_recipe, resolved_yaml

    click.echo(resolved_yaml(load_recipe(file)), nl=False)


@recipes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
@_handle_errors
def recipes_list(as_json: bool):
    """List the example recipes shipped with edgekit.

    \b
    Example:
      edgekit recipes list
      edgekit recipes init quickstart my-recipe.yaml
    """
    from .recipe import list_recipes, recipe_summary, shipped_recipe

    rows = [{"name": n, "file": str(shipped_recipe(n)), "summary": recipe_summary(shipped_recipe(n))}
            for n in list_recipes()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['summary']}")


@recipes.command("init")
@click.argument("name")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@_handle_errors
def recipes_init(name: str, dest: Path | None):
    """Copy the shipped recipe NAME to DEST (default ./NAME.yaml) to start from; never
    overwrites an existing file.

    \b
    Example:
      edgekit recipes init quickstart my-recipe.yaml
      edgekit run my-recipe.yaml --out runs/mine
    """
    from .recipe import init_recipe

    click.echo(str(init_recipe(name, dest)))


@main.group()
def targets():
    """List and show device target profiles."""


@targets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
@_handle_errors
def targets_list(as_json: bool):
    """List the built-in target profiles.

    \b
    Example:
      edgekit targets list --json
    """
    from .recipe import list_targets, load_target

    profiles = [load_target(n) for n in list_targets()]
    if as_json:
        click.echo(json.dumps([p.model_dump(mode="json") for p in profiles], indent=2))
        return
    for p in profiles:
        b = p.budget
        click.echo(f"{p.name:<11} {p.kind:<7} {p.runtime:<15} flash {b.flash_bytes} B, "
                   f"RAM {b.ram_bytes} B, latency {b.latency_ms} ms  ({p.board})")


@targets.command("show")
@click.argument("name")
@_handle_errors
def targets_show(name: str):
    """Show one target profile (by name or path) as JSON.

    \b
    Example:
      edgekit targets show cortex-m4
    """
    from .recipe import load_target

    click.echo(json.dumps(load_target(name).model_dump(mode="json"), indent=2))


@main.group()
def models():
    """The model zoo."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def models_list(as_json: bool):
    """List the registered models.

    \b
    Example:
      edgekit models list
    """
    from .models import list_models

    items = list_models()
    click.echo(json.dumps(items, indent=2) if as_json else "\n".join(f"{k:<14} {v}" for k, v in items.items()))


@main.group()
def datasets():
    """Dataset sources."""


@datasets.command("list")
def datasets_list():
    """List the dataset sources (none downloads anything).

    \b
    Example:
      edgekit datasets list
    """
    from . import archives
    from .data import list_sources

    lines = [s for s in list_sources() if s not in archives.CATALOG]
    lines.append("")
    lines.append("recorded UCR/UEA archive datasets (official train/test split; edgekit datasets show NAME):")
    for key in archives.names():
        d = archives.CATALOG[key]
        state = "" if archives.folder(d) is not None else f"  [not installed: {archives.INSTALL_HINT}]"
        lines.append(f"  {key:<18} {d.about}{state}")
    from .speech import ABOUT

    lines.append("")
    lines.append("synthetic speech (split by voice; edgekit datasets show kws:espeak):")
    lines.append(f"  {'kws:espeak':<18} {ABOUT}")
    click.echo("\n".join(lines))


@datasets.command("show")
@click.argument("name")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False, path_type=Path),
              help="kws:espeak: the data.speech settings of this recipe (default: the defaults).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_handle_errors
def datasets_show(name: str, recipe_file: Path | None, as_json: bool):
    """What an archive dataset is: its files, samples per split, length, channels, classes, the
    1-NN Euclidean accuracy measured on its official split and the published reference. For
    kws:espeak (synthetic speech): the espeak-ng and sox versions, the cache folder, the voices
    and clips of each split and class (generated and cached first when needed).

    \b
    Examples:
      edgekit datasets show uea:BasicMotions
      edgekit datasets show kws:espeak --recipe recipes/kws-espeak-m4.yaml
    """
    if name.startswith("kws:"):
        from .recipe import load_recipe
        from .speech import describe as describe_speech

        speech = None
        if recipe_file is not None:
            rec = load_recipe(recipe_file)
            if rec.data.source != name:
                raise click.BadParameter(f"{recipe_file} reads data.source {rec.data.source!r}, not {name!r}",
                                         param_hint="--recipe")
            speech = rec.data.speech
        info = describe_speech(name, speech)
    else:
        if recipe_file is not None:
            raise click.BadParameter("applies to kws:espeak only", param_hint="--recipe")
        from .archives import describe

        info = describe(name)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    splits = [k for k in ("train", "val", "test") if k in info]
    for key, value in info.items():
        if key == "classes":
            click.echo("classes:")
            for cname, c in value.items():
                click.echo(f"  {c['index']}: {cname:<16} " + "  ".join(f"{k} {c[k]:>5}" for k in splits))
        elif key == "voices":
            click.echo("voices:")
            for split, names in value.items():
                click.echo(f"  {split} ({len(names)}): {', '.join(names) or '-'}")
        elif key == "files":
            click.echo("files:\n" + "\n".join(f"  {p}" for p in value))
        else:
            click.echo(f"{key}: {value}")


@main.group()
def export():
    """Export a recipe to run under another tool (no TensorFlow needed)."""


def _export_check(name: str):
    """A click callback running edgekit.export_airflow.<name> on the value (ValueError -> usage error)."""
    def callback(ctx, param, value):
        if value is None:
            return None
        from . import export_airflow

        try:
            return getattr(export_airflow, name)(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return callback


@export.command("airflow")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Airflow's dags folder (DAGS_DIR, created): gets DAG_ID.py and DAG_ID.recipe.yaml.")
@click.option("--schedule", metavar="CRON", callback=_export_check("check_schedule"),
              help="Cron expression or preset (@daily...); default: no schedule, runs are triggered.")
@click.option("--run-root", type=click.Path(file_okay=False, path_type=Path),
              help="Where run directories go (ROOT/DAG_ID/RUN_ID), fixed in the DAG. Default: decided on the worker "
                   "(Variable edgekit_run_root, env EDGEKIT_RUN_ROOT, else $AIRFLOW_HOME/edgekit-runs).")
@click.option("--deploy-inventory", "inventory", type=click.Path(dir_okay=False, path_type=Path),
              help="hosts.yaml: Raspberry Pis to deploy and measure on, one task each (host, target, port, key, "
                   "known_hosts).")
@click.option("--dag-id", callback=_export_check("check_dag_id"), help="DAG id (default: edgekit_<recipe name>).")
@click.option("--retries", type=click.IntRange(0, 100), default=2, show_default=True,
              help="Retries of a failed task; a retry continues the run directory.")
@click.option("--retry-delay", "retry_delay_s", type=click.FloatRange(min=0), default=60, show_default=True,
              metavar="SECONDS", help="Seconds before a retry.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_context
@_handle_errors
def export_airflow_command(ctx, recipe: Path, out_dir: Path, schedule: str | None, run_root: Path | None,
                           inventory: Path | None, dag_id: str | None, retries: int, retry_delay_s: float,
                           as_json: bool):
    """Write an Apache Airflow DAG that runs RECIPE: one task per stage, one per target.

    Tasks: train -> distill -> prune -> quantize (the stages the recipe has), then convert_<target>
    -> eval_<target> for every target in parallel, deploy_<pi> per inventory host, and report.
    Each task runs one edgekit command on the DAG run's own run directory, so a retry continues
    where the failed try stopped. The DAG needs Airflow 3 (pip install 'edgekit[airflow]', or
    Airflow in its own virtualenv) and calls the `edgekit` executable (Variable edgekit_bin or
    env EDGEKIT_BIN to point it elsewhere). The recipe is copied beside the DAG.

    \b
    Examples:
      edgekit export airflow recipes/quickstart.yaml --out ~/airflow/dags
      edgekit export airflow recipes/quickstart.yaml --out dags --schedule '0 3 * * 1' \\
          --run-root /shared/edgekit-runs --deploy-inventory hosts.yaml
    """
    from .export_airflow import export_airflow

    res = export_airflow(recipe, out_dir, schedule=schedule, run_root=run_root, inventory=inventory, dag_id=dag_id,
                         retries=retries, retry_delay_s=retry_delay_s)
    quiet = ctx.obj.get("quiet")
    for w in res.warnings:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        click.echo(json.dumps({"dag_id": res.dag_id, "dag_file": str(res.dag_file),
                               "recipe_file": str(res.recipe_file), "tasks": list(res.tasks),
                               "warnings": list(res.warnings)}, indent=2))
    elif not quiet:
        click.echo(f"wrote {res.dag_file} (DAG {res.dag_id}, {len(res.tasks)} tasks: {', '.join(res.tasks)})")
        click.echo(f"wrote {res.recipe_file} (the recipe the DAG runs)")


# ----------------------------------------------------------------------------- deploy


@main.command("deploy")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--target", help="Pi target profile (name or path; default: the run's only Pi bundle).")
@click.option("--host", "host", required=True, help="The device as user@host.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True, help="SSH port.")
@click.option("--key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Private key file (unencrypted; else use ssh-agent). Default: ssh-agent, then ~/.ssh/id_*.")
@click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path),
              help="known_hosts file checked for the host key. Default: ~/.ssh/known_hosts.")
@click.option("--accept-new-host-key", is_flag=True,
              help="Trust an unknown host key and append it to known_hosts (a changed key is always refused).")
@click.option("--install-runtime", is_flag=True,
              help="When numpy or a TFLite runtime is missing, pip install the bundle's requirements.txt "
                   "into a venv in the remote folder.")
@click.option("--python", "python", default="python3", show_default=True,
              help="Python interpreter on the device.")
@click.option("--remote-dir", help="New folder on the device (default /tmp/edgekit-<run>-<random>).")
@click.option("--keep", is_flag=True, help="Keep the remote folder afterwards.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Seconds the evaluator may run on the device.")
@click.option("--dry-run", is_flag=True, help="Print the files and commands; connect to nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the device measurement as JSON.")
@click.option("--no-budget", is_flag=True, help="Report budget violations but exit 0.")
@click.pass_context
@_handle_errors
def deploy_command(ctx, run_dir: Path, target: str | None, host: str, port: int, key: Path | None,
                   known_hosts: Path | None, accept_new_host_key: bool, install_runtime: bool, python: str,
                   remote_dir: str | None, keep: bool, timeout_s: float, dry_run: bool, as_json: bool,
                   no_budget: bool):
    """Copy a Pi bundle of RUN_DIR to a device over SSH, measure it there, merge the result.

    Checks the device (machine, Python, free disk, numpy and ai_edge_litert or tflite_runtime),
    copies targets/<target>/bundle to a fresh remote folder, runs `sh run.sh` there, and writes
    eval/<target>-device.json; the target's entry in report.json/report.md gets the device
    numbers (measured_on rpi:<hostname> or ssh:<hostname>, the latency budget now checked),
    the host numbers stay under host_measurement. Keys or ssh-agent only; unknown host keys
    are refused unless --accept-new-host-key, changed ones always.

    \b
    Example:
      edgekit deploy runs/quickstart --target rpi4 --host pi@raspberrypi.local
      edgekit deploy runs/quickstart --target rpi4 --host pi@192.168.1.20 --install-runtime --dry-run
    """
    from .deploy import deploy, make_plan, summary_line

    plan = make_plan(run_dir, host, target=target, port=port, remote_dir=remote_dir, python=python,
                     install_runtime=install_runtime, keep=keep, timeout_s=timeout_s)
    if dry_run:
        click.echo(plan.render())
        return
    obj = ctx.find_root().obj or {}
    quiet = obj.get("quiet") or as_json
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # its tracebacks are not our one line
    result = deploy(plan, key=key, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                    progress=None if quiet else (lambda msg: click.echo(f"deploy: {msg}", err=True)),
                    lock_wait_s=obj.get("lock_wait_s", 0.0))
    budget = result["budget"]
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not obj.get("quiet"):
        click.echo(summary_line(plan.target, result))
        click.echo(f"wrote {plan.device_json()}; updated {plan.run_dir / 'report.json'} and report.md")
    if budget["violations"] and not no_budget:
        for v in budget["violations"]:
            click.echo(f"over budget: {plan.target}: {v}", err=True)
        ctx.exit(6)


if __name__ == "__main__":  # pragma: no cover
    main()
