"""The building blocks of every exported network, needing only ``torch``.

`python -m explorer.export` writes this file's text, below this docstring, verbatim into each
exported module, then the designs as literal data: one network class per design whose keyword
defaults are the design, in the manner of torchvision's GoogLeNet. So the code a user reads is
code this project imports, lints and tests against `search_space.build_network`: the same
parameters, the same state-dict keys and shapes, the same outputs for the same weights.

Everything here must import nothing but ``torch`` and the standard library, and stay scriptable
(`torch.jit.script`) and exportable (`torch.export`, ONNX): the exported module is the product.
"""

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn


class InputConfig(NamedTuple):
    """What a network expects as input, in the manner of timm's ``pretrained_cfg``.

    Images are float tensors N x C x H x W with values in [0, 1] (torchvision's ``ToTensor``
    convention); the network standardises them itself with ``mean`` and ``std`` per channel.
    """

    dataset: str
    input_size: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


class BlockWidths(NamedTuple):
    """Output channels of each branch of an Inception block; 0 removes the branch."""

    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    wide_reduce: int
    wide: int
    pool_proj: int


class Normalize(nn.Module):
    """Per-channel standardisation, ``(x - mean) / std``, of images in [0, 1].

    The statistics are buffers, so they follow the model across devices and into exported graphs,
    but not persistent ones: they belong to the design, not to the trained weights, and state
    dicts saved without them (every weights file the search keeps) load unchanged.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std) or not all(s > 0 for s in std):
            raise ValueError(f"mean and std need one value per channel, std > 0: {mean}, {std}")
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ConvNormAct(nn.Module):
    """A "same"-padded convolution with a ReLU, and batch norm placed as ``bn`` says.

    ``none``: conv -> ReLU (GoogLeNet); ``post``: conv -> BN -> ReLU (BN-Inception); ``pre``:
    BN -> ReLU -> conv (pre-activation); ``post_act``: conv -> ReLU -> BN. The convolution has a
    bias only where no batch norm directly follows it (``none``, ``post_act``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        bn: str = "post",
    ) -> None:
        super().__init__()
        if bn not in ("none", "post", "pre", "post_act"):
            raise ValueError(f"bn must be 'none', 'post', 'pre' or 'post_act', got {bn!r}")
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            (kh, kw),
            padding=(kh // 2, kw // 2),
            bias=bn in ("none", "post_act"),
        )
        if bn == "none":
            self.bn = nn.Identity()  # no parameters: the state dict has no ``bn`` entries
        else:
            self.bn = nn.BatchNorm2d(in_channels if bn == "pre" else out_channels)
        self.act = nn.ReLU(inplace=True)
        # Two flags instead of the string: the forward stays one branch-free line per order.
        self.pre = bn == "pre"
        self.norm_after_act = bn == "post_act"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            return self.conv(self.act(self.bn(x)))
        if self.norm_after_act:
            return self.bn(self.act(self.conv(x)))
        return self.act(self.bn(self.conv(x)))  # none (bn is the identity) and post


class Inception(nn.Module):
    """An Inception block: up to four branches side by side, concatenated on channels.

    ``branch1`` is a 1x1 convolution; ``branch2`` a 1x1 reduction then a 3x3; ``branch3`` a 1x1
    reduction then the wide path, one convolution per kernel in ``wide_kernels`` (a real 5x5,
    two 3x3, or 1xn then nx1); ``branch4`` a 3x3 stride-1 max or average pool then a 1x1
    projection. A width of 0 removes its branch.
    """

    def __init__(
        self,
        in_channels: int,
        widths: BlockWidths,
        wide_kernels: tuple[tuple[int, int], ...],
        pool_type: str = "max",
        bn: str = "none",
    ) -> None:
        super().__init__()
        ch1x1, ch3x3_reduce, ch3x3, wide_reduce, wide, pool_proj = widths
        self.branch1 = ConvNormAct(in_channels, ch1x1, 1, bn) if ch1x1 else None
        self.branch2 = None
        if ch3x3:
            self.branch2 = nn.Sequential(
                ConvNormAct(in_channels, ch3x3_reduce, 1, bn),
                ConvNormAct(ch3x3_reduce, ch3x3, 3, bn),
            )
        self.branch3 = None
        if wide:
            layers = [ConvNormAct(in_channels, wide_reduce, 1, bn)]
            channels = wide_reduce
            for kernel in wide_kernels:
                layers.append(ConvNormAct(channels, wide, kernel, bn))
                channels = wide
            self.branch3 = nn.Sequential(*layers)
        self.branch4 = None
        if pool_proj:
            # Ceil mode, and for average pooling dividing by real pixels only, as trained.
            if pool_type == "max":
                pool: nn.Module = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
            elif pool_type == "avg":
                pool = nn.AvgPool2d(3, 1, 1, ceil_mode=True, count_include_pad=False)
            else:
                raise ValueError(f"pool_type must be 'max' or 'avg', got {pool_type!r}")
            self.branch4 = nn.Sequential(pool, ConvNormAct(in_channels, pool_proj, 1, bn))
        self.out_channels = ch1x1 + ch3x3 + wide + pool_proj

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        if self.branch1 is not None:
            outputs.append(self.branch1(x))
        if self.branch2 is not None:
            outputs.append(self.branch2(x))
        if self.branch3 is not None:
            outputs.append(self.branch3(x))
        if self.branch4 is not None:
            outputs.append(self.branch4(x))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._forward(x), 1)


