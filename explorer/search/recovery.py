"""Finding the trials of dead workers, failing them, and retrying each once.

A trial is left RUNNING when its worker dies (killed, out of memory, a machine lost) or stalls
(paused, cut off from the database). Such a trial is dead when its worker's lock file on this
machine is free (`explorer.store.liveness.worker_dead`), when no heartbeat came within the grace
period (RDB storages with heartbeats, any machine; `optuna.storages.fail_stale_trials`), or when
no worker ever claimed it. `recover` fails it, in one write of its state (so a trial that completes
meanwhile stays complete), and queues its design once more with the reason on the retry
(``retry_reason``): exactly one retry per interrupted trial (a retry cut short gets its own, up to
`MAX_ATTEMPTS` runs). A trial that failed for a reason of its own (divergence, out of memory, an
error in the code, an invalid design) is not retried. Callers hold the study's lock
(`explorer.store.study_lock`), so however many workers recover at once, each trial is retried by
exactly one of them.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..store.records import trial_attr
from ..store.stale import MAX_ATTEMPTS, fail_dead, is_interrupted


def recover(study: optuna.Study, url: str) -> list[int]:
    """Fail dead workers' trials and queue every interrupted trial's design again, once.

    Returns the numbers of the trials queued for a retry. Hold the study's lock while calling.
    """
    reasons = fail_dead(study, url)
    trials = study.get_trials(deepcopy=False)
    retried = {trial_attr(t, "retry_of") for t in trials}
    queued = []
    for t in trials:
        if t.state != TrialState.FAIL or not is_interrupted(t) or t.number in retried:
            continue
        reason = reasons.get(t.number) or trial_attr(t, "fail_reason") or "interrupted"
        if retry(study, t, reason):
            queued.append(t.number)
    return queued


def retry(study: optuna.Study, trial: FrozenTrial, reason: str = "interrupted") -> bool:
    """Queue a trial's design again as its retry, keeping its reference and rung tags; False when
    the design has had `MAX_ATTEMPTS` runs or has no design."""
    attempt = int(trial_attr(trial, "attempt") or 1)
    # A worker that died before sampling leaves no params, only the queued ones it was given.
    params = trial.params or trial.system_attrs.get("fixed_params")
    if attempt >= MAX_ATTEMPTS or not params:
        return False
    attrs = {"attempt": attempt + 1, "retry_of": trial.number, "retry_reason": reason}
    # Its tags: which reference it is, and a promotion's rung, parent and rank.
    for tag in ("reference", "rung", "parent", "promotion"):
        if trial_attr(trial, tag) is not None:
            attrs[tag] = trial_attr(trial, tag)
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return True
