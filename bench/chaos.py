"""Chaos benchmark for shared studies: workers killed (SIGKILL) or paused (SIGSTOP, then SIGCONT),
and the PostgreSQL server restarted, while a search runs.

    python -m bench chaos --storage journal            # a fresh journal file in a temp folder
    python -m bench chaos --storage postgres           # a fresh database on the local server
    python -m bench chaos --storage both --trials 40 --workers 4 --kills 10 --pauses 4
    python -m bench chaos --storage postgres --restarts 3 --kills 6 --unreplaced 2

Four worker processes (one torch thread each, heartbeats every 2 s) run one study at the smoke
budget. Every few seconds a random live worker is killed with SIGKILL and a new one started in
its place, or paused with SIGSTOP for `--pause-s` seconds (past the heartbeat grace, so on
PostgreSQL another worker fails its trial and retries it) and resumed with SIGCONT, until the
requested numbers of kills and pauses; then the survivors finish. The last `--unreplaced`
kills start no new worker (a search whose replacements are used up: the others must finish its
trials). On PostgreSQL, `--restarts` times the server goes away for `--restart-s` seconds: the
workers reach it through a TCP proxy (`TcpProxy`) that is stopped, every connection closed and new
ones refused, and started again; the workers retry their calls meanwhile (a restart longer than
the 4 s heartbeat grace also fails the running trials as stale, to be retried). At the end the
study must hold exactly the requested number of finished search trials, each design trained once
(no duplicate retries), the v1/v2 references once each, nothing left RUNNING, and every killed
trial failed with its reason and retried exactly once. The search command run again on the study
must then exit 0 with its summary. A pause longer than the grace is taken over on a journal as on
PostgreSQL (a journal's heartbeats are files beside it). Prints one result line per storage
(faults survived, trials lost, duplicated, left RUNNING, exit code, summary) for BENCHMARKS.md;
exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import sys
from explorer.search import SearchSettings, run_worker
s = SearchSettings(trials=int(sys.argv[3]), study="chaos", storage=sys.argv[1], budget="smoke", rungs=1,
                   device="cpu", data_dir=sys.argv[2] or None, quiet=True, weights=False,
                   workers=int(sys.argv[4]), heartbeat_s=2)
run_worker(s, worker_index=0)
"""


