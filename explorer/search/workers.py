"""The worker loop: claim a trial (`explorer.search.next_work`), run it (`explorer.search.trial`)
with heartbeats and tell Optuna how it ended (both through the one work loop, `explorer.store.work`), and stop when the study is done or when failures show
that going on would only fail more.

Each worker proposes with its own sampler seed, stored on its trials: the first worker of a study
gets the study's seed (a one-worker run repeats exactly), later ones other seeds. A worker whose
trial another worker failed as interrupted (it was paused or cut off past the heartbeat grace
period) drops that trial, whose retry is already queued, says so in one line and goes on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import optuna
import torch

from ..store import (
    WORKERS_STARTED_ATTR,
    StorageUnavailable,
    TakenOver,
    TrialRecord,
    WorkerToken,
    default_storage,
    open_storage,
    run_claimed,
    rung_studies,
    study_lock,
    trial_attr,
    trial_id,
)
from ..training import budgets, devices, metrics, trainer
from ..training import data as data_mod
from .next_work import Claimer, Done, Wait
from .prescreen import Prescreener
from .settings import SearchSettings
from .study import open_search_study, sampler_for
from .trial import TrialFailed, TrialRunner

SEED_STRIDE = 1_000_003  # a prime: worker n's sampler seed is seed + n * stride
WAIT_S = 2.0  # how often a worker with nothing to do looks again while others still train


class WorkerError(RuntimeError):
    """A worker stopped with an error, or gave up; the message is one line."""


class Stopped(BaseException):
    """Raised in a worker process asked to stop (SIGTERM from the parent)."""


# What to change, by the start of a failed trial's reason.
_HINTS = {
    "diverged": "every design diverges under this budget: search with a gentler budget (a new "
    "--study with another --budget)",
    "out of memory": "the designs do not fit in memory: a smaller --width, a --max-params limit "
    "or fewer --workers-per-gpu",
    "invalid design": "the space proposes designs the network cannot build",
    "error": "an error in the code or the install; the worker's log has the traceback",
}


@dataclass
class FailureBound:
    """When a worker gives up instead of failing for ever: after `in_a_row` failed trials in a
    row, when `share` of its last `window` trials failed, after `errors_in_a_row` trials in a row
    failed with an error of the code, or after `skips_in_a_row` designs in a row were over the
    study's limits. Interrupted trials (retried elsewhere) do not count."""

    in_a_row: int = 10
    window: int = 40
    share: float = 0.75
    errors_in_a_row: int = 3
    skips_in_a_row: int = 300
    _recent: deque = field(default_factory=deque)
    _failed: int = 0
    _errors: int = 0
    _skips: int = 0

    def add(self, record: TrialRecord) -> str | None:
        """Count one finished trial; the line saying why to stop, or None to go on."""
        failed = record.state == "FAIL" and not (record.fail_reason or "").startswith("interrupted")
        if record.state == "FAIL" and not failed:
            return None
        self._failed = self._failed + 1 if failed else 0
        self._errors = self._errors + 1 if failed and _kind(record) == "error" else 0
        self._skips = self._skips + 1 if record.skipped else 0
        self._recent.append(failed)
        while len(self._recent) > self.window:
            self._recent.popleft()
        last = record.fail_reason or ""
        if self._errors >= self.errors_in_a_row:
            return f"{self._errors} trials in a row failed with an error, the last with: {last}"
        if self._failed >= self.in_a_row:
            return (
                f"{self._failed} trials in a row failed, the last with: {last}; "
                f"{_HINTS.get(_kind(record), 'see the trials failure reasons')}"
            )
        if len(self._recent) == self.window and sum(self._recent) >= self.share * self.window:
            return (
                f"{sum(self._recent)} of the last {self.window} trials failed, the last with: "
                f"{last}; {_HINTS.get(_kind(record), 'see the trials failure reasons')}"
            )
        if self._skips >= self.skips_in_a_row:
            return (
                f"{self._skips} designs in a row were over the study's limits ({record.skipped}); "
                "the limits leave too little of the space: loosen them (a new --study)"
            )
        return None


def _kind(record: TrialRecord) -> str:
    return (record.fail_reason or "").split(":", 1)[0].strip()


def _claim_sampler_seed(study: optuna.Study, base: int) -> int:
    """This worker's sampler seed: the study's seed for its first worker, then others (hold the
    study's lock)."""
    n = int(study.user_attrs.get(WORKERS_STARTED_ATTR) or 0)
    study.set_user_attr(WORKERS_STARTED_ATTR, n + 1)
    return base + n * SEED_STRIDE


@contextlib.contextmanager
def _gives_up_on_storage() -> Iterator[None]:
    """A storage that kept failing for `TRANSIENT_S` (each call is retried that long) ends the
    worker with one line that names it, and no traceback."""
    try:
        yield
    except StorageUnavailable as exc:
        raise WorkerError(f"stopped: {exc}") from None


