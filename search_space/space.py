"""The search space as data: each dimension with its bounds, step, choices and condition.

A dimension exists only while its condition holds (a branch's reduction and kernel kind exist only
while that branch has channels), in the manner of keras-tuner's conditional hyperparameters.
`config_from_trial` is the one function that turns an Optuna trial into a `BlockConfig`;
`network_from_trial` places it in a network, one shared block or one block per stage. Per-stage
parameters carry the stage in their name (``s0.ch1x1``, ``s1.wide_kind``, ...), with the same
conditions inside each stage, as in MnasNet's factorized hierarchical space (Tan et al. 2019).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .config import ASYM_SIZES, BN_PLACEMENTS, POOL_TYPES, BlockConfig, NetworkConfig

_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b}


@dataclass(frozen=True)
class Dimension:
    """One searchable field of `BlockConfig`: an integer range or a set of choices."""

    name: str
    low: int | None = None
    high: int | None = None
    step: int = 1
    choices: tuple | None = None
    condition: tuple[str, str, Any] | None = None  # (parent, "==" or "!=", value)
    default: Any = None  # the field's value while the condition does not hold
    # While every one of these (parent, op, value) holds, the range starts at `raised_low`: how
    # the space keeps a branch that would otherwise be the block's only one besides 3x3.
    raise_low_when: tuple[tuple[str, str, Any], ...] = ()
    raised_low: int | None = None

    def __post_init__(self) -> None:
        if (self.choices is None) == (self.low is None):
            raise ValueError(f"dimension {self.name!r} needs either low/high or choices")
        if self.choices is None and (self.high is None or self.high < self.low or self.step < 1):
            raise ValueError(f"dimension {self.name!r} has a bad range {self.low}..{self.high}")
        if self.condition is not None and self.condition[1] not in _OPS:
            raise ValueError(f"dimension {self.name!r} has an unknown condition {self.condition!r}")
        if bool(self.raise_low_when) != (self.raised_low is not None) or (
            self.raised_low is not None
            and (self.choices is not None or not self.low <= self.raised_low <= self.high)
        ):
            raise ValueError(
                f"dimension {self.name!r} needs raised_low inside its range exactly when it has "
                "raise_low_when"
            )
        if any(op not in _OPS for _, op, _ in self.raise_low_when):
            raise ValueError(f"dimension {self.name!r} has an unknown raise_low_when condition")

    def bounds(self, values: dict[str, Any] | None = None) -> tuple[int, int]:
        """(low, high) of an integer dimension, given the values sampled before it."""
        values = values or {}
        raised = self.raise_low_when and all(
            p in values and _OPS[op](values[p], v) for p, op, v in self.raise_low_when
        )
        return (self.raised_low if raised else self.low), self.high

    def active(self, values: dict[str, Any]) -> bool:
        if self.condition is None:
            return True
        parent, op, value = self.condition
        return parent in values and _OPS[op](values[parent], value)

    def contains(self, value: Any, values: dict[str, Any] | None = None) -> bool:
        """Whether `value` is a point of this dimension, given the values sampled before it."""
        if self.choices is not None:
            return value in self.choices
        low, high = self.bounds(values)
        return isinstance(value, int) and low <= value <= high and (value - low) % self.step == 0

    def values(self, values: dict[str, Any] | None = None) -> list:
        if self.choices is not None:
            return list(self.choices)
        low, high = self.bounds(values)
        return list(range(low, high + 1, self.step))

    def describe(self) -> str:
        what = (
            "{" + ", ".join(map(str, self.choices)) + "}"
            if self.choices is not None
            else f"{self.low}..{self.high} step {self.step}"
        )
        when = ""
        if self.condition is not None:
            parent, op, value = self.condition
            when = f"  (only when {parent} {op} {value}; else {self.default})"
        if self.raise_low_when:
            holds = " and ".join(f"{p} {op} {v}" for p, op, v in self.raise_low_when)
            when += f"  (from {self.raised_low} when {holds})"
        return f"{self.name:<13} {what}{when}"


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of dimensions (parents before children) plus fixed block fields."""

    dimensions: tuple[Dimension, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    name: str = "inception-block"

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for dim in self.dimensions:
            parents = [c[0] for c in ((dim.condition,) if dim.condition else ())]
            parents += [c[0] for c in dim.raise_low_when]
            if any(p not in seen for p in parents):
                raise ValueError(f"dimension {dim.name!r} is conditioned on a later or unknown one")
            seen.add(dim.name)

    def __getitem__(self, name: str) -> Dimension:
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise KeyError(name)

    def config_from_params(self, params: dict[str, Any], prefix: str = "") -> BlockConfig:
        """The block a set of active parameter values describes (as in `trial.params`); with a
        `prefix` (``"s1."``), the block of the parameters named with it."""
        values: dict[str, Any] = {}
        for dim in self.dimensions:
            key = prefix + dim.name
            if dim.active(values):
                if key not in params:
                    raise ValueError(f"missing parameter {key!r}")
                if not dim.contains(params[key], values):
                    raise ValueError(f"{key} is outside the space: {params[key]!r}")
                values[dim.name] = params[key]
            else:
                values[dim.name] = dim.default
        return BlockConfig(**{**self.fixed, **values})

    def network_from_params(self, params: dict[str, Any], skeleton: NetworkConfig) -> NetworkConfig:
        """The network a trial's parameters describe, placed in `skeleton`'s shape: per stage when
        they are named by stage (``s0.ch1x1``, ...), else one shared block."""
        if not any(key.startswith("s0.") for key in params):
            return skeleton.with_block(self.config_from_params(params))
        found = sorted({key.split(".", 1)[0] for key in params if _STAGE_KEY.match(key)})
        if len(found) != len(skeleton.stages):
            raise ValueError(
                f"the parameters name {len(found)} stages ({', '.join(found)}) but the network "
                f"has {len(skeleton.stages)} (stages={list(skeleton.stages)})"
            )
        return skeleton.with_designs(
            [self.config_from_params(params, stage_prefix(s)) for s in range(len(skeleton.stages))]
        )

    def params_from_network(self, network: NetworkConfig) -> dict[str, Any]:
        """The active parameter values of a network's design(s), named by stage when per-stage."""
        if not network.per_stage:
            return self.params_from_config(network.block)
        params: dict[str, Any] = {}
        for s, design in enumerate(network.stage_blocks):
            prefix = stage_prefix(s)
            params |= {prefix + k: v for k, v in self.params_from_config(design).items()}
        return params

    def params_from_config(self, config: BlockConfig) -> dict[str, Any]:
        """The active parameter values of a block; raises `ValueError` if it is not a point here."""
        data = config.to_dict()
        for key, value in self.fixed.items():
            if data[key] != value:
                raise ValueError(f"{key}={data[key]!r} is fixed to {value!r} in this space")
        params: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for dim in self.dimensions:
            value = data[dim.name]
            if dim.active(values):
                if not dim.contains(value, values):
                    raise ValueError(f"{dim.name}={value!r} is not a point of the space")
                params[dim.name] = value
            elif value != dim.default:
                raise ValueError(f"{dim.name}={value!r} must be {dim.default!r} here (inactive)")
            values[dim.name] = value
        return params

    def contains(self, config: BlockConfig) -> bool:
        try:
            self.params_from_config(config)
        except ValueError:
            return False
        return True

    def describe(self) -> str:
        lines = [f"search space {self.name!r}: {len(self.dimensions)} dimensions"]
        lines += ["  " + dim.describe() for dim in self.dimensions]
        if self.fixed:
            lines.append("  fixed: " + ", ".join(f"{k}={v}" for k, v in self.fixed.items()))
        lines.append(
            "  widths are at paper scale; the network multiplies them by its width (0.25 default)"
        )
        lines.append(
            "  every design has two branches at least: 3x3 always, and the pool branch when "
            "1x1 and wide are both 0"
        )
        return "\n".join(lines)


_STAGE_KEY = re.compile(r"^s(\d+)\.")


def stage_prefix(stage: int) -> str:
    """How the parameters of stage `stage` are named in a per-stage study: ``s0.``, ``s1.``..."""
    return f"s{stage}."


def config_from_trial(
    trial: Any, space: SearchSpace | None = None, prefix: str = ""
) -> BlockConfig:
    """Sample a block design from `space` through an Optuna trial (the one sampling function);
    with a `prefix` (``"s1."``), every parameter is named with it."""
    space = space or DEFAULT_SPACE
    params: dict[str, Any] = {}
    for dim in space.dimensions:
        if not dim.active(params):
            continue
        if dim.choices is not None:
            value = trial.suggest_categorical(prefix + dim.name, list(dim.choices))
        else:
            low, high = dim.bounds(params)
            value = trial.suggest_int(prefix + dim.name, low, high, step=dim.step)
        params[dim.name] = value
    return space.config_from_params(params)


def network_from_trial(
    trial: Any, skeleton: NetworkConfig, per_stage: bool, space: SearchSpace | None = None
) -> NetworkConfig:
    """Sample a network design through an Optuna trial: one block shared by every stage of
    `skeleton`, or with `per_stage` one block per stage, its parameters named ``s0.``, ``s1.``..."""
    if not per_stage:
        return skeleton.with_block(config_from_trial(trial, space))
    return skeleton.with_designs(
        [config_from_trial(trial, space, stage_prefix(s)) for s in range(len(skeleton.stages))]
    )


DEFAULT_SPACE = SearchSpace(
    dimensions=(
        Dimension("bn", choices=BN_PLACEMENTS),
        Dimension("ch1x1", 0, 192, 16),
        Dimension("ch3x3_reduce", 16, 192, 16),
        Dimension("ch3x3", 16, 256, 16),
        Dimension("wide", 0, 192, 16),
        Dimension("wide_reduce", 16, 128, 16, condition=("wide", "!=", 0), default=0),
        Dimension(
            "wide_kind",
            choices=("5x5", "double3x3", "asym"),
            condition=("wide", "!=", 0),
            default="5x5",
        ),
        Dimension("asym_n", choices=ASYM_SIZES, condition=("wide_kind", "==", "asym"), default=7),
        # 3x3 is always there; the pool branch stays when 1x1 and wide are both removed, so
        # every design the space proposes has two branches at least.
        Dimension(
            "pool_proj",
            0,
            128,
            16,
            raise_low_when=(("ch1x1", "==", 0), ("wide", "==", 0)),
            raised_low=16,
        ),
        Dimension("pool_type", choices=POOL_TYPES, condition=("pool_proj", "!=", 0), default="max"),
    ),
    fixed={"stride": 1},
)
