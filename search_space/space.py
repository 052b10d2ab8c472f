"""The search space as data: each dimension with its bounds, step, choices and condition.

A dimension exists only while its condition holds (a branch's reduction and kernel kind exist only
while that branch has channels), in the manner of keras-tuner's conditional hyperparameters.
`config_from_trial` is the one function that turns an Optuna trial into a `BlockConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import ASYM_SIZES, BN_PLACEMENTS, POOL_TYPES, BlockConfig

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

    def __post_init__(self) -> None:
        if (self.choices is None) == (self.low is None):
            raise ValueError(f"dimension {self.name!r} needs either low/high or choices")
        if self.choices is None and (self.high is None or self.high < self.low or self.step < 1):
            raise ValueError(f"dimension {self.name!r} has a bad range {self.low}..{self.high}")
        if self.condition is not None and self.condition[1] not in _OPS:
            raise ValueError(f"dimension {self.name!r} has an unknown condition {self.condition!r}")

    def active(self, values: dict[str, Any]) -> bool:
        if self.condition is None:
            return True
        parent, op, value = self.condition
        return parent in values and _OPS[op](values[parent], value)

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return (
            isinstance(value, int)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def values(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        return list(range(self.low, self.high + 1, self.step))

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
            if dim.condition is not None and dim.condition[0] not in seen:
                raise ValueError(f"dimension {dim.name!r} is conditioned on a later or unknown one")
            seen.add(dim.name)

    def __getitem__(self, name: str) -> Dimension:
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise KeyError(name)

    def config_from_params(self, params: dict[str, Any]) -> BlockConfig:
        """The block a set of active parameter values describes (as in `trial.params`)."""
        values: dict[str, Any] = {}
        for dim in self.dimensions:
            if dim.active(values):
                if dim.name not in params:
                    raise ValueError(f"missing parameter {dim.name!r}")
                if not dim.contains(params[dim.name]):
                    raise ValueError(f"{dim.name} is outside the space: {params[dim.name]!r}")
                values[dim.name] = params[dim.name]
            else:
                values[dim.name] = dim.default
        return BlockConfig(**{**self.fixed, **values})

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
                if not dim.contains(value):
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
            "  a sample with fewer than two branches is rejected (1x1, wide and pool all 0)"
        )
        return "\n".join(lines)


def config_from_trial(trial: Any, space: SearchSpace | None = None) -> BlockConfig:
    """Sample a block design from `space` through an Optuna trial (the one sampling function)."""
    space = space or DEFAULT_SPACE
    params: dict[str, Any] = {}
    for dim in space.dimensions:
        if not dim.active(params):
            continue
        if dim.choices is not None:
            params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        else:
            params[dim.name] = trial.suggest_int(dim.name, dim.low, dim.high, step=dim.step)
    return space.config_from_params(params)


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
        Dimension("pool_proj", 0, 128, 16),
        Dimension("pool_type", choices=POOL_TYPES, condition=("pool_proj", "!=", 0), default="max"),
    ),
    fixed={"stride": 1},
)
