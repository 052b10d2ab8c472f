"""The search loop's faults: a search that never ends when every trial fails, one stale trial
stopping every machine, workers outliving their parent, a failure written in two steps, rungs
numbered by list position, final seeds on several machines. Real processes where the fault is
about processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from explorer import search
from explorer.analysis import Reeval, reeval_results
from explorer.evaluate import find_runs
from explorer.search import Claimer, SearchSettings, open_search_study
from explorer.search.session import search_unfinished
from explorer.search.trial import PruneRule
from explorer.search.workers import FailureBound
from explorer.store import (
    HOLDS,
    TrialRecord,
    open_storage,
    rung_studies,
    rung_study_name,
    stale,
    study_config,
    study_lock,
)
from explorer.store.work import recover
from explorer.training import trainer
from tests.helpers import timed_trial
from tests.test_search import base_args

ROOT = Path(__file__).resolve().parents[1]


def _record(state: str, reason: str | None = None, skipped: str | None = None) -> TrialRecord:
    attrs = {"fail_reason": reason} if reason else {}
    if skipped:
        attrs["skipped"] = skipped
    return TrialRecord.from_dict(attrs, 0, state)


# --------------------------------------------------------------------------------------------
# 1. A search that never ends


def test_failure_bound_stops_after_failures_in_a_row_with_what_to_change():
    bound = FailureBound(in_a_row=4)
    stops = [bound.add(_record("FAIL", "diverged: loss is nan")) for _ in range(4)]
    assert stops[:3] == [None, None, None]
    assert "4 trials in a row failed" in stops[3] and "--budget" in stops[3]


def test_failure_bound_counts_a_share_over_a_window_and_resets_on_success():
    bound = FailureBound(in_a_row=100, window=10, share=0.7)
    outcomes = ["FAIL", "FAIL", "COMPLETE"] * 3 + ["FAIL"]
    stops = [bound.add(_record(s, "out of memory" if s == "FAIL" else None)) for s in outcomes]
    assert stops[-1] is not None and "7 of the last 10 trials failed" in stops[-1]
    assert "--width" in stops[-1] and all(s is None for s in stops[:-1])


def test_interrupted_trials_do_not_count_and_code_errors_stop_sooner():
    bound = FailureBound(in_a_row=3, errors_in_a_row=2)
    assert bound.add(_record("FAIL", "interrupted: worker w died")) is None
    assert bound.add(_record("FAIL", "interrupted")) is None
    assert bound.add(_record("FAIL", "error: KeyError: 'x'")) is None
    assert "2 trials in a row failed with an error" in bound.add(_record("FAIL", "error: KeyError"))


def test_designs_over_the_limits_in_a_row_stop_the_worker():
    bound = FailureBound(skips_in_a_row=3)
    stops = [bound.add(_record("COMPLETE", skipped="infeasible: 9 > 1")) for _ in range(3)]
    assert stops[-1] is not None and "over the study's limits" in stops[-1]


def test_a_search_whose_every_trial_diverges_ends_by_itself_with_one_line(
    tmp_path, tiny_fmnist, capsys, monkeypatch
):
    def diverge(*args, **kwargs):
        raise trainer.DivergedError("loss is nan at step 1", trainer.TrainResult("cpu"))

    monkeypatch.setattr(trainer, "train", diverge)
    code = search.main(base_args(tmp_path, tiny_fmnist, trials=3))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1, lines
    assert "10 trials in a row failed" in lines[0] and "diverged" in lines[0]
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 10


# --------------------------------------------------------------------------------------------
# 2. One stale trial stopping every machine

PAUSED_WORKER = """
import sys
from explorer.search import SearchSettings, run_worker
from explorer.store import work
work.RECOVER_EVERY_S = 0.5  # recover at every claim: the test pauses a worker for seconds
url, name, data, index, trials = sys.argv[1:6]
s = SearchSettings(trials=int(trials), study=name, storage=url, budget="smoke", rungs=1,
                   device="cpu", data_dir=data, quiet=True, weights=False, proxies=False,
                   references=False, prune=False, heartbeat_s=1, workers=2)
