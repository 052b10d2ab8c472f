"""Shared studies: processes started at the same moment on a fresh storage, workers that die
mid-trial, and recoverers racing for the same dead trial. Each PostgreSQL test gets a freshly
created database (`postgres_url`), so the first-start path runs every time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
# The timeouts below only guard against a hung worker. They are generous because a smoke trial
# takes from about 10 s on a quiet machine to a minute on a slow one shared with other jobs.

WORKER = """
import sys
from explorer.search.settings import SearchSettings
from explorer.search.workers import run_worker
s = SearchSettings(trials=int(sys.argv[4]), study=sys.argv[1], storage=sys.argv[2], budget="smoke",
                   device="cpu", data_dir=sys.argv[3], references=False, quiet=True, weights=False,
                   proxies=False, rungs=1)
run_worker(s, worker_index=int(sys.argv[5]), n_trials=int(sys.argv[6]) or None)
"""

# What `_together` puts before each script it runs. The script's last argument is a folder of its
# own: it says it is ready there once its imports and set-up are done, waits for the moment the
# parent then sends on stdin, and writes there when it started and ended its part (`timing.json`).
SYNC = """
import json, pathlib, sys, time
SYNC_DIR = pathlib.Path(sys.argv.pop())


def wait_for_go():
    (SYNC_DIR / "ready").touch()
    at = float(sys.stdin.readline())
    time.sleep(max(0.0, at - time.time()))
    return at, time.time()


def report(at, start):
    end = time.time()
    (SYNC_DIR / "timing.json").write_text(json.dumps({"at": at, "start": start, "end": end}))
"""

# Opens the study the way every worker does, at a given moment, and nothing else.
STARTER = """
from explorer.search.settings import SearchSettings
from explorer.store import open_storage
from explorer.search.study import open_search_study
url, name = sys.argv[1], sys.argv[2]
at, start = wait_for_go()
study, config = open_search_study(SearchSettings(study=name, storage=url, rungs=1), open_storage(url, heartbeat=60), url, "smoke")
report(at, start)
print(study.study_name, config.budget)
"""

RECOVERER = """
import optuna
from explorer.store import study_lock
from explorer.store.work import recover
from explorer.store import open_storage
url, name = sys.argv[1], sys.argv[2]
study = optuna.load_study(study_name=name, storage=open_storage(url))
at, start = wait_for_go()
with study_lock(url, name):
    print(recover(study, url))
report(at, start)
"""

# How far ahead of the last child's readiness the moment to act is set, and how late after it a
# child may start its part (a sleeping process waking up, not imports) and still count as on time.
GO_AHEAD_S = 1.0
LATE_S = 1.0


def _env(tmp: Path) -> dict[str, str]:
    return os.environ | {
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "EXPLORER_STUDIES_DIR": str(tmp / "studies"),
    }


def start_worker(
    study: str, url: str, data: Path, target: int, index: int, n_trials: int, tmp: Path
) -> subprocess.Popen:
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
        env=_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _together(
    script: str, args: list[str], n: int, tmp: Path, timeout: float = 600
) -> tuple[list[subprocess.CompletedProcess], list[dict[str, float] | None]]:
    """Run `n` copies of `script` (after `SYNC`, whose two functions it calls) that all act at the
    same wall-clock moment: once every copy has done its imports and said it is ready, the moment
    is set `GO_AHEAD_S` ahead and sent to all. Returns the finished processes and each one's
    timing (``at``, ``start``, ``end``; None where it wrote none); see `_assert_at_once`."""
    sync = Path(tempfile.mkdtemp(prefix="together-", dir=tmp))
    dirs = [sync / str(i) for i in range(n)]
    for d in dirs:
        d.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SYNC + script, *args, str(d)],
            cwd=ROOT,
            env=_env(tmp),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in dirs
    ]
    deadline = time.monotonic() + timeout
    # Until all are ready; one that exits or hangs first is left to the callers' checks.
    while not all((d / "ready").exists() for d in dirs):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    at = time.time() + GO_AHEAD_S
    for p in procs:
        try:
            p.stdin.write(f"{at!r}\n")
            p.stdin.flush()
        except BrokenPipeError:  # it has exited already
            pass
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    timings = [
        json.loads((d / "timing.json").read_text()) if (d / "timing.json").exists() else None
        for d in dirs
    ]
    return out, timings


def _assert_at_once(timings: list[dict[str, float] | None]) -> None:
    """Every child started its part on time at the agreed moment, and all of them were working at
    one same instant: the race the test is about really happened."""
    assert all(t is not None for t in timings), timings
    [at] = {t["at"] for t in timings}  # one moment, agreed by all
    late = [round(t["start"] - at, 3) for t in timings]
    assert all(-0.01 <= x <= LATE_S for x in late), f"started late by {late} s (at most {LATE_S})"
    assert all(t["end"] >= t["start"] for t in timings), timings
    last_start = max(t["start"] for t in timings)
    first_end = min(t["end"] for t in timings)
    spans = [(round(t["start"] - at, 3), round(t["end"] - at, 3)) for t in timings]
    assert last_start < first_end, f"the children's parts did not overlap: {spans} s after the go"


def _storage_url(kind: str, tmp: Path, request) -> str:
    if kind == "journal":
        return str(tmp / "fresh" / "shared.journal")
    return request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_four_starters_at_once_make_one_study_with_each_reference_once(kind, tmp_path, request):
    url = _storage_url(kind, tmp_path, request)
    runs, timings = _together(STARTER, [url, "team"], 4, tmp_path)
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["team", "smoke"]
    _assert_at_once(timings)
    from explorer.store import open_storage

    study = optuna.load_study(study_name="team", storage=open_storage(url))
    refs = sorted(t.user_attrs.get("reference") for t in study.trials)
    assert refs == ["v1", "v2"] and all(t.state == TrialState.WAITING for t in study.trials)
    assert study.user_attrs["config"]["budget"] == "smoke"
    assert len(optuna.get_all_study_names(open_storage(url))) == 1


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_recoverers_at_once_retry_a_dead_trial_exactly_once(kind, tmp_path, request):
    url = _storage_url(kind, tmp_path, request)
    env = _env(tmp_path)
    setup = f"""
