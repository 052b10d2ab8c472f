"""Running the search's trials: one worker in this process, or several worker processes.

A worker claims its trials one at a time under the study's lock (`explorer.locking`): it first
recovers dead workers' trials (`explorer.recovery`) at every rung, then takes a queued trial (a
reference, a retry or a promotion; the highest rung first), else promotes a design that has
earned it (`explorer.rungs`), else asks the bottom rung's sampler for a new design while the
study holds fewer than the requested number of search trials. With nothing to do while designs
still train below the top rung (their results may promote them), it looks again every few
seconds; otherwise it stops. So however many workers run, on however many machines, the study
ends with exactly the requested number of search trials. Each worker proposes with its own
sampler seed, stored on its trials: the first worker of a study gets the study's seed (a one-worker
run repeats exactly), later ones other seeds.

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
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from . import devices
from .locking import WorkerToken, check_journal_host, study_lock
from .objective import TrialFailed, TrialRunner
from .records import WORKERS_STARTED_ATTR, trial_attr
from .recovery import recover
from .rungs import lower_running, next_promotion, promote, rung_studies
from .settings import SearchSettings
from .storage import STUDIES_DIR, default_storage, is_journal, open_storage
from .study import open_search_study, sampler_for, search_trials_taken, waiting_trials
from .usage import UsageError

MAX_ERRORS_IN_A_ROW = 3
MAX_SKIPS_IN_A_ROW = 300  # proposals over the limits without one trained design between
SEED_STRIDE = 1_000_003  # a prime: worker n's sampler seed is seed + n * stride
WAIT = "wait"
WAIT_S = 2.0  # how often a worker with nothing to do looks again while others still train


class WorkerError(RuntimeError):
    """A worker process stopped with an error; the message is one line."""


class Stopped(BaseException):
    """Raised in a worker process asked to stop (SIGTERM from the parent)."""


def single_process_storage(url: str) -> bool:
    """SQLite has no row locks: Optuna's storage is not safe for several processes on it."""
    return url.startswith("sqlite")


def log_dir(url: str) -> Path:
    """Where worker tracebacks are written: beside a journal or SQLite file, else ``studies/``."""
    if is_journal(url):
        return Path(url).expanduser().parent / "logs"
    if url.startswith("sqlite:///"):
        return Path(url.split(":///", 1)[1]).expanduser().parent / "logs"
    return STUDIES_DIR / "logs"


def _claim_sampler_seed(study: optuna.Study, base: int) -> int:
    """This worker's sampler seed: the study's seed for its first worker, then others (hold the
    study's lock)."""
    n = int(study.user_attrs.get(WORKERS_STARTED_ATTR) or 0)
    study.set_user_attr(WORKERS_STARTED_ATTR, n + 1)
    return base + n * SEED_STRIDE


def run_worker(
    s: SearchSettings,
    worker_index: int = 0,
    n_trials: int | None = None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    in_child: bool = False,
) -> None:
    """Run trials in this process until the study has `s.trials` search trials (or `n_trials`
    were run here, or the timeout passed)."""
    import torch

    from . import data as data_mod
    from . import train

    # Failed trials are reported by our own one-line log (trial_line), not by Optuna's tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from . import metrics

    layout = devices.plan_workers(s.device, s.workers or 1, s.workers_per_gpu)
    workers = len(layout)
    url = s.storage or default_storage()
    device = train.resolve_device(layout[worker_index % workers])
    # Before anything is timed: the references' latency is measured under the same settings.
    backend = train.configure_backend(device, s.deterministic)
    torch.set_num_threads(devices.cpu_threads_per_worker(workers))
    budget = s.budget or train.default_budget(device, *s.new_rungs)
    storage = open_storage(url, heartbeat=60)
    study, config = open_search_study(s, storage, url, budget)
    token = WorkerToken(url)
    try:
        with study_lock(url, f"study:{study.study_name}"):
            seed = _claim_sampler_seed(study, config.train_seed)
        studies = rung_studies(storage, study, config)
        # The sampler proposes at the bottom rung and learns from that rung's values only; the
        # rungs above get only queued designs (promotions, references), whose params are fixed.
        studies[0].sampler = sampler_for(config, seed)
        for upper in studies[1:]:
            upper.sampler = optuna.samplers.RandomSampler(seed=seed)
        data = data_mod.load_dataset(config.dataset, data_dir=s.data_dir, seed=config.split_seed)
        info = metrics.device_info(device) | {
            "backend": backend,
            "latency_method": metrics.latency_method(device),
        }
        runner = TrialRunner(s, config, data.on(device), device, url, token.id, info)
        runner.sampler_seed = seed
        prescreener = (
            _prescreener(s, config, runner, data, device, workers) if s.prescreen > 1 else None
        )
        start, ran = time.time(), 0
        parent = os.getppid()
        while n_trials is None or ran < n_trials:
            if in_child and os.getppid() != parent:
                break  # the search that started this process is gone: stop after a trial
            if s.timeout is not None and time.time() - start > s.timeout:
                break
            claim = _claim(studies, config, url, s.trials, prescreener)
            if claim is None:
                break
            if claim == WAIT:
                time.sleep(WAIT_S)
                continue
            rung, trial = claim
            frozen = _run_trial(studies[rung], trial, runner, rung)
            ran += 1
            if on_trial is not None:
                on_trial(study, frozen)
            if runner.skips_in_a_row >= MAX_SKIPS_IN_A_ROW:
                raise WorkerError(
                    f"{runner.skips_in_a_row} designs in a row were over the study's limits "
                    f"({trial_attr(frozen, 'skipped')}); the limits leave too little of the "
                    "space: loosen them (a new --study)"
                )
            if runner.errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
                raise WorkerError(
                    f"{runner.errors_in_a_row} trials in a row failed with an error, the last "
                    f"with: {trial_attr(frozen, 'fail_reason')}"
                )
    finally:
        token.release()


