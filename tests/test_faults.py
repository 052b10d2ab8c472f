"""The faults a long shared search meets: a worker killed (SIGKILL, the OOM killer) and replaced, a
database that goes away for seconds (through a TCP proxy the test stops and starts, never the
machine's server), and locks whose holder stalls or holds on. Real processes where the fault is
about processes; each PostgreSQL test gets a fresh database (`postgres_url`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.trial import TrialState

from bench.chaos import TcpProxy
from explorer.store import locks, open_storage, study_lock

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path) -> dict[str, str]:
    return os.environ | {
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "EXPLORER_STUDIES_DIR": str(tmp / "studies"),
    }


def _url(kind: str, tmp: Path, request) -> str:
    if kind == "journal":
        return str(tmp / "s.journal")
    return request.getfixturevalue("postgres_url")


# --------------------------------------------------------------------------------------------
# 1. Passing storage errors


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.OperationalError("connection failed: Connection refused"), True),
        (psycopg.errors.SerializationFailure("could not serialize access"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed")), True),
        (psycopg.errors.LockNotAvailable("lock timeout"), False),
        (ValueError("a bad value"), False),
        (KeyError("no such study"), False),
    ],
)
def test_passing_storage_errors_are_told_apart(error, transient):
    assert locks.is_transient(error) is transient
    wrapped = optuna.exceptions.StorageInternalError("during the commit")
    wrapped.__cause__ = error  # what Optuna's RDB storage raises
    assert locks.is_transient(wrapped) is transient


def test_a_passing_error_is_retried_with_a_line_and_a_lasting_one_named(monkeypatch, capsys):
    monkeypatch.setattr(locks, "TRANSIENT_S", 0.3)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.OperationalError("Connection refused")
        return "ok"

    assert locks.retry_transient(flaky, "postgresql://me:***@db/x") == "ok"
    [line] = capsys.readouterr().err.splitlines()
    assert "postgresql://me:***@db/x" in line and "Connection refused" in line
    assert "retrying in" in line

    def down():
        raise psycopg.OperationalError("Connection refused")

    with pytest.raises(locks.StorageUnavailable, match=r"storage postgresql://me:\*\*\*@db/x"):
        locks.retry_transient(down, "postgresql://me:***@db/x")
    with pytest.raises(ValueError):  # not a storage's passing error: at once
        locks.retry_transient(lambda: int("x"), "s")


# --------------------------------------------------------------------------------------------
# 2. Locks: a stalled holder, a holder that holds on

HOLDER = """
import os, signal, sys, time
from explorer.store import study_lock
with study_lock(sys.argv[1], "x"):
    print("held", flush=True)
    if sys.argv[2] == "stall":
        os.kill(os.getpid(), signal.SIGSTOP)  # paused while holding it: silent from now on
    time.sleep(float(sys.argv[2]) if sys.argv[2] != "stall" else 0)
"""


def _holder(url: str, tmp: Path, how: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, how],
        cwd=ROOT,
        env=_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_lock_whose_holder_stalled_past_the_grace_is_broken(
    kind, tmp_path, request, monkeypatch, capsys
):
    url = _url(kind, tmp_path, request)
    holder = _holder(url, tmp_path, "stall")
    try:
        monkeypatch.setattr(locks, "LOCK_GRACE_S", 1.5)
        start = time.monotonic()
        with study_lock(url, "x"):
            waited = time.monotonic() - start
        with study_lock(url, "x"):  # and it is free again afterwards
            pass
    finally:
        holder.kill()
        holder.wait(30)
    err = capsys.readouterr().err
    assert 1.5 <= waited < 30, waited
    assert f"breaking the storage lock 'study:x': its holder {os.uname().nodename} " in err
    assert f"pid {holder.pid} since" in err


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_lock_whose_holder_was_killed_is_had_at_once(kind, tmp_path, request, capsys):
    """SIGKILL frees the lock with its holder (the kernel drops a file lock, the server the
    session's advisory lock): a waiter has it in well under the grace, and nothing is broken."""
    url = _url(kind, tmp_path, request)
    holder = _holder(url, tmp_path, "60")
    threading.Timer(1.0, holder.kill).start()
    start = time.monotonic()
    with study_lock(url, "x"):
        waited = time.monotonic() - start
    holder.wait(30)
    assert 0.5 < waited < 10, waited
    assert "breaking" not in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_waiter_names_a_live_holder_and_keeps_waiting(
    kind, tmp_path, request, monkeypatch, capsys
):
    url = _url(kind, tmp_path, request)
    monkeypatch.setattr(locks, "LOCK_NOTE_S", 0.5)
    holder = _holder(url, tmp_path, "3")  # alive, beating, lets go after 3 s
    try:
        with study_lock(url, "x"):
            pass
        assert holder.wait(30) == 0, holder.stderr.read()
    finally:
        holder.kill()
    lines = capsys.readouterr().err.splitlines()
    assert lines and all("still waiting" in line for line in lines), lines
    assert f"held by {os.uname().nodename} pid {holder.pid} since" in lines[0]
    assert not any("breaking" in line for line in lines)


def test_a_waiter_given_a_timeout_says_who_holds_the_lock(tmp_path):
    url = str(tmp_path / "s.journal")
    holder = _holder(url, tmp_path, "30")
    try:
        with pytest.raises(locks.LockTimeout, match=f"pid {holder.pid}"):
            with locks.storage_lock(url, "study:x", timeout=0.5):
                pass
    finally:
        holder.kill()
        holder.wait(30)


# --------------------------------------------------------------------------------------------
# 3. A worker killed mid-trial, a database gone for seconds: the search goes on


def _search(url: str, data: Path, tmp: Path, trials: int) -> subprocess.Popen:
    args = ["--trials", str(trials), "--budget", "smoke", "--rungs", "1", "--device", "cpu",
            "--data-dir", str(data), "--storage", url, "--study", "t", "--workers", "2",
            "--no-references", "--no-proxies", "--no-weights", "--verify-seeds", "0", "--quiet"]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "explorer.search", *args],
        cwd=ROOT,
        env=_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _training(url: str, deadline: float) -> optuna.trial.FrozenTrial:
    """A trial that has started training (its design built), once there is one."""
    storage = open_storage(url) if "://" in url else None
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name="t", storage=storage or open_storage(url))
        except (KeyError, Exception):  # noqa: BLE001 - not created yet, or mid-write
            time.sleep(0.2)
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "network" in t.user_attrs and "worker" in t.user_attrs:
                return t
        time.sleep(0.2)
    raise AssertionError("no trial started training")


