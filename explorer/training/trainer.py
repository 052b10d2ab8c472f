"""Brief training of one candidate network: the function every search trial calls.

`train(model, data, config, device)` trains with the whole dataset on the device (see
`explorer.training.data`), decides device, precision and memory format once at its top (bf16 autocast and
channels_last on CUDA, float32 channels_last on CPU and MPS), evaluates on a fixed slice of the
validation split after every epoch and returns the curves in a `TrainResult`.

Every training step has the form a CUDA graph can capture (`_Step`): the batch is copied into
fixed buffers, the learning rate is a one-element tensor written in place before each step (the
optimizer's fused kernels read it there), the loss is written into a fixed buffer. On the CPU and
by default everywhere that step runs eagerly. On CUDA with ``cuda_graph=True`` (or
``EXPLORER_CUDA_GRAPH=1``) the trainer captures it once after a few eager warm-up steps and
replays it for every later batch; evaluation stays eager, and a capture that fails leaves the
run eager with one line in the log. Off by default until it has been measured inside the trainer
on a GPU (bench/gpu.sh): NVIDIA's guide reports 1.2-3x for launch-bound steps, and this project's
step, captured outside the trainer, ran 2.9-3.3x on an H200 (BENCHMARKS.md, "GPU").

Process-wide backend switches (cuDNN autotuning, TF32, deterministic kernels) are not set here:
every process that trains sets them once with `configure_backend` (explorer.training.devices)
before it times anything, so every latency and every trial runs under the same settings.

Budgets are named `TrainConfig` presets (`BUDGETS`): ``smoke`` for tests, ``quick`` for a search on
a CPU (calibrated in BENCHMARKS.md, "Budget calibration"), ``standard`` for a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .budgets import TrainConfig
from .data import Dataset, DeviceData
from .devices import (  # noqa: F401 - re-exported: search workers call trainer.configure_backend
    CUBLAS_WORKSPACE_CONFIG,
    backend_settings,
    configure_backend,
)
from .metrics import peak_memory_bytes, reset_peak_memory, synchronize

EVAL_BATCH_SIZE = 256  # larger batches run slower per image on a CPU (cache)
# Where the optimizers run fused kernels (torch has fused AdamW and SGD for both); elsewhere
# (MPS) the per-tensor loop.
FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")
# Capturing the training step in a CUDA graph is off by default: it is built, and its eager twin
# is tested on the CPU against the trainer before it, but no GPU has yet measured it inside the
# trainer. Turn it on per call (`train(cuda_graph=True)`) or per process (EXPLORER_CUDA_GRAPH=1,
# which search workers inherit); make it the default once bench/gpu.sh has measured it.
CUDA_GRAPH_DEFAULT = False
CUDA_GRAPH_ENV = "EXPLORER_CUDA_GRAPH"
# Eager steps on a side stream before the capture: cuDNN autotuning, the optimizer's state and
# every other lazy allocation happen there, outside the graph (PyTorch's CUDA graphs notes).
GRAPH_WARMUP_STEPS = 3

_log = logging.getLogger(__name__)


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
    cuda_graph: bool = False  # whether the training steps after the warm-up replayed a CUDA graph
    graph_fallback: str | None = None  # why a capture that was asked for failed (then eager)

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

    def autocast(self, cache: bool = True):
        """Autocast to the run's precision; ``cache=False`` for a region a CUDA graph captures
        (autocast's cache of cast weights cannot outlive the capture)."""
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=cache)

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
    model: nn.Module, config: TrainConfig, lr: torch.Tensor, capturable: bool = False
) -> torch.optim.Optimizer:
    """The optimizer of `config`, reading its learning rate from the one-element tensor `lr` at
    every step (written in place by the schedule), so a captured step replays with the value of
    the moment. Fused kernels (one launch per step, not one per parameter tensor) where torch has
    them (CPU, CUDA); they read `lr` where it lies, on the device. Elsewhere the per-tensor loop,
    with `lr` on the CPU (read as a number, not waited for). ``capturable`` lets AdamW's step be
    captured in a CUDA graph (SGD's fused step needs no flag)."""
    device = next(model.parameters()).device
    fused = device.type in FUSED_OPTIMIZER_DEVICES
    groups = [{**g, "lr": lr} for g in _param_groups(model, config.weight_decay)]
    fast = {"fused": True} if fused else {"foreach": False}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=True, **fast)
    return torch.optim.AdamW(
        groups, lr=lr, betas=(config.momentum, 0.999), capturable=capturable, **fast
    )


def _lr_device(device: torch.device) -> torch.device:
    """Where the learning-rate tensor lives: beside fused kernels' parameters, else on the CPU."""
    return device if device.type in FUSED_OPTIMIZER_DEVICES else torch.device("cpu")


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


def cuda_graph_default() -> bool:
    """Whether `train` captures its step in a CUDA graph when its call does not say:
    ``EXPLORER_CUDA_GRAPH`` set to 1 or 0, else `CUDA_GRAPH_DEFAULT` (off: not yet measured)."""
    value = os.environ.get(CUDA_GRAPH_ENV, "").strip()
    if value == "":
        return CUDA_GRAPH_DEFAULT
    if value not in ("0", "1"):
        raise ValueError(f"{CUDA_GRAPH_ENV} must be 0 or 1, got {value!r}")
    return value == "1"


def _can_capture(device: torch.device) -> bool:
    """CUDA graphs exist on CUDA devices only; elsewhere a request for one trains eagerly."""
    return device.type == "cuda"


