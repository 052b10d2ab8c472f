"""Brief training of one candidate network: the function every search trial calls.

`train(model, data, config, device)` trains with the whole dataset on the device (see
`explorer.training.data`), decides device, precision and memory format once at its top (bf16 autocast and
channels_last on CUDA, float32 channels_last on CPU and MPS), evaluates on a fixed slice of the
validation split after every epoch and returns the curves in a `TrainResult`.

Process-wide backend switches (cuDNN autotuning, TF32, deterministic kernels) are not set here:
a worker sets them once with `configure_backend` when it starts, before it times anything, so
every latency and every trial of the worker runs under the same settings.

Budgets are named `TrainConfig` presets (`BUDGETS`): ``smoke`` for tests, ``quick`` for a search on
a CPU (calibrated in BENCHMARKS.md, "Budget calibration"), ``standard`` for a GPU.
"""

from __future__ import annotations

import gc
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .budgets import TrainConfig
from .data import Dataset, DeviceData
from .metrics import peak_memory_bytes, reset_peak_memory, synchronize

EVAL_BATCH_SIZE = 256  # larger batches run slower per image on a CPU (cache)
# cuBLAS's deterministic setting (CUDA docs, "Results reproducibility"): a fixed workspace.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss; `result` holds the curves up to that point."""

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result


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
        """The ``curves`` trial attribute (see explorer.analysis)."""
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
