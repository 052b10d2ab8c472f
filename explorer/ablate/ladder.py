"""Ablation ladders: designs that differ one field group at a time.

A block design's fields fall in four groups, the changes the literature names between the
Inception versions:

- ``bn``: where batch normalization sits (``bn``);
- ``factorization``: what the wide path is (``wide_kind``, ``asym_n``): the 5x5 of v1 or the two
  stacked 3x3 of v2, at the same widths;
- ``widths``: the six branch widths;
- ``pool``: the pool branch's pool type.

`path_ladder` walks from one design to another changing one group per step, and trains both
orders of batch norm and factorization (a 2x2 factorial) when both differ, so that their
interaction shows. `leave_one_out` reverts each group of a winner to a baseline's value, one at a
time (the ablation analysis of Fawcett and Hoos, 2016): what each part of the winner is worth.

In a per-stage network (one block design per stage, `NetworkConfig.stage_blocks`) a step changes
one group of one stage's design ("stage 2: factorized wide path double3x3 -> 1x7+7x1"), stage by
stage; a shared block's ladders are as above. A shared design on the way to a per-stage one is
first written as the same design in every stage, so both walk the same stages.

Fields that a design does not use (the wide path's kind when it has no wide branch, the pool type
without a pool branch) are set to the search space's defaults (`canonical`) and never count as a
difference (`changed_groups`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from search_space import (
    DEFAULT_SPACE,
    WIDTH_FIELDS,
    BlockConfig,
    NetworkConfig,
    SearchSpace,
    network_params,
)

GROUPS: dict[str, tuple[str, ...]] = {
    "bn": ("bn",),
    "factorization": ("wide_kind", "asym_n"),
    "widths": WIDTH_FIELDS,
    "pool": ("pool_type",),
}
GROUP_TITLES = {
    "bn": "batch norm",
    "factorization": "factorized wide path",
    "widths": "branch widths",
    "pool": "pool type",
}
# The two ideas BN-Inception is taught by: their steps are trained in both orders.
FACTORIAL = ("bn", "factorization")
GROUP_OF_FIELD = {f: g for g, fields in GROUPS.items() for f in fields}
PATH = "path"
LEAVE_ONE_OUT = "leave-one-out"


def _active(block: BlockConfig, space: SearchSpace) -> set[str]:
    """The space's dimensions that `block` uses (a condition on a removed branch does not hold)."""
    values: dict[str, Any] = {}
    active = set()
    for dim in space.dimensions:
        if dim.active(values):
            active.add(dim.name)
        values[dim.name] = getattr(block, dim.name)
    return active


def canonical(block: BlockConfig, space: SearchSpace = DEFAULT_SPACE) -> BlockConfig:
    """`block` with every field it does not use set to the space's default for it."""
    values: dict[str, Any] = {}
    for dim in space.dimensions:
        values[dim.name] = getattr(block, dim.name) if dim.active(values) else dim.default
    return dataclasses.replace(block, **values)


def changed_groups(a: BlockConfig, b: BlockConfig, space: SearchSpace = DEFAULT_SPACE) -> list[str]:
    """The groups in which `a` and `b` differ, in `GROUPS` order; a field that either design does
    not use is no difference."""
    used = _active(a, space) & _active(b, space)
    spaced = {d.name for d in space.dimensions}
    out = []
    for group, fields in GROUPS.items():
        if any(getattr(a, f) != getattr(b, f) and (f in used or f not in spaced) for f in fields):
            out.append(group)
    return out


def with_group(block: BlockConfig, source: BlockConfig, group: str) -> BlockConfig:
    """`block` with the fields of `group` taken from `source`, unused fields canonical."""
    return canonical(dataclasses.replace(block, **{f: getattr(source, f) for f in GROUPS[group]}))


def canonical_network(network: NetworkConfig) -> NetworkConfig:
    """`network` with each stage's design `canonical`."""
    if not network.per_stage:
        return network.with_block(canonical(network.block))
    return network.with_designs([canonical(d) for d in network.designs])


def per_stage_pair(a: NetworkConfig, b: NetworkConfig) -> tuple[NetworkConfig, NetworkConfig]:
    """Both networks per stage when either is (a shared block written once per stage), else as
    they are."""
    if not (a.per_stage or b.per_stage):
        return a, b
    return a.with_designs(a.designs), b.with_designs(b.designs)


def changes(a: NetworkConfig, b: NetworkConfig) -> list[tuple[int | None, str]]:
    """(stage, group) for each group in which `a` and `b` differ: stage None for shared blocks,
    else stage by stage, in `GROUPS` order within a stage."""
    if not (a.per_stage or b.per_stage):
        return [(None, g) for g in changed_groups(a.block, b.block)]
    a, b = per_stage_pair(a, b)
    return [
        (s, g)
        for s in range(len(a.stages))
        for g in changed_groups(a.stage_design(s), b.stage_design(s))
    ]


