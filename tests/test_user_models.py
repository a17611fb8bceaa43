"""Bring your own model: a user's tf_keras .keras/.h5 file, Keras SavedModel, Keras 3 .keras file
or builder function, taken as it is (or fine-tuned only when the recipe says so) to the targets.

Real TensorFlow, tf_keras, Keras 3 (in a child process) and converters; tiny models on digits.
The whole per-format matrix with pruning and QAT is ``tools/byom_matrix.py`` (slow test below).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.errors import DataError, ModelError, RecipeError, StageError
from edgekit.model_source import classify, parse_model_ref
from edgekit.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent

KERAS3_SCRIPT = """
import os, sys
os.environ.pop("TF_USE_LEGACY_KERAS", None)
import numpy as np, keras
keras.utils.set_random_seed(0)
with np.load(sys.argv[1]) as f:
    x, y = f["x_train"], f["y_train"]
i = keras.Input((8, 8, 1))
a = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(i)
a = keras.layers.BatchNormalization()(a)
a = keras.layers.ReLU()(a)
b = keras.layers.DepthwiseConv2D(3, padding="same")(a)
b = keras.layers.ReLU(max_value=6.0)(b)
a = keras.layers.Add()([a, b])
a = keras.layers.MaxPooling2D()(a)
a = keras.layers.Flatten()(a)
o = keras.layers.Dense(10)(a)
m = keras.Model(i, o)
m.compile(optimizer=keras.optimizers.Adam(0.01),
          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
m.fit(x, y, epochs=2, batch_size=64, verbose=0)  # trained BatchNorm statistics; accuracy is not asserted
m.save(sys.argv[2])
print(keras.__version__)
"""

BUILDER = """
import tf_keras as keras


def build(input_shape, num_outputs, width):
    i = keras.Input(input_shape)
    x = keras.layers.Conv2D(max(1, int(8 * width)), 3, padding="same", activation="relu")(i)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(i, keras.layers.Dense(num_outputs, activation="softmax")(x))


def broken(input_shape, num_outputs, width):
    raise ValueError("no such layer size")
"""


def sha(path: Path) -> str:
    from edgekit.model_source import sha256_of

    return sha256_of(path)


@pytest.fixture(scope="session")
def byom(tmp_path_factory, tiny_models, digits_small):
    """A folder with digits.npz and the tiny digits CNN as .keras, .h5 and SavedModel, a builder
    file and a model with a custom layer (``k3`` adds a Keras 3 model to it)."""
    from edgekit._tf import keras

    k = keras()
    folder = tmp_path_factory.mktemp("byom")
    x_tr, y_tr, x_te, y_te = digits_small
    np.savez(folder / "digits.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    model = k.models.load_model(tiny_models.keras_path, compile=False)
    model.save(folder / "tk.keras")
    model.save(folder / "tk.h5")
    model.save(folder / "tk_saved", save_format="tf")
    (folder / "my_models.py").write_text(BUILDER)

    class Doubler(k.layers.Layer):
        def call(self, x):
            return 2 * x

    i = k.Input((8, 8, 1))
    k.Model(i, k.layers.Dense(10)(k.layers.Flatten()(Doubler(name="doubler")(i)))).save(folder / "custom.keras")
    return folder


@pytest.fixture(scope="session")
def k3(byom) -> Path:
    """``byom`` with ``k3.keras``: a Keras 3 model (residual + depthwise) trained by plain Keras 3 in a
    child process (Keras 3 lives in child processes only: the slow tests that read it)."""
    if not (byom / "k3.keras").exists():
        env = {key: v for key, v in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
        subprocess.run([sys.executable, "-c", KERAS3_SCRIPT, str(byom / "digits.npz"), str(byom / "k3.keras")],
                       check=True, env=env, capture_output=True)
    return byom


def recipe(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ndata: {{source: 'npz:digits.npz'}}\n"
                    "evaluate: {runs: 3, warmup: 1}\n" + textwrap.dedent(body))
    return path


# ----------------------------------------------------------------------------- opening the formats


@pytest.mark.parametrize("value,fmt", [("tk.keras", "keras"), ("tk.h5", "h5"), ("tk_saved", "savedmodel")])
def test_tf_keras_formats_load_with_their_weights(byom, tiny_models, value, fmt):
    from edgekit.user_model import load

    model, info = load(parse_model_ref(value, byom))
    assert info["format"] == fmt
    pred = model.predict(tiny_models.x_test, verbose=0).argmax(1)
    assert (pred == tiny_models.keras_pred).all()  # the same trained weights


@pytest.mark.slow  # process-level: Keras 3 writes the file and checks the rebuild in child processes
def test_keras3_model_is_rebuilt_as_tf_keras_with_equal_outputs(k3, digits_small):
    byom = k3
    from edgekit._tf import keras
    from edgekit.user_model import TOLERANCE, keras_version, load

    assert keras_version(byom / "k3.keras").startswith("3.")
    x = digits_small[2][:64]
    model, info = load(parse_model_ref("k3.keras", byom), sample=x, work_dir=byom)
    assert isinstance(model, keras().Model)  # tf_keras, what pruning and QAT take
    assert info["converted_from_keras3"] and info["max_abs_diff"] <= TOLERANCE
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"DepthwiseConv2D", "Add", "BatchNormalization", "ReLU"} <= kinds


def test_builder_is_called_with_shape_outputs_and_width(byom):
    from edgekit.models import create_model

    model = create_model("py:" + str(byom / "my_models.py") + ":build", input_shape=(8, 8, 1), num_classes=10,
                         width=0.5)
    assert model.output_shape == (None, 10)
    assert model.layers[1].filters == 4
    assert model.layers[-1].get_config()["activation"] == "linear"  # the softmax became logits


def test_builder_error_is_one_line_naming_file_and_function(byom):
    from edgekit.models import create_model

    with pytest.raises(RecipeError) as info:
        create_model("my_models.py:broken".replace("my_models.py", str(byom / "my_models.py")),
                     input_shape=(8, 8, 1), num_classes=10)
    assert "my_models.py:broken: raised ValueError: no such layer size" in str(info.value)
    with pytest.raises(RecipeError, match="has no function 'nope' .functions: build, broken"):
        create_model(f"{byom / 'my_models.py'}:nope", input_shape=(8, 8, 1), num_classes=10)


def test_custom_objects_are_refused_by_name(byom):
    from edgekit.user_model import load

    with pytest.raises(ModelError) as info:
        load(parse_model_ref("custom.keras", byom))
    assert "not built into Keras: Doubler" in str(info.value) and info.value.exit_code == 7


def test_input_shape_that_does_not_fit_the_data(byom):
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig
    from edgekit.user_model import check_fits

    data = load_dataset(DataConfig(source="npz:digits.npz"), base=byom)
    with pytest.raises(DataError, match=r"the model takes inputs \(28, 28, 1\), the data gives \(8, 8, 1\)"):
        check_fits({"input_shape": [28, 28, 1], "output_shape": [10]}, data, what="student.model")
    with pytest.raises(DataError, match=r"gives outputs \(3,\), the data has 10 classes"):
        check_fits({"input_shape": [8, 8, 1], "output_shape": [3]}, data, what="student.model")
    assert check_fits({"input_shape": [8, 8], "output_shape": [10]}, data) == "squeeze"


# ----------------------------------------------------------------------------- through the pipeline


@pytest.mark.slow  # a whole run with a probe child (opening the formats is tested in-process above)
def test_given_model_goes_as_is_to_rpi4_and_cortex_m4(byom, tmp_path):
    """student: {model: tk.keras, epochs: 0}, teacher: null: no training at all; the measured
    numbers of both targets are in report.json with the model's source; the file is untouched."""
    from edgekit.pipeline import Run

    path = recipe(byom, "asis", """
        teacher: null
        student: {model: tk.keras, epochs: 0}
        prune: null
        qat: null
        targets: [rpi4, cortex-m4]
    """)
    before = (sha(byom / "tk.keras"), (byom / "tk.keras").stat().st_mtime_ns)
    report = Run(load_recipe(path), path, tmp_path / "run").execute()
    assert (sha(byom / "tk.keras"), (byom / "tk.keras").stat().st_mtime_ns) == before
    (stage,) = report["stages"]
    assert stage["name"] == "student"
    assert stage["source"]["kind"] == "keras" and stage["source"]["sha256"] == before[0]
    assert stage["source"]["path"] == str((byom / "tk.keras").resolve())
    entry = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert entry["teacher"]["status"] == "skipped" and entry["student"]["metrics"]["epochs_run"] == 0
    assert stage["accuracy"] > 0.8  # the trained weights, not a fresh model
    targets = {t["name"]: t for t in report["targets"]}
    for name in ("rpi4", "cortex-m4"):
        assert targets[name]["accuracy"] > 0.8 and targets[name]["size_bytes"] > 0
    assert isinstance(targets["cortex-m4"]["arena_bytes"], int) and targets["cortex-m4"]["arena_bytes"] > 0
    assert targets["cortex-m4"]["format"] == "tflite-full-int8"
    assert (tmp_path / "run" / "stages" / "student" / "model.keras").is_file()


@pytest.mark.slow  # process-level (a probe child per command; load() itself is tested in-process above)
def test_recipe_validate_opens_the_model_without_training(k3):
    byom = k3
    ok = recipe(byom, "v_ok", "teacher: null\nstudent: {model: k3.keras, epochs: 0}\nprune: null\nqat: null\n")
    bad = recipe(byom, "v_bad", "teacher: {model: custom.keras, epochs: 0}\nstudent: null\n")
    proc = CliRunner().invoke(main, ["recipes", "validate", str(ok), str(bad)])
    assert proc.exit_code == 2, (proc.output, proc.exception)
    assert f"{ok}: ok" in proc.stdout
    assert f"{bad}: teacher.model: " in proc.stderr and "Doubler" in proc.stderr
    assert not (byom / "stages").exists()


@pytest.mark.slow  # a whole run with a probe child (the preflight of a model is tested in-process in test_preflight.py)
def test_preflight_names_layers_of_a_given_model_before_training(byom, tmp_path):
    """A given model with a layer QAT cannot take fails in the preflight, before any stage."""
    from edgekit._tf import keras
    from edgekit.pipeline import Run

    k = keras()
    i = k.Input((8, 8, 1))
    x = k.layers.Flatten()(i)
    x = k.layers.LayerNormalization(name="ln")(x)
    k.Model(i, k.layers.Dense(10)(x)).save(tmp_path / "ln.keras")
    (tmp_path / "digits.npz").write_bytes((byom / "digits.npz").read_bytes())
    path = recipe(tmp_path, "ln", "teacher: null\nstudent: {model: ln.keras, epochs: 0}\nprune: null\n"
                                  "qat: {epochs: 1}\ntargets: [cortex-m4]\n")
    with pytest.raises(StageError, match=r"layer 'ln' \(LayerNormalization\): quantization-aware training"):
        Run(load_recipe(path), path, tmp_path / "run").execute()
    assert not (tmp_path / "run" / "stages" / "student").exists()  # nothing trained or written
    manifest = tmp_path / "run" / "manifest.json"
    if manifest.exists():
        assert all(e.get("status") != "running" for e in json.loads(manifest.read_text())["stages"].values())


# ----------------------------------------------------------------------------- refusals (no TF)


@pytest.mark.parametrize("body,fragment", [
    ("teacher: {model: cnn_tiny, epochs: 0}\n", "teacher.epochs: 0 means 'use the given model as it is'"),
    ("teacher: null\nstudent: {model: missing.keras, epochs: 0}\n", "student.model: missing.keras: no such keras"),
    ("teacher: {model: ../outside.keras, epochs: 0}\n", "leads through a symlink"),
])
def test_refusals(byom, tmp_path, body, fragment):
    (tmp_path / "outside.keras").write_bytes(b"x")
    folder = tmp_path / "rec"
    folder.mkdir()
    if "outside" in body:
        body = body.replace("../outside.keras", "linked.keras")
        (folder / "linked.keras").symlink_to(tmp_path / "outside.keras")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe(folder, "neg", body))
    assert fragment in str(info.value)


