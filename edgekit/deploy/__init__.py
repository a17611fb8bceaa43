"""Stage 7 (optional): copy a Raspberry Pi bundle to a device over SSH, measure it there, merge
the numbers into the run.

``edgekit deploy RUN_DIR --target rpi4 --host pi@raspberrypi.local`` connects with paramiko (keys
or ssh-agent only), checks the device (machine, Python, free disk, numpy and a TFLite runtime),
copies ``targets/<target>/bundle`` into a fresh remote folder over SFTP, runs ``sh run.sh`` there
under a timeout, fetches its JSON and removes the remote folder (unless ``keep``). The result is
labelled ``rpi:<hostname>`` when ``/proc/device-tree/model`` names a Raspberry Pi, else
``ssh:<hostname>``, written to ``eval/<target>-device.json`` and merged into ``report.json`` /
``report.md``: the target's entry gets the device numbers (its latency budget is now checked),
the host numbers move to ``host_measurement``.

Host keys are checked against a known_hosts file like OpenSSH with ``StrictHostKeyChecking
accept-new`` at most: an unknown key is refused unless ``accept_new_host_key`` (then appended); a
changed key is always refused. Every failure is a :class:`DeviceError` with one line that says
what failed and what to do; nothing in the run folder changes unless everything succeeded.

The package, by concern: :mod:`~edgekit.deploy.plan` (the local side and ``--dry-run``),
:mod:`~edgekit.deploy.device` (the device check), :mod:`~edgekit.deploy.ssh` (the SSH transport),
:mod:`~edgekit.deploy.measure` (a deploy from start to end) and :mod:`~edgekit.deploy.merge`
(the device's numbers into the report). The ``edgekit deploy`` command lives in :mod:`edgekit.cli`;
this package imports neither click nor paramiko (paramiko is imported when connecting).
"""

from .device import DeviceCheck, parse_check, require
from .measure import deploy
from .merge import merge_entry, summary_line
from .plan import (CHECK_TIMEOUT_S, CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, INSTALL_TIMEOUT_S, KILL_AFTER_S, MIN_PYTHON,
                   RUNTIME_INSTALL_BYTES, RUNTIMES, SPARE_BYTES, BundleFile, Destination, Plan, make_plan)
from .ssh import Completed, Session, connect, fingerprint

__all__ = ["CHECK_TIMEOUT_S", "CONNECT_TIMEOUT_S", "DEFAULT_TIMEOUT_S", "INSTALL_TIMEOUT_S", "KILL_AFTER_S",
           "MIN_PYTHON", "RUNTIMES", "RUNTIME_INSTALL_BYTES", "SPARE_BYTES", "BundleFile", "Completed", "Destination",
           "DeviceCheck", "Plan", "Session", "connect", "deploy", "fingerprint", "make_plan", "merge_entry",
           "parse_check", "require", "summary_line"]
