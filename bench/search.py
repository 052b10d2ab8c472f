"""Search benchmarks: the default 100-trial run, default sampler against random, pruning's effect.

    python -m bench search default            # wall time of `python -m explorer.search --trials 100`
    python -m bench search samplers           # hypervolume, tpe vs random, 3 seeds, smoke budget
    python -m bench search prune              # time saved and front quality lost by pruning
    python -m bench search timeout --budget quickx3 --limits 300  # does --timeout T end by T + 10 s?

Each mode prints a table and replaces its own section of BENCHMARKS.md (command, machine, date).
Hypervolume is on (validation accuracy, parameters) against the fixed reference point
`explorer.analysis.hypervolume_spec(None)` (accuracy 0, the space's largest design at width 0.25),
normalised to [0, 1].
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import optuna

from explorer.analysis import (
    RULE,
    compare,
    hypervolume,
    hypervolume_spec,
    pareto_front,
    reeval_results,
    study_records,
)
from explorer.search import (
    HELD,
    NOT_HELD,
    UNCHECKED,
    UNDECIDED,
    SearchSettings,
    run_worker,
    verification_budget_name,
    verified_claims,
)
from explorer.store import open_storage, study_config

from ._common import ROOT, machine, provenance, publish, timed


def front_vs_refs(records) -> list[str]:
    lines = []
    front = pareto_front(records)
    for ref in ("v1", "v2"):
        r = next((x for x in records if x.reference == ref and x.complete), None)
        if r is None:
            continue
        better = [
            f for f in front if not f.reference and f.val_acc > r.val_acc and f.params <= r.params
        ]
        on_front = any(f.number == r.number for f in front)
        lines.append(
            f"- {ref}: val acc {r.val_acc:.4f}, {r.params:,} params, "
            f"{'on' if on_front else 'behind'} the front; {len(better)} found design(s) dominate it"
            + (
                f" (best: #{max(better, key=lambda f: f.val_acc).number}, "
                f"{max(f.val_acc for f in better):.4f})"
                if better
                else ""
            )
        )
    return lines


def mode_default(args) -> None:
    """Time `python -m explorer.search --trials N` with every default, the search and its
    verification of claims apart (the verification starts at its first "verifying" line on
    stderr), and say which claims against v1/v2 it checked and which it states."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or str(Path(tmp) / "s.journal")
        if Path(storage).exists():
            sys.exit(f"{storage} exists: the benchmark times a fresh study")
        cmd = [sys.executable, "-m", "explorer.search", "--trials", str(args.trials),
               "--storage", storage]  # fmt: skip
        start = time.perf_counter()
        verifying = None
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        for line in proc.stderr:
            sys.stderr.write(line)
            if verifying is None and line.startswith("verifying "):
                verifying = time.perf_counter()
        out = proc.stdout.read()
        wall = time.perf_counter() - start
        if proc.wait():
            sys.exit(proc.returncode)
        print(out)
        study = optuna.load_study(
            study_name="fashion-mnist-inception-block", storage=open_storage(storage)
        )
        records = study_records(study)
        config = study_config(study)
        checks = verified_claims(study, config, records)
    states = {s: sum(r.state == s for r in records) for s in ("COMPLETE", "PRUNED", "FAIL")}
    budget = config.budget if config else "?"
    searched = (verifying or start + wall) - start
    status = {
        k: [c for c in checks if c.status == k] for k in (HELD, NOT_HELD, UNDECIDED, UNCHECKED)
    }
    body = [
        f"Command: `python -m explorer.search --trials {args.trials}` (defaults: Fashion-MNIST, "
        f"one budget `{budget}`, sampler {config.sampler if config else '?'}, pruning on, "
        "`--verify 8`, a race of 3 to 8 paired seeds a claim) via `python -m bench search default`.",
        f"Machine: {machine()}. Date: {date.today()}.",
        "",
        f"- wall time: **{wall / 60:.1f} min** for {args.trials} search designs plus the v1/v2 "
        f"references: the search {searched / 60:.1f} min, the verification of its claims "
        f"{(wall - searched) / 60:.1f} min (without --timeout it may take as long as the search "
        "took)",
        f"- trials: {states['COMPLETE']} complete, {states['PRUNED']} pruned, {states['FAIL']} failed; "
        f"hypervolume {hypervolume(records):.4f}",
        f"- claims against v1/v2 (front designs more accurate at `{budget}` with no more "
        f"parameters): {len(checks)}; raced at {verification_budget_name(study) or '-'}: "
        + "; ".join(f"{k} {len(v)}" for k, v in status.items()),
        *[f"  - {c.status}: {c.text()}" for c in checks],
        *front_vs_refs(records),
        "",
        "Pareto front (validation accuracy at the search budget):",
        "",
        "| trial | val acc | params | design |",
        "|---|---|---|---|",
        *[
            f"| {r.label()} | {r.val_acc:.4f} | {r.params:,} | `{r.block.short()}` |"
            for r in pareto_front(records)
        ],
    ]  # fmt: skip
    publish("Search: default 100-trial run", body)


