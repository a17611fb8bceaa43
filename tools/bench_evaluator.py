"""How much does the on-device evaluator add to the latency it reports?

Measures, on one model in one runtime (LiteRT, ``ai_edge_litert``, 1 thread by default), in
interleaved rounds (the order of the three rotates each round, so drift and warm caches hit
them alike):

  evaluator          the mean latency ``edgekit/ondevice/evaluate.py``'s ``evaluate()`` reports:
                     per timed run it sets the input, then times ``invoke()`` alone between two
                     ``time.perf_counter()`` calls (as ``benchmark_model`` does), then reads the
                     output. Inputs are quantized (int8 inputs) once, before timing.
  bare invoke        ``interpreter.invoke()`` in a loop with the input set once beforehand;
                     the loop is timed as a whole and divided by the runs (what TFLite's
                     ``benchmark_model`` times: Invoke only).
  bare set+invoke+get  the same three calls as the evaluator's, in a loop timed as a whole:
                     no per-run timer, no method dispatch; separates the evaluator's own
                     overhead from the cost of setting the input and reading the output.

Reports the ratios evaluator / bare invoke (everything the evaluator adds over Invoke; goal
<= 1.05) and evaluator / bare set+invoke+get (below 1 now that the evaluator times invoke alone), the median over
rounds with min and max. A method's value in a round is the median of its chunk means, so a
chunk hit by another process does not move it. Each round uses a fresh interpreter for the bare
loops (each evaluate() call creates its own), the same runtime, thread count and samples.

Usage::

    python tools/bench_evaluator.py                      # a small digits CNN, int8, float I/O
    python tools/bench_evaluator.py --model m.tflite --rounds 9 --chunks 30 --runs 2000
    python tools/bench_evaluator.py --json-out bench.json

Without ``--model`` it converts an (untrained: latency does not depend on weight values)
edgekit ``cnn_tiny`` for 8x8x1 digits to int8 with float I/O, calibrated on digits samples.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit.ondevice import evaluate as ev  # noqa: E402

GOAL_RATIO = 1.05
METHODS = ("evaluator", "bare_invoke", "bare_set_invoke_get")


def build_default_model(folder: Path, *, mode: str = "int8") -> tuple[Path, np.ndarray]:
    """Convert edgekit's ``cnn_tiny`` (8x8x1 -> 10) to TFLite ``mode``; return (path, digits x)."""
    from sklearn.datasets import load_digits

    from edgekit.convert import to_tflite
    from edgekit.models import create_model

    x = (load_digits().images / 16.0).astype("float32")[..., None]
    model = create_model("cnn_tiny", input_shape=(8, 8, 1), num_classes=10, seed=0)

    def rep():
        for i in range(100):
            yield [x[i:i + 1]]

    path = folder / f"cnn_tiny_{mode}.tflite"
    path.write_bytes(to_tflite(model, mode=mode, rep=rep))
    return path, x[:200]


def _inputs_for(model: Path, threads: int) -> np.ndarray:
    """Random float inputs in [0, 1) in the model's per-sample input shape (for --model)."""
    from ai_edge_litert.interpreter import Interpreter

    shape = [int(d) for d in Interpreter(model_path=str(model), num_threads=threads)
             .get_input_details()[0]["shape"]]
    return np.random.default_rng(0).random((200, *shape[1:]), dtype=np.float32)


class _Bare:
    """One fresh interpreter for the bare loops of a round (same runtime and threads)."""

    def __init__(self, model: Path, xq: np.ndarray, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(model), num_threads=threads)
        self.it.allocate_tensors()
        self.i_in = self.it.get_input_details()[0]["index"]
        self.i_out = self.it.get_output_details()[0]["index"]
        self.samples = [xq[j:j + 1] for j in range(len(xq))]

    def invoke_ms(self, runs: int, warmup: int) -> float:
        """Mean ms per ``invoke()`` with the input set once; the loop is timed as a whole."""
        invoke = self.it.invoke
        self.it.set_tensor(self.i_in, self.samples[0])
        for _ in range(warmup):
            invoke()
        t0 = time.perf_counter()
        for _ in range(runs):
            invoke()
        return (time.perf_counter() - t0) * 1e3 / runs

    def set_invoke_get_ms(self, runs: int, warmup: int) -> float:
        """Mean ms per set_tensor + invoke + get_tensor; the loop is timed as a whole."""
        set_tensor, invoke, get_tensor = self.it.set_tensor, self.it.invoke, self.it.get_tensor
        i_in, i_out, samples, n = self.i_in, self.i_out, self.samples, len(self.samples)
        for i in range(warmup):
            set_tensor(i_in, samples[i % n])
            invoke()
            get_tensor(i_out)
        t0 = time.perf_counter()
        for i in range(runs):
            set_tensor(i_in, samples[i % n])
            invoke()
            get_tensor(i_out)
        return (time.perf_counter() - t0) * 1e3 / runs


