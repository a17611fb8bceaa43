"""Latency estimates for boards we cannot reach, calibrated on published measurements.

A latency measured on the device is always better than an estimate; this module is for the
boards edgekit cannot run on (a Cortex-M4 on someone's desk, a Pi in the field). It has two
halves:

* an **op-level cost model** read from the ``.tflite`` flatbuffer alone (no TensorFlow): for
  every operator its MACs (convolutions, depthwise convolutions, fully connected, batch matmul,
  transposed convolutions) and its memory traffic (bytes read and written), in
  :mod:`edgekit.opcosts` (re-exported here as :func:`op_costs`);
* **per-board coefficients**, fitted by non-negative least squares on *published measured*
  latencies of known models on real boards (MLPerf Tiny results, the XNNPACK Raspberry Pi
  table): cycles per MAC of the GEMM-like ops (convolutions, fully connected) and cycles per
  activation byte that any op reads or writes (what depthwise convolutions, pooling,
  elementwise ops, reshapes and (de)quantization cost, plus the im2col/requantization work of
  the GEMM ops). Every measured number and its source live in
  ``edgekit/data/latency_calibration.yaml``; the features of the calibration models are
  regenerated from the zoo by ``python tools/bench_estimate.py --update-features``.

Why two coefficients and not one per op class: a calibration set holds two to four measured
models, and a per-class fit on so few points memorizes them (its leave-one-out error is worse).
:func:`op_costs` still reports every op's class, MACs and bytes, and ``per_op`` in the estimate
splits the total by the fitted coefficients.

Each set also stores what it was fitted on (:func:`validity_range`): a model outside it gets
its estimate flagged (``estimate_in_range: false``) and no budget verdict. A fixed per-op and
per-invoke cost joins the fit only where a set has points enough to identify it. An error band
is stated only where pooled held-out points support it (:func:`error_band`).

A target profile names the calibration set that was measured on its board (``calibration:`` in
``targets/*.yaml``) beside its ``core``, ``clock_mhz`` and ``kernels``. A profile without one gets
``latency_estimate_ms: None`` and a reason, never a guess. Every estimate carries the
leave-one-out error of its fit (each calibration model estimated by a fit that did not see it):
the error to expect on a new model of the same kind.

Example::

    from edgekit import estimate
    from edgekit.recipe import load_target

    est = estimate.estimate_model("model_int8.tflite", load_target("cortex-m4"))
    est["latency_estimate_ms"], est["estimate_basis"]["fit"]["loo_median_abs_pct_error"]

Nothing here imports TensorFlow: the flatbuffer schema comes from ``tflite_micro`` (imported
lazily), the fit needs numpy only.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConversionError, RecipeError  # noqa: F401 - ConversionError: raised by op_costs, documented here

__all__ = [
    "CALIBRATION_PATH",
    "FEATURES",
    "OP_CLASSES",
    "SCHEMA",
    "Calibration",
    "CalibrationSet",
    "Fit",
    "OpCost",
    "estimate_model",
    "fit_set",
    "load_calibration",
    "model_features",
    "op_costs",
]

SCHEMA = "edgekit.estimate/1"
CALIBRATION_PATH = Path(__file__).parent / "data" / "latency_calibration.yaml"

from .opcosts import (_GEMM_CLASSES, _INT_ACTIVATIONS, _MAC_CLASSES, _UNPRICED, FEATURES,  # noqa: F401
                      OP_CLASSES, OpCost, model_features, op_costs)
from .opcosts import summary as _summary

_FEATURE_UNITS = {"macs_gemm": "cycles per MAC", "bytes_activations": "cycles per byte",
                  "ops": "cycles per op", "invoke": "cycles per invoke"}


# --------------------------------------------------------------------------------------------
# calibration data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where a number was published: a URL, or a repository + path (+ commit)."""

    url: str | None = None
    repo: str | None = None
    path: str | None = None
    commit: str | None = None
    quote: str | None = Field(None, description="the line of the source the number is read from")

    @model_validator(mode="after")
    def _somewhere(self):
        if not (self.url or (self.repo and self.path)):
            raise ValueError("a source needs a url, or a repo and a path")
        return self

    def cite(self) -> str:
        if self.repo:
            at = f"@{self.commit[:12]}" if self.commit else ""
            return f"github:{self.repo}{at}/{self.path}"
        return str(self.url)


