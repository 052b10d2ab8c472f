"""Cross-process locks for a shared study, and the liveness of the worker processes.

Optuna's storages make single writes atomic but not the read-then-write steps a search needs:
creating the schema of a fresh PostgreSQL database, writing a new study's settings and queueing
its references, claiming one of the remaining trial slots, finding and retrying a dead worker's
trial. Each of those runs under `study_lock`, which every process of every machine sharing the
storage takes: a PostgreSQL advisory lock, a MySQL named lock, or an exclusive ``fcntl`` lock on a
file beside a SQLite database or journal file (one machine; see `check_journal_host`).

A worker holds an exclusive lock on its own file ``<id>.lock`` in `workers_dir` for as long as it
lives. The kernel drops that lock when the process dies, however it dies, so a trial whose worker's
file can be locked by someone else belongs to a dead worker, in any container on this machine that
sees the same folder. Elsewhere (another machine) the file is absent and the worker's fate is left
to Optuna's heartbeats (RDB storages).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from .storage import STUDIES_DIR, is_journal, redact


def _key(text: str) -> int:
    """A signed 64-bit lock key for a name (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def _sqlite_path(url: str) -> Path | None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return Path(path).expanduser() if path and path != ":memory:" else None


def _lock_file(url: str) -> Path | None:
    """The file whose fcntl lock stands for a file-based storage, or None for a server."""
    # Not "<file>.lock": Optuna's journal backend takes that name for a lock of its own.
    if is_journal(url):
        return Path(url).expanduser().with_name(Path(url).name + ".explorer-lock")
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        return path.with_name(path.name + ".explorer-lock") if path else None
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _postgres_lock(url: str, key: int) -> Iterator[None]:
    import psycopg

    plain = url.split("://", 1)[1]
    with psycopg.connect(f"postgresql://{plain}", connect_timeout=10, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextlib.contextmanager
def _mysql_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": name[:64]})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})
    engine.dispose()


@contextlib.contextmanager
def study_lock(url: str, name: str = "study") -> Iterator[None]:
    """Hold the storage-wide lock called `name` (``schema``, or one per study) until the block
    ends; every process on every machine that shares `url` waits for it."""
    path = _lock_file(url)
    if path is not None:
        with _file_lock(path):
            yield
        return
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        with _postgres_lock(url, _key(f"inception-explorer:{name}")):
            yield
    elif scheme in ("mysql", "mariadb"):
        with _mysql_lock(url, f"inception-explorer:{name}"):
            yield
    else:  # an in-memory SQLite or another server: one process, or nothing to hold
        yield


# --------------------------------------------------------------------------------------------
# Workers


def workers_dir(url: str) -> Path:
    """Where the worker lock files of a storage live: beside a journal or SQLite file, else in
    the studies folder of this machine."""
    path = Path(url).expanduser() if is_journal(url) else None
    if path is None and url.startswith("sqlite"):
        path = _sqlite_path(url)
    return (path.parent if path else STUDIES_DIR) / ".workers"


class WorkerToken:
    """This worker process's identity (a random id, unique across machines and containers) and
    the lock that tells other processes it is alive."""

    def __init__(self, url: str) -> None:
        self.id = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        self.folder = workers_dir(url)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{self.id}.lock"
        self._file = open(self.path, "w")  # noqa: SIM115 - held for the life of the process
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        if self._file.closed:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._file.close()


def worker_dead(url: str, worker: str) -> bool:
    """Whether `worker` is known to be dead: its lock file is here and nobody holds it."""
    if not isinstance(worker, str) or "/" in worker or worker.startswith("."):
        return False
    path = workers_dir(url) / f"{worker}.lock"
    try:
        f = open(path)  # noqa: SIM115
    except OSError:
        return False  # not a worker of this machine: its heartbeats tell
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        with contextlib.suppress(OSError):
            path.unlink()
        return True


def _machine_id() -> str:
    """The running kernel's boot id: the same for every container of one machine."""
    for source in ("/proc/sys/kernel/random/boot_id", "/etc/machine-id"):
        with contextlib.suppress(OSError):
            return Path(source).read_text().strip()
    return socket.gethostname()


def check_journal_host(url: str) -> str | None:
    """A warning when a journal file is opened from another machine than the one that made it
    (its locks and recovery hold on one machine only), else None. Records this machine the first
    time."""
    if not is_journal(url):
        return None
    mark = Path(url).expanduser().with_name(Path(url).name + ".host")
    me = f"{_machine_id()} {socket.gethostname()}"
    try:
        with _file_lock(mark.with_name(mark.name + ".explorer-lock")):
            if not mark.exists():
                mark.write_text(me + "\n")
                return None
            first = mark.read_text().strip()
    except OSError:
        return None
    if first.split(" ", 1)[0] == me.split(" ", 1)[0]:
        return None
    host = first.split(" ", 1)[1] if " " in first else "?"
    return (
        f"warning: journal {redact(url)} was made on another machine ({host}); a journal file is "
        "safe for the processes of one machine only; share a study across machines through "
        "PostgreSQL (--storage postgresql://...)"
    )


def warn(message: str | None) -> None:
    if message:
        print(message, file=sys.stderr)
