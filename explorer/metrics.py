"""Cost metrics of a candidate network: parameters, FLOPs, latency and peak memory.

One FLOP convention throughout the project: FLOPs = 2 x multiply-adds, per image, one forward
pass, counted by `torch.utils.flop_counter.FlopCounterMode` (which counts a convolution or matmul
as 2 x multiply-adds). fvcore, ptflops, thop and torchvision's "GFLOPS" metadata report
multiply-adds instead: divide ours by 2 to compare. A training step costs about
`TRAIN_FLOPS_PER_FORWARD` forward passes (forward, plus a backward that computes gradients for
both inputs and weights).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FLOPS_LABEL = "FLOPs per image (2 x multiply-adds)"
TRAIN_FLOPS_PER_FORWARD = 3


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass of one image of shape (C, H, W), in eval mode.

    Runs under `torch.no_grad`: `FlopCounterMode` counts nothing under `torch.inference_mode`.
    """
    x = torch.zeros((1, *input_shape), device=_model_device(model))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: torch.device | str,
    repeats: int = 10,
    warmup: int = 2,
    budget_s: float | None = 1.0,
) -> float:
    """Median forward latency in milliseconds for a batch of `batch_size` on `device`.

    Eval mode, no gradients, channels_last, and bf16 autocast on CUDA (as `explorer.train` runs);
    `warmup` untimed calls first; CUDA and MPS are synchronised around every timed call. Stops
    early once `budget_s` seconds of timed calls are spent (at least 3 are timed), so a large
    batch on a CPU stays cheap.
    """
    device = torch.device(device)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    model.to(device=device, memory_format=torch.channels_last)
    x = torch.randn((batch_size, *input_shape), device=device).contiguous(
        memory_format=torch.channels_last
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16),
        ):
            for _ in range(warmup):
                model(x)
            synchronize(device)
            spent = 0.0
            for i in range(repeats):
                t0 = time.perf_counter()
                model(x)
                synchronize(device)
                times.append(time.perf_counter() - t0)
                spent += times[-1]
                if budget_s is not None and spent > budget_s and i >= 2:
                    break
    finally:
        model.train(was_training)
    return 1000.0 * statistics.median(times)


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window where the device tracks one (CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device | str) -> int | None:
    """Peak memory allocated by tensors since the last reset, where the device reports it (CUDA);
    None on the CPU and MPS, which keep no peak."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None