class Measurement(_Strict):
    """One published latency of one calibration model on the set's board."""

    model: str
    latency_ms: Annotated[float, Field(gt=0)] | None = None
    throughput_ips: Annotated[float, Field(gt=0)] | None = Field(
        None, description="inferences per second as published; latency = 1000 / throughput")
    source: Source
    note: str | None = None

    @model_validator(mode="after")
    def _one_number(self):
        if (self.latency_ms is None) == (self.throughput_ips is None):
            raise ValueError("give exactly one of latency_ms or throughput_ips")
        return self

    @property
    def published_ms(self) -> float:
        return self.latency_ms if self.latency_ms is not None else 1000.0 / float(self.throughput_ips)


class CalibrationSet(_Strict):
    """Measurements of known models on one board with one software stack."""

    board: str
    core: str
    clock_mhz: Annotated[float, Field(gt=0)]
    clock_note: str | None = None
    kernels: str
    runtime: str
    software: str
    threads: Annotated[int, Field(ge=1)] | None = Field(1, description="null: not stated by the source")
    system_source: Source | None = None
    note: str | None = None
    measurements: Annotated[list[Measurement], Field(min_length=1)]

    @property
    def key(self) -> tuple[str, str, str]:
        """What a set stands for: (board, runtime, kernels); the board is the text before the first
        comma (the rest says which submission). One runtime on one board is one set."""
        return self.board.split(",")[0].strip(), self.runtime, self.kernels


class CalibrationModel(_Strict):
    """A model measured in some calibration set: how it is built and its fit features."""

    description: str
    build: dict[str, Any] = Field(description="how tools/bench_estimate.py rebuilds it")
    features: dict[str, int] | None = Field(None, description="generated: model_features of the built model")
    macs: int | None = None
    ops: int | None = Field(None, description="generated: operators in the built model")
    op_kinds: list[str] | None = Field(None, description="generated: the op names of the built model")
    max_tensor_bytes: int | None = Field(None, description="generated: the largest non-constant tensor")
    built_with: str | None = None


