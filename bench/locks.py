"""How long a claim holds the study's lock, at 2,000 finished trials, with 1 and 8 claiming processes.

    python -m bench locks                                 # journal and PostgreSQL, 1 and 8 processes
    python -m bench locks --storage postgres --processes 8 --claims 40
    python -m bench locks --write                         # also write the BENCHMARKS.md section
    python -m bench locks --breakdown --storage postgres  # one process: where its hold goes

Fills a fresh study (a journal file in a temporary folder, or a fresh database on the local
PostgreSQL server) with synthetic finished trials over three rungs (by default 1,500 / 375 / 125:
each rung a quarter of the one below), with the user attributes a real trial stores (its design,
costs, curves). Then N processes, started at the same moment, each make `--claims` claims
(`explorer.search.Claimer`, the default TPE sampler at the bottom rung) and finish each claimed
trial at once with synthetic values, as a worker would after training. Each claim's time and the
time it held the study's lock (`explorer.store.HOLDS`) are collected; the table gives their
median and 95th percentile. Target (issue 27): lock hold under 50 ms median and under 200 ms at
p95 with 8 processes at 2,000 trials. `--breakdown` makes the claims in one process and times the
steps taken under the lock: the reads of the rungs, the trials created, taking a queued trial.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import optuna
from optuna.trial import TrialState

from explorer.search import Claimer, Done, SearchSettings, Wait, open_search_study
from explorer.store import HOLDS, open_storage, rung_studies, storage_of
from search_space import DEFAULT_SPACE, NetworkConfig, config_from_trial

from ._common import ROOT, machine, write_section

SECTION = "Claim lock hold at 2,000 trials"
STUDY = "locks"


def _design(rng: random.Random) -> tuple[dict, dict]:
    """(params, distributions) of a random valid design of the space."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=rng.randrange(1 << 30)))
    while True:
        trial = study.ask()
        try:
            config_from_trial(trial, DEFAULT_SPACE)
        except ValueError:
            continue
        return dict(trial.params), dict(trial.distributions)


def _attrs(params: dict, rng: random.Random, rung: int, parent: int | None) -> dict:
    block = DEFAULT_SPACE.config_from_params(params)
    net = NetworkConfig(block=block, in_channels=1, num_classes=10, image_size=28, width=0.25)
    acc = [round(rng.uniform(0.3, 0.9), 4) for _ in range(4)]
    attrs = {"network": net.to_dict(), "params": rng.randrange(2_000, 60_000),
             "flops": float(rng.randrange(10**6, 10**7)), "latency_ms": rng.uniform(1, 5),
             "val_acc": acc[-1], "val_loss": 1 - acc[-1], "seed": 0, "budget": "smokex9",
             "curves": {"epoch": [1, 2, 3, 4], "val_acc": acc, "train_loss": [1.0] * 4,
                        "val_loss": [1.0] * 4}, "rung": rung, "worker": "synthetic"}  # fmt: skip
    if parent is not None:
        attrs["parent"] = parent
        attrs["promotion"] = {"from_rung": rung - 1, "rank": 0, "among": 1}
    return attrs


