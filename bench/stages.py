"""Per-stage blocks: Inception v3's rule about where asymmetric factorization pays, tested here.

    python -m bench stages rule --seeds 3              # train what is missing, print the section
    python -m bench stages rule --seeds 5 --write      # more paired seeds, then rewrite it
    python -m bench stages rule --quick                # a sanity run: smoke budget, 2 seeds
    python -m bench stages transfer --seeds 3 --write  # search-network leads, kept when deeper?

Inception v3 (Szegedy et al. 2015, section 3.2) says asymmetric 1xn/nx1 factorization "does not
work well on early layers, but gives very good results on medium grid sizes (between 12 and 20)".
On a three-stage network (28x28, 14x14, 7x7 grids: ``--stages 1,1,1`` at the search's width) this
bench trains v2 in every stage, and, for each stage alone, v2 with that stage's wide path replaced
by 1x7 then 7x1 (the rest held at v2), all with the same paired seeds at the verification budget
(``quickx10``). Each stage's effect (asymmetric minus double 3x3, test accuracy, paired by seed)
is judged by the tool's verdict rule, Holm-corrected over the three stages. Every finished run is
kept in bench/results/stages/runs.json (keyed by arm, network, budget and seed), so a cut-short run
resumes and a larger --seeds only trains the seeds missing.

``transfer`` asks whether a lead found on the small search network (two stages of one block)
holds in a network of twice the blocks per stage (``--stages 2,2``): the two designs of the
default study's front that its 3-seed re-evaluation found ahead of v1 and of v2 (BENCHMARKS.md,
"Re-evaluation of the default study's front (long budget)", #58 and #14; the study's own
verification upheld no claim to take instead), and v1 and v2, are trained in both networks with
the same paired seeds, and each design's difference against each reference is judged in each
network by the verdict rule (Holm over the family of one network).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time

from explorer.analysis import RULE, holm
from explorer.evaluate import DataSpec, Run, RunPool
from explorer.training import budget
from search_space import REFERENCES, BlockConfig, NetworkConfig, network_params

from ._common import JsonState, command, machine, results_dir, stamp, write_section

SECTION = "Per-stage blocks: Inception v3's rule"
TRANSFER_SECTION = "Per-stage blocks: does a lead transfer to a deeper network?"
STAGES = (1, 1, 1)
GRIDS = (28, 14, 7)
ASYM_N = 7  # the paper's 17x17 modules: 1x7 then 7x1


def arms(stages: tuple[int, ...] = STAGES) -> dict[str, NetworkConfig]:
    """v2 in every stage, and v2 with one stage's wide path asymmetric, for each stage."""
    v2 = REFERENCES["v2"]
    asym = dataclasses.replace(v2, wide_kind="asym", asym_n=ASYM_N)
    base = NetworkConfig(block=v2, stages=stages).with_designs((v2,) * len(stages))
    out = {"v2": base}
    for s in range(len(stages)):
        out[f"asym@s{s}"] = base.with_stage_design(s, asym)
    return out


# The default study's front designs the 3-seed re-evaluation put ahead of a reference (see above).
TRANSFER_DESIGNS = {
    "#58": BlockConfig(ch1x1=32, ch3x3_reduce=64, ch3x3=16, wide_reduce=64, wide=48, pool_proj=64,
                       wide_kind="asym", asym_n=7, pool_type="max", bn="post_act"),
    "#14": BlockConfig(ch1x1=96, ch3x3_reduce=48, ch3x3=224, wide_reduce=16, wide=128,
                       pool_proj=32, wide_kind="asym", asym_n=7, pool_type="max", bn="post_act"),
}  # fmt: skip
TRANSFER_SHAPES = {"search (1,1)": (1, 1), "deeper (2,2)": (2, 2)}


def transfer_arms() -> dict[str, NetworkConfig]:
    """Each transfer design and v1, v2, in the search network and in the deeper one."""
    blocks = {**TRANSFER_DESIGNS, "v1": REFERENCES["v1"], "v2": REFERENCES["v2"]}
    return {
        f"{name} in {shape}": NetworkConfig(block=block, stages=stages)
        for shape, stages in TRANSFER_SHAPES.items()
        for name, block in blocks.items()
    }


def run_key(arm: str, network: NetworkConfig, budget_name: str, seed: int) -> str:
    digest = hashlib.sha256(network.to_json().encode()).hexdigest()[:12]
    return f"{arm}|{digest}|{budget_name}|{seed}"


