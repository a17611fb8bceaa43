"""tools/bench_budget.py (issue 24): its statistics in the default suite; the peer flow
(tools/peer_flow.py) on digits in the slow suite; the benchmark's smallest configuration (one seed,
one epoch, every method: five pipelines, a tune study and the peer flow, 3-6 minutes on 2 cores)
with the benchmarks (``-m bench``)."""

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


def _row(ds, kib, method, seed, acc, flash=16000, arena=9000):
    return {"dataset": ds, "budget_kib": kib, "method": method, "seed": seed, "accuracy": acc,
            "flash_bytes": flash, "arena_bytes": arena}


def test_goal_is_met_only_at_half_the_cost_and_not_measurable_without_8_kib(capsys):
    """The goal line: edgekit at 8 KiB against the peer flow at 16 KiB (accuracy a tie or higher
    over 5 seeds, flash + arena at most half); an architecture with no 8 KiB result (its narrowest
    file is larger) is not measurable, and the line says so instead of "does not reach"."""
    peer = [_row("d", 16, "peer", s, 0.50 + s / 100, 16500, 9400) for s in range(5)]
    small = [_row("d", 8, "scratch", s, 0.80 + s / 100, 8100, 4800) for s in range(5)]
    bb.goal(peer + small, "d")
    out = capsys.readouterr().out
    assert "GOAL (d) MET" in out and "(0.50x)" in out and "reaches" in out
    costly = [_row("d", 8, "scratch", s, 0.80 + s / 100, 8100, 9000) for s in range(5)]
    bb.goal(peer + costly, "d")
    assert "GOAL (d) NOT MET" in capsys.readouterr().out
    # a sweep below 8 KiB is printed too, 8 KiB first, and counts where it holds
    smaller = [_row("d", 6, "scratch", s, 0.80 + s / 100, 6100, 2000) for s in range(5)]
    bb.goal(peer + costly + smaller, "d")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("GOAL (d)")]
    assert "NOT MET: edgekit scratch at 8 KiB" in lines[0] and "MET: edgekit scratch at 6 KiB" in lines[1]
    assert "reaches" in lines[-1] and "(scratch at 6 KiB)" in lines[-1]
    at16 = [_row("k", 16, "peer", s, 0.5 + s / 100) for s in range(5)] + \
           [_row("k", 16, "scratch", s, 0.8 + s / 100) for s in range(5)]
    bb.goal(at16, "k")
    out = capsys.readouterr().out
    assert "GOAL (k) NOT MEASURABLE" in out and "at 16 KiB edgekit scratch" in out and "(higher)" in out
    assert "does not reach" not in out


@pytest.mark.slow
def test_peer_flow_prunes_quantizes_and_is_measured_like_a_target(tmp_path):
    """The tfmot guides' flow: the stripped model holds the guide's final sparsity (80 %), the file
    is full int8 (int8 in and out) and its numbers come from running it in TFLite Micro."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig
    from peer_flow import GUIDE_SPARSITY, peer_flow

    data = load_dataset(DataConfig(source="digits"), seed=0)
    res = peer_flow(data, model="cnn_tiny", width=1.0, seed=0, out_dir=tmp_path, epochs=8, prune_epochs=3,
                    qat_epochs=2, batch_size=32, learning_rate=0.01, warmup=1, runs=3)
    assert res["kernel_sparsity"] >= GUIDE_SPARSITY[1] - 0.02, res
    path = tmp_path / "peer_int8.tflite"
    it = Interpreter(model_path=str(path))
    assert it.get_input_details()[0]["dtype"].__name__ == "int8" and it.get_output_details()[0]["dtype"].__name__ == "int8"
    assert res["flash_bytes"] == path.stat().st_size and res["arena_bytes"] > 0
    assert 0.5 <= res["accuracy"] <= 1.0, res   # digits, 10 classes: far above chance


@pytest.mark.bench
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