def _flags(args) -> str:
    return (
        f"--trials {args.trials} --budget {args.budget} --seeds {args.seeds} "
        f"--parallel {args.parallel}"
    )


def run_one(
    sampler: str, seed: int, trials: int, budget: str, prune: bool, parallel: int = 1
) -> tuple[float, float, list]:
    """One search in this process; `parallel` searches run side by side share the cores."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        s = SearchSettings(
            trials=trials,
            study="b",
            storage=str(Path(tmp) / "s.journal"),
            budget=budget,
            device="cpu",
            seed=seed,
            sampler=sampler,
            prune=prune,
            quiet=True,
            weights=False,
            rungs=1,  # these benchmarks compare single-budget searches
            proxies=False,  # the same for every sampler; not what is compared here
            workers=parallel,  # only sets the torch threads: cores / parallel
        )
        _, wall = timed(run_worker, s)
        study = optuna.load_study(study_name="b", storage=open_storage(s.storage))
        records = study_records(study)
    return hypervolume(records), wall, records


def run_all(jobs: list[tuple], parallel: int):
    """Results of `run_one(*job, parallel)` for each job, `parallel` at a time, in job order."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(parallel, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, *job, parallel) for job in jobs]
        for job, future in zip(jobs, futures):
            yield job, future.result()


def mode_samplers(args) -> None:
    rows, hv = [], {"tpe": [], "random": []}
    dominate = {"tpe": [], "random": []}
    jobs = [
        (sampler, seed, args.trials, args.budget, True)
        for seed in range(args.seeds)
        for sampler in ("tpe", "random")
    ]
    for (sampler, seed, *_), (h, wall, records) in run_all(jobs, args.parallel):
        hv[sampler].append(h)
        front = pareto_front(records)
        refs = {r.reference: r for r in records if r.reference and r.complete}
        beats = all(
            any(
                not f.reference and f.val_acc > ref.val_acc and f.params <= ref.params
                for f in front
            )
            for ref in refs.values()
        )
        dominate[sampler].append(beats)
        rows.append(
            f"| {sampler} | {seed} | {h:.4f} | {wall / 60:.1f} | {'yes' if beats else 'no'} |"
        )
        print(rows[-1], flush=True)
    body = [
        provenance(f"python -m bench search samplers {_flags(args)}")
        + f" Searches ran {args.parallel} at a time, one torch thread each per core share, so "
        "wall times are comparable within the table only.",
        f"Hypervolume {hypervolume_spec(None).describe()}, normalised to [0, 1]; "
        f"{args.trials} search trials plus v1/v2 each, pruning on.",
        "",
        "| sampler | seed | hypervolume | wall (min) | front dominates v1 and v2 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *[
            f"- {k}: mean {statistics.mean(v):.4f} +- {statistics.stdev(v) if len(v) > 1 else 0:.4f}"
            for k, v in hv.items()
        ],
        *(
            [
                f"- tpe minus random, paired by seed: {compare([a - b for a, b in zip(hv['tpe'], hv['random'])]).text()} ({RULE})"
            ]
            if {"tpe", "random"} <= set(hv) and len(hv["tpe"]) == len(hv["random"])
            else []
        ),
    ]
    publish("Search: default sampler against random search", body)


def mode_prune(args) -> None:
    rows = []
    jobs = [
        ("tpe", seed, args.trials, args.budget, prune)
        for seed in range(args.seeds)
        for prune in (True, False)
    ]
    for (_, seed, _, _, prune), (h, wall, records) in run_all(jobs, args.parallel):
        pruned = sum(r.state == "PRUNED" for r in records)
        rows.append(
            f"| {'on' if prune else 'off'} | {seed} | {wall / 60:.2f} | {pruned} | {h:.4f} |"
        )
        print(rows[-1], flush=True)
    body = [
        provenance(f"python -m bench search prune {_flags(args)}")
        + f" Searches ran {args.parallel} at a time.",
        "",
        "| pruning | seed | wall (min) | pruned trials | hypervolume |",
        "|---|---|---|---|---|",
        *rows,
    ]
    publish("Search: what pruning saves and costs", body)