def run_bench(model: Path | None = None, *, rounds: int = 5, chunks: int = 20, runs: int = 1000,
              warmup: int = 50, threads: int = 1, mode: str = "int8") -> dict:
    """Measure the three methods; return the numbers (ms per run, ratios).

    Each round holds ``chunks`` chunks; in each chunk every method does ``warmup`` untimed and
    ``runs`` timed runs, in an order that rotates from chunk to chunk. A method's value in a
    round is its least-disturbed chunk (the smallest chunk mean, as ``timeit`` advises: other
    processes only ever add time), and, as a second view, the median of its chunk means; the
    ratios are per round, summarized by their median, min and max over rounds.
    """
    with tempfile.TemporaryDirectory(prefix="bench-evaluator-") as tmp:
        if model is None:
            model, x = build_default_model(Path(tmp), mode=mode)
            what = f"edgekit cnn_tiny (8x8x1 digits -> 10), TFLite {mode}, untrained"
        else:
            model, x = Path(model), _inputs_for(Path(model), threads)
            what = str(model)
        y = np.zeros(len(x), dtype=np.int64)
        probe = ev.evaluate(str(model), x, y, runtime="ai_edge_litert", threads=threads,
                            warmup=0, runs=1, samples=1)
        info = ev.TensorInfo(np.dtype(probe["input"]["dtype"]), tuple(probe["input"]["shape"]),
                             probe["input"]["scale"], probe["input"]["zero_point"])
        xq = ev._prepare_inputs(x, info)  # noqa: SLF001 - the evaluator's own input path
        per_round = []
        for _ in range(rounds):
            bare = _Bare(model, xq, threads)
            chunk_ms: dict[str, list[float]] = {m: [] for m in METHODS + ("evaluator_p50",)}
            for c in range(chunks):
                for method in METHODS[c % 3:] + METHODS[:c % 3]:
                    if method == "evaluator":
                        res = ev.evaluate(str(model), x, y, runtime="ai_edge_litert",
                                          threads=threads, warmup=warmup, runs=runs, samples=20)
                        chunk_ms["evaluator"].append(res["latency_ms"]["mean"])
                        chunk_ms["evaluator_p50"].append(res["latency_ms"]["p50"])
                    elif method == "bare_invoke":
                        chunk_ms[method].append(bare.invoke_ms(runs, warmup))
                    else:
                        chunk_ms[method].append(bare.set_invoke_get_ms(runs, warmup))
            got = {m: min(v) for m, v in chunk_ms.items()}
            got.update({f"{m}_median": statistics.median(v) for m, v in chunk_ms.items()})
            for suffix in ("", "_median"):
                ev_ms = got[f"evaluator{suffix}"]
                got[f"ratio_vs_invoke{suffix}"] = ev_ms / got[f"bare_invoke{suffix}"]
                got[f"ratio_vs_set_invoke_get{suffix}"] = ev_ms / got[f"bare_set_invoke_get{suffix}"]
            per_round.append(got)
        size = model.stat().st_size

    def summary(key: str) -> dict[str, float]:
        values = [p[key] for p in per_round]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "model": what, "size_bytes": size, "runtime": probe["runtime"],
        "input_dtype": probe["input"]["dtype"], "threads": threads, "rounds": rounds,
        "chunks_per_round": chunks, "runs_per_chunk": runs, "warmup_per_chunk": warmup,
        "host": {"machine": platform.machine(), "cpu": ev.host_info()["cpu"],
                 "python": platform.python_version()},
        "ms_per_run": {k: summary(k) for k in ("evaluator", "evaluator_p50", "bare_invoke",
                                               "bare_set_invoke_get")},
        "ms_per_run_median_chunk": {k: summary(f"{k}_median") for k in (
            "evaluator", "bare_invoke", "bare_set_invoke_get")},
        "ratio_vs_invoke": summary("ratio_vs_invoke"),
        "ratio_vs_set_invoke_get": summary("ratio_vs_set_invoke_get"),
        "ratio_vs_invoke_median_chunk": summary("ratio_vs_invoke_median"),
        "ratio_vs_set_invoke_get_median_chunk": summary("ratio_vs_set_invoke_get_median"),
        "goal_ratio": GOAL_RATIO,
        "measures": ("evaluator = the mean latency evaluate() reports: per run invoke() alone "
                     "between two perf_counter calls, set_tensor before and get_tensor after "
                     "(input quantization is done once, before timing); bare_invoke = invoke() only, input pre-set, "
                     "loop timed as a whole; bare_set_invoke_get = the same three calls, loop "
                     "timed as a whole; per round each method's least-disturbed chunk (smallest "
                     "chunk mean), with the median chunk as a second view"),
        "per_round": per_round,
    }


