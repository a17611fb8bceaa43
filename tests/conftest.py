"""Shared fixtures: a seeded tiny dataset and tiny converted models, built once per session."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest


# ----------------------------------------------------------------------------- CI, hypothesis, tools

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

# Property-based tests take their example counts from a profile, not from their own
# @settings: few locally (a fast default suite), many in CI. HYPOTHESIS_PROFILE=ci runs CI's
# counts here. A test's @settings may set deadline and health checks, not max_examples.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("default", max_examples=100, deadline=None)
_hypothesis_settings.register_profile("ci", max_examples=1000, deadline=None, print_blob=True)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "default"))

# TFLite Micro arena searches are cached by the sha256 of the model bytes for this session (and
# its subprocesses), so a model measured once is not searched again (edgekit.mcu.measure_arena).
# Set EDGEKIT_ARENA_CACHE yourself (e.g. to .cache/arena) to keep the cache between sessions.
if not os.environ.get("EDGEKIT_ARENA_CACHE"):
    import atexit
    import tempfile

    _ARENA_CACHE = tempfile.mkdtemp(prefix="edgekit-test-arena-cache-")
    os.environ["EDGEKIT_ARENA_CACHE"] = _ARENA_CACHE
    atexit.register(shutil.rmtree, _ARENA_CACHE, True)


def require_tool(name: str, *, missing: str | None = None, hint: str = "") -> None:
    """Skip the calling test when the tool ``name`` (a program on PATH, or ``missing`` given: why
    it cannot be used) is not there; under ``CI=true`` fail instead, so a skip never hides a tool
    that CI is supposed to install (.ci/run installs sshd, PostgreSQL, Chromium, g++, arm-none-eabi,
    espeak-ng and sox)."""
    if missing is None and shutil.which(name) is None:
        missing = f"{name} not found on PATH"
    if missing is None:
        return
    reason = f"{missing}{f' ({hint})' if hint else ''}"
    if IN_CI:
        pytest.fail(f"CI=true and a tool is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for_background_venvs() -> None:
    """.ci/run makes the slow tests' own virtualenvs (onnx2tf, torch, Airflow) in the background
    while the slow suite runs and names a file in EDGEKIT_VENVS_DONE that it writes when they are
    made: a test that needs one waits for that file first (nothing to wait for without the variable)."""
    import time

    done = os.environ.get("EDGEKIT_VENVS_DONE")
    if not done:
        return
    deadline = time.monotonic() + 3600
    while not os.path.exists(done):
        if time.monotonic() > deadline:
            pytest.fail(f"the background virtualenvs were not made within an hour ({done} missing)", pytrace=False)
        time.sleep(2)


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder that ``build(folder)`` filled, built once per test session: with pytest-xdist,
    once for all workers (the first to ask builds it under a lock in the session's shared temp
    folder, the others wait and read it), so a session fixture's training or conversion is not
    repeated in every worker. What is returned must be read from the folder (the same in every
    worker); like the fixture, the folder is read-only for tests."""
    import fcntl

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent / "built-once"
    root.mkdir(exist_ok=True)
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)  # another worker's build that failed
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@dataclasses.dataclass(frozen=True)
class TinyModels:
    """A tiny digits CNN and its conversions, with the test data they were checked on."""

    keras_path: Path          # float Keras model (.keras)
    float_tflite: Path        # float32 TFLite
    int8_tflite: Path         # int8 weights/activations, float32 input and output
    full_int8_tflite: Path    # int8 everywhere, int8 input and output (TFLite Micro)
    eval_npz: Path            # x (float32), y (int labels), ref (float Keras predictions)
    x_test: np.ndarray
    y_test: np.ndarray
    keras_pred: np.ndarray
    onnx: Path | None = None  # float ONNX of the same model (tf2onnx, opset 13, NHWC input "input")


