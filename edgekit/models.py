"""The model zoo: a registry of small Keras 2 (``tf_keras``) models that output logits.

``create_model(name, input_shape=..., num_classes=..., width=1.0)`` builds one;
``list_models()`` lists them without importing TensorFlow. Classifiers end in a Dense layer of
logits (no softmax), so distillation can use temperatures and converters see a plain classifier.
Every model is width-configurable (``width`` scales every layer's filters or units, at least 1),
so a student can be a narrower copy of its teacher.

With ``reduction`` (an input reduction fitted on the training data, see
:func:`edgekit.data.fit_reduction`), the model starts with a ``Flatten`` and a fixed,
non-trainable ``Dense`` layer named :data:`REDUCTION_LAYER` holding the PCA/LDA projection
(reshaped to ``(K, 1)`` for models that take rank-2 inputs), so the reduction is part of the
model: it is converted, quantized and run on the device like any other layer. Pruning skips it.

The MLPerf Tiny reference architectures are built layer for layer as in the reference training
code (mlcommons/tiny, ``benchmark/training/*``), with logits instead of softmax; their parameter
counts at width 1 and the reference input shapes are pinned in ``tests/test_models.py``.
"""

from __future__ import annotations

import difflib
from typing import Callable

import numpy as np

from .errors import RecipeError

_MODELS: dict[str, tuple[Callable, int, str]] = {}

REDUCTION_LAYER = "input_reduction"
"""Name of the fixed Dense layer that applies a recipe's ``features`` reduction."""