@_gives_up_on_storage()
def run_worker(
    s: SearchSettings,
    worker_index: int = 0,
    n_trials: int | None = None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    in_child: bool = False,
) -> None:
    """Run trials in this process until the study has `s.trials` search trials (or `n_trials`
    were run here, or the next trial could end past the run's deadline, `s.until`, or `s.timeout`
    after this worker started: `expected_trial_s`). Raises `WorkerError` when it gives up
    (`FailureBound`, or a storage down for `explorer.store.locks.TRANSIENT_S`)."""
    # Failed trials are reported by our own one-line log (trial_line), not by Optuna's tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    layout = devices.plan_workers(s.device, s.workers or 1, s.workers_per_gpu)
    workers = len(layout)
    url = s.storage or default_storage()
    device = devices.resolve_device(layout[worker_index % workers])
    # Before anything is timed: the references' latency is measured under the same settings.
    backend = trainer.configure_backend(device, s.deterministic)
    torch.set_num_threads(devices.cpu_threads_per_worker(workers))
    budget = s.budget or budgets.default_budget(device, *s.new_rungs)
    # A database that restarts or drops a connection is waited for (explorer.store.locks).
    storage = open_storage(url, heartbeat=s.heartbeat_s, retry=True)
    study, config = open_search_study(s, storage, url, budget)
    token = WorkerToken(url)
    try:
        with study_lock(url, study.study_name):
            seed = _claim_sampler_seed(study, config.train_seed)
        rungs = rung_studies(storage, study, config)
        # The sampler proposes at the bottom rung and learns from that rung's values only; the
        # rungs above get only queued designs (promotions, references), whose params are fixed.
        for rung, rung_study in rungs.items():
            rung_study.sampler = (
                sampler_for(config, seed) if rung == 0 else optuna.samplers.RandomSampler(seed=seed)
            )
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
        claimer = Claimer(rungs, config, url, s.trials, prescreener)
        bound = FailureBound()
        until = s.until or (time.time() + s.timeout if s.timeout is not None else None)
        ran, parent = 0, os.getppid()
        while n_trials is None or ran < n_trials:
            if in_child and os.getppid() != parent:
                break  # the search that started this process is gone: stop after a trial
            if until is not None:  # a deadline: start no trial expected to end past it
                if time.time() + (expected_trial_s(rungs) or 0.0) > until:
                    break
            claim = claimer()
            if isinstance(claim, Done):
                break
            if isinstance(claim, Wait):
                time.sleep(WAIT_S)
                continue
            frozen = _run_trial(
                rungs[claim.rung], claim.trial, runner, storage, claim.rung, url, s.heartbeat_s
            )
            ran += 1
            if frozen is None:
                continue
            if on_trial is not None:
                on_trial(study, frozen)
            stop = bound.add(TrialRecord.from_trial(frozen))
            if stop is not None:
                raise WorkerError(f"stopped: {stop}")
    finally:
        token.release()


def expected_trial_s(rungs: Mapping[int, optuna.Study]) -> float | None:
    """How long the next trial may take, from those finished so far: the longest wall time of
    the trained ones at every rung (designs skipped over a limit and copies of a trained design
    take none), since the next design may be as slow as any before it and a deadline is kept,
    not met on average; None before one has finished."""
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    times = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for study in rungs.values()
        for t in study.get_trials(deepcopy=False, states=finished)
        if t.datetime_start and t.datetime_complete
        and not trial_attr(t, "skipped") and trial_attr(t, "duplicate_of") is None
    ]  # fmt: skip
    return max(times) if times else None


def _prescreener(s, config, runner, data, device, workers):
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


def _run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    runner: TrialRunner,
    storage: optuna.storages.BaseStorage,
    rung: int | None = None,
    url: str | None = None,
    heartbeat_s: float | None = None,
) -> optuna.trial.FrozenTrial | None:
    """Run one trial (at `rung`, default the top) through the one work loop's `run_claimed`
    (heartbeats, its end told to Optuna once); None when another worker took it over meanwhile."""

    def work() -> tuple[optuna.trial.TrialState, tuple[float, ...] | None]:
        try:
            return optuna.trial.TrialState.COMPLETE, runner(trial, rung)
        except optuna.TrialPruned:
            return optuna.trial.TrialState.PRUNED, None
        except TrialFailed:  # its reason is written
            return optuna.trial.TrialState.FAIL, None

    try:
        return run_claimed(
            work,
            lambda state, values, reason: _tell(study, trial, state, values, reason),
            storage, trial_id(trial), url, heartbeat_s,
        )  # fmt: skip
    except TakenOver:
        return _dropped(trial)


def _dropped(trial: optuna.Trial) -> None:
    print(
        f"trial {trial.number} of {trial.study.study_name!r}: another worker failed it as "
        "interrupted (no heartbeat from this one within the grace period) and queued its retry; "
        "this run of it is dropped",
        file=sys.stderr,
    )


def _tell(study, trial, state, values, reason: str | None = None):
    """Tell Optuna how the trial ended; None when another worker failed it meanwhile."""
    try:
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
        return study.tell(trial, values if state == optuna.trial.TrialState.COMPLETE else None,
                          state=state)  # fmt: skip
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