def init_weights(module: nn.Module) -> None:
    """He-normal convolutions (fan-out), unit batch norm, small linear layers: the
    initialisation the search trained from, so designs without batch norm train too."""
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


def per_stage(value: tuple | list | str, stages: int, name: str) -> tuple:
    """A layer choice given once for every stage, or as one entry per stage, as one per stage.

    ``wide_kernels`` once is a tuple of kernel sizes, ``((5, 5),)``; per stage it is a tuple of
    those, ``(((5, 5),), ((1, 7), (7, 1)))``. ``pool_type`` and ``bn`` once are strings."""
    if name == "wide_kernels":
        once = not value or isinstance(value[0][0], int)
    else:
        once = isinstance(value, str)
    if once:
        return (value,) * stages
    if len(value) != stages:
        raise ValueError(f"{name} needs one entry per stage ({stages}), got {len(value)}")
    return tuple(value)


class InceptionNet(nn.Module):
    """normalise -> 3x3 stem -> stages of Inception blocks, a 2x2 pool before each stage after
    the first -> global average pool -> dropout -> linear.

    ``depths`` holds the blocks per stage and ``widths`` one `BlockWidths` per stage. The wide
    path's ``wide_kernels``, the ``pool_type`` and the batch-norm placement ``bn`` are given once
    for every block, or one per stage for a design whose stages differ (the head normalises
    when the last stage's ``bn`` is ``pre``; the stem has batch norm after its convolution when
    ``stem_bn``). Inputs are images in [0, 1]: the first layer standardises them with ``mean``
    and ``std``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        stem_width: int,
        depths: tuple[int, ...],
        widths: tuple[BlockWidths, ...],
        wide_kernels: tuple[tuple[int, int], ...] | tuple[tuple[tuple[int, int], ...], ...],
        pool_type: str | tuple[str, ...],
        bn: str | tuple[str, ...],
        stem_bn: bool,
        downsample: str,
        dropout: float,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        if len(mean) != in_channels:
            raise ValueError(f"mean needs {in_channels} values (one per channel), got {mean}")
        if downsample not in ("max", "avg"):
            raise ValueError(f"downsample must be 'max' or 'avg', got {downsample!r}")
        self.normalize = Normalize(mean, std)
        self.stem = ConvNormAct(in_channels, stem_width, 3, "post" if stem_bn else "none")
        kernels = per_stage(wide_kernels, len(depths), "wide_kernels")
        pools = per_stage(pool_type, len(depths), "pool_type")
        bns = per_stage(bn, len(depths), "bn")
        channels, stages = stem_width, []
        for stage, (depth, stage_widths) in enumerate(zip(depths, widths, strict=True)):
            layers: list[nn.Module] = []
            if stage:
                layers.append(nn.MaxPool2d(2, 2) if downsample == "max" else nn.AvgPool2d(2, 2))
            for _ in range(depth):
                block = Inception(
                    channels, BlockWidths(*stage_widths), kernels[stage], pools[stage], bns[stage]
                )
                layers.append(block)
                channels = block.out_channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        # Pre-activation blocks end on a convolution: normalise and activate once before the head.
        self.head_norm = (
            nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            if bns[-1] == "pre"
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (N x C x H x W) to the last stage's feature maps."""
        return self.head_norm(self.stages(self.stem(self.normalize(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps to class logits (N x num_classes)."""
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def load_weights(
    model: nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> None:
    """Load the state dict saved at `path` into `model` (every key must match) and set it to
    eval mode. The normalisation is not in state dicts: weights saved by the search load as
    they are."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    model.eval()
