"""Which device each search worker process trains on, how many CPU threads it may use, and the
process-wide backend switches (TF32, cuDNN autotuning, deterministic kernels) it trains under.

The search's networks (3k-400k parameters on 28x28 images) leave a large GPU mostly idle: one
trial is bound by the CPU launching kernels, not by the GPU running them. Several worker
processes per GPU fill it (each has its own CUDA context and launch queue; CUDA MPS, where it
runs, lets their kernels share the GPU at once). `plan_workers` lays the workers out over the
GPUs, `cpu_threads_per_worker` shares the CPU cores between the processes on one machine.
`configure_backend` is the one place the backend switches are set: every search worker calls it
when it starts, and so does every parent process that trains (the search's final seeds and
verification, `explorer.evaluate`, `explorer.ablate`), so all their runs train alike.
"""

from __future__ import annotations

import os
from typing import Any

import torch

# Not measured yet: bench/gpu.sh times a search with 1, 2, 4 and 8 workers per GPU; set this to
# its best once it has run on a GPU (BENCHMARKS.md, "GPU"). It is the default of the search's
# `--workers-per-gpu`: `--workers auto` starts that many workers on each GPU.
DEFAULT_WORKERS_PER_GPU = 4
# cuBLAS's deterministic setting (CUDA docs, "Results reproducibility"): a fixed workspace.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
# On a CPU one single-threaded process per core, up to this many (BENCHMARKS.md, "Threads per
# trial": two one-thread processes train 1.4x as many trials per minute as one two-thread one).
MAX_CPU_WORKERS = 8


def plan_workers(
    device_arg: str, workers: int | None, workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU
) -> list[str]:
    """The device string of each worker process on this machine, in start order.

    `device_arg` is the search's ``--device``. With ``auto`` or ``cuda`` and CUDA available,
    workers are dealt round-robin over every visible GPU (2 GPUs, 8 workers: cuda:0, cuda:1,
    cuda:0, ...), and `workers` None means `workers_per_gpu` per GPU; ``cuda:N`` puts them all on
    GPU N (`workers_per_gpu` of them by default). On a CPU `workers` None is one per core up to
    8; on MPS one. `ValueError` names a bad count or a device torch cannot see.
    """
    if isinstance(workers_per_gpu, bool) or not isinstance(workers_per_gpu, int):
        raise ValueError(f"workers_per_gpu must be a positive integer, got {workers_per_gpu!r}")
    if workers_per_gpu < 1:
        raise ValueError(f"workers_per_gpu must be a positive integer, got {workers_per_gpu!r}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    if device_arg in ("auto", "cuda") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        n = workers if workers is not None else gpus * workers_per_gpu
        return [f"cuda:{i % gpus}" for i in range(n)]
    if device_arg == "cuda" or device_arg.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device_arg} was asked for, but torch sees no CUDA device")
        index = _cuda_index(device_arg)
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device_arg} was asked for, but torch sees "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return [f"cuda:{index}"] * (workers if workers is not None else workers_per_gpu)
    if device_arg == "mps" or (device_arg == "auto" and torch.backends.mps.is_available()):
        return ["mps"] * (workers if workers is not None else 1)
    if device_arg in ("auto", "cpu"):
        return ["cpu"] * (workers if workers is not None else min(MAX_CPU_WORKERS, usable_cpus()))
    raise ValueError(f"device must be auto, cpu, cuda[:N] or mps, got {device_arg!r}")


def _cuda_index(device_arg: str) -> int:
    try:
        index = int(device_arg.split(":", 1)[1])
    except ValueError:
        index = -1
    if index < 0:
        raise ValueError(f"device must be auto, cpu, cuda[:N] or mps, got {device_arg!r}")
    return index


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_threads_per_worker(n_workers_on_this_machine: int) -> int:
    """Torch intra-op threads for each of that many worker processes: the usable cores shared out
    evenly, at least one, so the processes do not oversubscribe the CPU. A GPU worker needs
    little more than one thread (it mostly launches kernels), which this also gives it once
    there are as many workers as cores."""
    if (
        isinstance(n_workers_on_this_machine, bool)
        or not isinstance(n_workers_on_this_machine, int)
        or n_workers_on_this_machine < 1
    ):
        raise ValueError(
            f"n_workers_on_this_machine must be a positive integer, got {n_workers_on_this_machine!r}"
        )
    return max(1, usable_cpus() // n_workers_on_this_machine)


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


def configure_backend(device: torch.device | str, deterministic: bool = False) -> dict[str, Any]:
    """Set the process-wide backend switches for training on `device` and return them (see
    `backend_settings`), for a trial's provenance. Call it once in every process that trains or
    times anything (a search worker when it starts, a parent before its first run), before its
    first CUDA operation (cuBLAS reads its workspace setting when it starts); calling it again
    with the same arguments changes nothing.

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
