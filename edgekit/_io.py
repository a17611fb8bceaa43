"""Atomic file writes shared by every stage (no TensorFlow here: ``edgekit.mcu`` uses it too).

A file is written to a temp file in the same folder (``.<name>.XXXX.tmp``), flushed to disk and
renamed over the target with ``os.replace``, so readers see either the old file or the new one,
never half of one, and a failed write leaves no temp file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run_lock", "write_json", "write_text"]


def write_text(path: Path, text: str | bytes) -> Path:
    """Write ``text`` (str as UTF-8, or bytes) to ``path`` atomically; returns ``path``.

    Creates the parent folder. The file gets mode 0644 (``mkstemp`` would leave 0600). Raises
    ``OSError`` from the file system; the previous file, if any, is then left untouched.
    """
    path = Path(path)
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


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


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
    with open(run_dir / ".edgekit.lock", "a+") as fh:
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
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
