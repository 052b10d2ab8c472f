"""The training step in the form a CUDA graph can capture (`explorer.training.trainer._Step`).

On the CPU it runs eagerly and gives the curves the trainer gave before it (an eager step reading
a Python-float learning rate from LambdaLR, foreach optimizers, fresh batch tensors): the fused
optimizer it uses instead rounds differently in the last bits, so the curves agree within a stated
tolerance, not bit for bit. The capture's own logic (warm-up, one capture, replays, falling back on
an error) runs on the CPU with a stand-in for the graph; the real capture, its agreement with eager
training and the memory it gives back are checked on a CUDA device (marked ``gpu``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer.training import BUDGETS, TrainConfig, evaluate, train
from explorer.training import trainer as trainer_mod
from explorer.training.trainer import (
    CUDA_GRAPH_DEFAULT,
    CUDA_GRAPH_ENV,
    cuda_graph_default,
    lr_factor,
    recompute_bn_stats,
)
from tests.test_train import AuxNet, small_net, stripes_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small nets: one thread is faster
ROOT = Path(__file__).resolve().parents[1]
# Two epochs of eight steps: enough for the schedule to warm up and anneal, a second a run.
CONFIG = dataclasses.replace(BUDGETS["smoke"], epochs=2, train_images=128, val_images=64)
# How far the graph-ready step may drift from the trainer before it in these runs: the fused
# optimizers and the float32 learning-rate tensor change the last bits of every update (measured:
# training losses within 1e-5 relative, validation losses within 1e-3 relative; 2e-5 absolute on
# a validation loss of 0.02); accuracies may differ by one validation image.
LOSS_RTOL, LOSS_ATOL = 2e-3, 1e-4


@pytest.fixture(scope="module")
def data():
    return stripes_dataset(n_train=256, n_val=64).on("cpu")


def todays_train(model: torch.nn.Module, data, config: TrainConfig) -> dict[str, list[float]]:
    """The curves of the trainer's loop before the graph-ready step (as of commit 0ae1573):
    LambdaLR writing a Python float into the optimizer after every step, foreach optimizers,
    each batch fed to the model as the data hands it out."""
    setup = trainer_mod._setup(torch.device("cpu"))
    torch.manual_seed(config.seed)
    model.to(memory_format=setup.memory_format).train()
    steps = config.train_images // config.batch_size
    total = steps * config.epochs
    groups = trainer_mod._param_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=True, foreach=True
        )
    else:
        optimizer = torch.optim.AdamW(
            groups, lr=config.lr, betas=(config.momentum, 0.999), foreach=True
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, config)
    )
    generator = torch.Generator().manual_seed(config.seed)
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_acc": []}
    for epoch in range(1, config.epochs + 1):
        loss_sum = torch.zeros(())
        for x, y in data.train_batches(
            config.batch_size, config.train_images, generator, config.augment, setup.memory_format
        ):
            loss, _ = trainer_mod._loss(model(x), y, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach().float()
        if config.bn_stats_images:
            recompute_bn_stats(model, data, config.bn_stats_images, config.seed + epoch)
        last = epoch == config.epochs
        val_loss, val_acc = evaluate(
            model, data, "cpu", "val", config.final_val_images if last else config.val_images
        )
        model.train()
        curves["train_loss"].append(loss_sum.item() / steps)
        curves["val_loss"].append(val_loss)
        curves["val_acc"].append(val_acc)
    return curves


def assert_same_curves(result, expected: dict[str, list[float]], val_images: int) -> None:
    for key in ("train_loss", "val_loss"):
        got = getattr(result, key)
        assert len(got) == len(expected[key]), key
        for a, b in zip(got, expected[key]):
            assert math.isclose(a, b, rel_tol=LOSS_RTOL, abs_tol=LOSS_ATOL), (key, got, expected)
    for a, b in zip(result.val_acc, expected["val_acc"]):
        assert abs(a - b) <= 1 / val_images + 1e-12, (result.val_acc, expected["val_acc"])


def exact_curves(result) -> tuple[list[float], ...]:
    return result.train_loss, result.val_loss, result.val_acc


@pytest.mark.parametrize(
    "optimizer, bn, augment",
    [("adamw", "post", True), ("sgd", "post", False), ("adamw", "none", False)],
)
def test_graph_ready_step_gives_todays_curves(data, optimizer, bn, augment):
    config = dataclasses.replace(CONFIG, optimizer=optimizer, augment=augment)
    expected = todays_train(small_net(bn), data, config)
    result = train(small_net(bn), data, config, "cpu")
    assert_same_curves(result, expected, config.final_val_images)
    assert not result.cuda_graph and result.graph_fallback is None


def test_graph_ready_step_gives_todays_curves_with_auxiliary_heads(data):
    config = dataclasses.replace(CONFIG, aux_weight=0.3)
    torch.manual_seed(0)
    expected = todays_train(AuxNet(), data, config)
    torch.manual_seed(0)
    assert_same_curves(train(AuxNet(), data, config, "cpu"), expected, config.final_val_images)


class _Recorder:
    """Wraps `_Step._run` to see, before each step, the learning rate it reads and its buffers."""

    def __init__(self, monkeypatch) -> None:
        self.lr: list[float] = []
        self.lr_is_the_groups: list[bool] = []
        self.buffers: set[tuple[int, int, int]] = set()
        self.channels_last: list[bool] = []
        original = trainer_mod._Step._run

        def run(step) -> None:
            self.lr.append(step.lr.item())
            self.lr_is_the_groups.append(
                all(g["lr"] is step.lr for g in step.optimizer.param_groups)
            )
            self.buffers.add((step.x.data_ptr(), step.y.data_ptr(), step.loss.data_ptr()))
            self.channels_last.append(step.x.is_contiguous(memory_format=torch.channels_last))
            original(step)

        monkeypatch.setattr(trainer_mod._Step, "_run", run)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_learning_rate_is_one_tensor_written_in_place_and_buffers_stay(
    data, monkeypatch, optimizer
):
    config = dataclasses.replace(CONFIG, optimizer=optimizer)
    seen = _Recorder(monkeypatch)
    train(small_net(), data, config, "cpu")
    total = config.epochs * (config.train_images // config.batch_size)
    schedule = [config.lr * lr_factor(s, total, config) for s in range(total)]
    assert seen.lr == pytest.approx(schedule, rel=1e-6)  # float32 on the device
    assert all(seen.lr_is_the_groups)
    assert len(seen.buffers) == 1 and all(seen.channels_last)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_devices_without_fused_optimizers_take_the_per_tensor_loop(data, monkeypatch, optimizer):
    """MPS's path, taken here on the CPU: the per-tensor loop, the learning rate a CPU tensor."""
    monkeypatch.setattr(trainer_mod, "FUSED_OPTIMIZER_DEVICES", ("cuda",))
    config = dataclasses.replace(CONFIG, optimizer=optimizer)
    model = small_net()
    opt = trainer_mod._optimizer(model, config, torch.tensor(0.01))
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is False
    expected = todays_train(small_net(), data, config)
    assert_same_curves(train(small_net(), data, config, "cpu"), expected, config.final_val_images)