def _lines(stream, into: list[str]) -> threading.Thread:
    def read() -> None:
        for line in stream:
            into.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _assert_every_trial_once(url: str, trials: int) -> list[optuna.trial.FrozenTrial]:
    """The study holds `trials` finished designs, each trained once, nothing left running or
    queued, and every interrupted trial retried exactly once; returns the failed trials."""
    study = optuna.load_study(study_name="t", storage=open_storage(url))
    by_state = Counter(t.state for t in study.trials)
    assert by_state[TrialState.RUNNING] == by_state[TrialState.WAITING] == 0, by_state
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == trials, by_state
    designs = Counter(tuple(sorted(t.params.items())) for t in done)
    assert max(designs.values()) == 1, designs
    retries = Counter(t.user_attrs.get("retry_of") for t in study.trials)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert all(retries[t.number] == 1 for t in failed), (failed, retries)
    return failed


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_search_ends_with_its_summary(tmp_path, tiny_fmnist):
    url = str(tmp_path / "s.journal")
    search = _search(url, tiny_fmnist, tmp_path, trials=3)
    try:
        victim = _training(url, time.time() + 600)
        workers = tmp_path / ".workers"
        pid = int((workers / f"{victim.user_attrs['worker']}.lock").read_text())
        os.kill(pid, signal.SIGKILL)
        out, err = search.communicate(timeout=900)
    finally:
        search.kill()
    assert search.returncode == 0, err
    assert "study 't': 3 complete" in out  # the summary
    assert f"(pid {pid}) was killed by SIGKILL" in err and "replacement 1 of 2" in err
    assert "1 worker(s) died and 1 were replaced (up to 2 replacements in a run)" in err
    [killed] = _assert_every_trial_once(url, 3)
    assert killed.number == victim.number


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_gone_for_seconds_mid_search_loses_no_trial(postgres_url, tiny_fmnist, tmp_path):
    server = urlsplit(postgres_url)
    proxy = TcpProxy((server.hostname, server.port or 5432))
    proxy.start()
    url = proxy.url(postgres_url)
    search = _search(url, tiny_fmnist, tmp_path, trials=3)
    err: list[str] = []
    reader = _lines(search.stderr, err)
    try:
        _training(postgres_url, time.time() + 600)
        proxy.stop()  # the server "restarts": every connection closed, new ones refused
        down = time.time()
        while time.time() - down < 3 or (
            not any("retrying in" in line for line in err) and time.time() - down < 30
        ):
            time.sleep(0.2)
        proxy.start()
        out = search.stdout.read()
        search.wait(900)
        reader.join(10)
    finally:
        search.kill()
        proxy.stop()
    text = "".join(err)
    assert search.returncode == 0, text
    assert "study 't': 3 complete" in out
    retried = [line for line in err if "retrying in" in line]
    assert retried and all(f"127.0.0.1:{proxy.port}" in line for line in retried), text
    print(text)  # shown with -rP: what the workers said while the database was away
    _assert_every_trial_once(postgres_url, 3)
