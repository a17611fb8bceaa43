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
    out = tmp_path_factory.mktemp("tiny_models")
    keras_path = out / "model.keras"
    model.save(keras_path)

    def convert(**kw) -> bytes:
        conv = tf().lite.TFLiteConverter.from_keras_model(model)
        for key, value in kw.items():
            setattr(conv, key, value)
        return conv.convert()

    def rep():
        for i in range(100):
            yield [x_tr[i : i + 1]]

    lite = tf().lite
    paths = {}
    for name, kw in {
        "float": {},
        "int8": dict(optimizations=[lite.Optimize.DEFAULT], representative_dataset=rep),
        "full_int8": dict(optimizations=[lite.Optimize.DEFAULT], representative_dataset=rep,
                          target_spec=_spec(lite), inference_input_type=tf().int8,
                          inference_output_type=tf().int8),
    }.items():
        p = out / f"{name}.tflite"
        p.write_bytes(convert(**kw))
        paths[name] = p
    pred = model.predict(x_te, verbose=0).argmax(1)
    npz = out / "eval.npz"
    np.savez(npz, x=x_te, y=y_te, ref=pred)
    import tf2onnx

    spec = (tf().TensorSpec((None, *model.input_shape[1:]), tf().float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    onnx_path = out / "float.onnx"
    onnx_path.write_bytes(proto.SerializeToString())
    return TinyModels(keras_path, paths["float"], paths["int8"], paths["full_int8"], npz,
                      x_te, y_te, pred, onnx_path)


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
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    folder = tmp_path_factory.mktemp("finished_run")
    recipe_path = folder / "tiny.yaml"
    recipe_path.write_text(TINY_RECIPE)
    out = folder / "run"
    report = Run(load_recipe(recipe_path), recipe_path, out).execute()
    return FinishedRun(recipe_path, out, report)


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


def _bank_run(tmp_path_factory, text: str, name: str) -> tuple[Path, dict]:
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    folder = tmp_path_factory.mktemp(name)
    recipe = folder / f"{name}.yaml"
    recipe.write_text(text)
    report = Run(load_recipe(recipe), recipe, folder / "run").execute()
    return folder / "run", report


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


def _convert_zoo(out: Path, shapes: dict[str, tuple[tuple, int]]) -> dict[str, ZooModel]:
    from edgekit.convert import to_tflite
    from edgekit.models import create_model

    zoo = {}
    for name, (shape, classes) in sorted(shapes.items()):
        model = create_model(name, input_shape=shape, num_classes=classes, seed=0)
        x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)

        def rep(x=x):
            for i in range(len(x)):
                yield [x[i : i + 1]]

        path = out / f"{name}.tflite"
        path.write_bytes(to_tflite(model, mode="full-int8", rep=rep))
        zoo[name] = ZooModel(name, shape, classes, path, x)
    return zoo


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
    return _convert_zoo(tmp_path_factory.mktemp("zoo"), shapes)


@pytest.fixture(scope="session")
def zoo_reference_int8(tmp_path_factory) -> dict[str, ZooModel]:
    """The four MLPerf Tiny zoo models at their reference input shapes, full int8, converted once
    per session (slow tests: TFLite Micro at full size, the latency estimates' calibration check)."""
    return _convert_zoo(tmp_path_factory.mktemp("zoo_reference"), ZOO_REFERENCE_SHAPES)