def with_change(
    network: NetworkConfig, source: NetworkConfig, stage: int | None, group: str
) -> NetworkConfig:
    """`network` with `group` of one stage's design (every stage's, when `stage` is None) taken
    from `source`."""
    if stage is None:
        return network.with_block(with_group(network.block, source.block, group))
    design = with_group(network.stage_design(stage), source.stage_design(stage), group)
    return network.with_stage_design(stage, design)


def describe_group(block: BlockConfig, group: str) -> str:
    """How `block` fills one group, e.g. ``post`` or ``64|96>128|16>32|32``."""
    if group == "bn":
        return block.bn
    if group == "factorization":
        if not block.wide:
            return "no wide branch"
        return (
            f"1x{block.asym_n}+{block.asym_n}x1" if block.wide_kind == "asym" else block.wide_kind
        )
    if group == "pool":
        return f"{block.pool_type} pool" if block.pool_proj else "no pool branch"
    b = block
    return f"{b.ch1x1}|{b.ch3x3_reduce}>{b.ch3x3}|{b.wide_reduce}>{b.wide}|{b.pool_proj}"


@dataclass(frozen=True)
class Design:
    """One design of a ladder: a name for people and the network it trains."""

    name: str
    network: NetworkConfig

    @property
    def block(self) -> BlockConfig:
        return self.network.block

    def design(self, stage: int | None) -> BlockConfig:
        """The design of `stage` (the shared block when `stage` is None)."""
        return self.network.block if stage is None else self.network.stage_design(stage)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "network": self.network.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Design:
        return cls(str(data["name"]), NetworkConfig.from_dict(data["network"]))


