"""Target kinds behind one interface, in a registry that fails loudly.

Each kind is one module here (:mod:`.mobile`, :mod:`.rpi`, :mod:`.mcu`) with a
:class:`~.base.TargetKindSpec`; :func:`get` returns the spec for a profile's ``kind``.
Registering a name twice raises; asking for an unknown one names the known ones.

Example::

    from edgekit import targets

    spec = targets.get(profile.kind)          # e.g. "mcu"
    arts, files = spec.convert(source, profile, ctx)
    targets.known()                           # ['mcu', 'mobile', 'rpi']

Adding a kind: one module in this package defining a ``TargetKindSpec`` subclass with a ``name``
(found and registered when the package is imported), and a profile in ``targets/`` whose
``kind`` is that name (:class:`edgekit.recipe.TargetProfile` accepts every registered kind).
Importing this package imports no TensorFlow; neither may a kind's module at import time.
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
    """The spec of ``kind`` (a profile's ``kind`` string). Raises
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
    """Register the ``TargetKindSpec`` subclasses defined in this package's modules (every module
    but :mod:`.base`), in module-name order; a kind without a ``name`` is an abstract helper."""
    import importlib
    import inspect
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, TargetKindSpec) and cls.__module__ == module.__name__
                    and isinstance(getattr(cls, "name", None), str) and cls.name):
                register(cls())


_register_builtins()
