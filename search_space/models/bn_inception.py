"""BN-Inception (Ioffe & Szegedy 2015, "Batch normalization", appendix table), built from the
same `InceptionBlock` as the search.

Batch norm after every convolution, double 3x3 in place of the 5x5, and the stride-2 reduction
modules 3c and 4e; output widths follow the branch sums. `BN_INCEPTION_MODULES` holds the
appendix table's rows.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..blocks import ConvNormAct, InceptionBlock
from ..config import BlockConfig
from ..network import init_weights
from ._common import check_num_classes


def _v2(ch1x1: int, r3: int, c3: int, rd: int, d: int, proj: int, pool: str = "avg") -> BlockConfig:
    return BlockConfig(ch1x1, r3, c3, rd, d, proj, wide_kind="double3x3", pool_type=pool, bn="post")


def _v2_reduction(r3: int, c3: int, rd: int, d: int) -> BlockConfig:
    """A stride-2 module: no 1x1 branch, strided 3x3 and double 3x3, max pool passed through."""
    return BlockConfig(
        0, r3, c3, rd, d, 0, wide_kind="double3x3", pool_type="max", bn="post", stride=2
    )


# module -> (in_channels, design), the BN-Inception appendix table (wide = double 3x3).
BN_INCEPTION_MODULES: dict[str, tuple[int, BlockConfig]] = {
    "3a": (192, _v2(64, 64, 64, 64, 96, 32)),
    "3b": (256, _v2(64, 64, 96, 64, 96, 64)),
    "3c": (320, _v2_reduction(128, 160, 64, 96)),
    "4a": (576, _v2(224, 64, 96, 96, 128, 128)),
    "4b": (576, _v2(192, 96, 128, 96, 128, 128)),
    "4c": (576, _v2(160, 128, 160, 128, 160, 128)),
    "4d": (608, _v2(96, 128, 192, 160, 192, 128)),
    "4e": (608, _v2_reduction(128, 192, 192, 256)),
    "5a": (1056, _v2(352, 192, 320, 160, 224, 128)),
    "5b": (1024, _v2(352, 192, 320, 192, 224, 128, pool="max")),
}


class BNInception(nn.Module):
    """BN-Inception (Ioffe & Szegedy 2015): batch norm after every convolution, double 3x3."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        check_num_classes(num_classes)
        conv = partial(ConvNormAct, bn="post")

        def block(name: str) -> InceptionBlock:
            in_channels, config = BN_INCEPTION_MODULES[name]
            return InceptionBlock(in_channels, config, conv)

        self.conv1 = conv(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = conv(64, 64, 1)
        self.conv3 = conv(64, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, padding=1)

        self.inception3a = block("3a")
        self.inception3b = block("3b")
        self.inception3c = block("3c")
        self.inception4a = block("4a")
        self.inception4b = block("4b")
        self.inception4c = block("4c")
        self.inception4d = block("4d")
        self.inception4e = block("4e")
        self.inception5a = block("5a")
        self.inception5b = block("5b")

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # N x 3 x 224 x 224
        x = self.maxpool1(self.conv1(x))
        # N x 64 x 56 x 56
        x = self.conv3(self.conv2(x))
        # N x 192 x 56 x 56
        x = self.maxpool2(x)
        # N x 192 x 28 x 28
        x = self.inception3a(x)
        # N x 256 x 28 x 28
        x = self.inception3b(x)
        # N x 320 x 28 x 28
        x = self.inception3c(x)
        # N x 576 x 14 x 14
        x = self.inception4a(x)
        # N x 576 x 14 x 14
        x = self.inception4b(x)
        # N x 576 x 14 x 14
        x = self.inception4c(x)
        # N x 608 x 14 x 14
        x = self.inception4d(x)
        # N x 608 x 14 x 14
        x = self.inception4e(x)
        # N x 1056 x 7 x 7
        x = self.inception5a(x)
        # N x 1024 x 7 x 7
        x = self.inception5b(x)
        # N x 1024 x 7 x 7
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        # N x 1024 x 7 x 7 -> N x 1024 -> N x num_classes
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def bn_inception(num_classes: int = 1000) -> BNInception:
    """BN-Inception (Ioffe & Szegedy 2015, appendix table), built from `InceptionBlock`s.

    Batch norm (post, eps 1e-5) after every convolution, which carry no bias; 3c and 4e are
    stride-2 modules whose max pool passes the input through; 5b pools by max, the others by
    average. Output widths are the branch sums (608 and 1056 where the paper's table prints
    576 and 1024 for some modules). No dropout and no LRN, as the paper removes both.
    """
    return BNInception(num_classes=num_classes)
