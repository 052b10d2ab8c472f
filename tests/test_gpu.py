"""The GPU path: worker layout (checked on any machine by faking the GPUs), and training,
out-of-memory recovery, latency, proxies and repeatability on a real CUDA device (marked ``gpu``,
skipped without one)."""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from explorer.training import (
    BUDGETS,
    configure_backend,
    device_info,
    devices,
    measure_latency,
    train,
)
from explorer.training import trainer as train_mod
from explorer.training.devices import backend_settings, cpu_threads_per_worker, plan_workers
from explorer.training.metrics import latency_method
from explorer.training.trainer import release_memory
from tests.test_train import small_net, stripes_dataset

SMOKE = BUDGETS["smoke"]
ROOT = Path(__file__).resolve().parents[1]


# --- worker layout, on any machine -------------------------------------------------------------


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    "gpus, device, workers, per_gpu, expected",
    [
        (2, "auto", None, 4, ["cuda:0", "cuda:1"] * 4),
        (2, "cuda", 3, 4, ["cuda:0", "cuda:1", "cuda:0"]),
        (1, "auto", None, 1, ["cuda:0"]),
        (4, "cuda:2", None, 2, ["cuda:2", "cuda:2"]),
        (4, "cuda:1", 3, 8, ["cuda:1"] * 3),
        (2, "cpu", 2, 4, ["cpu", "cpu"]),
    ],
)
def test_workers_are_dealt_round_robin_over_the_gpus(
    monkeypatch, gpus, device, workers, per_gpu, expected
):
    fake_gpus(monkeypatch, gpus)
    assert plan_workers(device, workers, per_gpu) == expected


def test_without_a_gpu_workers_default_to_one_per_core(monkeypatch):
    fake_gpus(monkeypatch, 0)
    monkeypatch.setattr(devices, "usable_cpus", lambda: 2)
    assert plan_workers("auto", None, 4) == ["cpu", "cpu"]
    monkeypatch.setattr(devices, "usable_cpus", lambda: 64)
    assert plan_workers("auto", None) == ["cpu"] * devices.MAX_CPU_WORKERS
    assert cpu_threads_per_worker(8) == 8 and cpu_threads_per_worker(64) == 1
    monkeypatch.setattr(devices, "usable_cpus", lambda: 16)
    assert cpu_threads_per_worker(3) == 5 and cpu_threads_per_worker(32) == 1


@pytest.mark.parametrize(
    "gpus, device, workers, per_gpu, needle",
    [
        (0, "cuda", None, 4, "no CUDA device"),
        (2, "cuda:2", None, 4, "2 CUDA device"),
        (2, "cuda:x", None, 4, "device must be"),
        (2, "tpu", None, 4, "device must be"),
        (2, "auto", 0, 4, "workers must be"),
        (2, "auto", None, 0, "workers_per_gpu must be"),
    ],
)
def test_bad_worker_plans_name_the_value(monkeypatch, gpus, device, workers, per_gpu, needle):
    fake_gpus(monkeypatch, gpus)
    with pytest.raises(ValueError, match=needle):
        plan_workers(device, workers, per_gpu)
    with pytest.raises(ValueError, match="n_workers_on_this_machine"):
        cpu_threads_per_worker(0)


# --- the backend, in every process that trains ------------------------------------------------


