"""Block and network designs as frozen dataclasses: the single source of truth.

A `BlockConfig` describes one Inception module (Szegedy et al. 2014, "Going deeper with
convolutions", Fig. 2b; Ioffe & Szegedy 2015, BN-Inception; Szegedy et al. 2015, "Rethinking the
Inception architecture", Figs. 5-7). The sampler, the builder, the exporter, the dashboard and
every stored trial read and write this one object through `to_dict` / `from_dict`.

Branches, in the order their outputs are concatenated:

1. ``1x1``: a 1x1 convolution of ``ch1x1`` channels.
2. ``3x3``: a 1x1 reduction to ``ch3x3_reduce`` channels, then a 3x3 of ``ch3x3`` channels.
3. ``wide``: a 1x1 reduction to ``wide_reduce`` channels, then the wide path of ``wide`` channels:
   ``5x5`` (v1), ``double3x3`` (two stacked 3x3, v2), ``asym`` (1xn then nx1, v3) or ``3x3``
   (a single 3x3: torchvision's GoogLeNet has it where the paper has 5x5).
4. ``pool``: a 3x3 stride-1 max or average pool, then a 1x1 projection to ``pool_proj`` channels.

A width of 0 removes a branch (its reduction must then be 0 too); at least two branches remain.
A stride-2 block (BN-Inception 3c and 4e) has no 1x1 branch, strides its 3x3 and wide paths, and
passes the pooled input through without a projection (``pool_proj`` is then 0 and the pool branch
contributes ``in_channels`` channels).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

WIDTH_FIELDS = ("ch1x1", "ch3x3_reduce", "ch3x3", "wide_reduce", "wide", "pool_proj")
WIDE_KINDS = ("5x5", "double3x3", "asym", "3x3")
# How one convolution unit orders conv, BN and ReLU under each placement: the one spelling the
# builder's docstring, the exporter and the dashboard share (see `search_space.blocks`).
BN_PLACEMENT_DESCRIPTIONS: dict[str, str] = {
    "none": "conv -> ReLU",
    "post": "conv -> BN -> ReLU",
    "pre": "BN -> ReLU -> conv",
    "post_act": "conv -> ReLU -> BN",
}
BN_PLACEMENTS = tuple(BN_PLACEMENT_DESCRIPTIONS)
POOL_TYPES = ("max", "avg")
ASYM_SIZES = (3, 5, 7)
DOWNSAMPLES = ("max", "avg")

# Upper bounds, generous for the space (GoogLeNet's widest branch has 384 channels, the search
# space's 256 at paper scale): a design read from someone else's study must not ask for a network
# that takes hours to count or build.
MAX_CHANNELS = 8192  # any branch width, and the stem, after scaling
MAX_STAGES = 8
MAX_DEPTH = 16  # blocks per stage
MAX_IMAGE_SIZE = 512
MAX_CLASSES = 100_000


def _check_width(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CHANNELS:
        raise ValueError(f"{name} must be an integer in 0..{MAX_CHANNELS}, got {value!r}")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _scale(width: int, factor: float) -> int:
    """Scale a channel width, keeping removed branches removed and live ones at least 1."""
    return 0 if width == 0 else max(1, int(round(width * factor)))


@dataclass(frozen=True)
class BlockConfig:
    """One Inception block design. Widths are channel counts; 0 removes a branch."""

    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    wide_reduce: int
    wide: int
    pool_proj: int
    wide_kind: str = "5x5"
    asym_n: int = 7
    pool_type: str = "max"
    bn: str = "none"
    stride: int = 1

    def __post_init__(self) -> None:
        for name in WIDTH_FIELDS:
            _check_width(name, getattr(self, name))
        _check_choice("wide_kind", self.wide_kind, WIDE_KINDS)
        _check_choice("asym_n", self.asym_n, ASYM_SIZES)
        _check_choice("pool_type", self.pool_type, POOL_TYPES)
        _check_choice("bn", self.bn, BN_PLACEMENTS)
        _check_choice("stride", self.stride, (1, 2))
        for reduce, width in (("ch3x3_reduce", "ch3x3"), ("wide_reduce", "wide")):
            if (getattr(self, reduce) == 0) != (getattr(self, width) == 0):
                raise ValueError(
                    f"{reduce} must be 0 exactly when {width} is 0 (a removed branch has no "
                    f"reduction), got {reduce}={getattr(self, reduce)} {width}={getattr(self, width)}"
                )
        if self.stride == 2:
            if self.ch1x1 != 0:
                raise ValueError(f"ch1x1 must be 0 in a stride-2 block, got {self.ch1x1}")
            if self.pool_proj != 0:
                raise ValueError(
                    f"pool_proj must be 0 in a stride-2 block (the pool passes through), "
                    f"got {self.pool_proj}"
                )
        if self.num_branches < 2:
            raise ValueError(
                f"a block needs at least two branches, got {self.num_branches} "
                f"(ch1x1={self.ch1x1}, ch3x3={self.ch3x3}, wide={self.wide}, "
                f"pool_proj={self.pool_proj})"
            )

    @property
    def has_pool_branch(self) -> bool:
        return self.pool_proj > 0 or self.stride == 2

    @property
    def num_branches(self) -> int:
        widths = (self.ch1x1, self.ch3x3, self.wide)
        return sum(w > 0 for w in widths) + int(self.has_pool_branch)

    def out_channels(self, in_channels: int) -> int:
        """Channels of the concatenated output for a given input width."""
        pool = in_channels if self.stride == 2 else self.pool_proj
        return self.ch1x1 + self.ch3x3 + self.wide + pool

    def wide_kernels(self) -> tuple[tuple[int, int], ...]:
        """Kernel sizes of the wide path's convolutions after its reduction."""
        n = self.asym_n
        return {
            "5x5": ((5, 5),),
            "double3x3": ((3, 3), (3, 3)),
            "asym": ((1, n), (n, 1)),
            "3x3": ((3, 3),),
        }[self.wide_kind]

    def scaled(self, factor: float) -> BlockConfig:
        """The same design with every width multiplied by `factor` (rounded, removed stays 0)."""
        return dataclasses.replace(
            self, **{w: _scale(getattr(self, w), factor) for w in WIDTH_FIELDS}
        )

    def short(self) -> str:
        """A one-line summary, e.g. ``1x1:64 3x3:96>128 5x5:16>32 maxpool:32 bn:none``."""
        parts = []
        if self.ch1x1:
            parts.append(f"1x1:{self.ch1x1}")
        if self.ch3x3:
            parts.append(f"3x3:{self.ch3x3_reduce}>{self.ch3x3}")
        if self.wide:
            kind = (
                f"1x{self.asym_n}+{self.asym_n}x1" if self.wide_kind == "asym" else self.wide_kind
            )
            parts.append(f"{kind}:{self.wide_reduce}>{self.wide}")
        if self.has_pool_branch:
            parts.append(f"{self.pool_type}pool:{self.pool_proj or 'pass'}")
        parts.append(f"bn:{self.bn}")
        if self.stride == 2:
            parts.append("s2")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockConfig:
        if not isinstance(data, dict):
            raise ValueError(f"block config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown block config field(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a missing required field
            raise ValueError(f"incomplete block config: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BlockConfig:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class NetworkConfig:
    """The small-image skeleton the search trains (28x28 or 32x32 inputs, 1 or 3 channels).

    Widths are given at paper scale and multiplied by ``width`` (0.25 by default, so GoogLeNet
    3a's 64/96/128/16/32/32 become 16/24/32/4/8/8). The stem is a 3x3 convolution of
    ``stem_channels * width`` channels. Then ``len(stages)``
    stages; stage ``i`` stacks ``stages[i]`` copies of ``block`` with its widths scaled by
    ``width * 2**i``, and stages are separated by a 2x2/2 ``downsample`` pool. Global average
    pooling, dropout and a linear classifier close the network.

    ``stage_blocks`` gives each stage its own design instead (MnasNet's factorized hierarchical
    space, Tan et al. 2019; Inception v3's per-grid modules, Szegedy et al. 2015): one design per
    stage, each scaled by ``width * 2**i`` as above, with ``block`` equal to the first stage's.
    Empty (the default) means ``block`` in every stage, and `to_dict` then leaves the key out so
    records of shared-block networks read as they always have.
    """

    block: BlockConfig
    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 28
    stem_channels: int = 96
    stages: tuple[int, ...] = (1, 1)
    width: float = 0.25
    downsample: str = "max"
    dropout: float = 0.0
    # Batch norm after the stem follows the (first stage's) block's placement so a no-BN design
    # stays BN-free.
    stem_bn: bool | None = None
    stage_blocks: tuple[BlockConfig, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.block, BlockConfig):
            raise ValueError(f"block must be a BlockConfig, got {type(self.block).__name__}")
        if self.block.stride != 1:
            raise ValueError(
                f"block.stride must be 1 in the search skeleton, got {self.block.stride}"
            )
        if not isinstance(self.stage_blocks, (list, tuple)):
            raise ValueError(
                f"stage_blocks must be a list of block designs, got "
                f"{type(self.stage_blocks).__name__}"
            )
        object.__setattr__(self, "stage_blocks", tuple(self.stage_blocks))
        for s, design in enumerate(self.stage_blocks):
            if not isinstance(design, BlockConfig):
                raise ValueError(
                    f"stage_blocks[{s}] must be a BlockConfig, got {type(design).__name__}"
                )
            if design.stride != 1:
                raise ValueError(
                    f"stage_blocks[{s}].stride must be 1 in the search skeleton, got {design.stride}"
                )
        _check_choice("in_channels", self.in_channels, (1, 3))
        _check_int("num_classes", self.num_classes, 2, MAX_CLASSES)
        _check_int("image_size", self.image_size, 8, MAX_IMAGE_SIZE)
        _check_int("stem_channels", self.stem_channels, 1, MAX_CHANNELS)
        stages = tuple(self.stages) if isinstance(self.stages, (list, tuple)) else self.stages
        if (
            not isinstance(stages, tuple)
            or not 1 <= len(stages) <= MAX_STAGES
            or any(
                isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= MAX_DEPTH
                for s in stages
            )
        ):
            shown = self.stages if len(repr(self.stages)) <= 80 else f"{repr(self.stages)[:80]}..."
            raise ValueError(
                f"stages must be a list of 1..{MAX_STAGES} integers in 1..{MAX_DEPTH} "
                f"(blocks per stage), got {shown}"
            )
        object.__setattr__(self, "stages", stages)
        if self.stage_blocks and len(self.stage_blocks) != len(stages):
            raise ValueError(
                f"stage_blocks has {len(self.stage_blocks)} designs for {len(stages)} stages "
                f"(stages={list(stages)}): give one design per stage"
            )
        if self.stage_blocks and self.block != self.stage_blocks[0]:
            raise ValueError(
                f"block must equal stage_blocks[0] in a per-stage network, got block "
                f"{self.block.short()!r} and stage_blocks[0] {self.stage_blocks[0].short()!r}"
            )
        if self.image_size >> (len(stages) - 1) < 2:
            raise ValueError(
                f"stages has {len(stages)} entries, too many downsamplings for "
                f"image_size={self.image_size}"
            )
        if (
            isinstance(self.width, bool)
            or not isinstance(self.width, (int, float))
            or not 0 < self.width <= 8
        ):
            raise ValueError(f"width must be in (0, 8], got {self.width!r}")
        for s in range(len(stages)):
            widest = max(getattr(self.stage_design(s), f) for f in WIDTH_FIELDS)
            if _scale(widest, self.width * 2**s) > MAX_CHANNELS:
                raise ValueError(
                    f"width={self.width} with {len(stages)} stages scales stage {s}'s widest "
                    f"branch ({widest}) beyond {MAX_CHANNELS} channels"
                )
        if self.stem_width > MAX_CHANNELS:
            raise ValueError(
                f"stem_channels={self.stem_channels} at width={self.width} gives "
                f"{self.stem_width} channels, above {MAX_CHANNELS}"
            )
        _check_choice("downsample", self.downsample, DOWNSAMPLES)
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.stem_bn not in (None, True, False):
            raise ValueError(f"stem_bn must be true, false or null, got {self.stem_bn!r}")

    @property
    def stem_width(self) -> int:
        return _scale(self.stem_channels, self.width)

    @property
    def use_stem_bn(self) -> bool:
        return self.block.bn != "none" if self.stem_bn is None else self.stem_bn

    @property
    def per_stage(self) -> bool:
        """Whether each stage has its own design (`stage_blocks`) rather than one shared block."""
        return bool(self.stage_blocks)

    @property
    def designs(self) -> tuple[BlockConfig, ...]:
        """One unscaled design per stage (the shared block repeated when not per-stage)."""
        return self.stage_blocks or (self.block,) * len(self.stages)

    def stage_design(self, stage: int) -> BlockConfig:
        """The design of `stage` at paper scale (before the stage's width scaling)."""
        if not 0 <= stage < len(self.stages):
            raise ValueError(f"stage must be in 0..{len(self.stages) - 1}, got {stage!r}")
        return self.stage_blocks[stage] if self.stage_blocks else self.block

    def stage_block(self, stage: int) -> BlockConfig:
        """The block design at `stage`, widths scaled for that stage."""
        return self.stage_design(stage).scaled(self.width * 2**stage)

    @property
    def head_bn(self) -> str:
        """The BN placement of the last stage's design, which the head's normalisation follows."""
        return self.stage_design(len(self.stages) - 1).bn

    def short(self) -> str:
        """A one-line summary: the block's `short()` when shared, else ``s0[...] s1[...]``."""
        if not self.per_stage:
            return self.block.short()
        return " ".join(f"s{s}[{d.short()}]" for s, d in enumerate(self.stage_blocks))

    def with_designs(self, designs: tuple[BlockConfig, ...] | list[BlockConfig]) -> NetworkConfig:
        """This network with one design per stage (a per-stage network)."""
        designs = tuple(designs)
        if not designs:
            raise ValueError("stage_blocks needs one design per stage, got none")
        return dataclasses.replace(self, block=designs[0], stage_blocks=designs)

    def with_block(self, block: BlockConfig) -> NetworkConfig:
        """This network with `block` shared by every stage."""
        return dataclasses.replace(self, block=block, stage_blocks=())

    def with_stage_design(self, stage: int, block: BlockConfig) -> NetworkConfig:
        """A per-stage network equal to this one except that `stage` has design `block`."""
        designs = list(self.designs)
        self.stage_design(stage)  # range check
        designs[stage] = block
        return self.with_designs(designs)

    def with_shape(
        self,
        stages: tuple[int, ...] | list[int] | None = None,
        width: float | None = None,
        stem_channels: int | None = None,
    ) -> NetworkConfig:
        """The same design(s) placed in another network: other blocks per stage, width or stem.

        A per-stage network keeps its stage count (each design belongs to its grid); a shared
        block may go into any number of stages."""
        changes: dict[str, Any] = {}
        if stages is not None:
            stages = tuple(stages)
            if self.per_stage and len(stages) != len(self.stages):
                raise ValueError(
                    f"stages={list(stages)} has {len(stages)} stages but the per-stage design "
                    f"has {len(self.stages)} (one design per stage)"
                )
            changes["stages"] = stages
        if width is not None:
            changes["width"] = width
        if stem_channels is not None:
            changes["stem_channels"] = stem_channels
        return dataclasses.replace(self, **changes)

    def channel_plan(self) -> list[tuple[str, int, int]]:
        """(name, in_channels, out_channels) for the stem and each block, in order."""
        plan = [("stem", self.in_channels, self.stem_width)]
        channels = self.stem_width
        for s, depth in enumerate(self.stages):
            block = self.stage_block(s)
            for d in range(depth):
                out = block.out_channels(channels)
                plan.append((f"stage{s}.block{d}", channels, out))
                channels = out
        return plan

    @property
    def out_channels(self) -> int:
        return self.channel_plan()[-1][2]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stages"] = list(self.stages)
        if self.stage_blocks:
            data["stage_blocks"] = [d.to_dict() for d in self.stage_blocks]
        else:  # a shared-block network is stored exactly as before per-stage designs existed
            del data["stage_blocks"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        if not isinstance(data, dict):
            raise ValueError(f"network config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown network config field(s): {', '.join(unknown)}")
        if "block" not in data:
            raise ValueError("network config needs a 'block'")
        data["block"] = BlockConfig.from_dict(data["block"])
        if "stage_blocks" in data:
            designs = data["stage_blocks"]
            if not isinstance(designs, list):
                raise ValueError(
                    f"stage_blocks must be a list of block configs, got {type(designs).__name__}"
                )
            data["stage_blocks"] = tuple(BlockConfig.from_dict(d) for d in designs)
        if "stages" in data and isinstance(data["stages"], list):
            data["stages"] = tuple(data["stages"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NetworkConfig:
        return cls.from_dict(json.loads(text))