def test_kinds_of_the_fixture_files(byom):
    assert [classify(v).kind for v in ("tk.keras", "tk.h5", "k3.keras", "my_models.py:build")] == \
        ["keras", "keras", "keras", "builder"]  # by the name: a Keras 3 file is a .keras file too
    assert parse_model_ref("tk_saved", byom).kind == "savedmodel"
    assert hashlib.sha256((byom / "tk.keras").read_bytes()).hexdigest() == sha(byom / "tk.keras")


FORMATS = {"tf_keras .keras", "tf_keras .h5", "SavedModel", "Keras 3 .keras", "builder .py",
           "given teacher + distilled student"}
ARCHITECTURES = {"residual+depthwise (Keras 3)", "MobileNetV2-like (Keras 3)", "1-D CNN"}


def _matrix(tmp_path, *only: str) -> list[dict]:
    out = tmp_path / "matrix"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "byom_matrix.py"), "--out", str(out), "--json",
                           *[a for o in only for a in ("--only", o)]], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    for r in rows:
        assert r["error"] is None, r
        assert r["float_accuracy"] > 0.5, r
        m4 = r["targets"]["cortex-m4"]
        assert m4["format"] == "tflite-full-int8" and isinstance(m4["arena_bytes"], int) and m4["arena_bytes"] > 0
        assert m4["accuracy"] > 0.5 and r["targets"]["rpi4"]["accuracy"] > 0.5
    return rows


