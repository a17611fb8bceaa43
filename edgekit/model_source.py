"""What ``teacher.model`` / ``student.model`` name: a zoo model, a saved model, a builder function
or an already converted float model. One parser, no TensorFlow (the recipe layer uses it).

A reference is one of::

    cnn_small                     a zoo name (edgekit models list)
    my_model.keras | net.h5       a Keras file (tf_keras or Keras 3), relative to the recipe's folder
    exported/                     a SavedModel folder (saved_model.pb inside)
    my_models.py:build            build(input_shape, num_outputs, width) -> keras model, in the recipe's folder
    float.tflite | model.onnx     an already converted float model

or the same with an explicit kind: ``zoo:NAME``, ``keras:PATH``, ``savedmodel:PATH``,
``py:FILE:FUNCTION``, ``tflite:PATH``, ``onnx:PATH``. Relative paths are resolved like every
other path of a recipe (:func:`edgekit.recipe.recipe_relative`): relative to the recipe's folder,
and never out of it through a symlink.

Example::

    ref = parse_model_ref("my_model.keras", Path("recipes"))
    ref.kind, ref.path        # ('keras', PosixPath('recipes/my_model.keras'))
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path

from .errors import RecipeError

KINDS = ("zoo", "keras", "savedmodel", "builder", "tflite", "onnx")
FILE_KINDS = ("keras", "savedmodel", "tflite", "onnx")
"""Kinds that name a trained model on disk (used as they are with ``epochs: 0``)."""
CONVERTED_KINDS = ("tflite", "onnx")
"""Kinds that are already converted float models: no Keras stage can train them."""
_PREFIXES = {"zoo": "zoo", "keras": "keras", "savedmodel": "savedmodel", "py": "builder",
             "tflite": "tflite", "onnx": "onnx"}
_SUFFIXES = {".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".tflite": "tflite", ".onnx": "onnx"}
_BUILDER = re.compile(r"^(?P<file>.+\.py):(?P<fn>[A-Za-z_][A-Za-z0-9_]*)$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A parsed model reference. ``path``: the file or folder (None for a zoo name; as written
    when parsed without a base, else resolved); ``function``: the builder's function name;
    ``name``: the zoo name (or the path/builder as written)."""

    kind: str
    path: Path | None
    function: str | None
    name: str

    @property
    def trained(self) -> bool:
        """Whether the reference is a trained model (a file) rather than an architecture."""
        return self.kind in FILE_KINDS

    @property
    def converted(self) -> bool:
        return self.kind in CONVERTED_KINDS

    def label(self) -> str:
        """How reports name it: the zoo name, ``file.py:fn`` or the file name."""
        if self.kind == "zoo":
            return self.name
        if self.kind == "builder":
            return f"{self.path.name}:{self.function}"
        return self.path.name


def _zoo_names() -> list[str]:
    from .models import list_models

    return list(list_models())


def classify(value: str) -> ModelRef:
    """The kind of ``value`` from its spelling alone (no file system): prefix, ``.py:fn``,
    suffix, else a zoo name when it is one, else a path (a SavedModel folder) when it looks like
    one (contains ``/`` or starts with ``.``), else an unknown zoo name (kind ``zoo``)."""
    if not isinstance(value, str) or not value.strip():
        raise RecipeError("empty model reference (expected a zoo name, a model file or FILE.py:FUNCTION)")
    value = value.strip()
    head, sep, rest = value.partition(":")
    if sep and head in _PREFIXES and rest:
        kind = _PREFIXES[head]
        if kind == "zoo":
            return ModelRef("zoo", None, None, rest)
        if kind == "builder":
            m = _BUILDER.match(rest)
            if not m:
                raise RecipeError(f"{value!r}: py: takes FILE.py:FUNCTION (e.g. py:my_models.py:build)")
            return ModelRef("builder", Path(m["file"]), m["fn"], value)
        return ModelRef(kind, Path(rest), None, value)
    m = _BUILDER.match(value)
    if m:
        return ModelRef("builder", Path(m["file"]), m["fn"], value)
    if value.endswith(".py"):
        raise RecipeError(f"{value!r}: a Python builder is FILE.py:FUNCTION (e.g. {value}:build)")
    suffix = Path(value).suffix.lower()
    if suffix in _SUFFIXES:
        return ModelRef(_SUFFIXES[suffix], Path(value), None, value)
    if value in _zoo_names():
        return ModelRef("zoo", None, None, value)
    if "/" in value or value.startswith(".") or not _IDENT.match(value):
        return ModelRef("savedmodel", Path(value), None, value)
    return ModelRef("zoo", None, None, value)


def _unknown_zoo(name: str) -> RecipeError:
    known = sorted(_zoo_names())
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return RecipeError(f"unknown model {name!r}{hint} (known: {', '.join(known)}; or a path to a .keras/.h5 "
                       f"file, a SavedModel folder, a float .tflite/.onnx file, or FILE.py:FUNCTION)")


def parse_model_ref(value: str, base: Path | None = None, *, what: str = "model") -> ModelRef:
    """Parse ``value`` and, for a path, resolve it against the recipe's folder ``base`` and check
    that it exists and is of its kind (a folder with ``saved_model.pb`` for a SavedModel, a file
    otherwise). Raises :class:`RecipeError` (``what`` names the key) for an unknown zoo name, a
    missing file, a symlink out of the recipe's folder, or a folder that is no SavedModel."""
    from .recipe import recipe_relative

    ref = classify(value)
    if ref.kind == "zoo":
        # a bare word can still be a SavedModel folder beside the recipe
        if ref.name not in _zoo_names():
            if base is not None and (Path(base) / ref.name).is_dir():
                ref = ModelRef("savedmodel", Path(ref.name), None, value)
            else:
                raise _unknown_zoo(ref.name)
        else:
            return ref
    path = recipe_relative(str(ref.path), base, what)
    where = f" (relative to {Path(base).resolve()})" if base is not None and not ref.path.is_absolute() else ""
    if ref.kind == "savedmodel":
        if not path.exists():
            raise RecipeError(f"{ref.path}: no such SavedModel folder{where}; a model is a zoo name, a .keras/.h5 "
                              "file, a SavedModel folder, a float .tflite/.onnx file or FILE.py:FUNCTION")
        if not path.is_dir() or not (path / "saved_model.pb").is_file():
            raise RecipeError(f"{ref.path}: not a SavedModel folder (no saved_model.pb inside); give a .keras/.h5 "
                              "file or the folder tf.saved_model.save / model.export wrote")
    elif not path.is_file():
        noun = "builder file" if ref.kind == "builder" else f"{ref.kind} model file"
        raise RecipeError(f"{ref.path}: no such {noun}{where}")
    return ModelRef(ref.kind, path, ref.function, ref.name)


def absolute_model(value: str, base: Path | None) -> str:
    """``value`` with a relative path made absolute (resolved as :func:`parse_model_ref` resolves
    it, symlink policy included), for a copy of the recipe that lives elsewhere; a zoo name is
    returned unchanged."""
    ref = parse_model_ref(value, base)
    if ref.kind == "zoo":
        return value
    path = str(ref.path.resolve())
    if ref.kind == "builder":
        return f"py:{path}:{ref.function}"
    return f"{ref.kind}:{path}"


def sha256_of(path: Path) -> str:
    """sha256 of a model file, or of a folder's files (relative names, sizes and contents, sorted)."""
    from ._io import sha256_path

    return sha256_path(path)
