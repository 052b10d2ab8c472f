"""Full-size ImageNet networks built from the search's block builder.

- `googlenet` (module `googlenet`): GoogLeNet, Szegedy et al. 2014, Table 1, in the paper's or
  torchvision's layout.
- `bn_inception` (module `bn_inception`): BN-Inception, Ioffe & Szegedy 2015, appendix table.
"""

from .bn_inception import BN_INCEPTION_MODULES, BNInception, bn_inception
from .googlenet import (
    GOOGLENET_MODULES,
    LAYOUTS,
    GoogLeNet,
    GoogLeNetOutputs,
    googlenet,
    googlenet_loss,
)

__all__ = [
    "BNInception",
    "BN_INCEPTION_MODULES",
    "GOOGLENET_MODULES",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "LAYOUTS",
    "bn_inception",
    "googlenet",
    "googlenet_loss",
]
