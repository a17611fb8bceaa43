"""edgekit: from a training recipe to models that fit real devices, with measured numbers.

Importing this package is cheap: it pulls in no TensorFlow. Heavy frameworks are imported
lazily by the stage that needs them (see :mod:`edgekit._tf`).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
