"""Keras 3 side of taking a Keras 3 model: run as ``python -m edgekit._keras3 SRC OUT_DIR SAMPLE.npz``
in a child process whose environment has no ``TF_USE_LEGACY_KERAS`` (the pipeline's process runs
tf_keras; with the switch set, TensorFlow's graph optimizer rejects the Keras 3 graph's ops).

Loads ``SRC`` with Keras 3 (``safe_mode`` on, not compiled) and writes into ``OUT_DIR``:
``config.json`` (the model's serialized config), ``weights.npz`` (``LAYER::I`` -> the layer's
I-th weight) and ``outputs.npy`` (the model's outputs on the ``x`` of ``SAMPLE.npz``), which
:mod:`edgekit.user_model` rebuilds as tf_keras and compares. Errors: one line on stderr, exit 3.
This module imports nothing of edgekit's TensorFlow side.
"""

from __future__ import annotations

import json
import os
import sys


class ShapeMismatch(ValueError):
    """The model's input shape does not fit the data's."""


def shape_fit(model_shape: tuple, data_shape: tuple) -> str:
    """``"same"`` when inputs of ``data_shape`` fit the model's ``model_shape`` (both without the
    batch axis; None matches any size), ``"squeeze"`` when they fit without the channel axis of
    size 1 that edgekit adds to tables of features (data (12, 1), model (12,)); else
    :class:`ShapeMismatch` saying both."""
    model_shape, data_shape = tuple(model_shape), tuple(data_shape)
    if len(model_shape) == len(data_shape) and all(m is None or m == d for m, d in zip(model_shape, data_shape)):
        return "same"
    if data_shape[-1:] == (1,) and len(model_shape) == len(data_shape) - 1 and \
            all(m is None or m == d for m, d in zip(model_shape, data_shape[:-1])):
        return "squeeze"
    shown = tuple(None if m is None else int(m) for m in model_shape)
    raise ShapeMismatch(f"the model takes inputs {shown}, the data gives {data_shape}; give data of the "
                        f"model's input shape (data.source) or a model for inputs {data_shape}")


def fit_shape(model_shape: tuple, x):
    """``x`` reshaped as :func:`shape_fit` allows."""
    return x.reshape(x.shape[:-1]) if shape_fit(model_shape, x.shape[1:]) == "squeeze" else x


def export(src: str, out_dir: str, sample: str) -> dict:
    import numpy as np

    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    import keras

    model = keras.saving.load_model(src, compile=False, safe_mode=True)
    config = keras.saving.serialize_keras_object(model)
    weights = {}
    for layer in model.layers:
        for i, w in enumerate(layer.get_weights()):
            weights[f"{layer.name}::{i}"] = np.asarray(w)
    with np.load(sample, allow_pickle=False) as f:
        x = f["x"]
    x = fit_shape(tuple(model.input_shape[1:]), x)
    out = model(x, training=False)
    outputs = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    np.savez(os.path.join(out_dir, "weights.npz"), **weights)
    np.save(os.path.join(out_dir, "outputs.npy"), outputs, allow_pickle=False)
    np.save(os.path.join(out_dir, "inputs.npy"), x, allow_pickle=False)
    return {"keras_version": keras.__version__}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m edgekit._keras3 SRC OUT_DIR SAMPLE.npz", file=sys.stderr)
        return 2
    try:
        info = export(*argv)
    except ShapeMismatch as exc:
        print(f"error: ShapeMismatch: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # noqa: BLE001 - one line for the parent process
        text = " ".join(str(exc).split())[:600]
        print(f"error: {type(exc).__name__}: {text}", file=sys.stderr)
        return 3
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))
