"""Finding the trials of dead workers, failing them with the reason, and retrying each once.

A trial is left RUNNING when its worker dies (killed, out of memory, a machine lost). Such a trial
is dead when its worker's lock file on this machine is free (`explorer.locking.worker_dead`) or,
on an RDB storage with heartbeats, when no heartbeat came within the grace period (any machine).
`recover` marks it failed with ``interrupted: ...`` and queues its design once more: exactly one
retry per interrupted trial (a retry cut short gets its own, up to `MAX_ATTEMPTS` runs); a trial that failed for a reason of its own (divergence, out of memory,
an error in the code, an invalid design) is not retried. Callers hold the study's lock
(`explorer.locking.study_lock`), so however many workers recover at once, each trial is retried by
exactly one of them.
"""

from __future__ import annotations

from datetime import datetime

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from .locking import worker_dead
from .records import trial_attr

# A design is tried at most this often: each interrupted run gets exactly one retry, so a design
# whose every run is cut short (a worker the kernel kills for memory, say) stops after five. Under
# bench/chaos.py (a worker killed every few seconds) three were not enough: two designs of 40
# were cut short three times running.
MAX_ATTEMPTS = 5
# A RUNNING trial with no worker id this long after it started was taken by a worker that died
# before writing anything (between Optuna's ask and its first write).
ORPHAN_GRACE_S = 600


def is_interrupted(trial: FrozenTrial) -> bool:
    """Whether a failed trial was cut short rather than failing for a reason of its own."""
    reason = trial_attr(trial, "fail_reason")
    return reason is None or str(reason).startswith("interrupted")


def _fail(storage: BaseStorage, trial: FrozenTrial, reason: str) -> bool:
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # it finished meanwhile
    return True


def _stale_ids(study: optuna.Study) -> set[int]:
    """Trial ids of RUNNING trials whose heartbeat is overdue (RDB storages with heartbeats)."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or not is_heartbeat_enabled(storage):
        return set()
    return set(storage._get_stale_trial_ids(study._study_id))


def fail_dead(study: optuna.Study, url: str) -> list[int]:
    """Mark the RUNNING trials of dead workers as failed; returns their numbers."""
    stale = _stale_ids(study)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial_attr(t, "worker")
        if t._trial_id in stale:
            reason = f"interrupted: no heartbeat from worker {worker or '?'}"
        elif isinstance(worker, str) and worker_dead(url, worker):
            reason = f"interrupted: worker {worker} died"
        elif worker is None and _started_before(t, ORPHAN_GRACE_S):
            # A worker writes its id first thing after taking a trial; one that never did died
            # in between, and nothing else would ever end its trial.
            reason = f"interrupted: no worker claimed it within {ORPHAN_GRACE_S // 60} minutes"
        else:
            continue
        if _fail(study._storage, t, reason):
            failed.append(t.number)
    return failed


def _started_before(trial: FrozenTrial, seconds: float) -> bool:
    start = trial.datetime_start
    if start is None:
        return False
    now = datetime.now(start.tzinfo) if start.tzinfo else datetime.now()
    return (now - start).total_seconds() > seconds


def recover(study: optuna.Study, url: str) -> list[int]:
    """Fail dead workers' trials and queue every interrupted trial's design again, once.

    Returns the numbers of the trials queued for a retry. Hold the study's lock while calling.
    """
    fail_dead(study, url)
    trials = study.get_trials(deepcopy=False)
    retried = {trial_attr(t, "retry_of") for t in trials}
    queued = []
    for t in trials:
        if t.state != TrialState.FAIL or not is_interrupted(t) or t.number in retried:
            continue
        if retry(study, t):
            queued.append(t.number)
    return queued


def retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue a trial's design again as its retry, keeping its reference tag; False when the
    design has had `MAX_ATTEMPTS` runs or has no design."""
    attempt = int(trial_attr(trial, "attempt") or 1)
    # A worker that died before sampling leaves no params, only the queued ones it was given.
    params = trial.params or trial.system_attrs.get("fixed_params")
    if attempt >= MAX_ATTEMPTS or not params:
        return False
    attrs = {"attempt": attempt + 1, "retry_of": trial.number}
    # Its tags: which reference it is, and a promotion's rung, parent and rank.
    for tag in ("reference", "rung", "parent", "promotion"):
        if trial_attr(trial, tag) is not None:
            attrs[tag] = trial_attr(trial, tag)
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return True