class Calibration(_Strict):
    """The whole calibration file."""

    schema_: str = Field(alias="schema")
    features: list[str]
    sets: dict[str, CalibrationSet]
    models: dict[str, CalibrationModel]
    path: str = ""

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        if tuple(self.features) != FEATURES:
            problems.append(f"features {self.features} differ from this edgekit's {list(FEATURES)}: "
                            "run python tools/bench_estimate.py --update-features")
        seen: dict[tuple, str] = {}
        for name, s in self.sets.items():
            if s.key in seen:
                problems.append(f"sets.{name}: the same board and runtime {s.key} as sets.{seen[s.key]}; "
                                "merge their measurements into one set")
            seen.setdefault(s.key, name)
            for i, m in enumerate(s.measurements):
                if m.model not in self.models:
                    problems.append(f"sets.{name}.measurements.{i}.model: {m.model!r} is not in models")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> Calibration:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{p}: expected a mapping at the top level")
    try:
        return Calibration.model_validate({**raw, "path": str(p)})
    except ValidationError as exc:
        lines = [f"{p}: {'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise RecipeError("\n".join(lines)) from None


def load_calibration(path: os.PathLike | str | None = None) -> Calibration:
    """Load and validate the calibration file (default: the one shipped in the package).

    Raises :class:`RecipeError` naming the file and key for a malformed file. Cached per file
    modification time.
    """
    p = Path(path) if path is not None else CALIBRATION_PATH
    if not p.is_file():
        raise RecipeError(f"{p}: calibration file not found")
    return _load_cached(str(p.resolve()), p.stat().st_mtime_ns)


# --------------------------------------------------------------------------------------------
# fitting


# The cost model: cycles = a·MACs(GEMM) + b·activation bytes + c·ops + d (per invoke). The fixed
# terms (c, d) are fitted only where a set has points enough to identify them beside a and b with
# two degrees of freedom left; a set of four large models cannot tell a fixed cost from a small
# per-MAC one, so there they are 0 and models far smaller than the set lie outside its range.
TERMS = (*FEATURES, "ops", "invoke")
FIXED_TERMS_MIN_POINTS = len(TERMS) + 2
#: a model is inside a set's range when its GEMM MACs and activation bytes lie within this factor of
#: the calibration models' (below the smallest, above the largest), its largest tensor is at most
#: this factor above theirs, and it runs no computing op kind that none of them has
RANGE_FACTOR = 2.0
#: a stated error band needs this many held-out points whose 90 % interval holds at least BAND_COVERAGE
BAND_MIN_POINTS = 20
BAND_COVERAGE = 0.9


@dataclasses.dataclass(frozen=True)
class Fit:
    """Coefficients of one calibration set, their leave-one-out check and the set's range.

    ``coefficients``: cycles per unit of each fitted term (:data:`TERMS`: the fixed per-op and
    per-invoke terms only where the set identifies them); ``loo``: for every measured model, its
    published latency and the estimate of a fit that did not see it. ``loo_meaningful`` is false
    when a fit without one point has no degree of freedom left (two points, two coefficients):
    then its leave-one-out error says nothing and is not stated. ``range``: what the set was
    fitted on (see :func:`validity_range`).
    """

    set_name: str
    coefficients: dict[str, float]
    n_points: int
    loo: list[dict[str, Any]]
    residuals: list[dict[str, Any]]
    range: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(self.coefficients)

    @property
    def degrees_of_freedom(self) -> int:
        return self.n_points - len(self.coefficients)

    @property
    def loo_meaningful(self) -> bool:
        return self.n_points - 1 - len(self.coefficients) >= 1

    @property
    def loo_abs_pct_errors(self) -> list[float]:
        return [abs(r["pct_error"]) for r in self.loo if r["pct_error"] is not None]

    @property
    def loo_median_abs_pct_error(self) -> float | None:
        errs = sorted(self.loo_abs_pct_errors)
        if not errs or not self.loo_meaningful:
            return None
        mid = len(errs) // 2
        return round(errs[mid] if len(errs) % 2 else (errs[mid - 1] + errs[mid]) / 2, 1)

    @property
    def loo_max_abs_pct_error(self) -> float | None:
        errs = self.loo_abs_pct_errors
        return round(max(errs), 1) if errs and self.loo_meaningful else None

    @property
    def loo_note(self) -> str | None:
        if self.loo_meaningful:
            return None
        k = len(self.coefficients)
        return (f"{self.n_points} points for {k} coefficients: a fit that leaves one out has "
                f"{self.n_points - 1} point{'s' if self.n_points != 2 else ''} for {k} unknowns and no degree of "
                "freedom, so its leave-one-out error means nothing and none is stated")

    @property
    def fixed_costs(self) -> dict[str, Any]:
        fitted = "ops" in self.coefficients
        return {"fitted": fitted,
                "per_op_cycles": _sig(self.coefficients["ops"]) if fitted else None,
                "per_invoke_cycles": _sig(self.coefficients["invoke"]) if fitted else None,
                "note": None if fitted else
                (f"not fitted: {self.n_points} measured models cannot identify a fixed per-op and per-invoke cost "
                 f"beside the per-MAC and per-byte ones (needs {FIXED_TERMS_MIN_POINTS}); 0 is assumed, so estimates "
                 "for models much smaller than the calibration models are too low, which is why those lie "
                 "outside the set's range")}

    def cycles(self, terms: dict[str, float]) -> float:
        return sum(c * float(terms[t]) for t, c in self.coefficients.items())

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_points": self.n_points,
            "features": list(self.terms),
            "coefficients": {f: {"value": _sig(c), "unit": _FEATURE_UNITS[f]} for f, c in self.coefficients.items()},
            "degrees_of_freedom": self.degrees_of_freedom,
            "fixed_costs": self.fixed_costs,
            "loo_meaningful": self.loo_meaningful,
            "loo_note": self.loo_note,
            "loo_median_abs_pct_error": self.loo_median_abs_pct_error,
            "loo_max_abs_pct_error": self.loo_max_abs_pct_error,
            "loo": self.loo,
            "in_sample": self.residuals,
            "range": self.range,
        }


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if x else 0.0


