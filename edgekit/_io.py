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

__all__ = ["write_json", "write_text"]


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
