"""The Inception block search space: designs, the space, and the PyTorch builders."""

from .blocks import ConvNormAct, InceptionBlock, block_params, conv_params
from .config import BlockConfig, NetworkConfig
from .network import InceptionNet, build_network, network_params
from .references import REFERENCES
from .space import DEFAULT_SPACE, Dimension, SearchSpace, config_from_trial

__all__ = [
    "BlockConfig",
    "ConvNormAct",
    "DEFAULT_SPACE",
    "Dimension",
    "InceptionBlock",
    "InceptionNet",
    "NetworkConfig",
    "REFERENCES",
    "SearchSpace",
    "block_params",
    "build_network",
    "config_from_trial",
    "conv_params",
    "network_params",
]