def _nnls(rows: list[list[float]], targets: list[float]) -> list[float]:
    """Non-negative least squares, relative: minimize sum(((x . c) - y) / y)^2 over c >= 0.

    Exact by enumerating active sets (there are only len(FEATURES) features); ties (an
    under-determined fit) go to the smallest set of features, earliest in FEATURES order.
    """
    import numpy as np

    X = np.asarray(rows, dtype=float)
    y = np.asarray(targets, dtype=float)
    A = X / y[:, None]
    scale = np.where(A.max(axis=0) > 0, A.max(axis=0), 1.0)
    A = A / scale
    b = np.ones(len(y))
    best, best_loss = np.zeros(X.shape[1]), float(len(y))  # all-zero coefficients: every error -100 %
    n = X.shape[1]
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            sol, *_ = np.linalg.lstsq(A[:, cols], b, rcond=None)
            if np.any(sol < 0):
                continue
            c = np.zeros(n)
            c[list(cols)] = sol
            loss = float(np.sum((A @ c - b) ** 2))
            if loss < best_loss - 1e-12 * max(1.0, best_loss):
                best, best_loss = c, loss
    return list(best / scale)


def fit_set(set_name: str, calibration: Calibration | None = None) -> Fit:
    """Fit one calibration set's coefficients and run the leave-one-out check.

    Cycles of a measured model = published latency x the set's clock. The fixed per-op and
    per-invoke terms join the fit only when the set has :data:`FIXED_TERMS_MIN_POINTS` models
    with op counts. Raises :class:`RecipeError` for an unknown set or a calibration model
    without features.
    """
    cal = calibration or load_calibration()
    if set_name not in cal.sets:
        close = difflib.get_close_matches(set_name, list(cal.sets), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"unknown calibration set {set_name!r}{hint} "
                          f"(known: {', '.join(sorted(cal.sets))}; in {cal.path})")
    s = cal.sets[set_name]
    models = [cal.models[m.model] for m in s.measurements]
    for m in s.measurements:
        if cal.models[m.model].features is None:
            raise RecipeError(f"{cal.path}: models.{m.model}.features is missing: "
                              "run python tools/bench_estimate.py --update-features")
    fixed = len(models) >= FIXED_TERMS_MIN_POINTS and all(cm.ops is not None for cm in models)
    terms = TERMS if fixed else FEATURES
    rows, cycles, names, published = [], [], [], []
    for m, cm in zip(s.measurements, models):
        rows.append([float(_term_values(cm.features, cm.ops)[t]) for t in terms])
        cycles.append(m.published_ms * s.clock_mhz * 1e3)
        names.append(m.model)
        published.append(round(m.published_ms, 4))
    coef = _nnls(rows, cycles)
    to_ms = 1.0 / (s.clock_mhz * 1e3)
    residuals = [{"model": n, "published_ms": p, "estimate_ms": round(_dot(coef, r) * to_ms, 4),
                  "pct_error": round(100 * (_dot(coef, r) * to_ms - p) / p, 1)}
                 for n, p, r in zip(names, published, rows)]
    loo = []
    for i, (n, p, r) in enumerate(zip(names, published, rows)):
        rest = [j for j in range(len(rows)) if j != i]
        if not rest:
            loo.append({"model": n, "published_ms": p, "loo_estimate_ms": None, "pct_error": None})
            continue
        c = _nnls([rows[j] for j in rest], [cycles[j] for j in rest])
        est = _dot(c, r) * to_ms
        loo.append({"model": n, "published_ms": p, "loo_estimate_ms": round(est, 4),
                    "pct_error": round(100 * (est - p) / p, 1)})
    return Fit(set_name=set_name, coefficients=dict(zip(terms, coef)), n_points=len(rows),
               loo=loo, residuals=residuals, range=validity_range(set_name, cal))


def _term_values(features: dict[str, int], ops: int | None) -> dict[str, float]:
    return {**{f: features[f] for f in FEATURES}, "ops": ops or 0, "invoke": 1}


