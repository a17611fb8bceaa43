"""edgekit.convert per target kind, the budget check on converted models, and the CLI's exit 6.

Tolerances: ONNX Runtime vs Keras argmax agreement >= 0.99 (convert.ONNX_MIN_AGREEMENT; the
tiny digits CNN reaches 1.0); the Pi bundle's accuracy equals the host evaluator's exactly
(same file, same runtime, same data).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit import convert, evaluate
from edgekit.cli import main
from edgekit.data import Dataset
from edgekit.errors import ConversionError
from edgekit.recipe import Budget, ConvertConfig, EvaluateConfig, load_target

FAST_EVAL = EvaluateConfig(warmup=1, runs=3)
CFG = ConvertConfig(representative_samples=50)

TINY_PROFILE = """\
name: tiny-flash
kind: mobile
board: "a board with 1000 bytes of flash"
runtime: ai_edge_litert
formats: [tflite-int8]
budget: {flash_bytes: 1000}
"""


@pytest.fixture(scope="module")
def data(digits_small) -> Dataset:
    x_tr, y_tr, x_te, y_te = digits_small
    return Dataset("digits", x_tr, y_tr, x_tr[:0], y_tr[:0], x_te, y_te, 10)


@pytest.fixture(scope="module")
def float_model(tiny_models):
    from edgekit.fitting import load_model

    return load_model(tiny_models.keras_path)


def _convert(profile, model, data, out_dir, eval_npz):
    return convert.convert_target(profile, {"float": model, "qat": None}, data, CFG, out_dir,
                                  seed=0, eval_npz=eval_npz)


def _with_unsupported_op(op: str):
    """A digits-shaped tf_keras model whose last layer needs ``op``: ``topk`` converts to int8
    as TOPK_V2 (no TFLM kernel); ``cumprod`` has no TFLite builtin at all."""
    from edgekit._tf import keras, tf

    k, t = keras(), tf()
    fn = {"topk": lambda v: t.math.top_k(v, k=10).values,
          "cumprod": lambda v: t.math.cumprod(v, axis=1)}[op]
    inp = k.layers.Input((8, 8, 1))
    h = k.layers.Dense(10)(k.layers.Flatten()(inp))
    return k.Model(inp, k.layers.Lambda(fn)(h))


# ------------------------------------------------------------------------------ mobile/ONNX


@pytest.fixture(scope="module")
def mobile(tmp_path_factory, float_model, data, tiny_models):
    out = tmp_path_factory.mktemp("mobile") / "targets" / "mobile"
    return _convert(load_target("mobile"), float_model, data, out, tiny_models.eval_npz)


def test_mobile_writes_three_formats_and_onnx_agrees_with_keras(mobile, data):
    assert [a.format for a in mobile.artifacts] == ["tflite-int8", "tflite-fp16", "onnx"]
    assert sorted(p.name for p in mobile.artifacts[0].path.parent.iterdir()) == \
        ["model.onnx", "model_fp16.tflite", "model_int8.tflite"]  # no temp files
    onnx = mobile.artifacts[2]
    assert onnx.runtime == "onnxruntime"
    agreement = onnx.extra["onnx_agreement_with_keras"]
    print(f"\nONNX Runtime vs Keras argmax agreement: {agreement:.4f} on "
          f"{onnx.extra['onnx_samples']} test samples, max abs diff {onnx.extra['onnx_max_abs_diff']:.2e}")
    assert agreement >= convert.ONNX_MIN_AGREEMENT
    assert onnx.extra["onnx_samples"] == len(data.x_test)
    assert onnx.extra["onnx_max_abs_diff"] < 1e-3  # float32 vs float32: only rounding


def test_onnx_agreement_reaches_the_report_entry(mobile, tiny_models):
    entry = evaluate.evaluate_target(mobile, tiny_models.eval_npz, FAST_EVAL)
    onnx = next(v for v in entry["variants"] if v["format"] == "onnx")
    assert onnx["onnx_agreement_with_keras"] == mobile.artifacts[2].extra["onnx_agreement_with_keras"]
    assert onnx["accuracy"] == pytest.approx(float(np.mean(tiny_models.keras_pred == tiny_models.y_test)),
                                             abs=1e-9)  # same predictions as Keras: same accuracy


def test_onnx_that_disagrees_with_keras_is_refused_and_not_written(float_model, data, tmp_path,
                                                                    monkeypatch):
    from edgekit._tf import keras

    other = keras().models.clone_model(float_model)  # same graph, fresh random weights
    wrong = convert.onnx_bytes(other)
    monkeypatch.setattr(convert, "onnx_bytes", lambda model: wrong)
    with pytest.raises(ConversionError, match=r"argmax agreement 0\.\d+ on 359 test samples < 0\.99"):
        convert.to_onnx(float_model, tmp_path / "model.onnx", x_check=data.x_test)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ over budget


def test_check_budget_names_the_numbers_and_the_budget():
    b = Budget(flash_bytes=1000, ram_bytes=2048, latency_ms=5)
    res = evaluate.check_budget({"size_bytes": 6240, "arena_bytes": 4096, "measured_on": "host-x86_64",
                                 "latency_ms": {"p50": 0.1}}, b, "mcu")
    assert res["ok"] is False
    assert res["violations"] == ["flash: model 6240 bytes > budget 1000 bytes",
                                 "ram: arena 4096 bytes > budget 2048 bytes"]
    assert res["unchecked"] == ["latency_ms: measured on host-x86_64, not on the device, and no estimate"]
    est = evaluate.check_budget({"size_bytes": 10, "measured_on": "host-x86_64", "latency_ms": {"p50": 0.01},
                                 "latency_estimate_ms": 250.0, "estimate_basis": {"board": "B"}}, b, "mcu")
    assert est["latency_basis"] == "estimate" and est["unchecked"] == ["ram_bytes: not measured"]
    assert est["ok"] is False and est["violations"][-1].startswith("latency: estimated 250 ms > budget 5")
    ok = evaluate.check_budget({"size_bytes": 999, "rss_growth_bytes": None}, b, "rpi")
    assert ok["ok"] is True and ok["violations"] == []
    assert "ram_bytes: not measured" in ok["unchecked"]
    assert "flash_bytes: model size not measured" in \
        evaluate.check_budget({}, Budget(flash_bytes=1), "mobile")["unchecked"]


def test_target_over_a_tiny_flash_budget_is_reported(tmp_path, float_model, data, tiny_models):
    path = tmp_path / "tiny-flash.yaml"
    path.write_text(TINY_PROFILE)
    profile = load_target(str(path))
    assert profile.budget.flash_bytes == 1000
    arts = _convert(profile, float_model, data, tmp_path / "targets" / profile.name, tiny_models.eval_npz)
    entry = evaluate.evaluate_target(arts, tiny_models.eval_npz, FAST_EVAL)
    size = arts.artifacts[0].path.stat().st_size
    assert entry["size_bytes"] == size > 1000
    assert entry["budget"]["ok"] is False
    assert entry["budget"]["violations"] == [f"flash: model {size} bytes > budget 1000 bytes"]


def test_cli_run_over_budget_exits_6_and_no_budget_exits_0(finished_run, tmp_path, monkeypatch):
    """The session's finished run, its recipe pointed at a 1000-byte board: the trained stages are
    reused, the new target is converted, measured and over budget."""
    from conftest import TINY_RECIPE, copy_run

    run = copy_run(finished_run, tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny-flash.yaml").write_text(TINY_PROFILE)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TINY_RECIPE.replace("targets: [mobile, rpi4, cortex-m4]", "targets: [profiles/tiny-flash.yaml]"))
    out = run.out
    runner = CliRunner()
    monkeypatch.chdir(tmp_path / "profiles")  # the profile path resolves against the recipe's folder
    res = runner.invoke(main, ["run", str(recipe), "--out", str(out), "--resume"], catch_exceptions=False)
    assert res.exit_code == 6, res.output
    report = json.loads((out / "report.json").read_text())
    assert [t["name"] for t in report["targets"]] == ["tiny-flash"]
    size = report["targets"][0]["size_bytes"]
    assert f"over budget: tiny-flash: flash: model {size} bytes > budget 1000 bytes" in res.output
    assert "OVER BUDGET" in res.output
    assert "up to date, reused (teacher, student, pruned, qat" in res.output  # nothing is trained again
    res = runner.invoke(main, ["run", str(recipe), "--out", str(out), "--resume", "--no-budget"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "over budget:" not in res.output and "OVER BUDGET" in res.output


# ------------------------------------------------------------------------------------- MCU


@pytest.mark.parametrize("op, named", [("topk", "TOPK_V2"), ("cumprod", "Cumprod")])
def test_mcu_op_without_kernel_fails_before_any_file_is_written(op, named, data, tmp_path,
                                                                 tiny_models):
    out = tmp_path / "targets" / "cortex-m4"
    with pytest.raises(ConversionError, match=named) as err:
        _convert(load_target("cortex-m4"), _with_unsupported_op(op), data, out, tiny_models.eval_npz)
    print(f"\n{op}: {err.value}"[:300])
    assert not out.exists()  # nothing: no model_int8.tflite, model_data.cc, op_resolver.h
    # a folder that existed keeps exactly what it held
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match=named):
        _convert(load_target("cortex-m4"), _with_unsupported_op(op), data, out, tiny_models.eval_npz)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_mcu_failure_after_writing_removes_the_partial_target(float_model, data, tmp_path,
                                                              tiny_models, monkeypatch):
    from edgekit import mcu

    def fail(path, **kw):
        assert Path(path).is_file()  # the model was written before the arena is measured
        raise ConversionError("model does not run in TFLite Micro (simulated)")

    monkeypatch.setattr(mcu, "measure_arena", fail)
    out = tmp_path / "targets" / "cortex-m4"
    with pytest.raises(ConversionError, match="simulated"):
        _convert(load_target("cortex-m4"), float_model, data, out, tiny_models.eval_npz)
    assert not out.exists()


# ------------------------------------------------------------------------------- Pi bundle


def test_rpi_bundle_is_self_contained(float_model, data, tmp_path, tiny_models):
    arts = _convert(load_target("rpi4"), float_model, data, tmp_path / "targets" / "rpi4",
                    tiny_models.eval_npz)
    bundle = tmp_path / "targets" / "rpi4" / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == \
        ["eval.npz", "evaluate.py", "model.tflite", "requirements.txt", "run.sh"]
    req = (bundle / "requirements.txt").read_text()
    assert "ai-edge-litert==" in req and "numpy" in req
    imports = [ln for ln in (bundle / "evaluate.py").read_text().splitlines()
               if ln.lstrip().startswith(("import ", "from "))]
    assert imports and not any("edgekit" in ln for ln in imports)
    want = evaluate.run_evaluator(arts.artifacts[0].path, tiny_models.eval_npz, runtime="ai_edge_litert",
                                  cfg=FAST_EVAL)  # the original model, measured on the host

    copy = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(bundle, copy)
    shutil.rmtree(tmp_path / "targets")  # nothing outside the copy is needed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["sh", "run.sh", "--runs", "3", "--warmup", "1"], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["latency_ms"]["p50"] > 0
    assert got["accuracy"] == want["accuracy"]
    assert got["agreement_with_float"] == want["agreement_with_float"]
    assert got["size_bytes"] == want["size_bytes"]


def test_a_mode_that_two_targets_ship_is_converted_once_per_run(float_model, data, tmp_path, tiny_models,
                                                                  monkeypatch):
    """rpi4 and a phone both ship tflite-int8: with the run's shared cache the second target takes
    the first one's bytes (the very bytes a conversion of its own makes); another mode, another
    model object or another cache converts again."""
    from edgekit.fitting import load_model

    calls = []
    real = convert.to_tflite

    def counting(model, *, mode, rep=None, signature=True, batch=None):
        calls.append(mode)
        return real(model, mode=mode, rep=rep, signature=signature, batch=batch)

    monkeypatch.setattr(convert, "to_tflite", counting)
    phone = tmp_path / "phone.yaml"
    phone.write_text("name: phone\nkind: mobile\nformats: [tflite-int8, tflite-fp16]\n")
    cache: dict = {}
    models = {"float": float_model, "qat": None}

    def run(profile, where, cache, models=models):
        return convert.convert_target(profile, models, data, CFG, tmp_path / where, seed=0,
                                      eval_npz=tiny_models.eval_npz, tflite_cache=cache)

    pi = run(load_target("rpi4"), "a/rpi4", cache)
    ph = run(load_target(str(phone)), "a/phone", cache)
    assert calls == ["int8", "fp16"]
    blob = (tmp_path / "a/rpi4/model_int8.tflite").read_bytes()
    assert (tmp_path / "a/phone/model_int8.tflite").read_bytes() == blob
    assert [a.format for a in pi.artifacts] == ["tflite-int8"]
    assert [a.format for a in ph.artifacts] == ["tflite-int8", "tflite-fp16"]
    run(load_target("rpi4"), "b/rpi4", {})  # a run of its own: converts, and makes the same bytes
    assert calls == ["int8", "fp16", "int8"] and (tmp_path / "b/rpi4/model_int8.tflite").read_bytes() == blob
    run(load_target("rpi4"), "c/rpi4", cache, {"float": load_model(tiny_models.keras_path), "qat": None})
    assert calls == ["int8", "fp16", "int8", "int8"]  # another model object: never the cached bytes


# ------------------------------------------------------------------------------ post-training modes


def test_ptq_variants_are_written_measured_and_smaller(float_model, data, tmp_path, tiny_models):
    """Dynamic-range, fp16 and int16x8 post-training variants beside the int8 model; each runs in
    LiteRT and agrees with the float model on >= 95 % of the test digits."""
    from edgekit.evaluate import evaluate_target
    from edgekit.recipe import ConvertConfig, EvaluateConfig

    cfg = ConvertConfig(representative_samples=50, ptq=["dynamic", "fp16", "int16x8"])
    arts = convert.convert_target(load_target("rpi4"), {"float": float_model, "qat": None}, data, cfg,
                                  tmp_path / "rpi4", seed=0, eval_npz=tiny_models.eval_npz)
    assert [a.format for a in arts.artifacts] == ["tflite-int8", "tflite-dynamic", "tflite-fp16", "tflite-int16x8"]
    entry = evaluate_target(arts, tiny_models.eval_npz, EvaluateConfig(warmup=1, runs=3))
    float_size = tiny_models.float_tflite.stat().st_size
    for v in [entry, *entry["variants"]]:
        assert v["agreement_with_float"] >= 0.95, v["format"]
        assert v["size_bytes"] < float_size, v["format"]
    int16 = next(v for v in entry["variants"] if v["format"] == "tflite-int16x8")
    assert int16["accuracy"] >= entry["accuracy"] - 0.02


def test_a_runtime_missing_on_the_host_is_replaced_and_said():
    from edgekit.evaluate import host_runtime

    assert host_runtime("ai_edge_litert") == ("ai_edge_litert", None)
    assert host_runtime("tflite_micro") == ("tflite_micro", None)
    import importlib.util

    if importlib.util.find_spec("tflite_runtime") is None:
        runtime, note = host_runtime("tflite_runtime")
        assert runtime == "ai_edge_litert" and "tflite_runtime is not installed on this host" in note


@pytest.mark.parametrize("name,qat,modes", [
    pytest.param("resnet8", False, ["float32", "fp16", "int8", "int16x8", "full-int16x8"], marks=pytest.mark.slow),
    ("cnn_tiny", True, ["int8", "full-int8"])], ids=["resnet8", "cnn_tiny-qat"])
def test_frozen_graph_conversion_is_the_savedmodel_conversion(name, qat, modes, tmp_path):
    """``to_tflite`` converts the traced inference call as a frozen graph (and writes the signature
    itself) instead of lowering the model through a SavedModel (``from_keras_model``): per mode
    (the mobile/rpi ones and TFLite Micro's), the very same ops, quantization and outputs, the same
    signature and I/O tensor names as the SavedModel way, on a residual zoo model and a QAT
    model; ``signature=False`` only lacks the signature def."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit._tf import tf
    from edgekit.models import create_model
    from edgekit.ondevice.evaluate import predict_outputs
    from edgekit.quantize import apply_qat
    from edgekit.tflite_file import read

    model = create_model(name, input_shape=(8, 8, 3), num_classes=4, seed=0, width=0.25)
    x = np.random.default_rng(0).random((6, 8, 8, 3), dtype=np.float32)
    if qat:
        model = apply_qat(model, "default_8bit")
        model(x[:1])

    def rep():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    def run(blob):
        path = tmp_path / "model.tflite"
        path.write_bytes(blob)
        sg = read(blob).subgraphs[0]
        return {"outputs": predict_outputs(str(path), x, runtime="ai_edge_litert"),
                "ops": sorted(o.op for o in sg.operators),
                "scales": sorted((t.dtype, tuple(round(s, 9) for s in t.scale)) for t in sg.tensors),
                # a QAT model's first fake-quant tensor ends in ";" one way and not the other
                "names": sorted(t.name.rstrip(";") for t in sg.tensors),
                "io": [sg.tensors[sg.inputs[0]].name, sg.tensors[sg.outputs[0]].name],
                "signatures": Interpreter(model_content=blob).get_signature_list()}

    for mode in modes:
        savedmodel = run(convert._convert(tf().lite.TFLiteConverter.from_keras_model(model), mode, rep))  # noqa: SLF001
        frozen = run(convert.to_tflite(model, mode=mode, rep=rep))
        without = run(convert.to_tflite(model, mode=mode, rep=rep, signature=False))
        assert savedmodel["signatures"] == {"serving_default": {"inputs": [model.input_names[0]],
                                                                "outputs": [model.output_names[0]]}}, mode
        for key in ("ops", "scales", "names", "io", "signatures"):
            assert frozen[key] == savedmodel[key], (mode, key)
        np.testing.assert_array_equal(frozen["outputs"], savedmodel["outputs"], err_msg=mode)
        np.testing.assert_array_equal(without["outputs"], savedmodel["outputs"], err_msg=mode)
        assert without["ops"] == savedmodel["ops"] and without["scales"] == savedmodel["scales"], mode
        assert without["signatures"] == {}, mode


def test_a_model_with_two_outputs_keeps_both_in_its_signature():
    """The frozen-graph path writes one input and one output into the signature; a model with two
    outputs is converted the SavedModel way, with both outputs in its signature."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit._tf import keras

    k = keras()
    i = k.Input((4,), name="features")
    model = k.Model(i, [k.layers.Dense(3, name="logits")(i), k.layers.Dense(1, name="score")(i)])
    sigs = Interpreter(model_content=convert.to_tflite(model, mode="float32")).get_signature_list()
    assert sigs == {"serving_default": {"inputs": ["features"], "outputs": ["logits", "score"]}}


def test_batch_one_folds_the_shape_ops_and_computes_the_same(tmp_path):
    """TFLite Micro's files are converted for batch 1: a ``Reshape`` layer's run-time shape
    computation (SHAPE, STRIDED_SLICE, PACK) becomes a constant, so the file has fewer ops and
    tensors, fewer bytes and a smaller measured arena, and gives the very same int8 outputs."""
    from edgekit import mcu
    from edgekit.models import create_model
    from edgekit.ondevice.evaluate import predict_outputs
    from edgekit.tflite_file import read

    model = create_model("conv1d_small", input_shape=(40, 1), num_classes=10, seed=0, width=0.5)
    x = np.random.default_rng(0).normal(size=(16, 40, 1)).astype(np.float32)

    def rep():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    measured = {}
    for batch in (None, 1):
        blob = convert.to_tflite(model, mode="full-int8", rep=rep, signature=False, batch=batch)
        path = tmp_path / f"batch-{batch}.tflite"
        path.write_bytes(blob)
        sg = read(blob).subgraphs[0]
        measured[batch] = {"ops": [o.op for o in sg.operators], "tensors": len(sg.tensors), "bytes": len(blob),
                           "arena": mcu.measure_arena(path).min_bytes, "input": list(sg.tensors[sg.inputs[0]].shape),
                           "outputs": predict_outputs(str(path), x, runtime="ai_edge_litert")}
    dynamic, one = measured[None], measured[1]
    for batch, m in measured.items():
        print(f"conv1d_small@0.5 batch {batch}: {len(m['ops'])} ops, {m['tensors']} tensors, {m['bytes']} B, "
              f"arena {m['arena']} B")
    assert {"SHAPE", "STRIDED_SLICE", "PACK"} <= set(dynamic["ops"])
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(one["ops"])
    assert [op for op in dynamic["ops"] if op not in ("SHAPE", "STRIDED_SLICE", "PACK")] == one["ops"]
    assert one["input"] == [1, 40, 1]
    assert one["tensors"] < dynamic["tensors"] and one["bytes"] < dynamic["bytes"] and one["arena"] < dynamic["arena"]
    np.testing.assert_array_equal(one["outputs"], dynamic["outputs"])
