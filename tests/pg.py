"""A real PostgreSQL server on 127.0.0.1 for the shared-study tests of edgekit tune.

``PgServer.start(folder)`` makes a private cluster in ``folder`` with Debian's ``initdb`` (a
password-protected role ``tuner``, scram-sha-256 over TCP), starts it with ``pg_ctl`` on a free
port of 127.0.0.1 (its socket directory in ``folder`` too), creates the database ``edgekit`` and
waits until it answers; ``stop()`` shuts it down. PostgreSQL refuses to run as root: as root the
cluster belongs to the ``postgres`` user the Debian package creates (``runuser``). Nothing is
installed: :func:`skip_reason` says why a test cannot run (``apt-get install postgresql``; CI's
``.ci/run`` installs it).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

from sshd import free_port

USER, PASSWORD, DB = "tuner", "s3cret-Pa55", "edgekit"


def bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def skip_reason() -> str | None:
    """Why a real PostgreSQL server cannot be started here, or None."""
    if bindir() is None:
        return "PostgreSQL server binaries missing (apt-get install postgresql; CI installs it)"
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        return "psycopg missing (pip install 'edgekit[tune-rdb]'; tools/setup.sh installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (PostgreSQL refuses to run as root)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no postgres user (the postgresql package creates it)"
    return None


def _as_owner(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


@dataclasses.dataclass
class PgServer:
    folder: Path
    port: int

    @property
    def url(self) -> str:
        """The URL without its password (give the password in PGPASSWORD)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DB}"

    @property
    def url_with_password(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DB}"

    @classmethod
    def start(cls, folder: Path) -> PgServer:
        bins = bindir()
        folder.mkdir(parents=True, exist_ok=True)
        data, sock = folder / "data", folder / "sock"
        sock.mkdir(exist_ok=True)
        pwfile = folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
            shutil.chown(sock, "postgres")
            shutil.chown(pwfile, "postgres")
        pwfile.chmod(0o600)
        _as_owner([str(bins / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(pwfile),
                   "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8"])
        port = free_port()
        _as_owner([str(bins / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
                   "-o", f"-k {sock} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        server = cls(folder, port)
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        for _ in range(60):
            r = subprocess.run([str(bins / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", "postgres",
                                "-c", f"CREATE DATABASE {DB}"], capture_output=True, text=True, env=env)
            if r.returncode == 0:
                return server
            time.sleep(0.5)
        server.stop()
        raise RuntimeError(f"PostgreSQL did not answer: {r.stderr}")

    def stop(self) -> None:
        _as_owner([str(bindir() / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"])
