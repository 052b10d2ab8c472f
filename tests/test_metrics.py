"""explorer.training.metrics: FLOPs by hand arithmetic, parameters against the arithmetic, latency."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explorer.training import count_flops, device_info, measure_latency, metrics
from explorer.training.metrics import (
    count_params,
    gpu_driver_version,
    latency_method,
    peak_memory_bytes,
)
from search_space import REFERENCES, NetworkConfig, build_network, network_params


@pytest.mark.parametrize("cin, cout, k, size, bias", [(3, 8, 3, 10, True), (1, 24, 5, 28, False)])
def test_conv_flops_are_twice_the_multiply_adds(cin, cout, k, size, bias):
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)
    multiply_adds = cout * size * size * cin * k * k
    assert count_flops(conv, (cin, size, size)) == 2 * multiply_adds


def test_flops_are_counted_per_image_and_keep_training_mode():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    net.train()
    assert count_flops(net, (3, 2, 2)) == 2 * 12 * 5
    assert net.training


@pytest.mark.parametrize("ref", sorted(REFERENCES))
@pytest.mark.parametrize("image, channels", [(28, 1), (32, 3)])
def test_params_match_the_arithmetic(ref, image, channels):
    config = NetworkConfig(block=REFERENCES[ref], image_size=image, in_channels=channels)
    assert count_params(build_network(config)) == network_params(config)


def test_network_flops_positive_and_scale_with_width():
    small = build_network(NetworkConfig(block=REFERENCES["v1"], width=0.125))
    large = build_network(NetworkConfig(block=REFERENCES["v1"], width=0.25))
    assert 0 < count_flops(small, (1, 28, 28)) < count_flops(large, (1, 28, 28))


def test_latency_is_positive_and_cheap_on_cpu():
    model = build_network(NetworkConfig(block=REFERENCES["v2"], width=0.125))
    model.train()
    ms = measure_latency(model, (1, 28, 28), 1, "cpu", repeats=5, warmup=1)
    assert ms > 0 and model.training
    assert measure_latency(model, (1, 28, 28), 8, "cpu", repeats=100, budget_s=0.0) > 0
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, (1, 28, 28), 1, "cpu", repeats=0)


def test_peak_memory_only_where_reported():
    assert peak_memory_bytes("cpu") is None


@pytest.mark.gpu
def test_peak_memory_is_reported_on_cuda():
    torch.cuda.reset_peak_memory_stats()
    held = torch.empty(1 << 20, dtype=torch.uint8, device="cuda")  # 1 MiB, held past the read
    peak = peak_memory_bytes("cuda")
    assert isinstance(peak, int) and peak >= held.numel() > 0, peak


def test_device_info_on_cpu_names_the_processor_and_threads():
    info = device_info("cpu")
    assert info["type"] == "cpu" and info["torch"] == torch.__version__
    assert info["name"] and info["threads"] == torch.get_num_threads() >= 1
    assert "wall-clock" in latency_method("cpu") and "CUDA-event" in latency_method("cuda")


def test_driver_version_falls_back_to_nvidia_smi_then_none(monkeypatch):
    import builtins
    import subprocess

    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    monkeypatch.setattr(metrics.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(
        metrics.subprocess,
        "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="570.124.06\n", stderr=""),
    )
    assert gpu_driver_version(0) == "570.124.06"
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    assert gpu_driver_version(0) is None