def render(res: dict) -> str:
    ms, med = res["ms_per_run"], res["ms_per_run_median_chunk"]
    lines = [
        f"model: {res['model']} ({res['size_bytes']} bytes, {res['input_dtype']} input)",
        f"runtime: {res['runtime']['name']} {res['runtime']['version']}, {res['threads']} thread(s); "
        f"{res['rounds']} rounds x {res['chunks_per_round']} interleaved chunks x "
        f"{res['runs_per_chunk']} runs (+{res['warmup_per_chunk']} warm-up) per method; "
        f"host {res['host']['machine']} {res['host']['cpu']}",
        "",
        "us per run, median over rounds [min, max]; best = least-disturbed chunk, typical = median chunk:",
        f"  {'':<26} {'best':>9}  {'':<20} {'typical':>9}",
    ]
    for key, label in (("evaluator", "evaluator (reported mean)"), ("bare_invoke", "bare invoke"),
                       ("bare_set_invoke_get", "bare set+invoke+get")):
        b, t = ms[key], med[key]
        lines.append(f"  {label:<26} {b['median'] * 1e3:9.2f}  [{b['min'] * 1e3:8.2f}, {b['max'] * 1e3:8.2f}]"
                     f" {t['median'] * 1e3:9.2f}")
    p50 = ms["evaluator_p50"]
    lines.append(f"  {'evaluator (reported p50)':<26} {p50['median'] * 1e3:9.2f}")
    lines.append("")
    for key, label, note in (
            ("ratio_vs_invoke", "evaluator / bare invoke", f"goal <= {res['goal_ratio']}"),
            ("ratio_vs_set_invoke_get", "evaluator / bare set+invoke+get",
             "below 1: set and get are outside the evaluator's timer")):
        r, t = res[key], res[f"{key}_median_chunk"]
        verdict = ""
        if key == "ratio_vs_invoke":
            verdict = ": meets" if r["median"] <= res["goal_ratio"] else ": MISSES"
        lines.append(f"{label:<32} = {r['median']:.4f} ({(r['median'] - 1) * 100:+.1f} %, rounds "
                     f"[{r['min']:.4f}, {r['max']:.4f}]; typical chunk {t['median']:.4f}; "
                     f"{note}{verdict})")
    lines += ["", f"measured: {res['measures']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None,
                   help=".tflite to measure (default: convert a small digits CNN)")
    p.add_argument("--mode", default="int8", choices=("int8", "full-int8", "float32"),
                   help="conversion of the default model (default int8: int8 with float I/O)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--chunks", type=int, default=20,
                   help="interleaved chunks per round (default 20)")
    p.add_argument("--runs", type=int, default=1000,
                   help="timed runs per method and chunk (default 1000)")
    p.add_argument("--warmup", type=int, default=50, help="warm-up runs per method and chunk")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--json-out", type=Path, default=None, help="also write the numbers as JSON")
    args = p.parse_args(argv)
    if min(args.rounds, args.chunks, args.runs, args.threads) < 1 or args.warmup < 0:
        p.error("--rounds, --chunks, --runs and --threads must be >= 1, --warmup >= 0")
    res = run_bench(args.model, rounds=args.rounds, chunks=args.chunks, runs=args.runs,
                    warmup=args.warmup, threads=args.threads, mode=args.mode)
    if not all(math.isfinite(res[k]["median"]) for k in ("ratio_vs_invoke", "ratio_vs_set_invoke_get")):
        print("bench_evaluator: a ratio is not finite (a timer resolution problem?)", file=sys.stderr)
        return 1
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=2) + "\n")
    sys.stdout.write(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
