"""GoogLeNet (Szegedy et al. 2014, "Going deeper with convolutions", Table 1), built from the
same `InceptionBlock` as the search.

Nine Inception modules, global average pooling, dropout 0.4, and two auxiliary classifiers after
4a and 4d that are active only in training. ``layout="torchvision"`` gives torchvision's variant
of it (``torchvision.models.googlenet``), whose state dicts load directly. Every module is an
`InceptionBlock` of one `BlockConfig`; `GOOGLENET_MODULES` holds Table 1's rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import ConvNormAct, InceptionBlock
from ..config import BlockConfig
from ..network import init_weights
from ._common import check_num_classes


def _v1(ch1x1: int, r3: int, c3: int, r5: int, c5: int, proj: int) -> BlockConfig:
    return BlockConfig(ch1x1, r3, c3, r5, c5, proj, wide_kind="5x5", pool_type="max", bn="none")


# module -> (in_channels, design), GoogLeNet Table 1 as the paper draws it (5x5, max pool, no BN).
GOOGLENET_MODULES: dict[str, tuple[int, BlockConfig]] = {
    "3a": (192, _v1(64, 96, 128, 16, 32, 32)),
    "3b": (256, _v1(128, 128, 192, 32, 96, 64)),
    "4a": (480, _v1(192, 96, 208, 16, 48, 64)),
    "4b": (512, _v1(160, 112, 224, 24, 64, 64)),
    "4c": (512, _v1(128, 128, 256, 24, 64, 64)),
    "4d": (512, _v1(112, 144, 288, 32, 64, 64)),
    "4e": (528, _v1(256, 160, 320, 32, 128, 128)),
    "5a": (832, _v1(256, 160, 320, 32, 128, 128)),
    "5b": (832, _v1(384, 192, 384, 48, 128, 128)),
}


@dataclass(frozen=True)
class _Layout:
    """How one GoogLeNet layout differs from the other; resolved only here."""

    bn: str  # BN placement of every convolution (see blocks.py)
    bn_eps: float
    wide_kind: str  # the third branch's kernel
    dropout: float  # before the classifier
    lrn: bool  # local response normalization in the stem
    pool_padding: int  # of the 3x3/2 max pools between stages
    pool_ceil: bool
    last_pool: int  # kernel of the max pool between 4e and 5a (stride 2)
    aux_pool: str  # "avg5s3": 5x5/3 average pool; "adaptive4": adaptive average pool to 4x4


LAYOUTS: dict[str, _Layout] = {
    # Table 1 fixes only the output sizes of the pools; "same" padding reaches them at 224.
    "paper": _Layout("none", 1e-5, "5x5", 0.4, True, 1, False, 3, "avg5s3"),
    "torchvision": _Layout("post", 1e-3, "3x3", 0.2, False, 0, True, 2, "adaptive4"),
}


class GoogLeNetOutputs(NamedTuple):
    """What a GoogLeNet with auxiliary heads returns in training mode."""

    logits: torch.Tensor
    aux2: torch.Tensor | None
    aux1: torch.Tensor | None


class AuxHead(nn.Module):
    """Auxiliary classifier: 4x4 average pool -> 1x1 conv 128 -> FC 1024 -> dropout -> FC."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        conv_block: Callable[..., nn.Module],
        pool: str,
        dropout: float = 0.7,
    ) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3) if pool == "avg5s3" else nn.AdaptiveAvgPool2d(4)
        self.conv = conv_block(in_channels, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14
        x = self.pool(x)
        # N x C x 4 x 4
        x = torch.flatten(self.conv(x), 1)
        # N x 2048
        x = self.dropout(F.relu(self.fc1(x), inplace=True))
        # N x 1024
        return self.fc2(x)


class GoogLeNet(nn.Module):
    """GoogLeNet (Szegedy et al. 2014, Table 1) in the ``paper`` or ``torchvision`` layout.

    In training mode with auxiliary heads `forward` returns `GoogLeNetOutputs` (combine them with
    `googlenet_loss`); otherwise it returns the logits. Attribute names follow torchvision's
    ``GoogLeNet`` (conv1, maxpool1, conv2, conv3, maxpool2, inception3a, ..., aux1, aux2, fc).
    """

    def __init__(
        self, num_classes: int = 1000, aux_logits: bool = True, layout: str = "paper"
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
        check_num_classes(num_classes)
        spec = LAYOUTS[layout]
        self.layout = layout
        conv = partial(ConvNormAct, bn=spec.bn, bn_eps=spec.bn_eps)

        def pool(kernel: int = 3) -> nn.Module:
            return nn.MaxPool2d(
                kernel, stride=2, padding=spec.pool_padding, ceil_mode=spec.pool_ceil
            )

        def lrn() -> nn.Module:
            # The paper gives no LRN constants; these are AlexNet's (Krizhevsky et al. 2012).
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75) if spec.lrn else nn.Identity()

        def block(name: str) -> InceptionBlock:
            in_channels, config = GOOGLENET_MODULES[name]
            config = dataclasses.replace(config, bn=spec.bn, wide_kind=spec.wide_kind)
            return InceptionBlock(in_channels, config, conv)

        self.conv1 = conv(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = pool()
        self.lrn1 = lrn()
        self.conv2 = conv(64, 64, 1)
        self.conv3 = conv(64, 192, 3)
        self.lrn2 = lrn()
        self.maxpool2 = pool()

        self.inception3a = block("3a")
        self.inception3b = block("3b")
        self.maxpool3 = pool()
        self.inception4a = block("4a")
        self.inception4b = block("4b")
        self.inception4c = block("4c")
        self.inception4d = block("4d")
        self.inception4e = block("4e")
        self.maxpool4 = pool(spec.last_pool)
        self.inception5a = block("5a")
        self.inception5b = block("5b")

        self.aux1: AuxHead | None = None
        self.aux2: AuxHead | None = None
        if aux_logits:
            self.aux1 = AuxHead(512, num_classes, conv, spec.aux_pool)
            self.aux2 = AuxHead(528, num_classes, conv, spec.aux_pool)

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout)
        self.fc = nn.Linear(1024, num_classes)
        init_weights(self)

    @property
    def aux_logits(self) -> bool:
        return self.aux1 is not None

    def _forward_features(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        # N x 3 x 224 x 224
        x = self.conv1(x)
        # N x 64 x 112 x 112
        x = self.lrn1(self.maxpool1(x))
        # N x 64 x 56 x 56
        x = self.conv2(x)
        # N x 64 x 56 x 56
        x = self.lrn2(self.conv3(x))
        # N x 192 x 56 x 56
        x = self.maxpool2(x)
        # N x 192 x 28 x 28
        x = self.inception3a(x)
        # N x 256 x 28 x 28
        x = self.inception3b(x)
        # N x 480 x 28 x 28
        x = self.maxpool3(x)
        # N x 480 x 14 x 14
        x = self.inception4a(x)
        # N x 512 x 14 x 14
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4b(x)
        # N x 512 x 14 x 14
        x = self.inception4c(x)
        # N x 512 x 14 x 14
        x = self.inception4d(x)
        # N x 528 x 14 x 14
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.inception4e(x)
        # N x 832 x 14 x 14
        x = self.maxpool4(x)
        # N x 832 x 7 x 7
        x = self.inception5a(x)
        # N x 832 x 7 x 7
        x = self.inception5b(x)
        # N x 1024 x 7 x 7
        return x, aux2, aux1

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        # N x 1024 x 7 x 7 -> N x 1024 -> N x num_classes
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        x, aux2, aux1 = self._forward_features(x)
        logits = self.forward_head(x)
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits


def googlenet(num_classes: int = 1000, aux_logits: bool = True, layout: str = "paper") -> GoogLeNet:
    """GoogLeNet (Szegedy et al. 2014, Table 1), built from `InceptionBlock`s.

    ``layout="paper"``: convolutions with bias and no batch norm, real 5x5 convolutions, LRN in the
    stem, 3x3/2 max pools with padding 1, auxiliary heads with a 5x5/3 average pool (they need a
    14x14 map at 4a, i.e. a 224x224 input, in training mode), dropout 0.4.

    ``layout="torchvision"``: torchvision's ``googlenet``: convolutions without bias followed by
    batch norm (eps 1e-3), a 3x3 where the paper has the 5x5, no LRN, max pools in ceil mode with
    a 2x2/2 one between 4e and 5a, auxiliary heads with an adaptive 4x4 average pool, dropout 0.2.
    Its ``load_state_dict`` accepts the state dict of
    ``torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)`` (or of its
    pretrained weights) unchanged, and then gives the same logits in eval mode as torchvision
    with ``transform_input=False`` (this network never transforms its input).

    With ``aux_logits`` the network returns `GoogLeNetOutputs` (logits, aux2, aux1) in training
    mode; in eval mode, and always without auxiliary heads, it returns the logits.
    """
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, layout=layout)


def googlenet_loss(
    outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    target: torch.Tensor,
    aux_weight: float = 0.3,
) -> torch.Tensor:
    """Cross-entropy of the logits plus ``aux_weight`` times that of each auxiliary head present.

    ``outputs`` is what `GoogLeNet.forward` returned: logits, or (logits, aux2, aux1).
    """
    if isinstance(outputs, torch.Tensor):
        return F.cross_entropy(outputs, target)
    logits, aux2, aux1 = outputs
    loss = F.cross_entropy(logits, target)
    for aux in (aux1, aux2):
        if aux is not None:
            loss = loss + aux_weight * F.cross_entropy(aux, target)
    return loss
