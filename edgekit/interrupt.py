"""One Ctrl-C stops a run, even when Python drops the KeyboardInterrupt it raised.

Python drops a KeyboardInterrupt raised while it runs a weakref callback ("Exception ignored in
..."; seen during QAT in tests/test_interrupt.py), and the run went on. The CLI installs
:func:`on_sigint`, which also sets :data:`INTERRUPT`; every training loop checks it after each
batch (:func:`edgekit.fitting.callbacks`) and raises KeyboardInterrupt again.
"""

from __future__ import annotations

import threading

INTERRUPT = threading.Event()
"""Set at a Ctrl-C by :func:`on_sigint`; cleared when a CLI command starts."""


def on_sigint(signum, frame):  # noqa: ARG001 - a signal handler's signature
    """SIGINT handler: remember the Ctrl-C, then raise KeyboardInterrupt as Python's own does."""
    INTERRUPT.set()
    raise KeyboardInterrupt
