"""The Inception block search space: designs, the space, and the PyTorch builders."""

from .blocks import ConvNormAct, InceptionBlock, block_params, conv_params
from .config import (
    BN_PLACEMENT_DESCRIPTIONS,
    BN_PLACEMENTS,
    WIDTH_FIELDS,
    BlockConfig,
    NetworkConfig,
)
from .models import (
    BNInception,
    GoogLeNet,
    GoogLeNetOutputs,
    bn_inception,
    googlenet,
    googlenet_loss,
)
from .network import InceptionNet, build_network, network_params
from .references import DEFAULT_REFERENCES, REFERENCES, reference_network, v3_stage_designs
from .space import (
    DEFAULT_SPACE,
    Dimension,
    SearchSpace,
    config_from_trial,
    network_from_trial,
    stage_prefix,
)

__all__ = [
    "BN_PLACEMENTS",
    "BN_PLACEMENT_DESCRIPTIONS",
    "BNInception",
    "BlockConfig",
    "ConvNormAct",
    "DEFAULT_REFERENCES",
    "DEFAULT_SPACE",
    "Dimension",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "InceptionBlock",
    "InceptionNet",
    "NetworkConfig",
    "REFERENCES",
    "SearchSpace",
    "WIDTH_FIELDS",
    "block_params",
    "bn_inception",
    "build_network",
    "config_from_trial",
    "conv_params",
    "googlenet",
    "googlenet_loss",
    "network_from_trial",
    "network_params",
    "reference_network",
    "stage_prefix",
    "v3_stage_designs",
]