run_worker(s, worker_index=int(index))
"""


def _worker_pids(folder: Path) -> dict[str, int]:
    out = {}
    for f in folder.glob("*.lock"):
        text = f.read_text().strip()
        if text.isdigit():
            out[f.stem] = int(text)
    return out


def _state(study: optuna.Study, number: int) -> TrialState:
    return next(t.state for t in study.get_trials(deepcopy=False) if t.number == number)


def _url_and_workers(kind: str, tmp_path: Path, request) -> tuple[str, Path]:
    """A fresh storage of `kind` and the folder of its workers' lock files."""
    if kind == "journal":
        return str(tmp_path / "s.journal"), tmp_path / ".workers"
    return request.getfixturevalue("postgres_url"), tmp_path / "studies" / ".workers"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_paused_worker_drops_its_stale_trial_and_the_search_goes_on(
    kind, tiny_fmnist, tmp_path, request
):
    """Worker A is paused (SIGSTOP) past the heartbeat grace while it trains; worker B fails A's
    trial as interrupted and retrains its design; A, resumed (SIGCONT), drops that trial and goes
    on. The search ends with exactly --trials designs, none lost or trained twice, and no worker
    stops with an error; on a journal as on a database (its heartbeats are files beside it).
    (Four designs: the other worker is still claiming after the heartbeat grace of 2 s has
    passed, which is all the takeover needs.)"""
    trials = 4
    url, workers = _url_and_workers(kind, tmp_path, request)
    name = "t"
    script = tmp_path / "worker.py"
    script.write_text(PAUSED_WORKER)
    env = {**os.environ, "EXPLORER_STUDIES_DIR": str(tmp_path / "studies")}
    args = [url, name, str(tiny_fmnist)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args, str(i), str(trials)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        storage = open_storage(url)
        deadline, taken_over = time.time() + 240, None
        while taken_over is None and time.time() < deadline:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue
            pids = _worker_pids(workers)
            running = [
                t
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.user_attrs.get("worker") in pids and t.user_attrs.get("network")
            ]
            if not running:
                continue
            victim, pid = running[0], pids[running[0].user_attrs["worker"]]
            os.kill(pid, signal.SIGSTOP)
            try:
                until = time.time() + 30
                while _state(study, victim.number) == TrialState.RUNNING and time.time() < until:
                    time.sleep(0.2)
                if _state(study, victim.number) == TrialState.FAIL:
                    taken_over = victim.number
            finally:
                os.kill(pid, signal.SIGCONT)
        assert taken_over is not None, "no worker failed the paused worker's trial"
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert any("this run of it is dropped" in err for _, err in outs), [err for _, err in outs]
    study = optuna.load_study(study_name=name, storage=storage)
    by_state = {s: [t for t in study.trials if t.state == s] for s in TrialState}
    assert len(by_state[TrialState.COMPLETE]) == trials
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]
    retries = [t.user_attrs.get("retry_of") for t in study.trials]
    assert retries.count(taken_over) == 1
    failed = by_state[TrialState.FAIL]
    assert all(retries.count(t.number) == 1 for t in failed)  # each retried once, none lost
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == taken_over)
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["retry_reason"].startswith("interrupted: no heartbeat")


ONE_TRIAL_WORKER = """
import sys
from explorer.search import SearchSettings, run_worker
url, data, index = sys.argv[1:4]
s = SearchSettings(trials=2, study="t", storage=url, budget="smoke", rungs=1, device="cpu",
                   data_dir=data, quiet=True, weights=False, proxies=False, references=False,
                   prune=False, workers=2)
run_worker(s, worker_index=int(index), n_trials=1)
"""


def _running(study: optuna.Study, attr: str, deadline: float) -> optuna.trial.FrozenTrial:
    while time.time() < deadline:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if attr in t.user_attrs:
                return t
        time.sleep(0.2)
    raise AssertionError(f"no running trial with {attr!r}")


