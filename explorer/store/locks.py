"""Cross-process locks for a shared study, and the retry of a storage's passing errors.

Optuna's storages make single writes atomic but not the read-then-write steps a search needs:
creating the schema of a fresh PostgreSQL database (`schema_lock`), writing a new study's settings
and queueing its references, claiming one of the remaining trial slots, finding and retrying a
dead worker's trial (`study_lock`). Every process
of every machine sharing the storage takes the same lock: a PostgreSQL advisory lock, a MySQL named
lock, or an exclusive ``fcntl`` lock on a file beside a SQLite database or journal file (one
machine; see `explorer.store.liveness.check_journal_host`).

A lock is waited for as long as it takes, never with a traceback: a waiter names the holder (host,
pid, since when) on stderr after `LOCK_NOTE_S` and again each `LOCK_NOTE_S` after that. A process
that dies holds nothing (the kernel drops its file lock, the server its advisory lock); a holder
that stalls (paused, hung, its machine cut off) is found by its beat. While it holds a lock, a
process beats every `LOCK_BEAT_S` (the lock file's time, or a query on its PostgreSQL lock
connection, which holds the advisory lock); a holder silent for `LOCK_GRACE_S` is taken for dead
and its lock broken: the lock file is replaced, or its PostgreSQL session ended. A holder broken
while paused that wakes up may finish the few writes of its claim without the lock.

A storage's passing errors (a connection refused or reset, a server restarting, a serialization
failure: `is_transient`) are retried with backoff for `TRANSIENT_S` seconds (`retry_transient`),
one line on stderr each; every call of the storages `explorer.store.storages` opens, and every
PostgreSQL lock, goes through it. After that `StorageUnavailable` says so in one line that names
the storage. `HOLDS` records how long each lock was held, for ``bench/locks.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg
import sqlalchemy

from ..usage import first_line
from .urls import lock_file, redact, scheme

LOCK_NOTE_S = 60.0  # a lock waited for this long names its holder, and again each time as long
LOCK_BEAT_S = 5.0  # a holder beats this often
LOCK_GRACE_S = 60.0  # a holder silent this long is taken for dead and its lock broken
TRANSIENT_S = 60.0  # a storage's passing errors are retried this long before giving up
_POLL_S = 1.0  # a waiter looks at the holder this often
# (lock name, seconds held) of this process's recent locks, newest last; bench/locks.py reads it.
HOLDS: list[tuple[str, float]] = []
_MAX_HOLDS = 10_000
_connections: dict[str, psycopg.Connection] = {}
_connections_guard = threading.Lock()
# Storages whose locks wait out passing errors: reached once by this process, or `keep_trying`.
_patient: set[str] = set()
T = TypeVar("T")


class LockTimeout(RuntimeError):
    """A storage lock not had within the `timeout` its caller gave (`storage_lock`)."""


class StorageUnavailable(RuntimeError):
    """A storage that failed with passing errors for `TRANSIENT_S` seconds; one line naming it."""


# --------------------------------------------------------------------------------------------
# Passing errors


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, what caused it, and the driver's error a SQLAlchemy error wraps."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        orig = getattr(exc, "orig", None)
        if isinstance(orig, BaseException) and id(orig) not in seen:
            yield orig
        exc = exc.__cause__ or exc.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a storage error that passes: a connection refused, reset or dropped, a
    server shutting down or starting up, a serialization failure or deadlock (retry the call)."""
    for e in _chain(exc):
        if isinstance(e, StorageUnavailable | psycopg.errors.LockNotAvailable):
            return False
        if isinstance(e, psycopg.OperationalError | ConnectionError):
            return True  # refused, reset, admin shutdown, starting up, serialization, deadlock
        if isinstance(e, sqlalchemy.exc.OperationalError | sqlalchemy.exc.TimeoutError):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
    return False


def _why(exc: BaseException) -> str:
    """The driver's own words for a storage error (Optuna's wrapper says only "during commit")."""
    chain = list(_chain(exc))
    driver = (e for e in chain if isinstance(e, psycopg.Error | ConnectionError))
    root = next(driver, chain[-1])
    return f"{type(root).__name__}: {first_line(root)}"


_retrying = threading.local()


