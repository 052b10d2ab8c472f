"""The transfer check: do designs chosen on the small search network keep their standing against
the references in a bigger one?

A search trains its designs in one small network (by default two stages of one block, width 0.25).
`python -m explorer.evaluate --stages 2,2` (or ``--width 0.5``, ``--stem 128``) retrains the
chosen designs and the references, with the same seeds and budget, both in the search network
(the study's own re-evaluation, ``reeval:<key>``) and in the transfer network, whose results are
kept apart under ``transfer:<shape>:<key>`` (`transfer_prefix`): the shape names the blocks per
stage, the width and the stem, so results of one transfer network never mix with another's or with
the search network's. A shared block may be placed in any number of stages; a per-stage design
keeps its stage count (each design belongs to its grid size).

Each design is compared with each reference on test accuracy, seed by seed, in both networks,
by the tool's one rule (`explorer.analysis.verdicts`: a paired t-test, Holm-corrected over the
comparisons made in one network). The ordering found on the search network *holds* when the
transfer network gives the same decided sign, is *reversed* when it gives the opposite one, and
is otherwise "not distinguishable at N seeds" there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from search_space import NetworkConfig

from ..analysis import RULE, Reeval, Verdict, compare, holm
from ..usage import UsageError
from .retrain import Target

TRANSFER_PREFIX = "transfer:"
HOLDS, REVERSED = "holds", "reversed"


@dataclass(frozen=True)
class Shape:
    """The network a transfer check places the designs in: what it changes of the searched one
    (None keeps the searched value)."""

    stages: tuple[int, ...] | None = None
    width: float | None = None
    stem_channels: int | None = None

    @property
    def given(self) -> bool:
        return (self.stages, self.width, self.stem_channels) != (None, None, None)

    def place(self, target: Target) -> Target:
        """`target`'s design(s) in this network; `UsageError` if they cannot go there."""
        try:
            network = target.network.with_shape(self.stages, self.width, self.stem_channels)
        except ValueError as exc:
            raise UsageError(f"{target.label}: {exc}") from None
        return replace(target, network=network, search_val_acc=None)


def shape_text(network: NetworkConfig) -> str:
    """``stages 2,2 width 0.5 stem 96``: the network shape a transfer result belongs to."""
    stages = ",".join(map(str, network.stages))
    return f"stages {stages} width {network.width:g} stem {network.stem_channels}"


def transfer_prefix(network: NetworkConfig) -> str:
    """The study attributes holding the results trained in `network`'s shape."""
    return f"{TRANSFER_PREFIX}{shape_text(network).replace(' ', '_')}:"


def placed(targets: Sequence[Target], shape: Shape) -> list[Target]:
    """The targets placed in the transfer network; `UsageError` when that network is the one they
    were searched in, or a design cannot go there."""
    # the searched designs first, so that a design that cannot go there is the one named
    moved = {id(t): shape.place(t) for t in sorted(targets, key=lambda t: t.reference is not None)}
    out = [moved[id(t)] for t in targets]
    if all(o.network == t.network for o, t in zip(out, targets)):
        raise UsageError(
            f"the transfer network ({shape_text(targets[0].network)}) is the searched one; give "
            "--stages, --width or --stem values that differ from it"
        )
    return out


class Pair(NamedTuple):
    """One design against one reference, in the search network and in the transfer network."""

    design: Target
    reference: Target
    search: Verdict
    transfer: Verdict

    @property
    def ordering(self) -> str:
        """Whether the search network's decided ordering holds in the transfer network."""
        if not self.search.decided:
            return f"no ordering to test (search network: {self.search.word})"
        if not self.transfer.decided:
            return self.transfer.word
        return HOLDS if self.transfer.word == self.search.word else REVERSED


def _differences(design: Reeval | None, reference: Reeval | None) -> tuple[float, ...]:
    if design is None or reference is None:
        return ()
    n = min(design.seeds, reference.seeds)
    return tuple(d - r for d, r in zip(design.test_acc[:n], reference.test_acc[:n]))


def pairs(
    targets: Sequence[Target],
    search: dict[int | str, Reeval],
    transfer: dict[int | str, Reeval],
) -> list[Pair]:
    """Every searched design against every reference on test accuracy, judged by the tool's rule
    in each network, Holm-corrected over the comparisons of that network."""
    refs = [t for t in targets if t.reference is not None]
    designs = [t for t in targets if t.reference is None]
    both = [(d, r) for d in designs for r in refs]
    judged = [
        holm([compare(_differences(results.get(d.key), results.get(r.key))) for d, r in both])
        for results in (search, transfer)
    ]
    return [Pair(d, r, s, t) for (d, r), s, t in zip(both, *judged)]


def report(
    targets: Sequence[Target],
    moved: Sequence[Target],
    search: dict[int | str, Reeval],
    transfer: dict[int | str, Reeval],
) -> str:
    """Each design's test accuracy in both networks, then its paired difference against each
    reference in the transfer network and whether the search network's ordering holds there."""
    lines = [
        "",
        f"transfer check: search network {shape_text(targets[0].network)}, transfer network "
        f"{shape_text(moved[0].network)}; test accuracy, the same seeds in both",
        "",
        f"{'design':<12} {'params':>10} {'search net test':<30} {'params':>10}  transfer net test",
    ]
    for t, m in zip(targets, moved):
        s, r = search.get(t.key), transfer.get(t.key)
        lines.append(
            f"{t.label:<12} {t.params:>10,} {s.short() if s and s.seeds else '-':<30} "
            f"{m.params:>10,}  {r.short() if r and r.seeds else '-'}"
        )
    found = pairs(targets, search, transfer)
    if found:
        lines += ["", f"design minus reference, test accuracy; the verdict: {RULE}:"]
    for t, m in zip(targets, moved):
        mine = [p for p in found if p.design is t]
        if mine:
            lines.append(f"{t.label} ({m.network.short()}):")
        for p in mine:
            vs = f"vs {p.reference.reference}:"
            lines += [
                f"  {vs:<7} search network   {p.search.text()}",
                f"  {'':<7} transfer network {p.transfer.text()}; ordering: {p.ordering}",
            ]
    return "\n".join(lines)
