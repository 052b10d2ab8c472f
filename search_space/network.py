"""The small-image network the search trains, built from a `NetworkConfig`."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvNormAct, InceptionBlock, block_params, conv_params
from .config import NetworkConfig


def init_weights(module: nn.Module) -> None:
    """He-normal convolutions (fan-out, ReLU gain), unit BN, small linear: no-BN designs train too."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


class InceptionNet(nn.Module):
    """stem -> stages of Inception blocks separated by 2x2/2 pools -> global pool -> linear.

    Each stage builds its own design (`NetworkConfig.stage_block`), shared or per stage."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        stem_bn = "post" if config.use_stem_bn else "none"
        self.stem = ConvNormAct(config.in_channels, config.stem_width, 3, bn=stem_bn)
        pool = nn.MaxPool2d if config.downsample == "max" else nn.AvgPool2d
        stages = []
        channels = config.stem_width
        for s, depth in enumerate(config.stages):
            layers: list[nn.Module] = [pool(2, 2)] if s > 0 else []
            block_cfg = config.stage_block(s)
            for _ in range(depth):
                block = InceptionBlock(channels, block_cfg)
                layers.append(block)
                channels = block.out_channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        # "pre" blocks end on a convolution: normalise and activate once before the head (the
        # last stage's design decides, in a per-stage network).
        self.head_norm = (
            nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            if config.head_bn == "pre"
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(channels, config.num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_network(config: NetworkConfig) -> InceptionNet:
    """The nn.Module for a network design."""
    return InceptionNet(config)


def network_params(config: NetworkConfig) -> int:
    """Trainable parameters of `build_network(config)`, from arithmetic alone (one pass over the
    blocks, so linear in depth)."""
    n = conv_params(
        config.in_channels, config.stem_width, (3, 3), "post" if config.use_stem_bn else "none"
    )
    channels = config.stem_width
    for s, depth in enumerate(config.stages):
        block = config.stage_block(s)
        for _ in range(depth):
            n += block_params(block, channels)
            channels = block.out_channels(channels)
    if config.head_bn == "pre":
        n += 2 * channels
    return n + channels * config.num_classes + config.num_classes
