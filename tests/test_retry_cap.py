"""When an interrupted design is given up (`explorer.store.stale.deaths_allowed`): only runs that
ended with their worker dead count, and more of them are allowed when the study's other runs die
as often, so that an unlucky design under random kills is rarely lost."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from explorer.evaluate.runs import collect
from explorer.store import MAX_ATTEMPTS, MAX_RUNS, WorkerToken, deaths_allowed, fail_dead, recover
from explorer.store.stale import GIVE_UP_CHANCE, is_death
from explorer.store.work import retry
from tests.helpers import timed_trial

T0 = datetime(2026, 1, 1)
DIED = "interrupted: worker w died"
PAUSED = "interrupted: no heartbeat from worker w for 9 s; alive, paused or cut off"


def _trial(number: int, seconds: float, state: TrialState, **attrs) -> FrozenTrial:
    return timed_trial(number, T0 + timedelta(seconds=1000 * number), seconds, state, **attrs)


def _history(rng: random.Random, runs: int, rate: float, length: float) -> list[FrozenTrial]:
    """A study's runs of `length` seconds, each cut at a random time by a kill arriving at `rate`
    per second (exponential waiting times)."""
    out = []
    for n in range(runs):
        cut = rng.expovariate(rate)
        if cut < length:
            out.append(_trial(n, cut, TrialState.FAIL, fail_reason=DIED))
        else:
            out.append(_trial(n, length, TrialState.COMPLETE))
    return out


def test_only_deaths_count_and_reasons_say_which():
    assert is_death(DIED)
    assert is_death("interrupted: its training process died")
    assert is_death("interrupted: no heartbeat from worker w; it may have died")  # another machine
    assert not is_death(PAUSED)
    assert not is_death("interrupted: worker stopped")
    assert not is_death("interrupted: no worker claimed it within 10 minutes")
    assert not is_death("error: RuntimeError: died")  # a failure of its own, not an interruption
    assert not is_death(None)


def test_a_design_that_kills_its_worker_where_others_do_not_stops_at_max_attempts():
    others = [_trial(n, 60, TrialState.COMPLETE) for n in range(20)]
    own = [_trial(20 + n, 5, TrialState.FAIL, fail_reason=DIED) for n in range(2 * MAX_ATTEMPTS)]
    assert deaths_allowed(others + own, {t.number for t in own}) == MAX_ATTEMPTS
    # Its own deaths do not raise its allowance: only the other runs' rate does.
    assert deaths_allowed(others + own, set()) > MAX_ATTEMPTS


def test_the_allowance_grows_with_how_often_the_other_runs_die():
    rng = random.Random(0)
    rare = deaths_allowed(_history(rng, 200, 1 / 2000, 60), set())
    often = deaths_allowed(_history(rng, 200, 1 / 60, 60), set())
    assert rare == MAX_ATTEMPTS
    # About 63% of 60-s runs die at one kill a minute: log(1e-3) / log(0.63) is about 15.
    assert 12 <= often <= 20, often


def test_an_unlucky_design_is_given_up_at_about_the_stated_chance():
    """Simulated: a study whose runs are killed at random, and designs no likelier to die than
    the rest. The share given up stays near `GIVE_UP_CHANCE` (what the docstring promises), where
    a fixed cap of `MAX_ATTEMPTS` deaths loses many."""
    rng = random.Random(1)
    rate, length = 1 / 45, 60.0  # 74% of runs cut
    history = _history(rng, 400, rate, length)
    allowed = deaths_allowed(history, set())
    q = 1 - math.exp(-rate * length)
    designs, lost, lost_fixed = 20000, 0, 0
    for _ in range(designs):
        dead = 0
        while rng.random() < q:
            dead += 1
            if dead >= allowed:
                break
        lost += dead >= allowed
        lost_fixed += dead >= MAX_ATTEMPTS
    assert lost / designs <= 3 * GIVE_UP_CHANCE, (lost, allowed)
    assert lost_fixed / designs > 0.1  # the old rule: about q ** 5, a fifth of all designs


@pytest.fixture
def study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.enqueue_trial({"x": 0.5})
    return study, dist


def _cut(study, dist, reason: str) -> FrozenTrial:
    """Run the next queued trial and fail it as interrupted; `recover` queues its retry."""
    trial = study.ask(dist)
    study.tell(trial, state=TrialState.FAIL)
    frozen = study.trials[trial.number]
    queued = recover(study, "unused", {trial.number: reason})
    return frozen, queued


def test_pauses_never_use_up_a_designs_deaths_but_max_runs_bounds_them(study):
    study, dist = study
    for run in range(1, MAX_RUNS + 1):
        frozen, queued = _cut(study, dist, PAUSED)
        assert frozen.user_attrs.get("attempt", 1) == run
        assert queued == ([frozen.number] if run < MAX_RUNS else []), run
        if queued:
            assert study.trials[-1].user_attrs["deaths"] == 0
    assert len(study.trials) == MAX_RUNS


def test_deaths_are_counted_across_retries_and_stop_the_design(study):
    study, dist = study
    for run in range(1, MAX_ATTEMPTS + 1):
        reason = PAUSED if run == 2 else DIED  # a pause among the deaths: one run more
        frozen, queued = _cut(study, dist, reason)
        assert queued == [frozen.number]
    frozen, queued = _cut(study, dist, DIED)  # the fifth death
    assert queued == [] and frozen.user_attrs["deaths"] == MAX_ATTEMPTS - 1
    assert len(study.trials) == MAX_ATTEMPTS + 1


def test_a_retry_made_before_deaths_were_counted_counts_its_earlier_runs(study):
    study, dist = study
    trial = study.ask(dist)
    study.tell(trial, state=TrialState.FAIL)
    old = study.trials[trial.number]
    old.user_attrs["attempt"] = MAX_ATTEMPTS  # an older study's fifth run, no "deaths" attribute
    assert not retry(study, old, DIED)
    assert retry(study, old, PAUSED)  # four deaths so far, and this one not one


def test_a_paused_worker_alive_here_is_not_counted_as_dead(tmp_path):
    url = str(tmp_path / "s.journal")
    from explorer.store import open_storage

    study = optuna.create_study(storage=open_storage(url), directions=["maximize"])
    alive, dead = WorkerToken(url), WorkerToken(url)
    a, b = study.ask(), study.ask()
    a.set_user_attr("worker", alive.id)
    b.set_user_attr("worker", dead.id)
    dead._file.close()  # its process died: the lock is free, the file stays
    failed = fail_dead(study, url)
    assert list(failed) == [b.number] and is_death(failed[b.number])
    alive.release()


def test_run_queue_counts_a_units_deaths_and_gives_it_up():
    key = ("k", 0)
    trials = [_trial(n, 60, TrialState.COMPLETE, run_key="o", seed=n) for n in range(10)]
    n0 = len(trials)
    cut = [
        _trial(n0 + i, 5, TrialState.FAIL, run_key=key[0], seed=key[1], fail_reason=why)
        for i, why in enumerate([DIED, PAUSED, DIED, DIED, DIED])
    ]
    runs = collect(trials + cut)
    assert runs.interrupted[key] == 5 and runs.died[key] == 4
    assert not runs.given_up(key)
    # The last cut's reason is known only to the process that failed it (a recovery writes it on
    # no trial): a pause there is no death; a reason known nowhere counts as one.
    last = _trial(n0 + 5, 5, TrialState.FAIL, run_key=key[0], seed=key[1])
    assert not collect(trials + cut + [last], reasons={last.number: PAUSED}).given_up(key)
    runs = collect(trials + cut + [last], reasons={last.number: DIED})
    assert runs.died[key] == MAX_ATTEMPTS and runs.given_up(key)
    assert collect(trials + cut + [last]).given_up(key)


def test_a_design_given_up_stays_given_up_at_the_next_recovery(study):
    study, dist = study
    for _ in range(MAX_ATTEMPTS - 1):
        _cut(study, dist, DIED)
    frozen, queued = _cut(study, dist, DIED)
    assert queued == []
    # Another process recovers later and knows nothing of why the trial stopped.
    assert recover(study, "unused", {}) == []
