"""Recipes and target profiles: YAML in, frozen typed objects out, validated once at the edge.

A recipe drives a whole run; a target profile describes a device (its runtime, formats and
budgets). Both are parsed with :func:`load_recipe` / :func:`load_target`; every error is
collected and reported as ``FILE: key.path: what was wrong (what was expected)``, with a
"did you mean" hint for unknown keys. This module imports no TensorFlow.

Example::

    recipe = load_recipe("recipes/quickstart.yaml")
    recipe.prune.target_sparsity   # 0.6
"""

from __future__ import annotations

import copy
import difflib
import enum
import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import DataError, RecipeError

REPO_ROOT = Path(__file__).resolve().parent.parent
# Target profiles and example recipes ship inside the package (edgekit/data/targets, .../recipes),
# so an installed wheel has them; in a checkout those two are symlinks to the top-level targets/
# and recipes/ folders, which stay the place to edit them.
DATA_DIR = Path(__file__).resolve().parent / "data"
TARGETS_DIR = DATA_DIR / "targets"
RECIPES_DIR = DATA_DIR / "recipes"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Names that become file or folder names (a recipe's ``name``, a target profile's ``name``):
letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit, at most 64 characters, no
``..``; so ``targets/<name>/`` and ``eval/<name>.json`` stay inside the run directory."""


def check_name(v: str) -> str:
    """``v`` when it is a name (:data:`NAME_PATTERN`); else ValueError saying what is allowed."""
    if not isinstance(v, str) or not re.match(NAME_PATTERN, v) or ".." in v:
        raise ValueError(f"{v!r} is not a usable name: it becomes a file name, so it takes letters, digits, '.', "
                         "'_' and '-', starts with a letter or digit, has no '..' and at most 64 characters")
    return v


Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True, allow_inf_nan=False)


class Strategy(str, enum.Enum):
    """How the teacher is distributed: ``auto`` mirrors when more than one device is visible;
    ``multi_worker`` and ``parameter_server`` train on a cluster (``edgekit train --workers``)."""

    auto = "auto"
    one_device = "one_device"
    mirrored = "mirrored"
    multi_worker = "multi_worker"
    parameter_server = "parameter_server"


class Task(str, enum.Enum):
    """What the model predicts: class logits, one number, or its own input (an autoencoder)."""

    classification = "classification"
    regression = "regression"
    anomaly = "anomaly"


GENERATED_SOURCES = ("digits", "mnist1d", "fermentation", "machine-anomaly")
FILE_SOURCES = ("npz", "csv", "images", "wav")  # data.source KIND:PATH, the path relative to the recipe
ARCHIVE_SOURCES = ("ucr", "uea")  # data.source KIND:NAME, a UCR/UEA archive dataset (edgekit.archives)
"""Data sources that need no file (bundled or generated offline); ``edgekit.data`` registers them."""
WAVEFORM_SOURCES = ("wav", "npz", "kws")
"""Sources whose samples may be audio waveforms, so ``data.frontend`` applies: ``wav:DIR``, ``npz:`` arrays
of clips, ``kws`` synthetic speech. The clip length and sample rate are checked when the data is loaded
(:func:`edgekit.audio.check_waveforms`)."""


class EarlyStopping(_Strict):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs (best weights kept)."""

    patience: Annotated[int, Field(ge=1, le=10_000)] = Field(5, description="epochs without improvement before stopping")
    monitor: Literal["val_loss", "val_accuracy"] = Field("val_loss", description="metric watched")


class Training(_Strict):
    """Settings shared by every stage that trains."""

    epochs: Annotated[int, Field(ge=0, le=10_000)] = Field(10, description="passes over the training split")
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = Field(64, description="samples per step (global)")
    optimizer: Literal["adam", "rmsprop", "sgd"] = Field("adam", description="optimizer")
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = Field(1e-3, description="initial learning rate")
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.9, description="momentum (sgd only)")
    l1: Annotated[float, Field(ge=0.0, le=10.0)] = Field(0.0, description="L1 kernel regularization")
    l2: Annotated[float, Field(ge=0.0, le=10.0)] = Field(0.0, description="L2 kernel regularization")
    early_stopping: EarlyStopping | None = Field(None, description="early stopping, or null for none")
    width: Annotated[float, Field(gt=0.0, le=16.0)] = Field(
        1.0, description="width multiplier of the model's filters/units (a student can be a narrow teacher)")


class WindowConfig(_Strict):
    """Sliding windows over each series: steps ``0, stride, 2*stride, ...`` while a whole window fits."""

    length: Annotated[int, Field(ge=1, le=1_000_000)] = Field(description="time steps per window")
    stride: Annotated[int, Field(ge=1, le=1_000_000)] = Field(description="time steps between window starts")


SPEECH_SOURCES = ("kws:espeak",)
"""``data.source`` values of synthetic speech (:mod:`edgekit.speech`), sized by ``data.speech``."""
SPEECH_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "zero",
                        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "learn", "follow",
                        "forward", "backward", "visual")
SPEECH_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
                  "en-us-nyc")
SPEECH_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "Andy",
                   "linda", "steph")
MAX_SPEECH_CLIPS = 60_000
"""Most clips ``data.speech`` may ask for: 60,000 1 s clips are 3.8 GB as float32."""
_WORD = r"^[a-z][a-z']{0,23}$"
_ACCENT = r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}$"
_VARIANT = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"


def _range(lo: float, hi: float, kind: type = int) -> Any:
    """A ``[min, max]`` pair of numbers, each within ``lo..hi``."""
    return Annotated[list[Annotated[kind, Field(ge=lo, le=hi)]], Field(min_length=2, max_length=2)]