def register_model(name: str, *, rank: int, doc: str):
    """Register a builder ``fn(keras, input_shape, num_classes, reg, w)``.

    ``w(channels)`` scales a layer width by the model's ``width``. The builder returns a list of
    layers (a Sequential model) or a function mapping the input tensor to the output tensor.
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


def model_rank(name: str) -> int:
    """The input rank (without batch) that model ``name`` takes."""
    return _MODELS[name][1]


def create_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0,
                 l1: float = 0.0, l2: float = 0.0, seed: int | None = None, reduction: dict | None = None):
    """Build model ``name`` for ``input_shape`` (without batch) and ``num_classes`` logits
    (regression: ``num_classes=1``, one output; autoencoders output their input's shape).

    ``reduction``: ``{"components" K, "kernel" (D, K), "bias" (K,)}`` puts the fixed input
    reduction in front (see the module docstring); the zoo model then sees ``(K, 1)`` inputs.
    Raises :class:`RecipeError` for an unknown name or an input rank the model cannot take.
    """
    if name not in _MODELS:
        from .model_source import classify

        ref = classify(name)
        if ref.kind != "zoo":
            return _from_builder(name, input_shape=input_shape, num_classes=num_classes, width=width, l1=l1, l2=l2,
                                 seed=seed, reduction=reduction)
        name = ref.name
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(_MODELS))})")
    fn, rank, _ = _MODELS[name]
    if reduction is not None:
        if rank != 2:
            raise RecipeError(f"model {name!r} takes inputs of rank {rank} (images); features.reduce gives "
                              f"(K, 1) vectors: use a model of rank 2 (mlp_tiny, conv1d_*, ...)")
        body_shape = (int(reduction["components"]), 1)
    elif len(input_shape) != rank:
        fits = sorted(n for n, (_, r, _) in _MODELS.items() if r == len(input_shape))
        raise RecipeError(f"model {name!r} takes inputs of rank {rank} (without batch), "
                          f"the dataset has shape {tuple(input_shape)}; zoo models for it: "
                          f"{', '.join(fits) or 'none'} (or your own: model: FILE.py:FUNCTION or a saved model)")
    else:
        body_shape = tuple(input_shape)
    from ._tf import keras, tf

    if seed is not None:
        tf().keras.utils.set_random_seed(seed)
    k = keras()
    reg = k.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None

    def w(channels: int) -> int:
        return max(1, int(round(channels * width)))

    built = fn(k, body_shape, num_classes, reg, w)
    front = _reduction_layers(k, reduction) if reduction is not None else []
    if isinstance(built, list):
        model = k.Sequential([k.layers.Input(input_shape), *front, *built], name=name)
    else:
        inputs = k.layers.Input(input_shape)
        z = inputs
        for layer in front:
            z = layer(z)
        model = k.Model(inputs, built(z), name=name)
    if reduction is not None:
        model.get_layer(REDUCTION_LAYER).set_weights([np.asarray(reduction["kernel"], "float32"),
                                                      np.asarray(reduction["bias"], "float32")])
    return model


def _from_builder(name: str, *, input_shape, num_classes, width, l1, l2, seed, reduction):
    """A model from a builder reference ``FILE.py:FUNCTION`` (see :mod:`edgekit.user_model`)."""
    from .model_source import classify

    ref = classify(name)
    if ref.kind != "builder":
        raise RecipeError(f"model {name!r} is a {ref.kind} model file, not an architecture to build")
    if reduction is not None:
        raise RecipeError(f"{name}: features (an input reduction) goes with zoo models only; remove features or "
                          "put the reduction into your builder")
    from ._tf import tf
    from .user_model import build, strip_softmax

    if seed is not None:
        tf().keras.utils.set_random_seed(seed)
    if l1 or l2:
        import logging

        logging.getLogger(__name__).warning("%s: l1/l2 apply to zoo models only; set regularizers in the builder",
                                            name)
    model, stripped = strip_softmax(build(ref, input_shape=input_shape, num_outputs=num_classes, width=width))
    if stripped:
        import logging

        logging.getLogger(__name__).info("%s: the model ends in softmax: made linear (edgekit trains on logits)",
                                         name)
    return model


def _reduction_layers(k, reduction: dict) -> list:
    """Flatten -> fixed Dense(K) (zeros until the projection is set; no random draws) -> (K, 1)."""
    n = int(reduction["components"])
    return [k.layers.Flatten(name="input_flatten"),
            k.layers.Dense(n, trainable=False, kernel_initializer="zeros", name=REDUCTION_LAYER),
            k.layers.Reshape((n, 1), name="input_reduction_reshape")]


@register_model("cnn_small", rank=3, doc="2D CNN teacher (~85k params on 8x8 digits)")
def _cnn_small(k, shape, n, reg, w):
    L = k.layers
    return [
        L.Conv2D(w(32), 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.Conv2D(w(64), 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(w(64), activation="relu", kernel_regularizer=reg),
        L.Dropout(0.3),
        L.Dense(n, kernel_regularizer=reg, name="logits"),
    ]


@register_model("cnn_tiny", rank=3, doc="2D CNN student (~3.7k params on 8x8 digits)")
def _cnn_tiny(k, shape, n, reg, w):
    L = k.layers
    return [
        L.Conv2D(w(12), 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D(),
        L.Conv2D(w(24), 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(n, kernel_regularizer=reg, name="logits"),
    ]


# Sequence models use Conv2D with (k, 1) kernels on inputs reshaped to (length, 1, channels):
# the same computation as Conv1D, but quantization-aware training (tfmot's 8-bit registry has no
# Conv1D / MaxPooling1D) and TFLite Micro both take it.


@register_model("conv1d_small", rank=2, doc="1D CNN teacher for sequences (~8.8k params on MNIST-1D)")
def _conv1d_small(k, shape, n, reg, w):
    L = k.layers
    return [
        L.Reshape((shape[0], 1, shape[1])),
        L.Conv2D(w(32), (5, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D((2, 1)),
        L.Conv2D(w(32), (5, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D((2, 1)),
        L.Conv2D(w(32), (3, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.GlobalAveragePooling2D(),
        L.Dense(n, kernel_regularizer=reg, name="logits"),
    ]


@register_model("conv1d_tiny", rank=2, doc="1D CNN student for sequences (~3k params on MNIST-1D)")
def _conv1d_tiny(k, shape, n, reg, w):
    L = k.layers
    return [
        L.Reshape((shape[0], 1, shape[1])),
        L.Conv2D(w(16), (5, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D((2, 1)),
        L.Conv2D(w(16), (5, 1), padding="same", activation="relu", kernel_regularizer=reg),
        L.MaxPooling2D((2, 1)),
        L.Flatten(),
        L.Dense(n, kernel_regularizer=reg, name="logits"),
    ]


@register_model("mlp_tiny", rank=2, doc="two-layer MLP on flat features (any length)")
def _mlp_tiny(k, shape, n, reg, w):
    L = k.layers
    return [L.Flatten(), L.Dense(w(32), activation="relu", kernel_regularizer=reg),
            L.Dense(n, kernel_regularizer=reg, name="logits")]


@register_model("mlp_small", rank=2, doc="three-layer MLP on flat features (~5k params on 12 inputs): a teacher "
                                         "for sensor windows and reduced inputs")
def _mlp_small(k, shape, n, reg, w):
    L = k.layers
    return [L.Flatten(), L.Dense(w(64), activation="relu", kernel_regularizer=reg),
            L.Dense(w(64), activation="relu", kernel_regularizer=reg),
            L.Dense(n, kernel_regularizer=reg, name="logits")]


# ------------------------------------------------------------------ MLPerf Tiny reference models


def _bn_relu(k, x):
    return k.layers.Activation("relu")(k.layers.BatchNormalization()(x))


@register_model("resnet8", rank=3, doc="MLPerf Tiny image classification ResNet-8 (78k params at 32x32x3, 10 classes)")
def _resnet8(k, shape, n, reg, w):
    L = k.layers

    def conv(x, filters, kernel, strides=1):
        return L.Conv2D(filters, kernel, strides=strides, padding="same", kernel_initializer="he_normal",
                        kernel_regularizer=reg or k.regularizers.l2(1e-4))(x)

    def build(inputs):
        f = w(16)
        x = _bn_relu(k, conv(inputs, f, 3))
        for stage in range(3):
            filters, strides = f * 2 ** stage, (1 if stage == 0 else 2)
            y = _bn_relu(k, conv(x, filters, 3, strides))
            y = L.BatchNormalization()(conv(y, filters, 3))
            if stage:
                x = conv(x, filters, 1, strides)  # projection shortcut for the stride
            x = L.Activation("relu")(L.Add()([x, y]))
        x = L.AveragePooling2D(pool_size=min(x.shape[1:3]))(x)
        return L.Dense(n, kernel_initializer="he_normal", name="logits")(L.Flatten()(x))

    return build


@register_model("ds_cnn", rank=3, doc="MLPerf Tiny keyword spotting DS-CNN (24.9k params at 49x10x1, 12 classes)")
def _ds_cnn(k, shape, n, reg, w):
    L = k.layers
    f = w(64)
    reg = reg or k.regularizers.l2(1e-4)
    layers = [L.Conv2D(f, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=reg),
              L.BatchNormalization(), L.Activation("relu"), L.Dropout(0.2)]
    for _ in range(4):
        layers += [L.DepthwiseConv2D((3, 3), padding="same", kernel_regularizer=reg), L.BatchNormalization(),
                   L.Activation("relu"),
                   L.Conv2D(f, (1, 1), padding="same", kernel_regularizer=reg), L.BatchNormalization(),
                   L.Activation("relu")]
    pool = (max(1, (shape[0] + 1) // 2), max(1, (shape[1] + 1) // 2))
    return layers + [L.Dropout(0.4), L.AveragePooling2D(pool_size=pool), L.Flatten(), L.Dense(n, name="logits")]


@register_model("mobilenet_v1_025", rank=3,
                doc="MLPerf Tiny visual wake words MobileNetV1 width 0.25 (221k params at 96x96x3, 2 classes)")
def _mobilenet_v1(k, shape, n, reg, w):
    L = k.layers
    reg = reg or k.regularizers.l2(1e-4)
    # (depthwise stride, pointwise filters) at width 0.25: 8 filters in the stem, then doubling
    blocks = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128)] + [(1, 128)] * 5 + [(2, 256), (1, 256)]
    layers = [L.Conv2D(w(8), 3, strides=2, padding="same", kernel_initializer="he_normal", kernel_regularizer=reg),
              L.BatchNormalization(), L.Activation("relu")]
    for stride, filters in blocks:
        layers += [L.DepthwiseConv2D(3, strides=stride, padding="same", kernel_initializer="he_normal",
                                     kernel_regularizer=reg), L.BatchNormalization(), L.Activation("relu"),
                   L.Conv2D(w(filters), 1, padding="same", kernel_initializer="he_normal", kernel_regularizer=reg),
                   L.BatchNormalization(), L.Activation("relu")]
    side = shape[0]
    for stride, _ in [(2, None)] + blocks:
        side = (side + stride - 1) // stride
    return layers + [L.AveragePooling2D(pool_size=max(1, side)), L.Flatten(), L.Dense(n, name="logits")]


@register_model("fc_autoencoder", rank=2,
                doc="MLPerf Tiny anomaly detection dense autoencoder (270k params at 640 inputs); outputs the reconstruction")
def _fc_autoencoder(k, shape, n, reg, w):
    L = k.layers
    size = 1
    for d in shape:
        size *= d
    layers = [L.Flatten()]
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        layers += [L.Dense(w(units), kernel_regularizer=reg), L.BatchNormalization(), L.Activation("relu")]
    return layers + [L.Dense(size, name="reconstruction"), L.Reshape(shape)]
