"""The one work loop of every process that trains the units of a shared study: a search's trials
(`explorer.search.workers`, its rungs and references) and an ablation's runs (`explorer.ablate`).

1. **Claim** (`Claims`): under the study's lock (`study_lock`), fail the running trials of dead or
   paused workers (`recover`: every `RECOVER_EVERY_S`, and always before answering that nothing
   is left to do), then take the next unit, in the few reads and writes the caller's `pick` does.
2. **Run** it with heartbeats (`run_claimed`; `explorer.store.liveness.heartbeat`: an RDB
   storage's own, or a journal's beat files beside it), so that a worker killed or paused past
   the grace is found by the next claim on any machine sharing the storage.
3. **Record** how it ended, once: its values; a failure of its own (``error: ...``, not retried);
   ``interrupted: worker stopped`` when the worker is stopped. Nothing is recorded when the
   storage is gone (the trial stays RUNNING and is recovered as a dead worker's), and the run is
   dropped (`TakenOver`) when another worker failed it as interrupted meanwhile (this one was
   paused or cut off past the grace: its retry is already queued).
4. **Retry** each interrupted unit once per interruption: a search's design is queued again by
   `recover` (``retry_of``, ``retry_reason``), an ablation's unit is simply claimable again.
   Failures of the unit's own are never retried. A unit whose runs keep ending with their worker
   dead is given up after `MAX_ATTEMPTS` such runs, or more when the study's other runs die as
   often (`explorer.store.stale.deaths_allowed`); other interruptions (a pause, a takeover, a
   stop) do not count, up to `MAX_RUNS` runs in all.

Because every claim and every recovery runs under the same lock, however many workers recover at
once, each interrupted trial is retried by exactly one of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..usage import first_line
from .liveness import heartbeat
from .locks import StorageUnavailable, study_lock
from .records import trial_attr
from .stale import (
    MAX_ATTEMPTS,
    MAX_RUNS,
    UNKNOWN_REASON,
    deaths_allowed,
    fail_dead,
    is_death,
    is_interrupted,
)

RECOVER_EVERY_S = 20.0  # how often a claim looks for dead workers' trials, besides before "done"
T = TypeVar("T")
Values = Sequence[float] | None


class TakenOver(Exception):
    """Another worker failed this unit as interrupted while it ran here (this worker was paused or
    cut off past the heartbeat grace); its retry is queued, so this run is dropped."""


class Claims:
    """Claims under one study lock (`lock`: the study whose lock it is), recovering the dead
    workers' trials of `studies` first when due. `requeue`: queue each interrupted trial's design
    again (a search; an ablation finds its units claimable again by itself). `reasons` keeps why
    each trial this process failed was interrupted, by (study name, trial number)."""

    def __init__(
        self, url: str, lock: str, studies: Sequence[optuna.Study], requeue: bool = True
    ) -> None:
        self.url, self.lock, self.studies, self.requeue = url, lock, list(studies), requeue
        self.last_recovery = -math.inf
        self.reasons: dict[tuple[str, int], str] = {}

    def __call__(self, pick: Callable[[], T | None]) -> T | None:
        """`pick()` under the lock, after a recovery when one is due; when it finds nothing and a
        recovery frees something, once more."""
        with study_lock(self.url, self.lock):
            if time.monotonic() - self.last_recovery > RECOVER_EVERY_S:
                self.recover()
            found = pick()
            if found is None and self.recover():
                found = pick()
        return found

    def recover(self) -> list[tuple[str, int]]:
        """Fail dead workers' trials (and queue their retries, with `requeue`); the (study, trial
        number) of each trial failed or queued now. Hold the lock."""
        self.last_recovery = time.monotonic()
        freed = []
        for study in self.studies:
            failed = fail_dead(study, self.url)
            self.reasons.update({(study.study_name, n): r for n, r in failed.items()})
            queued = recover(study, self.url, failed) if self.requeue else list(failed)
            freed += [(study.study_name, n) for n in queued]
        return freed


def recover(study: optuna.Study, url: str, failed: dict[int, str] | None = None) -> list[int]:
    """Queue every interrupted trial's design of `study` again, once, failing dead workers' trials
    first (or given them as `failed`, number -> reason). The numbers of the trials queued for a
    retry. Hold the study's lock."""
    reasons = fail_dead(study, url) if failed is None else failed
    trials = study.get_trials(deepcopy=False)
    retried = {trial_attr(t, "retry_of") for t in trials}
    queued = []
    for t in trials:
        if t.state != TrialState.FAIL or not is_interrupted(t) or t.number in retried:
            continue
        reason = reasons.get(t.number) or trial_attr(t, "fail_reason")
        if retry(study, t, reason, trials):
            queued.append(t.number)
    return queued