class SpeechConfig(_Strict):
    """Synthetic keyword-spotting speech (``data.source: kws:espeak``): 1 s clips at 16 kHz spoken by
    espeak-ng voices (an accent + a variant), split by voice."""

    words: Annotated[list[Annotated[str, Field(pattern=_WORD)]], Field(min_length=1, max_length=30)] = Field(
        default_factory=lambda: list(SPEECH_WORDS), description="the keywords, one class each (lower-case letters)")
    unknown_words: Annotated[list[Annotated[str, Field(pattern=_WORD)]], Field(max_length=200)] = Field(
        default_factory=lambda: list(SPEECH_UNKNOWN_WORDS),
        description="other words, together the class _unknown_; [] for no _unknown_ class")
    silence: bool = Field(True, description="a class _silence_: background noise alone")
    accents: Annotated[list[Annotated[str, Field(pattern=_ACCENT)]], Field(min_length=1, max_length=50)] = Field(
        default_factory=lambda: list(SPEECH_ACCENTS), description="espeak-ng voices (espeak-ng --voices=en)")
    variants: Annotated[list[Annotated[str, Field(pattern=_VARIANT)]], Field(min_length=1, max_length=100)] = Field(
        default_factory=lambda: list(SPEECH_VARIANTS),
        description="espeak-ng voice variants (espeak-ng --voices=variant); a voice is an accent + a variant")
    voices: Annotated[int, Field(ge=3, le=5000)] | None = Field(
        None, description="voices used (3..5000), drawn from every accent + variant pair; null: all of them")
    test_voices: Annotated[int, Field(ge=1, le=5000)] = Field(
        24, description="voices held out for the test split (never heard in training or validation)")
    val_voices: Annotated[int, Field(ge=0, le=5000)] = Field(
        12, description="voices held out for the validation split; 0: validation comes from the training voices "
                        "(data.val_split)")
    repeats: Annotated[int, Field(ge=1, le=1000)] = Field(
        4, description="clips per class and voice, each with its own rate, pitch, level, shift and noise")
    rate_wpm: _range(80, 450) = Field(default_factory=lambda: [120, 200], description="[min, max] speaking rate, words "
                                      "per minute (80..450)")
    pitch: _range(0, 99) = Field(default_factory=lambda: [20, 80], description="[min, max] espeak-ng pitch (0..99)")
    peak_db: _range(-40.0, 0.0, float) = Field(default_factory=lambda: [-12.0, -1.0],
                                               description="[min, max] peak level of the spoken word, dBFS (-40..0)")
    noise_db: _range(-120.0, 0.0, float) = Field(default_factory=lambda: [-60.0, -30.0],
                                                 description="[min, max] background noise level, RMS dBFS (-120..0)")
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = Field(
        0, description="seed of every random choice of the generator (voices, split, clip settings, noise)")

    @field_validator("words", "unknown_words", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, v: Any) -> Any:
        if isinstance(v, list) and any(isinstance(w, bool) for w in v):
            raise ValueError(f"{v!r} holds YAML booleans: unquoted yes, no, on, off, true, false read as true/false; "
                             "quote the words, e.g. ['yes', 'no', 'on', 'off']")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        for key in ("rate_wpm", "pitch", "peak_db", "noise_db"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ValueError(f"{key}: [{lo}, {hi}] is not a [min, max] range; write the smaller value first")
        for key in ("words", "unknown_words", "accents", "variants"):
            items = getattr(self, key)
            dup = sorted({w for w in items if items.count(w) > 1})
            if dup:
                raise ValueError(f"{key}: {', '.join(map(repr, dup))} listed more than once; list each once")
        both = [w for w in self.unknown_words if w in self.words]
        if both:
            raise ValueError(f"unknown_words: {', '.join(map(repr, both))} also a keyword (words); remove it from one")
        pairs = len(self.accents) * len(self.variants)
        voices = self.voices if self.voices is not None else pairs
        if voices > pairs:
            raise ValueError(f"voices: {voices} is more than the {pairs} accent + variant pairs "
                             f"({len(self.accents)} accents x {len(self.variants)} variants); use at most {pairs} "
                             "or list more accents or variants")
        if self.test_voices + self.val_voices >= voices:
            raise ValueError(f"test_voices: {self.test_voices} test + {self.val_voices} validation voices leave "
                             f"none of the {voices} voices to train on; hold out fewer")
        classes = len(self.words) + bool(self.unknown_words) + self.silence
        if classes < 2:
            raise ValueError("words: one keyword without unknown_words or silence is one class; a classifier "
                             "needs two: add a word, unknown_words or silence: true")
        clips = voices * classes * self.repeats
        if clips > MAX_SPEECH_CLIPS:
            raise ValueError(f"repeats: {voices} voices x {classes} classes x {self.repeats} repeats = {clips} clips, "
                             f"more than {MAX_SPEECH_CLIPS}; use fewer voices or repeats")
        return self

    def clip_count(self) -> int:
        """Clips the generator makes (every voice, class and repeat)."""
        voices = self.voices if self.voices is not None else len(self.accents) * len(self.variants)
        return voices * (len(self.words) + bool(self.unknown_words) + self.silence) * self.repeats



class DataConfig(_Strict):
    """Where the data comes from and how it is split."""

    source: str = Field(
        "digits", description="digits | mnist1d | fermentation | machine-anomaly | npz:PATH | csv:PATH | images:DIR | wav:DIR "
                              "| ucr:NAME | uea:NAME | kws:espeak (edgekit datasets list)")
    test_split: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.2, description="share held out for the test split (all reported accuracies); not used by sources "
                         "with an official split (ucr:, uea:, npz: with x_test, kws: split by voice)")
    val_split: Fraction = Field(0.1, description="share of the training split used for validation; not used by "
                                "kws: with data.speech.val_voices above 0 (validation voices of their own)")
    label: str = Field("label", description="label column of a csv: source")
    normalize: Literal["auto", "none", "minmax", "zscore"] = Field(
        "auto", description="per-feature normalization fitted on the training split only (kept in preprocess.json); "
                            "auto: zscore for tabular csv:/npz: features, none for images, generated sources and "
                            "a given trained model")
    window: WindowConfig | None = Field(
        None, description="cut every series (samples of shape (length, channels)) into windows, each split on its "
                          "own after the train/val/test split, so no series is in two splits; null: whole series")
    frontend: Literal["mfcc", "logmel"] | None = Field(
        None, description="audio front end applied to 1 s, 16 kHz mono waveforms (wav:DIR, kws: speech, npz: clips "
                          "of 16000 samples) before training: mfcc gives (49, 10, 1) MFCC features, logmel (49, 40, 1) "
                          "log-mel energies (edgekit.audio); every target ships it as frontend.tflite. null: none")

    @field_validator("frontend")
    @classmethod
    def _frontend_takes_waveforms(cls, v, info):
        source = info.data.get("source")
        if v is None or source is None:  # no front end, or a source that failed its own check
            return v
        kind, sep, _ = source.partition(":")
        if not ((sep and kind in WAVEFORM_SOURCES) or source in WAVEFORM_SOURCES):
            raise ValueError(f"{v} turns 1 s waveforms at 16 kHz into features, but data.source {source!r} holds "
                             f"no waveforms; use a waveform source ({', '.join(k + ':' for k in WAVEFORM_SOURCES)}"
                             "...) or remove data.frontend")
        return v

    normal_class: str | None = Field(
        None, description="task anomaly: the class (its name, e.g. an archive label, or its index) that is normal "
                          "(label 0); every other class is an anomaly (label 1). null: labels are already 0/1")
    speech: SpeechConfig | None = Field(
        None, description="data.source kws:espeak only: what the synthetic speech holds (null: the defaults)")

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        kind, sep, arg = v.partition(":")
        if sep and kind in ARCHIVE_SOURCES:
            from .archives import lookup  # config only: a catalog, no files read

            try:
                lookup(v)
            except DataError as exc:
                raise ValueError(str(exc)) from None
            return v
        if v in GENERATED_SOURCES or v in SPEECH_SOURCES or (kind in FILE_SOURCES and arg):
            return v
        if kind == "kws":
            raise ValueError(f"{v!r} is not a known speech source (known: {', '.join(SPEECH_SOURCES)})")
        raise ValueError(f"{v!r} is not a known source (expected {', '.join(GENERATED_SOURCES)}, npz:PATH, "
                         "csv:PATH, images:DIR, wav:DIR, ucr:NAME, uea:NAME or kws:espeak)")

    @model_validator(mode="after")
    def _speech_only_for_speech(self):
        if self.speech is not None and self.source not in SPEECH_SOURCES:
            raise ValueError(f"speech: applies to data.source {' or '.join(SPEECH_SOURCES)} only (source is "
                             f"{self.source!r}); remove data.speech")
        return self


