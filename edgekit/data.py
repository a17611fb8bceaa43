"""Datasets: a small registry of sources that need no download, split reproducibly.

Sources: ``digits`` (scikit-learn's bundled 8x8 digits), ``mnist1d`` (generated offline by the
``mnist1d`` package), ``fermentation`` and ``machine-anomaly`` (simulated sensors, see
:mod:`edgekit.simulated`), ``npz:PATH`` (arrays ``x``/``y``, or ``x_train``/``y_train``/``x_test``/
``y_test``; read with ``allow_pickle=False``), ``csv:PATH`` (a header row; the ``data.label``
column holds the classes), ``images:DIR`` (one sub-folder per class), ``wav:DIR`` (one
sub-folder of ``.wav`` recordings per class, see :mod:`edgekit.wavs`). Paths are relative to the
recipe. ``ucr:NAME`` / ``uea:NAME``: recorded UCR/UEA archive datasets that install with a package,
their official train/test split kept (:mod:`edgekit.archives`). ``kws:espeak``: synthetic
keyword-spotting speech (espeak-ng + sox, cached), split by voice into train/val/test
(:mod:`edgekit.speech`). Every source yields float32 inputs with a channel axis and labels: int64 classes
(classification; anomaly: 0 normal, 1 anomaly) or float32 values (regression). Optional
normalization (min-max or z-score per feature) is fitted on the training split only and its
parameters travel with the run (``Dataset.normalization``) so a device applies the same; so is
an optional input reduction (``features: {reduce: pca | lda}``, ``Dataset.reduction``), which
the models carry as their first layer (:func:`edgekit.models.create_model`).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import DataError, one_line
from .recipe import ARCHIVE_SOURCES, DataConfig, FeaturesConfig, Task, recipe_relative

log = logging.getLogger(__name__)

MAX_CLASSES = 10_000
"""Most classes a classification or anomaly dataset may have: labels must be 0..K-1, K <= this
(checked before anything is allocated per class)."""

MAX_ARRAY_BYTES = int(os.environ.get("EDGEKIT_MAX_ARRAY_BYTES", 4 << 30))
"""Largest decompressed array (one ``.npz`` member, or all images of an ``images:`` folder as
float32) edgekit loads: 4 GiB, or the ``EDGEKIT_MAX_ARRAY_BYTES`` environment variable. Sizes
are read from the ``.npy`` headers / image headers before anything is decoded."""

MAX_IMAGE_PIXELS = int(os.environ.get("EDGEKIT_MAX_IMAGE_PIXELS", 4096 * 4096))
"""Largest image (width x height) an ``images:`` folder may hold: 4096x4096, or the
``EDGEKIT_MAX_IMAGE_PIXELS`` environment variable. Larger ones are refused as possible
decompression bombs before they are decoded."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                            ".ppm", ".pgm", ".pbm", ".pnm"})
"""File suffixes an ``images:`` folder reads as images (case-insensitive); other files, and
hidden ones (``.DS_Store``, ``._x.png``, ``.git/``), are skipped with a warning."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A split dataset. ``x_*`` float32 with a channel axis; ``y_*`` int64 class indices
    (classification; anomaly: 0 normal, 1 anomaly) or float32 values (regression).

    ``num_classes`` is the number of classes, and for regression 1 (the model's one output).
    ``reduction`` (None: none): the input reduction fitted on the training split, as the weights
    of the Dense layer that applies it: ``{"kind", "components", "kernel" (D, K), "bias" (K,),
    "input_size" D, "variance_kept"}``; ``x_*`` stay the unreduced inputs.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    normalization: dict | None = None   # {"kind", "offset", "scale"}: x_model = (x_raw - offset) / scale
    task: str = Task.classification.value
    reduction: dict | None = None
    class_names: tuple[str, ...] | None = None   # the source's names of classes 0..K-1 (archives), else None
    frontend: str | None = None   # data.frontend that made x_* from waveforms (edgekit.audio), else None
    label: str | None = None      # what the data are when that qualifies every number (kws: synthetic speech)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict:
        return {"name": self.name, "train": len(self.x_train), "val": len(self.x_val),
                "test": len(self.x_test),
                "classes": None if self.task == Task.regression.value else self.num_classes,
                "input_shape": list(self.input_shape), "task": self.task,
                **({"class_names": list(self.class_names)} if self.class_names is not None else {}),
                **({"frontend": self.frontend} if self.frontend is not None else {}),
                **({"label": self.label} if self.label is not None else {})}

    def reduction_info(self) -> dict | None:
        """What the input reduction does, for the report: kind, input size before and after,
        variance kept (PCA: sum of the explained variance ratios of the K components; LDA: of
        ``explained_variance_ratio_``, the share of between-class variance). None without one."""
        r = self.reduction
        if r is None:
            return None
        return {"reduce": r["kind"], "components": r["components"], "input_size": r["input_size"],
                "reduced_size": r["components"], "variance_kept": r["variance_kept"]}


_SOURCES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray] | list]] = {}


def register_source(name: str):
    """Register a loader returning ``(x, y)`` for all samples, or a given split
    ``[(x_train, y_train), (x_test, y_test)]``; duplicate names raise."""

    def deco(fn):
        if name in _SOURCES:
            raise ValueError(f"dataset source {name!r} is already registered")
        _SOURCES[name] = fn
        return fn

    return deco


def list_sources() -> list[str]:
    from .archives import names

    from .recipe import SPEECH_SOURCES

    return sorted(_SOURCES) + ["npz:PATH", "csv:PATH", "images:DIR", "wav:DIR"] + list(SPEECH_SOURCES) + names()


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


@register_source("fermentation")
def _fermentation():
    from .simulated import fermentation

    return fermentation()


@register_source("machine-anomaly")
def _machine_anomaly():
    from .simulated import machine_anomaly

    return machine_anomaly()


def _resolve(path: str, base: Path | None) -> Path:
    """A dataset path as the recipe names it: relative to the recipe's folder when it exists there
    (never escaping it through a symlink, see :func:`edgekit.recipe.recipe_relative`)."""
    return recipe_relative(path, base, "data.source")


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of every array in an ``.npz``, read from the ``.npy`` headers of
    the zip members without loading (or decompressing) any data.

    Raises :class:`DataError` for a file that is not a zip of ``.npy`` arrays, an object
    (pickled) array, or an array above :data:`MAX_ARRAY_BYTES` decompressed.
    """
    import zipfile

    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version in ((2, 0), (3, 0)):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                out[name] = (tuple(int(d) for d in shape), np.dtype(dtype))
    except DataError:
        raise
    except Exception as exc:  # BadZipFile, bad .npy headers
        raise DataError(f"{path}: not a readable .npz file ({one_line(exc)})") from None
    for name, (shape, dtype) in out.items():
        if dtype.hasobject:
            raise DataError(f"{path}: not a readable .npz file: array {name!r} holds Python objects ({dtype}), which would need "
                            "unpickling; save numeric arrays (np.savez with numbers)")
        size = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if size > MAX_ARRAY_BYTES:
            raise DataError(f"{path}: array {name!r} of shape {shape} ({dtype}) is {size} bytes decompressed, "
                            f"above the limit of {MAX_ARRAY_BYTES} bytes (EDGEKIT_MAX_ARRAY_BYTES); "
                            "use a smaller dataset or raise the limit")
    return out


