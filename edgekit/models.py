"""The model zoo: a registry of small Keras 2 (``tf_keras``) models that output logits.

``create_model(name, input_shape=..., num_classes=...)`` builds one; ``list_models()`` lists
them without importing TensorFlow. Every model ends in a Dense layer of logits (no softmax), so
distillation can use temperatures and converters see a plain classifier.
"""

from __future__ import annotations

import difflib
from typing import Callable

from .errors import RecipeError

_MODELS: dict[str, tuple[Callable, int, str]] = {}


def register_model(name: str, *, rank: int, doc: str):
    """Register a builder ``fn(keras, input_shape, num_classes, reg) -> list[layers]``.

    ``rank`` is the input rank without batch (3 for HxWxC images, 2 for LxC sequences).
    """

    def deco(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = (fn, rank, doc)
        return fn

    return deco


def list_models() -> dict[str, str]:
    """Model names and one-line descriptions."""
    return {name: doc for name, (_, _, doc) in sorted(_MODELS.items())}


def create_model(name: str, *, input_shape: tuple[int, ...], num_classes: int,
                 l1: float = 0.0, l2: float = 0.0, seed: int | None = None):
    """Build model ``name`` for ``input_shape`` (without batch) and ``num_classes`` logits.

    Raises :class:`RecipeError` for an unknown name or an input rank the model cannot take.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(_MODELS))})")
    fn, rank, _ = _MODELS[name]
    if len(input_shape) != rank:
        raise RecipeError(f"model {name!r} takes inputs of rank {rank} (without batch), "
                          f"the dataset has shape {tuple(input_shape)}")
    from ._tf import keras, tf

    if seed is not None:
        tf().keras.utils.set_random_seed(seed)
    k = keras()
    reg = k.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    layers = fn(k, input_shape, num_classes, reg)
    return k.Sequential([k.layers.Input(input_shape), *layers], name=name)


@register_model("cnn_small", rank=3, doc="2D CNN teacher (~85k params on 8x8 digits)")
def _cnn_small(k, shape, n, reg):
    L = k.layers
    return [
        L.Conv2D(32, 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.Conv2D(64, 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(64, activation="relu", kernel_regularizer=reg),
        L.Dropout(0.3),
        L.Dense(n, kernel_regularizer=reg, name="logits"),
    ]


@register_model("cnn_tiny", rank=3, doc="2D CNN student (~3.7k params on 8x8 digits)")
def _cnn_tiny(k, shape, n, reg):
    L = k.layers
    return [
        L.Conv2D(12, 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D(),
        L.Conv2D(24, 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(n, kernel_regularizer=reg, name="logits"),
    ]


# Sequence models use Conv2D with (k, 1) kernels on inputs reshaped to (length, 1, channels):
# the same computation as Conv1D, but quantization-aware training (tfmot's 8-bit registry has no
# Conv1D / MaxPooling1D) and TFLite Micro both take it.


@register_model("conv1d_small", rank=2, doc="1D CNN teacher for sequences (~8.8k params on MNIST-1D)")
def _conv1d_small(k, shape, n, reg):
    L = k.layers
    return [
        L.Reshape((shape[0], 1, shape[1])),
        L.Conv2D(32, (5, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D((2, 1)),
        L.Conv2D(32, (5, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D((2, 1)),
        L.Conv2D(32, (3, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.GlobalAveragePooling2D(),
        L.Dense(n, kernel_regularizer=reg, name="logits"),
    ]


@register_model("conv1d_tiny", rank=2, doc="1D CNN student for sequences (~3k params on MNIST-1D)")
def _conv1d_tiny(k, shape, n, reg):
    L = k.layers
    return [
        L.Reshape((shape[0], 1, shape[1])),
        L.Conv2D(16, (5, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D((2, 1)),
        L.Conv2D(16, (5, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D((2, 1)),
        L.Flatten(),
        L.Dense(n, kernel_regularizer=reg, name="logits"),
    ]


@register_model("mlp_tiny", rank=2, doc="two-layer MLP on flat features (any length)")
def _mlp_tiny(k, shape, n, reg):
    L = k.layers
    return [L.Flatten(), L.Dense(32, activation="relu", kernel_regularizer=reg),
            L.Dense(n, kernel_regularizer=reg, name="logits")]
