"""``edgekit compress MODEL``: one command from a model file to measured device models.

The way ``yolo export model=... format=tflite int8=True`` works: a model file, the data to
calibrate and measure on, and the targets. :func:`write_recipe` turns them into an ordinary
recipe, written into the run directory as ``recipe.yaml`` (paths made absolute, so it runs from
anywhere); the CLI then runs it like ``edgekit run``. Edit ``DIR/recipe.yaml`` and rerun it
with ``edgekit run DIR/recipe.yaml --out DIR --resume`` to change anything.

What the recipe asks for, by the kind of model (:mod:`edgekit.model_source`):

- a trained model (``.tflite``, ``.onnx``, ``.keras``/``.h5``, a SavedModel folder): the model
  as it is (``student: {model: ..., epochs: 0}``), no teacher, no pruning, no QAT: post-training
  quantization per target, measured;
- a builder (``FILE.py:FUNCTION``): the architecture trained on the data for ``epochs``
  (default :data:`BUILDER_EPOCHS`), then the same.

Example::

    path = write_recipe("my_model.tflite", data="npz:features.npz", targets=["rpi4", "cortex-m4"],
                        out=Path("runs/my_model"))
    recipe = load_recipe(path)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml

from .errors import RecipeError

log = logging.getLogger(__name__)

BUILDER_EPOCHS = 10
"""Training epochs of a builder's architecture when ``--epochs`` is not given."""

RECIPE_FILE = "recipe.yaml"


def default_out(model: str) -> Path:
    """``runs/<model stem>`` (``runs/build`` for ``nets.py:build``)."""
    from .model_source import classify

    ref = classify(model)
    stem = ref.function if ref.kind == "builder" else (ref.path.stem if ref.path is not None else ref.name)
    return Path("runs") / _name(stem)


def _name(text: str) -> str:
    """A recipe name (letters, digits, ``._-``) from a file stem."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"


def data_source(value: str, base: Path) -> str:
    """``--data`` as a recipe ``data.source``: a generated source or ``KIND:PATH`` as given, or a
    bare path with its kind from what it is (``.npz``, ``.csv``, a folder of images); relative
    paths made absolute against ``base``."""
    from .recipe import ARCHIVE_SOURCES, FILE_SOURCES, GENERATED_SOURCES, SPEECH_SOURCES, absolute_source

    if value in GENERATED_SOURCES + SPEECH_SOURCES or value.partition(":")[0] in FILE_SOURCES + ARCHIVE_SOURCES:
        return absolute_source(value, base)
    p = Path(value) if Path(value).is_absolute() else base / value
    kind = {".npz": "npz", ".csv": "csv"}.get(p.suffix.lower()) or ("images" if p.is_dir() else None)
    if kind is None:
        raise RecipeError(f"--data {value}: not a known source ({', '.join(GENERATED_SOURCES)}), nor an .npz/.csv "
                          "file or a folder of images; write KIND:PATH (npz:, csv:, images:, wav:) or "
                          "ucr:NAME / uea:NAME / kws:espeak")
    return absolute_source(f"{kind}:{value}", base)


def make_recipe(model: str, *, data: str, targets: list[str], task: str = "classification",
                epochs: int | None = None, label: str | None = None, base: Path | None = None,
                mcu_weight_bits: int | None = None) -> dict:
    """The recipe (a dict) that compresses ``model`` for ``targets`` on ``data``; paths absolute,
    resolved against ``base`` (default: the working directory). ``mcu_weight_bits``: the recipe's
    ``convert.mcu_weight_bits`` (look-up-table weights for microcontroller targets). Raises
    :class:`RecipeError` naming the argument for a model that is not there, an unknown data
    source or target."""
    from .model_source import absolute_model, parse_model_ref
    from .recipe import find_target

    base = Path.cwd() if base is None else Path(base)
    if not targets:
        raise RecipeError("give at least one --target (edgekit targets list)")
    for t in targets:
        try:
            find_target(t, base=base)
        except RecipeError as exc:
            raise RecipeError(f"--target {t}: {exc}") from None
    try:
        ref = parse_model_ref(model, base, what="MODEL")
        model_abs = absolute_model(model, base)
    except RecipeError as exc:
        raise RecipeError(f"MODEL: {exc}") from None
    if ref.kind == "zoo":
        raise RecipeError(f"MODEL {model}: a zoo name is an untrained architecture, not a model file; give a "
                          "trained model (.tflite, .onnx, .keras/.h5, SavedModel folder) or FILE.py:FUNCTION, or "
                          "write a recipe (edgekit run) to train a zoo model")
    if epochs is None:
        epochs = 0 if ref.trained else BUILDER_EPOCHS
    if ref.converted and epochs:
        raise RecipeError(f"--epochs {epochs}: {model} is an already converted {ref.kind} model; it is taken as it "
                          "is (--epochs 0)")
    if not ref.trained and epochs == 0:
        raise RecipeError(f"--epochs 0: {model} is a builder (an untrained architecture); give --epochs 1 or more")
    stem = ref.function if ref.kind == "builder" else ref.path.stem
    return {
        "name": _name(f"compress-{stem}"),
        "task": task,
        "data": {"source": data_source(data, base), **({"label": label} if label else {})},
        "teacher": None,
        "student": {"model": model_abs, "epochs": epochs},
        "prune": None,
        "qat": None,
        **({"convert": {"mcu_weight_bits": int(mcu_weight_bits)}} if mcu_weight_bits is not None else {}),
        "targets": [t if not (t.endswith((".yaml", ".yml")) or "/" in t) else str(find_target(t, base=base).resolve())
                    for t in targets],
    }


def write_recipe(model: str, *, data: str, targets: list[str], out: Path, task: str = "classification",
                 epochs: int | None = None, label: str | None = None, resume: bool = False, force: bool = False,
                 base: Path | None = None, mcu_weight_bits: int | None = None) -> Path:
    """Write the recipe of :func:`make_recipe` to ``out/recipe.yaml`` and return its path.

    An existing ``recipe.yaml`` is never overwritten silently: with ``force`` it is replaced;
    with ``resume`` it must equal what these arguments make (else :class:`RecipeError`: it was
    edited, so ``edgekit run`` it instead); otherwise its presence is an error.
    """
    recipe = make_recipe(model, data=data, targets=targets, task=task, epochs=epochs, label=label, base=base,
                         mcu_weight_bits=mcu_weight_bits)
    text = ("# Written by `edgekit compress`; edit it and rerun with:\n"
            f"#   edgekit run {out / RECIPE_FILE} --out {out} --resume\n"
            + yaml.safe_dump(recipe, sort_keys=False))
    from ._io import check_out_dir

    # the --out policy of edgekit run (a new or empty folder, or one of edgekit's), checked before
    # the recipe is written into it
    check_out_dir(Path(out), allow=[RECIPE_FILE])
    path = Path(out) / RECIPE_FILE
    if path.exists() and not force:
        if not resume:
            raise RecipeError(f"{path} exists (an earlier compress); pass --resume to continue that run or --force "
                              "to start over")
        try:
            old = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            old = None
        if old != recipe:
            raise RecipeError(f"{path} differs from what these arguments make (edited?); continue it with "
                              f"`edgekit run {path} --out {out} --resume`, or pass --force to replace it")
        return path
    from ._io import write_text

    write_text(path, text)
    log.info("compress: wrote %s", path)
    return path
