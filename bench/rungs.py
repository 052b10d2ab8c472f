"""Successive halving across budgets: what it costs, whether its front holds, whether it pays.

    python -m bench rungs time --trials 100            # three rungs against --rungs 1, wall time
    python -m bench rungs hold --storage S             # re-evaluate S's front, Kendall tau, verdicts
    python -m bench rungs worth --seeds 0,1 --trials 30    # against single-budget at equal wall time
    python -m bench rungs signals --storage S          # bottom rung's accuracy and loss vs the top
    python -m bench rungs prune --seeds 0 --trials 30  # three rungs with and without pruning

Each mode prints its table and replaces its own section of BENCHMARKS.md (command, machine,
date). `time` runs the two searches one after the other in fresh journals under --dir; `hold`
runs ``python -m explorer.evaluate`` on the study's front (skipping seeds already stored) and then
compares; `worth` runs, per seed, a three-rung search, then a single-budget search given the same
wall time (``--timeout``), re-evaluates both fronts at --long and compares the hypervolumes of the
re-evaluated fronts; `signals` reads a finished multi-rung study; `prune` runs, per seed, the
three-rung search with --no-prune beside the same search with pruning (worth's journal when it is
there), and compares their training time and their fronts re-evaluated at --long.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

from explorer.analysis import (
    hypervolume,
    hypervolume_spec,
    pareto_front,
    reeval_results,
    rung_records,
    study_records,
)
from explorer.store import open_storage, storage_of, study_config

from ._common import ROOT, machine, provenance, publish, results_dir, stamp, timed

STUDY = "fashion-mnist-inception-block"
WRITE = True  # --no-write: print only


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either list counted as neither concordant nor discordant)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / denom if denom else float("nan")


# The rung search this bench measures: three rungs, the search's default until it measured that a
# single budget returns the better front for its time on a 2-core CPU (bench/strategies.py).
THREE = ("--rungs", "3")


def search(storage: Path, *flags: str, timeout: float | None = None) -> float:
    """Run ``python -m explorer.search`` into a fresh journal; its wall time in seconds."""
    if storage.exists():
        sys.exit(f"{storage} exists: the benchmark needs a fresh study")
    storage.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "explorer.search", "--storage", str(storage), "--quiet", *flags]
    if timeout is not None:
        cmd += ["--timeout", f"{timeout:.0f}"]
    print("$", " ".join(cmd[1:]), file=sys.stderr)
    return timed(subprocess.run, cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)[1]


def load(storage: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=open_storage(str(storage)))


def per_rung(study: optuna.Study) -> str:
    config = study_config(study)
    by_rung = rung_records(storage_of(study), study, config)
    return " / ".join(
        f"{sum(1 for r in recs if not r.reference and r.state in ('COMPLETE', 'PRUNED'))}"
        for _, recs in sorted(by_rung.items())
    )


def mode_time(args) -> None:
    folder = Path(args.dir)
    rows = []
    mf = [*THREE, *(["--budget", args.mf_budget] if args.mf_budget else [])]
    single = ["--budget", args.single_budget] if args.single_budget else []
    for label, flags in (("3 rungs", mf), ("--rungs 1", ["--rungs", "1", *single])):
        storage = folder / f"time-{len(rows)}.journal"
        wall = search(storage, "--trials", str(args.trials), *flags, *args.search_flags)
        study = load(storage)
        rows.append((label, wall, study_config(study).budget, per_rung(study)))
    ratio = rows[0][1] / rows[1][1]
    body = [
        f"Command: `python -m bench rungs time --trials {args.trials}"
        + (f" --mf-budget {args.mf_budget}" if args.mf_budget else "")
        + (f" --single-budget {args.single_budget}" if args.single_budget else "")
        + f"` (the two searches one after the other, fresh journals). Machine: {machine()}. "
        f"Date: {stamp()}.",
        "",
        "| search | top budget | designs finished per rung | wall time |",
        "|---|---|---|---|",
        *[f"| {label} | `{b}` | {n} | {w / 60:.1f} min |" for label, w, b, n in rows],
        "",
        f"Ratio: **{ratio:.2f}x** the single-budget search's time (target: at most 3.5x).",
    ]
    publish(f"Successive halving: wall time ({args.trials} trials)", body, WRITE)


def _reevaluate(
    storage: Path, trials: list[int], seeds: int, budget: str, parallel: int, references=True
) -> None:
    """``explorer.evaluate`` on these trials (and v1/v2 unless `references` is false), split over
    `parallel` processes."""
    if not trials:
        sys.exit(f"{storage}: no searched design on the front to re-evaluate")
    groups = [g for g in (trials[i::parallel] for i in range(parallel)) if g]
    names = ["v1", "v2"] if references else []
    refs = [names[i :: len(groups)] for i in range(len(groups))]
    procs = []
    for group, ref in zip(groups, refs):
        cmd = [sys.executable, "-m", "explorer.evaluate", "--storage", str(storage), "--seeds",
               str(seeds), "--budget", budget, "--quiet",
               "--references", ",".join(ref) or "none", "--trial", *map(str, group)]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // parallel)))
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL))
    for p in procs:
        if p.wait():
            sys.exit(f"explorer.evaluate failed with status {p.returncode}")


def _reevaluated(study: optuna.Study, budget: str) -> dict:
    return {k: v for k, v in reeval_results(study).items() if v.budget == budget}


def mode_hold(args) -> None:
    storage = Path(args.storage)
    study = load(storage)
    config = study_config(study)
    records = study_records(study)
    front = [r for r in pareto_front(records, config.objectives) if not r.reference]
    front.sort(key=lambda r: r.params)  # smallest (quickest) first, so a stopped run has the most
    refs = {r.reference: r for r in records if r.reference and r.complete}
    left_out = []
    if args.up_to:
        limit = refs[args.up_to].params
        left_out = [r for r in front if r.params > limit]
        front = [r for r in front if r.params <= limit]
    start = time.perf_counter()
    if not args.stored:
        _reevaluate(storage, [r.number for r in front], args.seeds, args.budget, args.parallel)
    wall = time.perf_counter() - start
    study = load(storage)
    results = _reevaluated(study, args.budget)
    results = {k: v for k, v in results.items() if v.seeds >= args.seeds}
    missing = [r for r in front if r.number not in results]
    front = [r for r in front if r.number in results]
    if any(ref.number not in results for ref in refs.values()):
        sys.exit(f"{storage}: v1 and v2 need {args.seeds} seeds at {args.budget} stored")
    designs = [r for r in [*front, *refs.values()] if r.number in results]
    search_acc = [r.val_acc for r in designs]
    test_acc = [results[r.number].test_acc_mean for r in designs]
    tau = kendall_tau(search_acc, test_acc)
    lines = []
    reversed_ = 0
    for name, ref in sorted(refs.items()):
        claimed = [f for f in front if f.val_acc > ref.val_acc and f.params <= ref.params]
        held = [
            f
            for f in claimed
            if results[f.number].test_acc_mean > results[ref.number].test_acc_mean
        ]
        reversed_ += len(claimed) - len(held)
        lines.append(
            f"- beat {name} (more accurate, no more parameters): the search says {len(claimed)}, "
            f"{len(held)} still do after re-evaluation"
        )
    body = [
        f"Command: `python -m bench rungs hold --storage {storage} --budget {args.budget} "
        f"--seeds {args.seeds}"
        + (f" --up-to {args.up_to}" if args.up_to else "")
        + "` "
        + (
            "(what the study has stored, run earlier: see below)"
            if args.stored
            else f"(`python -m explorer.evaluate` on the front, {args.parallel} processes, "
            f"{wall / 60:.0f} min)"
        )
        + f". Machine: {machine()}. Date: {stamp()}.",
        f"Study: {config.rungs} rung(s), top budget `{config.budget}`; re-evaluated at "
        f"`{args.budget}`, test accuracy on the whole test split, mean over {args.seeds} seeds.",
        *(
            [
                f"Only the front's designs with no more parameters than {args.up_to} "
                f"({refs[args.up_to].params:,}); left out: "
                + ", ".join(f"{r.label()} ({r.params:,})" for r in left_out)
                + "."
            ]
            if left_out
            else []
        ),
        *(
            [
                f"Not re-evaluated with all {args.seeds} seeds (left out of the table): "
                + ", ".join(f"{r.label()} ({r.params:,})" for r in missing)
                + "."
            ]
            if missing
            else []
        ),
        "",
        "| design | params | search val acc | re-evaluated test acc (mean ± sd) |",
        "|---|---|---|---|",
        *[
            f"| {r.label()} | {r.params:,} | {r.val_acc:.4f} | "
            f"{results[r.number].test_acc_mean:.4f} ± {results[r.number].test_acc_std:.4f} |"
            for r in sorted(designs, key=lambda r: r.params)
        ],
        "",
        f"- Kendall tau, search accuracy against re-evaluated accuracy over these {len(designs)} "
        f"designs: **{tau:.2f}** (target >= 0.7)",
        *lines,
        f"- claims reversed: {reversed_} (target: none)",
    ]
    publish(f"Successive halving: does the front hold? ({config.rungs} rungs)", body, WRITE)


def _distinct(records: list, done: set[int] = frozenset()) -> list:
    """One record per design the search trained more than once: records with the same parameter
    count, FLOPs and search accuracy are one seeded training of one network repeated (the sampler
    can propose a design again), so one re-evaluation stands for all. Prefers a record in `done`."""
    kept: dict[tuple, object] = {}
    for r in sorted(records, key=lambda r: (r.number not in done, r.number)):
        kept.setdefault((r.params, r.flops, r.val_acc), r)
    return sorted(kept.values(), key=lambda r: r.number)


@dataclasses.dataclass
class Front:
    """A searched front re-evaluated at a longer budget."""

    hypervolume: float  # with the re-evaluated test accuracy
    size: int  # distinct designs
    best: float  # the highest re-evaluated test accuracy on it
    tau: float  # Kendall tau, search accuracy against re-evaluated, over its designs
    designs: list[tuple[int, float, float]]  # (parameters, search accuracy, re-evaluated)


def _judge_front(study: optuna.Study, budget: str) -> Front:
    """The study's front judged by each design's re-evaluated test accuracy."""
    config = study_config(study)
    records = study_records(study)
    results = _reevaluated(study, budget)
    front = [r for r in _distinct(pareto_front(records, config.objectives), set(results))
             if r.number in results]  # fmt: skip
    again = [dataclasses.replace(r, val_acc=results[r.number].test_acc_mean) for r in front]
    spec = hypervolume_spec(config, records)
    return Front(
        hypervolume(again, spec),
        len(front),
        max((r.val_acc for r in again), default=float("nan")),
        kendall_tau([r.val_acc for r in front], [r.val_acc for r in again]),
        [(r.params, r.val_acc, a.val_acc) for r, a in zip(front, again)],
    )


def _reevaluated_front(storage: Path, budget: str, parallel: int) -> Front:
    """Re-evaluate the study's searched front at `budget` (1 seed, no references; a design the
    search repeated once) and judge it by the re-evaluated accuracy."""
    study = load(storage)
    searched = [
        r
        for r in pareto_front(study_records(study), study_config(study).objectives)
        if not r.reference
    ]
    front = [r.number for r in _distinct(searched, set(_reevaluated(study, budget)))]
    _reevaluate(storage, front, 1, budget, parallel, references=False)
    return _judge_front(load(storage), budget)


def _seeded(args) -> str:
    return f"--seeds {args.seeds} --trials {args.trials} --long {args.long}"


def mode_worth(args) -> None:
    folder = Path(args.dir)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        mf = folder / f"worth-mf-{seed}.journal"
        single = folder / f"worth-single-{seed}.journal"
        common = ["--seed", str(seed), *args.search_flags]
        mf_budget = ["--budget", args.mf_budget] if args.mf_budget else []
        single_budget = ["--budget", args.single_budget] if args.single_budget else []
        if mf.exists() and single.exists():  # searched before: re-evaluate and compare only
            wall = _span_s(mf)
        else:
            wall = search(mf, "--trials", str(args.trials), *THREE, *mf_budget, *common)
            search(single, "--rungs", "1", "--trials", "100000", *single_budget, *common,
                   timeout=wall)  # fmt: skip
        out = []
        for storage in (mf, single):
            study = load(storage)
            out.append((_reevaluated_front(storage, args.long, args.parallel), per_rung(study)))
        rows.append((seed, wall, out))
    body = [
        provenance(f"python -m bench rungs worth {_seeded(args)}"),
        "Per search seed: the three-rung search with --trials designs, then a single-budget "
        "search (--rungs 1) given the same wall time; each front re-evaluated at "
        f"`{args.long}` (1 seed) and its hypervolume computed with the re-evaluated test accuracy "
        "(v1 and v2 do not enter the hypervolume and are not re-evaluated here). Front size counts "
        "distinct designs: front records with the same parameters, FLOPs and search accuracy "
        "(one design the sampler proposed again) are re-evaluated once. A seed whose "
        "two journals were already there is not searched again; its wall time is then the "
        "three-rung study's first trial start to last trial end.",
        "",
        "| seed | wall time | 3 rungs: hypervolume (front size; designs per rung) | 1 rung: "
        "hypervolume (front size; designs) |",
        "|---|---|---|---|",
        *[
            f"| {seed} | {wall / 60:.1f} min | {a.hypervolume:.4f} ({a.size}; {a_n}) | "
            f"{b.hypervolume:.4f} ({b.size}; {b_n}) |"
            for seed, wall, ((a, a_n), (b, b_n)) in rows
        ],
        "",
        "Over each front, re-evaluated: the highest test accuracy on it, and Kendall tau between "
        "the search's validation accuracy and the re-evaluated test accuracy (how far the search's "
        "own numbers can be trusted):",
        "",
        *[
            f"- seed {seed}: best {a.best:.4f} with 3 rungs, {b.best:.4f} with 1; tau "
            f"{a.tau:.2f} over {a.size} designs with 3 rungs, {b.tau:.2f} over {b.size} with 1"
            for seed, _, ((a, _), (b, _)) in rows
        ],
        "",
        "Each front's designs (parameters: search accuracy -> re-evaluated):",
        "",
        *[
            f"- seed {seed}, {label}: "
            + "; ".join(f"{n:,}: {s:.4f} -> {r:.4f}" for n, s, r in sorted(front.designs))
            for seed, _, ((a, _), (b, _)) in rows
            for label, front in (("3 rungs", a), ("1 rung", b))
        ],
        "",
        f"Multi-fidelity higher on {sum(a.hypervolume > b.hypervolume for _, _, ((a, _), (b, _)) in rows)} "
        f"of {len(rows)} seeds (target: every seed).",
    ]
    publish("Successive halving: against single-budget search", body, WRITE)


def _rung_facts(study: optuna.Study, config, by_rung: dict) -> list[str]:
    """Pruning per rung, how early epochs rank within each rung, what one more seed of the top
    front would cost, and the references' share of the training."""
    lines = [f"- Pruned at each rung (designs, share of epochs saved): {_pruning(study)}"]
    for rung, recs in sorted(by_rung.items()):
        done = [r for r in recs if r.complete and not r.reference and r.duplicate_of is None]
        done = [r for r in done if r.curves.get("val_acc")]
        if len(done) < 3:
            continue
        epochs = len(done[0].curves["val_acc"])
        taus = [
            kendall_tau([r.curves["val_acc"][e] for r in done], [r.val_acc for r in done])
            for e in range(epochs - 1)
        ]
        lines.append(
            f"- Rung {rung}, {len(done)} completed designs: Kendall tau of the validation accuracy "
            "after each earlier epoch against the rung's final one: "
            + ", ".join(f"{t:.2f}" for t in taus)
        )
    records = study_records(study)
    front = [r for r in pareto_front(records, config.objectives) if not r.reference]
    again = [*front, *(r for r in records if r.reference and r.complete)]
    cost = sum(r.train_time_s or 0 for r in again)
    lines.append(
        f"- One more seed of the top rung's front ({len(front)} designs) and v1/v2: "
        f"{cost:,.0f} s of training ({cost / 120:.1f} min over two workers)"
    )
    every = [r for recs in by_rung.values() for r in recs]
    total = sum(r.train_time_s or 0 for r in every)
    refs = sum(r.train_time_s or 0 for r in every if r.reference)
    lines.append(
        f"- v1 and v2 at every rung: {refs:,.0f} s of the study's {total:,.0f} s of training "
        f"({refs / total:.0%})"
    )
    return lines