@pytest.mark.slow
def test_architectures_nobody_wrote_reach_rpi4_and_cortex_m4(tmp_path):
    """tools/byom_matrix.py's architectures (residual + depthwise, MobileNetV2-like, 1-D CNN, all
    saved by Keras 3) to rpi4 and cortex-m4 as full int8, with measured accuracy, size and arena.
    Each file format has its own default-suite test (test_given_model_goes_as_is_...)."""
    rows = _matrix(tmp_path, "residual", "MobileNetV2", "1-D")
    assert {r["case"] for r in rows} == ARCHITECTURES


@pytest.mark.bench
def test_every_format_reaches_rpi4_and_cortex_m4(tmp_path):
    """The whole matrix, every format and architecture (about 8 minutes: a benchmark, its
    numbers are the table in docs/byom.md)."""
    rows = _matrix(tmp_path)
    assert FORMATS | ARCHITECTURES <= {r["case"] for r in rows}


# ----------------------------------------------------------------------------- bring your own data


def _skewed_csv(path: Path, rows: int = 600, seed: int = 0) -> Path:
    """12 features, 3 classes, feature 0 100x larger than the rest (the issue's CSV): the classes
    live in the 11 small features, which int8 inputs scaled for feature 0 cannot resolve."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, rows)
    x = rng.normal(size=(rows, 12)) + 0.7 * np.eye(3)[y] @ rng.normal(size=(3, 12))
    x[:, 0] = 100 * rng.normal(size=rows)
    lines = [",".join([f"f{i}" for i in range(12)] + ["label"])]
    lines += [",".join([f"{v:.6f}" for v in row] + [str(c)]) for row, c in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_normalize_auto_standardizes_tables_only(tmp_path, byom):
    from edgekit.data import load_dataset, load_for_recipe
    from edgekit.recipe import DataConfig

    _skewed_csv(tmp_path / "t.csv")
    table = load_dataset(DataConfig(source="csv:t.csv"), base=tmp_path)
    assert table.normalization["kind"] == "zscore"
    assert np.allclose(table.x_train.mean(0), 0, atol=1e-4) and np.allclose(table.x_train.std(0), 1, atol=1e-3)
    assert load_dataset(DataConfig(source="csv:t.csv", normalize="none"), base=tmp_path).normalization is None
    assert load_dataset(DataConfig(source="npz:digits.npz"), base=byom).normalization is None  # images
    assert load_dataset(DataConfig(source="digits")).normalization is None
    # a given trained model saw the data as it is: auto leaves it alone
    rec = load_recipe(recipe(byom, "given_auto", "teacher: null\nstudent: {model: tk.keras, epochs: 0}\n"))
    assert load_for_recipe(rec, base=byom).normalization is None


def test_rank_error_lists_the_zoo_models_that_fit():
    from edgekit.models import create_model

    with pytest.raises(RecipeError) as info:
        create_model("cnn_tiny", input_shape=(12, 1), num_classes=3)
    assert "zoo models for it: " in str(info.value) and "mlp_tiny" in str(info.value)
    assert "cnn_small" not in str(info.value).split("zoo models for it: ")[1]


def test_skip_layers_error_says_the_fix(byom):
    from edgekit._tf import keras
    from edgekit.prune import layers_to_prune

    model = keras().models.load_model(byom / "tk.keras", compile=False)  # one conv, one dense
    with pytest.raises(StageError) as info:
        layers_to_prune(model, ["first", "last"])
    assert "set prune.skip_layers: [last]" in str(info.value) and "prune: null" in str(info.value)


@pytest.mark.slow
def test_normalize_auto_keeps_int8_accuracy_on_a_skewed_csv(tmp_path):
    """The issue's CSV: with normalize none the int8 model lost points; auto (the default) keeps them."""
    from edgekit.pipeline import Run

    _skewed_csv(tmp_path / "t.csv")
    acc = {}
    for norm in ("none", "auto"):
        path = tmp_path / f"{norm}.yaml"
        path.write_text(f"name: n{norm}\ndata: {{source: 'csv:t.csv', normalize: {norm}}}\n"
                        "teacher: {model: mlp_small, epochs: 30, batch_size: 32}\n"
                        "student: {model: mlp_tiny, epochs: 30, batch_size: 32}\nprune: null\nqat: null\n"
                        "targets: [cortex-m4]\nevaluate: {runs: 3, warmup: 1}\n")
        report = Run(load_recipe(path), path, tmp_path / norm).execute()
        acc[norm] = report["targets"][0]["accuracy"]
    print("int8 cortex-m4 accuracy by data.normalize:", acc)
    assert acc["auto"] >= acc["none"] + 0.05, acc


