"""Several worker processes on one machine: starting them, watching them, and stopping every one of
them, whatever ends the parent.

A worker process that stops with an error writes its traceback to a log file beside the study; the
parent prints one line with the reason and that file, stops the other workers (their running
trials are failed as interrupted, and retried by the next run), and the search exits with status 1.

A worker that dies without a word (killed by a signal: SIGKILL, the kernel's OOM killer, a crash)
is replaced by a new one on the same device, up to `REPLACEMENTS_PER_WORKER` per worker in a run,
each said in one line; its running trial is failed and retried by the recovery of every claim
(`explorer.store.work`), as any dead worker's. Past that limit the others go on without it;
with none left the search stops with status 1. The run ends with one line saying how many workers
died and how many were replaced.
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

from ..store import (
    check_journal_host,
    default_storage,
    is_transient,
    log_dir,
    single_process_storage,
    storage_file,
)
from ..training import devices
from ..usage import UsageError, first_line
from .settings import SearchSettings
from .workers import Stopped, WorkerError, run_worker

REPLACEMENTS_PER_WORKER = 1  # a run replaces up to this many dead workers per worker it started


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
    """Run `s.workers` worker processes until the study is done, replacing those that die
    (`REPLACEMENTS_PER_WORKER`); raises `WorkerError` (after stopping the others) when one stops
    with an error, or when the last one alive dies with no replacement left. However the parent's
    part ends (done, Ctrl-C, SIGTERM, an error of its own), no worker outlives it."""
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    n = s.workers or 1
    deaths = _Deaths(limit=REPLACEMENTS_PER_WORKER * n)

    def start(index: int):
        p = ctx.Process(target=_worker_main, args=(s, index, errors), daemon=False)
        p.start()
        return p

    procs: list[tuple[int, Any]] = []  # (worker index, process), replacements appended
    # A parent stopped with SIGTERM (a scheduler, `kill`) stops its workers as Ctrl-C does,
    # instead of leaving them to train on alone.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for i in range(n):
            procs.append((i, start(i)))
        failure, seen = None, set()
        while True:
            _poll(on_poll)
            try:
                failure = errors.get(timeout=2.0)
                break
            except queue.Empty:
                pass
            unreplaced = False
            for i, p in list(procs):
                if p.exitcode is None or p.exitcode >= 0 or p.pid in seen:
                    continue  # alive, or ended by itself (a stop with an error says why)
                seen.add(p.pid)
                if deaths.add(i, p):
                    procs.append((i, start(i)))
                else:
                    unreplaced = True
            if not any(p.is_alive() for _, p in procs):
                if unreplaced:  # the last to end died: its trial is left to a rerun
                    raise WorkerError(deaths.final())
                break
        if failure is None:
            failure = next((e for e in _drain(errors)), None)
        if failure is not None:
            index, reason, where = failure
            where = f" (traceback in {where})" if where else ""
            raise WorkerError(f"worker {index} {reason}{where}")
        for _, p in procs:
            p.join()
        bad = [i for i, p in procs if p.exitcode and p.pid not in seen]
        if bad:
            status = next(p.exitcode for i, p in procs if i == bad[0] and p.pid not in seen)
            raise WorkerError(f"worker(s) {bad} exited with status {status}")
        if deaths.count:
            print(deaths.summary(), file=sys.stderr)
    finally:
        _stop([p for _, p in procs])
        signal.signal(signal.SIGTERM, previous)


class _Deaths:
    """The workers that died in a run, and the replacements started for them (up to `limit`)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count, self.replaced = limit, 0, 0

    def add(self, index: int, p) -> bool:
        """Count worker `index`'s death (one line on stderr); True when a replacement may start."""
        self.count += 1
        how = _how_it_died(p.exitcode)
        line = f"worker {index} (pid {p.pid}) {how}; its running trial is failed and retried"
        ok = self.replaced < self.limit
        if ok:
            self.replaced += 1
            line += f"; started a new worker {index} (replacement {self.replaced} of {self.limit})"
        else:
            line += f"; no replacement left ({self.limit} used), the other workers go on"
        print(line, file=sys.stderr, flush=True)
        return ok

    def summary(self) -> str:
        return (
            f"{self.count} worker(s) died and {self.replaced} were replaced "
            f"(up to {self.limit} replacements in a run)"
        )

    def final(self) -> str:
        return f"every worker died ({self.summary()}); rerun the same command to finish the study"


def _how_it_died(exitcode: int) -> str:
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    hint = " (the kernel's OOM killer sends it when memory runs out)" if name == "SIGKILL" else ""
    return f"was killed by {name}{hint}"


def _poll(on_poll: Callable[[], None]) -> None:
    try:
        on_poll()
    except Exception as exc:
        if not is_transient(exc):
            raise
        # The progress shown reads the storage: while it is down, the workers retry, it waits.


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
