"""Does pre-screening with a zero-cost proxy find a better front in the same wall time?

    python bench/prescreen.py --seconds 100 --seeds 0 1 2 --m 4 --proxy naswot [--write]

For each seed, two searches from scratch on the smoke budget, each given the same wall time: the
default search (multi-objective TPE), and the same search where every trial trains the candidate
`explorer.proxies.Prescreener` chooses among M proposals of that sampler (the time spent scoring
candidates counts against the search). Both without references (they are the same in both arms)
and without kept weights, with the default search's pruning. The front of each is judged by the hypervolume of (validation accuracy,
parameters) over the trials finished within the time (`explorer.results.hypervolume`). With
``--write`` the table replaces the "Pre-screening with a proxy" section of BENCHMARKS.md (for
another budget, a section of its own); ``--parallel 2`` runs two searches at a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

from bench.proxies import machine, write_section  # noqa: E402
from explorer import train  # noqa: E402
from explorer.data import load_dataset  # noqa: E402
from explorer.proxies import Prescreener  # noqa: E402
from explorer.results import hypervolume, pareto_front, study_records  # noqa: E402
from explorer.search import (  # noqa: E402
    Objective,
    SearchSettings,
    TrialFailed,
    create_or_load_study,
    make_sampler,
)
from explorer.storage import open_storage  # noqa: E402

SECTION = "Pre-screening with a proxy"


def run_arm(
    seed: int, m: int, proxy: str, seconds: float, budget: str, folder: str
) -> dict[str, float]:
    """One search of `seconds` wall time; m = 1 is the plain search."""
    url = f"{folder}/s{seed}-m{m}.journal"
    s = SearchSettings(
        trials=100_000,
        storage=url,
        budget=budget,
        seed=seed,
        device="cpu",
        references=False,
        keep_weights=False,
        quiet=True,
    )
    device = torch.device("cpu")
    data = load_dataset(s.dataset, seed=s.seed).on(device)
    study = create_or_load_study(s, open_storage(url), budget)
    study.sampler = make_sampler(s.sampler, s.seed)
    objective = Objective(s, budget, data, device, url)
    callbacks = []
    start = time.time()
    pre = None
    if m > 1:
        pre = Prescreener(
            m=m,
            network=objective.network,
            make_sampler=lambda n: make_sampler(s.sampler, s.seed + n),
            data=data,
            device=device,
            proxy=proxy,
            seed=s.seed,
        )
        pre(study)
        callbacks.append(pre)
    study.optimize(objective, timeout=seconds, catch=(TrialFailed,), callbacks=callbacks)
    deadline = start + seconds
    # Only what finished within the time: the last trial may run past the timeout.
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.datetime_complete is not None and t.datetime_complete.timestamp() <= deadline
    ]
    kept = {t.number for t in done}
    records = [r for r in study_records(study) if r.number in kept]
    complete = [r for r in records if r.complete]
    return {
        "hv": hypervolume(records),
        "trials": len(done),
        "complete": len(complete),
        "front": len(pareto_front(records)),
        "best_acc": max((r.val_acc for r in complete), default=float("nan")),
        "screen_s": sum(a["time_s"] for a in pre.log) if pre else 0.0,
    }


def _arm(seed: int, m: int, args: argparse.Namespace, folder: str) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are counted, not traced
    return run_arm(seed, m, args.proxy, args.seconds, args.budget, folder)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=100.0, help="wall time of each search")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--m", type=int, default=4, help="candidates per trained trial")
    p.add_argument("--proxy", default="naswot")
    p.add_argument("--budget", default="smoke")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=1, help="searches at a time (one process each)")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train.budget(args.budget)  # a bad name fails here, before any search

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
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    verdict = (
        f"Mean hypervolume {mean_off:.4f} plain, {mean_on:.4f} pre-screened (difference "
        f"{statistics.fmean(diffs):+.4f}, standard deviation over seeds {sd:.4f}); pre-screening "
        f"won on {wins} of {len(diffs)} seeds."
    )
    body = "\n".join(
        [
            f"`python bench/prescreen.py --seconds {args.seconds:g} --seeds "
            f"{' '.join(map(str, args.seeds))} --m {args.m} --proxy {args.proxy} --budget {args.budget}"
            f"{f' --parallel {args.parallel}' if args.parallel > 1 else ''}` "
            f"({date.today().isoformat()}; {machine()}"
            f"{f'; {args.parallel} searches at a time' if args.parallel > 1 else ''}).",
            "",
            f"Each search ran {timedelta(seconds=args.seconds)} of wall time on the `{args.budget}` budget "
            "from an empty study (no references, pruning on as in the default search); "
            "pre-screened: each trained trial is the choice "
            f"among M = {args.m} proposals of the study's TPE sampler, scored by {args.proxy} "
            "(a candidate is passed over only when another scores higher at no more parameters). "
            "Hypervolume of (validation accuracy, parameters) over the trials finished in time.",
            "",
            *table,
            "",
            verdict,
        ]
    )
    print("\n" + body)
    if args.write:
        # The smoke comparison keeps the plain title; other budgets get a section of their own.
        title = SECTION if args.budget == "smoke" else f"{SECTION}, budget {args.budget}"
        write_section(title, body)


if __name__ == "__main__":
    main()
