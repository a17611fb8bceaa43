"""Atomic file writes and guarded removals shared by every stage (no TensorFlow here:
``edgekit.mcu`` uses it too).

A file is written to a temp file in the same folder (``.<name>.XXXX.tmp``), flushed to disk and
renamed over the target with ``os.replace``, so readers see either the old file or the new one,
never half of one, and a failed write leaves no temp file behind.

edgekit deletes and overwrites only what it created inside a run directory. Every removal goes
through :func:`remove` and every write through :func:`write_text` / :func:`write_json` (or
:func:`guard` for writers of their own, such as Keras' ``model.save``): each resolves the path's
folder through its symlinks and refuses one that lands outside the run directory (``root``),
with :class:`~edgekit.errors.EdgekitError`. The run directory is given as ``root=`` or, inside
:func:`run_lock` (which every command that writes a run holds), taken from the lock.
:func:`check_out_dir` is the ``--out`` policy: a folder that is absent, empty or holds what
edgekit writes there, never ``/``, the home folder, the edgekit checkout, or a folder above the
working directory, the checkout or the recipe; :func:`check_page_out` is the one of a single page
(``report --out FILE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import contextvars
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

__all__ = ["check_not_special", "check_out_dir", "confined", "guard", "hash_files", "remove", "run_lock", "sha256_path",
           "write_json", "write_text"]

# the run directory the current code may write in (set by run_lock / confined); None: no run
_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("edgekit_run_root", default=None)


def _where(path: Path) -> Path:
    """Where the directory entry ``path`` really is: its folder resolved through symlinks, plus
    its own name (a symlink itself is not followed: it is what gets replaced or unlinked)."""
    path = Path(path)  # not abspath: it would fold "link/.." lexically, where the kernel follows the link
    if path.name in ("", ".", ".."):
        return path.resolve()
    return path.parent.resolve() / path.name


def guard(path: Path, root: Path | None = None) -> Path:
    """Refuse ``path`` unless it lies inside ``root`` (default: the run directory of the current
    :func:`run_lock` / :func:`confined`; no check when there is none); returns ``path``.

    Both are resolved through their symlinks first, so a link inside the run that points
    elsewhere, or a name such as ``../x``, is refused. Raises :class:`EdgekitError` (exit 1).
    """
    root = root if root is not None else _ROOT.get()
    if root is None:
        return Path(path)
    real_root = Path(root).resolve()
    real = _where(Path(path))
    if real == real_root or not real.is_relative_to(real_root):
        from .errors import EdgekitError

        raise EdgekitError(f"{path}: refused to write or remove it: it resolves to {real}, outside the run "
                           f"directory {real_root} (edgekit changes only what it created there)")
    return Path(path)


@contextlib.contextmanager
def confined(root: Path):
    """Within this block :func:`write_text`, :func:`write_json`, :func:`remove` and :func:`guard`
    refuse paths outside ``root`` unless given their own ``root``."""
    token = _ROOT.set(Path(root).resolve())
    try:
        yield
    finally:
        _ROOT.reset(token)


def remove(path: Path, *, root: Path | None = None) -> None:
    """Remove the file, symlink or folder tree ``path`` (nothing when it does not exist), only
    when it lies inside ``root`` (see :func:`guard`). A symlink is removed itself, never what it
    points to; a folder's symlinks are unlinked, not followed."""
    path = Path(path)
    if root is None and _ROOT.get() is None:
        from .errors import EdgekitError

        raise EdgekitError(f"{path}: refused to remove it: no run directory to confine the removal to")
    guard(path, root)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def write_text(path: Path, text: str | bytes, *, root: Path | None = None) -> Path:
    """Write ``text`` (str as UTF-8, or bytes) to ``path`` atomically; returns ``path``.

    Creates the parent folder. The file gets mode 0644 (``mkstemp`` would leave 0600). Raises
    ``OSError`` from the file system; the previous file, if any, is then left untouched. Inside a
    run (``root``, or the current :func:`run_lock`) a path outside the run directory is refused.
    """
    path = guard(Path(path), root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: Path, data: Any, *, root: Path | None = None) -> Path:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", root=root)