@contextlib.contextmanager
def _side_stream(stream: torch.cuda.Stream | None) -> Iterator[None]:
    """Run the block on `stream`, ordered after what was queued before it and before what comes
    after it; on no stream (no capture wanted, or the CPU) just run it."""
    if stream is None:
        yield
        return
    current = torch.cuda.current_stream(stream.device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        yield
    current.wait_stream(stream)


@functools.cache
def _graph_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream on `device` that warm-ups and captures run on, one for the process: every
    stream gets cuBLAS workspaces of its own, kept as long as the process lives, and a capture on
    the stream the warm-up used allocates none inside the graph's pool."""
    return torch.cuda.Stream(device)


def _capture_graph(step: Callable[[], None], stream: torch.cuda.Stream) -> torch.cuda.CUDAGraph:
    """`step` captured once on `stream` in a CUDA graph with a private memory pool (nothing
    runs yet)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        step()
    return graph


class _Step:
    """One training step in the form a CUDA graph can hold, run eagerly until it is captured.

    Each call copies the batch into fixed buffers (every batch has one shape: the data drops
    the last partial one), writes the schedule's learning rate into a one-element tensor in
    place (the optimizer reads it at every step) and runs forward, loss, backward and the
    optimizer's step, whose loss it writes into a fixed buffer. With `graph` (on CUDA) the first
    `GRAPH_WARMUP_STEPS` calls run on a side stream, the next one captures the step and every
    call from then on replays it; a capture that fails leaves the step eager, with one line in
    the log and the reason in `fallback`. Call `close` when training ends.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        setup: _Setup,
        total_steps: int,
        graph: bool,
    ) -> None:
        self.model, self.config, self.setup, self.total_steps = model, config, setup, total_steps
        cuda = setup.device.type == "cuda"
        self.lr = torch.tensor(config.lr, device=_lr_device(setup.device))
        self.optimizer = _optimizer(model, config, self.lr, capturable=graph and cuda)
        self.loss = torch.zeros((), device=setup.device)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.steps = 0
        self.graph_wanted = graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.fallback: str | None = None
        self._stream = _graph_stream(setup.device) if graph and cuda else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train on one batch; returns the loss buffer, which the next call overwrites."""
        self.lr.fill_(self.config.lr * lr_factor(self.steps, self.total_steps, self.config))
        if self.x is None:  # every batch has the first one's shape: the last partial one is dropped
            self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        assert x.shape == self.x.shape, (x.shape, self.x.shape)
        self.x.copy_(x)
        self.y.copy_(y)
        if self.graph_wanted and self.graph is None and self.steps >= GRAPH_WARMUP_STEPS:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
        elif self.graph_wanted:
            with _side_stream(self._stream), warnings.catch_warnings():
                # A capturable optimizer warns when it steps uncaptured; the warm-up must.
                warnings.filterwarnings("ignore", "This instance was constructed with capturable")
                self._run()
        else:
            self._run()
        self.steps += 1
        return self.loss

    def _run(self) -> None:
        """The step itself: what the graph captures, and what runs eagerly."""
        self.optimizer.zero_grad(set_to_none=True)  # no kernel: backward writes fresh gradients
        with self.setup.autocast(cache=not self.graph_wanted):
            loss, _ = _loss(self.model(self.x), self.y, self.config)
        loss.backward()
        self.optimizer.step()
        self.loss.copy_(loss.detach())

    def _capture(self) -> None:
        try:
            self.graph = _capture_graph(self._run, self._stream)
        except Exception as exc:  # noqa: BLE001 - any capture error: train on eagerly
            self.graph, self.graph_wanted, self._stream = None, False, None
            # The capture computed nothing: drop the gradients it allocated, then the failed
            # batch trains eagerly (the caller's next line).
            self.optimizer.zero_grad(set_to_none=True)
            message = str(exc).strip().splitlines()
            self.fallback = f"{type(exc).__name__}: {message[0] if message else ''}"[:300]
            _log.warning("CUDA graph capture failed, training on eagerly: %s", self.fallback)

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def close(self) -> None:
        """Free the graph, its memory pool (the gradients live in it) and the fixed buffers."""
        self.optimizer.zero_grad(set_to_none=True)
        captured = self.graph is not None
        self.graph = self.x = self.y = self._stream = None
        if captured:
            gc.collect()
            torch.cuda.empty_cache()


def train(
    model: nn.Module,
    data: Dataset | DeviceData,
    config: TrainConfig,
    device: torch.device | str,
    epoch_callback: Callable[[int, TrainResult], None] | None = None,
    cuda_graph: bool | None = None,
) -> TrainResult:
    """Train `model` in place and return its curves.

    ``cuda_graph=True`` captures the training step in a CUDA graph on a CUDA device (ignored
    elsewhere); None takes `cuda_graph_default()`, off until measured. The result says whether the
    run replayed a graph (`TrainResult.cuda_graph`) or why a capture failed (`graph_fallback`).

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
    graph = cuda_graph_default() if cuda_graph is None else cuda_graph
    if not isinstance(graph, bool):
        raise ValueError(f"cuda_graph must be true, false or None, got {cuda_graph!r}")
    train_step = _Step(model, config, setup, total_steps, graph and _can_capture(device))
    generator = torch.Generator().manual_seed(config.seed)
    result = TrainResult(device=str(device))

    try:
        for epoch in range(1, config.epochs + 1):
            setup.sync()
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            batches = data.train_batches(
                config.batch_size, train_images, generator, config.augment, setup.memory_format
            )
            for step, (x, y) in enumerate(batches, 1):
                loss_sum += train_step(x, y)
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
    finally:  # also when a callback prunes or the run diverges: the graph's memory goes back
        result.cuda_graph, result.graph_fallback = train_step.captured, train_step.fallback
        train_step.close()
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