def validity_range(set_name: str, calibration: Calibration | None = None) -> dict[str, Any]:
    """What calibration set ``set_name`` was fitted on: the GEMM MACs, activation bytes and largest
    tensor of its models (min and max), and the op kinds they run (None where the calibration
    file has no generated op kinds); ``factor`` is :data:`RANGE_FACTOR`."""
    cal = calibration or load_calibration()
    models = [cal.models[m.model] for m in cal.sets[set_name].measurements]
    feats = [cm.features or {} for cm in models]
    kinds = None if any(cm.op_kinds is None for cm in models) else sorted({k for cm in models for k in cm.op_kinds})
    tensors = [cm.max_tensor_bytes for cm in models if cm.max_tensor_bytes is not None]
    return {"models": [m.model for m in cal.sets[set_name].measurements],
            **{f: [min(x.get(f, 0) for x in feats), max(x.get(f, 0) for x in feats)] for f in FEATURES},
            "max_tensor_bytes": [min(tensors), max(tensors)] if tensors and len(tensors) == len(models) else None,
            "op_kinds": kinds, "factor": RANGE_FACTOR}


def out_of_range(summary: dict[str, Any], rng: dict[str, Any]) -> list[str]:
    """Why a model (its :func:`edgekit.opcosts.summary`) lies outside a calibration set's
    :func:`validity_range`; empty when it lies inside."""
    why, k = [], rng.get("factor", RANGE_FACTOR)
    names = {"macs_gemm": "GEMM MACs", "bytes_activations": "activation bytes"}
    for f in FEATURES:
        lo, hi = rng[f]
        v = summary["features"][f]
        if v < lo / k:
            why.append(f"{names[f]} {v:,} below {math.ceil(lo / k):,} (1/{k:g} of the smallest calibration model's)")
        elif v > hi * k:
            why.append(f"{names[f]} {v:,} above {math.floor(hi * k):,} ({k:g}× the largest calibration model's)")
    if rng.get("max_tensor_bytes") and summary.get("max_tensor_bytes", 0) > rng["max_tensor_bytes"][1] * k:
        why.append(f"largest tensor {summary['max_tensor_bytes']:,} B above {rng['max_tensor_bytes'][1] * k:,.0f} B "
                   f"({k:g}× the calibration models')")
    if rng.get("op_kinds") is not None:
        from .opcosts import _CLASS_OF

        new = sorted(op for op in summary.get("op_kinds", []) if op not in rng["op_kinds"]
                     and _CLASS_OF.get(op, "other") not in _UNPRICED)
        if new:
            why.append(f"ops no calibration model runs: {', '.join(new)}")
    return why


def error_band(calibration: Calibration | None = None) -> dict[str, Any]:
    """The 90 % error band of the estimates, where held-out points support one.

    Pools the leave-one-out errors of every set whose leave-one-out check is meaningful; the
    band is the 90th percentile of their absolute errors. It is stated (``pct``) only when at
    least :data:`BAND_MIN_POINTS` points are pooled and a band computed without each point's own
    set holds that point for at least :data:`BAND_COVERAGE` of them; else ``pct`` is None and
    ``note`` says why. ``sets``: the sets the band applies to.
    """
    cal = calibration or load_calibration()
    pool = []
    for name in cal.sets:
        fit = fit_set(name, cal)
        if fit.loo_meaningful:
            pool += [(name, abs(r["pct_error"])) for r in fit.loo if r["pct_error"] is not None]
    sets = sorted({n for n, _ in pool})
    n = len(pool)
    held = [e <= _q90([x for m, x in pool if m != name]) for name, e in pool if any(m != name for m, _ in pool)]
    coverage = round(sum(held) / len(held), 3) if held else None
    p90 = _q90([e for _, e in pool]) if pool else None
    ok = n >= BAND_MIN_POINTS and coverage is not None and coverage >= BAND_COVERAGE
    note = None if ok else (
        f"no error band: {n} held-out (model, board, runtime) points over {len(sets)} calibration sets; a 90 % band "
        f"from the other sets held {'–' if coverage is None else f'{100 * coverage:.0f} %'} of them (a band needs "
        f"≥ {BAND_MIN_POINTS} points and ≥ {100 * BAND_COVERAGE:.0f} %)")
    return {"pct": round(p90, 1) if ok else None, "held_out": n, "coverage": coverage,
            "p90_abs_pct_error": None if p90 is None else round(p90, 1), "sets": sets, "note": note}


def _q90(values: list[float]) -> float:
    v = sorted(values)
    return v[max(0, math.ceil(0.9 * len(v)) - 1)] if v else float("inf")


def _dot(coef: Sequence[float], row: Sequence[float]) -> float:
    return sum(c * x for c, x in zip(coef, row))


# --------------------------------------------------------------------------------------------
# estimates


