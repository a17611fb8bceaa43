"""The interface every target kind implements, and what a kind's converter is handed.

A target kind (``mobile``, ``rpi``, ``mcu``, or a new one: an NPU, a phone GPU delegate) is one
module in this package with one :class:`TargetKindSpec` subclass, registered with
:func:`edgekit.targets.register`. The rest of edgekit asks the registry, never the kind's name:

- **check** (before training, :mod:`edgekit.preflight`): the ops of the float model it cannot run;
- **convert** (stage 5, :func:`edgekit.convert.convert_target`): the files it ships;
- **measure** (stage 6, :mod:`edgekit.evaluate`): which measured number its RAM budget is held
  against (``ram_key``: the tensor arena on a microcontroller, the RSS growth elsewhere).

This module imports nothing heavy; a kind imports its toolchain inside its methods.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from ..convert import Artifact
    from ..data import Dataset
    from ..preflight import Problem
    from ..recipe import ConvertConfig, TargetProfile


@dataclasses.dataclass(frozen=True)
class ConvertContext:
    """What a kind's :meth:`TargetKindSpec.convert` writes with: the run's data (test split,
    normalization), the recipe's ``convert`` section, the target's folder, the evaluator's
    input file (``eval.npz``) that bundles ship and the quality gate's ``max_accuracy_drop``."""

    data: Dataset
    cfg: ConvertConfig
    out_dir: Path
    eval_npz: Path
    max_accuracy_drop: float | None = None  # the recipe's quality gate (convert.selective's budget)


class TargetKindSpec:
    """One target kind. Subclasses set ``name`` and implement :meth:`convert`; the other members
    have the defaults of a kind that runs any op a TFLite interpreter runs and is measured by the
    RSS growth of the evaluator process.

    Attributes:
        name: the ``kind`` a target profile names (``targets/*.yaml``).
        ram_key: the evaluator's result key the profile's ``budget.ram_bytes`` is checked against.
        ram_label: how a RAM violation names that number.
        takes_given_onnx: a given float ``.onnx`` is shipped as ONNX for this kind; when False the
            run first makes a float ``.tflite`` of it (onnx2tf).
        ssh_bundle: the kind ships a bundle that ``edgekit deploy`` copies to a device over SSH.
        higher_precision: what a layer that ``convert.selective: auto`` keeps out of int8 becomes
            on this kind (:mod:`edgekit.selective`): ``"float"`` (its runtime mixes float and int8
            ops), ``"int16"`` (int16 activations, int8 weights: the 16x8 scheme) or None (no
            selective precision).
        integer_only: the kind's models must be integer everywhere, int8 input and output included
            (a selectively quantized model too).
    """

    name: ClassVar[str]
    ram_key: ClassVar[str] = "rss_growth_bytes"
    ram_label: ClassVar[str] = "RSS growth"
    takes_given_onnx: ClassVar[bool] = False
    ssh_bundle: ClassVar[bool] = False
    higher_precision: ClassVar[str | None] = "float"
    integer_only: ClassVar[bool] = False

    def higher_precision_problem(self, ops: list[str]) -> str | None:
        """Why a layer computed by ``ops`` (TFLite op names) cannot run at :attr:`higher_precision`
        on this kind, or None when it can. Asked before a selectively quantized model is built, and
        again of the built model's higher-precision ops."""
        return None

    def checks_ops(self) -> bool:
        """Whether :meth:`check` looks at the model's ops (preflight converts the model only then)."""
        return False

    def check(self, ops: list[str], profile: TargetProfile) -> list[Problem]:
        """The ops (TFLite builtin names, ``CUSTOM:<code>`` for custom ops) of the float model
        that ``profile``'s runtime cannot run, as preflight problems; ``[]``: all of them run."""
        return []

    def convert(self, source: Any, profile: TargetProfile, ctx: ConvertContext) -> tuple[list[Artifact], list[Path]]:
        """Write ``profile``'s artifacts into ``ctx.out_dir`` from ``source`` (a
        :class:`edgekit.convert.KerasSource` or :class:`edgekit.external.GivenSource`).

        Returns ``(artifacts, files)``: the models to measure (the first is the target's primary
        model) and every file written (for the manifest). Raises
        :class:`~edgekit.errors.ConversionError` when a model cannot be made or cannot run on
        the target; :func:`edgekit.convert.convert_target` removes what a failed call wrote.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<target kind {self.name!r} ({type(self).__module__})>"


def write_preprocess(ctx: ConvertContext, *folders: str) -> list[Path]:
    """``preprocess.json`` (:func:`edgekit.convert.preprocess_json`) in the target's folder and in
    each of its sub``folders``; ``[]`` when the data needs no preprocessing."""
    from .._io import write_json
    from ..convert import preprocess_json

    pre = preprocess_json(ctx.data)
    if pre is None:
        return []
    return [write_json(ctx.out_dir / sub / "preprocess.json", pre) for sub in ("", *folders)]


def write_frontend(ctx: ConvertContext, *folders: str, arena: dict | None = None) -> list[Path]:
    """``frontend.tflite`` (the audio front end, :func:`edgekit.audio.frontend_tflite`),
    ``frontend.json`` (how to feed it, :func:`edgekit.audio.frontend_json`; ``arena``: its measured
    TFLite Micro arena) and, when the source names its classes, ``labels.txt`` (one class name a
    line, class 0 first), in the target's folder and in each of its sub``folders``; ``[]`` when the
    data has no front end (``data.frontend: null``)."""
    from .._io import write_json, write_text
    from ..audio import frontend_json, frontend_tflite

    kind = ctx.data.frontend
    if kind is None:
        return []
    blob = frontend_tflite(kind)
    meta = frontend_json(kind, blob, arena=arena)
    out = []
    names = ctx.data.class_names
    for sub in ("", *folders):
        out += [write_text(ctx.out_dir / sub / "frontend.tflite", blob),
                write_json(ctx.out_dir / sub / "frontend.json", meta)]
        if names:
            out.append(write_text(ctx.out_dir / sub / "labels.txt", "".join(f"{n}\n" for n in names)))
    return out


def precision_artifacts(source, spec: TargetKindSpec, ctx: ConvertContext, int8: Artifact) -> list[Artifact]:
    """Per-layer error and selective precision (:mod:`edgekit.selective`) of a target's int8 model
    ``int8`` (already written): records ``per_layer_error`` (or ``per_layer_error_reason``) and,
    with ``convert.selective: auto``, ``selective_precision`` in ``int8.extra``; returns the
    selectively quantized model's artifact (``model_selective.tflite``) when one was made."""
    from .. import selective

    return selective.for_target(source, spec, ctx, int8)