@pytest.fixture(scope="session")
def digits_small():
    """scikit-learn digits scaled to [0, 1], shaped (N, 8, 8, 1); a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    n_test = len(x) // 5
    te, tr = idx[:n_test], idx[n_test:]
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, digits_small) -> TinyModels:
    out = _built_once(tmp_path_factory, "tiny_models", lambda folder: _build_tiny_models(folder, digits_small))
    with np.load(out / "eval.npz") as f:
        x_te, y_te, pred = f["x"], f["y"], f["ref"]
    return TinyModels(out / "model.keras", out / "float.tflite", out / "int8.tflite", out / "full_int8.tflite",
                      out / "eval.npz", x_te, y_te, pred, out / "float.onnx")


def _build_tiny_models(out: Path, digits_small) -> None:
    from edgekit._tf import keras, tf

    tf().random.set_seed(0)
    k = keras()
    x_tr, y_tr, x_te, y_te = digits_small
    model = k.Sequential([
        k.layers.Input((8, 8, 1)),
        k.layers.Conv2D(8, 3, padding="same", activation="relu"),
        k.layers.MaxPooling2D(),
        k.layers.Flatten(),
        k.layers.Dense(10),
    ])
    model.compile(optimizer=k.optimizers.Adam(0.01),
                  loss=k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=8, batch_size=64, verbose=0)
    model.save(out / "model.keras")

    def convert(**kw) -> bytes:
        conv = tf().lite.TFLiteConverter.from_keras_model(model)
        for key, value in kw.items():
            setattr(conv, key, value)
        return conv.convert()

    def rep():
        for i in range(100):
            yield [x_tr[i : i + 1]]

    lite = tf().lite
    for name, kw in {
        "float": {},
        "int8": dict(optimizations=[lite.Optimize.DEFAULT], representative_dataset=rep),
        "full_int8": dict(optimizations=[lite.Optimize.DEFAULT], representative_dataset=rep,
                          target_spec=_spec(lite), inference_input_type=tf().int8,
                          inference_output_type=tf().int8),
    }.items():
        (out / f"{name}.tflite").write_bytes(convert(**kw))
    pred = model.predict(x_te, verbose=0).argmax(1)
    np.savez(out / "eval.npz", x=x_te, y=y_te, ref=pred)
    import tf2onnx

    spec = (tf().TensorSpec((None, *model.input_shape[1:]), tf().float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    (out / "float.onnx").write_bytes(proto.SerializeToString())


def _spec(lite):
    spec = lite.TargetSpec()
    spec.supported_ops = [lite.OpsSet.TFLITE_BUILTINS_INT8]
    return spec


# A tiny but complete recipe: digits, teacher -> student -> pruned -> QAT -> mobile, rpi4 and
# cortex-m4 (about 40 s on 2 cores). Built once per session; modules that change the run work on
# their own copy (``copy_run``).
TINY_RECIPE = """
name: tiny
seed: 1
data: {source: digits}
teacher: {model: cnn_tiny, epochs: 4, batch_size: 32, learning_rate: 0.01}
student: {model: cnn_tiny, epochs: 3, batch_size: 32, learning_rate: 0.01}
prune: {target_sparsity: 0.5, epochs: 2, batch_size: 32}
qat: {epochs: 1, batch_size: 32}
targets: [mobile, rpi4, cortex-m4]
evaluate: {warmup: 2, runs: 10}
"""


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    recipe_path: Path
    out: Path
    report: dict


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> FinishedRun:
    """The tiny recipe run once, end to end. Treat it as read-only: use ``copy_run`` to change it."""
    out, report = _bank_run(tmp_path_factory, TINY_RECIPE, "finished_run", recipe_name="tiny")
    return FinishedRun(out.parent / "tiny.yaml", out, report)


# The bank's other tasks: regression (PCA folded into the first layer, mobile and rpi4) and anomaly
# detection (an autoencoder on cortex-m4), each run once per session. Read-only, like finished_run.
TINY_REGRESSION = """
name: tiny-regression
seed: 0
task: regression
data: {source: fermentation, normalize: zscore}
features: {reduce: pca, components: 12}
teacher: {model: mlp_small, epochs: 3, batch_size: 64, learning_rate: 0.003}
student: {model: mlp_small, width: 0.25, epochs: 3, batch_size: 64, learning_rate: 0.003, alpha: 0.5, baseline: true}
prune: {target_sparsity: 0.5, epochs: 2, batch_size: 64}
qat: {epochs: 1, batch_size: 64}
targets: [mobile, rpi4]
evaluate: {warmup: 2, runs: 10}
"""

TINY_ANOMALY = """
name: tiny-anomaly
seed: 0
task: anomaly
data: {source: machine-anomaly, val_split: 0.15, normalize: minmax}
teacher: {model: fc_autoencoder, width: 0.25, epochs: 4, batch_size: 32}
student: {model: fc_autoencoder, width: 0.25, epochs: 2, batch_size: 32, alpha: 0.5}
prune: null
qat: null
targets: [cortex-m4]
evaluate: {warmup: 2, runs: 10}
"""


def _bank_run(tmp_path_factory, text: str, name: str, recipe_name: str | None = None) -> tuple[Path, dict]:
    """(run directory, report) of the recipe ``text`` run once per session (all workers); the
    recipe is ``run.parent / f"{recipe_name or name}.yaml"``, the report is the run's report.json."""
    import json

    recipe_name = recipe_name or name

    def build(folder: Path) -> None:
        from edgekit.pipeline import Run
        from edgekit.recipe import load_recipe

        recipe = folder / f"{recipe_name}.yaml"
        recipe.write_text(text)
        Run(load_recipe(recipe), recipe, folder / "run").execute()

    folder = _built_once(tmp_path_factory, name, build)
    return folder / "run", json.loads((folder / "run" / "report.json").read_text())


