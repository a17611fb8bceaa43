"""The local side of a deploy: the device address, the bundle's files, and the commands a
deploy would run (:class:`Plan`, ``--dry-run``), checked before anything connects."""

from __future__ import annotations

import dataclasses
import getpass
import json
import posixpath
import re
import secrets
import shlex
from pathlib import Path
from typing import Any

from ..errors import EdgekitError


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
    from ..manifest import Manifest
    from .. import targets
    from ..recipe import load_target

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
    if not targets.get(profile.kind).ssh_bundle:
        raise EdgekitError(f"--target {target}: deploy runs Raspberry Pi bundles; {profile.name} is a "
                           f"{profile.kind} target")
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