def test_optimizers_are_fused_with_a_tensor_learning_rate_on_the_cpu():
    model = small_net()
    lr = torch.tensor(0.01)
    for name in ("adamw", "sgd"):
        config = dataclasses.replace(CONFIG, optimizer=name)
        optimizer = trainer_mod._optimizer(model, config, lr)
        assert optimizer.defaults["fused"] and all(g["lr"] is lr for g in optimizer.param_groups)


# --- the capture's logic on the CPU, with a stand-in for the graph -----------------------------


class FakeGraph:
    """Records the step it was handed and runs it eagerly at each replay, as the real graph
    replays the kernels the step launched while it was captured."""

    def __init__(self, step) -> None:
        self.step = step
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.step()


@pytest.fixture
def fake_capture(monkeypatch):
    """Make the CPU capture: `_can_capture` says yes, `_capture_graph` returns a FakeGraph."""
    graphs: list[FakeGraph] = []
    monkeypatch.setattr(trainer_mod, "_can_capture", lambda device: True)

    def capture(step, stream):
        assert stream is None  # no CUDA stream on the CPU
        graphs.append(FakeGraph(step))
        return graphs[-1]

    monkeypatch.setattr(trainer_mod, "_capture_graph", capture)
    return graphs


def test_capture_after_the_warm_up_then_replays_and_curves_do_not_change(data, fake_capture):
    eager = train(small_net(), data, CONFIG, "cpu", cuda_graph=False)
    graphed = train(small_net(), data, CONFIG, "cpu", cuda_graph=True)
    total = CONFIG.epochs * (CONFIG.train_images // CONFIG.batch_size)
    assert (
        len(fake_capture) == 1 and fake_capture[0].replays == total - trainer_mod.GRAPH_WARMUP_STEPS
    )
    assert graphed.cuda_graph and graphed.graph_fallback is None and not eager.cuda_graph
    assert exact_curves(graphed) == exact_curves(eager)


def test_a_failed_capture_logs_one_line_and_trains_on_eagerly(
    data, monkeypatch, caplog, fake_capture
):
    def fail(step, stream):
        raise RuntimeError("operation not permitted when stream is capturing\nCUDA kernel errors")

    monkeypatch.setattr(trainer_mod, "_capture_graph", fail)
    eager = train(small_net(), data, CONFIG, "cpu", cuda_graph=False)
    with caplog.at_level(logging.WARNING, logger=trainer_mod.__name__):
        result = train(small_net(), data, CONFIG, "cpu", cuda_graph=True)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "\n" not in line and "training on eagerly" in line and "not permitted" in line
    assert not result.cuda_graph
    assert result.graph_fallback == "RuntimeError: operation not permitted when stream is capturing"
    assert exact_curves(result) == exact_curves(eager)


def test_training_ends_with_the_graph_and_gradients_dropped(data, fake_capture):
    model = small_net()
    train(model, data, dataclasses.replace(CONFIG, epochs=1), "cpu", cuda_graph=True)
    assert all(p.grad is None for p in model.parameters())


def test_graphs_are_off_by_default_and_cuda_only(data, monkeypatch):
    monkeypatch.delenv(CUDA_GRAPH_ENV, raising=False)
    assert CUDA_GRAPH_DEFAULT is False and cuda_graph_default() is False  # not yet measured
    monkeypatch.setenv(CUDA_GRAPH_ENV, "1")
    assert cuda_graph_default() is True
    monkeypatch.setenv(CUDA_GRAPH_ENV, "0")
    assert cuda_graph_default() is False
    monkeypatch.setenv(CUDA_GRAPH_ENV, "yes")
    with pytest.raises(ValueError, match=CUDA_GRAPH_ENV):
        cuda_graph_default()
    monkeypatch.setenv(CUDA_GRAPH_ENV, "1")
    one = dataclasses.replace(CONFIG, epochs=1)
    result = train(small_net(), data, one, "cpu")  # asked for, but there is no CUDA here
    assert not result.cuda_graph and result.graph_fallback is None
    with pytest.raises(ValueError, match="cuda_graph"):
        train(small_net(), data, one, "cpu", cuda_graph="yes")


# --- on a CUDA device ---------------------------------------------------------------------------


@pytest.fixture
def cuda_backend():
    """The backend a CUDA worker runs under, put back afterwards."""
    from explorer.training import configure_backend

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


_GRAPH_VS_EAGER = """
import dataclasses, json, sys
sys.path.insert(0, {root!r})
import torch
from explorer.training import BUDGETS, configure_backend, train
from search_space import REFERENCES, NetworkConfig, build_network
from tests.test_train import stripes_dataset
configure_backend("cuda", deterministic=True)  # before any CUDA work, as a worker does
data = stripes_dataset(n_train=512, n_val=128).on("cuda")
out = []
for ref, optimizer in (("v1", "adamw"), ("v2", "sgd")):
    config = dataclasses.replace(BUDGETS["smoke"], optimizer=optimizer)
    runs = []
    for graph in (False, True):
        torch.manual_seed(0)
        model = build_network(NetworkConfig(block=REFERENCES[ref], width=0.125))
        r = train(model, data, config, "cuda", cuda_graph=graph)
        runs.append({{"curves": [r.train_loss, r.val_loss, r.val_acc], "graph": r.cuda_graph,
                     "fallback": r.graph_fallback}})
    out.append(runs)
print(json.dumps(out))
"""


@pytest.mark.gpu
def test_graphed_training_matches_eager_under_the_deterministic_backend():
    """The same seed, graphed and eager, v1 with AdamW and v2 with SGD, in a fresh process (cuBLAS
    reads its deterministic setting when it starts): the same kernels run, so the curves are
    expected bit-equal; allowed 1e-5 relative, and one of the 128 validation images."""
    out = subprocess.run(
        [sys.executable, "-c", _GRAPH_VS_EAGER.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    ).stdout
    for eager, graphed in json.loads(out.splitlines()[-1]):
        assert graphed["graph"] and graphed["fallback"] is None and not eager["graph"]
        for got, want in zip(graphed["curves"][:2], eager["curves"][:2]):
            assert got == pytest.approx(want, rel=1e-5)
        assert graphed["curves"][2] == pytest.approx(eager["curves"][2], abs=1 / 128 + 1e-9)


_CAPTURE_FAILS = """
import dataclasses, json, logging, sys
sys.path.insert(0, {root!r})
import torch
from torch import nn
from explorer.training import BUDGETS, configure_backend, train
from tests.test_train import stripes_dataset
logging.basicConfig(level=logging.WARNING, format="LOG %(message)s")
configure_backend("cuda")

class Syncs(nn.Module):
    # Reads a value back to the host in every forward: fine eagerly, illegal while capturing.
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 4)
    def forward(self, x):
        scale = 1.0 + 0.0 * float(x.mean())
        return self.fc(x.flatten(1)) * scale

data = stripes_dataset(n_train=256, n_val=64).on("cuda")
config = dataclasses.replace(BUDGETS["smoke"], epochs=2, train_images=128)
runs = []
for graph in (False, True):
    torch.manual_seed(0)
    r = train(Syncs(), data, config, "cuda", cuda_graph=graph)
    runs.append({{"curves": [r.train_loss, r.val_loss, r.val_acc], "graph": r.cuda_graph,
                  "fallback": r.graph_fallback}})
print(json.dumps(runs))
"""


@pytest.mark.gpu
def test_a_failed_cuda_capture_falls_back_to_eager_with_one_log_line():
    # A fresh process: a failed capture must leave CUDA usable, and nothing else shares it.
    proc = subprocess.run(
        [sys.executable, "-c", _CAPTURE_FAILS.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    )
    eager, graphed = json.loads(proc.stdout.splitlines()[-1])
    assert not graphed["graph"] and graphed["fallback"], graphed
    logged = [line for line in proc.stderr.splitlines() if line.startswith("LOG ")]
    assert len(logged) == 1 and "training on eagerly" in logged[0], proc.stderr[-2000:]
    assert graphed["curves"][0] == pytest.approx(eager["curves"][0], rel=1e-3)


@pytest.mark.gpu
def test_graphed_training_learns_and_gives_its_graph_memory_back(cuda_backend):
    """Under the backend a worker sets (cuDNN autotuning picks kernels per run, so graphed and
    eager agree only loosely here); the graph's memory pool goes back when the run ends. Each
    mode runs twice and the second run counts: the first makes what a process keeps for good
    (cuBLAS workspaces of the streams, cuDNN plans)."""
    data = stripes_dataset(n_train=512, n_val=128).on("cuda")
    held, curves = {}, {}
    for graph in (False, True, False, True):
        model = small_net().cuda()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        result = train(model, data, BUDGETS["smoke"], "cuda", cuda_graph=graph)
        assert result.cuda_graph == graph and result.graph_fallback is None
        assert result.final_val_acc > 0.5  # chance is 0.25
        curves[graph] = result.train_loss
        torch.cuda.synchronize()
        held[graph] = torch.cuda.memory_allocated() - before
        assert all(p.grad is None for p in model.parameters())
        if graph:  # the pool and the cache were given back when the run ended
            assert torch.cuda.memory_reserved() - torch.cuda.memory_allocated() < 32 * 2**20
        del model
    assert held[True] == held[False]  # nothing of the graph outlives the run
    assert curves[True] == pytest.approx(curves[False], rel=0.05)
