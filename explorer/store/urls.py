"""What a storage URL says: whether it is a journal file, its scheme, the password-free form for
messages, and the folders kept beside it (locks, worker liveness files, worker logs, trained
weights). Every part of the project that derives a path or a scheme from a storage URL asks here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

STUDIES_DIR = Path(os.environ.get("EXPLORER_STUDIES_DIR", "studies"))
DEFAULT_STORAGE = str(STUDIES_DIR / "explorer.journal")
RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def is_journal(url: str) -> bool:
    """Whether `url` names a journal file (any path without a scheme)."""
    return "://" not in url


def scheme(url: str) -> str:
    """The database of an RDB URL, driver left out (``postgresql`` for ``postgres://`` and
    ``postgresql+psycopg://``); ``journal`` for a journal file."""
    if is_journal(url):
        return "journal"
    name = url.split("://", 1)[0].split("+", 1)[0].lower()
    return {"postgres": "postgresql", "mariadb": "mysql"}.get(name, name)


def default_storage() -> str:
    """``EXPLORER_STORAGE`` if set, else the journal file in ``studies/``."""
    return os.environ.get("EXPLORER_STORAGE") or DEFAULT_STORAGE


def storage_file(url: str) -> Path | None:
    """The file a journal or SQLite storage lives in; None for a database server (or an
    in-memory SQLite)."""
    if is_journal(url):
        return Path(url).expanduser()
    if scheme(url) == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        return Path(path).expanduser() if path and path != ":memory:" else None
    return None


def single_process_storage(url: str) -> bool:
    """SQLite has no row locks: Optuna's storage is not safe for several processes on it."""
    return scheme(url) == "sqlite"


def _beside(url: str, name: str) -> Path:
    """A folder beside the storage's file, else in the studies folder of this machine."""
    path = storage_file(url)
    return (path.parent if path is not None else STUDIES_DIR) / name


def lock_file(url: str) -> Path | None:
    """The file whose fcntl lock stands for a file-based storage, or None for a server."""
    path = storage_file(url)
    # Not "<file>.lock": Optuna's journal backend takes that name for a lock of its own.
    return path.with_name(path.name + ".explorer-lock") if path is not None else None


def workers_dir(url: str) -> Path:
    """Where the worker lock files of a storage live (`explorer.store.liveness`)."""
    return _beside(url, ".workers")


def log_dir(url: str) -> Path:
    """Where worker tracebacks are written."""
    return _beside(url, "logs")


def artifact_dir(storage: str | None = None) -> Path:
    """Where trained weights are kept for a storage: ``EXPLORER_ARTIFACTS`` if set, else an
    ``artifacts`` folder beside a journal file, else ``studies/artifacts`` (for RDB storages; point
    every machine of a shared study at one shared folder with ``EXPLORER_ARTIFACTS``)."""
    env = os.environ.get("EXPLORER_ARTIFACTS")
    if env:
        return Path(env)
    url = storage or default_storage()
    return _beside(url, "artifacts") if is_journal(url) else STUDIES_DIR / "artifacts"
