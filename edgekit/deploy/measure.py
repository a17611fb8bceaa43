"""A deploy from start to end: connect, check the device, copy the bundle, run the evaluator,
fetch its result, clean up, and write the device JSON and the merged reports (only when all of
that succeeded)."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any, Callable

from .._io import run_lock
from ..errors import DeviceError, EdgekitError, one_line
from .device import _probe_script, parse_check, require
from .merge import merge_entry
from .plan import CHECK_TIMEOUT_S, INSTALL_TIMEOUT_S, KILL_AFTER_S, Plan, _parent, _read_json, _seconds, _size
from .ssh import Session, connect

log = logging.getLogger(__name__)


def deploy(plan: Plan, *, key: Path | None = None, known_hosts: Path | None = None,
           accept_new_host_key: bool = False, progress: Callable[[str], None] | None = None,
           lock_wait_s: float = 0.0) -> dict[str, Any]:
    """Run ``plan`` on the device and merge the measurement into the run; returns the device JSON.

    Holds the run directory's lock (``.edgekit.lock``, as ``edgekit run`` does) throughout,
    waiting up to ``lock_wait_s`` seconds for another edgekit process to release it. Side
    effects, only after the device run succeeded: writes ``eval/<target>-device.json`` and
    rewrites the reports (each file atomically). Raises :class:`DeviceError`
    (exit 7) for any device, SSH or evaluator failure and :class:`EdgekitError` when the run
    has no report yet; the run folder is then unchanged.

    Example::

        plan = make_plan(Path("runs/quickstart"), "pi@raspberrypi.local", target="rpi4")
        result = deploy(plan)
        result["measured_on"], result["latency_ms"]["p50"]
    """
    with run_lock(plan.run_dir, busy_hint="wait for it and deploy again", wait_s=lock_wait_s):
        return _deploy(plan, key=key, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                       progress=progress)


def _deploy(plan: Plan, *, key: Path | None, known_hosts: Path | None, accept_new_host_key: bool,
            progress: Callable[[str], None] | None) -> dict[str, Any]:
    from ..report import write_reports

    say = progress or (lambda msg: log.info("%s", msg))
    report_path = plan.run_dir / "report.json"
    report = _read_json(report_path)
    if report is None:
        raise EdgekitError(f"{report_path}: no report to merge into; finish the run first (edgekit run ... --resume)")
    index = next((i for i, t in enumerate(report.get("targets", [])) if t.get("name") == plan.target), None)
    if index is None:
        raise EdgekitError(f"{report_path}: no target {plan.target!r} in the report; rerun `edgekit report`")
    t0 = time.monotonic()
    dest = plan.destination
    say(f"connecting to {dest}")
    with connect(dest, key=key, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key) as ssh:
        res = ssh.run(_probe_script(plan.python, plan.remote_dir), timeout_s=CHECK_TIMEOUT_S, what="device check")
        if res.exit_code != 0:
            raise DeviceError(f"{dest.host}: device check failed: {res.last_error_line()}")
        check = parse_check(res.stdout)
        for e in check.errors:
            log.debug("%s: %s", dest.host, e)
        say(f"device {check.measured_on}: {check.machine}, {check.model or check.cpu or 'unknown board'}, "
            f"Python {check.python_version}, numpy {check.numpy}, runtime {check.runtime} {check.runtime_version or ''}"
            .rstrip())
        install = require(check, plan)
        remote_dir = None
        failed = True
        try:
            q = shlex.quote
            res = ssh.run(f"mkdir -p {q(_parent(plan.remote_dir))} && mkdir {q(plan.remote_dir)} && "
                          f"cd {q(plan.remote_dir)} && pwd -P", timeout_s=CHECK_TIMEOUT_S, what="mkdir")
            if res.exit_code != 0:
                raise DeviceError(f"{dest.host}: cannot create {plan.remote_dir}: {res.last_error_line()} "
                                  "(deploy needs a folder that does not exist yet; choose another --remote-dir)")
            remote_dir = res.stdout.strip().splitlines()[-1]
            say(f"copying {len(plan.files)} files ({_size(plan.bundle_bytes)}) to {dest.host}:{remote_dir}")
            for f in plan.files:
                try:
                    ssh.put(f.path, f"{remote_dir}/{f.name}", timeout_s=max(CHECK_TIMEOUT_S, plan.timeout_s))
                except (OSError, EOFError) as exc:
                    free = f", {_size(check.free_bytes)} were free" if check.free_bytes is not None else ""
                    raise DeviceError(f"{dest.host}: copying {f.name} to {remote_dir} failed: "
                                      f"{one_line(exc)} (disk full{free}?)") from None
            python = plan.python
            if install:
                say(f"installing {', '.join(plan.requirements)} into {remote_dir}/venv (--install-runtime)")
                res = ssh.run(f"cd {q(remote_dir)} && {q(plan.python)} -m venv venv && venv/bin/python -m pip "
                              "install -q --no-cache-dir --disable-pip-version-check -r requirements.txt",
                              timeout_s=INSTALL_TIMEOUT_S, what="installing the runtime")
                if res.exit_code != 0:
                    raise DeviceError(f"{dest.host}: installing the runtime (pip install -r requirements.txt) "
                                      f"failed: {res.last_error_line()}")
                python = f"{remote_dir}/venv/bin/python"
            cmd = plan.commands(measured_on=check.measured_on, python=python, remote_dir=remote_dir,
                                use_timeout=check.has_timeout)["evaluate"]
            say(f"running the evaluator on {dest.host} (timeout {_seconds(plan.timeout_s)} s)")
            slack = KILL_AFTER_S + 10 if check.has_timeout else 0
            res = ssh.run(cmd, timeout_s=plan.timeout_s + slack, what=f"{plan.target} evaluator")
            if check.has_timeout and res.exit_code in (124, 137):
                raise DeviceError(f"{dest.host}: {plan.target} evaluator timed out after {_seconds(plan.timeout_s)} s "
                                  "(raise --timeout, or lower the runs in the recipe's evaluate section)")
            if res.exit_code != 0:
                raise DeviceError(f"{dest.host}: {plan.target} evaluator failed (exit {res.exit_code}): "
                                  f"{res.last_error_line()}")
            try:
                raw = ssh.get(f"{remote_dir}/result.json", timeout_s=CHECK_TIMEOUT_S)
                result = json.loads(raw)
            except (OSError, EOFError, ValueError) as exc:
                raise DeviceError(f"{dest.host}: no readable result.json from the evaluator in {remote_dir}: "
                                  f"{one_line(exc)}") from None
            failed = False
        finally:
            if remote_dir is not None and not plan.keep:
                res = _cleanup(ssh, remote_dir)
                if res is not None and not failed:
                    log.warning("%s: could not remove %s: %s", dest.host, remote_dir, res)
            elif remote_dir is not None:
                say(f"kept {dest.host}:{remote_dir} (--keep)")
    seconds = round(time.monotonic() - t0, 3)
    device = {**check.device(), "ssh": str(dest), "remote_dir": remote_dir, "kept": plan.keep,
              "runtime_installed": install, "seconds": seconds,
              "deployed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    result["measured_on"] = check.measured_on
    result["device"] = device
    result["target"] = plan.target
    result["model_sha256"] = hashlib.sha256(next(f.path for f in plan.files if f.name.startswith("model."))
                                            .read_bytes()).hexdigest()
    entry = merge_entry(report["targets"][index], result, plan.profile)
    result["budget"] = entry["budget"]
    report["targets"][index] = entry
    from .._io import write_json

    write_json(plan.device_json(), result)
    write_reports(plan.run_dir, report)
    return result


def _cleanup(ssh: Session, remote_dir: str) -> str | None:
    """Remove the remote folder; returns the error line when that failed."""
    try:
        res = ssh.run(f"rm -rf -- {shlex.quote(remote_dir)}", timeout_s=CHECK_TIMEOUT_S, what="cleanup")
    except DeviceError as exc:
        return str(exc)
    return None if res.exit_code == 0 else res.last_error_line()