def fill(url: str, counts: tuple[int, ...], seed: int = 0) -> None:
    """Make the study and add `counts` synthetic finished trials to its rungs, bottom first."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = SearchSettings(trials=10**6, study=STUDY, storage=url, budget="smokex9", rungs=3,
                       device="cpu", references=False)  # fmt: skip
    storage = open_storage(url)
    study, config = open_search_study(s, storage, url, "smokex9")
    rungs = rung_studies(storage, study, config)
    rng = random.Random(seed)
    below: list[tuple[dict, dict]] = []
    for rung, count in enumerate(counts):
        designs = [_design(rng) for _ in range(count)] if rung == 0 else below[:count]
        trials = []
        for number, (params, dists) in enumerate(designs):
            attrs = _attrs(params, rng, rung, number if rung else None)
            trials.append(optuna.trial.create_trial(
                params=params, distributions=dists, values=[attrs["val_acc"], attrs["params"]],
                user_attrs=attrs, state=TrialState.COMPLETE))  # fmt: skip
        rungs[rung].add_trials(trials)
        below = designs


def claim_loop(url: str, claims: int, start_at: float, out: Path) -> None:
    """One claiming process: `claims` claims, each claimed trial told complete at once."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    s = SearchSettings(trials=10**6, study=STUDY, storage=url, device="cpu")
    storage = open_storage(url)
    study, config = open_search_study(s, storage, url, "smokex9")
    rungs = rung_studies(storage, study, config)
    rungs[0].sampler = optuna.samplers.TPESampler(seed=os.getpid(), multivariate=True, group=True,
                                                  constant_liar=True)  # fmt: skip
    claimer = Claimer(rungs, config, url, target=10**6)
    claimer.recover()  # once before timing: the first recovery reads every trial
    time.sleep(max(0.0, start_at - time.time()))
    rows, rng = [], random.Random(os.getpid())
    for _ in range(claims):
        before = len(HOLDS)
        t0 = time.perf_counter()
        claim = claimer()
        took = time.perf_counter() - t0
        holds = [h for name, h in HOLDS[before:] if name == f"study:{STUDY}"]
        rows.append({"claim_s": took, "hold_s": sum(holds), "rung": getattr(claim, "rung", None)})
        if isinstance(claim, (Wait, Done)):
            continue
        trial = claim.trial
        if claim.rung == 0:
            with contextlib.suppress(ValueError):  # an invalid design is told all the same
                config_from_trial(trial, DEFAULT_SPACE)
        trial.set_user_attr("val_acc", rng.uniform(0.3, 0.9))
        claim.trial.study.tell(trial, [rng.uniform(0.3, 0.9), rng.randrange(2_000, 60_000)])
    out.write_text(json.dumps(rows))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, processes: int, claims: int) -> dict:
    """Run `processes` claiming processes at once; the pooled claim and hold times."""
    folder = Path(tempfile.mkdtemp(prefix="locks-"))
    start_at = time.time() + 20 + 2 * processes  # every process has imported and opened by then
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench",
                "locks",
                "--child",
                url,
                str(claims),
                str(start_at),
                str(folder / f"{i}.json"),
            ],
            cwd=ROOT,
        )  # fmt: skip
        for i in range(processes)
    ]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a claiming process failed (exit {p.returncode})")
    rows = [r for i in range(processes) for r in json.loads((folder / f"{i}.json").read_text())]
    holds = [r["hold_s"] * 1000 for r in rows]
    times = [r["claim_s"] * 1000 for r in rows]
    return {
        "claims": len(rows),
        "hold_median": statistics.median(holds),
        "hold_p95": _percentile(holds, 0.95),
        "claim_median": statistics.median(times),
        "claim_p95": _percentile(times, 0.95),
        "promotions": sum(1 for r in rows if r["rung"]),
    }


