"""Already converted float models (.tflite, .onnx) as input, and `edgekit compress`.

Fast tests use the session's tiny digits CNN (``tiny_models``: its float .tflite and a tf2onnx
.onnx of it); nothing is trained. Slow tests run onnx2tf and litert-torch from their own
virtualenvs (.venv-onnx2tf, .venv-torch) and are skipped, with the command that creates them,
when those are absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.errors import ConversionError, RecipeError

ROOT = Path(__file__).resolve().parent.parent
EVAL = "evaluate: {samples: 120, warmup: 1, runs: 5}"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recipe(folder: Path, model: str, targets: list[str], **extra) -> Path:
    kind = Path(model.strip("'")).suffix[1:]
    lines = [f"name: given-{kind}", "data: {source: digits}", "teacher: null",
             f"student: {{model: {model}, epochs: 0}}", "prune: null", "qat: null",
             f"targets: [{', '.join(targets)}]", EVAL, *(f"{k}: {v}" for k, v in extra.items())]
    path = folder / "recipe.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(recipe: Path, out: Path, **kw) -> dict:
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    return Run(load_recipe(recipe), recipe, out, **kw).execute()


def _litert_accuracy(model: Path) -> float:
    """Top-1 accuracy of a float .tflite on the digits test split of a seed-0 recipe, run here in
    LiteRT (not through edgekit's evaluator)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    data = load_dataset(DataConfig(source="digits"), seed=0)
    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    pred = []
    for x in data.x_test:
        it.set_tensor(i, x[None].astype(np.float32))
        it.invoke()
        pred.append(int(it.get_tensor(o).argmax()))
    return float(np.mean(np.array(pred) == data.y_test))


# ------------------------------------------------------------------ the given model itself


def test_inspect_float_tflite_and_onnx(tiny_models):
    from edgekit.external import inspect_model

    t = inspect_model(tiny_models.float_tflite)
    o = inspect_model(tiny_models.onnx)
    for g in (t, o):
        assert g.input_shape == (8, 8, 1) and g.output_shape == (10,)
        assert g.params == 8 * 9 + 8 + 128 * 10 + 10  # conv kernel + bias, dense kernel + bias
        assert g.sha256 == _sha(g.path)
    assert t.signature == "serving_default" and t.signature_input
    # both runtimes give the Keras model's predictions
    assert np.mean(t.predict(tiny_models.x_test).argmax(1) == tiny_models.keras_pred) > 0.99
    assert np.mean(o.predict(tiny_models.x_test).argmax(1) == tiny_models.keras_pred) > 0.99


def test_refuses_quantized_models_and_wrong_shapes(tiny_models, tmp_path):
    from edgekit.external import check_fits, inspect_model

    with pytest.raises(RecipeError, match="not float32; give the float model"):
        inspect_model(tiny_models.full_int8_tflite)
    with pytest.raises(RecipeError, match="already quantized"):
        inspect_model(tiny_models.int8_tflite)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(RecipeError, match="not a TFLite flatbuffer"):
        inspect_model(junk)
    g = inspect_model(tiny_models.float_tflite)
    with pytest.raises(RecipeError, match=r"takes inputs of shape \(8, 8, 1\).*\(1, 8, 8\) \(the model is channels-last, the data channels-first"):
        check_fits(g, (1, 8, 8), num_classes=10, task="classification")
    with pytest.raises(RecipeError, match="gives 10 outputs per sample.*needs 3 class scores"):
        check_fits(g, (8, 8, 1), num_classes=3, task="classification")


@pytest.mark.parametrize("mode,io", [("int8", "float32"), ("full-int8", "int8"), ("int16x8", "float32"),
                                     ("full-int16x8", "int16"), ("dynamic", "float32"), ("fp16", "float32")])
def test_litert_quantizer_modes(tiny_models, mode, io):
    from edgekit.convert import check_integer_only, tensor_types
    from edgekit.external import inspect_model
    from edgekit.external.quantize import quantize_tflite

    g = inspect_model(tiny_models.float_tflite)
    blob = quantize_tflite(g.path.read_bytes(), mode, signature=g.signature, signature_input=g.signature_input,
                           calibration=[tiny_models.x_test[i:i + 1] for i in range(64)])
    info = tensor_types(blob)
    assert info["input"] == io and info["output"] == io
    if mode in ("int8", "full-int8", "int16x8", "full-int16x8"):
        assert check_integer_only(blob, require_int_io=mode.startswith("full"))["float_ops"] == []
    assert len(blob) < g.size_bytes


def test_static_quantization_needs_calibration(tiny_models):
    from edgekit.external.quantize import quantize_tflite

    with pytest.raises(ConversionError, match="needs calibration samples"):
        quantize_tflite(tiny_models.float_tflite.read_bytes(), "int8", signature="serving_default",
                        signature_input="x", calibration=[])


# ------------------------------------------------------------------ whole runs


def test_float_tflite_to_rpi4_and_cortex_m4(tiny_models, tmp_path):
    model = tmp_path / "my model.tflite"  # a space in the name: paths are never split
    shutil.copyfile(tiny_models.float_tflite, model)
    before, mtime = _sha(model), model.stat().st_mtime_ns
    report = _run(_recipe(tmp_path, f"'{model.name}'", ["rpi4", "cortex-m4"]), tmp_path / "run")
    out = tmp_path / "run"
    assert _sha(model) == before and model.stat().st_mtime_ns == mtime  # the user's file: only read
    assert report["source"] == {"kind": "tflite", "path": str(model.resolve()), "sha256": before,
                                "size_bytes": model.stat().st_size}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == before
    for stage in ("teacher", "pruned", "qat"):
        entry = manifest["stages"][stage]
        assert entry["status"] == "skipped" and "already converted float tflite" in entry["reason"]
    [stage] = report["stages"]
    assert stage["name"] == "student" and stage["given"] is True and stage["size_bytes"] == model.stat().st_size
    # the float accuracy in the report is the model's own, measured on the run's whole test split
    assert stage["accuracy"] == pytest.approx(_litert_accuracy(model), abs=1e-12)
    rpi, m4 = report["targets"]
    assert rpi["name"] == "rpi4" and rpi["format"] == "tflite-int8"
    assert rpi["size_bytes"] == (out / "targets/rpi4/model_int8.tflite").stat().st_size < stage["size_bytes"]
    assert (out / "targets/rpi4/bundle/run.sh").is_file()
    assert m4["runtime"]["name"] == "tflite_micro" and m4["format"] == "tflite-full-int8"
    arena = json.loads((out / "targets/cortex-m4/arena.json").read_text())
    assert m4["arena_bytes"] == arena["recommended_bytes"] > arena["min_bytes"] > 0
    for t in (rpi, m4):
        assert t["accuracy"] > 0.8 and t["accuracy"] >= stage["accuracy"] - 0.05
        assert t["agreement_with_float"] > 0.9
    from edgekit.convert import tensor_types

    io = tensor_types((out / "targets/cortex-m4/model_int8.tflite").read_bytes())
    assert io["input"] == io["output"] == "int8"
    assert "tflite-float32 (given)" in (out / "report.md").read_text()


def test_float_onnx_on_mobile_float_and_qdq_int8(tiny_models, tmp_path):
    shutil.copyfile(tiny_models.onnx, tmp_path / "net.onnx")
    report = _run(_recipe(tmp_path, "net.onnx", ["mobile"]), tmp_path / "run")
    out = tmp_path / "run"
    assert not (out / "stages/student/model.tflite").exists()  # no rpi/mcu target: onnx2tf not needed
    [mobile] = report["targets"]
    assert mobile["format"] == "onnx-int8-qdq" and mobile["runtime"]["name"] == "onnxruntime"
    [given] = mobile["variants"]
    assert given["format"] == "onnx" and given["file"] == "model.onnx"
    assert (out / "targets/mobile/model.onnx").read_bytes() == (tmp_path / "net.onnx").read_bytes()
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "targets/mobile/model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    stage = report["stages"][0]
    # the given float model measured as it is in ONNX Runtime: the stage's accuracy on the same samples
    assert given["agreement_with_float"] == 1.0
    assert mobile["accuracy"] > 0.8 and abs(mobile["accuracy"] - given["accuracy"]) < 0.05
    assert stage["size_format"] == "onnx-float32 (given)"


def test_onnx_for_rpi_without_onnx2tf_is_one_clear_error(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_ONNX2TF_PYTHON", str(tmp_path / "no-such-python"))
    shutil.copyfile(tiny_models.onnx, tmp_path / "net.onnx")
    with pytest.raises(ConversionError, match=r"onnx2tf is not installed .*bash tools/onnx2tf_env.sh"):
        _run(_recipe(tmp_path, "net.onnx", ["rpi4"]), tmp_path / "run")
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["stages"]["student"]["status"] == "failed"


def test_given_model_must_fit_the_data(tiny_models, tmp_path):
    shutil.copyfile(tiny_models.float_tflite, tmp_path / "m.tflite")
    recipe = _recipe(tmp_path, "m.tflite", ["rpi4"]).read_text().replace("{source: digits}", "{source: mnist1d}")
    (tmp_path / "recipe.yaml").write_text(recipe)
    with pytest.raises(RecipeError, match=r"m.tflite: the model takes inputs of shape \(8, 8, 1\), the data has"):
        _run(tmp_path / "recipe.yaml", tmp_path / "run")


# ------------------------------------------------------------------ edgekit compress


def test_compress_then_rerun_the_written_recipe(tiny_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(tiny_models.float_tflite, tmp_path / "digits_cnn.tflite")
    runner = CliRunner()
    res = runner.invoke(main, ["compress", "digits_cnn.tflite", "--data", "digits", "--target", "rpi4",
                               "--target", "cortex-m4"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "digits_cnn"
    recipe = out / "recipe.yaml"
    assert f"recipe: {Path('runs/digits_cnn/recipe.yaml')}" in res.output
    assert f"report: {Path('runs/digits_cnn/report.html')}" in res.output
    report = json.loads((out / "report.json").read_text())
    assert [t["name"] for t in report["targets"]] == ["rpi4", "cortex-m4"]
    assert report["targets"][1]["arena_bytes"] > 0 and report["targets"][1]["accuracy"] > 0.8
    import yaml

    written = yaml.safe_load(recipe.read_text())
    assert written["student"] == {"model": f"tflite:{(tmp_path / 'digits_cnn.tflite').resolve()}", "epochs": 0}
    assert written["teacher"] is None and written["prune"] is None and written["qat"] is None
    files = {k: v.get("files") for k, v in json.loads((out / "manifest.json").read_text())["stages"].items()}
    # the written recipe is an ordinary one: rerunning it continues the same run, nothing redone
    monkeypatch.chdir(ROOT)
    res = runner.invoke(main, ["run", str(recipe), "--out", str(out), "--resume"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "7 stages up to date, reused (student … report)" in res.output
    assert {k: v.get("files") for k, v in json.loads((out / "manifest.json").read_text())["stages"].items()} == files
    # the recipe is never overwritten silently
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(main, ["compress", "digits_cnn.tflite", "--data", "digits", "--target", "rpi4"])
    assert res.exit_code == 2 and "pass --resume" in res.output
    res = runner.invoke(main, ["compress", "digits_cnn.tflite", "--data", "digits", "--target", "rpi4", "--resume"])
    assert res.exit_code == 2 and "differs from what these arguments make" in res.output
    assert yaml.safe_load(recipe.read_text()) == written


def test_compress_bad_arguments_name_the_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["compress", "missing.tflite", "--data", "digits", "--target", "rpi4"])
    assert res.exit_code == 2 and "MODEL: missing.tflite: no such tflite model file" in res.output
    (tmp_path / "m.tflite").write_bytes(b"x")
    res = runner.invoke(main, ["compress", "m.tflite", "--data", "digits", "--target", "rpi5"])
    assert res.exit_code == 2 and "--target rpi5: unknown target 'rpi5'; did you mean 'rpi4'?" in res.output
    res = runner.invoke(main, ["compress", "m.tflite", "--data", "nowhere.bin", "--target", "rpi4"])
    assert res.exit_code == 2 and "--data nowhere.bin: not a known source" in res.output
    res = runner.invoke(main, ["compress", "m.tflite", "--data", "digits", "--target", "rpi4", "--epochs", "3"])
    assert res.exit_code == 2 and "already converted tflite model" in res.output
    assert not (tmp_path / "runs").exists()  # nothing written for bad arguments


def test_compress_help_imports_no_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from edgekit.cli import main;"
            "r = CliRunner().invoke(main, ['compress', '--help']); assert r.exit_code == 0, r.output;"
            "assert 'edgekit compress my_model.tflite' in r.output;"
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'litert_quantizer', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ slow: onnx2tf and litert-torch


def _venv_python(name: str, script: str) -> Path:
    from conftest import wait_for_background_venvs

    wait_for_background_venvs()
    exe = ROOT / name / "bin" / "python"
    if not exe.is_file():
        from conftest import require_tool  # skips here, fails under CI=true (.ci/run makes it)

        require_tool(name, missing=f"{name} is absent", hint=f"create it with `bash tools/{script}`; .ci/run does")
    return exe


@pytest.mark.slow
def test_float_onnx_to_rpi4_and_cortex_m4_through_onnx2tf(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_ONNX2TF_PYTHON", str(_venv_python(".venv-onnx2tf", "onnx2tf_env.sh")))
    shutil.copyfile(tiny_models.onnx, tmp_path / "net.onnx")
    report = _run(_recipe(tmp_path, "net.onnx", ["mobile", "rpi4", "cortex-m4"]), tmp_path / "run")
    out = tmp_path / "run"
    stage = report["stages"][0]
    assert stage["onnx2tf"]["agreement_with_onnx"] >= 0.99
    assert (out / "stages/student/model.tflite").is_file()
    mobile, rpi, m4 = report["targets"]
    assert mobile["format"] == "onnx-int8-qdq"  # mobile keeps the ONNX path
    assert rpi["format"] == "tflite-int8" and m4["format"] == "tflite-full-int8"
    assert m4["arena_bytes"] > 0 and m4["runtime"]["name"] == "tflite_micro"
    for t in (mobile, rpi, m4):
        assert t["accuracy"] > 0.8 and t["accuracy"] >= stage["accuracy"] - 0.05


TORCH_NET = '''
import numpy as np
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


def build():
    """Trained on the digits training split (channels first inside the model)."""
    torch.manual_seed(0)
    d = np.load("train.npz")
    x = torch.from_numpy(d["x"]).permute(0, 3, 1, 2)
    y = torch.from_numpy(d["y"])
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return net
'''


@pytest.mark.slow
def test_pytorch_model_through_litert_torch(tmp_path):
    exe = _venv_python(".venv-torch", "torch_env.sh")
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    data = load_dataset(DataConfig(source="digits"), seed=0)
    np.savez(tmp_path / "train.npz", x=data.x_train, y=data.y_train)
    (tmp_path / "net.py").write_text(TORCH_NET)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(exe), "-I", str(ROOT / "tools" / "torch_to_tflite.py"), "net.py:build",
                           "--input-shape", "8,8,1", "--out", "net.tflite"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _run(_recipe(tmp_path, "net.tflite", ["rpi4", "cortex-m4"]), tmp_path / "run")
    stage, (rpi, m4) = report["stages"][0], report["targets"]
    assert stage["given"] and stage["accuracy"] > 0.85
    assert m4["arena_bytes"] > 0 and m4["runtime"]["name"] == "tflite_micro"
    for t in (rpi, m4):
        assert t["accuracy"] >= stage["accuracy"] - 0.05


def test_recipes_validate_opens_a_given_float_model(tiny_models, tmp_path):
    shutil.copyfile(tiny_models.onnx, tmp_path / "net.onnx")
    good = _recipe(tmp_path, "net.onnx", ["rpi4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("{source: digits}", "{source: mnist1d}"))
    res = CliRunner().invoke(main, ["recipes", "validate", str(good), str(bad)])
    assert res.exit_code == 2
    assert f"{good}: ok" in res.output
    assert f"{bad}: {(tmp_path / 'net.onnx').resolve()}: the model takes inputs of shape (8, 8, 1)" in res.output
    assert not (tmp_path / "run").exists()


def _conv1d_float_tflite():
    """An untrained Keras Conv1D model (the TFLite converter writes EXPAND_DIMS for it) as float TFLite."""
    from edgekit._tf import keras, tf

    k = keras()
    tf().random.set_seed(0)
    model = k.Sequential([k.layers.Input((40, 1)), k.layers.Conv1D(4, 5, activation="relu"),
                          k.layers.Flatten(), k.layers.Dense(3)])
    return tf().lite.TFLiteConverter.from_keras_model(model).convert()


def test_conv1d_tflite_is_quantized_fully_integer(tmp_path):
    from edgekit.convert import check_integer_only, tensor_types
    from edgekit.external import inspect_model
    from edgekit.external.quantize import quantize_tflite, reshape_for_expand_dims

    blob = _conv1d_float_tflite()
    assert "EXPAND_DIMS" in tensor_types(blob)["ops"]
    rewritten, n = reshape_for_expand_dims(blob)
    assert n == 1 and "EXPAND_DIMS" not in tensor_types(rewritten)["ops"]
    (tmp_path / "a.tflite").write_bytes(blob)
    (tmp_path / "b.tflite").write_bytes(rewritten)
    x = np.random.default_rng(0).normal(size=(16, 40, 1)).astype(np.float32)
    a, b = inspect_model(tmp_path / "a.tflite"), inspect_model(tmp_path / "b.tflite")
    assert np.array_equal(a.predict(x), b.predict(x))  # the same computation
    q = quantize_tflite(blob, "full-int8", signature=a.signature, signature_input=a.signature_input,
                        calibration=[x[i:i + 1] for i in range(len(x))])
    assert check_integer_only(q, require_int_io=True)["float_ops"] == []  # litert-quantizer alone left EXPAND_DIMS float


def test_calibration_ranges_cover_every_sample(tiny_models):
    """The int8 input range holds the largest calibration sample (min/max over all samples, not
    litert-quantizer's moving average of per-sample ranges, which lands near a typical sample's)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.external import inspect_model
    from edgekit.external.quantize import quantize_tflite

    g = inspect_model(tiny_models.float_tflite)
    samples = [tiny_models.x_test[i:i + 1] for i in range(40)]
    samples[7] = samples[7] * 4.0  # one sample with four times the range of the others
    q = quantize_tflite(g.path.read_bytes(), "full-int8", signature=g.signature, signature_input=g.signature_input,
                        calibration=samples)
    scale, zero = Interpreter(model_content=q).get_input_details()[0]["quantization"]
    assert (127 - zero) * scale >= float(samples[7].max()) * 0.99


def test_compress_recipe_by_model_kind(tmp_path):
    from edgekit.compress import BUILDER_EPOCHS, make_recipe

    (tmp_path / "m.keras").write_bytes(b"")
    (tmp_path / "nets.py").write_text("def build(shape, n, width):\n    pass\n")
    (tmp_path / "t.csv").write_text("a,y\n1,0\n")
    keras = make_recipe("m.keras", data="t.csv", label="y", targets=["rpi4"], base=tmp_path)
    assert keras["student"] == {"model": f"keras:{(tmp_path / 'm.keras').resolve()}", "epochs": 0}
    assert keras["data"] == {"source": f"csv:{(tmp_path / 't.csv').resolve()}", "label": "y"}
    builder = make_recipe("nets.py:build", data="digits", targets=["cortex-m4"], base=tmp_path)
    assert builder["student"]["epochs"] == BUILDER_EPOCHS and builder["teacher"] is None and "convert" not in builder
    lut = make_recipe("m.keras", data="digits", targets=["cortex-m4"], base=tmp_path, mcu_weight_bits=4)
    assert lut["convert"] == {"mcu_weight_bits": 4}
    with pytest.raises(RecipeError, match="a zoo name is an untrained architecture"):
        make_recipe("cnn_tiny", data="digits", targets=["rpi4"], base=tmp_path)
    with pytest.raises(RecipeError, match="--epochs 0: nets.py:build is a builder"):
        make_recipe("nets.py:build", data="digits", targets=["rpi4"], epochs=0, base=tmp_path)


def test_compress_keeps_out_of_foreign_folders(tiny_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(tiny_models.float_tflite, tmp_path / "m.tflite")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    res = CliRunner().invoke(main, ["compress", "m.tflite", "--data", "digits", "--target", "rpi4", "--out", "mine"])
    assert res.exit_code == 2 and "--out mine: the folder is not empty and holds no edgekit run" in res.output
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