class FeaturesConfig(_Strict):
    """Input reduction fitted on the training split, folded into the model as a fixed Dense layer."""

    reduce: Literal["pca", "lda"] = Field(description="pca (any task but anomaly) or lda (classification)")
    components: Annotated[int, Field(ge=1, le=100_000)] = Field(description="K: features after the reduction")


class TeacherConfig(Training):
    """The large float model trained first, inside a ``tf.distribute`` strategy."""

    model: str = Field("cnn_small", description="a zoo name (edgekit models list), a .keras/.h5 file or SavedModel "
                       "folder (relative to the recipe), or FILE.py:FUNCTION (a builder; runs your code)")
    strategy: Strategy = Field(
        Strategy.auto, description="auto: mirrored over several GPUs (or logical CPUs), else one device; "
        "multi_worker / parameter_server: a cluster from edgekit train --workers or --cluster")
    mixed_precision: bool = Field(
        False, description="mixed_float16 on GPU (logits stay float32; ignored on CPU); the saved model is float32")


class StudentConfig(Training):
    """The small model distilled from the teacher: L = (1-alpha)·CE + alpha·T²·KL."""

    model: str = Field("cnn_tiny", description="a zoo name, a .keras/.h5 file or SavedModel folder, FILE.py:FUNCTION, "
                       "or a float .tflite/.onnx file (with teacher, prune and qat null and epochs 0)")
    temperature: Annotated[float, Field(gt=0.0, le=100.0)] = Field(4.0, description="softmax temperature T")
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.7, description="weight of the soft-target term")
    baseline: bool = Field(False, description="also train the same student from scratch and report the gain")


class PruneConfig(_Strict):
    """Pruning: magnitude (tensorflow-model-optimization; ``structure: 'm:n'`` for m:n sparsity) or, with
    ``structure: channels``, structured pruning that removes whole filters/channels/units and
    rebuilds a smaller dense model (:mod:`edgekit.structured`), so the file itself shrinks."""

    target_sparsity: Fraction = Field(0.6, description="share of zero weights in the pruned layers (structure "
                                      "channels: share of the prunable channels removed)")
    epochs: Annotated[int, Field(ge=1, le=10_000)] = Field(5, description="fine-tuning epochs while pruning")
    schedule: Literal["polynomial", "constant"] = Field("polynomial", description="pruning schedule")
    frequency: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        None, description="steps between mask updates; null derives it from the schedule length")
    skip_layers: list[str] = Field(
        default_factory=lambda: ["first", "last"],
        description="layers left dense: names, or 'first' / 'last' for the first and last weighted layer")
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = Field(5e-4, description="learning rate")
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = Field(64, description="samples per step")
    strict: bool = Field(False, description="fail (not warn) when sparsity is more than 0.05 below target")
    structure: Annotated[str, Field(pattern=r"^([1-9][0-9]*:[1-9][0-9]*|channels)$")] | None = Field(
        None, description="structured m:n sparsity, e.g. '2:4' (m non-zeros in every n input weights), or "
                          "'channels' (remove whole filters/channels/units: a smaller dense model)")

    @model_validator(mode="after")
    def _structure_matches_target(self):
        if self.structure == "channels":
            if self.target_sparsity <= 0.0:
                raise ValueError("structure 'channels' removes target_sparsity of the channels: "
                                 "set target_sparsity above 0 (e.g. 0.5)")
            magnitude_only = [k for k, v in (("schedule", self.schedule != "polynomial"),
                                             ("frequency", self.frequency is not None)) if v]
            if magnitude_only:
                raise ValueError(f"structure 'channels' removes channels at once, then fine-tunes: "
                                 f"{' and '.join(magnitude_only)} apply to magnitude pruning only; remove them")
        elif self.structure is not None:
            m, n = map(int, self.structure.split(":"))
            if m >= n:
                raise ValueError(f"structure {self.structure!r}: m must be smaller than n")
            if abs(self.target_sparsity - (1 - m / n)) > 1e-9:
                raise ValueError(f"structure {self.structure!r} means target_sparsity {1 - m / n:g}, "
                                 f"got {self.target_sparsity:g}")
        return self


class QatConfig(_Strict):
    """Quantization-aware training (int8), keeping the pruned zeros when asked."""

    epochs: Annotated[int, Field(ge=0, le=10_000)] = Field(3, description="QAT fine-tuning epochs")
    preserve_sparsity: bool = Field(True, description="prune-preserving QAT scheme")
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = Field(2e-4, description="learning rate")
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = Field(64, description="samples per step")
    calibration_samples: Annotated[int, Field(ge=1, le=100_000)] = Field(
        512, description="training samples whose float activation ranges start the QAT ranges")


class EvaluateConfig(_Strict):
    """How targets are measured by the on-device evaluator."""

    samples: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        None, description="test samples for accuracy; null = all")
    warmup: Annotated[int, Field(ge=0, le=100_000)] = Field(10, description="untimed warm-up inferences")
    runs: Annotated[int, Field(ge=1, le=1_000_000)] = Field(100, description="timed single-sample inferences")
    threads: Annotated[int, Field(ge=1, le=256)] = Field(1, description="interpreter threads")


