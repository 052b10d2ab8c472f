"""The one rule by which the tool states a difference between two designs.

Two designs trained with the same seeds are compared seed by seed: the per-seed differences
(``after - before``, or design minus reference) are tested with a two-sided paired t-test on n - 1
degrees of freedom, which is exact for normal seed noise at any n >= 2 (a normal "2 standard
errors" bar is not: with 3 seeds it calls equal designs different about 18% of the time, the
t critical value there being 4.30). Several comparisons made together (the claims of one search,
the steps of one ablation ladder, the references of one re-evaluation) share the error rate by
Holm's step-down correction, so the chance that *any* of them is stated wrongly is at most
`ALPHA`. A comparison whose interval excludes zero is "better" or "worse"; any other is "not
distinguishable at N seeds", with its interval and no sign.

Verification races (`race_verdicts`) look at the data after each seed they add; the level is then
split evenly over the looks a race may take (Bonferroni over looks), so stopping early does not
raise the error rate. `bench/verdicts.py` measures the resulting false-claim rate and power on the
project's own per-seed results (BENCHMARKS.md, "Verdicts: error rate and power").

References: Bouthillier et al., MLSys 2021 (test differences over seeds, not single runs); Holm,
Scand. J. Statistics 1979; Bartroff & Lai, Sequential Analysis 2010 (step-down Holm across
group-sequential tests); Birattari et al. (racing: add runs only where undecided).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from scipy import stats

# The family-wise error rate: the chance that any stated difference of one family is wrong.
ALPHA = 0.05
BETTER, WORSE = "better", "worse"
# What a user reads, once, in the help and the README.
RULE = (
    f"a difference is stated only when a paired t-test over seeds, Holm-corrected across the "
    f"comparisons made together, puts it beyond chance at the {ALPHA:.0%} level (its "
    f"{1 - ALPHA:.0%} interval excludes zero); otherwise it is 'not distinguishable at N seeds'"
)


@dataclass(frozen=True)
class Verdict:
    """The paired comparison of two designs over the seeds both ran.

    `differences`: per seed, second minus first (design minus reference). `alpha`: the level this
    comparison was judged at, after the family's correction (`holm`) and the race's looks."""

    differences: tuple[float, ...]
    alpha: float = ALPHA

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences) if self.differences else math.nan

    @property
    def se(self) -> float:
        """Standard error of the mean difference; NaN below two seeds."""
        if self.n < 2:
            return math.nan
        return statistics.stdev(self.differences) / math.sqrt(self.n)

    @property
    def p_value(self) -> float:
        """Two-sided paired t-test p-value; 1 below two seeds (nothing can be told)."""
        if self.n < 2:
            return 1.0
        if self.se == 0:
            return 0.0 if self.mean != 0 else 1.0
        return float(2 * stats.t.sf(abs(self.mean) / self.se, self.n - 1))

    @property
    def interval(self) -> tuple[float, float]:
        """The two-sided (1 - alpha) confidence interval of the mean difference."""
        if self.n < 2:
            return (-math.inf, math.inf)
        half = float(stats.t.ppf(1 - self.alpha / 2, self.n - 1)) * self.se
        return (self.mean - half, self.mean + half)

    @property
    def word(self) -> str:
        """``better``, ``worse`` or ``not distinguishable at N seeds``."""
        if self.n >= 2 and self.p_value < self.alpha:
            return BETTER if self.mean > 0 else WORSE
        return f"not distinguishable at {_seeds(self.n)}"

    @property
    def decided(self) -> bool:
        """Whether the rule gives this difference a sign."""
        return self.word in (BETTER, WORSE)

    def text(self) -> str:
        """``+0.0123 [+0.0050, +0.0196] at 5 seeds: better``."""
        if self.n == 0:
            return "no paired seeds yet"
        if self.n < 2:
            return f"{self.mean:+.4f} at 1 seed: not distinguishable at 1 seed (no interval)"
        low, high = self.interval
        return f"{self.mean:+.4f} [{low:+.4f}, {high:+.4f}] at {_seeds(self.n)}: {self.word}"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def paired(
    before: Mapping[int, float], after: Mapping[int, float], seeds: int | None = None
) -> tuple[float, ...]:
    """The differences ``after[s] - before[s]`` over the seeds both have (below `seeds` if given),
    in seed order."""
    common = sorted(set(before) & set(after))
    if seeds is not None:
        common = [s for s in common if s < seeds]
    return tuple(after[s] - before[s] for s in common)


def compare(differences: Sequence[float], alpha: float = ALPHA) -> Verdict:
    """One comparison judged alone at `alpha`."""
    return Verdict(tuple(float(d) for d in differences), alpha)


def holm(
    family: Sequence[Sequence[float] | Verdict], alpha: float = ALPHA, m: int | None = None
) -> list[Verdict]:
    """The comparisons of one family judged together, in the order given: Holm's step-down gives
    the k-th smallest p-value the level ``alpha / (m - k + 1)`` while every smaller one was
    decided, and the rest the level of the first undecided, so the chance of any wrong statement
    in the family stays at most `alpha`. `m`: the family's size when it is larger than the
    comparisons given (members judged elsewhere and not decided still count)."""
    verdicts = [f if isinstance(f, Verdict) else compare(f) for f in family]
    m = len(verdicts) if m is None else m
    if m < len(verdicts):
        raise ValueError(f"m must be at least the {len(verdicts)} comparisons given, got {m}")
    order = sorted(range(len(verdicts)), key=lambda i: verdicts[i].p_value)
    out: list[Verdict] = list(verdicts)
    for rank, i in enumerate(order):
        level = alpha / (m - rank)
        out[i] = replace(verdicts[i], alpha=level)
        if not out[i].decided:  # the first undecided stops the step-down: the rest share its level
            for j in order[rank + 1 :]:
                out[j] = replace(verdicts[j], alpha=level)
            break
    return out


# No race goes beyond this many seeds a claim (a stored plan is untrusted input).
MAX_CAP = 64


@dataclass(frozen=True)
class RacePlan:
    """When a verification race looks at its claims: once each has `first` seeds, then after each
    seed added, up to `cap` seeds; the level is split evenly over those looks."""

    first: int = 3
    cap: int = 8

    def __post_init__(self) -> None:
        if not 2 <= self.first <= self.cap:
            raise ValueError(f"first must be 2..cap, got first={self.first}, cap={self.cap}")
        if self.cap > MAX_CAP:
            raise ValueError(f"cap must be at most {MAX_CAP} seeds, got {self.cap}")

    @property
    def looks(self) -> int:
        return self.cap - self.first + 1

    def look_alpha(self, alpha: float = ALPHA) -> float:
        """The family-wise level of each look: `alpha` over the looks."""
        return alpha / self.looks


OPEN, DECIDED, FUTILE, CAP = "open", "decided", "futile", "cap"


@dataclass(frozen=True)
class RaceState:
    """One claim of a race as it stands: its verdict at its last look (or at the seeds it has, if
    it never reached a look), and whether the race adds no more seeds to it: `why` is "decided"
    (better or worse), "futile" (its mean difference at or below zero: it cannot come out
    better), "cap" (the plan's last look, not distinguishable), or "open" (more seeds may decide
    it)."""

    verdict: Verdict
    why: str

    @property
    def stopped(self) -> bool:
        return self.why != OPEN

    @property
    def held(self) -> bool:
        return self.verdict.word == BETTER


def race_verdicts(
    family: Sequence[Sequence[float]],
    plan: RacePlan = RacePlan(),  # noqa: B008 (frozen and immutable)
    alpha: float = ALPHA,
) -> list[RaceState]:
    """Replay a race over the claims' per-seed differences (each in seed order) and say where
    each claim stands; the live race calls this after every round and adds a seed to the open
    claims, so what the summary states is what the race decided.

    At each look k (`plan.first` .. `plan.cap`) the claims not yet stopped that have k seeds are
    judged on their first k, Holm-corrected at `plan.look_alpha` with the claims already decided
    no longer counted. A claim decided or futile at a look is stopped there; one at the cap stops
    as it stands."""
    level = plan.look_alpha(alpha)
    states: list[RaceState | None] = [None] * len(family)
    decided = 0
    for look in range(plan.first, plan.cap + 1):
        ready = [
            i for i, d in enumerate(family)
            if len(d) >= look and (states[i] is None or not states[i].stopped)
        ]  # fmt: skip
        if not ready:
            continue
        judged = holm([compare(family[i][:look]) for i in ready], level, m=len(family) - decided)
        for i, v in zip(ready, judged):
            if v.decided:
                states[i], decided = RaceState(v, DECIDED), decided + 1
            elif v.mean <= 0:
                states[i] = RaceState(v, FUTILE)
            else:
                states[i] = RaceState(v, CAP if look >= plan.cap else OPEN)
    return [
        s if s is not None else RaceState(compare(d, level), OPEN) for s, d in zip(states, family)
    ]