@dataclass(frozen=True)
class Step:
    """Design `before` to design `after` (indices into the ladder's designs), changing `group`.
    `order` is ``main`` (the waterfall's path), ``other`` (the factorial's second order) or
    ``revert`` (a leave-one-out step: the winner against itself with one group reverted).
    `stage`: the stage whose design the step changes in a per-stage ladder (None: the shared
    block, every stage)."""

    before: int
    after: int
    group: str
    order: str = "main"
    stage: int | None = None

    @property
    def title(self) -> str:
        """``batch norm``, or ``stage 2: batch norm`` in a per-stage ladder."""
        where = "" if self.stage is None else f"stage {self.stage + 1}: "
        return f"{where}{GROUP_TITLES[self.group]}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.stage is None:  # a shared block's step is stored as before per-stage designs
            del data["stage"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        stage = data.get("stage")
        return cls(
            int(data["before"]),
            int(data["after"]),
            str(data["group"]),
            str(data["order"]),
            None if stage is None else int(stage),
        )


@dataclass(frozen=True)
class Ladder:
    """Designs and the one-group steps between them. `factorial`: indices of the four designs
    (start, +bn, +factorization, +both) when both orders were built."""

    kind: str
    title: str
    designs: tuple[Design, ...]
    steps: tuple[Step, ...]
    factorial: tuple[int, int, int, int] | None = None

    @property
    def key(self) -> str:
        """Names the ladder among those stored in one study."""
        return f"{self.kind}:{self.title}"

    def label(self, step: Step) -> str:
        """``v1 -> v1 +bn: bn none -> post``."""
        a, b = self.designs[step.before], self.designs[step.after]
        return (
            f"{step.title}: {describe_group(a.design(step.stage), step.group)} -> "
            f"{describe_group(b.design(step.stage), step.group)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "designs": [d.to_dict() for d in self.designs],
            "steps": [s.to_dict() for s in self.steps],
            "factorial": list(self.factorial) if self.factorial else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ladder:
        """A stored ladder; `ValueError` (or `KeyError`, `TypeError`) when it is not one."""
        factorial = data.get("factorial")
        return cls(
            str(data["kind"]),
            str(data["title"]),
            tuple(Design.from_dict(d) for d in data["designs"]),
            tuple(Step.from_dict(s) for s in data["steps"]),
            tuple(int(i) for i in factorial) if factorial else None,  # type: ignore[arg-type]
        )


class _Builder:
    """Collects the distinct designs of a ladder (by canonical network) and its steps."""

    def __init__(self) -> None:
        self.designs: list[Design] = []
        self.steps: list[Step] = []

    def add(self, name: str, network: NetworkConfig) -> int:
        network = canonical_network(network)
        for i, d in enumerate(self.designs):
            if d.network == network:
                return i
        self.designs.append(Design(name, network))
        return len(self.designs) - 1

    def step(
        self, before: int, after: int, group: str, order: str, stage: int | None = None
    ) -> None:
        self.steps.append(Step(before, after, group, order, stage))


def _plus(name: str, group: str) -> str:
    return f"{name} +{group}"


def path_ladder(start: Design, end: Design) -> Ladder:
    """From `start` to `end` one group at a time, in `GROUPS` order; batch norm and factorization
    in both orders when both differ. `ValueError` if the two are one design, or their networks
    differ outside the block (the skeleton). Per-stage designs: one group of one stage a step,
    stage by stage, without the factorial."""
    _same_skeleton(start.network, end.network)
    if not changes(start.network, end.network):
        raise ValueError(f"{start.name} and {end.name} are the same design")
    if start.network.per_stage or end.network.per_stage:
        return _stage_path(start, end)
    groups = changed_groups(start.block, end.block)
    b = _Builder()
    first = b.add(start.name, start.network)
    current, name = first, start.name
    factorial = None
    both = [g for g in FACTORIAL if g in groups]

    def apply(at: int, at_name: str, group: str, order: str) -> tuple[int, str]:
        net = b.designs[at].network
        block = with_group(net.block, end.block, group)
        done = not changed_groups(block, end.block)
        new_name = end.name if done else _plus(at_name, group)
        i = b.add(new_name, dataclasses.replace(net, block=block))
        b.step(at, i, group, order)
        return i, new_name

    if len(both) == 2:
        with_bn, bn_name = apply(first, start.name, "bn", "main")
        both_i, both_name = apply(with_bn, bn_name, "factorization", "main")
        with_fact, _ = apply(first, start.name, "factorization", "other")
        b.step(with_fact, both_i, "bn", "other")
        factorial = (first, with_bn, with_fact, both_i)
        current, name = both_i, both_name
    for group in groups:
        if len(both) == 2 and group in FACTORIAL:
            continue
        current, name = apply(current, name, group, "main")
    return Ladder(PATH, f"{start.name} -> {end.name}", tuple(b.designs), tuple(b.steps), factorial)


def _stage_path(start: Design, end: Design) -> Ladder:
    """`path_ladder` between per-stage designs: one group of one stage's design a step."""
    first, last = per_stage_pair(start.network, end.network)
    b = _Builder()
    current = b.add(start.name, first)
    for k, (stage, group) in enumerate(changes(first, last), 1):
        network = with_change(b.designs[current].network, last, stage, group)
        done = not changes(network, last)
        name = end.name if done else f"{start.name} -> {end.name}, step {k}"
        i = b.add(name, network)
        b.step(current, i, group, "main", stage)
        current = i
    return Ladder(PATH, f"{start.name} -> {end.name}", tuple(b.designs), tuple(b.steps))


def leave_one_out(winner: Design, baseline: Design) -> Ladder:
    """The winner against itself with each group in which it differs from `baseline` reverted to
    the baseline's, one at a time (one group of one stage's design at a time, per stage).
    `ValueError` when they do not differ or their skeletons do."""
    _same_skeleton(winner.network, baseline.network)
    top_net, base_net = per_stage_pair(winner.network, baseline.network)
    found = changes(top_net, base_net)
    if not found:
        raise ValueError(f"{winner.name} is the same design as {baseline.name}")
    b = _Builder()
    top = b.add(winner.name, top_net)
    for stage, group in found:
        where = "" if stage is None else f"stage {stage + 1} "
        name = f"{winner.name} with {baseline.name}'s {where}{GROUP_TITLES[group]}"
        i = b.add(name, with_change(top_net, base_net, stage, group))
        b.step(i, top, group, "revert", stage)
    title = f"{winner.name} leave-one-out against {baseline.name}"
    return Ladder(LEAVE_ONE_OUT, title, tuple(b.designs), tuple(b.steps))


def nearest(winner: Design, candidates: Sequence[Design]) -> Design:
    """The candidate that differs from `winner` in the fewest groups (then in parameters)."""
    size = network_params(winner.network)
    return min(
        candidates,
        key=lambda c: (
            len(changes(winner.network, c.network)),
            abs(network_params(c.network) - size),
        ),
    )


def skeleton(network: NetworkConfig) -> dict[str, Any]:
    """A network's fields other than its design(s): what every design of one ladder shares."""
    data = network.to_dict()
    data.pop("block")
    data.pop("stage_blocks", None)
    return data


def _same_skeleton(a: NetworkConfig, b: NetworkConfig) -> None:
    sa, sb = skeleton(a), skeleton(b)
    diff = [f"{k} {sa[k]!r} vs {sb[k]!r}" for k in sa if sa[k] != sb[k]]
    if diff:
        raise ValueError(
            "the two designs come from different networks (" + ", ".join(diff) + "); a ladder "
            "changes the block only"
        )
