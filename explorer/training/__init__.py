"""Training one network: the datasets (`data`), the budgets (`budgets`), the trainer (`trainer`),
the devices and worker layout (`devices`), cost metrics (`metrics`) and zero-cost proxies
(`proxies`).

May import: `explorer.store`, `explorer.usage`, `search_space`, torch. Nothing here knows about
searches, fronts or re-evaluations.
"""

from .budgets import (
    BUDGETS,
    LONG_FACTOR,
    TrainConfig,
    budget,
    default_budget,
    long_budget,
    rung_budget,
    scaled,
    scaled_name,
)
from .data import (
    DATASETS,
    DEFAULT_DATASET,
    ENV_VAR,
    DataError,
    cache_dir,
    find_dataset,
    load_dataset,
)
from .devices import (
    DEFAULT_WORKERS_PER_GPU,
    configure_backend,
    resolve_device,
    usable_cpus,
)
from .metrics import (
    TRAIN_FLOPS_PER_FORWARD,
    count_flops,
    cpu_name,
    device_info,
    measure_latency,
    synchronize,
)
from .proxies import (
    PROXY_NAMES,
    check_names,
    compute_proxies,
    proxy_batch,
    proxy_scores,
)
from .trainer import (
    evaluate,
    train,
)

__all__ = [
    "BUDGETS",
    "DATASETS",
    "DEFAULT_DATASET",
    "DEFAULT_WORKERS_PER_GPU",
    "DataError",
    "ENV_VAR",
    "LONG_FACTOR",
    "PROXY_NAMES",
    "TRAIN_FLOPS_PER_FORWARD",
    "TrainConfig",
    "budget",
    "cache_dir",
    "check_names",
    "compute_proxies",
    "configure_backend",
    "count_flops",
    "cpu_name",
    "default_budget",
    "device_info",
    "evaluate",
    "find_dataset",
    "load_dataset",
    "long_budget",
    "measure_latency",
    "proxy_batch",
    "proxy_scores",
    "resolve_device",
    "rung_budget",
    "scaled",
    "scaled_name",
    "synchronize",
    "train",
    "usable_cpus",
]
