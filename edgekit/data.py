"""Datasets: a small registry of sources that need no download, split reproducibly.

Sources: ``digits`` (scikit-learn's bundled 8x8 digits), ``mnist1d`` (generated offline by the
``mnist1d`` package), ``npz:PATH`` (a user file with arrays ``x`` and ``y``, read with
``allow_pickle=False``). Every source yields float32 inputs with a channel axis and int64 labels.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import DataError
from .recipe import DataConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A split dataset. ``x_*`` float32 with a channel axis, ``y_*`` int64 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict:
        return {"name": self.name, "train": len(self.x_train), "val": len(self.x_val),
                "test": len(self.x_test), "classes": self.num_classes,
                "input_shape": list(self.input_shape)}


_SOURCES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {}


def register_source(name: str):
    """Register a loader returning ``(x, y)`` for all samples; duplicate names raise."""

    def deco(fn):
        if name in _SOURCES:
            raise ValueError(f"dataset source {name!r} is already registered")
        _SOURCES[name] = fn
        return fn

    return deco


def list_sources() -> list[str]:
    return sorted(_SOURCES) + ["npz:PATH"]


@register_source("digits")
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype("float32")[..., None], d.target.astype("int64")


@register_source("mnist1d")
def _mnist1d():
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    x = np.concatenate([d["x"], d["x_test"]]).astype("float32")[..., None]
    y = np.concatenate([d["y"], d["y_test"]]).astype("int64")
    return x, y


def _npz(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(f.files)}")
            x, y = f["x"].astype("float32"), f["y"]
    except DataError:
        raise
    except Exception as exc:  # zip/format errors from numpy
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if len(x) != len(y):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must hold integer class labels, found {y.dtype}")
    if x.ndim == 2:
        x = x[..., None]
    return x, y.astype("int64")


def load_dataset(cfg: DataConfig, *, seed: int = 0, base: Path | None = None) -> Dataset:
    """Load ``cfg.source`` and split it into train/val/test, stratified, seeded.

    Raises :class:`DataError` for unknown sources, missing or malformed files.
    """
    src = cfg.source
    if src.startswith("npz:"):
        p = Path(src[4:])
        if base is not None and not p.is_absolute() and not p.exists():
            p = base / p
        x, y = _npz(p)
        name = p.stem
    elif src in _SOURCES:
        x, y = _SOURCES[src]()
        name = src
    else:
        close = difflib.get_close_matches(src, list(_SOURCES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset source {src!r}{hint} (known: {', '.join(list_sources())})")
    if len(x) < 10:
        raise DataError(f"dataset {name!r} has only {len(x)} samples")
    from sklearn.model_selection import train_test_split

    classes = int(y.max()) + 1
    strat = y if np.bincount(y).min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=cfg.test_split, random_state=seed, stratify=strat)
    if cfg.val_split > 0:
        strat = y_tr if np.bincount(y_tr).min() >= 2 else None
        x_tr, x_va, y_tr, y_va = train_test_split(x_tr, y_tr, test_size=cfg.val_split,
                                                  random_state=seed, stratify=strat)
    else:
        x_va, y_va = x_tr[:0], y_tr[:0]
    log.info("dataset %s: %d train, %d val, %d test, %d classes", name, len(x_tr), len(x_va), len(x_te), classes)
    return Dataset(name, x_tr, y_tr, x_va, y_va, x_te, y_te, classes)