def estimate_model(model: bytes | bytearray | memoryview | os.PathLike | str, profile, *,
                   calibration: Calibration | os.PathLike | str | None = None) -> dict[str, Any]:
    """Estimate the latency of a ``.tflite`` model on a target profile's board.

    ``model``: the flatbuffer or a path; ``profile``: a :class:`~edgekit.recipe.TargetProfile`
    (``load_target("cortex-m4")``); ``calibration``: a :class:`Calibration` or the path of a
    calibration file (default: the shipped one). Returns a JSON-ready dict (schema
    ``edgekit.estimate/1``):

    * ``latency_estimate_ms``: the estimate, or ``None`` when the profile names no calibration
      set, the model runs its MAC ops in float (every calibration set measured int8 models), or
      the set cannot be fitted; then ``reason`` says why;
    * ``estimate_basis``: board, core, clock_mhz, kernels, runtime and threads of the
      calibration set, the profile's own clock, the sources, and ``fit`` (coefficients,
      ``n_points``, ``degrees_of_freedom``, ``fixed_costs``, ``loo_meaningful`` and ``loo_note``,
      ``loo_median_abs_pct_error``, ``loo_max_abs_pct_error`` (None where not meaningful), the
      per-model leave-one-out estimates, ``range``, and ``band``: the 90 % error band of
      :func:`error_band` where held-out points support one, else None and ``band_note``);
    * ``macs``, ``ops``, ``bytes_read``, ``bytes_written``, ``weight_bytes``, ``by_class``,
      ``features``: the op-level cost model of the file;
    * ``per_op``: every op's class, MACs, bytes and (when estimated) its share ``estimate_ms``;
    * ``estimate_in_range``: false when the model lies outside what the set was fitted on
      (:func:`validity_range`; ``estimate_range_reason`` says how): such an estimate is shown
      flagged and decides no budget;
    * ``calibration_match``: when the model has the shape of a calibration model of the set
      (same GEMM MACs, activation bytes within 5 %), its published latency and the estimate of
      the fit that left it out -- the honest number for a model the fit has seen;
    * ``notes``: caveats (clock scaling, kernels or core that differ from the profile's,
      calibration measured with several threads).

    Raises :class:`ConversionError` for a file that is not a TFLite model and
    :class:`RecipeError` for an unknown calibration set or a malformed calibration file.
    No side effects.
    """
    costs = op_costs(model)
    summary = _summary(costs)
    cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "target": profile.name,
        "latency_estimate_ms": None,
        "reason": None,
        "estimate_basis": {"calibration_set": profile.calibration, "board": profile.board or None,
                           "core": profile.core, "clock_mhz": profile.clock_mhz,
                           "kernels": profile.kernels, "runtime": profile.runtime},
        **summary,
        "per_op": [c.as_dict() for c in costs],
        "calibration_match": None,
        "estimate_in_range": None,
        "estimate_range_reason": None,
        "notes": [],
    }
    if profile.calibration is None:
        out["reason"] = _uncalibrated_reason(profile, cal)
        return out
    fit = fit_set(profile.calibration, cal)   # RecipeError for an unknown set
    s = cal.sets[profile.calibration]
    float_ops = sorted({c.op for c in costs if c.op_class in _MAC_CLASSES and c.dtype not in _INT_ACTIVATIONS})
    basis = {
        "calibration_set": profile.calibration,
        "board": s.board,
        "core": s.core,
        "clock_mhz": s.clock_mhz,
        "target_clock_mhz": profile.clock_mhz or s.clock_mhz,
        "kernels": s.kernels,
        "runtime": s.runtime,
        "software": s.software,
        "threads": s.threads,
        "sources": sorted({m.source.cite() for m in s.measurements}),
        "fit": fit.as_dict(),
    }
    band = error_band(cal)
    basis["fit"]["band"] = ({"pct": band["pct"], "held_out": band["held_out"], "coverage": band["coverage"]}
                            if band["pct"] is not None and profile.calibration in band["sets"] else None)
    basis["fit"]["band_note"] = (None if basis["fit"]["band"] else
                                 fit.loo_note and f"no error band: {fit.loo_note}" or band["note"])
    out["estimate_basis"] = basis
    if float_ops:
        dtypes = sorted({c.dtype for c in costs if c.op_class in _MAC_CLASSES and c.dtype not in _INT_ACTIVATIONS})
        out["reason"] = (f"the model runs {', '.join(float_ops)} on {', '.join(dtypes)} activations, but "
                         f"calibration set {profile.calibration!r} measured int8 models; convert to int8 "
                         "(tflite-int8 / tflite-full-int8) for an estimate")
        return out
    clock = profile.clock_mhz or s.clock_mhz
    to_ms = 1.0 / (clock * 1e3)
    est = fit.cycles(_term_values(summary["features"], summary["ops"])) * to_ms
    out["latency_estimate_ms"] = round(est, 4)
    why = out_of_range(summary, fit.range)
    out["estimate_in_range"] = not why
    out["estimate_range_reason"] = "; ".join(why) or None
    for row, c in zip(out["per_op"], costs):
        cyc = (fit.coefficients["macs_gemm"] * (c.macs if c.op_class in _GEMM_CLASSES else 0)
               + fit.coefficients["bytes_activations"] * (c.activation_bytes if c.op_class not in _UNPRICED else 0)
               + fit.coefficients.get("ops", 0.0))
        row["estimate_ms"] = round(cyc * to_ms, 6)
    out["calibration_match"] = _match(summary["features"], s, cal, fit, clock)
    out["notes"] = _notes(profile, s, clock)
    moved = sum(c.activation_bytes for c in costs if c.op_class in _UNPRICED)
    if moved > 0.1 * max(summary["features"]["bytes_activations"], 1):
        ops = sorted({c.op for c in costs if c.op_class in _UNPRICED})
        out["notes"].append(f"{moved} bytes of data-movement ops ({', '.join(ops)}) are not priced: the "
                            "calibration models have almost none; the estimate leaves them out")
    return out