class ConvertConfig(_Strict):
    """Post-training conversion settings shared by all targets."""

    representative_samples: Annotated[int, Field(ge=1, le=100_000)] = Field(
        200, description="training samples used to calibrate int8 ranges")
    check_budget: bool = Field(True, description="fail a target that exceeds its flash or RAM budget")
    arena_margin: Annotated[float, Field(ge=0.0, le=10.0)] = Field(
        0.1, description="share added to the measured TFLite Micro arena")
    ptq: list[Literal["dynamic", "fp16", "int16x8"]] = Field(
        default_factory=list,
        description="extra post-training quantized variants of the float model for mobile and rpi targets")
    mcu_scheme: Literal["int8", "int16x8"] = Field(
        "int8", description="integer scheme of mcu targets: int8 (activations and weights; from the QAT model, "
                            "else post-training), or int16x8 (int16 activations, int8 weights, int16 in/out; "
                            "post-training from the float model, needs qat: null)")
    per_layer_samples: Annotated[int, Field(ge=0, le=100_000)] = Field(
        200, description="validation samples on which each target's int8 model is compared layer by layer with "
                         "the float model (report: per_layer_error, worst layers by Keras name); 0: not measured")
    mcu_weight_bits: Annotated[int, Field(ge=1, le=7)] | None = Field(
        None, description="mcu targets: store each large conv/dense weight tensor as 2**N values per output channel "
                          "(its int8 weights clustered, 1-D k-means) and N-bit indices, rebuilt at run time by "
                          "TFLite Micro's DECODE op: less flash, more arena (the decoded weights live in it), "
                          "accuracy measured on the file; a tensor is compressed only where that saves a quarter "
                          "of its bytes; null: plain int8 weights (needs mcu_scheme: int8)")
    mcu_strip_names: bool = Field(
        True, description="mcu targets: ship the model without its tensor names, subgraph name and description, "
                          "which TFLite Micro never reads (a converted tensor's name lists every op fused into it: "
                          "up to a quarter of a small model's flash); they are kept beside it in "
                          "model_int8.tensor_names.json, where edgekit's per-layer error finds them; false: keep "
                          "them in the file")
    selective: Literal["off", "auto"] = Field(
        "off", description="auto: keep the layers that lose most in int8 at higher precision (float on mobile/rpi, "
                           "int16 activations on mcu where TFLite Micro has the kernel) until the quality gate "
                           "holds on the validation split, fewest bytes first; shipped as model_selective.tflite "
                           "beside the int8 model (needs quality and task classification)")


class QualityConfig(_Strict):
    """The quality gate: how much of the teacher's quality a deployed model may lose.

    Checked per target, on the artifact as measured in its own runtime, against the teacher's
    metric on the same test split; a target that loses more fails like one over budget (exit 6).
    """

    max_accuracy_drop: Annotated[float, Field(ge=-100.0, le=100.0)] = Field(
        description="most points of the task's main metric a target may lose against the teacher: "
                    "classification: accuracy in percentage points (1.0 = one point); anomaly: ROC-AUC "
                    "points (1.0 = 0.01 ROC-AUC); regression: the MAE increase in percent of the teacher's MAE "
                    "(1.0 = 1 % higher MAE). Negative: the target must beat the teacher by that much")


class Recipe(_Strict):
    """A whole run: data, teacher, student, pruning, QAT, targets and evaluation."""

    name: str = Field(description="run name (letters, digits, . _ -; starts with a letter or digit, at most 64, "
                                  "no ..)")
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = Field(
        0, description="seed for data split, init and shuffling (numpy takes 0..2**32-1)")
    task: Task = Field(Task.classification, description="classification: logits, top-1 accuracy; regression: "
                       "one output, MSE, MAE/RMSE/R²; anomaly: an autoencoder trained on normal samples (label 0), "
                       "reconstruction error as score, ROC-AUC")
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeaturesConfig | None = Field(
        None, description="null: the model sees the inputs as they are; else {reduce: pca | lda, components: K}")
    teacher: TeacherConfig | None = Field(
        default_factory=TeacherConfig, description="null: no teacher (the student is trained on the labels alone, "
                                                   "or given as a trained model)")
    student: StudentConfig | None = Field(default_factory=StudentConfig, description="null: no distillation")
    prune: PruneConfig | None = Field(default_factory=PruneConfig, description="null: no pruning")
    qat: QatConfig | None = Field(default_factory=QatConfig, description="null: post-training quantization only")
    convert: ConvertConfig = Field(default_factory=ConvertConfig)
    targets: list[str] = Field(default_factory=lambda: ["mobile"], description="target profiles by name or path")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    quality: QualityConfig | None = Field(
        None, description="null: no quality gate; else {max_accuracy_drop: POINTS} against the teacher, per target")

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @model_validator(mode="after")
    def _models_fit(self):
        from .model_source import classify
        from .models import list_models

        if self.teacher is None and self.student is None:
            raise ValueError("teacher: teacher and student are both null; give at least one model")
        for key in ("teacher", "student"):
            cfg = getattr(self, key)
            if cfg is None:
                continue
            try:
                ref = classify(cfg.model)
            except RecipeError as exc:
                raise ValueError(f"{key}.model: {exc}") from None
            if ref.kind == "zoo" and ref.name not in list_models():
                continue  # a bare name: a SavedModel folder or a typo, told apart by load_recipe (model_refs)
            if ref.converted:
                rest = [k for k, v in (("teacher", self.teacher), ("prune", self.prune), ("qat", self.qat))
                        if v is not None]
                if key != "student" or rest or cfg.epochs != 0:
                    raise ValueError(
                        f"{key}.model: {cfg.model!r} is an already converted float {ref.kind} model: it is taken "
                        f"as it is, only as student.model with teacher: null, prune: null, qat: null and epochs: 0")
            elif cfg.epochs == 0 and not ref.trained:
                what = "an untrained zoo model" if ref.kind == "zoo" else "a builder (an untrained architecture)"
                raise ValueError(
                    f"{key}.epochs: 0 means 'use the given model as it is', but {cfg.model!r} is {what}; "
                    f"set {key}.epochs to 1 or more, or give a trained model file ({key}.model: my_model.keras)")
        return self

    @model_validator(mode="after")
    def _fits_task(self):
        task = Task(self.task)
        if task is not Task.classification:
            for key in ("teacher", "student"):
                cfg = getattr(self, key)
                es = getattr(cfg, "early_stopping", None) if cfg is not None else None
                if es is not None and es.monitor == "val_accuracy":
                    raise ValueError(f"{key}.early_stopping.monitor: val_accuracy needs task classification "
                                     f"(task is {task.value}); use val_loss")
        if self.convert.selective == "auto":
            if self.quality is None:
                raise ValueError("convert.selective: auto keeps layers at higher precision until the quality gate "
                                 "holds; set quality: {max_accuracy_drop: POINTS}")
            if task is not Task.classification:
                raise ValueError(f"convert.selective: auto measures accuracy (task classification, not "
                                 f"{task.value}); set convert.selective: off")
            if self.convert.per_layer_samples == 0:
                raise ValueError("convert.selective: auto ranks layers by their per-layer error; set "
                                 "convert.per_layer_samples above 0")
        if self.convert.mcu_weight_bits is not None:
            if self.convert.mcu_scheme != "int8":
                raise ValueError("convert.mcu_weight_bits compresses int8 models (mcu_scheme: int8), not int16x8; "
                                 "set convert.mcu_weight_bits: null or mcu_scheme: int8")
            if self.convert.selective == "auto":
                raise ValueError("convert.mcu_weight_bits and convert.selective: auto do not combine yet (the "
                                 "selective search runs the int8 model in LiteRT, which has no DECODE kernel); "
                                 "set one of them off")
        if self.convert.mcu_scheme == "int16x8" and self.qat is not None:
            raise ValueError("convert.mcu_scheme: int16x8 is post-training quantization of the float model, but "
                             "qat is set (QAT trains int8); set qat: null or mcu_scheme: int8")
        if self.features is not None:
            if task is Task.anomaly:
                raise ValueError("features: input reduction is not available for task anomaly (the autoencoder "
                                 "reconstructs its whole input); remove features")
            if self.features.reduce == "lda" and task is not Task.classification:
                raise ValueError(f"features.reduce: lda needs class labels (task classification, not "
                                 f"{task.value}); use pca")
        return self


