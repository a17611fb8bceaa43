"""tools/bench_budget.py (issue 24): its statistics in the default suite; its smallest configuration
(one seed, one epoch, every method) end to end in the slow suite (a few minutes: five pipelines, a
tune study and the peer flow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_budget as bb  # noqa: E402 - tools/ is not a package


def test_interval_is_a_t_interval_and_overlap_is_a_tie():
    s = bb.summary([0.90, 0.91, 0.92, 0.93, 0.94])
    # sd 0.0158, t(4) 2.776: half width 2.776 * 0.0158 / sqrt(5) = 0.0196
    assert s["n"] == 5 and s["mean"] == pytest.approx(0.92)
    assert s["hi"] - s["mean"] == pytest.approx(0.01963, abs=1e-4)
    near = bb.summary([0.92, 0.93, 0.94, 0.95, 0.96])      # overlaps: a tie
    far = bb.summary([0.97, 0.975, 0.98, 0.985, 0.99])     # does not
    assert bb.compare(near, s) == "tie"
    assert bb.compare(far, s) == "higher" and bb.compare(s, far) == "lower"
    few = bb.summary([0.99, 0.99, 0.99])
    assert bb.compare(few, s).startswith("not decided")     # fewer than 5 seeds decide nothing
    assert bb.summary([None, 0.5])["n"] == 1 and bb.summary([])["mean"] is None


@pytest.mark.slow
def test_smallest_configuration_runs_every_method_inside_the_band(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_budget.py"), "--smoke", "--datasets", "mnist1d",
                           "--budgets", "8", "--seeds", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["method"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert set(rows) == set(bb.METHODS), proc.stdout
    for m in ("peer", "scratch", "distilled", "channels"):   # widths sized to the budget land in +-3 %
        assert rows[m]["in_band"], (m, rows[m]["flash_bytes"])
        assert rows[m]["arena_bytes"] > 0 and 0.0 <= rows[m]["accuracy"] <= 1.0
    assert "| peer | 0 |" in proc.stdout and "GOAL (mnist1d)" in proc.stdout
