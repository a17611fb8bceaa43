"""Where a tune study lives: the default SQLite file ``OUT/study.db``, or any database URL that
Optuna's ``RDBStorage`` (SQLAlchemy) accepts, e.g. ``postgresql://tuner@db.lan/edgekit``, which
several machines share to run the trials of one study.

A password never travels on the command line (it would show in ``ps`` and shell history) and never
reaches a log, ``tune.json`` or a report: :func:`resolve` refuses a ``--storage`` URL that holds
one, takes a full URL (password included) from the ``EDGEKIT_TUNE_STORAGE`` environment variable,
and otherwise leaves the password to the driver (libpq reads ``PGPASSWORD`` and ``~/.pgpass``).
:func:`mask` is the form that is shown and stored.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from pathlib import Path

from ..errors import RecipeError

log = logging.getLogger(__name__)

ENV = "EDGEKIT_TUNE_STORAGE"
HEARTBEAT_S = 10    # a worker records a heartbeat for each of its running trials this often ...
GRACE_S = 60        # ... and a RUNNING trial without one for this long was interrupted (machine gone)


@dataclasses.dataclass(frozen=True)
class Storage:
    url: str | None      # None: the SQLite file OUT/study.db
    shown: str           # the URL with any password masked, for logs and tune.json

    @property
    def shared(self) -> bool:
        return self.url is not None


def mask(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; never raises."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as its scheme only
        return url.split(":", 1)[0] + "://***" if "://" in url else "***"


def _parse(url: str, where: str):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError) as e:
        raise RecipeError(f"{where}: {mask(url)!r} is not a database URL ({e}); use e.g. "
                          "postgresql://USER@HOST[:PORT]/DB") from None


def _server(u) -> tuple:
    return (u.drivername, u.username, u.host, u.port, u.database)


def resolve(option: str | None, *, environ: dict | None = None) -> Storage:
    """The study's storage from ``--storage`` (``option``) or ``$EDGEKIT_TUNE_STORAGE``; the
    default (neither given, or ``sqlite`` / ``default``) is ``OUT/study.db``. Raises
    :class:`RecipeError` for a password on the command line or a URL that is not one."""
    env = os.environ if environ is None else environ
    if option is not None:
        option = option.strip()
        if option in ("", "sqlite", "default"):
            return Storage(None, "sqlite:///study.db")
        parsed = _parse(option, "--storage")
        if parsed.password is not None:
            raise RecipeError("--storage: the URL holds a password; put none on the command line (ps and shell "
                              f"history show it): give {mask(option)} and set PGPASSWORD (or ~/.pgpass), or put "
                              f"the whole URL in ${ENV}")
        url = option
        from_env = env.get(ENV, "").strip()
        if from_env:  # the same server with its password from the environment
            p_env = _parse(from_env, f"${ENV}")
            if _server(p_env) == _server(parsed):
                url = from_env
    else:
        url = env.get(ENV, "").strip()
        if not url:
            return Storage(None, "sqlite:///study.db")
        parsed = _parse(url, f"${ENV}")
    parsed = _parse(url, "--storage")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise RecipeError(f"--storage {mask(url)}: an in-memory SQLite database cannot hold a study; give a file "
                          "(sqlite:////abs/path/study.db) or leave --storage out for OUT/study.db")
    return Storage(url, mask(url))


CREATE_ATTEMPTS = 5  # opening a fresh shared database: tries while another machine creates its tables


def _lost_create_race(exc: BaseException) -> bool:
    text = str(exc)
    return "duplicate key value" in text or "already exists" in text or "UniqueViolation" in text


def open_storage(storage: Storage, out: Path):
    """Optuna's RDBStorage for ``storage`` (``out/study.db`` by default). A shared one records
    heartbeats (:data:`HEARTBEAT_S`, :data:`GRACE_S`) so a trial whose machine vanished is found."""
    import optuna

    if storage.url is None:
        return optuna.storages.RDBStorage(f"sqlite:///{(out / 'study.db').resolve()}",
                                          engine_kwargs={"connect_args": {"timeout": 60}})
    kwargs = {"pool_pre_ping": True} if not storage.url.startswith("sqlite") else {"connect_args": {"timeout": 60}}
    import warnings

    try:
        for attempt in range(CREATE_ATTEMPTS):
            try:
                with warnings.catch_warnings():  # heartbeat_interval is marked experimental in optuna 4
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(storage.url, engine_kwargs=kwargs,
                                                      heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            except Exception as e:  # noqa: BLE001 - only the race below is retried
                # machines that open a fresh database at the same moment all create Optuna's tables;
                # PostgreSQL lets one win and fails the others' CREATE TABLE with a unique violation
                # ("pg_type_typname_nsp_index") or "already exists": the tables are there, open again
                if attempt + 1 == CREATE_ATTEMPTS or not _lost_create_race(e):
                    raise
                log.info("another machine created the study's tables at the same moment; opening again")
                time.sleep(0.2 + random.random())
    except ImportError as e:
        raise RecipeError(f"--storage {storage.shown}: its database driver is not installed ({e}); for "
                          "PostgreSQL: pip install 'edgekit[tune-rdb]' (psycopg 3)") from None
    except Exception as e:  # noqa: BLE001 - connection errors of any driver; the message may echo the URL
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if storage.url in msg:
            msg = msg.replace(storage.url, storage.shown)
        raise RecipeError(f"--storage {storage.shown}: cannot open the study's database: {msg}") from None
