"""Shared fixtures: a seeded tiny dataset and tiny converted models, built once per session."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest


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


def copy_run(run: FinishedRun, dest: Path) -> FinishedRun:
    """A private copy of a finished run (its recipe file beside it), for tests that change it."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    recipe_path = dest / run.recipe_path.name
    shutil.copy2(run.recipe_path, recipe_path)
    out = dest / "run"
    shutil.copytree(run.out, out)
    return FinishedRun(recipe_path, out, run.report)
