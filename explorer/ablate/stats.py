"""Paired differences over seeds, and the words they earn.

Every design of a ladder trains with the same seeds 0..K-1 (seed ``s`` initialises the network
and orders the training images), so a step's difference is taken seed by seed and its standard
error is the standard deviation of those K differences over sqrt(K). A difference inside two
standard errors is reported as "not distinguishable at K seeds", with its size but never a sign.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

# A difference beyond this many standard errors is given a sign.
DISTINGUISHABLE_SE = 2.0


@dataclass(frozen=True)
class Paired:
    """Per-seed differences (after minus before) of one step, seed 0 first."""

    differences: tuple[float, ...]

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
    def distinguishable(self) -> bool:
        """Whether the mean lies beyond `DISTINGUISHABLE_SE` standard errors of zero."""
        if self.n < 2 or math.isnan(self.mean):
            return False
        return abs(self.mean) > DISTINGUISHABLE_SE * self.se

    def text(self) -> str:
        """``+0.0123 ± 0.0019``, or why no sign is given."""
        if self.n == 0:
            return "no paired seeds yet"
        seeds = f"{self.n} seed" + ("s" if self.n != 1 else "")
        if self.n < 2:
            return f"not distinguishable at {seeds} (|d| {abs(self.mean):.4f}, no SE)"
        if not self.distinguishable:
            return f"not distinguishable at {seeds} (|d| {abs(self.mean):.4f}, SE {self.se:.4f})"
        return f"{self.mean:+.4f} ± {self.se:.4f}"


def paired(
    before: Mapping[int, float], after: Mapping[int, float], seeds: int | None = None
) -> Paired:
    """The differences ``after[s] - before[s]`` over the seeds 0..seeds-1 both have."""
    common = sorted(set(before) & set(after))
    if seeds is not None:
        common = [s for s in common if s < seeds]
    return Paired(tuple(after[s] - before[s] for s in common))


def interaction(
    start: Mapping[int, float],
    first: Mapping[int, float],
    second: Mapping[int, float],
    both: Mapping[int, float],
    seeds: int | None = None,
) -> Paired:
    """The 2x2 factorial's interaction, seed by seed: what the first change adds on top of the
    second, minus what it adds alone, ``(both - second) - (first - start)``."""
    common = sorted(set(start) & set(first) & set(second) & set(both))
    if seeds is not None:
        common = [s for s in common if s < seeds]
    return Paired(tuple((both[s] - second[s]) - (first[s] - start[s]) for s in common))