@pytest.mark.slow
def test_two_workers_proposed_the_same_design_train_it_once_and_it_counts_once(
    tmp_path, tiny_fmnist
):
    """Worker A trains a design and is paused mid-training (well within the heartbeat grace); the
    same design is queued and worker B takes it: B sees it training, waits for A's result and
    copies it (``duplicate_of``) instead of training it again; the design counts once."""
    url = str(tmp_path / "s.journal")
    script = tmp_path / "worker.py"
    script.write_text(ONE_TRIAL_WORKER)

    def worker(index: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), url, str(tiny_fmnist), str(index)],
                                cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip

    a = worker(0)
    procs = [a]
    try:
        deadline = time.time() + 120
        while not Path(url).exists() and time.time() < deadline:
            time.sleep(0.2)
        study = optuna.load_study(study_name="t", storage=open_storage(url))
        trained = _running(study, "training", deadline)
        os.kill(a.pid, signal.SIGSTOP)
        try:
            study.enqueue_trial(trained.params)
            procs.append(worker(1))
            waiting = _running(study, "waiting_for", time.time() + 120)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert waiting.user_attrs["waiting_for"] == trained.number
    copy = study.trials[waiting.number]
    assert copy.state == TrialState.COMPLETE and copy.params == trained.params
    assert copy.user_attrs["duplicate_of"] == trained.number
    assert copy.values == study.trials[trained.number].values
    assert search.search_trials_taken(study) == 1  # two trials, one design


# --------------------------------------------------------------------------------------------
# 3. Workers outliving their parent

PARENT_WITH_AN_ERROR = """
import json, multiprocessing as mp, sys
from explorer.search import SearchSettings
from explorer.search.processes import run_processes

polls = []


def poll():
    polls.append(1)
    if len(polls) == 3:
        print(json.dumps([p.pid for p in mp.active_children()]), flush=True)
        raise RuntimeError("the parent's own error")


if __name__ == "__main__":
    s = SearchSettings(trials=50, study="t", storage=sys.argv[1], budget="smoke", rungs=1,
                       device="cpu", data_dir=sys.argv[2], workers=2, quiet=True, weights=False,
                       proxies=False, references=False)
    run_processes(s, poll)
"""


@pytest.mark.slow
def test_a_parent_stopped_by_an_error_leaves_no_worker_behind(tmp_path, tiny_fmnist):
    script = tmp_path / "parent.py"
    script.write_text(PARENT_WITH_AN_ERROR)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "s.journal"), str(tiny_fmnist)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode != 0 and "the parent's own error" in proc.stderr
    children = json.loads(proc.stdout.strip().splitlines()[0])
    assert len(children) == 2
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


# --------------------------------------------------------------------------------------------
# 4. Recovery fails a trial in one write; rungs keep their own numbers


def _settings(tmp_path, **kwargs) -> SearchSettings:
    values = {"trials": 4, "study": "t", "storage": str(tmp_path / "s.journal"),
              "budget": "smoke", "rungs": 1, "device": "cpu"} | kwargs  # fmt: skip
    return SearchSettings(**values)


def test_a_trial_that_completes_before_recovery_fails_it_stays_complete(tmp_path):
    s = _settings(tmp_path, references=False)
    study, _ = open_search_study(s, open_storage(s.storage), s.storage, "smoke")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    frozen = study.get_trials(deepcopy=False)[0]
    study.tell(trial, [0.5, 10.0])
    assert not stale._fail(study, frozen)
    done = study.get_trials(deepcopy=False)[0]
    assert done.state == TrialState.COMPLETE and "fail_reason" not in done.user_attrs


def test_a_dead_workers_trial_is_failed_by_its_state_and_retried_with_the_reason(tmp_path):
    s = _settings(tmp_path, references=False)
    study, _ = open_search_study(s, open_storage(s.storage), s.storage, "smoke")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    folder = tmp_path / ".workers"
    folder.mkdir()
    (folder / "gone-123.lock").write_text("999999\n")  # nobody holds it: the worker is dead
    trial.set_user_attr("worker", "gone-123")
    with study_lock(s.storage, "t"):
        assert recover(study, s.storage) == [0]
    failed, retry = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and "fail_reason" not in failed.user_attrs
    assert TrialRecord.from_trial(failed).fail_reason == "interrupted"
    assert retry.user_attrs["retry_reason"] == "interrupted: worker gone-123 died"


def test_the_claim_uses_each_rungs_own_number_when_one_is_missing(tmp_path):
    s = _settings(tmp_path, rungs=3, budget="smokex9")
    storage = open_storage(s.storage)
    study, config = open_search_study(s, storage, s.storage, "smokex9")
    optuna.delete_study(study_name=rung_study_name("t", 1, 3), storage=storage)
    rungs = rung_studies(storage, study, config)
    assert sorted(rungs) == [0, 2]
    claim = Claimer(rungs, config, s.storage, target=4)()
    assert claim.rung == 2 and claim.trial.study.study_name == "t"
    assert claim.trial.user_attrs["reference"] in ("v1", "v2")
    assert any(name.startswith("study:t") for name, _ in HOLDS)