def test_fine_tuning_a_given_model_changes_the_copy_only(byom):
    """epochs > 0 on a given model fine-tunes the loaded copy (the recipe says so); the file stays."""
    from edgekit._tf import keras
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig, TeacherConfig
    from edgekit.user_model import fine_tune

    before = sha(byom / "tk.keras")
    model = keras().models.load_model(byom / "tk.keras", compile=False)
    weights = [w.copy() for w in model.get_weights()]
    data = load_dataset(DataConfig(source="npz:digits.npz"), base=byom)
    epochs = fine_tune(model, data, TeacherConfig(model="tk.keras", epochs=1, learning_rate=0.01), seed=0)
    assert epochs == 1
    assert any(not np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert sha(byom / "tk.keras") == before


def test_preflight_names_ops_a_microcontroller_cannot_run():
    from edgekit import preflight
    from edgekit._tf import keras
    from edgekit.recipe import load_target

    k = keras()
    model = k.Sequential([k.Input((16,)), k.layers.Dense(8, activation="gelu"), k.layers.Dense(3)])
    problems = preflight.check_targets(model, [load_target("cortex-m4"), load_target("rpi4")])
    assert [(p.layer, p.stage) for p in problems] == [("GELU", "target cortex-m4 (TFLite Micro)")]
    assert preflight.check_targets(model, [load_target("rpi4")]) == []


@pytest.mark.slow  # process-level (a probe child per command; load() itself is tested in-process above)
def test_unreadable_model_file_is_one_line_exit_7(byom, tmp_path):
    """A file that is no Keras model: `edgekit run` says so in one line, exit 7, before any stage."""
    (tmp_path / "digits.npz").write_bytes((byom / "digits.npz").read_bytes())
    (tmp_path / "junk.keras").write_bytes(b"not a model at all")
    path = recipe(tmp_path, "junk", "teacher: {model: junk.keras, epochs: 0}\nstudent: null\nprune: null\nqat: null\n"
                                    "targets: [rpi4]\n")
    proc = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "run")])
    assert proc.exit_code == 7, (proc.stderr, proc.exception)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "junk.keras: not a Keras model file" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    manifest = tmp_path / "run" / "manifest.json"
    if manifest.exists():
        assert all(e.get("status") != "running" for e in json.loads(manifest.read_text())["stages"].values())


