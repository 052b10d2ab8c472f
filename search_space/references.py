"""Reference block designs, written at paper scale, all points of `DEFAULT_SPACE`.

- ``v1``: GoogLeNet inception (3a) (Szegedy et al. 2014, Table 1): 64 | 96>128 | 16>32 5x5 |
  max pool > 32, no batch norm.
- ``v2``: BN-Inception inception (3a) (Ioffe & Szegedy 2015, appendix table): 64 | 64>64 |
  64>96 double 3x3 | avg pool > 32, BN after each convolution.
- ``v3``: the v2 widths with the wide path factorized asymmetrically into 1x7 then 7x1, as in
  Inception v3's 17x17 modules (Szegedy et al. 2015, Fig. 6).
"""

from __future__ import annotations

from .config import BlockConfig

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
