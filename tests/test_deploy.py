"""`edgekit deploy` against a real OpenSSH server on 127.0.0.1 (tests/sshd.py).

The "device" is this machine: the remote evaluator runs under this venv's Python (``--python``)
so it finds numpy and ai_edge_litert, except in the ``--install-runtime`` test, which builds a
venv on the "device" with pip. The run is the session's finished tiny pipeline run
(conftest.finished_run); each test deploys a copy of it. The slow test deploys to an emulated
Raspberry Pi (aarch64 userland under qemu-user, tools/pi_emulator.sh) with its own sshd.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import require_tool
from edgekit.cli import main
from sshd import SshServer, free_port, host_key_line, keygen, skip_reason

ROOT = Path(__file__).resolve().parents[1]
EMULATOR_ROOTFS = ROOT / ".cache" / "pi-emulator" / "rootfs"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def tiny_run(finished_run) -> Path:
    """The session's finished tiny run (tests/conftest.py; rpi4 among its targets). Read-only."""
    assert (finished_run.out / "targets" / "rpi4" / "bundle" / "run.sh").is_file()
    return finished_run.out


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run that a test may change."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    require_tool("sshd", missing=skip_reason())  # skips here, fails under CI=true
    server = SshServer.start(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def known_hosts(sshd, tmp_path) -> Path:
    return sshd.known_hosts(tmp_path / "known_hosts")


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)   # only the keys a test names


def deploy(run: Path, server: SshServer, *args: str, known_hosts: Path | None = None, key: Path | None = None,
           python: str | None = sys.executable, quiet: bool = True):
    cmd = (["-q"] if quiet else []) + ["deploy", str(run), "--target", "rpi4", "--host", server.destination,
                                       "--port", str(server.port), "--key", str(key or server.user_key)]
    if known_hosts is not None:
        cmd += ["--known-hosts", str(known_hosts)]
    if python is not None:
        cmd += ["--python", python]
    return CliRunner().invoke(main, cmd + list(args))


def one_error_line(res, *needles: str) -> str:
    """The result's output is exactly one line, an error containing every needle."""
    lines = res.output.strip().splitlines()
    assert res.exit_code == 7, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def remote_dir(tmp_path: Path) -> Path:
    return tmp_path / "remote" / "bundle"


# ----------------------------------------------------------------------------- end to end