def _check_kind(value: str) -> str:
    """A profile's ``kind``: the name of a kind registered in :mod:`edgekit.targets` (one module
    each there; nothing to add here for a new kind)."""
    from . import targets  # imports no TensorFlow

    if value not in targets.known():
        raise ValueError(f"unknown target kind {value!r}; known kinds: {', '.join(targets.known())}")
    return value


class Budget(_Strict):
    """What the device allows; null = not constrained."""

    flash_bytes: Annotated[int, Field(ge=1, le=2**50)] | None = Field(None, description="model storage")
    ram_bytes: Annotated[int, Field(ge=1, le=2**50)] | None = Field(None, description="working memory (arena or RSS)")
    latency_ms: Annotated[float, Field(gt=0, le=1e9)] | None = Field(None, description="p50 latency on the device")


class TargetProfile(_Strict):
    """A device profile from ``targets/*.yaml``."""

    name: str = Field(description="the profile's name: targets/<name>/ and eval/<name>.json in a run")
    kind: str = Field(description="the target kind: a module in edgekit/targets/ (mobile, rpi, mcu)")
    board: str = Field("", description="the real board the budgets come from")
    runtime: Literal["ai_edge_litert", "tflite_runtime", "tflite_micro", "onnxruntime"] = "ai_edge_litert"
    formats: Annotated[list[Literal["tflite-int8", "tflite-fp16", "tflite-full-int8", "onnx"]],
                       Field(min_length=1)] = Field(default_factory=lambda: ["tflite-int8"])
    budget: Budget = Field(default_factory=Budget)
    description: str = ""
    # for latency estimates (edgekit.estimate); all optional
    core: str | None = Field(None, description="CPU core, e.g. cortex-m4, cortex-a72")
    clock_mhz: Annotated[float, Field(gt=0, le=1e6)] | None = Field(None, description="CPU clock of the board in MHz")
    kernels: str | None = Field(None, description="kernel library the runtime uses, e.g. cmsis-nn, xnnpack")
    calibration: str | None = Field(
        None, description="calibration set (edgekit/data/latency_calibration.yaml) measured on this board; "
                          "null: no latency estimate")

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))
    _kind = field_validator("kind")(classmethod(lambda cls, v: _check_kind(v)))


# ---------------------------------------------------------------- loading and error messages


