"""The device check: a probe script run over SSH before anything is copied, what it found
(:class:`DeviceCheck`), and :func:`require`, which refuses a device that cannot run the bundle."""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Any

from ..errors import DeviceError
from .plan import MIN_PYTHON, RUNTIME_INSTALL_BYTES, SPARE_BYTES, Plan, _parent, _size


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
