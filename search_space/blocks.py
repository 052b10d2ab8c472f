"""The Inception block builder: one `ConvNormAct` unit and one `InceptionBlock` for every design.

The batch-norm placement strings order one unit as `config.BN_PLACEMENT_DESCRIPTIONS` says
(Ioffe & Szegedy 2015 put BN between convolution and ReLU). Whether the convolution keeps its bias:

- ``none`` (GoogLeNet, v1): with bias.
- ``post`` (BN-Inception, v2): without (BN's shift replaces it).
- ``pre`` (pre-activation): without (the next unit's BN absorbs it).
- ``post_act``: with (it acts before the ReLU, where BN cannot take its place).

Submodules are named as in torchvision's GoogLeNet (``branch1`` .. ``branch4``, units with
``conv`` and ``bn`` children), so its state dicts load into our modules without renaming.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .config import BlockConfig


def conv_bias(bn: str) -> bool:
    """Whether a convolution under this BN placement carries a bias (see module docstring)."""
    return bn in ("none", "post_act")


class ConvNormAct(nn.Module):
    """A convolution with ReLU and batch norm placed as ``bn`` says."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        bn: str = "post",
        bn_eps: float = 1e-5,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if padding is None:  # "same" padding for odd kernels
            padding = (kernel[0] // 2, kernel[1] // 2)
        self.bn_placement = bn
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=padding,
            bias=conv_bias(bn) if bias is None else bias,
        )
        if bn != "none":
            self.bn = nn.BatchNorm2d(in_channels if bn == "pre" else out_channels, eps=bn_eps)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        placement = self.bn_placement
        if placement == "none":
            return self.act(self.conv(x))
        if placement == "post":
            return self.act(self.bn(self.conv(x)))
        if placement == "pre":
            return self.conv(self.act(self.bn(x)))
        return self.bn(self.act(self.conv(x)))  # post_act


def conv_params(
    cin: int, cout: int, kernel: tuple[int, int], bn: str, bias: bool | None = None
) -> int:
    """Parameters of one `ConvNormAct`, from arithmetic alone."""
    bias = conv_bias(bn) if bias is None else bias
    n = cin * cout * kernel[0] * kernel[1] + (cout if bias else 0)
    if bn != "none":
        n += 2 * (cin if bn == "pre" else cout)
    return n


def _pool(kind: str, stride: int) -> nn.Module:
    if kind == "max":
        return nn.MaxPool2d(3, stride=stride, padding=1, ceil_mode=True)
    return nn.AvgPool2d(3, stride=stride, padding=1, ceil_mode=True, count_include_pad=False)


class InceptionBlock(nn.Module):
    """One Inception module built from a `BlockConfig`; outputs are concatenated on channels."""

    def __init__(
        self,
        in_channels: int,
        config: BlockConfig,
        conv_block: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.in_channels = in_channels
        self.out_channels = config.out_channels(in_channels)
        conv = conv_block or partial(ConvNormAct, bn=config.bn)
        s = config.stride
        if config.ch1x1:
            self.branch1 = conv(in_channels, config.ch1x1, 1)
        if config.ch3x3:
            self.branch2 = nn.Sequential(
                conv(in_channels, config.ch3x3_reduce, 1),
                conv(config.ch3x3_reduce, config.ch3x3, 3, stride=s),
            )
        if config.wide:
            kernels = config.wide_kernels()
            layers = [conv(in_channels, config.wide_reduce, 1)]
            channels = config.wide_reduce
            for i, kernel in enumerate(kernels):
                last = i == len(kernels) - 1
                layers.append(conv(channels, config.wide, kernel, stride=s if last else 1))
                channels = config.wide
            self.branch3 = nn.Sequential(*layers)
        if config.stride == 2:
            # Floor mode, like the strided 3x3 convolutions beside it: ceil mode gives one more row
            # on even maps (28 -> 15 against 14), and the branches could not be concatenated.
            self.branch4 = nn.MaxPool2d(3, stride=2, padding=1)
        elif config.pool_proj:
            self.branch4 = nn.Sequential(
                _pool(config.pool_type, 1), conv(in_channels, config.pool_proj, 1)
            )
        self._branches = [
            name for name in ("branch1", "branch2", "branch3", "branch4") if hasattr(self, name)
        ]

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [getattr(self, name)(x) for name in self._branches]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._forward(x), 1)


def block_params(config: BlockConfig, in_channels: int) -> int:
    """Parameters of `InceptionBlock(in_channels, config)`, from arithmetic alone."""
    bn = config.bn
    n = 0
    if config.ch1x1:
        n += conv_params(in_channels, config.ch1x1, (1, 1), bn)
    if config.ch3x3:
        n += conv_params(in_channels, config.ch3x3_reduce, (1, 1), bn)
        n += conv_params(config.ch3x3_reduce, config.ch3x3, (3, 3), bn)
    if config.wide:
        n += conv_params(in_channels, config.wide_reduce, (1, 1), bn)
        channels = config.wide_reduce
        for kernel in config.wide_kernels():
            n += conv_params(channels, config.wide, kernel, bn)
            channels = config.wide
    if config.pool_proj and config.stride == 1:
        n += conv_params(in_channels, config.pool_proj, (1, 1), bn)
    return n
