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

Only click is imported with this module (``edgekit --help`` stays light); paramiko is imported
when connecting.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import getpass
import hashlib
import json
import logging
import os
import posixpath
import re
import secrets
import shlex
import socket
import time
from pathlib import Path
from typing import Any, Callable

import click

from ._io import run_lock
from .errors import DeviceError, EdgekitError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0      # the evaluator run on the device
CHECK_TIMEOUT_S = 120.0        # the device check (imports numpy + the runtime: slow on a Pi Zero)
INSTALL_TIMEOUT_S = 1800.0     # python -m venv + pip install -r requirements.txt
CONNECT_TIMEOUT_S = 15.0       # TCP connect, SSH banner, authentication (each)
KILL_AFTER_S = 5               # `timeout -k`: SIGKILL this long after SIGTERM
# Room a venv with numpy + ai-edge-litert takes (about 150 MB on x86-64), plus pip's temp files.
RUNTIME_INSTALL_BYTES = 400 * 2**20
SPARE_BYTES = 2**20            # result.json and slack
MIN_PYTHON = (3, 9)            # what evaluate.py needs
RUNTIMES = ("ai_edge_litert", "tflite_runtime")


# ------------------------------------------------------------------------------------ plan


@dataclasses.dataclass(frozen=True)
class Destination:
    """``user@host:port`` of the device."""

    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str, port: int = 22) -> "Destination":
        """``user@host`` or ``host`` (then the local user name, like ssh)."""
        user, _, host = text.rpartition("@")
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or any(c.isspace() for c in text):
            raise EdgekitError(f"--host {text!r}: expected user@host, e.g. pi@raspberrypi.local")
        return cls(user or getpass.getuser(), host, port)

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use: ``host``, or ``[host]:port`` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class BundleFile:
    name: str
    path: Path
    size_bytes: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a deploy copies and runs; ``render()`` is the ``--dry-run`` output."""

    run_dir: Path
    target: str                     # the profile's name (targets/<target>/bundle)
    profile: Any                    # edgekit.recipe.TargetProfile
    destination: Destination
    files: tuple[BundleFile, ...]
    remote_dir: str
    python: str
    install_runtime: bool
    keep: bool
    timeout_s: float
    evaluator_args: tuple[str, ...]  # --warmup/--runs/--threads, as the host measured
    requirements: tuple[str, ...]    # the bundle's requirements.txt lines

    @property
    def bundle_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def device_json(self) -> Path:
        return self.run_dir / "eval" / f"{self.target}-device.json"

    def commands(self, *, measured_on: str = "<rpi:HOST|ssh:HOST>", python: str | None = None,
                 remote_dir: str | None = None, use_timeout: bool = True) -> dict[str, str]:
        """The shell commands run on the device, by step (the check is summarised)."""
        d = remote_dir or self.remote_dir
        py = python or self.python
        q = shlex.quote
        run = (f"env PYTHON={q(py)} sh run.sh --out result.json {' '.join(map(q, self.evaluator_args))} "
               f"--measured-on {q(measured_on)}")
        if use_timeout:
            run = f"timeout -k {KILL_AFTER_S} {_seconds(self.timeout_s)} {run}"
        return {
            "check": (f"uname -m; uname -n; cat /proc/device-tree/model; df -Pk {q(_parent(d))}; "
                      f"{q(self.python)} -c 'import numpy; import ai_edge_litert or tflite_runtime'"),
            "mkdir": f"mkdir -p {q(_parent(d))} && mkdir {q(d)}",
            "install": (f"cd {q(d)} && {q(self.python)} -m venv venv && venv/bin/python -m pip install "
                        "--no-cache-dir -r requirements.txt   (only when numpy or the runtime is missing)"),
            "evaluate": f"cd {q(d)} && {run}",
            "fetch": f"{d}/result.json (SFTP)",
            "cleanup": f"rm -rf {q(d)}",
        }

    def render(self) -> str:
        """The ``--dry-run`` text: files with sizes, then the commands in order."""
        lines = [f"would copy {len(self.files)} files ({_size(self.bundle_bytes)}) from "
                 f"{self.files[0].path.parent} to {self.destination}:{self.remote_dir}:"]
        width = max(len(f.name) for f in self.files)
        lines += [f"  {f.name:<{width}}  {f.size_bytes:>10,} B" for f in self.files]
        lines.append(f"would run on {self.destination} (python: {self.python}, timeout {_seconds(self.timeout_s)} s):")
        for step, cmd in self.commands().items():
            if step == "install" and not self.install_runtime:
                continue
            if step == "cleanup" and self.keep:
                cmd += "   (skipped: --keep)"
            lines.append(f"  {step + ':':<9} {cmd}")
        lines.append(f"would write {self.device_json()} and update {self.run_dir / 'report.json'} and report.md")
        return "\n".join(lines)


def make_plan(run_dir: Path, host: str, *, target: str | None = None, port: int = 22,
              remote_dir: str | None = None, python: str = "python3", install_runtime: bool = False,
              keep: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S) -> Plan:
    """Check the local side of a deploy (bundle, target profile) and say what it would do.

    ``target`` is a profile name or path; without it the run's only Pi bundle is used. Raises
    :class:`EdgekitError` when the run has no such bundle or the target is not a Pi.
    """
    from .manifest import Manifest
    from .recipe import TargetKind, load_target

    run_dir = Path(run_dir)
    if Manifest.load(run_dir) is None:
        why = Manifest.problem(run_dir) or "no manifest.json"
        raise EdgekitError(f"{run_dir}: not an edgekit run directory ({why}); deploy writes only into a run that "
                           "edgekit made")
    bundles = sorted(p.parent.parent.name for p in (run_dir / "targets").glob("*/bundle/run.sh"))
    if target is None:
        if len(bundles) != 1:
            have = ", ".join(bundles) or "none"
            raise EdgekitError(f"{run_dir}: name the target with --target (Pi bundles in this run: {have})")
        target = bundles[0]
    profile = load_target(target)
    if profile.kind is not TargetKind.rpi:
        raise EdgekitError(f"--target {target}: deploy runs Raspberry Pi bundles; {profile.name} is a "
                           f"{profile.kind.value} target")
    bundle = run_dir / "targets" / profile.name / "bundle"
    if not (bundle / "run.sh").is_file():
        have = ", ".join(bundles) or "none"
        raise EdgekitError(f"{bundle}: no bundle (run.sh missing); convert the run first with "
                           f"`edgekit run ... --resume` (Pi bundles in this run: {have})")
    files = tuple(BundleFile(p.name, p, p.stat().st_size)
                  for p in sorted(bundle.iterdir()) if p.is_file() and not p.name.startswith("."))
    if timeout_s <= 0:
        raise EdgekitError(f"--timeout {timeout_s}: must be > 0 seconds")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", run_dir.resolve().name).strip("-") or "run"
    remote_dir = remote_dir or f"/tmp/edgekit-{name}-{secrets.token_hex(4)}"
    if posixpath.normpath(remote_dir) in ("/", ".", "..", "~") or "\n" in remote_dir:
        raise EdgekitError(f"--remote-dir {remote_dir!r}: give a new folder, e.g. /tmp/edgekit-run")
    host_json = run_dir / "eval" / f"{profile.name}.json"
    host_eval = _read_json(host_json) or {}
    if not isinstance(host_eval, dict):
        raise EdgekitError(f"{host_json}: expected a JSON object (the evaluator's output); rerun "
                           f"`edgekit eval {run_dir} --target {profile.name}`")
    args = ("--warmup", _count(host_eval, "warmup_runs", 10, 0, host_json),
            "--runs", _count(host_eval, "timed_runs", 100, 1, host_json),
            "--threads", _count(host_eval, "num_threads", 1, 1, host_json))
    reqs = tuple(ln.strip() for ln in (bundle / "requirements.txt").read_text().splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")) if (bundle / "requirements.txt").is_file() else ()
    return Plan(run_dir, profile.name, profile, Destination.parse(host, port), files, remote_dir, python,
                install_runtime, keep, float(timeout_s), args, reqs)


# ------------------------------------------------------------------------------------ device


@dataclasses.dataclass(frozen=True)
class DeviceCheck:
    """What the device said before anything was copied."""

    hostname: str
    machine: str
    model: str | None           # /proc/device-tree/model (Raspberry Pi and other device-tree boards)
    cpu: str | None
    free_bytes: int | None      # in the file system the remote folder goes to
    has_timeout: bool           # coreutils/busybox `timeout`
    home: str | None            # the login user's $HOME
    python: str | None          # the interpreter asked for, as found (None: not found)
    python_version: str | None
    numpy: str | None           # version, None when it does not import
    runtime: str | None         # ai_edge_litert | tflite_runtime, None when neither imports
    runtime_version: str | None
    can_venv: bool
    errors: tuple[str, ...] = ()

    @property
    def is_raspberry_pi(self) -> bool:
        return "raspberry pi" in (self.model or "").lower()

    @property
    def measured_on(self) -> str:
        return f"{'rpi' if self.is_raspberry_pi else 'ssh'}:{self.hostname}"

    @property
    def has_runtime(self) -> bool:
        return self.numpy is not None and self.runtime is not None

    def device(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "model": self.model, "cpu": self.cpu, "machine": self.machine,
                "python": self.python_version, "numpy": self.numpy,
                "runtime": {"name": self.runtime, "version": self.runtime_version} if self.runtime else None}


_PROBE_PY = r"""
import importlib, platform, sys
def out(k, v):
    print("%s=%s" % (k, " ".join(str(v).split())))
