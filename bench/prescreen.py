"""Does pre-screening with a zero-cost proxy find a better front in the same wall time?

    python -m bench prescreen --seconds 100 --seeds 0 1 2 --m 4 --proxy naswot [--write]

For each seed, two searches from scratch on the smoke budget, each given the same wall time: the
search as `explorer.search.run_worker` runs it (multi-objective TPE, pruning on), and the same
search with ``--prescreen M``, where every trial trains the candidate
`explorer.search.prescreen.Prescreener` chooses among M proposals of that sampler (the time spent scoring
candidates counts against the search). Both single-budget (``--rungs 1``, as the search was when
the figures in BENCHMARKS.md were taken), without references (they are the same in both arms),
kept weights or per-trial proxy scores (neither is what is compared). The front of each is judged
by the hypervolume of (validation accuracy, parameters) over the trials finished within the time
(`explorer.analysis.hypervolume`). With ``--write`` the table replaces the "Pre-screening with a
proxy" section of BENCHMARKS.md (for another budget, a section of its own); ``--parallel 2`` runs
two searches at a time.

    python -m bench prescreen --seconds 20 --seeds 0   # a sanity run of under a minute
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date, timedelta

import optuna

from explorer.analysis import RULE, compare, hypervolume, pareto_front, study_records
from explorer.search import SearchSettings, run_worker
from explorer.store import load_study, trial_attr
from explorer.training import PROXY_NAMES, budget, usable_cpus

from ._common import machine, write_section

SECTION = "Pre-screening with a proxy"
STUDY = "prescreen"


def settings(
    seed: int, m: int, proxy: str, seconds: float, budget_name: str, threads: int, url: str
) -> SearchSettings:
    """One arm's search: m = 1 is the plain search, m > 1 pre-screens m candidates per trial."""
    return SearchSettings(
        trials=100_000,  # the time stops it
        study=STUDY,
        storage=url,
        budget=budget_name,
        seed=seed,
        device="cpu",
        rungs=1,
        references=False,
        weights=False,
        proxies=False,
        prescreen=m,
        proxy=proxy,
        timeout=seconds,
        quiet=True,
        # run_worker gives each worker usable_cpus() // workers torch threads; the one worker
        # here thus trains with about `threads` of them.
        workers=max(1, usable_cpus() // threads),
    )


def run_arm(
    seed: int, m: int, proxy: str, seconds: float, budget_name: str, threads: int, folder: str
) -> dict[str, float]:
    """One search of `seconds` wall time, counted from the start of `run_worker` (the dataset's
    loading included, alike in both arms); what it found in that time."""
    url = f"{folder}/s{seed}-m{m}.journal"
    s = settings(seed, m, proxy, seconds, budget_name, threads, url)
    start = time.time()
    run_worker(s)
    deadline = start + seconds
    study = load_study(url, STUDY)
    trials = study.get_trials(deepcopy=False)
    # Only what finished within the time: the last trial may run past the timeout.
    done = [
        t
        for t in trials
        if t.datetime_complete is not None and t.datetime_complete.timestamp() <= deadline
    ]
    kept = {t.number for t in done}
    records = [r for r in study_records(study) if r.number in kept]
    complete = [r for r in records if r.complete]
    screens = [trial_attr(t, "prescreen") for t in trials]  # a queued, unrun choice counts too
    return {
        "hv": hypervolume(records),
        "trials": len(done),
        "complete": len(complete),
        "front": len(pareto_front(records)),
        "best_acc": max((r.val_acc for r in complete), default=float("nan")),
        "screen_s": sum(a.get("time_s", 0.0) for a in screens if a),
    }


def _arm(seed: int, m: int, args: argparse.Namespace, folder: str) -> dict[str, float]:
    return run_arm(seed, m, args.proxy, args.seconds, args.budget, args.threads, folder)


def run_all(jobs: list[tuple[int, int]], args: argparse.Namespace, folder: str):
    """(job, result) for each (seed, m), `args.parallel` searches at a time, in job order."""
    if args.parallel == 1:
        for job in jobs:
            yield job, _arm(*job, args, folder)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.parallel, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_arm, *job, args, folder) for job in jobs]
        for job, future in zip(jobs, futures):
            yield job, future.result()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="sanity run: python -m bench prescreen --seconds 20 --seeds 0",
    )
    p.add_argument("--seconds", type=float, default=100.0, help="wall time of each search")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--m", type=int, default=4, help="candidates per trained trial (at least 2)")
    p.add_argument("--proxy", default="naswot", choices=PROXY_NAMES)
    p.add_argument("--budget", default="smoke")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each search")
    p.add_argument("--parallel", type=int, default=1, help="searches at a time (one process each)")
    p.add_argument("--write", action="store_true", help="replace the BENCHMARKS.md section")
    args = p.parse_args()
    if args.m < 2 or args.threads < 1 or args.parallel < 1 or args.seconds <= 0:
        p.error("--m must be at least 2, --threads and --parallel at least 1, --seconds positive")
    try:
        budget(args.budget)  # a bad name fails here, before any search
    except ValueError as exc:
        p.error(str(exc))
    return args