def _prescreener(s, config, runner, data, device, workers):
    from .proxies import Prescreener

    return Prescreener(
        m=s.prescreen,
        network=runner.network,
        make_sampler=lambda n: sampler_for(config, runner.sampler_seed + n),
        data=data,
        device=device,
        proxy=s.proxy,
        seed=config.train_seed,
        target=s.trials,
        max_waiting=workers,
    )


def _claim(
    studies: list[optuna.Study], config, url: str, target: int, prescreener=None
) -> tuple[int, optuna.Trial] | str | None:
    """The next trial this worker runs, as (rung, trial); `WAIT` when there is nothing to do now
    but a design still training below the top rung may be promoted; None when the study has all
    it needs. `studies` are the study's rungs, bottom first (one for a single-budget study).

    In order: a queued trial (a reference, a retry or a promotion), highest rung first; a design
    to promote (`explorer.rungs.next_promotion`), highest rung first; a new design at the bottom
    rung while it has fewer than `target` search trials."""
    top = studies[-1]
    with study_lock(url, f"study:{top.study_name}"):
        for rung_study in studies:
            recover(rung_study, url)
        for rung in reversed(range(len(studies))):
            if waiting_trials(studies[rung]):
                return rung, studies[rung].ask()
        found = next_promotion(studies, config) if len(studies) > 1 else None
        if found is not None:
            rung, promotion = found
            promote(studies[rung], rung, promotion)
            return rung, studies[rung].ask()
        bottom = studies[0]
        if search_trials_taken(bottom) < target:
            if prescreener is not None:
                prescreener(bottom)
            return 0, bottom.ask()
        return WAIT if len(studies) > 1 and lower_running(studies) else None


def _run_trial(
    study: optuna.Study, trial: optuna.Trial, runner: TrialRunner, rung: int | None = None
) -> optuna.trial.FrozenTrial:
    """Run one trial (at `rung`, default the top) with heartbeats and tell Optuna how it ended."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    state, values = optuna.trial.TrialState.FAIL, None
    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):
            values = runner(trial, rung)
        state = optuna.trial.TrialState.COMPLETE
    except optuna.TrialPruned:
        state = optuna.trial.TrialState.PRUNED
    except TrialFailed:
        pass
    except (KeyboardInterrupt, Stopped):
        _tell(study, trial, optuna.trial.TrialState.FAIL, None, "interrupted: worker stopped")
        raise
    except Exception as exc:  # the runner records its own errors; this is the worker's
        from .usage import first_line

        reason = f"error: {type(exc).__name__}: {first_line(exc)}"
        _tell(study, trial, optuna.trial.TrialState.FAIL, None, reason)
        raise
    return _tell(study, trial, state, values)


def _tell(study, trial, state, values, reason: str | None = None) -> optuna.trial.FrozenTrial:
    try:
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
        return study.tell(trial, values if state == optuna.trial.TrialState.COMPLETE else None,
                          state=state)  # fmt: skip
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker judged ours dead (a stalled machine) and failed the trial meanwhile.
        return study._storage.get_trial(trial._trial_id)


# --------------------------------------------------------------------------------------------
# Several processes


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
    except Exception as exc:  # noqa: BLE001 - reported by the parent, traceback kept in a file
        # From here a stop just ends the process: when two workers fail at once, the parent
        # stops the second while it reports, and that must not print a traceback of its own.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from .usage import first_line

        errors.put((index, f"{type(exc).__name__}: {first_line(exc)}", write_traceback(s, index)))
        sys.exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_processes(s: SearchSettings, on_poll: Callable[[], None]) -> None:
    """Run `s.workers` worker processes until the study is done; raises `WorkerError` (after
    stopping the others) when one stops with an error."""
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(s, i, errors), daemon=False)
        for i in range(s.workers or 1)
    ]
    for p in procs:
        p.start()
    # A parent stopped with SIGTERM (a scheduler, `kill`) stops its workers as Ctrl-C does,
    # instead of leaving them to train on alone.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    failure = None
    try:
        while any(p.is_alive() for p in procs):
            on_poll()
            try:
                failure = errors.get(timeout=2.0)
                break
            except queue.Empty:
                pass
        if failure is None:
            failure = next((e for e in _drain(errors)), None)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failure is not None:
        _stop(procs)
        index, reason, where = failure
        raise WorkerError(f"worker {index} stopped: {reason} (traceback in {where})")
    for p in procs:
        p.join()
    bad = [i for i, p in enumerate(procs) if p.exitcode]
    if bad:
        raise WorkerError(f"worker(s) {bad} exited with status {procs[bad[0]].exitcode}")


def _drain(q) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except (queue.Empty, OSError, ValueError):
            return out


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: the worker fails its running trial as interrupted
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join(5)


def plan(s: SearchSettings, device: Any) -> tuple[SearchSettings, list[str]]:
    """The settings this machine runs with (workers resolved), and notes to print."""
    url = s.storage or default_storage()
    notes = [n for n in [check_journal_host(url)] if n]
    try:
        workers = len(devices.plan_workers(s.device, s.workers, s.workers_per_gpu))
    except ValueError as exc:
        raise UsageError(f"--device/--workers: {exc}") from None
    if workers > 1 and single_process_storage(url):
        notes.append(
            f"note: SQLite is not safe for several worker processes; running 1 worker. For "
            f"several, use a journal file (--storage {Path(url.split(':///', 1)[-1]).with_suffix('.journal')}) "
            "or PostgreSQL"
        )
        workers = 1
    return dataclasses.replace(s, workers=workers), notes
