"""The one exception hierarchy of edgekit.

Every error a user can cause derives from :class:`EdgekitError`. The CLI turns each into one
line and an exit code (``exit_code``); tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base of all edgekit errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class RecipeError(EdgekitError):
    """A recipe or target profile is malformed: names the file, the key path and what was expected."""

    exit_code = 2


class DataError(EdgekitError):
    """A dataset is missing, unreadable or inconsistent."""

    exit_code = 3


class StageError(EdgekitError):
    """A pipeline stage failed (training diverged, pruning missed its target under --strict...)."""

    exit_code = 4


class ConversionError(EdgekitError):
    """A model could not be converted for a target (including ops the target cannot run)."""

    exit_code = 5


class BudgetError(EdgekitError):
    """A converted model does not fit the target's budget (flash, RAM or latency)."""

    exit_code = 6


class ModelError(EdgekitError):
    """A given model (a user's .keras/.h5 file, SavedModel or builder) cannot be opened or taken:
    custom objects, a crash while loading, a Keras 3 rebuild that does not compute the same outputs."""

    exit_code = 7


class DeviceError(EdgekitError):
    """A device or runtime could not be reached or failed to run the model."""

    exit_code = 7


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc``'s message as one line to quote inside an error message: whitespace (newlines
    included) collapsed to single spaces, cut to ``limit`` characters (ending in ``...``), and the
    exception's type name when it has no message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