def report(rows: list[tuple[int, int, dict]], args: argparse.Namespace) -> str:
    """The section: the command, the machine, the table per seed and the verdict."""
    table = [
        "| seed | hypervolume, plain | hypervolume, pre-screened | trials, plain | trials, pre-screened | time spent screening |",
        "|---|---|---|---|---|---|",
    ]
    diffs = []
    for seed in args.seeds:
        off = next(r for s_, m, r in rows if s_ == seed and m == 1)
        on = next(r for s_, m, r in rows if s_ == seed and m == args.m)
        diffs.append(on["hv"] - off["hv"])
        table.append(
            f"| {seed} | {off['hv']:.4f} | {on['hv']:.4f} | {off['trials']} | {on['trials']} | "
            f"{on['screen_s']:.1f} s |"
        )
    mean_off = statistics.fmean(r["hv"] for _, m, r in rows if m == 1)
    mean_on = statistics.fmean(r["hv"] for _, m, r in rows if m == args.m)
    wins = sum(d > 0 for d in diffs)
    verdict = (
        f"Mean hypervolume {mean_off:.4f} plain, {mean_on:.4f} pre-screened; pre-screened minus "
        f"plain, paired by seed: {compare(diffs).text()} ({RULE}); pre-screening won on {wins} "
        f"of {len(diffs)} seeds."
    )
    parallel = args.parallel > 1
    return "\n".join(
        [
            f"`python -m bench prescreen --seconds {args.seconds:g} --seeds "
            f"{' '.join(map(str, args.seeds))} --m {args.m} --proxy {args.proxy} --budget {args.budget}"
            f"{f' --parallel {args.parallel}' if parallel else ''}` "
            f"({date.today().isoformat()}; {machine()}, {args.threads} torch thread(s) per search"
            f"{f'; {args.parallel} searches at a time' if parallel else ''}).",
            "",
            f"Each search ran {timedelta(seconds=args.seconds)} of wall time on the `{args.budget}` budget "
            "from an empty study (single-budget, no references, pruning on as in the default "
            "search); pre-screened: each trained trial is the choice "
            f"among M = {args.m} proposals of the study's TPE sampler, scored by {args.proxy} "
            "(a candidate is passed over only when another scores higher at no more parameters). "
            "Hypervolume of (validation accuracy, parameters) over the trials finished in time.",
            "",
            *table,
            "",
            verdict,
        ]
    )


def main() -> None:
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    jobs = [(seed, m) for seed in args.seeds for m in (1, args.m)]
    with tempfile.TemporaryDirectory() as folder:
        # Both arms of a seed start together, so they share the machine's state alike.
        for (seed, m), r in run_all(jobs, args, folder):
            rows.append((seed, m, r))
            print(
                f"seed {seed} M={m}: hv {r['hv']:.4f}, {r['trials']} trials "
                f"({r['complete']} complete), front {r['front']}, best acc {r['best_acc']:.4f}, "
                f"screening {r['screen_s']:.1f} s",
                flush=True,
            )
    body = report(rows, args)
    print("\n" + body)
    if args.write:
        # The smoke comparison keeps the plain title; other budgets get a section of their own.
        title = SECTION if args.budget == "smoke" else f"{SECTION}, budget {args.budget}"
        write_section(title, body)


if __name__ == "__main__":
    main()
