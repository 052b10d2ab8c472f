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
import warnings
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from .liveness import beat_file, silent_beat, worker_dead
from .optuna_api import storage_of, trial_id
from .records import trial_attr

# A design (of a search, or an ablation run) is tried at most this often: each interrupted run
# gets exactly one retry, so a design whose every run is cut short (a worker the kernel kills for
# memory, say) stops after five. Under bench/chaos.py (a worker killed every few seconds) three
# were not enough: two designs of 40 were cut short three times running.
MAX_ATTEMPTS = 5
# A RUNNING trial with no worker id this long after it started was taken by a worker that died
# before writing anything (between its claim and its first write).
ORPHAN_GRACE_S = 600


def is_interrupted(trial: FrozenTrial) -> bool:
    """Whether a failed trial was cut short rather than failing for a reason of its own."""
    reason = trial_attr(trial, "fail_reason")
    return reason is None or str(reason).startswith("interrupted")


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
                failed[t.number] = f"interrupted: no heartbeat from worker {worker or '?'}"
            continue
        if isinstance(worker, str) and worker_dead(url, worker):
            reason = f"interrupted: worker {worker} died"
        elif (silent := silent_beat(url, trial_id(t))) is not None:
            # A journal's heartbeat (a file the worker touches): paused, hung or cut off.
            reason = f"interrupted: no heartbeat from worker {worker or '?'} for {silent:.0f} s"
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


def _started_before(trial: FrozenTrial, seconds: float) -> bool:
    start = trial.datetime_start
    if start is None:
        return False
    now = datetime.now(start.tzinfo) if start.tzinfo else datetime.now()
    return (now - start).total_seconds() > seconds
