"""The run manifest: versions, hashes, and per-stage status, seconds, fingerprints and files.

A stage's *fingerprint* hashes its config and the fingerprint of what it consumed, so
``--resume`` can tell a finished stage whose inputs are unchanged (skip it) from one that must
run again. Every write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from . import __version__
from ._io import sha256_path
from .fitting import write_json

SCHEMA = "edgekit.manifest/1"


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes (:func:`edgekit._io.sha256_path`)."""
    return sha256_path(path)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serializable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version(), "edgekit": __version__}
    for dist in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "litert-quantizer",
                 "tflite-micro", "tf2onnx", "onnxruntime", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).parent)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class Manifest:
    """``DIR/manifest.json``, loaded or fresh; call :meth:`save` after each change."""

    def __init__(self, out_dir: Path, data: dict[str, Any]):
        self.out_dir = out_dir
        self.path = out_dir / "manifest.json"
        self.data = data

    @classmethod
    def load(cls, out_dir: Path) -> "Manifest | None":
        """The manifest of ``out_dir``; None when there is none or it is not an edgekit manifest
        (:func:`problem` says why)."""
        data, _ = _read(Path(out_dir))
        return None if data is None else cls(Path(out_dir), data)

    @staticmethod
    def problem(out_dir: Path) -> str | None:
        """Why ``out_dir/manifest.json`` cannot be used (None: it can, or there is none)."""
        return _read(Path(out_dir))[1]

    @classmethod
    def new(cls, out_dir: Path, *, recipe_name: str, recipe_sha256: str, seed: int) -> "Manifest":
        return cls(out_dir, {"schema": SCHEMA, "recipe": recipe_name, "recipe_sha256": recipe_sha256,
                             "seed": seed, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "git_commit": _git_commit(), "versions": _versions(),
                             "host": {"machine": platform.machine(), "platform": platform.platform()},
                             "stages": {}})

    def refresh(self, *, recipe_sha256: str) -> None:
        """Update run-level facts when a run is resumed."""
        self.data.update(recipe_sha256=recipe_sha256, versions=_versions(), git_commit=_git_commit())

    def entry(self, name: str) -> dict[str, Any] | None:
        return self.data["stages"].get(name)

    def interrupted(self) -> list[str]:
        """Stages still marked ``running``: the process that ran them was killed (the lock is
        free, so it is gone). They are not current; the next run redoes them."""
        return [n for n, e in self.data["stages"].items() if e.get("status") == "running"]

    def mark_interrupted(self) -> list[str]:
        """Mark every ``running`` stage ``failed`` ("interrupted"); call with the run's lock held."""
        names = self.interrupted()
        for n in names:
            e = self.data["stages"][n]
            e.update(status="failed", error="interrupted: the process running this stage ended without "
                                            "finishing it (killed or crashed)")
        if names:
            self.save()
        return names

    def is_current(self, name: str, fp: str) -> bool:
        """True when ``name`` finished with fingerprint ``fp`` and its files are unchanged."""
        e = self.entry(name)
        if not e or e.get("status") not in ("done", "skipped") or e.get("fingerprint") != fp:
            return False
        for rel, digest in e.get("files", {}).items():
            p = self.out_dir / rel
            if not p.is_file() or sha256_file(p) != digest:
                return False
        return True

    def mark(self, name: str, status: str, *, fp: str, seconds: float | None = None,
             files: list[Path] = (), error: str | None = None, metrics: dict | None = None,
             reason: str | None = None) -> None:
        """Record stage ``name``: status, fingerprint, seconds, the sha256 of its files, an
        error or (for a skipped stage) the reason, and its metrics; saves the manifest."""
        entry = {"status": status, "fingerprint": fp,
                 "seconds": None if seconds is None else round(seconds, 3),
                 "files": {str(p.relative_to(self.out_dir)): sha256_file(p) for p in files}}
        if error:
            entry["error"] = error
        if reason:
            entry["reason"] = reason
        if metrics is not None:
            entry["metrics"] = metrics
        self.data["stages"][name] = entry
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)


def run_recipe(run_dir: Path, recipe: Path | None = None):
    """The recipe of a run directory and the path it was loaded from: ``recipe`` when given,
    else the one the run was started with (its file when it still exists, else the run's
    ``recipe.resolved.yaml``). Raises :class:`~edgekit.errors.EdgekitError` naming the problem
    for a folder that is not a usable run directory."""
    from .errors import EdgekitError
    from .recipe import load_recipe

    run_dir = Path(run_dir)
    manifest = Manifest.load(run_dir)
    if manifest is None:
        why = Manifest.problem(run_dir)
        if why is not None:
            raise EdgekitError(f"{run_dir}: not a usable run directory: manifest.json {why}; start over with "
                               "edgekit run RECIPE --out RUN_DIR --force")
        raise EdgekitError(f"{run_dir}: not a run directory (no manifest.json); start one with edgekit run")
    if recipe is None:
        original = Path(manifest.data.get("recipe_path", ""))
        recipe = original if original.is_file() else run_dir / "recipe.resolved.yaml"
    return load_recipe(recipe), recipe


def _read(out_dir: Path) -> tuple[dict | None, str | None]:
    """(data, None) for a usable manifest, (None, why) for an unusable one, (None, None) for none."""
    path = out_dir / "manifest.json"
    if not path.exists() and not path.is_symlink():
        return None, None
    if not path.is_file():
        return None, "not a regular file"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"not readable JSON ({' '.join(str(exc).split())[:120]})"
    if not isinstance(data, dict):
        return None, f"it holds a JSON {type(data).__name__}, not an object"
    if data.get("schema") != SCHEMA:
        return None, f"schema {data.get('schema')!r}, not {SCHEMA!r}"
    stages = data.get("stages")
    if not isinstance(stages, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in stages.items()):
        return None, "'stages' is not an object of stage entries"
    return data, None
