"""The study's shared training runs (`explorer.evaluate.runs`): the work loop that re-evaluation,
the search's final seeds and verification, and the ablation all train through."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest
from optuna.trial import TrialState

from explorer.evaluate import DataSpec, RunQueue, Unit, find_runs, resolve_budget, run_key
from explorer.store import open_storage, record_in, storage_of
from search_space import REFERENCES, NetworkConfig
from tests.helpers import journal_url, make_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def study(tmp_path):
    return make_study(str(tmp_path / "s.journal"), n_search=2, weights=False)


def _unit(budget, seed: int, name: str = "v1") -> Unit:
    network = NetworkConfig(block=REFERENCES[name], width=0.125)
    return Unit(run_key(network, budget.config), seed, name, network, tag=seed)


def _drain(queue: RunQueue, limit_s: float = 240.0) -> list:
    out, until = [], time.monotonic() + limit_s
    while queue.busy:
        assert time.monotonic() < until, "the queue did not finish in time"
        out += list(queue.finished(timeout=1.0))
    return out


def _runs(study) -> list:
    storage = open_storage(journal_url(study), create=False)
    return find_runs(storage, study.study_name).get_trials(deepcopy=False)


def test_a_run_stored_or_trained_elsewhere_is_not_trained_again(study):
    """A run another process holds (RUNNING) is waited for, then handed back from the store;
    a run already stored is answered at once; neither trains here."""
    url, budget = journal_url(study), resolve_budget(study, "smoke")
    trained = []

    def train(network, data, config, device, seed):
        trained.append(seed)
        return 0.5 + seed / 100, 0.4 + seed / 100

    other = RunQueue(study, url, budget, "cpu", train=train)
    with other, RunQueue(study, url, budget, "cpu", train=train) as here:
        _, tid = other._claim(_unit(budget, 0))  # the other process took seed 0 and trains it
        assert tid is not None
        here.submit(_unit(budget, 0))
        assert here.busy == 1 and not list(here.finished(timeout=0.1))  # waits, trains nothing
        record_in(storage_of(other.runs_study), tid)(TrialState.COMPLETE, (0.7, 0.6), None)
        (got,) = _drain(here)
        assert (got.val_acc, got.test_acc, got.seconds) == (0.7, 0.6, None)
        here.submit(_unit(budget, 0))  # stored now: answered at once
        (again,) = list(here.finished(timeout=0.1))
        assert again.test_acc == 0.6 and trained == []
        here.submit(_unit(budget, 1))  # nobody has it: trained here, once
        (new,) = _drain(here)
        assert trained == [1] and new.test_acc == pytest.approx(0.41) and new.seconds is not None
    done = [t for t in _runs(study) if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["seed"] for t in done) == [0, 1]


def test_an_error_of_the_run_is_recorded_once_and_not_retried(study):
    url, budget = journal_url(study), resolve_budget(study, "smoke")

    def oom(*args):
        raise RuntimeError("out of memory")

    with RunQueue(study, url, budget, "cpu", train=oom) as queue:
        queue.submit(_unit(budget, 0))
        (got,) = _drain(queue)
        assert math.isnan(got.test_acc) and "out of memory" in got.error
        queue.submit(_unit(budget, 0))  # asked again: its own failure stands, nothing trains
        (again,) = _drain(queue)
        assert "out of memory" in again.error
    (run,) = _runs(study)
    assert run.state == TrialState.FAIL and run.user_attrs["fail_reason"].startswith("error:")


@pytest.mark.slow
def test_a_killed_training_process_is_replaced_and_its_runs_trained_again(study, tiny_fmnist):
    """SIGKILL one of the queue's two training processes as soon as it exists: its runs are
    failed as interrupted, new processes start, each run is trained to the end once, and the
    queue says so in one line."""
    url, budget = journal_url(study), resolve_budget(study, "smoke")
    said = []
    spec = DataSpec("fashion-mnist", str(tiny_fmnist), 0)
    with RunQueue(study, url, budget, "cpu", workers=2, spec=spec, log=said.append) as queue:
        queue.submit(_unit(budget, 0))
        queue.submit(_unit(budget, 1))
        until = time.monotonic() + 60
        while not (procs := list(queue.pool._executor._processes.values())):
            assert time.monotonic() < until
            time.sleep(0.05)
        os.kill(procs[0].pid, signal.SIGKILL)
        results = _drain(queue)
    assert queue.replaced == 1 and sum("a training process died" in s for s in said) == 1, said
    assert sorted(r.unit.seed for r in results) == [0, 1]
    assert all(r.error is None and 0 <= r.test_acc <= 1 for r in results)
    runs = _runs(study)
    done = [t for t in runs if t.state == TrialState.COMPLETE]
    cut = [t for t in runs if t.state == TrialState.FAIL]
    assert sorted(t.user_attrs["seed"] for t in done) == [0, 1]  # each trained to the end once
    assert cut and all(
        t.user_attrs["fail_reason"] == "interrupted: its training process died" for t in cut
    )
    retries = [t for t in done if "retry_of" in t.user_attrs]
    assert {t.user_attrs["retry_of"] for t in retries} == {t.number for t in cut}


def test_a_stored_reevaluation_never_shrinks(study):
    """Two processes store a design's re-evaluation as each grows; the one with fewer seeds,
    stored last, does not replace the longer one."""
    from explorer.analysis import Reeval

    url, budget = journal_url(study), resolve_budget(study, "smoke")
    longer = Reeval((0.5, 0.6, 0.7), (0.4, 0.5, 0.6), "smoke", budget.config.to_dict())
    shorter = Reeval((0.5,), (0.4,), "smoke", budget.config.to_dict())
    with RunQueue(study, url, budget, "cpu", train=lambda *a: (0.5, 0.5)) as queue:
        queue.store("reeval:3", longer)
        queue.store("reeval:3", shorter)
        assert study.user_attrs["reeval:3"]["seeds"] == 3
        queue.store("reeval:4", shorter)  # nothing there yet: stored
        assert study.user_attrs["reeval:4"]["seeds"] == 1
