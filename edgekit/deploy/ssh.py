"""The SSH transport of a deploy: paramiko (imported when connecting), host keys checked against
a known_hosts file, commands under timeouts and SFTP copies, every failure one :class:`DeviceError` line."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import shlex
import socket
import time
from pathlib import Path

from ..errors import DeviceError, one_line
from .plan import CONNECT_TIMEOUT_S, Destination, _seconds

log = logging.getLogger(__name__)


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
            raise DeviceError(f"{self.destination.host}: {what}: connection lost ({one_line(exc)})") from None
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
        raise DeviceError(f"{known_hosts}: cannot read known_hosts: {one_line(exc)}") from None
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
        raise DeviceError(f"{where}: cannot connect: {one_line(exc)}") from None
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