def test_deploy_measures_on_the_device_and_merges_the_report(run, sshd, known_hosts, tmp_path):
    host_eval = json.loads((run / "eval" / "rpi4.json").read_text())
    before = json.loads((run / "report.json").read_text())
    hidden = sorted(run.rglob(".*"))          # e.g. the run's .edgekit.lock
    where = remote_dir(tmp_path)
    res = deploy(run, sshd, "--remote-dir", str(where), known_hosts=known_hosts, quiet=False)
    assert res.exit_code == 0, res.output
    hostname = os.uname().nodename
    assert f"rpi4 on ssh:{hostname}" in res.output and "budget ok" in res.output

    device = json.loads((run / "eval" / "rpi4-device.json").read_text())
    assert device["measured_on"] == f"ssh:{hostname}"
    assert device["device"]["hostname"] == hostname and device["device"]["machine"] == os.uname().machine
    assert device["device"]["remote_dir"] == str(where) and not device["device"]["runtime_installed"]
    # same bundle, same runtime, same machine: the same predictions (exact)
    assert device["accuracy"] == host_eval["accuracy"]
    assert device["agreement_with_float"] == host_eval["agreement_with_float"]
    assert device["timed_runs"] == host_eval["timed_runs"] and device["warmup_runs"] == host_eval["warmup_runs"]

    report = json.loads((run / "report.json").read_text())
    entry = next(t for t in report["targets"] if t["name"] == "rpi4")
    old = next(t for t in before["targets"] if t["name"] == "rpi4")
    assert entry["measured_on"] == f"ssh:{hostname}" and entry["device"]["hostname"] == hostname
    assert entry["accuracy"] == host_eval["accuracy"]
    assert entry["host_measurement"]["measured_on"] == old["measured_on"] == f"host-{os.uname().machine}"
    assert entry["host_measurement"]["latency_ms"] == old["latency_ms"]
    assert entry["format"] == old["format"] and entry["file"] == old["file"]   # the artifact is unchanged
    # latency is now checked against the rpi4 budget (20 ms), not listed as unchecked
    assert not any(u.startswith("latency") for u in entry["budget"]["unchecked"]), entry["budget"]
    assert entry["budget"]["latency_basis"] == "measured"
    assert old["budget"]["latency_basis"] != "measured"  # on the host at most the calibrated estimate counted
    assert f"ssh:{hostname}" in (run / "report.md").read_text()
    assert report["stages"] == before["stages"]
    assert [t for t in report["targets"] if t["name"] != "rpi4"] == [t for t in before["targets"] if t["name"] != "rpi4"]
    assert not where.exists(), "the remote folder is removed"
    assert sorted(run.rglob(".*")) == hidden, "temporary files left in the run"
    # re-rendering the report from the run keeps the device's numbers
    from edgekit.cli import main

    res = CliRunner().invoke(main, ["report", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    again = next(t for t in json.loads((run / "report.json").read_text())["targets"] if t["name"] == "rpi4")
    assert again["measured_on"] == f"ssh:{hostname}" and again["host_measurement"]["latency_ms"] == old["latency_ms"]


@pytest.mark.slow  # process-level fault path over the real sshd (the plan and the merge are tested in-process)
def test_keep_leaves_the_remote_folder(run, sshd, known_hosts, tmp_path):
    where = remote_dir(tmp_path)
    res = deploy(run, sshd, "--remote-dir", str(where), "--keep", known_hosts=known_hosts)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in where.iterdir()) == ["eval.npz", "evaluate.py", "model.tflite",
                                                       "requirements.txt", "result.json", "run.sh"]
    # a fresh folder only: deploying into it again is refused before anything is copied
    res = deploy(run, sshd, "--remote-dir", str(where), known_hosts=known_hosts)
    one_error_line(res, f"cannot create {where}", "choose another --remote-dir")


@pytest.mark.slow  # process-level fault path over the real sshd (the plan and the merge are tested in-process)
def test_no_secret_reaches_logs_or_run_files(run, sshd, known_hosts, tmp_path, monkeypatch):
    """Secrets audit: with canary secrets in the environment, a debug-logged deploy and a report
    re-render write neither them nor the private key's body to the output or any run file."""
    canary = "edgekit-canary-3f9c1a7d"
    for var in ("AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "EDGEKIT_API_TOKEN", "SSH_PASSPHRASE"):
        monkeypatch.setenv(var, f"{canary}-{var}")
    key_body = [ln for ln in sshd.user_key.read_text().splitlines() if ln and not ln.startswith("-----")]
    assert key_body
    base = ["deploy", str(run), "--target", "rpi4", "--host", sshd.destination, "--port", str(sshd.port),
            "--key", str(sshd.user_key), "--known-hosts", str(known_hosts), "--python", sys.executable]
    outputs = [CliRunner().invoke(main, ["-vv"] + base + args) for args in (["--keep", "--remote-dir",
                                                                              str(remote_dir(tmp_path))], ["--json"])]
    outputs.append(CliRunner().invoke(main, ["-vv", "report", str(run)]))
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    assert "debug" in outputs[0].output.lower() or len(outputs[0].output.splitlines()) > 3   # -vv did log
    texts = {f"output {i}": r.output for i, r in enumerate(outputs)}
    texts.update({str(p): p.read_bytes().decode("utf-8", "replace")
                  for folder in (run, remote_dir(tmp_path)) for p in folder.rglob("*") if p.is_file()})
    for name, text in texts.items():
        assert canary not in text, name
        assert not any(line in text for line in key_body), name


def test_a_run_in_use_is_refused_before_connecting(run, sshd, known_hosts):
    import fcntl

    before = snapshot(run)
    with open(run / ".edgekit.lock", "a+") as fh:     # what `edgekit run` holds while it works
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = deploy(run, sshd, known_hosts=known_hosts)
    assert res.exit_code == 1 and res.output.strip() == f"error: {run} is in use by another edgekit process; " \
        "wait for it and deploy again"
    assert snapshot(run) == before


@pytest.mark.slow  # process-level fault path over the real sshd (the plan and the merge are tested in-process)
def test_default_remote_dir_is_fresh_and_removed(run, sshd, known_hosts):
    res = deploy(run, sshd, known_hosts=known_hosts)
    assert res.exit_code == 0, res.output
    where = json.loads((run / "eval" / "rpi4-device.json").read_text())["device"]["remote_dir"]
    assert where.startswith("/tmp/edgekit-run-") and len(where) == len("/tmp/edgekit-run-") + 8
    assert not Path(where).exists()


def test_dry_run_connects_to_nothing(run):
    before = snapshot(run)
    res = CliRunner().invoke(main, ["deploy", str(run), "--host", "pi@device.invalid", "--port", str(free_port()),
                                    "--install-runtime", "--dry-run"])
    assert res.exit_code == 0, res.output
    out = res.output
    for name in ("model.tflite", "evaluate.py", "eval.npz", "requirements.txt", "run.sh"):
        size = (run / "targets" / "rpi4" / "bundle" / name).stat().st_size
        assert any(name in line and f"{size:,} B" in line for line in out.splitlines()), (name, out)
    for step in ("check:", "mkdir:", "install:", "evaluate:", "cleanup:", "sh run.sh --out result.json",
                 "timeout -k 5 600", "pip install", "pi@device.invalid"):
        assert step in out, (step, out)
    assert snapshot(run) == before
    res = CliRunner().invoke(main, ["deploy", str(run), "--target", "cortex-m4", "--host", "pi@x", "--dry-run"])
    assert res.exit_code == 1 and "deploy runs Raspberry Pi bundles; cortex-m4 is a mcu target" in res.output


def test_cli_import_loads_no_paramiko():
    code = ("import sys; from click.testing import CliRunner; from edgekit.cli import main;"
            "r = CliRunner().invoke(main, ['deploy', '--help']); assert r.exit_code == 0, r.output;"
            "print(sorted(m for m in ('paramiko', 'tensorflow', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- SSH failures


def test_wrong_user_key_is_an_auth_error(run, sshd, known_hosts, tmp_path):
    res = deploy(run, sshd, known_hosts=known_hosts, key=keygen(tmp_path / "other_key"))
    one_error_line(res, "authentication failed for user", "passwords are not used")


@pytest.mark.slow  # process-level fault path over the real sshd (the plan and the merge are tested in-process)
def test_unknown_host_key_refused_unless_accepted(run, sshd, tmp_path):
    kh = tmp_path / "ssh" / "known_hosts"      # does not exist yet
    line = one_error_line(deploy(run, sshd, known_hosts=kh), "unknown host key ssh-ed25519 SHA256:",
                          "--accept-new-host-key")
    fp = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_key.with_suffix(".pub"))], capture_output=True,
                        text=True, check=True).stdout.split()[1]
    assert fp in line, "the refusal shows the fingerprint to verify"
    assert not kh.exists()
    res = deploy(run, sshd, "--accept-new-host-key", known_hosts=kh)
    assert res.exit_code == 0, res.output
    assert kh.read_text() == host_key_line(sshd.known_hosts_name, sshd.host_key.with_suffix(".pub"))
    res = deploy(run, sshd, known_hosts=kh)       # now known: no flag needed
    assert res.exit_code == 0, res.output
    assert kh.read_text().count("\n") == 1