def mode_signals(args) -> None:
    study = load(Path(args.storage))
    config = study_config(study)
    by_rung = rung_records(storage_of(study), study, config)
    top = config.rungs - 1
    index = {k: {r.number: r for r in recs} for k, recs in by_rung.items()}
    rows = []
    for rung in range(top):
        pairs = []
        for r in by_rung[top]:
            if r.reference or not r.complete:
                continue
            k, low = top, r
            while k > rung and low is not None and low.parent is not None:
                k, low = k - 1, index[k - 1].get(low.parent)
            if k == rung and low is not None and low.complete and low.final_train_loss is not None:
                pairs.append((low.val_acc, -low.final_train_loss, r.val_acc))
        if len(pairs) >= 3:
            acc_tau = kendall_tau([p[0] for p in pairs], [p[2] for p in pairs])
            loss_tau = kendall_tau([p[1] for p in pairs], [p[2] for p in pairs])
            rows.append((rung, len(pairs), acc_tau, loss_tau))
    body = [
        provenance(f"python -m bench rungs signals --storage {args.storage}"),
        f"Study: {config.rungs} rungs, eta {config.eta}, top budget `{config.budget}`. Over the "
        "designs that reached the top rung: Kendall tau of each lower rung's validation accuracy, "
        "and of its last-epoch mean training loss (lower is better), against the top rung's "
        "validation accuracy.",
        "",
        "| rung | designs | tau, validation accuracy | tau, last-epoch training loss |",
        "|---|---|---|---|",
        *[f"| {rung} | {n} | {a:.2f} | {b:.2f} |" for rung, n, a, b in rows],
        "",
        *_rung_facts(study, config, by_rung),
    ]
    publish(f"Successive halving: signals at the bottom rung ({config.rungs} rungs)", body, WRITE)


