"""What does edgekit's teacher training cost over a bare ``model.fit``, and what do two workers give?

1. **edgekit vs bare fit** (in this process, interleaved rounds): edgekit's ``train.run`` (tf.data
   pipeline, ``BackupAndRestore`` after every epoch, epoch counter, export and measurement
   after training) against a bare ``model.fit(x, y, batch_size, epochs, validation_data)`` on
   numpy arrays: the same zoo model, compiled the same way, the same data (digits), strategy
   (``auto``), epochs and global batch. Both are timed around ``model.fit`` alone; steps/s =
   ``ceil(n_train / batch) * epochs / seconds``. Goal: edgekit >= 0.9x bare. Also per CPU second
   of this process (all its threads), which other processes on a shared host disturb less.
2. **2 workers vs 1 worker** on loopback (``edgekit train --workers N``: MultiWorkerMirroredStrategy,
   one process per worker, the same global batch): the chief's steps/s over ``fit``, and the
   steady-state steps/s from the chief's epoch timestamps (epochs 2..E, without start-up and
   tracing). Ratio = 2-worker / 1-worker samples per second.

Usage::

    python tools/bench_train.py                          # cnn_small, 10 epochs, 3 rounds, then 1 vs 2 workers
    python tools/bench_train.py --rounds 5 --epochs 20 --json-out bench.json
    python tools/bench_train.py --skip-cluster

Timings depend on the host and its load; the ratios are medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_RATIO = 0.9


def _teacher_cfg(args):
    from edgekit.recipe import TeacherConfig

    return TeacherConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, strategy="auto")


def bare_fit(data, cfg, seed: int) -> tuple[float, float]:
    """Steps per wall second and per CPU second (this process) of a bare ``model.fit`` on numpy
    arrays, under the same strategy."""
    from edgekit import train
    from edgekit._tf import keras
    from edgekit.fitting import make_optimizer
    from edgekit.models import create_model

    k = keras()
    with train.get_strategy(cfg.strategy).scope():
        model = create_model(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes, seed=seed)
        model.compile(optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.momentum),
                      loss=k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(data.x_train, data.y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
              validation_data=(data.x_val, data.y_val), verbose=0)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    steps = math.ceil(len(data.x_train) / cfg.batch_size) * cfg.epochs
    return steps / seconds, steps / cpu_seconds


def edgekit_fit(data, cfg, seed: int, folder: Path) -> dict:
    from edgekit import train

    res = train.run(data, cfg, seed=seed, out_dir=folder)
    return res.metrics


def compare_in_process(args) -> dict:
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    data = load_dataset(DataConfig(source=args.data), seed=0)
    cfg = _teacher_cfg(args)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for r in range(args.rounds):
            order = ("edgekit", "bare") if r % 2 == 0 else ("bare", "edgekit")
            got: dict[str, float] = {}
            for name in order:
                if name == "bare":
                    got["bare"], got["bare_cpu"] = bare_fit(data, cfg, seed=r)
                else:
                    m = edgekit_fit(data, cfg, seed=r, folder=Path(tmp) / f"round{r}")
                    got["edgekit"] = m["steps"] / m["fit_seconds"]
                    got["edgekit_cpu"] = m["steps"] / m["fit_cpu_seconds"]
                    got["strategy"] = m["strategy"]
            got["ratio"] = got["edgekit"] / got["bare"]
            got["ratio_cpu"] = got["edgekit_cpu"] / got["bare_cpu"]
            rounds.append(got)
            print(f"  round {r + 1}: edgekit {got['edgekit']:6.1f} steps/s ({got['edgekit_cpu']:6.1f} per CPU-s)   "
                  f"bare fit {got['bare']:6.1f} steps/s ({got['bare_cpu']:6.1f} per CPU-s)   "
                  f"ratio {got['ratio']:.3f} (CPU {got['ratio_cpu']:.3f})", flush=True)

    def stats(key: str) -> dict:
        values = [g[key] for g in rounds]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {"strategy": rounds[0]["strategy"], "model": cfg.model, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "edgekit_steps_per_s": statistics.median(g["edgekit"] for g in rounds),
            "bare_steps_per_s": statistics.median(g["bare"] for g in rounds),
            "ratio": stats("ratio"), "ratio_cpu": stats("ratio_cpu"), "per_round": rounds}


def cluster_throughput(args, workers: int, folder: Path) -> dict:
    """Train on a local cluster of ``workers`` processes; the chief's throughput."""
    from edgekit import cluster, train
    from edgekit.data import load_dataset
    from edgekit.recipe import load_recipe

    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(f"""
name: bench
seed: 0
data: {{source: {args.data}}}
teacher: {{model: {args.model}, epochs: {args.cluster_epochs}, batch_size: {args.batch_size},
           learning_rate: {args.learning_rate}}}
student: null
prune: null
qat: null
""")
    recipe = load_recipe(recipe_path)
    data = load_dataset(recipe.data, seed=recipe.seed)
    out = folder / f"workers{workers}"
    launch = cluster.Launch(recipe_path, workers=workers, max_restarts=0)
    start = time.perf_counter()
    with train.launching(launch):
        res = train.run(data, recipe.teacher, seed=recipe.seed, out_dir=out)
    wall = time.perf_counter() - start
    epochs = [e for e in cluster.read_events(out, "worker:0") if e["event"] == "epoch"]
    steps_per_epoch = math.ceil(len(data.x_train) / args.batch_size)
    steady = None
    if len(epochs) >= 2:
        steady = steps_per_epoch * (len(epochs) - 1) / (epochs[-1]["t"] - epochs[0]["t"])
    m = res.metrics
    return {"workers": workers, "replicas": m["replicas"], "steps": m["steps"], "fit_seconds": m["fit_seconds"],
            "steps_per_s": m["steps"] / m["fit_seconds"], "steady_steps_per_s": steady,
            "samples_per_s": m["steps"] / m["fit_seconds"] * args.batch_size,
            "steady_samples_per_s": steady * args.batch_size if steady else None,
            "wall_seconds": round(wall, 1), "accuracy": m["accuracy"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cnn_small")
    p.add_argument("--data", default="digits")
    p.add_argument("--epochs", type=int, default=10, help="epochs per in-process round")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size")
    p.add_argument("--learning-rate", type=float, default=0.002)
    p.add_argument("--rounds", type=int, default=3, help="interleaved edgekit / bare rounds")
    p.add_argument("--cluster-epochs", type=int, default=5, help="epochs of each cluster run")
    p.add_argument("--skip-cluster", action="store_true", help="only the in-process comparison")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from edgekit._tf import tf

    t = tf()
    host = {"python": platform.python_version(), "tensorflow": t.__version__, "cpus": os.cpu_count(),
            "gpus": len(t.config.list_physical_devices("GPU")), "machine": platform.machine()}
    print(f"host: {host}")
    print(f"1. edgekit teacher vs bare model.fit: {args.model} on {args.data}, {args.epochs} epochs, "
          f"batch {args.batch_size}, {args.rounds} rounds")
    result: dict = {"host": host, "in_process": compare_in_process(args)}
    ip = result["in_process"]
    print(f"   {ip['strategy']}: edgekit {ip['edgekit_steps_per_s']:.1f} steps/s, bare fit "
          f"{ip['bare_steps_per_s']:.1f} steps/s")
    print(f"   edgekit / bare fit steps/s: {ip['ratio']['median']:.3f} (min {ip['ratio']['min']:.3f}, "
          f"max {ip['ratio']['max']:.3f}; goal >= {GOAL_RATIO}); per CPU second: {ip['ratio_cpu']['median']:.3f} "
          f"(min {ip['ratio_cpu']['min']:.3f}, max {ip['ratio_cpu']['max']:.3f})")
    if not args.skip_cluster:
        print(f"2. local MultiWorkerMirroredStrategy cluster on 127.0.0.1: {args.cluster_epochs} epochs, "
              f"global batch {args.batch_size}")
        runs = []
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
            for workers in (1, 2):
                r = cluster_throughput(args, workers, Path(tmp))
                runs.append(r)
                steady = f"{r['steady_steps_per_s']:.1f}" if r["steady_steps_per_s"] else "n/a"
                print(f"   {workers} worker(s): {r['steps_per_s']:.1f} steps/s over fit, {steady} steps/s "
                      f"steady (epochs 2..), {r['wall_seconds']} s wall, accuracy {r['accuracy']:.3f}", flush=True)
        one, two = runs
        result["cluster"] = {"runs": runs, "ratio_fit": two["samples_per_s"] / one["samples_per_s"],
                             "ratio_steady": (two["steady_samples_per_s"] / one["steady_samples_per_s"]
                                              if one["steady_samples_per_s"] and two["steady_samples_per_s"] else None)}
        c = result["cluster"]
        steady = f"{c['ratio_steady']:.3f}" if c["ratio_steady"] else "n/a"
        print(f"   2 workers / 1 worker samples/s: {c['ratio_fit']:.3f} over fit, {steady} steady "
              f"({host['cpus']} CPU cores shared by every worker process)")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