class TcpProxy:
    """A TCP proxy from 127.0.0.1:`port` to `target`, stopped and started again at will as
    Toxiproxy does: stopped, it closes every connection it carries and refuses new ones, which is
    what a restarting database server looks like from its clients."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        if not port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._guard = threading.Lock()

    def url(self, url: str) -> str:
        """`url` (a database URL on the target's host and port) sent through the proxy."""
        host, port = self.target
        return url.replace(f"@{host}:{port}/", f"@127.0.0.1:{self.port}/")

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and close every open one."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            server.close()
        with self._guard:
            open_, self._open = self._open, set()
        for sock in open_:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._guard:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def start(url: str, data: str, trials: int, workers: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, data, str(trials), str(workers)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def fresh_postgres(server: str) -> tuple[str, callable]:
    import psycopg

    base = server.rpartition("/")[0]
    name = f"explorer_chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


def chaos(url: str, args, env: dict, rng: random.Random, proxy: TcpProxy | None = None) -> dict:
    """Run the workers on `url` under the faults; `proxy` (PostgreSQL) carries their connections,
    and a restart stops it for `--restart-s`."""
    procs = [start(url, args.data_dir, args.trials, args.workers, env) for _ in range(args.workers)]
    kills, pauses, restarts, errors, reported = 0, 0, 0, [], set()
    paused: dict[subprocess.Popen, float] = {}  # a paused worker -> when it is resumed
    back_at = None  # when a stopped proxy (a restarting server) starts again
    deadline = time.time() + args.limit
    next_fault = time.time() + args.warmup
    while time.time() < deadline:
        for p, resume_at in list(paused.items()):
            if time.time() >= resume_at:
                p.send_signal(signal.SIGCONT)
                del paused[p]
        if back_at is not None and time.time() >= back_at:
            proxy.start()
            back_at = None
        for p in procs:
            if p.poll() not in (None, 0, -signal.SIGKILL) and p not in reported:
                errors.append(p.stderr.read()[-2000:])
                reported.add(p)
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            break
        faults = ["kill"] * (args.kills - kills) + ["pause"] * (args.pauses - pauses)
        if proxy is not None and back_at is None:
            faults += ["restart"] * (args.restarts - restarts)
        running = [p for p in alive if p not in paused]
        if faults and running and time.time() >= next_fault:
            victim = rng.choice(running)
            fault = rng.choice(faults)
            # The last --unreplaced kills start no new worker, as a search does once its
            # replacements are used up; one worker is always left to finish.
            replace = kills < args.kills - args.unreplaced
            if fault == "kill" and (replace or len(running) > 1):
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                kills += 1
                if replace:
                    procs.append(start(url, args.data_dir, args.trials, args.workers, env))
            elif fault == "pause":
                victim.send_signal(signal.SIGSTOP)
                paused[victim] = time.time() + args.pause_s
                pauses += 1
            elif fault == "restart":
                proxy.stop()
                back_at = time.time() + args.restart_s
                restarts += 1
            next_fault = time.time() + rng.uniform(args.every * 0.5, args.every * 1.5)
        time.sleep(0.2)
    if back_at is not None:
        proxy.start()
    for p in paused:
        p.send_signal(signal.SIGCONT)
    for p in procs:
        if p.poll() is None:
            p.kill()
            errors.append("a worker was still running at the time limit")
    return {"kills": kills, "pauses": pauses, "restarts": restarts, "errors": errors}


def check(url: str, trials: int) -> dict:
    import optuna

    from explorer.analysis import study_records
    from explorer.store import open_storage

    study = optuna.load_study(study_name="chaos", storage=open_storage(url))
    all_trials = study_records(study)
    done = ("COMPLETE", "PRUNED")
    search = [t for t in all_trials if t.state in done and not t.reference and not t.skipped]
    refs = Counter(t.reference for t in all_trials if t.state in done and t.reference)
    running = [t.number for t in all_trials if t.state == "RUNNING"]
    killed = [
        t
        for t in all_trials
        if t.state == "FAIL" and (t.fail_reason is None or t.fail_reason.startswith("interrupted"))
    ]
    retries = Counter(t.retry_of for t in all_trials if t.retry_of is not None)
    trained = [t for t in all_trials if t.state in done and t.duplicate_of is None]
    by_design = Counter(tuple(sorted(t.suggested.items())) for t in trained)
    duplicates = sum(n - 1 for n in by_design.values() if n > 1)
    # A killed run needs exactly one retry (a retry's retry counts for the retry); a design whose
    # last run got none was given up (`explorer.store.stale.deaths_allowed`) and is lost: under
    # random faults no design is at fault. A trial interrupted before its design was drawn
    # (reserved, then killed or paused before its first suggestion) has no design to lose.
    designed = [t for t in killed if t.suggested]
    lost = [t.number for t in designed if retries.get(t.number, 0) != 1]
    undrawn = len(killed) - len(designed)
    by_number = {t.number: t for t in all_trials}
    for n in lost:  # what became of each lost trial: its tags and its retries, for the reader
        t = by_number[n]
        after = [(r.number, r.state, r.attempt, r.fail_reason) for r in all_trials
                 if r.retry_of == n]  # fmt: skip
        print(f"lost #{n}: reference {t.reference}, attempt {t.attempt}, {t.fail_reason!r}, "
              f"retries {after}", file=sys.stderr)  # fmt: skip
    return {
        "search_trials": len(search),
        "references": dict(refs),
        "running": running,
        "killed_trials": len(killed),
        "retried_twice": [n for n, c in retries.items() if c > 1],
        "lost": lost,
        "undrawn": undrawn,
        "duplicates": duplicates,
        "ok": len(search) == trials
        and refs.get("v1") == 1
        and refs.get("v2") == 1
        and not running
        and not lost
        and duplicates == 0
        and all(c == 1 for c in retries.values()),
    }


def resume(url: str, args, env: dict) -> tuple[int, bool]:
    """The search command run again on the study the faults left (as a user would after them):
    its exit code, and whether it printed the study's summary. With every trial there it trains
    nothing more."""
    cmd = [sys.executable, "-m", "explorer.search", "--study", "chaos", "--storage", url,
           "--trials", str(args.trials), "--budget", "smoke", "--rungs", "1", "--device", "cpu",
           "--workers", "1", "--verify-seeds", "0", "--no-weights", "--quiet"]  # fmt: skip
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, "study 'chaos':" in done.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", choices=("journal", "postgres", "both"), default="both")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--pauses", type=int, default=0, help="workers paused (SIGSTOP) and resumed")
    p.add_argument("--pause-s", type=float, default=30.0,
                   help="seconds a paused worker stays paused (past the 4 s heartbeat grace and "
                   "the 20 s recovery timer)")  # fmt: skip
    p.add_argument("--unreplaced", type=int, default=0,
                   help="of the kills, the last this many start no new worker (a search whose "
                   "replacements are used up); one worker is always left to finish")  # fmt: skip
    p.add_argument("--restarts", type=int, default=0,
                   help="PostgreSQL restarts: the workers reach the server through a TCP proxy "
                   "(bench.chaos.TcpProxy) that is stopped, every connection closed, for "
                   "--restart-s and started again")  # fmt: skip
    p.add_argument("--restart-s", type=float, default=5.0,
                   help="seconds the server is away (under the workers' 60 s of retries)")  # fmt: skip
    p.add_argument("--every", type=float, default=6.0, help="mean seconds between faults")
    p.add_argument("--warmup", type=float, default=15.0, help="seconds before the first kill")
    p.add_argument("--limit", type=float, default=1500.0, help="give up after this many seconds")
    p.add_argument("--data-dir", default="", help="dataset folder (default: the system's)")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    ok = True
    kinds = ("journal", "postgres") if args.storage == "both" else (args.storage,)
    for kind in kinds:
        tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
        env = os.environ | {
            "OMP_NUM_THREADS": "1",
            "EXPLORER_STUDIES_DIR": str(tmp / "studies"),
        }
        drop, proxy = None, None
        if kind == "journal":
            url = str(tmp / "chaos.journal")
        else:
            url, drop = fresh_postgres(args.postgres)
            if args.restarts:
                server = urlsplit(url)
                proxy = TcpProxy((server.hostname, server.port or 5432))
                proxy.start()
        start_s = time.time()
        try:
            run = chaos(proxy.url(url) if proxy else url, args, env, rng, proxy)
            result = check(url, args.trials)
            code, summary = resume(url, args, env)
        finally:
            if proxy is not None:
                proxy.stop()
            if drop is not None:
                drop()
        wall = time.time() - start_s
        ok &= result["ok"] and not run["errors"] and code == 0 and summary
        print(
            f"{kind}: {run['kills']} kills ({min(args.unreplaced, run['kills'])} unreplaced), "
            f"{run['pauses']} pauses and {run['restarts']} server restarts survived, "
            f"{result['killed_trials']} trials interrupted, "
            f"{result['undrawn']} of them before a design was drawn, "
            f"lost {len(result['lost'])} {result['lost']}, duplicated {result['duplicates']}, "
            f"{result['search_trials']}/{args.trials} search trials, references "
            f"{result['references']}, running {len(result['running'])}, worker errors "
            f"{len(run['errors'])}, the search command again: exit {code}, summary "
            f"{'printed' if summary else 'NOT printed'}, "
            f"{'ok' if result['ok'] else 'FAILED'} in {wall:.0f} s",
            flush=True,
        )
        for e in run["errors"]:
            print(f"  worker error: {e.strip().splitlines()[-1] if e.strip() else e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