import optuna
from explorer.store import WorkerToken
from explorer.store import open_storage
from explorer.search.study import enqueue_reference
from search_space import config_from_trial
study = optuna.create_study(study_name="r", storage=open_storage({url!r}), directions=["maximize"] * 2)
enqueue_reference(study, "v2")
trial = study.ask()
config_from_trial(trial)
token = WorkerToken({url!r})
trial.set_user_attr("worker", token.id)
"""  # the process ends holding its trial: a worker killed mid-trial
    subprocess.run([sys.executable, "-c", setup], cwd=ROOT, env=env, check=True, timeout=300)
    runs, timings = _together(RECOVERER, [url, "r"], 2, tmp_path)
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert sorted(r.stdout.strip() for r in runs) == ["[0]", "[]"]
    _assert_at_once(timings)
    from explorer.store import open_storage

    trials = optuna.load_study(study_name="r", storage=open_storage(url)).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert "died" in trials[1].user_attrs["retry_reason"]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].user_attrs["reference"] == "v2"


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_worker_leaves_a_study_another_finishes(
    postgres_url, pg_study_name, tiny_fmnist, tmp_path
):
    victim = start_worker(pg_study_name, postgres_url, tiny_fmnist, 2, 0, 0, tmp_path)
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

    rescuer = start_worker(pg_study_name, postgres_url, tiny_fmnist, 2, 1, 0, tmp_path)
    _, err = rescuer.communicate(timeout=1800)
    assert rescuer.returncode == 0, err
    study = optuna.load_study(study_name=pg_study_name, storage=postgres_url)
    killed = study.trials[running.number]
    assert killed.state == TrialState.FAIL
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == running.number]
    assert "died" in retried[0].user_attrs["retry_reason"]
    assert len(retried) == 1 and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retried[0].params == killed.params
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 2


# A worker of a two-rung study with the references, as every machine of a shared study runs it.
# workers=2 in its settings: two of them share this machine's cores, one thread each
# (`cpu_threads_per_worker`), as `--workers 2` would; with a whole machine's threads each, they
# oversubscribe the cores and each trial takes several times as long.
RUNG_WORKER = """
from explorer.search.settings import SearchSettings
from explorer.search.workers import run_worker
url, name, data = sys.argv[1], sys.argv[2], sys.argv[3]
s = SearchSettings(trials=4, study=name, storage=url, budget="smoke", rungs=2, device="cpu",
                   data_dir=data, quiet=True, weights=False, proxies=False, prune=False, workers=2)
at, start = wait_for_go()
run_worker(s)
report(at, start)
"""


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.slow
def test_two_workers_at_once_share_the_rungs_without_promoting_twice(
    kind, tmp_path, request, tiny_fmnist
):
    """Two workers started at the same moment on a fresh storage: rung 0 gets exactly the
    requested designs, each reference trains once per rung, each worker proposes with a sampler
    seed of its own, no design is promoted twice, and every design of rung 0's final best third
    reaches the top. (Four designs: the race for the first promotion, at three finished, is
    what the test is about; each design more costs seconds of training.)"""
    from explorer.analysis import finished_designs, rank_order
    from explorer.store import TrialRecord

    url = _storage_url(kind, tmp_path, request)
    runs, timings = _together(RUNG_WORKER, [url, "mf", str(tiny_fmnist)], 2, tmp_path, 1200)
    for r in runs:
        assert r.returncode == 0, r.stderr
    _assert_at_once(timings)
    from explorer.store import open_storage

    storage = open_storage(url)
    top = optuna.load_study(study_name="mf", storage=storage)
    bottom = optuna.load_study(study_name="mf@rung0", storage=storage)
    for study in (bottom, top):
        refs = sorted(t.user_attrs.get("reference") for t in study.trials
                      if t.user_attrs.get("reference"))  # fmt: skip
        assert refs == ["v1", "v2"]
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
    searched = [t for t in bottom.trials if not t.user_attrs.get("reference")]
    assert len(searched) == 4
    seeds = {t.user_attrs["worker"]: t.user_attrs["sampler_seed"] for t in bottom.trials}
    assert len(seeds) == 2  # both took part
    assert len(set(seeds.values())) == 2  # each proposes with its own seed
    parents = [t.user_attrs["parent"] for t in top.trials if not t.user_attrs.get("reference")]
    assert parents and len(parents) == len(set(parents))
    final = rank_order(finished_designs([TrialRecord.from_trial(t) for t in bottom.trials]),
                       ("val_acc", "params"))  # fmt: skip
    assert {r.number for r in final[: len(final) // 3]} <= set(parents)
