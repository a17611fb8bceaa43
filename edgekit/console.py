"""What reaches the terminal: edgekit's own lines; everything else goes to a log file.

TensorFlow, absl, oneDNN and the TFLite converter write to file descriptor 2 from native code,
some of it before Python runs a line of TensorFlow (the oneDNN notice, "Could not find cuda
drivers", the ``cuInit`` error line on every CPU-only machine, ``fully_quantize: 0, …``), so no
Python logging setting can silence them. At the default level and with ``-q``, :class:`Console`
therefore points descriptor 2 at a log file and gives Python's ``sys.stderr`` a private copy of
the terminal: edgekit's messages, progress bars and tracebacks still reach the user, native
chatter and library logs (TensorFlow's Python logger, ``warnings``) land in the log. A command
that works in a run directory moves that log to ``RUN/logs/`` (:meth:`Console.attach`).

``-v`` shows library logs and native output on the terminal as well (nothing is redirected);
``-vv`` adds debug logs and TensorFlow's own info lines.

Child processes inherit the level through ``EDGEKIT_VERBOSITY`` (-1 quiet, 0 default, 1, 2), and
their descriptor 2 is the parent's: the evaluator, arena search, tune and cluster workers and the
tasks of an exported Airflow DAG follow the level of the command that started them.

Entry points set this up once (:meth:`Console.start`); library code only logs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["ENV", "Console", "level_from_env"]

ENV = "EDGEKIT_VERBOSITY"
log = logging.getLogger(__name__)

# TensorFlow's C++ minimum log level per verbosity (3 = errors hidden too: they land in the log
# only at the default level, where the whole descriptor goes to the file anyway)
_TF_CPP_LEVEL = {-1: "2", 0: "2", 1: "1", 2: "0"}


def level_from_env(default: int = 0) -> int:
    """The verbosity a parent edgekit process passed down (``EDGEKIT_VERBOSITY``), else ``default``."""
    try:
        return max(-1, min(2, int(os.environ.get(ENV, default))))
    except ValueError:
        return default


class _EdgekitOnly(logging.Filter):
    """Let through edgekit's own records (and anything at ERROR or above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "edgekit" or record.name.startswith("edgekit.") or record.levelno >= logging.ERROR


class _Fd2Handler(logging.StreamHandler):
    """Writes to whatever descriptor 2 is now (the log file once :meth:`Console.attach` moved it)."""

    def __init__(self):
        super().__init__(stream=None)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(2, (self.format(record) + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    def flush(self) -> None:
        pass


class Console:
    """Output routing for one CLI invocation; see the module docstring.

    ``verbosity``: -1 (``-q``, errors only), 0 (default), 1 (``-v``), 2 (``-vv``).
    """

    def __init__(self, verbosity: int):
        self.verbosity = max(-1, min(2, verbosity))
        self.log_path: Path | None = None     # where native output goes now (None: the terminal)
        self._saved_fd: int | None = None     # the terminal's descriptor 2, kept while redirected
        self._saved_stderr = None
        self._attached = False
        self._handlers: list[logging.Handler] = []
        self._saved_showwarning = None

    @property
    def redirected(self) -> bool:
        return self._saved_fd is not None

    def start(self) -> "Console":
        """Set the environment for children, route descriptor 2 and configure logging."""
        self._saved_env = {k: os.environ.get(k) for k in (ENV, "TF_CPP_MIN_LOG_LEVEL")}
        os.environ[ENV] = str(self.verbosity)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_CPP_LEVEL[self.verbosity])
        if self.verbosity <= 0 and _stderr_is_fd2():
            fd, name = tempfile.mkstemp(prefix="edgekit-", suffix=".log")
            self._redirect(fd)
            self.log_path = Path(name)
        self._configure_logging()
        return self

    def attach(self, run_dir: Path, command: str) -> Path | None:
        """Continue the log in ``run_dir/logs/<command>-<time>.log``; returns its path.

        What was logged before (TensorFlow's import lines) is copied over and the temporary file
        removed. Without redirection (``-v``) only Python's log records go to the file.
        """
        if self._attached:
            return self.log_path
        from ._io import guard
        from .errors import EdgekitError

        logs = Path(run_dir) / "logs"
        try:
            logs.mkdir(parents=True, exist_ok=True)
            path = logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            guard(path, run_dir)  # logs/ may not lead out of the run (a symlink)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        except (OSError, EdgekitError) as exc:  # a read-only run directory: keep the temporary log
            log.debug("cannot write a log into %s: %s", logs, exc)
            return self.log_path
        if self.redirected and self.log_path is not None:
            with contextlib.suppress(OSError), open(self.log_path, "rb") as old:
                os.write(fd, old.read())
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            os.dup2(fd, 2)
            os.close(fd)
        else:
            handler = logging.FileHandler(path, encoding="utf-8")
            os.close(fd)
            handler.setLevel(logging.DEBUG)
            handler.setFormatter(_file_formatter())
            logging.getLogger().addHandler(handler)
            self._handlers.append(handler)
        self.log_path, self._attached = path, True
        return path

    def close(self) -> None:
        """Give descriptor 2 back to the terminal; a temporary log that nothing kept is removed."""
        for h in self._handlers:
            logging.getLogger().removeHandler(h)
            h.close()
        self._handlers.clear()
        logging.captureWarnings(False)
        for key, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._saved_fd is not None:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(self._saved_fd, 2)
            os.close(self._saved_fd)
            self._saved_fd = None
            sys.stderr = self._saved_stderr
            if not self._attached and self.log_path is not None:
                with contextlib.suppress(OSError):
                    self.log_path.unlink()
                self.log_path = None

    # ------------------------------------------------------------------ internals

    def _redirect(self, fd: int) -> None:
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        self._saved_stderr = sys.stderr
        os.dup2(fd, 2)
        os.close(fd)
        # Python's own stderr keeps writing to the terminal, through a private descriptor; the
        # copy is not inherited by children (os.dup makes it non-inheritable)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(self._saved_fd), "wb", buffering=0),
                                      encoding=getattr(self._saved_stderr, "encoding", None) or "utf-8",
                                      errors="backslashreplace", line_buffering=True, write_through=True)

    def _configure_logging(self) -> None:
        root = logging.getLogger()
        term = logging.StreamHandler(sys.stderr)
        term.setLevel({-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[self.verbosity])
        term.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        if self.verbosity <= 0:
            term.addFilter(_EdgekitOnly())   # library warnings go to the log only
        root.addHandler(term)
        self._handlers.append(term)
        if self.redirected:
            file_handler = _Fd2Handler()
            file_handler.setLevel(logging.DEBUG if self.verbosity >= 2 else logging.INFO)
            file_handler.setFormatter(_file_formatter())
            root.addHandler(file_handler)
            self._handlers.append(file_handler)
        root.setLevel(logging.DEBUG if self.verbosity >= 2 else logging.INFO)
        logging.captureWarnings(True)        # warnings.warn(...) from libraries -> logging (py.warnings)


def _file_formatter() -> logging.Formatter:
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _stderr_is_fd2() -> bool:
    """True when ``sys.stderr`` writes to the process's descriptor 2 (not click's CliRunner buffer)."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
