"""Target kinds behind one interface, in a registry that fails loudly.

Each kind is one module here (:mod:`.mobile`, :mod:`.rpi`, :mod:`.mcu`) with a
:class:`~.base.TargetKindSpec`; :func:`get` returns the spec for a profile's ``kind``.
Registering a name twice raises; asking for an unknown one names the known ones.

Example::

    from edgekit import targets

    spec = targets.get(profile.kind)          # TargetKind.mcu or "mcu"
    arts, files = spec.convert(source, profile, ctx)
    targets.known()                           # ['mcu', 'mobile', 'rpi']

Adding a kind: a module with a ``TargetKindSpec`` subclass, registered at the bottom of this
file, its name in :class:`edgekit.recipe.TargetKind` (the profile schema) and a profile in
``targets/``. Importing this package imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import RecipeError
from .base import ConvertContext, TargetKindSpec, write_preprocess

__all__ = ["ConvertContext", "TargetKindSpec", "get", "known", "register", "registered", "unregister",
           "write_preprocess"]

_KINDS: dict[str, TargetKindSpec] = {}


def _key(kind) -> str:
    return str(getattr(kind, "value", kind))


def register(spec: TargetKindSpec) -> TargetKindSpec:
    """Add ``spec`` under ``spec.name``; raises ``ValueError`` when that name is taken (a second
    module claiming a kind is a bug, not an override)."""
    name = getattr(spec, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{spec!r}: a target kind needs a non-empty name")
    if name in _KINDS:
        raise ValueError(f"target kind {name!r} is already registered by {_KINDS[name]!r}; pick another name")
    _KINDS[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove the kind ``name`` (raises ``KeyError`` when it is not registered)."""
    del _KINDS[name]


@contextlib.contextmanager
def registered(spec: TargetKindSpec) -> Iterator[TargetKindSpec]:
    """``spec`` registered for the ``with`` block only (a plugin or a test's toy kind)."""
    register(spec)
    try:
        yield spec
    finally:
        _KINDS.pop(spec.name, None)


def get(kind) -> TargetKindSpec:
    """The spec of ``kind`` (a :class:`edgekit.recipe.TargetKind` or its string). Raises
    :class:`~edgekit.errors.RecipeError` naming the known kinds when there is none."""
    name = _key(kind)
    try:
        return _KINDS[name]
    except KeyError:
        raise RecipeError(f"unknown target kind {name!r}; known kinds: {', '.join(known())}") from None


def known() -> list[str]:
    """The registered kind names, sorted."""
    return sorted(_KINDS)


def _register_builtins() -> None:
    from .mcu import McuKind
    from .mobile import MobileKind
    from .rpi import RpiKind

    for cls in (MobileKind, RpiKind, McuKind):
        register(cls())


_register_builtins()
