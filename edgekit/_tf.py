"""The single place where TensorFlow is imported.

tensorflow-model-optimization only works with Keras 2 (``tf_keras``), and TensorFlow decides
which Keras ``tf.keras`` means when it is first imported, from ``TF_USE_LEGACY_KERAS``. So the
switch is set here, explicitly, right before the first import, and every module that needs
TensorFlow gets it through :func:`tf` / :func:`keras` / :func:`tfmot` instead of importing it.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger(__name__)


@functools.cache
def tf():
    """Return the ``tensorflow`` module, configured for Keras 2 (``tf_keras``)."""
    if "tensorflow" not in _imported():
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    elif os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        log.warning("tensorflow was imported before edgekit set TF_USE_LEGACY_KERAS=1; "
                    "tensorflow-model-optimization may fail")
    import tensorflow

    tensorflow.get_logger().setLevel(logging.ERROR)
    return tensorflow


@functools.cache
def keras():
    """Return ``tf_keras`` (Keras 2), the Keras that tensorflow-model-optimization supports."""
    tf()
    import tf_keras

    return tf_keras


@functools.cache
def tfmot():
    """Return ``tensorflow_model_optimization``."""
    keras()
    import tensorflow_model_optimization

    return tensorflow_model_optimization


def _imported() -> set[str]:
    import sys

    return set(sys.modules)
