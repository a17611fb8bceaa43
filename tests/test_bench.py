"""Benchmarks (``-m bench``): they print measured numbers and assert only that they are sane.

No wall-clock limits here: timings depend on the host and its load. Run with
``bash tools/test.sh -m bench -s`` to see the printed tables.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.bench
def test_evaluator_overhead_vs_bare_interpreter_loop(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_evaluator.py"),
                           "--rounds", "2", "--chunks", "3", "--runs", "300", "--warmup", "20",
                           "--json-out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(proc.stdout)
    res = json.loads(out.read_text())
    for key in ("ratio_vs_invoke", "ratio_vs_set_invoke_get"):
        ratio = res[key]["median"]
        assert math.isfinite(ratio) and ratio > 0, (key, ratio)
    for key, stats in res["ms_per_run"].items():
        assert stats["median"] > 0, key
    assert len(res["per_round"]) == 2
    assert "evaluator / bare invoke" in proc.stdout
    assert "evaluator / bare set+invoke+get" in proc.stdout
