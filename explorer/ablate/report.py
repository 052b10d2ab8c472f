"""Each step of a stored ladder with its paired differences, and the lines that print them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from search_space import NetworkConfig, build_network, network_params

from ..analysis import Verdict
from ..training import count_flops
from .ladder import GROUP_TITLES, Design, Step
from .runs import Runs, StoredLadder
from .stats import interaction, judge, paired


def flops(network: NetworkConfig) -> int:
    """FLOPs of one forward pass of one image."""
    size = network.image_size
    return count_flops(build_network(network), (network.in_channels, size, size))


@dataclass(frozen=True)
class StepResult:
    """One step of a ladder, measured: paired differences (after minus before) over seeds."""

    step: Step
    label: str
    before: Design
    after: Design
    val: Verdict
    test: Verdict
    params: tuple[int, int]
    flops: tuple[int, int] | None

    @property
    def group(self) -> str:
        return self.step.group


@dataclass(frozen=True)
class Measured:
    """A stored ladder with every step measured, and the factorial's interaction if built."""

    stored: StoredLadder
    steps: tuple[StepResult, ...]
    interaction_val: Verdict | None
    interaction_test: Verdict | None
    seeds: int  # the seeds asked for
    missing: int  # (design, seed) runs not stored yet
    failed: dict[str, str]  # design name -> why one of its runs failed
    # each design's (val, test) accuracy, mean over its stored seeds below `seeds`
    means: tuple[tuple[float, float], ...] = ()


def measure(
    stored: StoredLadder,
    runs: Runs,
    seeds: int | None = None,
    count: Callable[[NetworkConfig], int] | None = flops,
) -> Measured:
    """Each step's paired differences over seeds 0..seeds-1 (default: the seeds asked for), the
    steps and the interaction of one metric judged together (`stats.judge`)."""
    seeds = stored.seeds if seeds is None else seeds
    ladder, keys = stored.ladder, stored.keys()
    sizes = [network_params(d.network) for d in ladder.designs]
    costs = [count(d.network) for d in ladder.designs] if count else None
    results = []
    for step in ladder.steps:
        a, b = keys[step.before], keys[step.after]
        results.append(
            StepResult(
                step,
                ladder.label(step),
                ladder.designs[step.before],
                ladder.designs[step.after],
                paired(runs.val.get(a, {}), runs.val.get(b, {}), seeds),
                paired(runs.test.get(a, {}), runs.test.get(b, {}), seeds),
                (sizes[step.before], sizes[step.after]),
                (costs[step.before], costs[step.after]) if costs else None,
            )
        )
    inter_val = inter_test = None
    if ladder.factorial:
        k = [keys[i] for i in ladder.factorial]
        inter_val = interaction(*(runs.val.get(x, {}) for x in k), seeds=seeds)
        inter_test = interaction(*(runs.test.get(x, {}) for x in k), seeds=seeds)
    results, inter_val, inter_test = _judged(results, inter_val, inter_test)
    missing = sum(1 for k in dict.fromkeys(keys) for s in range(seeds) if not runs.done(k, s))
    failed = {}
    for (key, _seed), reason in runs.failed.items():
        if key in keys:
            failed[ladder.designs[keys.index(key)].name] = reason
    means = tuple(
        (_mean_below(runs.val.get(k, {}), seeds), _mean_below(runs.test.get(k, {}), seeds))
        for k in keys
    )
    return Measured(stored, tuple(results), inter_val, inter_test, seeds, missing, failed, means)


def _judged(
    results: list[StepResult], inter_val: Verdict | None, inter_test: Verdict | None
) -> tuple[list[StepResult], Verdict | None, Verdict | None]:
    """The steps (and the interaction) of each metric as one Holm family."""
    out = list(results)
    inter = {"val": inter_val, "test": inter_test}
    for metric in ("val", "test"):
        family = [getattr(r, metric) for r in out] + ([inter[metric]] if inter[metric] else [])
        judged = judge(family)
        out = [dataclasses.replace(r, **{metric: v}) for r, v in zip(out, judged)]
        if inter[metric] is not None:
            inter[metric] = judged[-1]
    return out, inter["val"], inter["test"]


def _mean_below(values: dict[int, float], seeds: int) -> float:
    chosen = [v for s, v in values.items() if s < seeds]
    return sum(chosen) / len(chosen) if chosen else math.nan


def _signed(n: int) -> str:
    return f"{n:+,}"


def _pct(before: int, after: int) -> str:
    return f"{(after - before) / before:+.0%}" if before else ""


def _mflops(before: int, after: int) -> str:
    return f"{(after - before) / 1e6:+.2f} M"


def lines(measured: Measured) -> list[str]:
    """The ladder as printed: a heading, one line per step, the interaction, what is missing."""
    stored = measured.stored
    ladder = stored.ladder
    out = [f"{ladder.title}"]
    if ladder.kind == "leave-one-out":
        out.append(
            "  each row: the winner minus the winner with one group reverted (what that part is "
            "worth)"
        )
    else:
        out.append("  each row: after minus before, one field group changed")
    width = max(len(r.label) for r in measured.steps) + 2
    out.append(
        "  differences judged by a paired t-test over seeds, Holm-corrected across the ladder's "
        "steps: a sign only where the interval excludes zero"
    )
    out.append(f"  {'step':<{width}} {'params':>16} {'FLOPs':>10}   {'val acc':<52} test acc")
    for r in measured.steps:
        flops_text = _mflops(*r.flops) if r.flops else "-"
        size = f"{_signed(r.params[1] - r.params[0])} {_pct(*r.params)}"
        mark = " (other order)" if r.step.order == "other" else ""
        out.append(
            f"  {r.label + mark:<{width}} {size:>16} {flops_text:>10}   "
            f"{r.val.text():<52} {r.test.text()}"
        )
    if measured.interaction_val is not None:
        out.append(
            f"  interaction of {GROUP_TITLES['bn']} and {GROUP_TITLES['factorization']} "
            f"(what one adds with the other minus alone): val {measured.interaction_val.text()}; "
            f"test {measured.interaction_test.text()}"
        )
    if measured.missing:
        out.append(f"  {measured.missing} runs of this ladder are not stored yet")
    for name, reason in measured.failed.items():
        out.append(f"  {name}: a run failed ({reason}); its steps rest on fewer seeds")
    return out
