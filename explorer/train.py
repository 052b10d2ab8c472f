"""Brief training of one candidate network: the function every search trial calls.

`train(model, data, config, device)` trains with the whole dataset on the device (see
`explorer.data`), decides device, precision and memory format once at its top (bf16 autocast and
channels_last on CUDA, float32 channels_last on CPU and MPS), evaluates on a fixed slice of the
validation split after every epoch and returns the curves in a `TrainResult`.

Process-wide backend switches (cuDNN autotuning, TF32, deterministic kernels) are not set here:
a worker sets them once with `configure_backend` when it starts, before it times anything, so
every latency and every trial of the worker runs under the same settings.

Budgets are named `TrainConfig` presets (`BUDGETS`): ``smoke`` for tests, ``quick`` for a search on
a CPU (calibrated in BENCHMARKS.md, "Budget calibration"), ``standard`` for a GPU.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, DeviceData
from .metrics import peak_memory_bytes, reset_peak_memory, synchronize

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine")
EVAL_BATCH_SIZE = 256  # larger batches run slower per image on a CPU (cache)
# cuBLAS's deterministic setting (CUDA docs, "Results reproducibility"): a fixed workspace.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss; `result` holds the curves up to that point."""

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result


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
    _positive_int("factor", factor)
    if base.train_images is None:
        return dataclasses.replace(base, epochs=base.epochs * factor, final_val_images=None)
    return dataclasses.replace(base, train_images=base.train_images * factor, final_val_images=None)


def default_budget(device: torch.device | str, rungs: int = 1, eta: int = 3) -> str:
    """The top rung of a new study's search when --budget is not given: ``standard`` on a CUDA
    device; elsewhere (CPU, MPS) ``quick`` for a single-budget search and, with several rungs,
    ``quick`` scaled so that the bottom rung is ``quick`` (``quickx9`` for 3 rungs, eta 3)."""
    if torch.device(device).type == "cuda":
        return "standard"
    factor = eta ** (rungs - 1)
    return "quick" if factor == 1 else f"quickx{factor}"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; any other name is checked and returned."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(
            f"device must be auto, cpu, cuda[:N] or mps, got {name!r} ({exc})"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps was asked for, but torch sees no MPS device")
    return device


@dataclass
class TrainResult:
    """Per-epoch curves and timings of one training run (partial if it stopped early)."""

    device: str
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time_s: list[float] = field(default_factory=list)  # training and validation
    epoch_train_s: list[float] = field(default_factory=list)  # training steps only
    train_time_s: float = 0.0  # time in training steps, without validation
    wall_time_s: float = 0.0  # everything, validation included
    images_seen: int = 0
    peak_memory_bytes: int | None = None

    @property
    def images_per_s(self) -> float:
        """Training throughput (images per second of training steps)."""
        return self.images_seen / self.train_time_s if self.train_time_s > 0 else 0.0

    @property
    def final_val_acc(self) -> float | None:
        return self.val_acc[-1] if self.val_acc else None

    def curves(self) -> dict[str, list]:
        """The ``curves`` trial attribute (see explorer.results)."""
        return {
            "epoch": list(self.epoch),
            "train_loss": list(self.train_loss),
            "val_loss": list(self.val_loss),
            "val_acc": list(self.val_acc),
        }


def configure_backend(device: torch.device | str, deterministic: bool = False) -> dict[str, Any]:
    """Set the process-wide backend switches for training on `device` and return them (see
    `backend_settings`), for a trial's provenance. Call it once when a worker starts, before it
    measures anything and before its first CUDA operation (cuBLAS reads its workspace setting
    when it starts); calling it again with the same arguments changes nothing.

    On CUDA: cuDNN autotuning (shapes are fixed within a trial) and TF32 for float32 matmuls and
    convolutions (the trainer computes in bf16; TF32 covers what autocast keeps in float32).
    ``deterministic=True`` asks for run-to-run repeatable results instead: no autotuning,
    deterministic cuDNN and torch kernels (`torch.use_deterministic_algorithms`) and a fixed
    cuBLAS workspace; slower. An operation that has no deterministic kernel warns, naming itself,
    instead of failing every trial (torch's list includes NLLLoss on CUDA, which cross-entropy
    uses; tests/test_gpu.py checks that a seeded run of the search's blocks repeats bit for bit).
    A CPU run repeats without the flag; it still turns on torch's deterministic checks there.
    """
    device = torch.device(device)
    if not isinstance(deterministic, bool):
        raise ValueError(f"deterministic must be true or false, got {deterministic!r}")
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
    return backend_settings(device)