def retry(
    study: optuna.Study,
    trial: FrozenTrial,
    reason: str | None = None,
    trials: Sequence[FrozenTrial] | None = None,
) -> bool:
    """Queue a trial's design again as its retry, keeping its reference and rung tags. False when
    the trial has no design, the design has had `MAX_RUNS` runs, or its runs ended with their
    worker dead more often than `deaths_allowed` (from `trials`, the study's, read when not given)
    lets them. `reason`: why the trial was interrupted; one not known here (the trial was failed
    by a recovery elsewhere that queued no retry) counts as a death, so that a design given up
    stays given up while the other runs die no more often."""
    attempt = int(trial_attr(trial, "attempt") or 1)
    # Deaths of its runs so far (a retry made before they were counted: every earlier run).
    before = trial_attr(trial, "deaths")
    died = (attempt - 1 if before is None else int(before)) + (reason is None or is_death(reason))
    # A worker that died before sampling leaves no params, only the queued ones it was given.
    params = trial.params or trial.system_attrs.get("fixed_params")
    if attempt >= MAX_RUNS or not params:
        return False
    if died >= MAX_ATTEMPTS:
        trials = study.get_trials(deepcopy=False) if trials is None else trials
        if died >= deaths_allowed(trials, _runs_of(trials, trial)):
            return False
    attrs = {"attempt": attempt + 1, "deaths": died, "retry_of": trial.number,
             "retry_reason": reason or UNKNOWN_REASON}  # fmt: skip
    # Its tags: which reference it is, and a promotion's rung, parent and rank.
    for tag in ("reference", "rung", "parent", "promotion"):
        if trial_attr(trial, tag) is not None:
            attrs[tag] = trial_attr(trial, tag)
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return True


def _runs_of(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> set[int]:
    """The numbers of `trial` and the earlier runs it retries (its chain of ``retry_of``)."""
    by_number = {t.number: t for t in trials}
    chain: set[int] = set()
    at: FrozenTrial | None = trial
    while at is not None and at.number not in chain:
        chain.add(at.number)
        before = trial_attr(at, "retry_of")
        at = by_number.get(before) if isinstance(before, int) else None
    return chain


def run_claimed(
    work: Callable[[], tuple[TrialState, Values]],
    record: Callable[[TrialState, Values, str | None], T | None],
    storage: object,
    trial_id: int,
    url: str,
    interval: float | None,
) -> T:
    """Run a claimed unit: `work()` (its end state and values) with heartbeats every `interval`
    seconds, then `record(state, values, reason)` once, which answers None when another worker
    finished the trial meanwhile. Raises `TakenOver` then, or when a write of `work` found the
    trial failed by another; re-raises `work`'s own error after recording it, and a stop (Ctrl-C,
    the parent's SIGTERM) after recording the interruption; a `StorageUnavailable` is recorded by
    nobody (the trial stays RUNNING and is recovered as a dead worker's)."""
    try:
        with heartbeat(storage, trial_id, url, interval):
            state, values = work()
    except (TakenOver, optuna.exceptions.UpdateFinishedTrialError):
        raise TakenOver(f"trial id {trial_id} was failed by another worker") from None
    except StorageUnavailable:
        raise
    except Exception as exc:
        if record(TrialState.FAIL, None, f"error: {type(exc).__name__}: {first_line(exc)}") is None:
            raise TakenOver(f"trial id {trial_id} was failed by another worker") from None
        raise
    except BaseException:
        record(TrialState.FAIL, None, "interrupted: worker stopped")
        raise
    told = record(state, values, None)
    if told is None:
        raise TakenOver(f"trial id {trial_id} was failed by another worker")
    return told


def record_in(
    storage: object, trial_id: int
) -> Callable[[TrialState, Values, str | None], bool | None]:
    """A `run_claimed` recorder writing straight to the storage (no sampler to tell): the reason
    first, then the state; None when another worker finished the trial meanwhile."""

    def record(state: TrialState, values: Values, reason: str | None) -> bool | None:
        try:
            if reason is not None:
                storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            return None
        return True

    return record
