"""Optuna's distributed mode on PostgreSQL: several workers, and a worker killed mid-trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
# The timeouts below only guard against a hung worker. They are generous because a smoke trial
# takes from about 10 s on a quiet machine to a minute on a slow one shared with other jobs.

WORKER = """
import sys
from explorer.search import SearchSettings, run_worker
s = SearchSettings(trials=int(sys.argv[4]), study=sys.argv[1], storage=sys.argv[2], budget="smoke",
                   device="cpu", data_dir=sys.argv[3], references=False, quiet=True, keep_weights=False)
run_worker(s, worker_index=int(sys.argv[5]), n_trials=int(sys.argv[6]) or None)
"""


def start_worker(
    study: str, url: str, data: Path, target: int, index: int, n_trials: int
) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER,
            study,
            url,
            str(data),
            str(target),
            str(index),
            str(n_trials),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_workers_finish_exactly_their_trials(postgres_url, pg_study_name, tiny_fmnist):
    k = 2
    workers = [start_worker(pg_study_name, postgres_url, tiny_fmnist, 1000, i, k) for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=1800)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name=pg_study_name, storage=postgres_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(study.trials) == len(finished) == 2 * k
    assert len({t.number for t in finished}) == 2 * k
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers took part


def test_killed_worker_leaves_a_study_another_finishes(postgres_url, pg_study_name, tiny_fmnist):
    victim = start_worker(pg_study_name, postgres_url, tiny_fmnist, 3, 0, 0)
    deadline = time.time() + 600
    running = None
    while time.time() < deadline and running is None:
        try:
            study = optuna.load_study(study_name=pg_study_name, storage=postgres_url)
            running = next(
                (
                    t
                    for t in study.trials
                    if t.state == TrialState.RUNNING and "network" in t.user_attrs
                ),
                None,
            )  # training has started
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.05)
    assert running is not None, "the worker never started a trial"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    study = optuna.load_study(study_name=pg_study_name, storage=postgres_url)
    running = next(t for t in study.trials if t.state == TrialState.RUNNING)  # left by the kill

    rescuer = start_worker(pg_study_name, postgres_url, tiny_fmnist, 3, 1, 0)
    _, err = rescuer.communicate(timeout=1800)
    assert rescuer.returncode == 0, err
    study = optuna.load_study(study_name=pg_study_name, storage=postgres_url)
    killed = study.trials[running.number]
    assert killed.state == TrialState.FAIL
    assert "died" in killed.user_attrs["fail_reason"]
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == running.number]
    assert len(retried) == 1 and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retried[0].params == killed.params
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