# ----------------------------------------------------------------------------- one probe child per command


@pytest.fixture()
def probe_children(monkeypatch):
    """The job lists of the probe children started (``edgekit.user_model._run_child`` is where
    every probe child starts; it still starts them for real)."""
    import edgekit.user_model as um

    started, real = [], um._run_child

    def counting(job_file, env, timeout_s):
        started.append([job["value"] for job in json.loads(Path(job_file).read_text())["jobs"]])
        return real(job_file, env, timeout_s)

    monkeypatch.setattr(um, "_run_child", counting)
    return started


@pytest.mark.slow  # process-level (a probe child per command; load() itself is tested in-process above)
def test_validate_opens_the_models_of_all_recipes_in_one_child(byom, probe_children):
    """Two recipes, three given models (a tf_keras file, a SavedModel, a custom layer): one child;
    each recipe still gets its own verdict and the custom layer is named."""
    one = recipe(byom, "b_one", "teacher: {model: tk.keras, epochs: 0}\nstudent: null\n")
    two = recipe(byom, "b_two", "teacher: {model: tk_saved, epochs: 0}\nstudent: {model: custom.keras, epochs: 0}\n"
                                "prune: null\nqat: null\n")
    proc = CliRunner().invoke(main, ["recipes", "validate", str(one), str(two)])
    assert proc.exit_code == 2, (proc.output, proc.exception)
    assert f"{one}: ok" in proc.stdout and f"{two}: ok" not in proc.stdout
    assert f"{two}: student.model: " in proc.stderr and "Doubler" in proc.stderr
    assert len(probe_children) == 1, probe_children
    assert [Path(v).name for v in probe_children[0]] == ["tk.keras", "tk_saved", "custom.keras"]


