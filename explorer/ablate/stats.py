"""The ablation's per-seed contrasts, judged by the tool's one rule.

Every design of a ladder trains with the same seeds 0..K-1 (seed ``s`` initialises the network
and orders the training images), so a step's difference is taken seed by seed and judged by
`explorer.analysis.verdicts` (a paired t-test over the seeds); `judge` corrects a ladder's steps
together (Holm), so a sign is given only when the whole ladder's chance of a wrong sign is at most
5%. A step the rule does not carry is "not distinguishable at K seeds", with its interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..analysis import Verdict, compare, holm
from ..analysis import paired as differences


def paired(
    before: Mapping[int, float], after: Mapping[int, float], seeds: int | None = None
) -> Verdict:
    """The step ``after - before`` over the seeds 0..seeds-1 both have, judged alone."""
    return compare(differences(before, after, seeds))


def interaction(
    start: Mapping[int, float],
    first: Mapping[int, float],
    second: Mapping[int, float],
    both: Mapping[int, float],
    seeds: int | None = None,
) -> Verdict:
    """The 2x2 factorial's interaction, seed by seed: what the first change adds on top of the
    second, minus what it adds alone, ``(both - second) - (first - start)``."""
    common = sorted(set(start) & set(first) & set(second) & set(both))
    if seeds is not None:
        common = [s for s in common if s < seeds]
    return compare([(both[s] - second[s]) - (first[s] - start[s]) for s in common])


def judge(family: Sequence[Verdict]) -> list[Verdict]:
    """A ladder's comparisons judged together (Holm), in the order given."""
    return holm(family)