@contextlib.contextmanager
def run_lock(run_dir: Path, *, busy_hint: str = "wait for it or choose another --out", wait_s: float = 0.0):
    """Hold a run directory's lock: an exclusive ``flock`` on ``DIR/.edgekit.lock``.

    One edgekit process at a time writes a run directory (``run``, stage commands, ``deploy``).
    With ``wait_s`` 0 (the default) a lock held by another process raises :class:`EdgekitError`
    at once; with ``wait_s`` > 0 this waits up to that many seconds for it (polling every 0.2 s),
    then raises. Tasks that share a run directory (one per target in an Airflow DAG) wait in turn
    this way. The lock file stays (removing it would race with the next locker); the lock itself
    goes with the process.
    """
    import fcntl
    import logging
    import time

    from .errors import EdgekitError

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(0.0, wait_s)
    # O_NOFOLLOW: a lock file that is a symlink (to a file elsewhere) is refused, not opened
    fd = os.open(run_dir / ".edgekit.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a+") as fh:
        said = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
                    raise EdgekitError(f"{run_dir} is in use by another edgekit process{waited}; {busy_hint}") from None
                if not said:
                    logging.getLogger(__name__).info("%s is in use by another edgekit process; waiting up to %g s",
                                                     run_dir, wait_s)
                    said = True
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        try:
            with confined(run_dir):
                yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _dangerous(real: Path, extra: Iterable[Path] = ()) -> str | None:
    """Why ``real`` (resolved) may never be an output folder, or None."""
    checkout = Path(__file__).resolve().parent.parent
    if real == Path(real.anchor):
        return "the file system root"
    if real == Path.home().resolve():
        return "your home folder"
    if real == checkout or real in checkout.parents:
        return "the edgekit checkout (or a folder above it)"
    if real in Path.cwd().resolve().parents:
        return "a folder above the working directory"
    for p in extra:
        p = Path(p).resolve()
        if real in p.parents:
            return f"{p} (or a folder above it)"
    return None


def check_not_special(out: Path, *, flag: str = "--out", above: Iterable[Path] = ()) -> Path:
    """Refuse (exit 2) an output folder that is the file system root, the home folder, the
    edgekit checkout, or a folder above it, the working directory or one of ``above``; returns
    ``out`` resolved."""
    from .errors import RecipeError

    real = Path(out).resolve()
    why = _dangerous(real, above)
    if why is not None:
        raise RecipeError(f"{flag} {out}: refused: it is {why}; give a new or empty folder for edgekit's output")
    return real


def check_out_dir(out: Path, *, markers: Iterable[str] = ("manifest.json",), what: str = "edgekit run",
                  flag: str = "--out", above: Iterable[Path] = (), allow: Iterable[str] = ()) -> bool:
    """The ``--out`` policy: ``out`` must be absent, empty, or hold ``what`` (one of ``markers``
    present; a folder holding only edgekit's lock file counts as empty). Raises
    :class:`~edgekit.errors.RecipeError` (exit 2) with one line otherwise, and always for the
    file system root, the home folder, the checkout, a folder above the working directory or
    above one of ``above`` (the recipe's folder), whatever ``--force`` says. Names in ``allow``
    do not make a folder non-empty (the recipe a run runs, when it lies in ``out``: `edgekit
    compress` writes ``OUT/recipe.yaml`` first). Returns whether ``out`` holds ``what``."""
    from .errors import RecipeError

    out = Path(out)
    real = check_not_special(out, flag=flag, above=above)
    if out.is_symlink() and not out.is_dir():
        raise RecipeError(f"{flag} {out}: is a symlink to {real}, which is not a folder; choose another {flag}")
    if not out.exists():
        return False
    if not out.is_dir():
        raise RecipeError(f"{flag} {out}: exists and is not a directory; choose another {flag}")
    if any((out / m).exists() or (out / m).is_symlink() for m in markers):
        return True
    allowed = {".edgekit.lock", *allow}
    if any(p.name not in allowed for p in out.iterdir()):
        raise RecipeError(f"{flag} {out}: the folder is not empty and holds no {what} "
                          f"({' or '.join(markers)}); edgekit writes only into a new or empty folder, or one of "
                          f"its own (--force included): choose another {flag}")
    return False


def check_page_out(path: Path) -> None:
    """The ``report --out FILE`` policy: FILE is absent (created) or an HTML page edgekit wrote
    (overwritten); anything else (another file, a folder, a symlink) raises
    :class:`~edgekit.errors.RecipeError` with one line."""
    from .errors import RecipeError

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_file():
        raise RecipeError(f"--out {path}: not a regular file; edgekit overwrites only an HTML page it wrote")
    with open(path, "rb") as f:
        head = f.read(4096)
    if not (head.startswith(b"<!DOCTYPE html>") and b"<title>edgekit " in head):
        raise RecipeError(f"--out {path}: exists and is not an edgekit HTML page; edgekit does not overwrite it "
                          "(choose another file)")


def hash_files(h: "hashlib._Hash", files: Iterable[Path], root: Path | None = None) -> None:
    """Feed ``files`` into ``h``: per file its name relative to ``root`` (empty without one), its
    size and its bytes (read in 1 MiB chunks), so a renamed, resized or edited file changes the hash."""
    for p in files:
        rel = "" if root is None or p == root else p.relative_to(root).as_posix()
        h.update(f"\0{rel}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)


def sha256_path(path: Path) -> str:
    """The sha256 of a file's bytes, or of a folder's files (see :func:`hash_files`, sorted by name).

    The one file hash of edgekit: manifests, model sources, what-to-ship lists. Raises ``OSError``
    for a missing path.
    """
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        hash_files(h, sorted((q for q in path.rglob("*") if q.is_file()), key=lambda q: q.relative_to(path).as_posix()),
                   path)
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