def test_copies_of_one_design_count_once_as_dominators():
    def done(number: int, duplicate_of: int | None = None) -> TrialRecord:
        attrs = {"val_acc": 0.9, "params": 100, "curves": {"val_acc": [0.9, 0.95]}}
        if duplicate_of is not None:
            attrs["duplicate_of"] = duplicate_of
        return TrialRecord.from_dict(attrs, number)

    rule = PruneRule(min_dominators=3, warmup=1)
    copies = [done(0), done(1, 0), done(2, 0)]
    assert not rule.should_prune(0, 0.5, {"params": 200}, copies)
    assert rule.should_prune(0, 0.5, {"params": 200}, [done(0), done(1), done(2)])


# --------------------------------------------------------------------------------------------
# 5. Final seeds on several machines


@pytest.mark.slow
def test_two_reevaluations_at_once_train_each_seed_once(tmp_path, tiny_fmnist, capsys):
    """Two `evaluate` processes started at the same moment on one study share its runs through
    the work loop: each (design, seed) is trained once, by one of them; the other takes it from
    the store or waits for it."""
    args = base_args(tmp_path, tiny_fmnist, trials=1)
    assert search.main([*args, "--no-references"]) == 0, capsys.readouterr().err
    flags = ["--storage", str(tmp_path / "s.journal"), "--study", "t", "--trial", "0",
             "--references", "none", "--seeds", "2", "--budget", "smoke", "--device", "cpu",
             "--data-dir", str(tiny_fmnist), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "explorer.evaluate", *flags],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    lines = [line for _, err in outs for line in err.splitlines() if " seed " in line]
    trained = [line for line in lines if re.search(r"\(\d+ s\)$", line)]
    assert len(trained) == 2 and len(lines) == 4, lines  # each seed trained once, told twice
    storage = open_storage(str(tmp_path / "s.journal"))
    runs = find_runs(storage, "t").get_trials(deepcopy=False)
    assert sorted(t.user_attrs["seed"] for t in runs if t.state == TrialState.COMPLETE) == [0, 1]
    stored = reeval_results(optuna.load_study(study_name="t", storage=storage))[0]
    assert isinstance(stored, Reeval) and stored.seeds == 2


def test_final_seeds_wait_for_a_search_that_other_workers_still_run(tmp_path):
    s = _settings(tmp_path, references=False, trials=1)
    storage = open_storage(s.storage)
    study, config = open_search_study(s, storage, s.storage, "smoke")
    rungs = rung_studies(storage, study, config)
    assert "stopped at 0 of 1" in search_unfinished(rungs, 1)
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert "still run or wait" in search_unfinished(rungs, 1)
    assert study_config(study) == config


# --------------------------------------------------------------------------------------------
# 6. --timeout as a deadline


def test_a_trial_is_expected_to_take_as_long_as_the_longest_trained_so_far(tmp_path):
    from datetime import datetime

    from explorer.search.workers import expected_trial_s

    s = _settings(tmp_path, references=False)
    study, _ = open_search_study(s, open_storage(s.storage), s.storage, "smoke")
    assert expected_trial_s({0: study}) is None  # nothing finished: the first trial starts
    start = datetime(2024, 1, 1)
    for seconds, attrs in [(10, {}), (30, {}), (20, {}), (0, {"skipped": "infeasible: x"}),
                           (0, {"duplicate_of": 0})]:  # fmt: skip
        study.add_trial(timed_trial(0, start, seconds, **attrs))
    assert expected_trial_s({0: study}) == 30.0  # the next design may be as slow as any


def test_a_worker_that_starts_late_keeps_the_runs_deadline(tmp_path, tiny_fmnist):
    """A worker process started after the run's deadline (`until`, set once at the run's start
    from --timeout) starts no trial, though its own --timeout has not run out."""
    from explorer.search.workers import run_worker

    s = _settings(tmp_path, references=False, timeout=1000.0, until=time.time() - 1,
                  data_dir=str(tiny_fmnist))  # fmt: skip
    run_worker(s)
    study = optuna.load_study(study_name="t", storage=open_storage(s.storage))
    assert study.get_trials(deepcopy=False) == []