def _span_s(storage: Path) -> float:
    """Seconds from the first trial's start to the last trial's end, over every rung's study."""
    store = open_storage(str(storage))
    starts, ends = [], []
    for summary in optuna.get_all_study_summaries(store):
        for t in optuna.load_study(study_name=summary.study_name, storage=store).trials:
            if t.datetime_start is not None:
                starts.append(t.datetime_start)
            if t.datetime_complete is not None:
                ends.append(t.datetime_complete)
    return (max(ends) - min(starts)).total_seconds()


def _pruning(study: optuna.Study) -> str:
    """Per rung: searched designs pruned of those trained, and the share of epochs pruning saved."""
    config = study_config(study)
    by_rung = rung_records(storage_of(study), study, config)
    parts = []
    for _, recs in sorted(by_rung.items()):
        trained = [r for r in recs if not r.reference and r.state in ("COMPLETE", "PRUNED")]
        trained = [r for r in trained if r.duplicate_of is None and not r.skipped]
        pruned = [r for r in trained if r.state == "PRUNED"]
        epochs = max((len(r.curves.get("val_acc") or []) for r in trained), default=0)
        done = sum(len(r.curves.get("val_acc") or []) for r in trained)
        saved = 1 - done / (epochs * len(trained)) if epochs and trained else 0.0
        parts.append(f"{len(pruned)}/{len(trained)} ({saved:.0%})")
    return " / ".join(parts)