@pytest.fixture
def stop_at_backend(monkeypatch):
    """Record each `configure_backend` call of a command, apply it, then stop the command there
    as Ctrl-C would (before any training); the switches are put back afterwards."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    calls: list[tuple[str, bool]] = []
    real = devices.configure_backend

    def configure_then_stop(device, deterministic=False):
        calls.append((torch.device(device).type, deterministic))
        real(device, deterministic)
        raise KeyboardInterrupt

    monkeypatch.setattr(devices, "configure_backend", configure_then_stop)
    yield calls
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_workers_and_commands_share_one_configure_backend():
    from explorer.training import trainer

    assert trainer.configure_backend is devices.configure_backend  # the workers call the first


@pytest.mark.parametrize(
    "command, argv, deterministic",
    [
        ("search", ["--trials", "1", "--deterministic"], True),
        ("search", ["--trials", "1"], False),
        ("evaluate", ["--pareto", "--budget", "smoke"], False),
        ("ablate", ["--budget", "smoke", "--winner", "none"], False),
    ],
)
def test_every_command_configures_the_backend_as_its_workers_do(
    stop_at_backend, study_path, tmp_path, command, argv, deterministic
):
    """The search's own process (final seeds, verification), evaluate and ablate train under the
    switches a search worker sets, through the one function the workers call."""
    import importlib

    storage = str(tmp_path / "s.journal") if command == "search" else study_path
    main = importlib.import_module(f"explorer.{command}").main
    assert main(["--storage", storage, "--device", "cpu", "--quiet", *argv]) == 130
    assert stop_at_backend == [("cpu", deterministic)]
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # set by the call, not a default


# --- the measurement (`python -m bench gpu`), on any machine -----------------------------------


def _bench_gpu():
    from bench import gpu

    return gpu


@pytest.mark.slow
def test_gpu_measurement_dry_run_writes_every_section(tmp_path, one_torch_thread, capsys):
    bench = _bench_gpu()
    out = tmp_path / "gpu-results.md"
    assert bench.main(["--dry-run", "--skip", "compile", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "## GPU" in text and "Command: `" in text
    for name in bench.NETS:  # v1, v2 and two search designs, eager and "graphed" (eager here)
        assert f"| {name} | eager |" in text and f"| {name} | CUDA graph |" in text, name
        graph_row = rf"^\| {name} \| [\d,]+ \| [\d,]+ \| [\d.]+x \| no \(not on CUDA\) \| "
        assert re.search(graph_row + r"0\.0e\+00 \| 0\.000 \|$", text, re.M), name  # same curves
    assert "Matmul peaks: bf16" in text and "Tests marked" not in text  # no tests in a dry run
    assert "One `standard` trial (v1):" in text and "| 8 | not run |" in text
    assert "| - | torch.compile | not run |" in text


@pytest.mark.slow
def test_gpu_measurement_runs_the_gpu_tests_and_reports_them(tmp_path, monkeypatch):
    bench = _bench_gpu()
    monkeypatch.setattr(bench, "GPU_TESTS", ("tests/test_graph_step.py",))
    row = bench.step_tests(tmp_path / "gpu-results.md", cap_s=300)
    log = (tmp_path / bench.TESTS_LOG).read_text()
    expected = "skipped" if not torch.cuda.is_available() else "passed"
    assert expected in row["summary"] and row["summary"] in log and row["rc"] in (0, 5)
    (line,) = bench._tests_lines({"tests": row})
    assert line.startswith("- Tests marked `gpu` (`python -m pytest -q -m gpu")
    assert "tests/test_graph_step.py" in line and bench.TESTS_LOG in line


def test_gpu_measurement_refuses_without_cuda(monkeypatch, capsys):
    bench = _bench_gpu()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err


# --- on a CUDA device ---------------------------------------------------------------------------


@pytest.fixture
def cuda_backend():
    """The backend a CUDA worker runs under, put back afterwards."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    yield configure_backend("cuda")
    torch.use_deterministic_algorithms(before[0])
    torch.set_float32_matmul_precision(before[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2:]


@pytest.mark.gpu
def test_cuda_trains_in_bf16_channels_last_with_fused_adamw(cuda_backend):
    device = torch.device("cuda")
    assert cuda_backend["cudnn_benchmark"] and cuda_backend["tf32_matmul"]
    setup = train_mod._setup(device)
    assert setup.autocast_dtype == torch.bfloat16 and setup.memory_format == torch.channels_last
    model = small_net()
    lr = torch.tensor(SMOKE.lr, device=device)
    optimizer = train_mod._optimizer(model.to(device), SMOKE, lr, capturable=True)
    assert optimizer.defaults["fused"] and optimizer.defaults["capturable"]
    result = train(model, stripes_dataset(), SMOKE, device)
    assert result.final_val_acc > 0.5  # chance is 0.25
    assert result.train_loss[-1] < result.train_loss[0] - 0.3
    assert result.peak_memory_bytes and result.peak_memory_bytes > 0
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert backend_settings(device) == cuda_backend  # train() changed no switch


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_training_steps_never_wait_for_the_gpu(cuda_backend, cuda_graph):
    """The number of synchronising calls in an epoch does not grow with its steps, eager or
    replaying a CUDA graph (its capture synchronises once)."""
    data = stripes_dataset(n_train=512, n_val=32).on("cuda")

    def syncs(train_images: int) -> int:
        config = dataclasses.replace(SMOKE, epochs=1, train_images=train_images, augment=True)
        model = small_net()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                assert train(model, data, config, "cuda", cuda_graph=cuda_graph).cuda_graph == (
                    cuda_graph
                )
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(64)  # cuDNN autotuning and lazy initialisation happen once
    assert syncs(64) == syncs(512)


class Greedy(nn.Module):
    """Holds 40% of the free GPU memory as an activation, then asks for as much again twice."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        free, _ = torch.cuda.mem_get_info(x.device)
        held = [x.new_empty(int(0.4 * free) // 4) for _ in range(3)]  # the third cannot fit
        return self.fc(x.flatten(1)) + held[0][:1]


@pytest.mark.gpu
def test_out_of_memory_in_training_releases_the_memory(cuda_backend):
    data = stripes_dataset(n_train=128, n_val=32).on("cuda")
    gc.collect()  # what earlier tests left for the collector, which release_memory runs
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    model = Greedy()
    config = dataclasses.replace(SMOKE, epochs=1, train_images=64)
    try:
        train(model, data, config, "cuda")
    except torch.cuda.OutOfMemoryError as exc:
        assert torch.cuda.memory_allocated() > baseline  # the first 40% is still held
        del model
        release_memory("cuda", exc)
    else:
        pytest.fail("the forced out-of-memory error was not raised")
    assert torch.cuda.memory_allocated() == baseline
    assert torch.cuda.memory_reserved() < torch.cuda.mem_get_info()[1] * 0.1


@pytest.mark.gpu
def test_latency_proxies_and_device_info_on_cuda(cuda_backend):
    from explorer.training import compute_proxies, proxy_batch

    model = small_net().cuda()
    for batch in (1, 256):
        assert 0 < measure_latency(model, (1, 28, 28), batch, "cuda", repeats=5) < 1000
    assert "CUDA-event" in latency_method("cuda")
    x, y = proxy_batch(stripes_dataset(n_train=128, n_val=32), "cuda", seed=0)
    assert x.is_cuda
    scores = compute_proxies(model, x, y)
    assert scores and all(isinstance(v, float) for v in scores.values())
    info = device_info("cuda")
    assert info["name"] and info["memory_bytes"] > 2**30 and info["cuda"] == torch.version.cuda
    assert isinstance(info["cudnn"], int)
    json.dumps(info)  # stored as a trial attribute


_REPEAT = """
import dataclasses, json, sys, warnings
sys.path.insert(0, {root!r})
import torch
from explorer.training import BUDGETS, configure_backend, train
from search_space import REFERENCES, NetworkConfig, build_network
from tests.test_train import stripes_dataset
configure_backend("cuda", deterministic=True)  # before any CUDA work, as a worker does
data = stripes_dataset(n_train=256, n_val=64)
config = dataclasses.replace(BUDGETS["smoke"], epochs=1, train_images=256)
curves = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for ref in ("v1", "v2", "v1", "v2"):
        torch.manual_seed(0)
        model = build_network(NetworkConfig(block=REFERENCES[ref], width=0.125))
        result = train(model, data, config, "cuda")
        curves.append(result.train_loss + result.val_loss + result.val_acc)
print(json.dumps({{"curves": curves, "warnings": sorted({{str(w.message) for w in caught}})}}))
"""


@pytest.mark.gpu
def test_deterministic_backend_repeats_a_seeded_cuda_run_bit_for_bit():
    # A fresh process: cuBLAS reads its workspace setting when it first starts.
    out = subprocess.run(
        [sys.executable, "-c", _REPEAT.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    ).stdout
    report = json.loads(out.splitlines()[-1])
    nondeterministic = [w for w in report["warnings"] if "deterministic" in w]
    assert not nondeterministic, nondeterministic
    v1, v2, v1_again, v2_again = report["curves"]
    assert v1 == v1_again and v2 == v2_again
