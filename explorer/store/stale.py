"""The running trials of dead workers: finding them and failing them, in one write each.

A trial is left RUNNING when its worker dies (killed, out of memory, a machine lost) or stalls
(paused, cut off from the database). Such a trial is dead when its worker's lock file on this
machine is free (`explorer.store.liveness.worker_dead`), when no heartbeat came within the grace
period (RDB storages with heartbeats, any machine; `optuna.storages.fail_stale_trials`; a
journal's beat files, `explorer.store.liveness.silent_beat`), or when
no worker ever claimed it (no ``worker`` attribute `ORPHAN_GRACE_S` after it started). The search
(`explorer.store.work`) and the ablation (`explorer.ablate`) retry what this fails; callers
hold the study's lock.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from .liveness import beat_file, silent_beat, worker_alive, worker_dead
from .optuna_api import storage_of, trial_id
from .records import trial_attr

# A design (of a search, or an ablation run) is given up after this many runs that ended with its
# worker dead (the OOM killer, say, every time it trains it), or more where the study's other runs
# die often too (`deaths_allowed`). Interruptions the design cannot have caused (a pause, a
# takeover, a stop, a database restart) do not count, up to `MAX_RUNS` runs in all.
MAX_ATTEMPTS = 5
MAX_RUNS = 30
# `deaths_allowed` gives up a design no likelier to die than the study's other runs with at most
# this chance (deaths as independent events at the rate the other runs died).
GIVE_UP_CHANCE = 1e-3
# Why a retried run stopped when its recovery happened elsewhere and left no reason on it.
UNKNOWN_REASON = "interrupted: failed elsewhere, why is not known (counted as died)"
# A RUNNING trial with no worker id this long after it started was taken by a worker that died
# before writing anything (between its claim and its first write).
ORPHAN_GRACE_S = 600


def is_interrupted(trial: FrozenTrial) -> bool:
    """Whether a failed trial was cut short rather than failing for a reason of its own."""
    reason = trial_attr(trial, "fail_reason")
    return reason is None or str(reason).startswith("interrupted")


def is_death(reason: object) -> bool:
    """Whether an interruption's reason says the run's worker (or training process) died, or may
    have died (silent on another machine), while it trained: the one kind of interruption a design
    can cause itself (the OOM killer). A stop, a paused worker alive on this machine and a trial no
    worker claimed are not."""
    text = str(reason or "")
    return text.startswith("interrupted") and "died" in text


def deaths(
    trials: Sequence[FrozenTrial], reasons: Mapping[int, str] | None = None
) -> dict[int, bool]:
    """Trial number -> whether its run ended with its worker dead, for the failed trials among
    `trials`, by why it was interrupted: its own ``fail_reason``, its retry's ``retry_reason`` (a
    recovery writes the reason on the retry only), or `reasons` (trial number -> why this process
    failed it). An interrupted trial whose reason is known nowhere (failed by a recovery elsewhere
    that queued no retry: a design given up) counts as a death."""
    reasons = reasons or {}
    retry_reasons = {
        trial_attr(t, "retry_of"): trial_attr(t, "retry_reason")
        for t in trials
        if trial_attr(t, "retry_of") is not None
    }
    out = {}
    for t in trials:
        if t.state != TrialState.FAIL:
            continue
        why = trial_attr(t, "fail_reason") or retry_reasons.get(t.number) or reasons.get(t.number)
        out[t.number] = is_interrupted(t) and (why is None or is_death(why))
    return out


def deaths_allowed(trials: Sequence[FrozenTrial], mine: Iterable[int] = ()) -> int:
    """How many of a design's runs may end with their worker dead before it is given up:
    `MAX_ATTEMPTS`, or more when the study's other runs (all of `trials` but the design's own,
    `mine`) die often, as when workers are killed from outside. Deaths are taken as events at the
    rate the other runs died per second of training; a run as long as the study's longest finished
    one is cut with chance q, and the design is kept until q ** deaths falls under
    `GIVE_UP_CHANCE`. A design whose runs kill their worker in a study where others' do not is
    given up after `MAX_ATTEMPTS` deaths."""
    own = set(mine)
    others = [t for t in trials if t.number not in own]
    died = sum(deaths(others).values())
    seconds, longest = 0.0, 0.0
    for t in others:
        if t.datetime_start is None or t.datetime_complete is None:
            continue
        length = (t.datetime_complete - t.datetime_start).total_seconds()
        seconds += max(length, 0.0)
        if t.state == TrialState.COMPLETE:
            longest = max(longest, length)
    if died == 0 or seconds <= 0 or longest <= 0:
        return MAX_ATTEMPTS
    q = min(1.0 - math.exp(-died / seconds * longest), 0.9)
    if q <= 0:
        return MAX_ATTEMPTS
    return max(MAX_ATTEMPTS, math.ceil(math.log(GIVE_UP_CHANCE) / math.log(q)))


def _fail(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Fail a running trial in one write; False when it finished meanwhile."""
    try:
        return storage_of(study).set_trial_state_values(trial_id(trial), TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def fail_dead(study: optuna.Study, url: str) -> dict[int, str]:
    """Fail the RUNNING trials of dead workers; returns why, by trial number."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # overdue heartbeats, on an RDB storage
    now = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    failed = {}
    for t in running:
        worker = trial_attr(t, "worker")
        if now.get(t.number) != TrialState.RUNNING:
            if now.get(t.number) == TrialState.FAIL:
                failed[t.number] = _silent(url, worker)
            continue
        if isinstance(worker, str) and worker_dead(url, worker):
            reason = f"interrupted: worker {worker} died"
        elif (silent := silent_beat(url, trial_id(t))) is not None:
            # A journal's heartbeat (a file the worker touches): paused, hung or cut off.
            reason = _silent(url, worker, silent)
        elif worker is None and _started_before(t, ORPHAN_GRACE_S):
            # A worker writes its id first thing after taking a trial; one that never did died
            # in between, and nothing else would ever end its trial.
            reason = f"interrupted: no worker claimed it within {ORPHAN_GRACE_S // 60} minutes"
        else:
            continue
        if _fail(study, t):
            failed[t.number] = reason
            with contextlib.suppress(OSError):  # a killed worker's beat file, left behind
                beat_file(url, trial_id(t)).unlink()
    return failed


def _silent(url: str, worker: object, seconds: float | None = None) -> str:
    """Why a trial whose heartbeats stopped was failed: its worker died, is alive here (paused or
    cut off: not the design's doing), or is on another machine and may have died."""
    silent = f"interrupted: no heartbeat from worker {worker or '?'}"
    if seconds is not None:
        silent += f" for {seconds:.0f} s"
    if isinstance(worker, str) and worker_dead(url, worker):
        return f"interrupted: worker {worker} died"
    if isinstance(worker, str) and worker_alive(url, worker):
        return f"{silent}; alive, paused or cut off"
    return f"{silent}; it may have died"


def _started_before(trial: FrozenTrial, seconds: float) -> bool:
    start = trial.datetime_start
    if start is None:
        return False
    now = datetime.now(start.tzinfo) if start.tzinfo else datetime.now()
    return (now - start).total_seconds() > seconds