def breakdown(url: str, claims: int) -> dict:
    """One process's claims on a filled study, with the time of each step under the lock per
    claim (ms): reads of the rungs (and how many), trials created (promotions and new designs),
    queued trials taken."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    s = SearchSettings(trials=10**6, study=STUDY, storage=url, device="cpu")
    storage = open_storage(url)
    study, config = open_search_study(s, storage, url, "smokex9")
    rungs = rung_studies(storage, study, config)
    claimer = Claimer(rungs, config, url, target=10**6)
    claimer.recover()
    spent: dict[str, list[float]] = {"read": [], "create": [], "take": []}
    inside = [False]

    def timed(label, f, always=False):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                if always or inside[0]:
                    spent[label].append(time.perf_counter() - t0)

        return run

    def reserve(self, candidates, _reserve=Claimer._reserve):
        inside[0] = True
        try:
            return _reserve(self, candidates)
        finally:
            inside[0] = False

    for rung in rungs.values():
        rung.get_trials = timed("read", rung.get_trials)
    backend = storage_of(study)  # every rung's trials are made through the one storage
    backend.create_new_trial = timed("create", backend.create_new_trial)
    take = timed("take", Claimer._pop_waiting, always=True)
    old = (Claimer._reserve, Claimer._pop_waiting)
    Claimer._reserve, Claimer._pop_waiting = reserve, staticmethod(take)
    rng, holds = random.Random(0), []
    try:
        for i in range(claims + 3):  # the first three warm the caches
            before = len(HOLDS)
            claim = claimer()
            if i == 2:
                for v in spent.values():
                    v.clear()
            elif i > 2:
                holds += [h for name, h in HOLDS[before:] if name == f"study:{STUDY}"]
            if isinstance(claim, (Wait, Done)):
                continue
            claim.trial.study.tell(claim.trial, [rng.uniform(0.3, 0.9), 3000])
    finally:
        Claimer._reserve, Claimer._pop_waiting = old
    per = {k: 1000 * sum(v) / claims for k, v in spent.items()}
    return {"hold_median": 1000 * statistics.median(holds), "reads": len(spent["read"]) / claims,
            **per}  # fmt: skip


def fresh_storage(kind: str, server: str, folder: Path) -> tuple[str, callable]:
    """A fresh journal file or PostgreSQL database, and the function that removes it."""
    if kind == "journal":
        return str(folder / f"{uuid.uuid4().hex[:8]}.journal"), lambda: None
    import psycopg  # only where PostgreSQL is measured

    name = f"explorer_locks_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{server.rpartition('/')[0]}/{name}", drop


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--storage", choices=("journal", "postgres", "both"), default="both")
    p.add_argument("--server", default=os.environ.get("EXPLORER_TEST_POSTGRES",
                   "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="PostgreSQL server URL (a database on it to connect to)")  # fmt: skip
    p.add_argument("--trials", type=int, nargs=3, default=(1500, 375, 125), metavar="N",
                   help="finished trials per rung, bottom first")  # fmt: skip
    p.add_argument("--processes", type=int, nargs="+", default=(1, 8))
    p.add_argument("--claims", type=int, default=30, help="claims per process")
    p.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    p.add_argument("--breakdown", action="store_true",
                   help="one process: time each step under the lock (printed, not written)")  # fmt: skip
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = build_parser().parse_args()
    if args.child:
        url, claims, start_at, out = args.child
        claim_loop(url, int(claims), float(start_at), Path(out))
        return
    kinds = ("journal", "postgres") if args.storage == "both" else (args.storage,)
    if args.breakdown:
        print(f"{machine()}; {date.today()}; `python -m bench locks --breakdown --storage "
              f"{args.storage} --claims {args.claims}`; ms per claim, one process\n\n"
              "| storage | lock hold median | rung reads (per claim) | trials created | "
              "queued trials taken |\n|---|---|---|---|---|")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for kind in kinds:
                url, drop = fresh_storage(kind, args.server, Path(tmp))
                try:
                    fill(url, tuple(args.trials))
                    r = breakdown(url, args.claims)
                finally:
                    drop()
                print(f"| {kind} | {r['hold_median']:.1f} | {r['read']:.1f} ({r['reads']:.1f}) | "
                      f"{r['create']:.1f} | {r['take']:.1f} |", flush=True)  # fmt: skip
        return
    lines = [f"{machine()}; {date.today()}; `python -m bench locks "
             f"--storage {args.storage} --claims {args.claims}`", "",
             f"{sum(args.trials):,} finished trials ({' / '.join(map(str, args.trials))} by rung); "
             "times in ms over every claim of every process", "",
             "| storage | processes | claims | lock hold median | lock hold p95 | claim median "
             "| claim p95 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for n in args.processes:
                url, drop = fresh_storage(kind, args.server, Path(tmp))
                try:
                    fill(url, tuple(args.trials))
                    r = measure(url, n, args.claims)
                finally:
                    drop()
                line = (f"| {kind} | {n} | {r['claims']} | {r['hold_median']:.1f} | "
                        f"{r['hold_p95']:.1f} | {r['claim_median']:.0f} | {r['claim_p95']:.0f} |")  # fmt: skip
                print(line, flush=True)
                lines.append(line)
    print("\n".join(lines))
    if args.write:
        write_section(SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
