"""Several worker processes on one machine: starting them, watching them, and stopping every one of
them, whatever ends the parent.

A worker process that dies of an error writes its traceback to a log file beside the study; the
parent prints one line with the reason and that file, stops the other workers (their running
trials are failed as interrupted, and retried by the next run), and the search exits with status 1.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from ..store.liveness import check_journal_host
from ..store.urls import default_storage, log_dir, single_process_storage, storage_file
from ..training import devices
from ..usage import UsageError, first_line
from .settings import SearchSettings
from .workers import Stopped, WorkerError, run_worker


def _on_sigterm(signum, frame) -> None:
    raise Stopped()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt()


def write_traceback(s: SearchSettings, index: int) -> str:
    """Write the exception being handled to a log file beside the study; returns its path (or
    why it could not be written)."""
    folder = log_dir(s.storage or default_storage())
    path = folder / f"worker-{index}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc())
    except OSError as exc:
        return f"not written: {exc}"
    return str(path)


def _worker_main(s: SearchSettings, index: int, errors: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run_worker(s, index, in_child=True)
    except Stopped:
        pass
    except WorkerError as exc:  # it gave up, and says why: no traceback to keep
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        reason = str(exc)
        errors.put((index, reason if reason.startswith("stopped") else f"stopped: {reason}", None))
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - reported by the parent, traceback kept in a file
        # From here a stop just ends the process: when two workers fail at once, the parent
        # stops the second while it reports, and that must not print a traceback of its own.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        reason = f"stopped: {type(exc).__name__}: {first_line(exc)}"
        errors.put((index, reason, write_traceback(s, index)))
        sys.exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_processes(s: SearchSettings, on_poll: Callable[[], None]) -> None:
    """Run `s.workers` worker processes until the study is done; raises `WorkerError` (after
    stopping the others) when one stops with an error. However the parent's part ends (done,
    Ctrl-C, SIGTERM, an error of its own), no worker outlives it."""
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(s, i, errors), daemon=False)
        for i in range(s.workers or 1)
    ]
    # A parent stopped with SIGTERM (a scheduler, `kill`) stops its workers as Ctrl-C does,
    # instead of leaving them to train on alone.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for p in procs:
            p.start()
        failure = None
        while any(p.is_alive() for p in procs):
            on_poll()
            try:
                failure = errors.get(timeout=2.0)
                break
            except queue.Empty:
                pass
        if failure is None:
            failure = next((e for e in _drain(errors)), None)
        if failure is not None:
            index, reason, where = failure
            where = f" (traceback in {where})" if where else ""
            raise WorkerError(f"worker {index} {reason}{where}")
        for p in procs:
            p.join()
        bad = [i for i, p in enumerate(procs) if p.exitcode]
        if bad:
            raise WorkerError(f"worker(s) {bad} exited with status {procs[bad[0]].exitcode}")
    finally:
        _stop(procs)
        signal.signal(signal.SIGTERM, previous)


def _drain(q) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except (queue.Empty, OSError, ValueError):
            return out


def _stop(procs) -> None:
    """Stop every worker still running: SIGTERM, then SIGKILL for one that does not end."""
    for p in procs:
        if p.pid is not None and p.is_alive():
            p.terminate()  # SIGTERM: the worker fails its running trial as interrupted
    for p in procs:
        if p.pid is None:
            continue
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join(5)


def plan(s: SearchSettings) -> tuple[SearchSettings, list[str]]:
    """The settings this machine runs with (workers resolved), and notes to print."""
    url = s.storage or default_storage()
    notes = [n for n in [check_journal_host(url)] if n]
    try:
        workers = len(devices.plan_workers(s.device, s.workers, s.workers_per_gpu))
    except ValueError as exc:
        raise UsageError(f"--device/--workers: {exc}") from None
    if workers > 1 and single_process_storage(url):
        journal = storage_file(url).with_suffix(".journal") if storage_file(url) else "FILE.journal"
        notes.append(
            "note: SQLite is not safe for several worker processes; running 1 worker. For "
            f"several, use a journal file (--storage {journal}) or PostgreSQL"
        )
        workers = 1
    return dataclasses.replace(s, workers=workers), notes