def test_changed_host_key_is_always_refused(run, sshd, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    kh = tmp_path / "known_hosts"
    kh.write_text(host_key_line(sshd.known_hosts_name, other.with_suffix(".pub")))
    before = kh.read_text()
    for extra in ([], ["--accept-new-host-key"]):
        one_error_line(deploy(run, sshd, *extra, known_hosts=kh), "HOST KEY CHANGED", "man-in-the-middle",
                       f"ssh-keygen -f {kh} -R '{sshd.known_hosts_name}'")
    assert kh.read_text() == before


def test_host_down_is_one_clear_line(run, sshd, known_hosts):
    down = dataclasses.replace(sshd, port=free_port())    # the same keys, a port nothing listens on
    one_error_line(deploy(run, down, known_hosts=known_hosts), f"{down.destination}:{down.port}: connection refused")


# ----------------------------------------------------------------------------- device failures


def test_missing_runtime_says_what_to_install(run, sshd, known_hosts):
    if subprocess.run([SYSTEM_PYTHON, "-c", "import numpy"], capture_output=True).returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has numpy: it cannot stand in for a bare device")
    line = one_error_line(deploy(run, sshd, known_hosts=known_hosts, python=SYSTEM_PYTHON),
                          f"{SYSTEM_PYTHON} (Python 3.", "cannot import numpy and a TFLite runtime",
                          "or rerun with --install-runtime")
    venv = f"{Path.home()}/edgekit-venv"
    assert (f"`{SYSTEM_PYTHON} -m venv {venv} && {venv}/bin/pip install ai-edge-litert==2.3.0 'numpy>=1.26'` "
            f"and pass --python {venv}/bin/python") in line


@pytest.mark.slow  # process-level fault path over the real sshd (the plan and the merge are tested in-process)
def test_evaluator_failure_leaves_the_run_unchanged(run, sshd, known_hosts, tmp_path):
    (run / "targets" / "rpi4" / "bundle" / "model.tflite").write_bytes(b"TFL3 not a model" * 8)
    before = snapshot(run)
    where = remote_dir(tmp_path)
    res = deploy(run, sshd, "--remote-dir", str(where), known_hosts=known_hosts)
    one_error_line(res, "rpi4 evaluator failed (exit ", "evaluate.py: error:")
    assert snapshot(run) == before and not (run / "eval" / "rpi4-device.json").exists()
    assert not where.exists()


@pytest.mark.slow  # process-level fault path over the real sshd (the plan and the merge are tested in-process)
def test_remote_timeout(run, sshd, known_hosts, tmp_path):
    run_sh = run / "targets" / "rpi4" / "bundle" / "run.sh"
    run_sh.write_text(run_sh.read_text().replace("set -e\n", "set -e\nsleep 60\n"))
    before = snapshot(run)
    where = remote_dir(tmp_path)
    t0 = time.monotonic()
    res = deploy(run, sshd, "--remote-dir", str(where), "--timeout", "2", known_hosts=known_hosts)
    one_error_line(res, "rpi4 evaluator timed out after 2 s", "raise --timeout")
    assert time.monotonic() - t0 < 20
    assert snapshot(run) == before and not where.exists()


def test_disk_full_is_refused_before_copying(run, sshd, known_hosts, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(small)], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {mount.stderr.strip()}")
    try:
        res = deploy(run, sshd, "--remote-dir", str(small / "bundle"), known_hosts=known_hosts)
        one_error_line(res, "not enough disk", "32.0 KiB free", "needed (bundle)")
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


# ----------------------------------------------------------------------------- --install-runtime


@pytest.mark.slow
def test_install_runtime_builds_a_venv_on_the_device(run, sshd, known_hosts, tmp_path):
    """The device's python3 has no numpy: --install-runtime pip installs requirements.txt into a
    venv in the remote folder (needs PyPI and python3-venv on this machine; about 30 s)."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} cannot make a venv (apt-get install python3-venv)")
    res = deploy(run, sshd, "--install-runtime", "--remote-dir", str(remote_dir(tmp_path)),
                 known_hosts=known_hosts, python=SYSTEM_PYTHON)
    assert res.exit_code == 0, res.output
    device = json.loads((run / "eval" / "rpi4-device.json").read_text())
    host_eval = json.loads((run / "eval" / "rpi4.json").read_text())
    assert device["device"]["runtime_installed"] is True
    assert device["runtime"]["name"] == "ai_edge_litert" and device["accuracy"] == host_eval["accuracy"]
    assert not remote_dir(tmp_path).exists()


# ----------------------------------------------------------------------------- merge, unit level


def test_merge_keeps_the_first_host_measurement_and_checks_device_latency():
    from edgekit.deploy import merge_entry
    from edgekit.recipe import load_target

    profile = load_target("rpi4")
    entry = {"name": "rpi4", "kind": "rpi", "format": "tflite-int8", "file": "model_int8.tflite",
             "size_bytes": 9000, "accuracy": 0.95, "latency_ms": {"p50": 0.01}, "measured_on": "host-x86_64",
             "rss_growth_bytes": 1000, "budget": {"ok": True, "violations": [], "unchecked": ["latency_ms: host"]}}
    slow = {"model": "model.tflite", "format": "tflite", "size_bytes": 9000, "accuracy": 0.95,
            "latency_ms": {"p50": 35.0}, "rss_growth_bytes": 1000, "measured_on": "rpi:pi4",
            "device": {"hostname": "pi4"}}
    first = merge_entry(entry, slow, profile)
    assert first["format"] == "tflite-int8" and first["file"] == "model_int8.tflite"
    assert first["host_measurement"]["measured_on"] == "host-x86_64"
    assert first["budget"]["violations"] == ["latency: p50 35.000 ms > budget 20.0 ms (measured on rpi:pi4)"]
    again = merge_entry(first, {**slow, "latency_ms": {"p50": 5.0}, "measured_on": "rpi:pi4b"}, profile)
    assert again["host_measurement"] == first["host_measurement"], "a redeploy keeps the host numbers"
    assert again["budget"]["ok"] and again["measured_on"] == "rpi:pi4b"


def test_device_check_parsing_and_requirements(tiny_run):
    from edgekit.deploy import make_plan, parse_check, require
    from edgekit.errors import DeviceError

    plan = make_plan(tiny_run, "pi@pi4", target="rpi4")
    pi = parse_check("machine=aarch64\nhostname=pi4\nmodel=Raspberry Pi 4 Model B Rev 1.4\ntimeout=yes\n"
                     "free_kib=1000000\npython=/usr/bin/python3\npython_version=3.11.2\nnumpy=1.26.4\n"
                     "runtime=tflite_runtime\nruntime_version=2.14.0\nvenv=yes\ncpu=\n")
    assert pi.measured_on == "rpi:pi4" and pi.device()["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert require(pi, plan) is False
    old = parse_check("machine=armv7l\nhostname=pi0\npython_version=3.7.3\nfree_kib=1000000\n")
    with pytest.raises(DeviceError, match=r"is Python 3.7.3; the evaluator needs 3.9 or newer"):
        require(old, plan)
    with pytest.raises(DeviceError, match=r"python3 not found"):
        require(parse_check("machine=aarch64\nhostname=x\n"), plan)


# ----------------------------------------------------------------------------- emulated Pi


def _emulator_reason() -> str | None:
    if os.geteuid() != 0:
        return "the emulated Pi needs root (chroot)"
    require_tool("sshd", missing=skip_reason())
    check = subprocess.run(["bash", str(ROOT / "tools" / "pi_emulator.sh"), "check"], capture_output=True)
    if check.returncode != 0:
        return "emulated Pi not set up: run `sudo bash tools/pi_emulator.sh` (about 5 min, cached in .cache/)"
    return None


@pytest.mark.slow
def test_deploy_to_emulated_pi_matches_x86(run, tmp_path):
    """aarch64 userland under qemu-user with its own sshd: the int8 model gives the same accuracy
    as on x86-64. Its latency is emulated (8-20x slower than native): printed, never compared."""
    reason = _emulator_reason()
    if reason:
        pytest.skip(reason)
    folder = Path(EMULATOR_ROOTFS / "tmp" / f"edgekit-sshd-{os.getpid()}-{tmp_path.name}")
    server = SshServer.start(folder, root=EMULATOR_ROOTFS, timeout_s=60)
    try:
        kh = server.known_hosts(tmp_path / "known_hosts")
        res = deploy(run, server, known_hosts=kh, python="python3", quiet=False)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    assert res.exit_code == 0, res.output
    device = json.loads((run / "eval" / "rpi4-device.json").read_text())
    host = json.loads((run / "eval" / "rpi4.json").read_text())
    assert device["device"]["machine"] == "aarch64" and host["host"]["machine"] == "x86_64"
    assert device["accuracy"] == host["accuracy"]
    assert device["agreement_with_float"] == host["agreement_with_float"]
    print(f"\nemulated aarch64: accuracy {device['accuracy']:.4f} (x86-64 {host['accuracy']:.4f}), "
          f"p50 {device['latency_ms']['p50']:.4f} ms emulated vs {host['latency_ms']['p50']:.4f} ms x86-64 host, "
          f"deploy {device['device']['seconds']:.1f} s")


# ----------------------------------------------------------------------------- nothing pasted into a command

HOSTILE_EVAL = ["1; touch {marker}; echo", "$(touch {marker})", "`touch {marker}`", "1 && touch {marker}"]


@pytest.mark.parametrize("key", ["warmup_runs", "timed_runs", "num_threads"])
@pytest.mark.parametrize("value", HOSTILE_EVAL)
def test_values_from_eval_json_never_run_on_the_device(run, sshd, known_hosts, tmp_path, key, value):
    """eval/<target>.json is data: a shell command in one of its numbers is refused before connecting."""
    marker = tmp_path / "pwned"
    path = run / "eval" / "rpi4.json"
    data = json.loads(path.read_text())
    data[key] = value.format(marker=marker)
    path.write_text(json.dumps(data))
    before = snapshot(run)
    res = deploy(run, sshd, "--remote-dir", str(remote_dir(tmp_path)), known_hosts=known_hosts)
    assert res.exit_code == 1 and f"{key} is " in res.output and "expected an integer" in res.output, res.output
    assert not marker.exists() and not (remote_dir(tmp_path) / "pwned").exists()
    assert snapshot(run) == before


def test_options_reach_the_device_quoted(run, sshd, known_hosts, tmp_path):
    """--python and --remote-dir with shell syntax in them are single arguments on the device."""
    marker = tmp_path / "pwned"
    res = deploy(run, sshd, "--remote-dir", str(remote_dir(tmp_path)), known_hosts=known_hosts,
                 python=f"{sys.executable}; touch {marker}")
    one_error_line(res, "not found")
    assert not marker.exists()
    odd = tmp_path / "remote" / f"a b; touch {marker.name}"
    res = deploy(run, sshd, "--remote-dir", str(odd), known_hosts=known_hosts)
    assert res.exit_code == 0, res.output
    assert not marker.exists() and not (tmp_path / "remote" / "pwned").exists()
    assert json.loads((run / "eval" / "rpi4-device.json").read_text())["device"]["remote_dir"] == str(odd)


def test_deploy_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "targets" / "rpi4" / "bundle").mkdir(parents=True)
    (tmp_path / "targets" / "rpi4" / "bundle" / "run.sh").write_text("echo\n")
    res = CliRunner().invoke(main, ["deploy", str(tmp_path), "--target", "rpi4", "--host", "pi@x.invalid",
                                    "--dry-run"])
    assert res.exit_code == 1 and "not an edgekit run directory" in res.output, res.output


TINY_REGRESSION = """
name: tiny-regression
seed: 0
task: regression
data: {source: fermentation, normalize: zscore}
teacher: {model: mlp_small, epochs: 2, batch_size: 64, learning_rate: 0.003}
student: null
prune: null
qat: null
targets: [rpi4]
evaluate: {warmup: 2, runs: 10}
"""


@pytest.mark.slow
def test_deploy_of_a_regression_run_prints_its_metric(sshd, known_hosts, tmp_path):
    """A task without accuracy: deploy writes the device's numbers, checks the budget and prints
    the MAE, exit 0 (it crashed formatting a None accuracy after writing, exit 1)."""
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    recipe = tmp_path / "reg.yaml"
    recipe.write_text(TINY_REGRESSION)
    out = tmp_path / "run"
    Run(load_recipe(recipe), recipe, out).execute()
    res = deploy(out, sshd, "--remote-dir", str(remote_dir(tmp_path)), known_hosts=known_hosts, quiet=False)
    assert res.exit_code == 0, res.output
    assert "rpi4 on ssh:" in res.output and " mae " in res.output and "budget ok" in res.output, res.output
    device = json.loads((out / "eval" / "rpi4-device.json").read_text())
    assert device["accuracy"] is None and device["metrics"]["mae"] is not None and device["budget"]["ok"]
