"""A real OpenSSH server on 127.0.0.1 for the deploy tests (DESIGN.md, "Checked to work here").

``SshServer.start(folder)`` generates an ed25519 host key and a user key with ``ssh-keygen``,
writes an sshd_config (keys only, no PAM, internal-sftp), starts ``/usr/sbin/sshd -D -e -f
CONFIG`` on a free port and waits until it answers. The login user is the user running the
tests (root in CI: ``PermitRootLogin prohibit-password``); its authorized_keys file lives in
``folder``, which that same user can read. Nothing is installed: ``skip_reason()`` says why a
test cannot run (no sshd, no ssh-keygen).

``SshServer.start(folder, root=ROOTFS)`` runs the sshd of a root file system under ``chroot``
instead (as root; ``folder`` must lie inside ``root``): with the aarch64 rootfs of
``tools/pi_emulator.sh`` that is an emulated Raspberry Pi reachable over SSH.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"   # absolute: sshd re-executes itself


def skip_reason() -> str | None:
    """Why a real sshd cannot be started here, or None."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} missing (apt-get install openssh-server; CI installs it)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen missing (apt-get install openssh-client)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str = "edgekit-test") -> Path:
    """A new unencrypted ed25519 key pair at ``path`` / ``path.pub``; returns ``path``."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path


def host_key_line(name: str, pub: Path) -> str:
    """A known_hosts line for ``name`` from a ``.pub`` file."""
    kind, b64 = pub.read_text().split()[:2]
    return f"{name} {kind} {b64}\n"


@dataclasses.dataclass
class SshServer:
    folder: Path
    port: int
    user: str
    host_key: Path           # private; .pub beside it
    user_key: Path           # private; authorized for ``user``
    log: Path
    proc: subprocess.Popen

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1"

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def known_hosts(self, path: Path) -> Path:
        """Write a known_hosts file that trusts this server; returns ``path``."""
        path.write_text(host_key_line(self.known_hosts_name, self.host_key.with_suffix(".pub")))
        return path

    @classmethod
    def start(cls, folder: Path, *, root: Path | None = None, timeout_s: float = 10.0) -> "SshServer":
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        user = "root" if root is not None else getpass.getuser()

        def seen(p: Path) -> Path:   # a path as the sshd sees it
            return Path("/") / p.relative_to(root.resolve()) if root is not None else p

        host_key = keygen(folder / "ssh_host_ed25519_key", "edgekit-test-host")
        user_key = keygen(folder / "id_ed25519")
        authorized = folder / "authorized_keys"
        authorized.write_text(user_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        port = free_port()
        config = folder / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {seen(host_key)}",
            f"PidFile {seen(folder / 'sshd.pid')}", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
            f"AuthorizedKeysFile {seen(authorized)}",
            f"AllowUsers {user}", "Subsystem sftp internal-sftp", "LogLevel VERBOSE", ""]))
        if os.geteuid() == 0:   # the privilege separation directory
            (Path(root or "/") / "run" / "sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        log = folder / "sshd.log"
        cmd = [SSHD, "-D", "-e", "-f", str(seen(config))]
        with open(log, "wb") as f:
            proc = subprocess.Popen(["chroot", str(root), *cmd] if root is not None else cmd,
                                    stdout=f, stderr=subprocess.STDOUT)
        server = cls(folder, port, user, host_key, user_key, log, proc)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return server
            except OSError:
                time.sleep(0.02)
        server.stop()
        raise RuntimeError(f"sshd did not answer on port {port} within {timeout_s} s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