TIMEOUT_MARGIN_S = 10.0  # what the search promises: it ends within this many seconds past --timeout


def mode_timeout(args) -> None:
    """Run `python -m explorer.search --timeout T` on a fresh study whose designs each take about a
    minute (``--budget``, one rung, more trials than fit), once with the verification off and
    once with it on at the search's own budget (so its runs fit its quarter of the time), and
    time the whole process from its start to its exit against T + `TIMEOUT_MARGIN_S`."""
    rows, runs = [], []
    for limit in args.limits:
        for verify in {"both": (False, True), "off": (False,), "on": (True,)}[args.verification]:
            with tempfile.TemporaryDirectory() as tmp:
                storage = str(Path(tmp) / "s.journal")
                flags = ["--trials", "500", "--timeout", str(limit), "--budget", args.budget,
                         "--rungs", "1", "--no-weights"]  # fmt: skip
                flags += (["--verify-seeds", "2", "--verify-budget", args.budget] if verify
                          else ["--verify-seeds", "0"])  # fmt: skip
                cmd = [sys.executable, "-m", "explorer.search", *flags, "--storage", storage]
                start = time.perf_counter()
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                wall = time.perf_counter() - start
                if proc.returncode:
                    sys.exit(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
                study = optuna.load_study(study_name="fashion-mnist-inception-block",
                                          storage=open_storage(storage))  # fmt: skip
                records = study_records(study)
                times = [(t.datetime_complete - t.datetime_start).total_seconds()
                         for t in study.get_trials(deepcopy=False)
                         if t.datetime_complete and t.datetime_start and t.state.name == "COMPLETE"]  # fmt: skip
                verified = sum(r.seeds for r in reeval_results(study, "verify:").values())
            over = wall - limit
            rows.append(
                f"| {limit} | {'on, ' + args.budget + ', 2 seeds' if verify else 'off'} | "
                f"{sum(r.complete for r in records)} | {statistics.median(times):.0f} | "
                f"{verified} | {wall:.1f} | {over:+.1f} | "
                f"{'met' if over <= TIMEOUT_MARGIN_S else 'missed'} |"
            )
            runs.append(" ".join(flags))
            print(rows[-1], flush=True)
    body = [
        f"Command: `python -m bench search timeout --budget {args.budget} --limits "
        f"{' '.join(map(str, args.limits))} --verification {args.verification}`: "
        "`python -m explorer.search` on a fresh journal with "
        f"`--timeout T --trials 500 --budget {args.budget} --rungs 1 --no-weights`, the "
        "verification off (`--verify-seeds 0`) or on at the same budget (`--verify-seeds 2 "
        f"--verify-budget {args.budget}`, so its runs fit its last quarter of the time). Wall is "
        "the process's, from its start to its exit (dataset load, references, search, "
        "verification, summary). Workers: the default (one per core).",
        f"Machine: {machine()}. Date: {date.today()}.",
        "",
        "| T (s) | verification | trials complete | median trial (s) | verification runs | "
        "wall (s) | wall - T (s) | within T + 10 s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    publish("Search: --timeout as a deadline", body, write=args.write)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("mode", choices=("default", "samplers", "prune", "timeout"))
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", default="smoke", help="budget for samplers/prune modes")
    p.add_argument("--parallel", type=int, default=2, help="samplers/prune: searches run at once")
    p.add_argument(
        "--storage", default=None, help="default mode: keep the study in this new journal file"
    )
    p.add_argument("--limits", type=int, nargs="+", default=[300],
                   help="timeout mode: the --timeout values to run, in seconds")  # fmt: skip
    p.add_argument("--verification", choices=("both", "off", "on"), default="both",
                   help="timeout mode: run each limit with the verification off, on, or both")  # fmt: skip
    p.add_argument("--write", action="store_true", help="timeout mode: write BENCHMARKS.md")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    modes = {"default": mode_default, "samplers": mode_samplers, "prune": mode_prune,
             "timeout": mode_timeout}  # fmt: skip
    modes[args.mode](args)


if __name__ == "__main__":
    main()