def backend_settings(device: torch.device | str) -> dict[str, Any]:
    """The backend switches in force for `device`, as JSON-safe values (nothing is changed)."""
    device = torch.device(device)
    settings: dict[str, Any] = {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        settings.update(
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        )
    return settings


@dataclass(frozen=True)
class _Setup:
    """Device, precision and memory format, decided once per run."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    memory_format: torch.memory_format
    # Look for a NaN loss after every step, or only at the end of each epoch. Reading a value
    # back from a GPU waits for all queued work, and a NaN stays NaN in the epoch's summed loss,
    # so a GPU run reads it once per epoch (the read it makes for the epoch's loss anyway); on a
    # CPU the read waits for nothing and a diverged run stops at the step it diverged.
    check_each_step: bool

    def autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def sync(self) -> None:
        synchronize(self.device)


def _setup(device: torch.device) -> _Setup:
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return _Setup(device, torch.bfloat16 if bf16 else None, torch.channels_last, False)
    return _Setup(device, None, torch.channels_last, device.type == "cpu")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _optimizer(
    model: nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.weight_decay)
    # The fused CUDA kernels spare one launch per parameter tensor; elsewhere the foreach path.
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=True, **fast
        )
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999), **fast)


def lr_factor(step: int, total: int, config: TrainConfig) -> float:
    """The learning rate at `step` of `total` as a fraction of ``config.lr``."""
    warm = max(1, round(config.warmup * total)) if config.warmup > 0 else 0
    if step < warm:
        start = 0.04 if config.schedule == "onecycle" else 0.0  # one-cycle starts at lr / 25
        return start + (1 - start) * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _loss(
    output: Any, target: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(training loss, main logits); auxiliary outputs (GoogLeNet, Inception v3 in training mode
    return them after the main logits) add `aux_weight` times their loss."""
    if isinstance(output, torch.Tensor):
        return F.cross_entropy(output, target, label_smoothing=config.label_smoothing), output
    main, *aux = output
    loss = F.cross_entropy(main, target, label_smoothing=config.label_smoothing)
    for logits in aux:
        if logits is not None:
            loss = loss + config.aux_weight * F.cross_entropy(
                logits, target, label_smoothing=config.label_smoothing
            )
    return loss, main


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, data: DeviceData, num_images: int, seed: int = 0) -> None:
    """Replace every batch norm's running statistics by those of `num_images` training images
    (unaugmented, drawn with their own generator so the training stream is unchanged)."""
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return
    setup = _setup(data.device)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    was_training = model.training
    model.train()
    try:
        batch = min(num_images, EVAL_BATCH_SIZE)
        generator = torch.Generator().manual_seed(seed)
        for x, _ in data.train_batches(
            batch,
            max(num_images, batch),
            generator,
            augment=False,
            memory_format=setup.memory_format,
        ):
            with setup.autocast():
                model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DeviceData,
    device: torch.device | str,
    split: str = "val",
    num_images: int | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on the first `num_images` of a split."""
    setup = _setup(torch.device(device))
    data = data.on(setup.device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=setup.device)
    correct = torch.zeros((), device=setup.device, dtype=torch.int64)
    n = 0
    try:
        for x, y in data.eval_batches(split, EVAL_BATCH_SIZE, num_images, setup.memory_format):
            with setup.autocast():
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError(f"the {split} split is empty")
    return loss_sum.item() / n, correct.item() / n


def train(
    model: nn.Module,
    data: Dataset | DeviceData,
    config: TrainConfig,
    device: torch.device | str,
    epoch_callback: Callable[[int, TrainResult], None] | None = None,
) -> TrainResult:
    """Train `model` in place and return its curves.

    After each epoch's validation, ``epoch_callback(epoch, result)`` is called with the result so
    far (epochs count from 1); it may raise (the search raises ``optuna.TrialPruned``) to stop
    training, and the result object it was handed then holds the partial curves. A NaN or
    infinite loss raises `DivergedError` carrying the partial result (on a GPU at the end of the
    epoch it appeared in). Seeds torch's global generator with ``config.seed`` (dropout); data
    order and augmentation use their own. Changes no process-wide backend switch: see
    `configure_backend`.
    """
    setup = _setup(torch.device(device))
    device = setup.device
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    data = data.on(device)
    model.to(device=device, memory_format=setup.memory_format)
    model.train()
    reset_peak_memory(device)

    train_images = config.train_images or data.size("train")
    steps_per_epoch = train_images // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    optimizer = _optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config)
    )
    generator = torch.Generator().manual_seed(config.seed)
    result = TrainResult(device=str(device))

    for epoch in range(1, config.epochs + 1):
        setup.sync()
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        batches = data.train_batches(
            config.batch_size, train_images, generator, config.augment, setup.memory_format
        )
        for step, (x, y) in enumerate(batches, 1):
            with setup.autocast():
                loss, _ = _loss(model(x), y, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach().float()
            if setup.check_each_step and not torch.isfinite(loss_sum).item():
                _stop_diverged(result, setup, epoch, step, epoch_start, start, config)
        if not setup.check_each_step and not torch.isfinite(loss_sum).item():
            _stop_diverged(result, setup, epoch, steps_per_epoch, epoch_start, start, config)
        setup.sync()
        train_s = time.perf_counter() - epoch_start
        result.train_time_s += train_s
        result.epoch_train_s.append(train_s)
        result.images_seen += steps_per_epoch * config.batch_size
        if config.bn_stats_images:
            recompute_bn_stats(model, data, config.bn_stats_images, config.seed + epoch)
        last = epoch == config.epochs
        val_loss, val_acc = evaluate(
            model, data, device, "val", config.final_val_images if last else config.val_images
        )
        model.train()
        result.epoch.append(epoch)
        result.train_loss.append(loss_sum.item() / steps_per_epoch)
        result.val_loss.append(val_loss)
        result.val_acc.append(val_acc)
        result.epoch_time_s.append(time.perf_counter() - epoch_start)
        result.wall_time_s = time.perf_counter() - start
        result.peak_memory_bytes = peak_memory_bytes(device)
        if not math.isfinite(val_loss):
            raise DivergedError(f"validation loss is {val_loss} after epoch {epoch}", result)
        if epoch_callback is not None:
            epoch_callback(epoch, result)
    return result


def release_memory(device: torch.device | str, exc: BaseException | None = None) -> None:
    """Give a failed trial's device memory back, for the next trial and for the other processes
    on the same GPU: clear the local variables of the frames in `exc`'s traceback and in those of
    the exceptions it chains to (a caught out-of-memory error keeps every activation of the
    forward pass alive through them), collect garbage, and return cached CUDA blocks to the
    driver. Call it after dropping the model, from the handler that caught `exc`."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _stop_diverged(
    result: TrainResult,
    setup: _Setup,
    epoch: int,
    step: int,
    epoch_start: float,
    start: float,
    config: TrainConfig,
) -> None:
    setup.sync()
    result.train_time_s += time.perf_counter() - epoch_start
    result.images_seen += step * config.batch_size
    result.wall_time_s = time.perf_counter() - start
    raise DivergedError(
        f"training loss became NaN or infinite in epoch {epoch} by step {step}", result
    )