def mode_prune(args) -> None:
    folder = Path(args.dir)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        common = ["--seed", str(seed), "--trials", str(args.trials), *THREE, *args.search_flags]
        if args.mf_budget:
            common += ["--budget", args.mf_budget]
        on, off = folder / f"worth-mf-{seed}.journal", folder / f"prune-off-{seed}.journal"
        if not on.exists():
            search(on, *common)
        if not off.exists():  # searched before: re-evaluate and compare only
            search(off, "--no-prune", *common)
        out = []
        for storage in (on, off):
            study = load(storage)
            front = _reevaluated_front(storage, args.long, args.parallel)
            out.append((_span_s(storage), _pruning(study), front.hypervolume, front.size))
        rows.append((seed, out))
    body = [
        provenance(f"python -m bench rungs prune {_seeded(args)}"),
        "Per search seed: the three-rung search (dominated-at-epoch pruning at every rung) "
        "and the same search with --no-prune, same seed and designs asked for; search time from "
        "the first trial's start to the last trial's end; each front re-evaluated at "
        f"`{args.long}` (1 seed), hypervolume with the re-evaluated test accuracy. Pruned: "
        "searched designs pruned of those trained at each rung (rung 0 / 1 / 2), and in brackets "
        "the share of that rung's epochs pruning saved.",
        "",
        "| seed | pruning | search time | pruned per rung | hypervolume (front size) |",
        "|---|---|---|---|---|",
        *[
            f"| {seed} | {label} | {span / 60:.1f} min | {pruned} | {hv:.4f} ({n}) |"
            for seed, out in rows
            for label, (span, pruned, hv, n) in zip(("on (default)", "off"), out)
        ],
    ]
    publish("Successive halving: pruning inside a rung", body, WRITE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("mode", choices=("time", "hold", "worth", "signals", "prune"))
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--storage", help="hold/signals: the study's journal")
    p.add_argument(
        "--dir",
        default=str(results_dir("rungs").relative_to(ROOT)),
        help="time/worth/prune: where the journals go; a rerun reuses those there "
        "(default: %(default)s)",
    )
    p.add_argument("--budget", default="long", help="hold: the re-evaluation budget")
    p.add_argument(
        "--stored",
        action="store_true",
        help="hold: train nothing; compare the re-evaluations already stored with all --seeds",
    )
    p.add_argument(
        "--up-to",
        choices=("v1", "v2"),
        help="hold: only the front's designs with no more parameters than this reference",
    )
    p.add_argument(
        "--mf-budget",
        help="time/worth/prune: the multi-rung search's top budget (default: its own)",
    )
    p.add_argument(
        "--single-budget", help="time/worth: the --rungs 1 search's budget (default: its own)"
    )
    p.add_argument("--long", default="long", help="worth/prune: the re-evaluation budget")
    p.add_argument("--seeds", default="3", help="hold: seeds per design; worth/prune: search seeds")
    p.add_argument("--parallel", type=int, default=2, help="evaluate processes at once")
    p.add_argument("--search-flag", dest="search_flags", action="append", default=[],
                   help="extra flag for every search (repeat: --search-flag=--budget "
                   "--search-flag=smokex9)")  # fmt: skip
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args()
    global WRITE
    WRITE = not args.no_write
    if args.mode in ("hold", "signals") and not args.storage:
        p.error(f"{args.mode} needs --storage")
    if args.mode == "hold":
        args.seeds = int(args.seeds)
    modes = {"time": mode_time, "hold": mode_hold, "worth": mode_worth, "signals": mode_signals,
             "prune": mode_prune}  # fmt: skip
    modes[args.mode](args)


if __name__ == "__main__":
    main()
