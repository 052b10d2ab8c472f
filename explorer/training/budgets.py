"""Training budgets: `TrainConfig` (one run's whole recipe) and its named presets (`BUDGETS`).

``smoke`` is for tests, ``quick`` for a search on a CPU (calibrated in BENCHMARKS.md, "Budget
calibration"), ``standard`` for a GPU. ``quickx9`` is ``quick`` on nine times its images
(`scaled`); `rung_budget` gives each rung of a successive-halving search its budget, and
`long_budget` the re-evaluation's; `study_train_config` is the one reading of a study's stored
budget.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from ..store import StudyConfig

OPTIMIZERS = ("sgd", "adamw")


SCHEDULES = ("onecycle", "cosine")


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}"
        )


def _number_in(
    name: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = True
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {lb}{low}, {high}{hb}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How one design is trained; the defaults are the ``quick`` budget. `train_images` and
    `val_images` are per epoch (None: the whole split); each epoch draws fresh training images
    from a seeded stream of permutations, and validates on the first `val_images` of the split
    (`final_val_images` after the last epoch)."""

    optimizer: str = "adamw"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float = 1e-2  # the peak learning rate
    momentum: float = 0.9  # SGD momentum, or AdamW's beta1
    # "onecycle" (warm-up then cosine anneal) or "cosine" (linear warm-up)
    schedule: str = "onecycle"
    warmup: float = 0.2  # fraction of all steps spent warming up
    weight_decay: float = 5e-4  # on convolution and linear weights only, not on BN or biases
    label_smoothing: float = 0.1
    batch_size: int = 16
    epochs: int = 4
    train_images: int | None = 1024
    val_images: int | None = 500
    # The last epoch's accuracy is the one the search optimises: measured on more images (None:
    # the whole split) so that designs a point apart are not ranked by sampling noise.
    final_val_images: int | None = 2000
    aux_weight: float = 0.3  # weight of auxiliary classifier losses (GoogLeNet uses 0.3)
    # Before each validation, batch-norm statistics are recomputed from this many training images
    # (0: keep the running averages). After a few dozen steps at a high learning rate the running
    # averages still describe early weights, and BN designs would validate far below what they
    # have learned, which misleads per-epoch pruning.
    bn_stats_images: int = 128
    augment: bool = False  # random crops and flips; pointless while no image is seen twice
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        _number_in("lr", self.lr, 0, 10, low_open=True, high_open=False)
        _number_in("momentum", self.momentum, 0, 1)
        _number_in("warmup", self.warmup, 0, 1, low_open=self.schedule == "onecycle")
        _number_in("weight_decay", self.weight_decay, 0, 1)
        _number_in("label_smoothing", self.label_smoothing, 0, 1)
        _number_in("aux_weight", self.aux_weight, 0, 10, high_open=False)
        _positive_int("batch_size", self.batch_size)
        _positive_int("epochs", self.epochs)
        _positive_int("train_images", self.train_images, allow_none=True)
        _positive_int("val_images", self.val_images, allow_none=True)
        _positive_int("final_val_images", self.final_val_images, allow_none=True)
        if (
            isinstance(self.bn_stats_images, bool)
            or not isinstance(self.bn_stats_images, int)
            or (self.bn_stats_images < 0)
        ):
            raise ValueError(
                f"bn_stats_images must be a non-negative integer, got {self.bn_stats_images!r}"
            )
        if self.train_images is not None and self.train_images < self.batch_size:
            raise ValueError(
                f"train_images must be at least batch_size ({self.batch_size}), got {self.train_images}"
            )
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be true or false, got {self.augment!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config field(s): {', '.join(unknown)}")
        return cls(**data)


# Calibrated on a 2-core CPU with bench/calibrate.py; see BENCHMARKS.md, "Budget calibration".
BUDGETS: dict[str, TrainConfig] = {
    # 2 x 512 images at batch 16 (64 steps), a few seconds on one CPU thread: enough for v1 and
    # v2 to rise well above chance (about 0.4 and 0.5), so smoke-budget comparisons of searches
    # (BENCHMARKS.md) rank designs by more than their size.
    "smoke": TrainConfig(
        lr=1e-2,
        batch_size=16,
        epochs=2,
        train_images=512,
        val_images=256,
        final_val_images=256,
        warmup=0.3,
        augment=True,
    ),
    # 4 x 1,024 images at batch 16 (256 steps): short enough for ~10 s per design on two CPU
    # cores, long enough for designs without batch norm to start learning under AdamW.
    "quick": TrainConfig(),
    # The whole training split ten times with crops and flips, at a GPU-sized batch. AdamW as in
    # quick, so both budgets favour the same designs; not yet calibrated on a GPU.
    "standard": TrainConfig(
        optimizer="adamw",
        lr=4e-3,
        schedule="onecycle",
        warmup=0.1,
        weight_decay=0.05,
        batch_size=256,
        epochs=10,
        train_images=None,
        val_images=None,
        final_val_images=None,
        augment=True,
    ),
}


# ``quickx9``: the ``quick`` preset with 9 times its training images (see `scaled`).
SCALED_BUDGET = re.compile(r"(?P<base>[a-z]+)x(?P<factor>[1-9][0-9]{0,3})")


def budget(name: str) -> TrainConfig:
    """The `TrainConfig` of a budget name: a preset of `BUDGETS`, or a preset with ``xK``
    (``quickx9``: `scaled` by K). `ValueError` names the known ones otherwise."""
    if isinstance(name, str) and name in BUDGETS:
        return BUDGETS[name]
    match = SCALED_BUDGET.fullmatch(name) if isinstance(name, str) else None
    if match is not None and match["base"] in BUDGETS:
        return scaled(BUDGETS[match["base"]], int(match["factor"]))
    raise ValueError(
        f"budget must be one of {', '.join(BUDGETS)}, or one of them with xK for K times its "
        f"training images (e.g. quickx9), got {name!r}"
    )


def scaled_name(name: str, factor: int) -> str:
    """The name of budget `name` scaled by `factor`: ``quick`` -> ``quickx10``, ``quickx9`` ->
    ``quickx90`` (the name `budget` reads back as `scaled` of the same preset)."""
    _positive_int("factor", factor)
    match = SCALED_BUDGET.fullmatch(name)
    if match is not None and match["base"] in BUDGETS:
        name, factor = match["base"], int(match["factor"]) * factor
    return name if factor == 1 else f"{name}x{factor}"


def is_budget(name: str) -> bool:
    try:
        budget(name)
    except ValueError:
        return False
    return True


def scaled(base: TrainConfig, factor: int) -> TrainConfig:
    """`base` trained on `factor` times its images, under the same schedule shape: each epoch
    draws `factor` times as many images, or, on the whole split, there are `factor` times as many
    epochs. Validation stays the base's."""
    _positive_int("factor", factor)
    if factor == 1:
        return base
    if base.train_images is None:
        return dataclasses.replace(base, epochs=base.epochs * factor)
    return dataclasses.replace(base, train_images=base.train_images * factor)


def rung_budget(top: TrainConfig, rung: int, rungs: int, eta: int, train_size: int) -> TrainConfig:
    """The budget of rung `rung` (0 is the bottom) of a successive-halving search whose top rung
    (``rungs - 1``) is `top`: the same `TrainConfig` with 1/eta of the training images per rung
    below the top (`train_size`, the training split's size, stands in for "the whole split").
    Every rung's schedule is complete: warm-up and annealing happen within the rung's own steps."""
    _positive_int("rungs", rungs)
    _positive_int("eta", eta)
    if not isinstance(rung, int) or not 0 <= rung < rungs:
        raise ValueError(f"rung must be in 0..{rungs - 1}, got {rung!r}")
    divisor = eta ** (rungs - 1 - rung)
    if divisor == 1:
        return top
    images = top.train_images if top.train_images is not None else train_size
    return dataclasses.replace(top, train_images=max(top.batch_size, round(images / divisor)))


LONG_FACTOR = 10


def long_budget(base: TrainConfig, factor: int = LONG_FACTOR) -> TrainConfig:
    """`base` with `factor` times the training images, for re-evaluating what it searched.

    Optimiser, schedule, batch size and augmentation stay the base's, so the longer run ranks the
    designs the search approximated, only less noisily. With a per-epoch image count, each epoch
    draws `factor` times as many images (the "10x" budget BENCHMARKS.md calibrates ``quick``
    against); on the whole split, there are `factor` times as many epochs. The final validation
    uses the whole validation split: it is what the re-evaluation selects on.
    """
    return dataclasses.replace(scaled(base, factor), final_val_images=None)


def default_budget(device: torch.device | str, rungs: int = 1, eta: int = 3) -> str:
    """The top rung of a new study's search when --budget is not given: ``standard`` on a CUDA
    device; elsewhere (CPU, MPS) ``quick`` for a single-budget search and, with several rungs,
    ``quick`` scaled so that the bottom rung is ``quick`` (``quickx9`` for 3 rungs, eta 3)."""
    if torch.device(device).type == "cuda":
        return "standard"
    factor = eta ** (rungs - 1)
    return "quick" if factor == 1 else f"quickx{factor}"


def study_train_config(config: StudyConfig) -> TrainConfig:
    """The top rung's `TrainConfig` of a study: the fields it stored when it was made, or, for a
    study made before the budget was stored whole, its budget's preset under the study's seed."""
    if config.train_config:
        return TrainConfig.from_dict(config.train_config)
    return dataclasses.replace(budget(config.budget), seed=config.train_seed)
