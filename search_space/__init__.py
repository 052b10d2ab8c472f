"""The Inception block search space: designs, the space, and the PyTorch builders."""

from .config import (
    BN_PLACEMENT_DESCRIPTIONS,
    BN_PLACEMENTS,
    DOWNSAMPLES,
    MAX_IMAGE_SIZE,
    POOL_TYPES,
    WIDTH_FIELDS,
    BlockConfig,
    NetworkConfig,
)
from .network import (
    build_network,
    network_params,
)
from .references import (
    DEFAULT_REFERENCES,
    REFERENCES,
    reference_network,
)
from .space import (
    DEFAULT_SPACE,
    Dimension,
    SearchSpace,
    config_from_trial,
    network_from_trial,
)

__all__ = [
    "BN_PLACEMENTS",
    "BN_PLACEMENT_DESCRIPTIONS",
    "BlockConfig",
    "DEFAULT_REFERENCES",
    "DEFAULT_SPACE",
    "DOWNSAMPLES",
    "Dimension",
    "MAX_IMAGE_SIZE",
    "NetworkConfig",
    "POOL_TYPES",
    "REFERENCES",
    "SearchSpace",
    "WIDTH_FIELDS",
    "build_network",
    "config_from_trial",
    "network_from_trial",
    "network_params",
    "reference_network",
]