def train_missing(
    state: JsonState, nets: dict[str, NetworkConfig], budget_name: str, seeds: int, workers: int,
    data_dir: str | None,
) -> None:  # fmt: skip
    """Train every (arm, seed) not yet in `state`, seed by seed so an early stop leaves whole
    pairs, and store each as it ends."""
    config = budget(budget_name)
    todo = [
        (arm, net, seed)
        for seed in range(seeds)
        for arm, net in nets.items()
        if state.get(run_key(arm, net, budget_name, seed)) is None
    ]
    if not todo:
        return
    print(f"{len(todo)} runs to train at {budget_name} on {workers} worker(s)", file=sys.stderr)
    spec = DataSpec("fashion-mnist", data_dir, 0)
    started = time.perf_counter()
    with RunPool(workers, spec) as pool:
        queue = list(todo)
        done = 0
        while queue or pool.busy:
            while queue and pool.free > 0:
                arm, net, seed = queue.pop(0)
                pool.submit(Run((arm, seed), net, config, seed))
            for result in pool.finished(timeout=60):
                arm, seed = result.run.key
                if result.error:
                    print(f"  {arm} seed {seed} failed: {result.error}", file=sys.stderr)
                    continue
                state.put(
                    run_key(arm, result.run.network, budget_name, seed),
                    {"val_acc": result.val_acc, "test_acc": result.test_acc,
                     "seconds": round(result.seconds, 1), "date": stamp()},
                )  # fmt: skip
                done += 1
                print(
                    f"  {done}/{len(todo)} {arm} seed {seed}: test {result.test_acc:.4f} "
                    f"({result.seconds:.0f} s, {time.perf_counter() - started:.0f} s in)",
                    file=sys.stderr,
                )


def accuracies(
    state: JsonState, nets: dict[str, NetworkConfig], budget_name: str, seeds: int
) -> tuple[dict[str, list[float]], int]:
    """Each arm's test accuracies over seeds 0.. until its first missing run, and how many seeds
    every arm has (the pairs that can be judged)."""
    acc: dict[str, list[float]] = {}
    for arm, net in nets.items():
        acc[arm] = []
        for seed in range(seeds):
            row = state.get(run_key(arm, net, budget_name, seed))
            if row is None:
                break
            acc[arm].append(row["test_acc"])
    return acc, min(len(v) for v in acc.values())


def row(vals: list[float], net: NetworkConfig) -> str:
    """A table row's parameters, per-seed accuracies and mean."""
    mean = sum(vals) / len(vals) if vals else float("nan")
    return f"{network_params(net):,} | {' '.join(f'{v:.4f}' for v in vals)} | {mean:.4f}"


def report(state: JsonState, nets: dict[str, NetworkConfig], budget_name: str, seeds: int) -> str:
    """The section: each arm's accuracy, each stage's paired effect under the verdict rule."""
    acc, n = accuracies(state, nets, budget_name, seeds)
    lines = [
        f"Command: `{command('stages')}`. Machine: {machine()}. Date: {stamp()}.",
        "",
        f"Network: three stages of one block each on Fashion-MNIST (grids {GRIDS[0]}, "
        f"{GRIDS[1]}, {GRIDS[2]}), width {nets['v2'].width}; every arm is v2 in every stage "
        f"except the one named, whose wide path is 1x{ASYM_N} then {ASYM_N}x1 instead of two 3x3. "
        f"Budget `{budget_name}`, paired training seeds 0..{n - 1}, one data split; test accuracy.",
        "",
        "| arm | parameters | test accuracy per seed | mean |",
        "|---|---|---|---|",
    ]
    lines += [f"| {arm} | {row(acc[arm][:n], net)} |" for arm, net in nets.items()]
    if n < 2:
        lines += ["", f"Only {n} paired seed(s) finished: no effect can be judged yet."]
        return "\n".join(lines)
    stages = [a for a in nets if a != "v2"]
    diffs = [[a - b for a, b in zip(acc[arm][:n], acc["v2"][:n])] for arm in stages]
    verdicts = holm(diffs)
    lines += [
        "",
        f"Effect of the asymmetric wide path in one stage (asym minus double 3x3): {RULE}",
    ]
    lines += [f"Holm over the {len(stages)} stages."]
    for arm, grid, v in zip(stages, GRIDS, verdicts):
        lines.append(f"- stage {arm[-1]} ({grid}x{grid} grid): {v.text()}")
    lines += ["", rule_answer(verdicts, n), "", runs_line(state, nets, budget_name, n)]
    return "\n".join(lines)


def rule_answer(verdicts, n: int) -> str:
    """Whether the paper's rule (asymmetric worse early, better on the medium grid) holds here."""
    words = [v.word for v in verdicts]
    if not any(v.decided for v in verdicts):
        return (
            f"**Answer:** not distinguishable at {n} seeds in any stage, so this network at this "
            "budget cannot tell whether Inception v3's rule holds; more seeds narrow the intervals "
            "(`python -m bench stages rule --seeds K --write` trains only the seeds missing)."
        )
    holds = words[0] != "better" and words[1] == "better"
    said = "; ".join(f"stage {s}: {w}" for s, w in enumerate(words))
    return (
        f"**Answer:** the rule {'holds' if holds else 'does not hold'} here at {n} seeds ({said})."
    )


