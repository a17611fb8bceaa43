"""Latency estimates: the op-level cost model, the calibrated fit, uncalibrated targets, the CLI.

Tolerances: MACs and bytes are exact (integers from shapes). The MLPerf Tiny models converted
here must land within the leave-one-out error docs/targets.md states for cortex-m4 (the worst LOO
error of the fit, since these very models are its calibration points, and the estimate of a
model the fit has seen is in-sample); the LOO estimate is reported beside it and printed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit import estimate
from edgekit.errors import ConversionError, RecipeError
from edgekit.recipe import TargetProfile, load_target

ROOT = Path(__file__).resolve().parent.parent
MLPERF = {  # zoo name: (input shape, classes) as measured in MLPerf Tiny
    "resnet8": ((32, 32, 3), 10),
    "ds_cnn": ((49, 10, 1), 12),
    "mobilenet_v1_025": ((96, 96, 3), 2),
    "fc_autoencoder": ((640, 1), 1),
}


def _convert(model, shape, mode="full-int8") -> bytes:
    from edgekit.convert import to_tflite

    x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)

    def rep():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return to_tflite(model, mode=mode, rep=rep, signature=False)


@pytest.fixture(scope="session")
def hand_model(tmp_path_factory) -> tuple[Path, Path]:
    """8x8x3 -> Conv2D(4, 3x3 valid) -> DepthwiseConv2D(3x3 same) -> Flatten -> Dense(5); int8 and float."""
    from edgekit._tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([
        k.layers.Input((8, 8, 3)),
        k.layers.Conv2D(4, 3, padding="valid", activation="relu"),
        k.layers.DepthwiseConv2D(3, padding="same"),
        k.layers.Flatten(),
        k.layers.Dense(5),
    ])
    out = tmp_path_factory.mktemp("hand")
    (out / "int8.tflite").write_bytes(_convert(model, (8, 8, 3)))
    (out / "float.tflite").write_bytes(_convert(model, (8, 8, 3), mode="float32"))
    return out / "int8.tflite", out / "float.tflite"


@pytest.fixture(scope="session")
def mlperf_models(zoo_reference_int8) -> dict[str, Path]:
    """The four MLPerf Tiny zoo models at their reference shapes, full int8 (the session's zoo)."""
    zoo = zoo_reference_int8
    assert {name: (zoo[name].input_shape, zoo[name].classes) for name in MLPERF} == MLPERF
    return {name: zoo[name].full_int8 for name in MLPERF}


# ------------------------------------------------------------------------------- cost model


def test_macs_and_bytes_match_a_hand_computation(hand_model):
    costs = estimate.op_costs(hand_model[0])
    by_op = {c.op: c for c in costs if c.macs}
    # conv: 6x6 outputs x 4 channels x 3x3 kernel x 3 input channels
    assert by_op["CONV_2D"].macs == 6 * 6 * 4 * 3 * 3 * 3 == 3888
    # depthwise: 6x6 outputs x 4 channels x 3x3 kernel (one input channel per output channel)
    assert by_op["DEPTHWISE_CONV_2D"].macs == 6 * 6 * 4 * 3 * 3 == 1296
    # dense: 144 inputs x 5 units
    assert by_op["FULLY_CONNECTED"].macs == 144 * 5 == 720
    assert sum(c.macs for c in costs) == 3888 + 1296 + 720
    conv = by_op["CONV_2D"]
    assert conv.op_class == "conv" and conv.dtype == "INT8"
    # int8 input 8x8x3, int8 weights 4x3x3x3, int32 bias 4; int8 output 6x6x4
    assert conv.bytes_read == 192 + 108 + 16 and conv.weight_bytes == 108 + 16
    assert conv.bytes_written == 144 and conv.activation_bytes == 192 + 144
    assert by_op["DEPTHWISE_CONV_2D"].op_class == "depthwise"
    assert by_op["FULLY_CONNECTED"].op_class == "fully_connected"
    feats = estimate.model_features(costs)
    assert feats["macs_gemm"] == 3888 + 720
    assert feats["bytes_activations"] == sum(c.activation_bytes for c in costs if c.op_class != "data_movement")


def test_not_a_tflite_file(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ConversionError, match="not a valid TFLite flatbuffer"):
        estimate.op_costs(bad)
    with pytest.raises(ConversionError, match="not found"):
        estimate.op_costs(tmp_path / "missing.tflite")


def test_nnls_recovers_exact_coefficients_and_never_goes_negative():
    rows = [[10.0, 1.0], [20.0, 5.0], [5.0, 3.0]]
    y = [2 * a + 7 * b for a, b in rows]
    assert np.allclose(estimate._nnls(rows, y), [2, 7])
    y_neg = [2 * a - 1 * b for a, b in rows]
    assert all(c >= 0 for c in estimate._nnls(rows, y_neg))


# ------------------------------------------------------------------------------- calibration


def test_calibration_file_is_complete_and_sourced():
    cal = estimate.load_calibration()
    assert tuple(cal.features) == estimate.FEATURES
    for name, s in cal.sets.items():
        for m in s.measurements:
            assert m.source.cite().startswith("github:") or m.source.url, (name, m.model)
            assert m.source.quote, (name, m.model)
            assert cal.models[m.model].features, m.model
        fit = estimate.fit_set(name, cal)
        assert fit.n_points == len(s.measurements) >= 2
        assert all(v >= 0 for v in fit.coefficients.values())
        # a stated leave-one-out error needs a fit without that point to keep a degree of freedom
        assert (fit.loo_median_abs_pct_error is not None) is (fit.n_points - 1 - len(fit.coefficients) >= 1)
        rng = fit.range
        assert rng["op_kinds"] and rng["macs_gemm"][0] <= rng["macs_gemm"][1], name
    # every built-in profile's calibration set exists
    for t in ("cortex-m4", "cortex-m7", "rpi4", "rpi-zero2", "mobile"):
        p = load_target(t)
        assert p.calibration is None or p.calibration in cal.sets


def test_readme_states_the_current_loo_errors():
    text = (ROOT / "docs" / "targets.md").read_text()
    section = text.split("## Latency estimates", 1)[1].split("\n## ", 1)[0]
    for name in estimate.load_calibration().sets:
        fit = estimate.fit_set(name)
        row = next(ln for ln in section.splitlines() if f"`{name}`" in ln)
        if fit.loo_meaningful:
            assert f"{fit.loo_median_abs_pct_error:.0f} %" in row, (name, row)
            assert f"{fit.loo_max_abs_pct_error:.0f} %" in row, (name, row)
        else:
            assert "none (no degree of freedom)" in row, (name, row)


@pytest.mark.slow  # converts the four models at their reference sizes (the default suite checks the
                  # estimate's arithmetic on a hand-built model and the README's stated errors)
def test_mlperf_models_on_cortex_m4_within_the_stated_error(mlperf_models):
    """The four zoo models, converted here, against the published Nucleo-L4R5ZI latencies."""
    profile = load_target("cortex-m4")
    cal = estimate.load_calibration()
    fit = estimate.fit_set(profile.calibration, cal)
    stated = fit.loo_max_abs_pct_error
    rows = []
    for name, path in mlperf_models.items():
        est = estimate.estimate_model(path, profile)
        match = est["calibration_match"]
        assert match is not None and match["model"] == name, name
        published = match["published_ms"]
        err = 100 * (est["latency_estimate_ms"] - published) / published
        loo = next(r for r in fit.loo if r["model"] == name)
        assert match["loo_estimate_ms"] == loo["loo_estimate_ms"]
        assert abs(err) <= stated, (name, err, stated)
        assert abs(match["loo_pct_error"]) <= stated
        assert est["features"] == cal.models[name].features, name
        rows.append(f"{name:18s} published {published:8.3f} ms  estimate {est['latency_estimate_ms']:8.3f} ms "
                    f"({err:+.0f} %)  leave-one-out {match['loo_estimate_ms']:8.3f} ms ({match['loo_pct_error']:+.0f} %)")
    print(f"\ncortex-m4 (stated error: LOO median {fit.loo_median_abs_pct_error} %, max {stated} %)")
    print("\n".join(rows))


def test_estimate_basis_and_per_op_add_up(hand_model):
    est = estimate.estimate_model(hand_model[0], load_target("cortex-m4"))
    basis = est["estimate_basis"]
    assert basis["core"] == "cortex-m4" and basis["clock_mhz"] == 120 and basis["kernels"] == "cmsis-nn"
    assert basis["fit"]["n_points"] == 4 and basis["fit"]["loo_median_abs_pct_error"] > 0
    assert all("mlcommons/tiny_results_v0.5" in s for s in basis["sources"])
    assert est["macs"] == 3888 + 1296 + 720 and est["calibration_match"] is None
    assert sum(o["estimate_ms"] for o in est["per_op"]) == pytest.approx(est["latency_estimate_ms"], rel=1e-3)
    json.dumps(est)  # JSON-ready


def test_clock_scaling_and_mismatch_notes(hand_model):
    base = load_target("cortex-m4")
    slow = base.model_copy(update={"clock_mhz": 60.0, "kernels": "tflm-reference"})
    a = estimate.estimate_model(hand_model[0], base)["latency_estimate_ms"]
    b = estimate.estimate_model(hand_model[0], slow)
    assert b["latency_estimate_ms"] == pytest.approx(2 * a, rel=1e-3)
    assert any("clock-scaled" in n for n in b["notes"])
    assert any("kernels are tflm-reference" in n for n in b["notes"])


def test_uncalibrated_target_gives_null_with_a_reason(hand_model):
    for target, nearest in (("cortex-m7", "nucleo-h7a3zi-q-x-cube-ai-8.1"), ("rpi-zero2", "rpi3bplus-armv7-xnnpack"),
                            ("mobile", None)):
        est = estimate.estimate_model(hand_model[0], load_target(target))
        assert est["latency_estimate_ms"] is None
        assert "no published latency measurement" in est["reason"]
        assert est["macs"] == 3888 + 1296 + 720   # the cost model is still there
        if nearest:
            assert nearest in est["reason"]


def test_float_model_is_not_estimated(hand_model):
    est = estimate.estimate_model(hand_model[1], load_target("cortex-m4"))
    assert est["latency_estimate_ms"] is None
    assert "FLOAT32" in est["reason"] and "int8" in est["reason"]


def test_unknown_calibration_set(hand_model):
    p = TargetProfile(name="x", kind="mcu", calibration="nucleo-l4r5zi-tflm-2.3")
    with pytest.raises(RecipeError, match="did you mean 'nucleo-l4r5zi-tflm-2.3.1'"):
        estimate.estimate_model(hand_model[0], p)


def test_calibration_sets_are_keyed_by_board_and_runtime(tmp_path):
    cal = estimate.load_calibration()
    keys = [s.key for s in cal.sets.values()]
    assert len(keys) == len(set(keys))
    # the same board with two runtimes is two sets: Nucleo-L4R5ZI with TFLite Micro, X-CUBE-AI, microTVM
    nucleo = {s.runtime for s in cal.sets.values() if s.key[0].startswith("ST Nucleo-L4R5ZI")}
    assert {"tflite_micro", "x-cube-ai", "microtvm"} <= nucleo
    text = estimate.CALIBRATION_PATH.read_text()
    # the EK-RA6M4 set (TFLite Micro, CMSIS-NN) renamed to the Nucleo board of the TFLM 2.3.1 set
    dup = text.replace("  ek-ra6m4-tflm-cmsis-nn:\n    board: Renesas EK-RA6M4 (R7FA6M4AF3CFB), MLPerf Tiny v0.7",
                       "  ek-ra6m4-tflm-cmsis-nn:\n    board: ST Nucleo-L4R5ZI (STM32L4R5ZI), another submission", 1)
    path = tmp_path / "dup.yaml"
    path.write_text(dup)
    with pytest.raises(RecipeError, match="the same board and runtime"):
        estimate.load_calibration(path)


def test_malformed_calibration_file(tmp_path):
    bad = tmp_path / "cal.yaml"
    bad.write_text("schema: x\nfeatures: [macs_gemm, bytes_activations]\nsets:\n  b:\n    board: b\n"
                   "    core: c\n    clock_mhz: 0\n    kernels: k\n    runtime: r\n    software: s\n"
                   "    measurements: [{model: m, latency_ms: 1, source: {url: u}}]\nmodels: {}\n")
    with pytest.raises(RecipeError) as e:
        estimate.load_calibration(bad)
    assert "sets.b.clock_mhz" in str(e.value)


# ------------------------------------------------------------------------------- CLI


def test_cli_estimate_json(hand_model):
    from edgekit.cli import main

    res = CliRunner().invoke(main, ["estimate", str(hand_model[0]), "--target", "cortex-m4", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["schema"] == "edgekit.estimate/1" and out["latency_estimate_ms"] > 0
    res = CliRunner().invoke(main, ["estimate", str(hand_model[0]), "--target", "cortex-m4", "--target",
                                    "cortex-m7", "--json"], catch_exceptions=False)
    both = json.loads(res.stdout)
    assert [r["target"] for r in both] == ["cortex-m4", "cortex-m7"] and both[1]["latency_estimate_ms"] is None
    res = CliRunner().invoke(main, ["estimate", str(hand_model[0]), "--target", "cortex-m4", "--per-op"],
                             catch_exceptions=False)
    assert res.exit_code == 0 and "ms estimated" in res.output and "DEPTHWISE_CONV_2D" in res.output
    assert re.search(r"leave-one-out median [\d.]+ %", res.output)
    res = CliRunner().invoke(main, ["estimate", str(hand_model[0]), "--target", "cortex-m9"])
    assert res.exit_code == 2 and "did you mean" in res.output


def test_cli_estimate_imports_no_tensorflow(hand_model):
    code = ("import sys; from click.testing import CliRunner; from edgekit.cli import main;"
            f"r = CliRunner().invoke(main, ['estimate', {str(hand_model[0])!r}, '--target', 'cortex-m4', '--json']);"
            "assert r.exit_code == 0, r.output;"
            "print(sorted(m for m in ('tensorflow', 'tf_keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_bench_estimate_prints_the_loo_table():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_estimate.py"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    results = {r["set"]: r for r in got["sets"]}
    assert set(results) == set(estimate.load_calibration().sets)
    m4 = results["nucleo-l4r5zi-tflm-2.3.1"]
    assert m4["loo_median_abs_pct_error"] == estimate.fit_set("nucleo-l4r5zi-tflm-2.3.1").loo_median_abs_pct_error
    assert m4["runtime"] == "tflite_micro" and m4["loo_meaningful"] is True
    assert got["band"] == estimate.error_band()
    table = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_estimate.py")],
                           capture_output=True, text=True, timeout=120).stdout
    # every set prints its leave-one-out line: the error, or why none is stated
    assert table.count("LOO |error|:") == len(results)
    rpi4 = table.split("## rpi4-arm64-xnnpack")[1].split("\n## ")[0]
    assert "leave-one-out ms" in rpi4 and "mobilenet_v2_224" in rpi4
    assert "LOO |error|: none stated: 2 points for 2 coefficients" in rpi4
    assert "Error band:" in table and ("no error band" in table or "Stated band" in table)


def test_two_point_fit_states_no_loo_error_and_no_band(hand_model):
    """rpi4's set: two published models, two coefficients. A leave-one-out fit has one point for two
    unknowns, so no error is stated, and no band."""
    fit = estimate.fit_set("rpi4-arm64-xnnpack")
    assert fit.n_points == 2 and fit.degrees_of_freedom == 0 and not fit.loo_meaningful
    assert fit.loo_median_abs_pct_error is None and fit.loo_max_abs_pct_error is None
    assert "no degree of freedom" in fit.loo_note
    est = estimate.estimate_model(hand_model[0], load_target("rpi4"))
    f = est["estimate_basis"]["fit"]
    assert f["band"] is None and "no degree of freedom" in f["band_note"]
    assert f["fixed_costs"]["fitted"] is False and "cannot identify" in f["fixed_costs"]["note"]


def test_a_model_far_smaller_than_the_calibration_set_is_flagged(hand_model):
    """The hand model (5,904 MACs) against rpi4 (MobileNets of 280-551 M GEMM MACs) and cortex-m4
    (MLPerf Tiny models from 264 k): the estimate is given but flagged, with why."""
    for target in ("rpi4", "cortex-m4"):
        est = estimate.estimate_model(hand_model[0], load_target(target))
        assert est["latency_estimate_ms"] is not None
        assert est["estimate_in_range"] is False, target
        assert "GEMM MACs" in est["estimate_range_reason"] and "below" in est["estimate_range_reason"]


def test_a_calibration_model_lies_inside_its_set(zoo_int8):
    """DS-CNN at its reference shape (the session's zoo_int8 converts it there) is one of the
    cortex-m4 calibration points: its estimate is inside the set's range. The other three at their
    reference sizes: the slow test below."""
    zoo = zoo_int8["ds_cnn"]
    assert (zoo.input_shape, zoo.classes) == MLPERF["ds_cnn"]
    est = estimate.estimate_model(zoo.full_int8, load_target("cortex-m4"))
    assert est["estimate_in_range"] is True, est["estimate_range_reason"]
    assert est["calibration_match"] is not None and est["calibration_match"]["model"] == "ds_cnn"


@pytest.mark.slow  # converts the four models at their reference sizes
def test_every_calibration_model_lies_inside_its_set(mlperf_models):
    profile = load_target("cortex-m4")
    for name, path in mlperf_models.items():
        est = estimate.estimate_model(path, profile)
        assert est["estimate_in_range"] is True, (name, est["estimate_range_reason"])


def test_range_check_names_every_reason():
    rng = {"macs_gemm": [1000, 2000], "bytes_activations": [100, 200], "max_tensor_bytes": [10, 50],
           "op_kinds": ["CONV_2D", "FULLY_CONNECTED", "RESHAPE"], "factor": 2.0}
    inside = {"features": {"macs_gemm": 600, "bytes_activations": 390}, "max_tensor_bytes": 100,
              "op_kinds": ["CONV_2D", "QUANTIZE"]}  # data movement (QUANTIZE) is not priced: no reason
    assert estimate.out_of_range(inside, rng) == []
    outside = {"features": {"macs_gemm": 499, "bytes_activations": 401}, "max_tensor_bytes": 101,
               "op_kinds": ["CONV_2D", "MAX_POOL_2D"]}
    why = estimate.out_of_range(outside, rng)
    assert len(why) == 4 and "MAX_POOL_2D" in why[3] and "below 500" in why[0] and "above 400" in why[1]
    assert "above 100 B" in why[2]


def test_error_band_is_stated_only_where_held_out_points_support_it():
    band = estimate.error_band()
    pooled = [abs(r["pct_error"]) for n in band["sets"] for r in estimate.fit_set(n).loo]
    assert band["held_out"] == len(pooled)
    assert "rpi4-arm64-xnnpack" not in band["sets"]  # no meaningful held-out point
    if band["pct"] is None:
        assert band["held_out"] < estimate.BAND_MIN_POINTS or band["coverage"] < estimate.BAND_COVERAGE
        assert band["note"].startswith("no error band")
    else:
        assert band["held_out"] >= 20 and band["coverage"] >= 0.9