def _npz(path: Path, task: str = "classification"):
    """``x``/``y``, or a given split ``x_train``/``y_train``/``x_test``/``y_test``; never unpickles.
    Array sizes are checked from their headers before loading (:func:`npz_headers`)."""
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    files = set(npz_headers(path))
    if {"x_train", "y_train", "x_test", "y_test"} <= files:
        keys = ("x_train", "y_train", "x_test", "y_test")
    elif {"x", "y"} <= files:
        keys = ("x", "y")
    else:
        raise DataError(f"{path}: expected arrays x, y (or x_train, y_train, x_test, y_test), "
                        f"found {sorted(files)}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = [f[k] for k in keys]
    except Exception as exc:  # zip/format/pickle-refused errors from numpy
        raise DataError(f"{path}: not a readable .npz file ({one_line(exc)})") from None
    pairs = [(arrays[i], arrays[i + 1]) for i in range(0, len(arrays), 2)]
    return [_check_xy(path, x, y, part, task) for (x, y), part in zip(pairs, ("train", "test") if len(pairs) > 1 else ("",))]


def _csv(path: Path, label: str, task: str = "classification"):
    """A CSV with a header row: the ``label`` column holds integer classes (regression: numbers),
    the rest features."""
    import csv

    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    try:
        if path.stat().st_size > MAX_ARRAY_BYTES:
            raise DataError(f"{path}: {path.stat().st_size} bytes is above the limit of {MAX_ARRAY_BYTES} bytes "
                            "(EDGEKIT_MAX_ARRAY_BYTES); use a smaller dataset or raise the limit")
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a UTF-8 BOM is not part of a name
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label not in header:
        raise DataError(f"{path}: no label column {label!r} (columns: {', '.join(header)}); set data.label")
    if header.count(label) > 1:
        raise DataError(f"{path}: the label column {label!r} appears {header.count(label)} times in the header; "
                        "the other copies would leak the label into the features: rename or drop them")
    if len(header) < 2:
        raise DataError(f"{path}: only the label column {label!r}, no feature columns; add the features "
                        "as more columns")
    li = header.index(label)
    feats, labels = [], []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: line {n} has {len(row)} fields, the header has {len(header)}")
        try:
            labels.append(float(row[li]) if task == Task.regression.value else int(row[li]))
            feats.append([float(v) for i, v in enumerate(row) if i != li])
        except ValueError as exc:
            raise DataError(f"{path}: line {n}: {exc}") from None
    if not labels:
        raise DataError(f"{path}: no data rows, only the header; add samples")
    return [_check_xy(path, np.asarray(feats, "float32"), np.asarray(labels), "", task)]


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _images(folder: Path):
    """One sub-folder per class (sorted names = class ids); every image the same size, RGB.

    Hidden entries (``.DS_Store``, ``._x.png``, ``.git/``) and files whose suffix is not an image
    (:data:`IMAGE_SUFFIXES`) are skipped with a warning. Each image's size is read from its
    header before it is decoded: above :data:`MAX_IMAGE_PIXELS`, or all images together above
    :data:`MAX_ARRAY_BYTES` as float32, it is refused (a decompression bomb).
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    entries = sorted(folder.iterdir())
    classes = [p for p in entries if p.is_dir() and not _hidden(p)]
    skipped = [p.name for p in entries if p not in classes]
    if len(classes) < 2:
        raise DataError(f"{folder}: expected one sub-folder per class, found {len(classes)}")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{folder}: {len(classes)} class folders, more than the limit of {MAX_CLASSES} classes")
    from PIL import Image, UnidentifiedImageError

    xs, ys, size, total = [], [], None, 0
    for cid, cdir in enumerate(classes):
        files = []
        for p in sorted(cdir.iterdir()):
            if _hidden(p) or not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(f"{cdir.name}/{p.name}")
            else:
                files.append(p)
        if not files:
            raise DataError(f"{cdir}: class {cdir.name!r} has no images "
                            f"(read: {', '.join(sorted(IMAGE_SUFFIXES))})")
        for p in files:
            try:
                with Image.open(p) as im:  # lazy: reads the header only
                    w, h = im.size
                    if w * h > MAX_IMAGE_PIXELS:
                        raise DataError(f"{p}: image is {w}x{h} = {w * h} pixels, above the limit of "
                                        f"{MAX_IMAGE_PIXELS} (EDGEKIT_MAX_IMAGE_PIXELS); refused as a possible "
                                        "decompression bomb: resize it")
                    total += w * h * 3 * 4
                    if total > MAX_ARRAY_BYTES:
                        raise DataError(f"{folder}: the images add up to more than {MAX_ARRAY_BYTES} bytes as "
                                        f"float32 (EDGEKIT_MAX_ARRAY_BYTES; at {p.name}); use fewer or smaller "
                                        "images or raise the limit")
                    arr = np.asarray(im.convert("RGB"), dtype="float32") / 255.0
            except DataError:
                raise
            except Image.DecompressionBombError as exc:
                raise DataError(f"{p}: refused as a possible decompression bomb ({one_line(exc)}); "
                                "resize it") from None
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                raise DataError(f"{p}: not a readable image ({one_line(exc)})") from None
            if size is None:
                size = arr.shape
            elif arr.shape != size:
                raise DataError(f"{p}: image is {arr.shape[1]}x{arr.shape[0]}, the others are {size[1]}x{size[0]}")
            xs.append(arr)
            ys.append(cid)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        log.warning("%s: skipped %d hidden or non-image entries (%s)", folder, len(skipped), shown)
    return [_check_xy(folder, np.stack(xs), np.asarray(ys), "")]


def _check_xy(where: Path | str, x: np.ndarray, y: np.ndarray, part: str, task: str = "classification"):
    tag = f" ({part} split)" if part else ""
    if x.dtype.kind not in "fiub":
        raise DataError(f"{where}{tag}: x must be numeric, found {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{where}{tag}: x has shape {x.shape}; expected (samples, features...) with at least "
                        "one feature per sample")
    if len(x) == 0:
        raise DataError(f"{where}{tag}: x holds no samples; add samples")
    if 0 in x.shape[1:]:
        raise DataError(f"{where}{tag}: x has shape {x.shape}: zero features per sample; each sample needs "
                        "at least one feature")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        x = x.astype("float32")
    if len(x) != len(y):
        raise DataError(f"{where}{tag}: x has {len(x)} samples but y has {len(y)}")
    if task == Task.regression.value:
        if y.ndim != 1 or y.dtype.kind not in "fiub":
            raise DataError(f"{where}{tag}: y must be a 1-D array of numbers (task regression), "
                            f"found {y.dtype} {y.shape}")
        y = y.astype("float32")
        if not np.isfinite(y).all():
            raise DataError(f"{where}{tag}: {int((~np.isfinite(y)).sum())} labels are NaN or inf; clean or drop them")
    elif y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise DataError(f"{where}{tag}: y must be a 1-D array of integer class labels, found {y.dtype} {y.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(1).sum())
        raise DataError(f"{where}{tag}: {bad} samples hold NaN or inf values; clean or drop them")
    if x.ndim == 2:
        x = x[..., None]
    if task == Task.regression.value:
        return x, y
    if len(y) and y.min() < 0:
        raise DataError(f"{where}{tag}: labels out of range: {int(y.min())} (labels must be 0..K-1)")
    if len(y) and int(y.max()) >= MAX_CLASSES:
        raise DataError(f"{where}{tag}: label {int(y.max())} is out of range: labels must be class indices "
                        f"0..K-1 with at most {MAX_CLASSES} classes; renumber the classes 0, 1, 2, ...")
    if task == Task.anomaly.value and len(y) and y.max() > 1:
        raise DataError(f"{where}{tag}: task anomaly needs labels 0 (normal) and 1 (anomaly), found {int(y.max())}")
    return x, y.astype("int64")


def _stratify(y: np.ndarray, share: float, classes: int) -> np.ndarray | None:
    """Stratify a split when every class can appear on both sides, else split at random."""
    import math

    held = math.ceil(share * len(y))
    if np.bincount(y, minlength=classes).min() >= 2 and held >= classes and len(y) - held >= classes:
        return y
    log.warning("split of %d samples is too small to stratify over %d classes; splitting at random", len(y), classes)
    return None


def _normalize(cfg: DataConfig, x_tr: np.ndarray, *others: np.ndarray, tabular: bool = False):
    """Fit ``cfg.normalize`` on the training split only; apply it to every split. ``auto`` is
    ``zscore`` for ``tabular`` data (features of different scales quantize badly: one feature
    100x larger than the rest takes the whole int8 range of the input), else ``none``."""
    kind = cfg.normalize
    if kind == "auto":
        kind = "zscore" if tabular else "none"
        if tabular:
            log.info("data.normalize auto: zscore per feature (fitted on the training split); set "
                     "data.normalize: none to feed the features as they are")
    if kind == "none":
        return None, (x_tr, *others)
    if kind == "minmax":
        offset, span = x_tr.min(0), x_tr.max(0) - x_tr.min(0)
    else:
        offset, span = x_tr.mean(0), x_tr.std(0)
    scale = np.where(span > 0, span, 1.0).astype("float32")
    offset = offset.astype("float32")
    params = {"kind": kind, "offset": offset, "scale": scale}
    return params, tuple((a - offset) / scale for a in (x_tr, *others))


def load_dataset(cfg: DataConfig, *, seed: int = 0, base: Path | None = None,
                 task: Task | str = Task.classification, features: FeaturesConfig | None = None) -> Dataset:
    """Load ``cfg.source``, validate it, split it into train/val/test (stratified by class for
    classification and anomaly, seeded) and normalize it with statistics of the training split
    only; with ``features``, fit the input reduction on the training split too.

    ``task`` decides what a label is: a class (classification), a number (regression), 0 normal /
    1 anomaly (anomaly). Raises :class:`DataError` for unknown sources, missing or malformed
    files, NaN/inf values, labels out of range, classes without samples, splits of different
    shapes, and a reduction the data cannot take.
    """
    task = Task(task).value
    src = cfg.source
    kind, _, arg = src.partition(":")
    raw_rank = None
    class_names = None
    rate = None  # the sample rate of a source that says (wav:, kws:), for data.frontend
    label = None  # Dataset.label
    # with data.normal_class the files hold classes (mapped to 0/1 below): read them as classes
    read_task = Task.classification.value if cfg.normal_class is not None and task == Task.anomaly.value else task
    if kind in ARCHIVE_SOURCES and arg:
        from .archives import load

        pairs, class_names, _ = load(src)
        parts = [_check_xy(src, x, y, part) for (x, y), part in zip(pairs, ("train", "test"))]
        name = src
    elif kind == "wav" and arg:
        from .wavs import read_folder

        if task == Task.regression.value:
            raise DataError(f"{arg}: wav:DIR holds classes (one folder each); task regression needs numbers")
        wx, wy, class_names, rate = read_folder(_resolve(arg, base), MAX_ARRAY_BYTES)
        parts, name = [_check_xy(arg, wx, wy, "", read_task)], Path(arg).name
    elif kind == "kws" and arg:
        from .speech import LABEL, SAMPLE_RATE
        from .speech import load as load_speech

        label = LABEL
        if task == Task.regression.value:
            raise DataError(f"{src}: speech clips hold classes (words); task regression needs numbers")
        speech_parts, class_names = load_speech(src, cfg.speech, max_bytes=MAX_ARRAY_BYTES)
        names = ("train", "val", "test") if len(speech_parts) == 3 else ("train", "test")
        parts = [_check_xy(src, x, y, part, read_task) for (x, y), part in zip(speech_parts, names)]
        name, rate = src, SAMPLE_RATE
    elif kind == "npz" and arg:
        parts, name = _npz(_resolve(arg, base), read_task), Path(arg).stem
        raw_rank = _npz_rank(_resolve(arg, base))
    elif kind == "csv" and arg:
        parts, name = _csv(_resolve(arg, base), cfg.label, read_task), Path(arg).stem
    elif kind == "images" and arg:
        parts, name = _images(_resolve(arg, base)), Path(arg).name
        if task == Task.regression.value:
            raise DataError(f"{arg}: images:DIR holds classes (one folder each); task regression needs numbers")
    elif src in _SOURCES:
        got = _SOURCES[src]()
        pairs = got if isinstance(got, list) else [got]
        parts = [_check_xy(src, x, y, part, read_task)
                 for (x, y), part in zip(pairs, ("train", "test") if len(pairs) > 1 else ("",))]
        name = src
    else:
        close = difflib.get_close_matches(src, list(_SOURCES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset source {src!r}{hint} (known: {', '.join(list_sources())})")
    if cfg.normal_class is not None:
        parts, class_names = _one_class_normal(name, parts, class_names, cfg.normal_class, task)
    # a table of features (csv:, or npz: with x of shape (samples, features)): auto-normalized
    tabular = cfg.frontend is None and (kind == "csv" or (kind == "npz" and raw_rank == 2 and
                                                          all(x.ndim == 3 and x.shape[-1] == 1 for x, _ in parts)))
    all_y = np.concatenate([y for _, y in parts])
    if task == Task.regression.value:
        classes = 1
    else:
        classes = int(all_y.max()) + 1 if len(all_y) else 0
        counts = np.bincount(all_y, minlength=classes)
        if task == Task.anomaly.value:
            if not len(all_y) or counts[0] == 0:
                raise DataError(f"dataset {name!r}: task anomaly needs normal samples (label 0) to train on")
            classes = 2
        elif classes < 2:
            raise DataError(f"dataset {name!r} needs at least 2 classes, found {classes}")
        empty = [i for i, c in enumerate(counts) if c == 0]
        if empty and task == Task.classification.value:
            shown = str(empty) if len(empty) <= 10 else f"[{', '.join(map(str, empty[:10]))}, ...] ({len(empty)} classes)"
            raise DataError(f"dataset {name!r}: class(es) {shown} have no samples (labels must be 0..{classes - 1} "
                            "with every class present)")

    def stratify(y, share):
        if task == Task.regression.value:
            return None
        if task == Task.anomaly.value and np.bincount(y, minlength=classes).min() == 0:
            return None  # only normal samples: nothing to stratify
        return _stratify(y, share, classes)

    given_val = len(parts) == 3   # a source with its own validation split (kws: validation voices)
    if given_val:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
        if not x_tr.shape[1:] == x_va.shape[1:] == x_te.shape[1:]:
            raise DataError(f"dataset {name!r}: train, val and test samples have shapes {x_tr.shape[1:]}, "
                            f"{x_va.shape[1:]} and {x_te.shape[1:]}")
    elif len(parts) == 2:
        (x_tr, y_tr), (x_te, y_te) = parts
        if x_tr.shape[1:] != x_te.shape[1:]:
            raise DataError(f"dataset {name!r}: x_train samples have shape {x_tr.shape[1:]} but x_test "
                            f"{x_te.shape[1:]}")
    else:
        x, y = parts[0]
        if len(x) < 10:
            raise DataError(f"dataset {name!r} has only {len(x)} samples")
        x_tr, x_te, y_tr, y_te = _split(name, "data.test_split", x, y, cfg.test_split, seed, stratify)
    if given_val:
        pass
    elif cfg.val_split > 0:
        x_tr, x_va, y_tr, y_va = _split(name, "data.val_split", x_tr, y_tr, cfg.val_split, seed, stratify)
    else:
        x_va, y_va = x_tr[:0], y_tr[:0]
    if cfg.window is not None:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (
            _windows(name, x, y, cfg.window.length, cfg.window.stride, part)
            for x, y, part in ((x_tr, y_tr, "train"), (x_va, y_va, "val"), (x_te, y_te, "test")))
    if cfg.frontend is not None:
        x_tr, x_va, x_te = _frontend(name, cfg.frontend, rate, x_tr, x_va, x_te)
    norm, (x_tr, x_va, x_te) = _normalize(cfg, x_tr, x_va, x_te, tabular=tabular)
    if task == Task.regression.value:
        log.info("dataset %s: %d train, %d val, %d test, regression (labels %.3g..%.3g)", name, len(x_tr),
                 len(x_va), len(x_te), float(all_y.min()), float(all_y.max()))
    else:
        log.info("dataset %s: %d train, %d val, %d test, %d classes", name, len(x_tr), len(x_va), len(x_te), classes)
    reduction = fit_reduction(features, x_tr, y_tr, name=name) if features is not None else None
    return Dataset(name, x_tr, y_tr, x_va, y_va, x_te, y_te, classes, norm, task, reduction,
                   tuple(class_names) if class_names is not None else None, cfg.frontend, label)


def _frontend(name: str, kind: str, rate: int | None, *splits: np.ndarray) -> tuple[np.ndarray, ...]:
    """``data.frontend``: every split's 1 s clips -> features (:func:`edgekit.audio.features`)."""
    from . import audio

    checked = [audio.check_waveforms(x, name=name, sample_rate_hz=rate) for x in splits]
    if rate is None:
        log.info("dataset %s: the source gives no sample rate; data.frontend takes its clips as %d Hz",
                 name, audio.SAMPLE_RATE_HZ)
    out = tuple(audio.features(x, kind) for x in checked)
    log.info("data.frontend %s: %d clips -> features of shape %s", kind, sum(len(x) for x in out),
             audio.output_shape(kind))
    return out


def _one_class_normal(name: str, parts: list, class_names: list[str] | None, normal: str, task: str):
    """``data.normal_class``: that class becomes 0 (normal), every other 1 (anomaly)."""
    if task != Task.anomaly.value:
        raise DataError(f"dataset {name!r}: data.normal_class applies to task anomaly only; remove it or set task: anomaly")
    k = int(max(int(y.max()) for _, y in parts if len(y))) + 1
    known = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if normal in known:
        idx = known.index(normal)
    else:
        close = difflib.get_close_matches(normal, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"dataset {name!r}: data.normal_class {normal!r} is not one of its classes{hint} "
                        f"(classes: {', '.join(known)})")
    log.info("dataset %s: class %r is normal (0), the other %d class(es) anomalies (1)", name, normal, len(known) - 1)
    mapped = [(x, (y != idx).astype("int64")) for x, y in parts]
    return mapped, ["normal: " + normal, "anomaly: " + ", ".join(c for c in known if c != normal)]


def _windows(name: str, x: np.ndarray, y: np.ndarray, length: int, stride: int, part: str):
    """Every window of ``length`` steps, starts ``stride`` apart, of each series in ``x`` (n, steps,
    channels); each window keeps its series' label. Called per split, so windows never cross splits."""
    if x.ndim != 3:
        raise DataError(f"dataset {name!r}: data.window needs series of shape (length, channels); samples here "
                        f"have shape {x.shape[1:]}")
    steps = x.shape[1]
    if length > steps:
        raise DataError(f"dataset {name!r}: data.window.length {length} is longer than its series ({steps} steps); "
                        f"use at most {steps}")
    starts = np.arange(0, steps - length + 1, stride)
    idx = starts[:, None] + np.arange(length)[None, :]
    wx = x[:, idx, :].reshape(-1, length, x.shape[2])
    wy = np.repeat(y, len(starts))
    log.info("data.window: %d %s series -> %d windows of %d steps (stride %d)", len(x), part, len(wx), length, stride)
    return wx, wy


def _split(name: str, key: str, x: np.ndarray, y: np.ndarray, share: float, seed: int, stratify):
    """``train_test_split`` (stratified by ``stratify(y, share)``) that leaves both sides non-empty,
    else a :class:`DataError` naming ``key``."""
    import math

    from sklearn.model_selection import train_test_split

    held = math.ceil(share * len(y))
    if held < 1 or len(y) - held < 1:
        raise DataError(f"dataset {name!r}: {len(y)} samples are too few for {key} {share:g} (it would leave "
                        f"{held} held out and {len(y) - held} to train on); add samples or change {key}")
    try:
        return train_test_split(x, y, test_size=share, random_state=seed, stratify=stratify(y, share))
    except ValueError as exc:
        raise DataError(f"dataset {name!r}: cannot split {len(y)} samples by {key} {share:g} "
                        f"({one_line(exc)}); add samples or change {key}") from None


def load_for_recipe(recipe, *, base: Path | None = None) -> Dataset:
    """The dataset of ``recipe`` (a :class:`edgekit.recipe.Recipe`): its data, seed, task and features.

    ``data.normalize: auto`` is ``none`` when the recipe gives a trained model file (it was trained
    on the data as it is; normalizing would feed it inputs it never saw)."""
    from .model_source import classify

    cfg = recipe.data
    given = [c.model for c in (recipe.teacher, recipe.student) if c is not None and classify(c.model).trained]
    if cfg.normalize == "auto" and given:
        log.info("data.normalize auto: none, as %s is a trained model", given[0])
        cfg = cfg.model_copy(update={"normalize": "none"})
    return load_dataset(cfg, seed=recipe.seed, base=base, task=recipe.task, features=recipe.features)


def _npz_rank(path: Path) -> int | None:
    """Rank of the x array(s) of an npz file as stored (2: a table of features), without loading them."""
    try:
        with np.load(path, allow_pickle=False) as f:
            key = "x" if "x" in f.files else "x_train"
            return len(f[key].shape)
    except Exception:  # noqa: BLE001 - _npz reported any problem already
        return None


def fit_reduction(cfg: FeaturesConfig, x_train: np.ndarray, y_train: np.ndarray, *, name: str = "data") -> dict:
    """Fit PCA or LDA (scikit-learn) on the flattened training inputs; return the Dense layer that
    applies it (``kernel`` (D, K), ``bias`` (K,): ``x_flat @ kernel + bias`` equals
    ``transform(x_flat)``) and the variance it keeps. Raises :class:`DataError` when K is too large."""
    flat = x_train.reshape(len(x_train), -1).astype("float64")
    d, k = flat.shape[1], cfg.components
    if cfg.reduce == "pca":
        limit = min(d, len(flat))
        if k > limit:
            raise DataError(f"dataset {name!r}: features.components {k} > {limit} (PCA keeps at most "
                            f"min(features, training samples) components)")
        from sklearn.decomposition import PCA

        pca = PCA(n_components=k, svd_solver="full").fit(flat)
        kernel = pca.components_.T
        bias = -pca.mean_ @ kernel
        kept = float(np.sum(pca.explained_variance_ratio_))
    else:
        classes = len(np.unique(y_train))
        limit = min(d, classes - 1)
        if k > limit:
            raise DataError(f"dataset {name!r}: features.components {k} > {limit} (LDA keeps at most "
                            f"min(features, classes - 1) components)")
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        lda = LinearDiscriminantAnalysis(solver="svd").fit(flat, y_train)
        kernel = lda.scalings_[:, :k]
        bias = -lda.xbar_ @ kernel
        kept = float(np.sum(lda.explained_variance_ratio_[:k]))
    log.info("features: %s %d -> %d inputs, variance kept %.4f", cfg.reduce, d, k, kept)
    return {"kind": cfg.reduce, "components": k, "kernel": kernel.astype("float32"), "bias": bias.astype("float32"),
            "input_size": d, "variance_kept": round(kept, 6)}


def source_digest(cfg: DataConfig, *, base: Path | None = None) -> str | None:
    """sha256 of what a file source holds (``npz:``/``csv:`` the file's bytes; ``images:`` every
    file under the folder: its relative name, size and bytes, in sorted order), so a run's
    fingerprint changes when the data does though its path does not. None for sources that are
    not files (bundled or generated: their content is fixed by edgekit's version). Reads each
    byte once; raises :class:`DataError` when the file or folder is missing. ``kws:`` speech: its
    cache key (the generator settings and the espeak-ng and sox versions), so a new espeak-ng
    changes the fingerprint."""
    import hashlib

    kind, _, arg = cfg.source.partition(":")
    if kind == "kws" and arg:
        from .recipe import SpeechConfig
        from .speech import cache_key, tools

        return "kws-" + cache_key(cfg.speech if cfg.speech is not None else SpeechConfig(), tools())
    if kind not in ("npz", "csv", "images", "wav") or not arg:
        return None
    path = _resolve(arg, base)
    h = hashlib.sha256(kind.encode())
    if kind in ("images", "wav"):
        if not path.is_dir():
            raise DataError(f"{path}: {'image' if kind == 'images' else 'wav'} folder not found (data.source {cfg.source})")
        files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    else:
        if not path.is_file():
            raise DataError(f"{path}: data file not found (data.source {cfg.source})")
        files = [path]
    from ._io import hash_files

    hash_files(h, files, path)
    return h.hexdigest()