def runs_line(state: JsonState, nets: dict[str, NetworkConfig], budget_name: str, n: int) -> str:
    """When and how long the runs behind the table took (they may span sessions)."""
    rows = [
        state.get(run_key(arm, net, budget_name, seed))
        for arm, net in nets.items()
        for seed in range(n)
    ]
    rows = [r for r in rows if r is not None]
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    dates = sorted({r["date"][:10] for r in rows if "date" in r})
    if not seconds:
        return ""
    return (
        f"Runs: {len(rows)} trained on {', '.join(dates)}, {min(seconds):.0f}-{max(seconds):.0f} s "
        "each on two one-thread workers (wall time; long where other work shared the machine)."
    )


def transfer_report(
    state: JsonState, nets: dict[str, NetworkConfig], budget_name: str, seeds: int
) -> str:
    """The section: each design against v1 and v2 in each network (judged at the paired seeds
    that network has whole), and whether the order holds."""
    acc: dict[str, list[float]] = {}
    have: dict[str, int] = {}
    for shape in TRANSFER_SHAPES:
        part = {arm: net for arm, net in nets.items() if arm.endswith(f" in {shape}")}
        got, have[shape] = accuracies(state, part, budget_name, seeds)
        acc.update({arm: vals[: have[shape]] for arm, vals in got.items()})
    lines = [
        f"Command: `{command('stages')}`. Machine: {machine()}. Date: {stamp()}.",
        "",
        f"Fashion-MNIST, width {next(iter(nets.values())).width}, budget `{budget_name}`, paired "
        "training seeds from 0 (as many as every arm of a network has), one data split; test "
        "accuracy. The search network has one block per stage in two stages; the deeper one two "
        "blocks per stage.",
        "",
        "| design | network | parameters | test accuracy per seed | mean |",
        "|---|---|---|---|---|",
    ]
    for arm, net in nets.items():
        name, shape = arm.split(" in ")
        lines.append(f"| {name} | {shape} | {row(acc[arm], net)} |")
    lines += ["", f"Each design minus each reference, per network: {RULE}"]
    words: dict[tuple[str, str], dict[str, str]] = {}
    pairs = [(d, r) for d in TRANSFER_DESIGNS for r in ("v1", "v2")]
    for shape in TRANSFER_SHAPES:
        n = have[shape]
        if n < 2:
            lines.append(f"- {shape}: {n} paired seed(s) finished, too few to judge yet")
            continue
        diffs = [
            [a - b for a, b in zip(acc[f"{d} in {shape}"], acc[f"{r} in {shape}"])]
            for d, r in pairs
        ]
        lines.append(f"- {shape}, Holm over its {len(pairs)} comparisons:")
        for (d, r), v in zip(pairs, holm(diffs)):
            words.setdefault((d, r), {})[shape] = v.word
            lines.append(f"  - {d} - {r}: {v.text()}")
    lines += ["", runs_line(state, nets, budget_name, max(have.values()))]
    search, deeper = TRANSFER_SHAPES
    if min(have.values()) < 2:
        lines += ["", "Whether the order holds deeper: not judged until both networks have two "
                  f"paired seeds or more (`python -m bench stages transfer --seeds {seeds} "
                  "--write` trains what is missing)."]  # fmt: skip
        return "\n".join(lines)
    lines += ["", "Does the order found in the search network hold in the deeper one?"]
    for (d, r), by in words.items():
        a, b = by[search], by[deeper]
        if a not in ("better", "worse"):
            said = f"no order to carry ({a} in the search network)"
        elif b == a:
            said = f"holds ({a} in both)"
        elif b in ("better", "worse"):
            said = f"reversed ({a} in the search network, {b} deeper)"
        else:
            said = f"{a} in the search network; deeper, {b}"
        lines.append(f"- {d} against {r}: {said}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench stages",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "mode",
        choices=("rule", "transfer"),
        help="rule: Inception v3's rule, stage by stage; transfer: search-network leads, deeper",
    )
    p.add_argument("--seeds", type=int, default=3, help="paired seeds per arm (default: 3)")
    p.add_argument("--budget", default="quickx10", help="training budget (default: quickx10)")
    p.add_argument("--workers", type=int, default=2, help="training processes (default: 2)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST files")
    p.add_argument("--quick", action="store_true", help="a sanity run: smoke budget, 2 seeds")
    p.add_argument("--write", action="store_true", help="replace the BENCHMARKS.md section")
    p.add_argument("--report-only", action="store_true", help="train nothing, report what is kept")
    args = p.parse_args()
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    budget_name, seeds = ("smoke", 2) if args.quick else (args.budget, args.seeds)
    try:
        budget(budget_name)
    except ValueError as exc:
        p.error(str(exc))
    state = JsonState(results_dir("stages") / ("quick.json" if args.quick else "runs.json"))
    nets = arms() if args.mode == "rule" else transfer_arms()
    if not args.report_only:
        train_missing(state, nets, budget_name, seeds, args.workers, args.data_dir)
    if args.mode == "rule":
        body, title = report(state, nets, budget_name, seeds), SECTION
    else:
        body, title = transfer_report(state, nets, budget_name, seeds), TRANSFER_SECTION
    print(body)
    if args.write and not args.quick:
        write_section(title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