def retry_transient(call: Callable[[], T], what: str, retry: bool = True) -> T:
    """`call()`, called again with backoff (0.5 s doubling to 8 s) while it fails with a passing
    storage error (`is_transient`), until such errors have lasted `TRANSIENT_S`; one line on
    stderr per retry. `what` names the storage (redacted). Then raises `StorageUnavailable`. A
    call made inside another's retry is not retried on its own: the outer one repeats it; with
    `retry` False it is just called."""
    if not retry or getattr(_retrying, "active", False):
        return call()
    first_failure, delay = None, 0.5
    while True:
        _retrying.active = True
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            left = TRANSIENT_S - (now - first_failure)
            if left <= 0:
                raise StorageUnavailable(
                    f"storage {what} failed for {TRANSIENT_S:.0f} s: {_why(exc)}"
                ) from None
            wait = min(delay, left)
            print(
                f"storage {what}: {_why(exc)}; retrying in {wait:.1f} s "
                f"(giving up in {left:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(wait)
            delay = min(2 * delay, 8.0)
        finally:
            _retrying.active = False


def keep_trying(url: str) -> None:
    """Make this process's locks on `url` wait out its passing errors from the first, as its
    storage does (``open_storage(retry=True)``); otherwise a lock waits them out only once it has
    reached the server, and a server never reached fails at once."""
    _patient.add(url)


# --------------------------------------------------------------------------------------------
# Holders, their beats, waiting


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: its host and pid, when it took the lock (epoch seconds) and how long it
    has been silent (seconds since its last beat)."""

    host: str
    pid: int | None
    since: float | None
    silent_s: float
    session: int | None = None  # its PostgreSQL backend's pid

    def __str__(self) -> str:
        since = "?" if self.since is None else time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"{self.host} pid {self.pid if self.pid is not None else '?'} since {since}"


def _me() -> tuple[str, int, float]:
    return socket.gethostname(), os.getpid(), time.time()


class _Beats:
    """One thread per process that beats, every `LOCK_BEAT_S`, for each lock the process holds."""

    def __init__(self) -> None:
        self._held: dict[int, Callable[[], object]] = {}
        self._guard = threading.Lock()
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, beat: Callable[[], object]) -> int:
        with self._guard:
            token = next(self._count)
            self._held[token] = beat
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lock-beats", daemon=True)
                self._thread.start()
            return token

    def remove(self, token: int) -> None:
        with self._guard:
            self._held.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(LOCK_BEAT_S)
            with self._guard:
                beats = list(self._held.values())
            for beat in beats:
                with contextlib.suppress(Exception):  # a dropped connection: its lock is gone
                    beat()


_beats = _Beats()


class _Waiting:
    """A waiter's clock: when to name the holder again, and whether to break its lock."""

    def __init__(self, name: str, timeout: float | None) -> None:
        self.name, self.timeout = name, timeout
        self.start = time.monotonic()
        self.next_note = LOCK_NOTE_S
        self.looked = -LOCK_NOTE_S  # when the holder was last looked at

    def should_break(self, holder: Holder | None) -> bool:
        """True when the holder has been silent past `LOCK_GRACE_S` (said in one line); names the
        holder each `LOCK_NOTE_S`; raises `LockTimeout` past the waiter's own timeout."""
        waited = time.monotonic() - self.start
        if holder is not None and holder.silent_s > LOCK_GRACE_S:
            print(
                f"breaking the storage lock {self.name!r}: its holder {holder} has been silent "
                f"for {holder.silent_s:.0f} s (over {LOCK_GRACE_S:.0f} s: paused, hung or cut off)",
                file=sys.stderr,
                flush=True,
            )
            return True
        if self.timeout is not None and waited > self.timeout:
            raise LockTimeout(
                f"the storage lock {self.name!r} was not had in {self.timeout:.0f} s; "
                f"held by {holder or 'an unknown process'}"
            )
        if waited >= self.next_note:
            print(
                f"waiting {waited:.0f} s for the storage lock {self.name!r}, held by "
                f"{holder or 'an unknown process'}; still waiting",
                file=sys.stderr,
                flush=True,
            )
            self.next_note += LOCK_NOTE_S
        return False


# --------------------------------------------------------------------------------------------
# A lock file


def _key(text: str) -> int:
    """A signed 64-bit lock key for a name (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """A plain exclusive lock on `path`, for the few microseconds of a lock file's handover."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _file_holder(f) -> Holder:
    """The holder a lock file names (``host pid since``), silent since the file's last beat."""
    f.seek(0)
    parts = f.read().split()
    silent = time.time() - os.fstat(f.fileno()).st_mtime
    if len(parts) == 3 and parts[1].isdigit():
        with contextlib.suppress(ValueError):
            return Holder(parts[0], int(parts[1]), float(parts[2]), silent)
    return Holder("?", None, None, silent)


def _same_file(path: Path, f) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def file_lock(path: Path, name: str | None = None, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file `path`, waiting as `storage_lock` describes (its holder
    named, a silent holder's file replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handover = path.with_name(path.name + ".handover")
    waiting, pause = None, 0.001
    while True:
        f = open(path, "a+")  # noqa: SIM115 - closed when the lock is released
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting = waiting or _Waiting(name or path.name, timeout)
            if time.monotonic() - waiting.looked >= _POLL_S:
                waiting.looked = time.monotonic()
                if waiting.should_break(_file_holder(f)):
                    with _flock(handover):  # one breaker at a time, never a fresh holder's file
                        if _same_file(path, f) and _file_holder(f).silent_s > LOCK_GRACE_S:
                            path.unlink()
            f.close()
            time.sleep(pause)
            pause = min(2 * pause, 0.05)  # a claim holds the lock for milliseconds
            continue
        with _flock(handover):
            if _same_file(path, f):  # not replaced by a breaker while this process waited
                host, pid, since = _me()
                f.seek(0)
                f.truncate()
                f.write(f"{host} {pid} {since:.0f}\n")
                f.flush()
                break
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
    beat = _beats.add(lambda: os.utime(f.fileno()))
    try:
        yield
    finally:
        _beats.remove(beat)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


# --------------------------------------------------------------------------------------------
# PostgreSQL and MySQL

# The lock first, then who holds it and since when, in the session's application_name.
_PG_LOCK = (
    "WITH got AS MATERIALIZED (SELECT pg_advisory_lock(%s)) "
    "SELECT set_config('application_name', %s, false) FROM got"
)
_PG_HOLDER = """
SELECT a.pid, a.application_name, a.state, extract(epoch FROM now() - a.state_change)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = %s AND l.objid::bigint = %s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_PG_APP = "ie"  # application_name: "ie PID SINCE HOST", cut to PostgreSQL's 63 characters


def _postgres_connection(url: str) -> psycopg.Connection:
    """This process's lock connection to `url`'s server, opened on first use."""
    with _connections_guard:
        conn = _connections.get(url)
        if conn is None or conn.closed:
            plain = url.split("://", 1)[1]
            conn = psycopg.connect(
                f"postgresql://{plain}",
                connect_timeout=10,
                autocommit=True,
                options=f"-c lock_timeout={int(_POLL_S * 1000)}",
            )
            _connections[url] = conn
            _patient.add(url)  # it answered: a later failure is waited out, not fatal
        return conn


def _drop_connection(url: str, conn: psycopg.Connection) -> None:
    with _connections_guard:
        if _connections.get(url) is conn:
            del _connections[url]
    with contextlib.suppress(Exception):
        conn.close()


def _postgres_holder(conn: psycopg.Connection, key: int) -> Holder | None:
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    row = conn.execute(_PG_HOLDER, (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
    if row is None:
        return None
    session, app, state, silent = row
    parts = (app or "").split(" ", 3)
    silent = float(silent or 0.0) if state == "idle" else 0.0  # running a query: alive
    if len(parts) == 4 and parts[0] == _PG_APP and parts[1].isdigit() and parts[2].isdigit():
        return Holder(parts[3], int(parts[1]), float(parts[2]), silent, session)
    return Holder(f"session {session}", None, None, silent, session)


def _postgres_acquire(url: str, name: str, key: int, timeout: float | None) -> psycopg.Connection:
    conn = _postgres_connection(url)
    waiting = None
    try:
        while True:
            host, pid, since = _me()
            try:
                conn.execute(_PG_LOCK, (key, f"{_PG_APP} {pid} {since:.0f} {host}"[:63]))
                return conn
            except psycopg.errors.LockNotAvailable:  # not within _POLL_S: look at the holder
                waiting = waiting or _Waiting(name, timeout)
                holder = _postgres_holder(conn, key)
                if waiting.should_break(holder):
                    try:
                        conn.execute("SELECT pg_terminate_backend(%s)", (holder.session,))
                    except psycopg.errors.InsufficientPrivilege as exc:
                        print(f"could not break it: {first_line(exc)}", file=sys.stderr)
    except psycopg.OperationalError:  # a connection the server dropped: retried on a new one
        _drop_connection(url, conn)
        raise


@contextlib.contextmanager
def _postgres_lock(url: str, name: str, timeout: float | None) -> Iterator[None]:
    key = _key(f"inception-explorer:{name}")
    conn = retry_transient(
        lambda: _postgres_acquire(url, name, key, timeout), redact(url), url in _patient
    )
    beat = _beats.add(lambda: conn.execute("SELECT 1"))
    try:
        yield
    finally:
        _beats.remove(beat)
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except psycopg.Error:  # its session ended (a server restart, a break): the lock with it
            _drop_connection(url, conn)


@contextlib.contextmanager
def _mysql_lock(url: str, name: str, timeout: float | None) -> Iterator[None]:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            waiting = _Waiting(name, timeout)
            while conn.execute(
                sqlalchemy.text("SELECT GET_LOCK(:n, :t)"), {"n": name[:64], "t": _POLL_S}
            ).scalar() != 1:  # fmt: skip
                holder = conn.execute(
                    sqlalchemy.text("SELECT IS_USED_LOCK(:n)"), {"n": name[:64]}
                ).scalar()
                waiting.should_break(Holder(f"connection {holder}", None, None, 0.0))
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})
    finally:
        engine.dispose()


@contextlib.contextmanager
def storage_lock(url: str, name: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the storage-wide lock called `name` until the block ends; every process on every
    machine that shares `url` waits for it, naming its holder each `LOCK_NOTE_S`, and breaks it
    when its holder has been silent for `LOCK_GRACE_S`. `timeout`: raise `LockTimeout` after that
    many seconds instead of waiting on (the search never gives one). Use `study_lock`,
    `schema_lock`."""
    path = lock_file(url)
    kind = scheme(url)
    if path is not None:
        held = file_lock(path, name, timeout)
    elif kind == "postgresql":
        held = _postgres_lock(url, name, timeout)
    elif kind == "mysql":
        held = _mysql_lock(url, name, timeout)
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
