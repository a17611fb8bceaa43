"""The default test suite's wall time against the quickstart's, on the same machine, one after the other.

The issue's goal: the default suite (``pytest`` with the default markers) in at most 3x the time
of the quickstart recipe (``edgekit run recipes/quickstart.yaml``). This runs both in this
checkout with this Python and prints both times and their ratio:

    python tools/bench_suite.py                     # suite, then quickstart
    python tools/bench_suite.py --suite-seconds 171 # a suite run already timed (.ci/run does this)
    python tools/bench_suite.py --suite-seconds 171 --quickstart-seconds 60   # both timed elsewhere
    python tools/bench_suite.py --json-out b.json   # the numbers as JSON too

Exit status: 0 when both ran (whatever the ratio; ``--max-ratio R`` makes a ratio above R exit
1), the suite's or the quickstart's exit status when one failed. Times are wall-clock seconds;
on a shared machine they move with its load, which is why both are measured in one go.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 3.0


def timed(cmd: list[str], **kw) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, **kw)
    return time.perf_counter() - start, proc.returncode


def run_suite(pytest_args: list[str]) -> tuple[float, int]:
    # the README's test command (tools/test.sh: its worker processes included)
    return timed(["bash", "tools/test.sh", "-q", "-p", "no:cacheprovider", "--durations=25", *pytest_args])


def run_quickstart() -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-quickstart-") as tmp:
        return timed([sys.executable, "-m", "edgekit.cli", "-q", "run", "recipes/quickstart.yaml", "--out",
                      str(Path(tmp) / "quickstart")])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite-seconds", type=float, help="use this suite time instead of running the suite")
    p.add_argument("--quickstart-seconds", type=float,
                   help="use this quickstart time (e.g. the one tests/test_e2e.py measured) instead of running it")
    p.add_argument("--max-ratio", type=float, help="exit 1 when suite / quickstart is above this")
    p.add_argument("--json-out", type=Path, help="also write the numbers to this JSON file")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments for the suite run (after --)")
    args = p.parse_args(argv)

    if args.suite_seconds is None:
        print("bench_suite: running the default suite ...", file=sys.stderr, flush=True)
        suite_s, rc = run_suite(args.pytest_args)
        if rc != 0:
            print(f"bench_suite: the suite failed (exit {rc}) after {suite_s:.0f} s", file=sys.stderr)
            return rc
    else:
        suite_s = args.suite_seconds
    if args.quickstart_seconds is None:
        print("bench_suite: running the quickstart recipe ...", file=sys.stderr, flush=True)
        quick_s, rc = run_quickstart()
        if rc != 0:
            print(f"bench_suite: the quickstart failed (exit {rc}) after {quick_s:.0f} s", file=sys.stderr)
            return rc
    else:
        quick_s = args.quickstart_seconds
    ratio = suite_s / quick_s
    result = {"suite_seconds": round(suite_s, 1), "quickstart_seconds": round(quick_s, 1),
              "ratio": round(ratio, 2), "goal_ratio": GOAL_RATIO, "cpus": len(os.sched_getaffinity(0)),
              "suite_timed_by": "caller" if args.suite_seconds is not None else "bench_suite",
              "quickstart_timed_by": "caller" if args.quickstart_seconds is not None else "bench_suite"}
    print(f"default suite {suite_s:.0f} s, quickstart {quick_s:.0f} s: ratio {ratio:.2f} "
          f"(goal <= {GOAL_RATIO:g})")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if args.max_ratio is not None and ratio > args.max_ratio:
        print(f"bench_suite: ratio {ratio:.2f} > --max-ratio {args.max_ratio:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
