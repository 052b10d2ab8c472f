"""Reference block designs, written at paper scale, all points of `DEFAULT_SPACE`.

- ``v1``: GoogLeNet inception (3a) (Szegedy et al. 2014, Table 1): 64 | 96>128 | 16>32 5x5 |
  max pool > 32, no batch norm.
- ``v2``: BN-Inception inception (3a) (Ioffe & Szegedy 2015, appendix table): 64 | 64>64 |
  64>96 double 3x3 | avg pool > 32, BN after each convolution.
- ``v3``: the v2 widths with the wide path factorized asymmetrically into 1x7 then 7x1, as in
  Inception v3's 17x17 modules (Szegedy et al. 2015, Fig. 6).

`reference_network` places a reference in a study's network: v1 and v2 repeat their block in every
stage; v3 placed per stage follows Inception v3's per-grid layout (see `v3_stage_designs`).
"""

from __future__ import annotations

import dataclasses

from .config import BlockConfig, NetworkConfig

REFERENCES: dict[str, BlockConfig] = {
    "v1": BlockConfig(
        ch1x1=64,
        ch3x3_reduce=96,
        ch3x3=128,
        wide_reduce=16,
        wide=32,
        pool_proj=32,
        wide_kind="5x5",
        pool_type="max",
        bn="none",
    ),
    "v2": BlockConfig(
        ch1x1=64,
        ch3x3_reduce=64,
        ch3x3=64,
        wide_reduce=64,
        wide=96,
        pool_proj=32,
        wide_kind="double3x3",
        pool_type="avg",
        bn="post",
    ),
    "v3": BlockConfig(
        ch1x1=64,
        ch3x3_reduce=64,
        ch3x3=64,
        wide_reduce=64,
        wide=96,
        pool_proj=32,
        wide_kind="asym",
        asym_n=7,
        pool_type="avg",
        bn="post",
    ),
}

# The references a search trains beside its designs and a re-evaluation compares against.
DEFAULT_REFERENCES = ("v1", "v2")


def v3_stage_designs(num_stages: int) -> tuple[BlockConfig, ...]:
    """Inception v3's module for each grid of a `num_stages`-stage network, at the widths of
    ``REFERENCES["v3"]`` (Szegedy et al. 2015, section 6 and Figs. 5-7).

    The first (largest) grid gets the 35x35 module, the wide path as two stacked 3x3 (Fig. 5); the
    medium grids the 17x17 module, 1x7 then 7x1 (Fig. 6); a third, smallest grid gets 1x3 then 3x1.
    v3's own 8x8 module (Fig. 7) splits 1x3 and 3x1 side by side and concatenates both; this space
    has no such expanded branch, so 1x3 then 3x1 in series is its nearest point. One stage is the
    35x35 module alone; two stages are 35x35 then 17x17.
    """
    if num_stages < 1:
        raise ValueError(f"num_stages must be at least 1, got {num_stages!r}")
    base = REFERENCES["v3"]
    first = dataclasses.replace(base, wide_kind="double3x3")
    medium = dataclasses.replace(base, wide_kind="asym", asym_n=7)
    smallest = dataclasses.replace(base, wide_kind="asym", asym_n=3)
    if num_stages == 1:
        return (first,)
    if num_stages == 2:
        return (first, medium)
    return (first, *(medium,) * (num_stages - 2), smallest)


def reference_network(
    name: str, skeleton: NetworkConfig, per_stage: bool | None = None
) -> NetworkConfig:
    """Reference `name` placed in `skeleton`'s network (its stages, width, stem, data shape).

    Placed per stage (`per_stage`, by default whether `skeleton` is a per-stage network), v1 and
    v2 repeat their block in every stage and v3 follows Inception v3's per-grid layout
    (`v3_stage_designs`); shared, every reference is its one block in every stage."""
    if name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
    per_stage = skeleton.per_stage if per_stage is None else per_stage
    if not per_stage:
        return skeleton.with_block(REFERENCES[name])
    n = len(skeleton.stages)
    designs = v3_stage_designs(n) if name == "v3" else (REFERENCES[name],) * n
    return skeleton.with_designs(designs)
