"""Trial directories and the trial worker of :mod:`edgekit.tune`.

Every trial is an ordinary pipeline run in ``trials/<n>/`` whose teacher stage is linked from the
study's shared teacher (:func:`prepare_trial_dir`), run in its own process by
``python -m edgekit.tune TRIAL_DIR`` (:func:`worker_main`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .._io import guard, write_json, write_text
from ..errors import EdgekitError
from ..recipe import Recipe, load_recipe, resolved_yaml

log = logging.getLogger(__name__)

THREADS_ENV = "EDGEKIT_TUNE_THREADS"  # read by the worker process only


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


def worker_main(argv: list[str]) -> int:
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
        from .._tf import tf

        tf().config.threading.set_intra_op_parallelism_threads(threads)
        tf().config.threading.set_inter_op_parallelism_threads(threads)
    start = time.perf_counter()
    result: dict[str, Any] = {"ok": True, "error": None, "exit_code": 0}
    try:
        from ..pipeline import Run

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