@pytest.mark.slow  # process-level (a probe child per command; load() itself is tested in-process above)
def test_a_crashing_model_among_several_is_named(byom, tiny_models, tmp_path, probe_children):
    """A bit-flipped .tflite that segfaults its runtime, between two good models: the batch child
    crashes, the models it did not finish are opened one by one, and only the flipped file's
    recipe fails, with one line naming it (exit 7 class: ModelError) - edgekit itself lives on."""
    from test_bad_input import _bit_flipped_crasher

    for name in ("digits.npz", "tk.keras"):
        (tmp_path / name).write_bytes((byom / name).read_bytes())
    flipped = _bit_flipped_crasher(tiny_models.float_tflite, tmp_path / "flipped.tflite")
    (tmp_path / "good.tflite").write_bytes(Path(tiny_models.float_tflite).read_bytes())
    first = recipe(tmp_path, "c_first", "teacher: {model: tk.keras, epochs: 0}\nstudent: null\n")
    bad = recipe(tmp_path, "c_bad", "teacher: null\nstudent: {model: flipped.tflite, epochs: 0}\nprune: null\nqat: null\n")
    last = recipe(tmp_path, "c_last", "teacher: null\nstudent: {model: good.tflite, epochs: 0}\nprune: null\nqat: null\n")
    proc = CliRunner().invoke(main, ["recipes", "validate", str(first), str(bad), str(last)])
    assert proc.exit_code == 2, (proc.output, proc.exception)
    assert f"{first}: ok" in proc.stdout and f"{last}: ok" in proc.stdout and f"{bad}: ok" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{bad}: student.model: opening {flipped} crashed (signal "), lines[0]
    # one batch child for all three, then one child each for the crasher and the model after it
    names = [[Path(v).name for v in child] for child in probe_children]
    assert names == [["tk.keras", "flipped.tflite", "good.tflite"], ["flipped.tflite"], ["good.tflite"]], names


@pytest.mark.slow  # process-level (a probe child per command; load() itself is tested in-process above)
def test_open_in_child_is_one_child_and_keeps_its_errors(byom, tmp_path, probe_children):
    from edgekit.user_model import open_in_child

    sample = np.zeros((4, 8, 8, 1), "float32")
    info = open_in_child(str(byom / "tk.keras"), tmp_path / "a.keras", sample=sample, input_shape=(8, 8, 1),
                         num_outputs=10, what="teacher.model")
    assert info["input_shape"] == [8, 8, 1] and (tmp_path / "a.keras").is_file()
    with pytest.raises(ModelError, match=r"^student.model: .*custom.keras: the model uses objects that are not built "
                                         r"into Keras: Doubler") as exc:
        open_in_child(str(byom / "custom.keras"), tmp_path / "b.keras", sample=sample, input_shape=(8, 8, 1),
                      num_outputs=10, what="student.model")
    assert exc.value.exit_code == 7 and "\n" not in str(exc.value)
    assert len(probe_children) == 2


@pytest.mark.slow  # process-level (a probe child per command; load() itself is tested in-process above)
def test_the_pipeline_opens_teacher_and_student_in_one_child(byom, tmp_path, probe_children):
    """A recipe giving both models: one child opens both into sources/; opened again (a resumed
    run) the copies of unchanged files are reused, without a child."""
    from edgekit.pipeline import Run

    path = recipe(byom, "p_both", "teacher: {model: tk.h5, epochs: 0}\nstudent: {model: tk_saved, epochs: 0}\n"
                                  "prune: null\nqat: null\ntargets: [rpi4]\n")
    run = Run(load_recipe(path), path, tmp_path / "run")
    assert run.data.input_shape == (8, 8, 1)
    assert [[Path(v).name for v in child] for child in probe_children] == [["tk.h5", "tk_saved"]]
    for stage, fmt in (("teacher", "h5"), ("student", "savedmodel")):
        assert (tmp_path / "run" / "sources" / f"{stage}.keras").is_file()
        assert json.loads((tmp_path / "run" / "sources" / f"{stage}.json").read_text())["format"] == fmt
    run._infos.clear()
    run._data = None
    assert run.data.input_shape == (8, 8, 1) and run._infos["student"]["format"] == "savedmodel"
    assert len(probe_children) == 1


def _nested_model(frozen_backbone: bool = False, with_lambda: bool = False, tf_op: bool = False):
    """A transfer-learning shape: a Sequential backbone (conv, BatchNorm, a layer named like one
    outside) and a functional block (maybe with a TF-op layer, ``bi * 0.5``), both nested in the
    model; the backbone maybe frozen."""
    from edgekit._tf import keras

    k = keras()
    L = k.layers
    backbone = k.Sequential([k.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same", name="conv"),
                             L.BatchNormalization(name="bn"), L.ReLU(name="relu"),
                             *([L.Lambda(lambda t: t * 1.0, name="lam")] if with_lambda else []),
                             L.Conv2D(16, 3, name="dense")], name="backbone")
    bi = k.Input((6, 6, 16))
    block = k.Model(bi, L.Add(name="add")([L.Conv2D(16, 1, name="conv")(bi), bi * 0.5 if tf_op else bi]), name="block")
    i = k.Input((8, 8, 1), name="image")
    x = backbone(i, training=False) if frozen_backbone else backbone(i)
    x = L.GlobalAveragePooling2D()(block(x))
    model = k.Model(i, L.Dense(10, name="dense")(x), name="user")
    rng = np.random.default_rng(0)
    for layer in backbone.layers:
        if isinstance(layer, L.BatchNormalization):  # statistics that make inference differ from training
            layer.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    return model


@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen-backbone"])
def test_a_nested_model_is_flattened_and_then_prunes_and_quantizes(tmp_path, frozen):
    """A user's model that nests other models (a backbone, a block) is loaded flat: the same
    outputs, no model inside, names made unique, a frozen backbone's BatchNorm kept in inference
    mode; quantization-aware training and channel pruning then take it (they refuse nested models)."""
    from edgekit._tf import keras
    from edgekit.quantize import apply_qat
    from edgekit.structured import shrink
    from edgekit.user_model import load

    model = _nested_model(frozen)
    path = tmp_path / "nested.keras"
    model.save(path)
    flat, info = load(parse_model_ref(str(path), tmp_path))
    assert info["flattened"] == ["backbone", "block"]
    assert not any(isinstance(layer, keras().Model) for layer in flat.layers)
    names = [layer.name for layer in flat.layers]
    assert len(names) == len(set(names)) and {"backbone_dense", "block_conv", "dense"} <= set(names)
    x = np.random.default_rng(1).random((5, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(flat(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-5)
    assert flat.get_layer("bn").trainable is (not frozen)
    if frozen:  # training mode too: the frozen backbone's BatchNorm keeps its moving statistics
        np.testing.assert_allclose(flat(x, training=True).numpy(), model(x, training=True).numpy(), atol=1e-5)
    qat = apply_qat(flat, "default_8bit")
    assert qat(x).shape == (5, 10)
    small, kept, removed = shrink(flat, 0.5, {"dense"})
    assert kept and removed > 0 and small(x).shape == (5, 10)


def test_a_nested_model_with_a_lambda_stays_nested_and_a_tf_op_is_replayed():
    """A Lambda (a Python function) cannot be rebuilt with safe_mode on: the model stays nested
    (the preflight names it). A TF-op layer (``x * 0.5``; a builder's model may have one, a file's
    is refused when loaded) is replayed with its constant."""
    from edgekit._tf import keras
    from edgekit.user_model import flatten

    model = _nested_model(with_lambda=True)
    same, inlined = flatten(model)
    assert same is model and inlined == []
    model = _nested_model(tf_op=True)
    flat, inlined = flatten(model)
    assert inlined == ["backbone", "block"] and not any(isinstance(layer, keras().Model) for layer in flat.layers)
    assert "TFOpLambda" in {type(layer).__name__ for layer in flat.layers}
    x = np.random.default_rng(2).random((3, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(flat(x).numpy(), model(x).numpy(), atol=1e-5)


KERAS3_NESTED_SCRIPT = """
import os, sys
os.environ.pop("TF_USE_LEGACY_KERAS", None)
import numpy as np, keras
keras.utils.set_random_seed(0)
with np.load(sys.argv[1]) as f:
    x, y = f["x_train"], f["y_train"]
L = keras.layers
backbone = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same"), L.BatchNormalization(),
                             L.ReLU(), L.Conv2D(16, 3, activation="relu")], name="backbone")
i = keras.Input((8, 8, 1))
h = backbone(i, training=False)
o = L.Dense(10)(L.GlobalAveragePooling2D()(h))
m = keras.Model(i, o)
m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
m.fit(x, y, epochs=2, batch_size=64, verbose=0)
m.save(sys.argv[2])
"""


@pytest.mark.slow  # Keras 3 writes the file and the rebuild is checked in child processes
def test_a_keras3_model_with_a_frozen_backbone_is_rebuilt_flat(byom, digits_small):
    """The transfer-learning shape saved by Keras 3 (TensorFlow 2.21's default): a Sequential
    backbone called with training=False inside a functional model. It is rebuilt as tf_keras,
    flattened, equal to Keras 3's outputs, its BatchNorm kept in inference mode, and QAT takes it."""
    from edgekit._tf import keras
    from edgekit.quantize import apply_qat
    from edgekit.user_model import TOLERANCE, load

    path = byom / "k3_nested.keras"
    if not path.exists():
        env = {key: v for key, v in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
        subprocess.run([sys.executable, "-c", KERAS3_NESTED_SCRIPT, str(byom / "digits.npz"), str(path)],
                       check=True, env=env, capture_output=True)
    x = digits_small[2][:64]
    model, info = load(parse_model_ref("k3_nested.keras", byom), sample=x, work_dir=byom)
    assert info["converted_from_keras3"] and info["max_abs_diff"] <= TOLERANCE
    assert info["flattened"] == ["backbone"]
    assert not any(isinstance(layer, keras().Model) for layer in model.layers)
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    assert norms and not any(layer.trainable for layer in norms)
    assert apply_qat(model, "default_8bit")(x[:2]).shape == (2, 10)


@pytest.mark.slow  # a 156-layer model: a few seconds
def test_a_keras_applications_backbone_is_flattened_and_channel_pruned(tmp_path):
    """The commonest user model: keras.applications.MobileNetV2 (weights=None: nothing downloaded)
    as the backbone of a Sequential classifier, saved and loaded as a file. Flat, it computes the
    same, QAT wraps it and channel pruning removes half the prunable channels."""
    from edgekit._tf import keras
    from edgekit.quantize import apply_qat
    from edgekit.structured import shrink
    from edgekit.user_model import load

    k = keras()
    base = k.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=None, alpha=0.35)
    model = k.Sequential([k.Input((64, 64, 3)), base, k.layers.GlobalAveragePooling2D(), k.layers.Dense(4, name="head")])
    model.save(tmp_path / "transfer.keras")
    flat, info = load(parse_model_ref(str(tmp_path / "transfer.keras"), tmp_path))
    assert info["flattened"] == [base.name] and len(flat.layers) > 150
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(flat(x).numpy(), model(x).numpy(), atol=1e-5)
    assert apply_qat(flat, "default_8bit")(x).shape == (2, 4)
    small, kept, removed = shrink(flat, 0.5, {"head"})
    assert len(kept) > 10 and 0.4 <= removed <= 0.6 and small.count_params() < flat.count_params() / 2
