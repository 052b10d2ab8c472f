"""Cross-process locks for a shared study.

Optuna's storages make single writes atomic but not the read-then-write steps a search needs:
creating the schema of a fresh PostgreSQL database (`schema_lock`), writing a new study's settings
and queueing its references, claiming one of the remaining trial slots, finding and retrying a
dead worker's trial (`study_lock`), retraining a study's front once (`reeval_lock`). Every process
of every machine sharing the storage takes the same lock: a PostgreSQL advisory lock, a MySQL named
lock, or an exclusive ``fcntl`` lock on a file beside a SQLite database or journal file (one
machine; see `explorer.store.liveness.check_journal_host`).

A PostgreSQL lock is taken on one connection per process and storage, opened once and kept, with
``lock_timeout`` set: a lock that cannot be had in `LOCK_TIMEOUT_S` raises `LockTimeout` instead
of waiting for ever behind a stalled holder. `HOLDS` records how long each lock was held, for
``bench/locks.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import sqlalchemy

from .urls import lock_file, scheme

LOCK_TIMEOUT_S = 300
# (lock name, seconds held) of this process's recent locks, newest last; bench/locks.py reads it.
HOLDS: list[tuple[str, float]] = []
_MAX_HOLDS = 10_000
_connections: dict[str, psycopg.Connection] = {}
_connections_guard = threading.Lock()


class LockTimeout(RuntimeError):
    """A storage lock that could not be had in `LOCK_TIMEOUT_S`."""


def _key(text: str) -> int:
    """A signed 64-bit lock key for a name (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _postgres_connection(url: str) -> psycopg.Connection:
    """This process's lock connection to `url`'s server, opened on first use."""
    with _connections_guard:
        conn = _connections.get(url)
        if conn is None or conn.closed:
            plain = url.split("://", 1)[1]
            conn = psycopg.connect(f"postgresql://{plain}", connect_timeout=10, autocommit=True)
            conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
            _connections[url] = conn
        return conn


@contextlib.contextmanager
def _postgres_lock(url: str, name: str) -> Iterator[None]:
    key = _key(f"inception-explorer:{name}")
    conn = _postgres_connection(url)
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    except psycopg.errors.LockNotAvailable:
        raise LockTimeout(
            f"the storage lock {name!r} could not be had in {LOCK_TIMEOUT_S} s; a process that "
            "holds it is stalled"
        ) from None
    except psycopg.OperationalError:  # a connection the server dropped: one new try
        _connections.pop(url, None)
        conn = _postgres_connection(url)
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextlib.contextmanager
def _mysql_lock(url: str, name: str) -> Iterator[None]:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            got = conn.execute(
                sqlalchemy.text("SELECT GET_LOCK(:n, :t)"), {"n": name[:64], "t": LOCK_TIMEOUT_S}
            ).scalar()
            if got != 1:
                raise LockTimeout(
                    f"the storage lock {name!r} could not be had in {LOCK_TIMEOUT_S} s"
                )
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})
    finally:
        engine.dispose()


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """Hold the storage-wide lock called `name` until the block ends; every process on every
    machine that shares `url` waits for it. Use `study_lock`, `schema_lock` or `reeval_lock`."""
    path = lock_file(url)
    kind = scheme(url)
    if path is not None:
        held = file_lock(path)
    elif kind == "postgresql":
        held = _postgres_lock(url, name)
    elif kind == "mysql":
        held = _mysql_lock(url, name)
    else:  # an in-memory SQLite or another server: one process, or nothing to hold
        held = contextlib.nullcontext()
    with held:
        start = time.perf_counter()
        try:
            yield
        finally:
            HOLDS.append((name, time.perf_counter() - start))
            if len(HOLDS) > _MAX_HOLDS:
                del HOLDS[: _MAX_HOLDS // 2]


def study_lock(url: str, study: str) -> contextlib.AbstractContextManager[None]:
    """The lock of one study (with its rungs): creating it, claiming its trials, recovering them."""
    return storage_lock(url, f"study:{study}")


def schema_lock(url: str) -> contextlib.AbstractContextManager[None]:
    """The lock Optuna's first open of a fresh database runs under (it creates the tables)."""
    return storage_lock(url, "schema")


def reeval_lock(url: str, study: str) -> contextlib.AbstractContextManager[None]:
    """The lock a re-evaluation of `study` runs under: one at a time per study, held for as
    long as it trains, apart from the study's own lock so the search's claims go on."""
    return storage_lock(url, f"reeval:{study}")
