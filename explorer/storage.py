"""Opening study storages: a journal file (the default, safe for several local processes) or any
SQLAlchemy URL Optuna accepts (PostgreSQL for a study shared by several machines).

Every failure to open or read a storage becomes a `StorageError` with one readable line, so the
CLIs can print it and exit with status 2, and the dashboard can show it.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from .usage import first_line

STUDIES_DIR = Path(os.environ.get("EXPLORER_STUDIES_DIR", "studies"))
DEFAULT_STORAGE = str(STUDIES_DIR / "explorer.journal")
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql")


class StorageError(Exception):
    """A storage that cannot be opened or read, or a study that is not in it."""


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def is_journal(url: str) -> bool:
    return "://" not in url


def default_storage() -> str:
    """``EXPLORER_STORAGE`` if set, else the journal file in ``studies/``."""
    return os.environ.get("EXPLORER_STORAGE") or DEFAULT_STORAGE


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
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "postgres":
        url = "postgresql" + url[len("postgres") :]
    if scheme not in _RDB_SCHEMES:
        raise StorageError(
            f"unknown storage URL scheme {scheme!r} in {redact(url)!r}; use a journal file path "
            "or a SQLAlchemy URL such as postgresql://user@host:5432/db"
        )
    kwargs = {}
    if heartbeat and scheme != "sqlite":
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat}
    engine = {"pool_pre_ping": True}
    if scheme.startswith("postgres"):  # a host that drops packets fails in 10 s, not minutes
        engine["connect_args"] = {"connect_timeout": 10}
    from .locking import study_lock

    try:
        # Optuna creates the schema of a fresh database on first open; two processes doing it
        # at once collide (a duplicate-key error on PostgreSQL), so they take turns.
        with study_lock(url, "schema"), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            return RDBStorage(url, engine_kwargs=engine, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot open storage {redact(url)!r}: {first_line(exc)}") from None


def load_study(storage: str | BaseStorage | None, study_name: str) -> optuna.Study:
    """An existing study; a `StorageError` names the studies that do exist when it is missing."""
    store = storage if isinstance(storage, BaseStorage) else open_storage(storage, create=False)
    names = study_names(store)
    if study_name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise StorageError(f"no study named {study_name!r} in this storage (studies: {known})")
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot load study {study_name!r}: {first_line(exc)}") from None


def study_names(storage: str | BaseStorage | None, rungs: bool = False) -> list[str]:
    """Names of the studies in a storage; the lower rungs of successive-halving studies
    (``NAME@rung0``, see `explorer.rungs`) only with `rungs`."""
    from .rungs import is_rung_study

    store = storage if isinstance(storage, BaseStorage) else open_storage(storage, create=False)
    try:
        return [
            s.study_name
            for s in optuna.get_all_study_summaries(store, include_best_trial=False)
            if rungs or not is_rung_study(s.study_name)
        ]
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot read studies: {first_line(exc)}") from None


def artifact_dir(storage: str | None = None) -> Path:
    """Where trained weights are kept for a storage: ``EXPLORER_ARTIFACTS`` if set, else an
    ``artifacts`` folder beside a journal file, else ``studies/artifacts`` (for RDB storages; point
    every machine of a shared study at one shared folder with ``EXPLORER_ARTIFACTS``)."""
    env = os.environ.get("EXPLORER_ARTIFACTS")
    if env:
        return Path(env)
    url = storage or default_storage()
    if is_journal(url):
        return Path(url).expanduser().parent / "artifacts"
    return STUDIES_DIR / "artifacts"
