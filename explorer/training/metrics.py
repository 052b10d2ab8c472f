"""Cost metrics of a candidate network: parameters, FLOPs, latency and peak memory.

One FLOP convention throughout the project: FLOPs = 2 x multiply-adds, per image, one forward
pass, counted by `torch.utils.flop_counter.FlopCounterMode` (which counts a convolution or matmul
as 2 x multiply-adds). fvcore, ptflops, thop and torchvision's "GFLOPS" metadata report
multiply-adds instead: divide ours by 2 to compare. A training step costs about
`TRAIN_FLOPS_PER_FORWARD` forward passes (forward, plus a backward that computes gradients for
both inputs and weights).

Latency is timed with CUDA events on a GPU (the device's own clock, one forward at a time) and
with `time.perf_counter` around a synchronised call elsewhere; `latency_method` names which, and
`device_info` names the hardware and software a measurement ran on, for a trial's provenance.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

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

    Eval mode, no gradients, channels_last, and bf16 autocast on CUDA (as `explorer.training` runs);
    `warmup` untimed calls first (they also let cuDNN autotune, where `configure_backend` turned
    it on). On CUDA each call is timed by a pair of CUDA events and waited for before the next
    starts; on the CPU and MPS by the wall clock around a synchronised call (`latency_method`).
    Stops early once `budget_s` seconds of timed calls are spent (at least 3 are timed), so a
    large batch on a CPU stays cheap.
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
                times.append(_time_call(model, x, device))
                spent += times[-1]
                if budget_s is not None and spent > budget_s and i >= 2:
                    break
    finally:
        model.train(was_training)
    return 1000.0 * statistics.median(times)


def _time_call(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Seconds of one forward call, waited for."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    model(x)
    synchronize(device)
    return time.perf_counter() - t0


def latency_method(device: torch.device | str) -> str:
    """How `measure_latency` times a call on `device`, in words stored beside its figures."""
    device = torch.device(device)
    if device.type == "cuda":
        return "median of CUDA-event-timed forward calls, bf16 autocast, channels_last, no grad"
    if device.type == "mps":
        return "median of wall-clock forward calls with mps.synchronize, float32, channels_last"
    return "median of wall-clock forward calls, float32, channels_last, no grad"


def device_info(device: torch.device | str) -> dict[str, Any]:
    """What a measurement on `device` ran on, as JSON-safe values: on CUDA the GPU's name, memory
    and compute capability with the CUDA, cuDNN and driver versions (None where unknown); on a
    CPU its model name and the threads torch uses; torch's version everywhere."""
    device = torch.device(device)
    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            name=torch.cuda.get_device_name(index),
            index=index,
            memory_bytes=int(props.total_memory),
            capability=f"{props.major}.{props.minor}",
            multiprocessors=int(props.multi_processor_count),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            driver=gpu_driver_version(index),
        )
    elif device.type == "mps":
        info.update(name=platform.processor() or platform.machine())
    else:
        info.update(
            name=cpu_name(), threads=torch.get_num_threads(), logical_cpus=os.cpu_count() or 1
        )
    return info


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_driver_version(index: int = 0) -> str | None:
    """The NVIDIA driver's version, from pynvml when installed, else from ``nvidia-smi`` when on
    the PATH; None when neither answers."""
    try:
        import pynvml  # optional: nvidia-ml-py is no dependency of the project
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                version = pynvml.nvmlSystemGetDriverVersion()
            finally:
                pynvml.nvmlShutdown()
            return version.decode() if isinstance(version, bytes) else str(version)
        except Exception:  # noqa: BLE001 - NVML missing or refusing: try nvidia-smi
            pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader", f"--id={index}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


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