out("python", sys.executable)
out("python_version", platform.python_version())
def version(dist, mod):
    try:
        from importlib.metadata import version as v
        return v(dist)
    except Exception:
        return getattr(mod, "__version__", "unknown")
try:
    import numpy
    out("numpy", numpy.__version__)
except Exception as e:
    out("error", "numpy: %s: %s" % (type(e).__name__, e))
for name, dist in (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")):
    try:
        mod = importlib.import_module(name + ".interpreter")
    except Exception as e:
        out("error", "%s: %s: %s" % (name, type(e).__name__, e))
        continue
    out("runtime", name)
    out("runtime_version", version(dist, mod))
    break
try:
    import ensurepip, venv
    out("venv", "yes")
except Exception:
    pass
cpu = {}
try:
    for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
        k, sep, v = line.partition(":")
        if sep and k.strip() not in cpu:
            cpu[k.strip()] = v.strip()
except OSError:
    pass
out("cpu", cpu.get("model name") or cpu.get("Model") or platform.processor() or "")
"""


def _probe_script(python: str, folder: str) -> str:
    q = shlex.quote
    return f"""PY={q(python)}
D={q(_parent(folder))}
echo "machine=$(uname -m)"
echo "hostname=$(uname -n)"
echo "home=$HOME"
if [ -r /proc/device-tree/model ]; then echo "model=$(tr -d '\\000' < /proc/device-tree/model)"; fi
if command -v timeout >/dev/null 2>&1; then echo "timeout=yes"; fi
while [ ! -d "$D" ] && [ "$D" != / ] && [ "$D" != . ]; do D=$(dirname "$D"); done
echo "free_kib=$(df -Pk "$D" 2>/dev/null | awk 'NR==2 {{print $4}}')"
if command -v "$PY" >/dev/null 2>&1; then
"$PY" - <<'EDGEKIT_PROBE'
{_PROBE_PY}
EDGEKIT_PROBE
fi
"""


def parse_check(text: str) -> DeviceCheck:
    """Turn the probe's ``key=value`` lines into a :class:`DeviceCheck`."""
    kv: dict[str, str] = {}
    errors = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "error":
            errors.append(value.strip())
        else:
            kv.setdefault(key.strip(), value.strip())
    free = kv.get("free_kib", "")
    return DeviceCheck(
        hostname=kv.get("hostname") or "unknown", machine=kv.get("machine") or "unknown",
        model=kv.get("model") or None, cpu=kv.get("cpu") or None,
        free_bytes=int(free) * 1024 if free.isdigit() else None, has_timeout=kv.get("timeout") == "yes",
        home=kv.get("home") or None,
        python=kv.get("python"), python_version=kv.get("python_version"), numpy=kv.get("numpy"),
        runtime=kv.get("runtime"), runtime_version=kv.get("runtime_version"), can_venv=kv.get("venv") == "yes",
        errors=tuple(errors))


def require(check: DeviceCheck, plan: Plan) -> bool:
    """Refuse a device that cannot run the bundle; returns True when the runtime must be installed.

    Raises :class:`DeviceError` naming what is missing and how to get it.
    """
    where = f"{plan.destination.host} ({check.machine})"
    if check.python_version is None:
        raise DeviceError(f"{where}: {plan.python} not found; install Python 3 (sudo apt install python3) "
                          "or point --python at an interpreter")
    version = tuple(int(p) for p in re.findall(r"\d+", check.python_version)[:2])
    if version < MIN_PYTHON:
        raise DeviceError(f"{where}: {plan.python} is Python {check.python_version}; the evaluator needs "
                          f"{'.'.join(map(str, MIN_PYTHON))} or newer")
    install = not check.has_runtime
    need = plan.bundle_bytes + SPARE_BYTES + (RUNTIME_INSTALL_BYTES if install and plan.install_runtime else 0)
    if check.free_bytes is not None and check.free_bytes < need:
        raise DeviceError(f"{where}: not enough disk for {plan.remote_dir}: {_size(check.free_bytes)} free, "
                          f"{_size(need)} needed" + (" (bundle + runtime venv)" if need > plan.bundle_bytes
                                                    + SPARE_BYTES else " (bundle)")
                          + "; free space or choose another --remote-dir")
    if install and not plan.install_runtime:
        missing = [m for m, ok in (("numpy", check.numpy), ("a TFLite runtime (ai_edge_litert or tflite_runtime)",
                                                              check.runtime)) if not ok]
        reqs = " ".join(shlex.quote(r) for r in plan.requirements) or "ai-edge-litert numpy"
        venv = f"{check.home or '~'}/edgekit-venv"   # a venv: Raspberry Pi OS refuses system-wide pip (PEP 668)
        raise DeviceError(f"{where}: {plan.python} (Python {check.python_version}) cannot import "
                          f"{' and '.join(missing)}; install them on the device with `{plan.python} -m venv {venv} "
                          f"&& {venv}/bin/pip install {reqs}` and pass --python {venv}/bin/python, or rerun "
                          "with --install-runtime")
    if install and not check.can_venv:
        raise DeviceError(f"{where}: {plan.python} cannot create a venv for --install-runtime (no ensurepip); "
                          "install python3-venv (sudo apt install python3-venv)")
    return install


# ------------------------------------------------------------------------------------ SSH


@dataclasses.dataclass(frozen=True)
class Completed:
    exit_code: int
    stdout: str
    stderr: str

    def last_error_line(self) -> str:
        lines = [ln.strip() for ln in (self.stderr or self.stdout).splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit code {self.exit_code}"


class Session:
    """A connected paramiko client: commands with timeouts, SFTP put/get. Use as a context manager."""

    def __init__(self, client, destination: Destination):
        self.client, self.destination = client, destination
        self._sftp = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()

    def run(self, command: str, *, timeout_s: float, what: str) -> Completed:
        """Run ``command`` with ``sh -c``; raises :class:`DeviceError` when it outlives ``timeout_s``
        or the connection drops. A non-zero exit is returned, not raised."""
        import paramiko

        log.debug("%s: %s", self.destination, command)
        try:
            chan = self.client.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)
            chan.exec_command(f"sh -c {shlex.quote(command)}")
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout_s
            while True:
                busy = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    chan.close()
                    raise DeviceError(f"{self.destination.host}: {what} timed out after {_seconds(timeout_s)} s")
                if not busy:
                    time.sleep(0.02)
            code = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise DeviceError(f"{self.destination.host}: {what}: connection lost ({_one_line(exc)})") from None
        return Completed(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    @property
    def sftp(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def put(self, local: Path, remote: str, *, timeout_s: float) -> None:
        self.sftp.get_channel().settimeout(timeout_s)
        self.sftp.put(str(local), remote)

    def get(self, remote: str, *, timeout_s: float) -> bytes:
        self.sftp.get_channel().settimeout(timeout_s)
        with self.sftp.open(remote, "rb") as f:
            return f.read()


def fingerprint(key) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def connect(destination: Destination, *, key: Path | None = None, known_hosts: Path | None = None,
            accept_new_host_key: bool = False) -> Session:
    """Open an SSH session, verifying the host key against ``known_hosts`` (default
    ``~/.ssh/known_hosts``).

    Authentication: ``key`` only when given (an unencrypted private key file), else ssh-agent and
    then ``~/.ssh/id_*``; never a password. An unknown host key is refused unless
    ``accept_new_host_key`` (then appended to ``known_hosts``); a changed key is always refused.
    Raises :class:`DeviceError` with one line for every failure.
    """
    import paramiko

    known_hosts = Path(known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
    name = destination.known_hosts_name

    class _Unknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, server_key):
            fp = f"{server_key.get_name()} {fingerprint(server_key)}"
            if not accept_new_host_key:
                raise DeviceError(f"{name}: unknown host key {fp} (not in {known_hosts}); check it on the "
                                  "device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and rerun with "
                                  "--accept-new-host-key, or add it to known_hosts yourself")
            _append_known_host(known_hosts, hostname, server_key)
            log.warning("%s: added host key %s to %s", hostname, fp, known_hosts)

    client = paramiko.SSHClient()
    try:
        if known_hosts.is_file():
            client.load_system_host_keys(str(known_hosts))
    except (OSError, paramiko.SSHException) as exc:
        raise DeviceError(f"{known_hosts}: cannot read known_hosts: {_one_line(exc)}") from None
    client.set_missing_host_key_policy(_Unknown())
    where = f"{destination}"
    try:
        client.connect(destination.host, port=destination.port, username=destination.user,
                       key_filename=str(key) if key else None, allow_agent=key is None,
                       look_for_keys=key is None, timeout=CONNECT_TIMEOUT_S, banner_timeout=CONNECT_TIMEOUT_S,
                       auth_timeout=CONNECT_TIMEOUT_S)
    except DeviceError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise DeviceError(
            f"{name}: HOST KEY CHANGED - the device offers {exc.key.get_name()} {fingerprint(exc.key)} but "
            f"{known_hosts} has {exc.expected_key.get_name()} {fingerprint(exc.expected_key)}; this may be a "
            "man-in-the-middle attack or a reinstalled device, so edgekit refuses to connect (also with "
            f"--accept-new-host-key); if the change is expected, remove the old key with "
            f"`ssh-keygen -f {known_hosts} -R '{name}'` and connect again") from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise DeviceError(f"{where}: the key {key} is encrypted; load it into ssh-agent (ssh-add {key}) "
                          "and run without --key") from None
    except paramiko.BadAuthenticationType as exc:
        client.close()
        raise DeviceError(f"{where}: the device accepts only {', '.join(exc.allowed_types) or 'other'} "
                          "authentication; edgekit uses keys or ssh-agent only: enable PubkeyAuthentication "
                          "in the device's sshd_config") from None
    except paramiko.AuthenticationException:
        client.close()
        how = f"key {key}" if key else "ssh-agent and ~/.ssh/id_* keys"
        raise DeviceError(f"{where}: authentication failed for user {destination.user!r} with {how}; add the "
                          f"public key to ~{destination.user}/.ssh/authorized_keys on the device (ssh-copy-id), "
                          "passwords are not used") from None
    except socket.gaierror as exc:
        client.close()
        raise DeviceError(f"{where}: unknown host {destination.host!r} ({exc.strerror or exc})") from None
    except (TimeoutError, socket.timeout):
        client.close()
        raise DeviceError(f"{where}: unreachable (no answer within {_seconds(CONNECT_TIMEOUT_S)} s); "
                          "is the device on and on this network?") from None
    except paramiko.ssh_exception.NoValidConnectionsError:
        client.close()
        raise DeviceError(f"{where}: connection refused; is sshd running on the device and is the port "
                          "right (--port)?") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        if "banner" in str(exc):
            raise DeviceError(f"{where}: no SSH server answered within {_seconds(CONNECT_TIMEOUT_S)} s (is the "
                              "device up, and is this its SSH port?)") from None
        raise DeviceError(f"{where}: cannot connect: {_one_line(exc) or type(exc).__name__}") from None
    return Session(client, destination)


def _append_known_host(path: Path, hostname: str, key) -> None:
    """Append ``hostname keytype base64`` to ``path`` (created 0600 in a 0700 folder if missing)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    prefix = ""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, 2)
            prefix = "" if f.read(1) == b"\n" else "\n"
    with open(path, "a", encoding="utf-8", opener=lambda p, flags: os.open(p, flags, 0o600)) as f:
        f.write(prefix + line)


# ------------------------------------------------------------------------------------ deploy


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
    from .report import write_reports

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
                                      f"{_one_line(exc) or type(exc).__name__} (disk full{free}?)") from None
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
                                  f"{_one_line(exc)}") from None
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
    from ._io import write_json

    write_json(plan.device_json(), result)
    write_reports(plan.run_dir, report)
    return result


def summary_line(target: str, result: dict[str, Any]) -> str:
    """One line for a device measurement: the task's main metric (accuracy, MAE or ROC-AUC, "n/a"
    when the evaluator could not measure it), p50 latency and the budget verdict."""
    from .report.fmt import fmt_num as num

    lat = (result.get("latency_ms") or {}).get("p50") if isinstance(result.get("latency_ms"), dict) else None
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
    found = {k: result.get(k) if result.get(k) is not None else metrics.get(k) for k in ("accuracy", "mae", "roc_auc")}
    metric = next(((k, v) for k, v in found.items() if v is not None), ("accuracy", None))
    budget = result.get("budget") or {}
    return (f"{target} on {result.get('measured_on')} ({(result.get('device') or {}).get('machine')}): "
            f"{metric[0]} {num(metric[1], '.4f')}, p50 {num(lat, '.3f')} ms, budget "
            f"{'ok' if budget.get('ok') else 'OVER'}")


# The evaluator's keys that describe the artifact or the bundle rather than a measurement: the
# report keeps its own values ("format" is "tflite-int8" there, "model" the target's file name).
_NOT_MERGED = ("model", "format", "target", "model_sha256", "device")


def merge_entry(entry: dict[str, Any], result: dict[str, Any], profile) -> dict[str, Any]:
    """The report's target entry with the device's measurements; the host's move to
    ``host_measurement`` (kept from the first deploy when deploying again). The budget is checked
    again, now with the latency measured on the device."""
    from .evaluate import check_budget

    measured = {k: v for k, v in result.items() if k not in _NOT_MERGED}
    host = entry.get("host_measurement")
    if host is None:
        host = {k: entry[k] for k in (*measured, "budget") if k in entry}
    new = {**entry, **measured, "device": result.get("device"), "host_measurement": host}
    new["budget"] = check_budget(new, profile.budget, profile.kind)
    try:  # the report's per-budget breakdown, when this version of edgekit.report has one
        from .report.view import budget_checks
    except ImportError:
        budget_checks = None
    if budget_checks is not None:
        new["budget"]["checks"] = budget_checks(new)
    return new


def _cleanup(ssh: Session, remote_dir: str) -> str | None:
    """Remove the remote folder; returns the error line when that failed."""
    try:
        res = ssh.run(f"rm -rf -- {shlex.quote(remote_dir)}", timeout_s=CHECK_TIMEOUT_S, what="cleanup")
    except DeviceError as exc:
        return str(exc)
    return None if res.exit_code == 0 else res.last_error_line()


# ------------------------------------------------------------------------------------ helpers


def _count(values: dict, key: str, default: int, lowest: int, path: Path) -> str:
    """``values[key]`` (``default`` when absent or null) as the text of an integer in
    [lowest, 10**7]; anything else (a string, a float, a bool) raises :class:`EdgekitError`: it is
    passed to a command on the device and must be nothing but a number."""
    v = values.get(key)
    v = default if v is None else v
    if isinstance(v, bool) or not isinstance(v, int) or not lowest <= v <= 10**7:
        raise EdgekitError(f"{path}: {key} is {v!r}, expected an integer from {lowest} to {10**7}; rerun "
                           "`edgekit eval` for this target to measure it again")
    return str(v)


def _parent(folder: str) -> str:
    return posixpath.dirname(posixpath.normpath(folder)) or "."


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise EdgekitError(f"{path}: not valid JSON ({exc})") from None


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _seconds(s: float) -> str:
    return f"{s:g}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# ------------------------------------------------------------------------------------ CLI


def build_command(handle_errors: Callable) -> click.Command:
    """The ``edgekit deploy`` click command; ``handle_errors`` is the CLI's error decorator."""

    @click.command("deploy")
    @click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
    @click.option("--target", help="Pi target profile (name or path; default: the run's only Pi bundle).")
    @click.option("--host", "host", required=True, help="The device as user@host.")
    @click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True, help="SSH port.")
    @click.option("--key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  help="Private key file (unencrypted; else use ssh-agent). Default: ssh-agent, then ~/.ssh/id_*.")
    @click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path),
                  help="known_hosts file checked for the host key. Default: ~/.ssh/known_hosts.")
    @click.option("--accept-new-host-key", is_flag=True,
                  help="Trust an unknown host key and append it to known_hosts (a changed key is always refused).")
    @click.option("--install-runtime", is_flag=True,
                  help="When numpy or a TFLite runtime is missing, pip install the bundle's requirements.txt "
                       "into a venv in the remote folder.")
    @click.option("--python", "python", default="python3", show_default=True,
                  help="Python interpreter on the device.")
    @click.option("--remote-dir", help="New folder on the device (default /tmp/edgekit-<run>-<random>).")
    @click.option("--keep", is_flag=True, help="Keep the remote folder afterwards.")
    @click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT_S,
                  show_default=True, help="Seconds the evaluator may run on the device.")
    @click.option("--dry-run", is_flag=True, help="Print the files and commands; connect to nothing.")
    @click.option("--json", "as_json", is_flag=True, help="Print the device measurement as JSON.")
    @click.option("--no-budget", is_flag=True, help="Report budget violations but exit 0.")
    @click.pass_context
    @handle_errors
    def deploy_command(ctx, run_dir: Path, target: str | None, host: str, port: int, key: Path | None,
                       known_hosts: Path | None, accept_new_host_key: bool, install_runtime: bool, python: str,
                       remote_dir: str | None, keep: bool, timeout_s: float, dry_run: bool, as_json: bool,
                       no_budget: bool):
        """Copy a Pi bundle of RUN_DIR to a device over SSH, measure it there, merge the result.

        Checks the device (machine, Python, free disk, numpy and ai_edge_litert or tflite_runtime),
        copies targets/<target>/bundle to a fresh remote folder, runs `sh run.sh` there, and writes
        eval/<target>-device.json; the target's entry in report.json/report.md gets the device
        numbers (measured_on rpi:<hostname> or ssh:<hostname>, the latency budget now checked),
        the host numbers stay under host_measurement. Keys or ssh-agent only; unknown host keys
        are refused unless --accept-new-host-key, changed ones always.

        \b
        Example:
          edgekit deploy runs/quickstart --target rpi4 --host pi@raspberrypi.local
          edgekit deploy runs/quickstart --target rpi4 --host pi@192.168.1.20 --install-runtime --dry-run
        """
        plan = make_plan(run_dir, host, target=target, port=port, remote_dir=remote_dir, python=python,
                         install_runtime=install_runtime, keep=keep, timeout_s=timeout_s)
        if dry_run:
            click.echo(plan.render())
            return
        obj = ctx.find_root().obj or {}
        quiet = obj.get("quiet") or as_json
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # its tracebacks are not our one line
        result = deploy(plan, key=key, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                        progress=None if quiet else (lambda msg: click.echo(f"deploy: {msg}", err=True)),
                        lock_wait_s=obj.get("lock_wait_s", 0.0))
        budget = result["budget"]
        if as_json:
            click.echo(json.dumps(result, indent=2))
        elif not obj.get("quiet"):
            click.echo(summary_line(plan.target, result))
            click.echo(f"wrote {plan.device_json()}; updated {plan.run_dir / 'report.json'} and report.md")
        if budget["violations"] and not no_budget:
            for v in budget["violations"]:
                click.echo(f"over budget: {plan.target}: {v}", err=True)
            ctx.exit(6)

    return deploy_command