MAX_YAML_BYTES = 1 << 20
MAX_YAML_ALIASES = 100
MAX_YAML_DEPTH = 50


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (same tags, same safety) that refuses a mapping with a key twice
    instead of letting the last one win."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in with << may be overridden: not duplicates
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first.line + 1}); "
                        "keep one of them", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _flow_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside quotes and comments, by one pass over the characters:
    checked before PyYAML's scanner, which slows down quadratically with flow nesting."""
    depth = top = 0
    quote = None
    prev = "\n"
    chars = iter(text)
    for c in chars:
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                next(chars, None)
        elif c == "#" and prev in " \t\n":
            for c in chars:  # noqa: B007 - skip the comment
                if c == "\n":
                    break
        elif c in "'\"" and prev in " \t\n[{,:":
            quote = c
        elif c in "[{":
            depth += 1
            top = max(top, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
        prev = c
    return top


def _depth(text: str) -> int:
    """Deepest nesting of flow/block collections, from the token stream (no recursion)."""
    depth = top = 0
    for tok in yaml.scan(text):
        if isinstance(tok, (yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken,
                            yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken)):
            depth += 1
            top = max(top, depth)
        elif isinstance(tok, (yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken, yaml.BlockEndToken)):
            depth -= 1
    return top


def _read_yaml(path: Path, what: str) -> Any:
    """``yaml.safe_load`` of a small UTF-8 file; refuses alias bombs (many ``*alias`` uses).

    A text already parsed in this process is not scanned again (a run reads the same target
    profiles and recipe many times): the parse is memoised by the file's text, and every caller
    gets its own copy of the data."""
    if not path.is_file():
        raise RecipeError(f"{path}: {what} file not found")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise RecipeError(f"{path}: {path.stat().st_size} bytes is too large for a {what} "
                          f"(limit {MAX_YAML_BYTES} bytes)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (expected UTF-8 YAML)") from None
    try:
        return copy.deepcopy(_parse_yaml(text))
    except _YamlProblem as problem:
        raise RecipeError(f"{path}: {problem.args[0].format(what=what)}") from None


class _YamlProblem(Exception):
    """Why a YAML text is refused; the message has a ``{what}`` slot for the kind of file."""


@functools.lru_cache(maxsize=64)
def _parse_yaml(text: str) -> Any:
    """The checked ``yaml.safe_load`` of ``text`` (treat the result as read-only: it is cached)."""
    try:
        depth = _flow_depth(text)
        if depth > MAX_YAML_DEPTH:
            raise _YamlProblem(f"YAML nested {depth} levels deep (limit {MAX_YAML_DEPTH}); a {{what}} "
                               "is a few levels of keys")
        aliases = sum(isinstance(t, yaml.AliasToken) for t in yaml.scan(text))
        if aliases > MAX_YAML_ALIASES:
            raise _YamlProblem(f"{aliases} YAML aliases (limit {MAX_YAML_ALIASES}): refused as a "
                               "possible alias bomb; write the values out")
        depth = _depth(text)
        if depth > MAX_YAML_DEPTH:
            raise _YamlProblem(f"YAML nested {depth} levels deep (limit {MAX_YAML_DEPTH}); a {{what}} "
                               "is a few levels of keys")
        loader = _UniqueKeyLoader(text)  # what yaml.safe_load does, with the duplicate-key check
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except RecursionError:
        raise _YamlProblem(f"YAML nested too deeply to read (limit {MAX_YAML_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _YamlProblem(f"not valid YAML{where}: {problem}".replace("{", "{{").replace("}", "}}")) from None


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Names of the fields allowed at ``loc`` (for 'did you mean')."""
    cls: Any = model
    for part in loc:
        if cls is None:
            return []
        if isinstance(part, int):  # an item of a list of mappings (an inventory's hosts)
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return []
        cls = _model_of(field.annotation)
    return list(cls.model_fields) if cls is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _lc(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


def format_errors(path: Path, exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: ``FILE: key.path: message``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        key = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if not loc and kind == "value_error" and re.match(r"^[a-z_.]+: ", err["msg"].removeprefix("Value error, ")):
            lines.append(f"{path}: {err['msg'].removeprefix('Value error, ')}")  # a whole-recipe check names its key
            continue
        value = err.get("input")
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"unknown key{hint} (allowed: {', '.join(allowed)})"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind in ("greater_than_equal", "less_than", "greater_than", "less_than_equal"):
            msg = f"{value!r} is out of range: {_lc(err['msg'])}"
        elif kind in ("literal_error", "enum"):
            msg = f"{value!r} is not allowed: {_lc(err['msg'])}"
        elif kind == "value_error":
            msg = err["msg"].removeprefix("Value error, ")
        else:
            msg = f"{_lc(err['msg'])} (got {value!r})"
        lines.append(f"{path}: {key}: {msg}")
    return "\n".join(dict.fromkeys(lines))


_UNION_TAGS = {"int", "float", "str", "none", "list[str]", "function-after[_known_source(), str]"}


def _validate(model: type[BaseModel], raw: Any, path: Path):
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_errors(path, _drop_union_noise(exc), model)) from None


def _drop_union_noise(exc: ValidationError) -> ValidationError:
    """For ``X | None`` fields pydantic reports the None branch too; keep the informative one."""
    errors = [e for e in exc.errors() if not (e["type"] == "none_required")]
    if not errors:
        return exc
    return ValidationError.from_exception_data(exc.title, [_as_line_error(e) for e in errors])


def _as_line_error(e: dict) -> dict:
    out = {"type": e["type"], "loc": e["loc"], "input": e.get("input")}
    if "ctx" in e:
        ctx = dict(e["ctx"])
        if "error" in ctx:
            ctx["error"] = str(ctx["error"])
        out["ctx"] = ctx
    if e["type"] == "value_error":
        out["ctx"] = {"error": e["msg"].removeprefix("Value error, ")}
    return out


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe file; raises :class:`RecipeError` naming file and key path.

    Target names are checked too: each must name a profile in ``targets/`` or a YAML file.
    """
    path = Path(path)
    recipe = _validate(Recipe, _read_yaml(path, "recipe"), path)
    check_target_names(recipe, path)
    model_refs(recipe, path)
    return recipe


def check_target_names(recipe: Recipe, path: Path) -> list[TargetProfile]:
    """Load every target profile of ``recipe`` (read from ``path``); raises :class:`RecipeError`
    for a missing or invalid profile, two targets with the same profile name (they would share
    ``targets/<name>/``), or a custom profile named like a built-in one that differs from it."""
    profiles: list[TargetProfile] = []
    seen: dict[str, int] = {}
    builtin = set(list_targets())
    for i, target in enumerate(recipe.targets):
        try:
            file = find_target(target, base=path.parent)
            profile = load_target(target, base=path.parent)
        except RecipeError as exc:
            raise RecipeError(f"{path}: targets.{i}: {exc}") from None
        if profile.name in seen:
            raise RecipeError(f"{path}: targets.{i}: {target!r} is profile {profile.name!r}, like targets."
                              f"{seen[profile.name]}; each target needs its own profile name (it names the folder "
                              f"targets/{profile.name}/): remove one or rename its profile")
        if (profile.name in builtin and file.resolve() != (TARGETS_DIR / f"{profile.name}.yaml").resolve()
                and profile != load_target(profile.name)):
            raise RecipeError(f"{path}: targets.{i}: {file} is named {profile.name!r} like the built-in profile but "
                              "differs from it; give the custom profile its own name")
        seen[profile.name] = i
        profiles.append(profile)
    return profiles


def model_refs(recipe: Recipe, path: Path) -> dict:
    """``{"teacher": ModelRef | None, "student": ModelRef | None}``: the recipe's models parsed and
    resolved against its folder (:func:`edgekit.model_source.parse_model_ref`); a missing file,
    an unknown zoo name or a symlink out of the folder raises :class:`RecipeError` naming key and file."""
    from .model_source import parse_model_ref

    refs = {}
    for key in ("teacher", "student"):
        cfg = getattr(recipe, key)
        if cfg is None:
            refs[key] = None
            continue
        try:
            refs[key] = parse_model_ref(cfg.model, Path(path).parent, what=f"{key}.model")
        except RecipeError as exc:
            raise RecipeError(f"{path}: {key}.model: {exc}") from None
    return refs


def with_model_paths(recipe: Recipe, base: Path) -> Recipe:
    """``recipe`` with each model path made absolute (``keras:/abs/m.keras``, ``py:/abs/f.py:build``)
    as :func:`edgekit.model_source.parse_model_ref` resolves it against ``base`` (the recipe's
    folder), so the stages, and copies of the recipe that live elsewhere, find the same files."""
    from .model_source import absolute_model

    update = {}
    for key in ("teacher", "student"):
        cfg = getattr(recipe, key)
        if cfg is not None:
            try:
                new = absolute_model(cfg.model, base)
            except RecipeError as exc:
                raise RecipeError(f"{key}.model: {exc}") from None
            if new != cfg.model:
                update[key] = cfg.model_copy(update={"model": new})
    return recipe.model_copy(update=update) if update else recipe


GENERATED_SHAPES = {"digits": (8, 8, 1), "mnist1d": (40, 1), "fermentation": (16, 3), "machine-anomaly": (640, 1)}
"""Per-sample input shape of each generated source, known without generating it (a test checks)."""


def _is_model_reference(value: str) -> bool:
    """True when ``model:`` names something outside the zoo (a path, ``file.py:fn``): anything
    holding ``/``, ``.`` or ``:``. Those are checked where outside models are opened, not here."""
    return any(c in value for c in "/.:")


def data_shape(recipe: Recipe, base: Path | None) -> tuple[tuple[int, ...] | None, int | None, str] | None:
    """(per-sample input shape as the data loader yields it, with its channel axis; number of
    samples of a single (not given-split) npz, else None; what it was read from), from the
    data's shape only: the ``.npy`` header inside an ``npz:`` file, a ``csv:`` header row, a
    generated source's known shape; ``images:`` gives no shape (their rank is 3).
    None when it cannot be told. Raises :class:`edgekit.errors.DataError` for an unreadable npz
    and :class:`RecipeError` for a path escaping through a symlink."""
    src = recipe.data.source
    if src in GENERATED_SHAPES:
        return GENERATED_SHAPES[src], None, f"data.source {src}"
    kind, _, arg = src.partition(":")
    if kind == "images":
        return None, None, f"data.source {src} (height x width x 3)"
    if kind == "wav":
        return None, None, f"data.source {src} (clips of shape (frames, channels))"
    if src in SPEECH_SOURCES:
        return (16_000, 1), None, f"data.source {src} (1 s clips at 16 kHz, shape (16000, 1))"
    if kind in ARCHIVE_SOURCES:
        from .archives import load

        (x_tr, _), _ = load(src)[0]
        return tuple(x_tr.shape[1:]), None, f"data.source {src} (series of shape {tuple(x_tr.shape[1:])})"
    where = recipe_relative(arg, base, "data.source")
    if kind == "csv":
        import csv

        with open(where, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        return (max(len(header) - 1, 0), 1), None, f"data.source {src} (one row of features per sample)"
    if kind == "npz":
        from .data import npz_headers

        heads = npz_headers(where)
        shape = (heads.get("x_train") or heads.get("x") or (None,))[0]
        if not shape:
            return None
        per_sample = tuple(shape[1:]) + ((1,) if len(shape) == 2 else ())
        samples = None if "x_train" in heads else shape[0]  # a given split: its own checks at load
        return per_sample, samples, f"data.source {src} (x per sample {per_sample})"
    return None


def _rank_of(recipe: Recipe, shape: tuple[tuple[int, ...] | None, int | None, str] | None) -> tuple[int, str] | None:
    """The input rank the models see: with ``features`` (K, 1) vectors, else the data's."""
    if recipe.features is not None:
        return 2, f"features.reduce {recipe.features.reduce} gives (K, 1) vectors"
    if shape is None:
        return None
    per_sample, _, what = shape
    if per_sample is None:  # images (height, width, 3) or wav clips (frames, channels): sizes unread
        return (2 if recipe.data.source.startswith("wav:") else 3), what
    return len(per_sample), what


def check_inputs(recipe: Recipe, path: Path) -> list[str]:
    """What a recipe that parsed can still be known to fail on without training, one line each
    (``FILE: key: problem``): a ``data.source`` file or folder that is missing or unreadable, a
    csv without (or with a twice-named) label column, an npz with fewer than 10 samples,
    ``features.components`` above the features per sample, a model name not in the zoo, a zoo
    model whose input rank does not fit the data (read from the data's shape only). Imports no
    TensorFlow; ``edgekit recipes validate`` reports these."""
    from .errors import EdgekitError
    from .models import list_models, model_rank

    problems: list[str] = []
    base = path.parent
    kind, sep, arg = recipe.data.source.partition(":")
    data_ok = True
    if sep and kind in FILE_SOURCES:
        try:
            where = recipe_relative(arg, base, "data.source")
        except RecipeError as exc:
            problems.append(f"{path}: data.source: {exc}")
            where, data_ok = None, False
        if where is not None:
            want_dir = kind in ("images", "wav")
            if not (where.is_dir() if want_dir else where.is_file()):
                looked = where if where.is_absolute() else (base / arg)
                problems.append(f"{path}: data.source: {'folder' if want_dir else 'file'} {arg!r} not found "
                                f"(looked for {looked.absolute()}; a relative path is relative to the recipe's "
                                "folder); create it or fix the path")
                data_ok = False
            elif kind == "csv":
                problem = _csv_header_problem(where, recipe.data.label)
                if problem:
                    problems.append(f"{path}: data.label: {problem}")
    if recipe.data.source in SPEECH_SOURCES:
        import shutil

        missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
        if missing:
            problems.append(f"{path}: data.source: {' and '.join(missing)} not found on PATH: {recipe.data.source} "
                            "generates its speech with espeak-ng and sox; install them (Debian/Ubuntu: apt-get "
                            "install espeak-ng sox)")
    shape = None
    if data_ok:
        try:
            shape = data_shape(recipe, base)
        except (EdgekitError, OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: data.source: {exc}")
    win = recipe.data.window
    if win is not None and shape is not None and shape[0] is not None:
        per_sample, samples, what = shape
        if len(per_sample) != 2:
            problems.append(f"{path}: data.window: needs series of shape (length, channels); {what} has samples of "
                            f"shape {per_sample}; remove data.window")
            shape = None
        elif win.length > per_sample[0]:
            problems.append(f"{path}: data.window.length: {win.length} is longer than the series of {what}; use at "
                            f"most {per_sample[0]}")
            shape = None
        else:
            shape = ((win.length, per_sample[1]), samples, f"{what} cut into windows of {win.length} steps")
    if recipe.data.frontend is not None and shape is not None:
        from .audio import CLIP_SAMPLES, output_shape

        per_sample, samples, what = shape
        fe_shape = output_shape(recipe.data.frontend)
        if per_sample is not None and tuple(per_sample) not in ((CLIP_SAMPLES, 1), (CLIP_SAMPLES,)):
            problems.append(f"{path}: data.frontend: takes mono 1 s clips of {CLIP_SAMPLES} samples at 16 kHz; "
                            f"{what} has samples of shape {per_sample}; cut the clips to 1 s (long recordings: "
                            f"data.window: {{length: {CLIP_SAMPLES}, stride: {CLIP_SAMPLES // 2}}}) or remove "
                            "data.frontend")
            shape = None
        else:
            shape = (fe_shape, samples, f"data.frontend {recipe.data.frontend} (features of shape {fe_shape})")
    rank = _rank_of(recipe, shape)
    if shape is not None and shape[0] is not None:
        per_sample, samples, what = shape
        features = 1
        for d in per_sample:
            features *= d
        if recipe.features is not None and recipe.features.components > features:
            problems.append(f"{path}: features.components: {recipe.features.components} > {features}, the "
                            f"features per sample of {what}; choose at most {features}")
        if samples is not None and samples < 10:
            problems.append(f"{path}: data.source: {what} has only {samples} samples (at least 10 are needed "
                            "to split into train, validation and test); add samples")
    zoo = list_models()
    for key in ("teacher", "student"):
        cfg = getattr(recipe, key)
        if cfg is None:
            continue
        name = cfg.model
        if name not in zoo:
            if _is_model_reference(name) or (base / name).is_dir():  # a file, builder or SavedModel folder
                continue  # a model of the user's own: checked where it is opened
            close = difflib.get_close_matches(name, list(zoo), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{path}: {key}.model: unknown model {name!r}{hint} (known: {', '.join(zoo)})")
        elif rank is not None and model_rank(name) != rank[0]:
            fits = [m for m in zoo if model_rank(m) == rank[0]]
            problems.append(f"{path}: {key}.model: {name!r} takes inputs of rank {model_rank(name)}, but "
                            f"{rank[1]} is rank {rank[0]}; models that fit: {', '.join(fits) or 'none'}")
    return problems


def _csv_header_problem(where: Path, label: str) -> str | None:
    import csv

    try:
        with open(where, newline="", encoding="utf-8-sig") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return f"cannot read the header of {where}: {exc}"
    if label not in header:
        return f"no column {label!r} in {where} (columns: {', '.join(header) or 'none'}); set data.label"
    if header.count(label) > 1:
        return f"column {label!r} appears {header.count(label)} times in {where}; the copies would leak the label"
    if len(header) < 2:
        return f"{where} has only the label column {label!r}, no feature columns"
    return None


def list_targets() -> list[str]:
    """Names of the built-in target profiles."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def list_recipes() -> list[str]:
    """Names of the example recipes shipped with edgekit (``edgekit recipes init NAME``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def shipped_recipe(name: str) -> Path:
    """The file of the shipped example recipe ``name``; :class:`RecipeError` naming the known ones."""
    known = list_recipes()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"unknown example recipe {name!r}{hint} (known: {', '.join(known)})")
    return RECIPES_DIR / f"{name}.yaml"


def recipe_summary(path: Path, width: int = 100) -> str:
    """The first sentence of a recipe file's leading ``#`` comment (what the recipe is), cut to
    about ``width`` characters at a word; '' when the file starts with no comment."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(" ".join(lines).split())
    end = text.find(". ")
    text = text[: end + 1] if end >= 0 else text
    if len(text) > width:
        text = text[:width].rsplit(" ", 1)[0].rstrip(",;:") + " …"
    return text


def init_recipe(name: str, dest: Path | None = None) -> Path:
    """Copy the shipped example recipe ``name`` to ``dest`` (a file, or a folder to put
    ``NAME.yaml`` in; default ``./NAME.yaml``) to start from. Never overwrites: an existing file
    is a :class:`RecipeError` (exit 2) and is left as it was. Returns the path written."""
    source = shipped_recipe(name)
    dest = Path(dest) if dest is not None else Path(f"{name}.yaml")
    if dest.is_dir():
        dest = dest / f"{name}.yaml"
    if dest.exists() or dest.is_symlink():
        raise RecipeError(f"{dest} already exists; edgekit does not overwrite it: name another "
                          f"DEST (edgekit recipes init {name} DEST)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(dest, "xb") as f:  # exclusive: a file that appears meanwhile is not overwritten
            f.write(source.read_bytes())
    except FileExistsError:
        raise RecipeError(f"{dest} already exists; edgekit does not overwrite it") from None
    return dest


def recipe_relative(name: str, base: Path | None, what: str) -> Path:
    """A path a recipe names: relative to the recipe's folder ``base`` when it exists there,
    else as given (relative to the working directory).

    A relative path may not escape through a symlink: when following its symlinks leads outside
    the folder it is relative to (to a place the recipe does not name), it is refused with a
    :class:`RecipeError` naming both places. Absolute paths, and ``..`` written out, are the
    user's own choice (their symlinks are checked the same way).
    """
    p = Path(name)
    if p.is_absolute():
        return p
    chosen = base / p if base is not None and (base / p).exists() else p
    root = (base if chosen is not p else Path.cwd()).resolve()
    lexical = Path(os.path.normpath(root / p))
    real = lexical.resolve()
    if real != lexical and not real.is_relative_to(root):
        raise RecipeError(f"{what} {name!r} leads through a symlink to {real}, outside {root}; "
                          f"write that path itself (absolute) if it is the one you mean")
    return chosen


def absolute_source(source: str, base: Path | None) -> str:
    """``data.source`` with a relative file path (``npz:``/``csv:``/``images:``) made absolute,
    resolved as the pipeline resolves it (:func:`recipe_relative`, symlink policy included), for
    a copy of the recipe that lives elsewhere; any other source is returned unchanged."""
    kind, sep, arg = source.partition(":")
    if not sep or kind not in FILE_SOURCES or not arg or Path(arg).is_absolute():
        return source
    return f"{kind}:{recipe_relative(arg, base, 'data.source').resolve()}"


def find_target(name_or_path: str, *, base: Path | None = None) -> Path:
    """Resolve a target name (``rpi4``) or path (``my/board.yaml``) to its profile file."""
    candidates = []
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        # relative to the recipe first, so a recipe means the same wherever it is run from
        candidates.append(recipe_relative(name_or_path, base, "target profile"))
    else:
        candidates.append(TARGETS_DIR / f"{name_or_path}.yaml")
    for c in candidates:
        if c.is_file():
            return c
    known = list_targets()
    close = difflib.get_close_matches(name_or_path, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise RecipeError(f"unknown target {name_or_path!r}{hint} (known: {', '.join(known)}; or a path to a .yaml profile)")


def load_target(name_or_path: str, *, base: Path | None = None) -> TargetProfile:
    """Load and validate a target profile by name or path."""
    path = find_target(name_or_path, base=base)
    return _validate(TargetProfile, _read_yaml(path, "target profile"), path)


def resolved_yaml(recipe: Recipe) -> str:
    """The recipe with every default filled in, as YAML (written next to a run's artifacts)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def reference_markdown() -> str:
    """The recipe reference (every key, its type, default and meaning) generated from the schema,
    so the README cannot drift from the code (a test compares them)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            sub = _model_of(field.annotation)
            if field.is_required():
                default = "required"
            elif field.default_factory is not None:
                made = field.default_factory()
                default = "{…}" if isinstance(made, BaseModel) else f"`{made}`"
            else:
                d = field.default
                default = f"`{d.value if isinstance(d, enum.Enum) else d}`" if d is not None else "`null`"
            meta = " ".join(filter(None, (_constraint(m) for m in field.metadata)))
            kind = " ".join(_type_name(field.annotation).split())
            text = field.description or (sub.__doc__ or "").strip().splitlines()[0] if sub else field.description
            text = (text or "").replace("|", "\\|")
            rows.append(f"| `{key}` | {kind}{' ' + meta if meta else ''} | {default} | {text} |")
            if sub is not None:
                walk(sub, f"{key}.")

    walk(Recipe, "")
    return "\n".join(rows)


def _constraint(meta: Any) -> str:
    for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        v = getattr(meta, attr, None)
        if v is not None:
            return f"{sym}{v}"
    return ""


def _type_name(annotation: Any) -> str:
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0]) + " " + " ".join(filter(None, (_constraint(m) for m in args[1:])))
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return _type_name(rest[0]) + " or null"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(m.value for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))