def _match(features: dict[str, int], s: CalibrationSet, cal: Calibration, fit: Fit,
           clock: float) -> dict[str, Any] | None:
    for row in fit.loo:
        ref = cal.models[row["model"]].features or {}
        if (ref.get("macs_gemm") == features["macs_gemm"] and ref.get("bytes_activations")
                and abs(features["bytes_activations"] - ref["bytes_activations"]) <= 0.05 * ref["bytes_activations"]):
            note = ("this model is in the calibration set, so the estimate has seen its published "
                    "latency; loo_estimate_ms is what a fit without it predicts")
            if clock != s.clock_mhz:
                note += f" (both at the calibration board's {s.clock_mhz:g} MHz)"
            return {"model": row["model"], "clock_mhz": s.clock_mhz, "published_ms": row["published_ms"],
                    "loo_estimate_ms": row["loo_estimate_ms"], "loo_pct_error": row["pct_error"], "note": note}
    return None


def _notes(profile, s: CalibrationSet, clock: float) -> list[str]:
    notes = []
    if clock != s.clock_mhz:
        notes.append(f"clock-scaled from the calibration board's {s.clock_mhz:g} MHz to {clock:g} MHz "
                     "(memory wait states do not scale with the clock)")
    if profile.core and profile.core != s.core:
        notes.append(f"the profile's core is {profile.core}, the calibration board's is {s.core}")
    if profile.kernels and profile.kernels != s.kernels:
        notes.append(f"the profile's kernels are {profile.kernels}, the calibration measured {s.kernels}")
    if s.threads != 1:
        how = f"with {s.threads} threads" if s.threads else "multi-threaded (thread count not stated)"
        notes.append(f"the calibration latencies were measured {how}; a run with fewer threads is slower")
    if s.note:
        notes.append(s.note)
    return notes


def _uncalibrated_reason(profile, cal: Calibration) -> str:
    near = sorted(n for n, s in cal.sets.items() if profile.core and s.core == profile.core)
    msg = (f"no published latency measurement of board {profile.board or profile.name!r} is in the "
           f"calibration data, so target {profile.name!r} names no calibration set")
    if near:
        sets = ", ".join(f"{n} ({cal.sets[n].board}, {cal.sets[n].clock_mhz:g} MHz, {cal.sets[n].kernels})"
                         for n in near)
        msg += (f"; sets measured on the same core ({profile.core}): {sets}. Name one as `calibration:` "
                "in a profile of your own to get a clock-scaled estimate from that board")
    return msg