@pytest.fixture(scope="session")
def regression_run(tmp_path_factory) -> tuple[Path, dict]:
    """(run directory, report) of TINY_REGRESSION; its recipe is ``run.parent / "regression.yaml"``."""
    return _bank_run(tmp_path_factory, TINY_REGRESSION, "regression")


@pytest.fixture(scope="session")
def anomaly_run(tmp_path_factory) -> tuple[Path, dict]:
    """(run directory, report) of TINY_ANOMALY; its recipe is ``run.parent / "anomaly.yaml"``."""
    return _bank_run(tmp_path_factory, TINY_ANOMALY, "anomaly")


def copy_run(run: FinishedRun, dest: Path) -> FinishedRun:
    """A private copy of a finished run (its recipe file beside it), for tests that change it."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    recipe_path = dest / run.recipe_path.name
    shutil.copy2(run.recipe_path, recipe_path)
    out = dest / "run"
    shutil.copytree(run.out, out)
    return FinishedRun(recipe_path, out, run.report)


# ----------------------------------------------------------------------------- the model zoo, converted once

# The MLPerf Tiny models at their reference input shapes (name -> (input shape, classes));
# ``zoo_reference_int8`` (slow tests) converts these; ``zoo_int8`` converts every zoo model at a
# small shape of its rank (default suite).
ZOO_REFERENCE_SHAPES = {
    "resnet8": ((32, 32, 3), 10),
    "ds_cnn": ((49, 10, 1), 12),
    "mobilenet_v1_025": ((96, 96, 3), 2),
    "fc_autoencoder": ((640, 1), 1),
}
ZOO_SMALL_SHAPES = {3: (8, 8, 1), 2: (40, 1)}


@dataclasses.dataclass(frozen=True)
class ZooModel:
    name: str
    input_shape: tuple
    classes: int
    full_int8: Path        # int8 in and out, from 8 seeded random samples
    x: np.ndarray          # those samples


def _zoo_samples(shape: tuple) -> np.ndarray:
    return np.random.default_rng(0).random((8, *shape), dtype=np.float32)


def _convert_zoo(tmp_path_factory, name: str, shapes: dict[str, tuple[tuple, int]]) -> dict[str, ZooModel]:
    def build(out: Path) -> None:
        from edgekit.convert import to_tflite
        from edgekit.models import create_model

        for model_name, (shape, classes) in sorted(shapes.items()):
            model = create_model(model_name, input_shape=shape, num_classes=classes, seed=0)
            x = _zoo_samples(shape)

            def rep(x=x):
                for i in range(len(x)):
                    yield [x[i : i + 1]]

            (out / f"{model_name}.tflite").write_bytes(to_tflite(model, mode="full-int8", rep=rep, signature=False))

    out = _built_once(tmp_path_factory, name, build)
    return {model_name: ZooModel(model_name, shape, classes, out / f"{model_name}.tflite", _zoo_samples(shape))
            for model_name, (shape, classes) in sorted(shapes.items())}


@pytest.fixture(scope="session")
def zoo_int8(tmp_path_factory) -> dict[str, ZooModel]:
    """Every zoo model (seed 0, width 1) at a small input shape of its rank, full int8, converted
    once per session."""
    from edgekit.models import list_models, model_rank

    shapes = {name: (ZOO_SMALL_SHAPES[model_rank(name)], 10) for name in list_models()}
    # DS-CNN's (10, 4) first kernel on 8x8 leaves outputs so small that TFLite Micro and LiteRT
    # round them 2 steps apart; its reference input is small anyway (and so tests/test_estimate.py
    # checks a calibration model of the cortex-m4 set on this very file in the default suite)
    shapes["ds_cnn"] = ZOO_REFERENCE_SHAPES["ds_cnn"]
    return _convert_zoo(tmp_path_factory, "zoo", shapes)


@pytest.fixture(scope="session")
def zoo_reference_int8(tmp_path_factory) -> dict[str, ZooModel]:
    """The four MLPerf Tiny zoo models at their reference input shapes, full int8, converted once
    per session (slow tests: TFLite Micro at full size, the latency estimates' calibration check)."""
    return _convert_zoo(tmp_path_factory, "zoo_reference", ZOO_REFERENCE_SHAPES)


# ----------------------------------------------------------------------------- the order of the files

# The files that take most of the suites' time (``--durations``), heaviest first, so that
# pytest-xdist (tools/test.sh: ``--dist loadfile --no-loadscope-reorder``, which keeps this order)
# starts them first and the many cheap files fill in at the end instead of one heavy file straggling
# alone. The default suite: test_safety.py builds the bank's finished_run (about 12 s) while the
# other worker goes through files that do not read it (their own runs, tiny_models, the zoo), and
# only then come the files that read finished_run, so that no worker waits for the bank.
HEAVY_FIRST = ["test_speech.py", "test_mlperf_recipes.py", "test_user_models.py", "test_tune.py",  # the slow suite's
               "test_airflow_dag.py",  # longest files; Airflow's venv is made meanwhile in CI (.ci/run)
               "test_safety.py",                                                   # finished_run
               "test_models.py", "test_selective.py", "test_audio_ship.py", "test_tasks.py", "test_estimate.py",
               "test_ondevice_tasks.py", "test_mcu.py", "test_external.py", "test_ondevice_evaluate.py",
               "test_bad_input.py", "test_tune_rdb.py", "test_train_distributed.py",
               "test_convert.py", "test_stages.py", "test_structured.py", "test_hardening.py", "test_parity.py",
               "test_quality.py", "test_console.py", "test_pipeline.py", "test_layer_error.py", "test_deploy.py",
               "test_task_pipelines.py"]


@pytest.hookimpl(tryfirst=True)  # before -m selects: the "property" marker below is selectable
def pytest_collection_modifyitems(config, items):
    # property-based tests carry the "property" marker: CI runs them once more with its many
    # examples (HYPOTHESIS_PROFILE=ci bash tools/test.sh -m "slow or property", .ci/run)
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its own order
