"""Opening study storages: a journal file (the default, safe for several local processes) or any
SQLAlchemy URL Optuna accepts (PostgreSQL for a study shared by several machines).

Every failure to open or read a storage becomes a `StorageError` with one readable line, so the
CLIs can print it and exit with status 2, and the dashboard can show it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from ..usage import first_line
from .locks import schema_lock
from .urls import RDB_SCHEMES, default_storage, is_journal, redact, scheme


class StorageError(Exception):
    """A storage that cannot be opened or read, or a study that is not in it."""


def open_storage(
    url: str | None = None, *, create: bool = True, heartbeat: int | None = None
) -> BaseStorage:
    """Open a storage by URL or journal-file path.

    create: make the journal file (and its folder) if missing; readers pass False and get a
    `StorageError` for a missing file instead. heartbeat: seconds between RDB heartbeats, so the
    trials of a killed worker are marked failed and retried (RDB storages only).
    """
    url = url or default_storage()
    if is_journal(url):
        path = Path(url).expanduser()
        if path.is_dir():
            raise StorageError(
                f"storage {url!r} is a folder; give a journal file such as {url}/explorer.journal"
            )
        if not path.exists():
            if not create:
                raise StorageError(f"no study storage at {url!r} (run a search first)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create storage folder for {url!r}: {exc}") from None
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:  # noqa: BLE001 - any reader failure is one clear line
            raise StorageError(f"cannot read journal storage {url!r}: {first_line(exc)}") from None
    kind = scheme(url)
    if url.startswith("postgres://"):
        url = "postgresql" + url[len("postgres") :]
    if kind not in RDB_SCHEMES:
        raise StorageError(
            f"unknown storage URL scheme {kind!r} in {redact(url)!r}; use a journal file path "
            "or a SQLAlchemy URL such as postgresql://user@host:5432/db"
        )
    kwargs = {}
    if heartbeat and kind != "sqlite":
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat}
    engine = {"pool_pre_ping": True}
    if kind == "postgresql":  # a host that drops packets fails in 10 s, not minutes
        engine["connect_args"] = {"connect_timeout": 10}

    try:
        # Optuna creates the schema of a fresh database on first open; two processes doing it
        # at once collide (a duplicate-key error on PostgreSQL), so they take turns.
        with schema_lock(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            return RDBStorage(url, engine_kwargs=engine, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot open storage {redact(url)!r}: {first_line(exc)}") from None
