"""The liveness of worker processes: file locks the kernel drops when a process dies, and the
heartbeats of an RDB storage.

A worker holds an exclusive lock on its own file ``<id>.lock`` in `workers_dir` for as long as it
lives, so a trial whose worker's file can be locked by someone else belongs to a dead worker, in
any container on this machine that sees the same folder. Elsewhere (another machine) the file is
absent and the worker's fate is left to the heartbeats `heartbeat` records for each running
trial (RDB storages opened with a heartbeat interval). A storage with no heartbeats of its own (a
journal file) gets them as files in the same folder, one a running trial, touched each interval:
a paused worker's file goes stale as an RDB heartbeat would (`beat_file`, `silent_beat`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .locks import file_lock
from .urls import is_journal, redact, workers_dir


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


def _worker_file(url: str, worker: object) -> Path | None:
    """The lock file of `worker` on this machine, when its id names one."""
    if not isinstance(worker, str) or "/" in worker or worker.startswith("."):
        return None
    return workers_dir(url) / f"{worker}.lock"


def worker_dead(url: str, worker: str) -> bool:
    """Whether `worker` is known to be dead: its lock file is here and nobody holds it."""
    path = _worker_file(url, worker)
    if path is None:
        return False
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


def worker_alive(url: str, worker: str) -> bool:
    """Whether `worker` is known to be alive: its lock file is here and held (it may be paused)."""
    path = _worker_file(url, worker)
    if path is None:
        return False
    try:
        f = open(path)  # noqa: SIM115
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


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
        with file_lock(mark.with_name(mark.name + ".explorer-lock")):
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


def beat_file(url: str, trial_id: int) -> Path:
    """The file whose time is a running trial's heartbeat on a storage with no heartbeats of its
    own (a journal file, SQLite): ``trial-<id>.beat`` in `workers_dir`, holding the interval."""
    return workers_dir(url) / f"trial-{trial_id}.beat"


def silent_beat(url: str, trial_id: int) -> float | None:
    """Seconds since the trial's beat file was last touched, when that is past its grace (twice
    its interval): its worker is paused, hung or cut off. None while it beats, or with no file."""
    path = beat_file(url, trial_id)
    try:
        interval = float(path.read_text().split()[0])
        silent = time.time() - path.stat().st_mtime
    except (OSError, ValueError, IndexError):
        return None
    return silent if silent > 2 * interval else None


@contextlib.contextmanager
def heartbeat(
    storage: object, trial_id: int, url: str | None = None, interval: float | None = None
) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the block runs, so that other workers can
    tell it is alive: through an RDB storage opened with a heartbeat interval, else (a journal)
    by touching `beat_file` every `interval` seconds when `url` and `interval` are given."""
    rdb = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    path = beat_file(url, trial_id) if not rdb and url and interval else None
    if not rdb and path is None:
        yield
        return
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{interval}\n")
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a dropped connection: the next beat retries
                if path is not None:
                    os.utime(path)
                else:
                    storage.record_heartbeat(trial_id)
            if stop.wait(rdb or interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
