"""Look-up-table weight compression for TFLite Micro (edgekit.weight_lut): the clustering, the
file tflite-micro's compressor writes, and the mcu target with ``convert.mcu_weight_bits``."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import convert, weight_lut
from edgekit.data import Dataset
from edgekit.recipe import ConvertConfig, load_target


def _micro_outputs(blob: bytes, x: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(blob, arena_size=1 << 20)
    out = []
    for sample in x:
        it.set_input(sample[None], 0)
        it.invoke()
        out.append(it.get_output(0).copy())
    return np.concatenate(out)


def test_cluster_keeps_at_most_k_values_each_the_nearest_level():
    rng = np.random.default_rng(0)
    w = np.clip(np.round(rng.normal(0, 40, 500)), -127, 127).astype(np.int8)
    c = weight_lut.cluster(w, 16)
    levels = np.unique(c)
    assert c.dtype == np.int8 and c.shape == w.shape and len(levels) <= 16
    assert np.array_equal(np.abs(w[:, None].astype(int) - levels[None, :]).min(axis=1), np.abs(w.astype(int) - c))
    uniform = np.round(np.linspace(w.min(), w.max(), 16))  # 16 evenly spaced levels over the range
    nearest = uniform[np.abs(w[:, None] - uniform[None, :]).argmin(axis=1)]
    assert np.mean((w - c.astype(float)) ** 2) < np.mean((w - nearest) ** 2)  # k-means: less error on this bell
    assert np.array_equal(weight_lut.cluster(w, 16), c)  # deterministic
    few = np.array([3, -5, 3, 7], np.int8)
    assert np.array_equal(weight_lut.cluster(few, 4), few)  # already at most k values: unchanged


@pytest.fixture(scope="module")
def resnet8_int8():
    from edgekit.models import create_model

    model = create_model("resnet8", input_shape=(16, 16, 3), num_classes=10, width=1.0, seed=0)
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)

    def rep():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return convert.to_tflite(model, mode="full-int8", rep=rep, signature=False, batch=1)


def test_compressed_file_is_smaller_decodes_exactly_and_costs_arena(resnet8_int8, tmp_path):
    """ResNet-8's 3x3 convolutions (144-576 weights per channel) at 4 bits: the file shrinks; in
    TFLite Micro the compressed file computes exactly what the clustered weights stored plainly
    compute; every compressed tensor holds at most 16 values per channel; the decoded weights
    make the arena larger (measured, both)."""
    from edgekit import mcu
    from edgekit.tflite_file import read, tensor_data

    compressed, plain, info = weight_lut.compress(resnet8_int8, 4)
    assert info["applied"] and info["tensors"] and info["size_bytes_after"] == len(compressed)
    assert len(compressed) < 0.8 * len(resnet8_int8)
    assert "CUSTOM:TFLM_DECODE" in read(compressed).ops and "CUSTOM:TFLM_DECODE" not in read(plain).ops
    x = np.random.default_rng(1).integers(-128, 128, (4, 16, 16, 3)).astype(np.int8)
    np.testing.assert_array_equal(_micro_outputs(compressed, x), _micro_outputs(plain, x))
    assert not np.array_equal(_micro_outputs(plain, x), _micro_outputs(resnet8_int8, x))  # the weights changed
    sg = read(plain).subgraphs[0]
    names = {t["name"] for t in info["tensors"]}
    tensors = [t for t in sg.tensors if t.name in names]
    for t in tensors:
        w = np.frombuffer(tensor_data(plain, [t.index])[t.index], np.int8).reshape(t.shape)
        per = [len(np.unique(np.take(w, c, axis=t.quantized_dimension))) for c in range(w.shape[t.quantized_dimension])]
        assert max(per) <= 16, t.name
    arenas = []
    for name, blob in (("plain", resnet8_int8), ("lut", compressed)):
        (tmp_path / f"{name}.tflite").write_bytes(blob)
        arenas.append(mcu.measure_arena(tmp_path / f"{name}.tflite").min_bytes)
    print(f"resnet8 16x16: {len(resnet8_int8)} -> {len(compressed)} B, arena {arenas[0]} -> {arenas[1]} B")
    assert arenas[1] > arenas[0]


def test_small_tensors_are_left_plain():
    """cnn_tiny at 4 bits: its tables would save less than a quarter of any tensor's bytes; the
    file comes back as it was, with the reason."""
    from edgekit.models import create_model

    model = create_model("cnn_tiny", input_shape=(8, 8, 1), num_classes=10, width=1.0, seed=0)
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    blob = convert.to_tflite(model, mode="full-int8", rep=lambda: ([x[i : i + 1]] for i in range(4)),
                             signature=False, batch=1)
    compressed, plain, info = weight_lut.compress(blob, 4)
    assert compressed == blob == plain and not info["applied"] and "quarter" in info["reason"]
    with pytest.raises(ValueError, match="1..7"):
        weight_lut.compress(blob, 8)


def test_mcu_target_ships_the_compressed_model_with_decode_registered(digits_small, tiny_models, tmp_path):
    """cortex-m4 with ``mcu_weight_bits: 2``: model_int8.tflite has DECODE ops, op_resolver.h
    registers the kernel, the arena is measured on that file, the evaluator runs it in TFLite
    Micro, and the per-layer error is measured on the plainly stored twin (and says so)."""
    from edgekit.fitting import load_model
    from edgekit.tflite_file import read

    x_tr, y_tr, x_te, y_te = digits_small
    data = Dataset("digits", x_tr, y_tr, x_tr[:0], y_tr[:0], x_te, y_te, 10)
    cfg = ConvertConfig(representative_samples=50, mcu_weight_bits=2)
    out = tmp_path / "targets" / "cortex-m4"
    res = convert.convert_target(load_target("cortex-m4"), {"float": load_model(tiny_models.keras_path), "qat": None},
                                 data, cfg, out, seed=0, eval_npz=tiny_models.eval_npz)
    art = res.artifacts[0]
    lut = art.extra["weight_lut"]
    assert lut["applied"] and lut["size_bytes_after"] == art.path.stat().st_size < lut["size_bytes_before"]
    assert "CUSTOM:TFLM_DECODE" in read(art.path).ops and "CUSTOM:TFLM_DECODE" in art.extra["ops"]
    assert "AddDecode()" in (out / "op_resolver.h").read_text()
    assert art.extra["per_layer_error"]["measured_on"].startswith("the same clustered weights")
    assert not list(out.glob("*plain_weights*"))
    from edgekit import evaluate
    from edgekit.recipe import EvaluateConfig

    got = evaluate.run_evaluator(art.path, tiny_models.eval_npz, runtime="tflite_micro",
                                 cfg=EvaluateConfig(warmup=1, runs=3), arena_bytes=art.extra["arena"]["recommended_bytes"])
    assert got["accuracy"] is not None and got["accuracy"] > 0.5
    # eval --compare: the file runs in TFLite Micro; LiteRT cannot load it, which is noted, not an error
    from edgekit.parity.variants import _target_variants

    (v,) = _target_variants(tmp_path, {}, x_te[:20], y_te[:20], tmp_path)
    assert v.error is None and v.outputs.shape == (20, 10) and v.runtime == "tflite_micro"
    assert "error" in v.extra["litert_same_file"]


def test_report_says_what_the_tables_did_or_why_there_are_none():
    from edgekit.report import view

    lut = {"method": "lut", "index_bits": 4, "tensors": [{"name": "w", "weights": 4096, "bits": 4, "channels": 8}],
           "size_bytes_before": 91512, "size_bytes_after": 62288, "applied": True}
    report = {"targets": [{"name": "cortex-m4", "arena_bytes": 61088, "weight_lut": lut},
                          {"name": "m7", "weight_lut": {**lut, "applied": False, "reason": "too small"}},
                          {"name": "mobile"}]}
    notes = view.weight_lut_notes(report)
    assert len(notes) == 2
    assert "1 weight tensor(s)" in notes[0] and "89.4 KiB → 60.8 KiB" in notes[0] and "59.7 KiB" in notes[0]
    assert notes[1] == "m7: weights stored plainly, not as look-up tables: too small"


@pytest.mark.slow  # the tool in its own process
def test_bench_tool_prints_plain_and_table_rows_side_by_side():
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parent.parent / "tools" / "bench_weight_lut.py"
    proc = subprocess.run([sys.executable, str(tool), "--models", "cnn_tiny", "--bits", "2"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln.split(" | ") for ln in proc.stdout.splitlines() if ln.startswith("| cnn_tiny")]
    assert [r[1] for r in rows] == ["plain int8", "2-bit tables"]
    plain, lut = (int(r[2].replace(",", "")) for r in rows)
    assert lut < plain and rows[1][-1].startswith("yes")
