"""explorer.training: config validation, budgets, learning, divergence, early stops."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import namedtuple

import optuna
import pytest
import torch
from torch import nn

from explorer.training import (
    BUDGETS,
    DATASETS,
    TrainConfig,
    configure_backend,
    default_budget,
    evaluate,
    resolve_device,
    train,
    trainer,
)
from explorer.training.data import Dataset
from explorer.training.devices import backend_settings
from explorer.training.trainer import (
    DivergedError,
    TrainResult,
    lr_factor,
    recompute_bn_stats,
    release_memory,
)
from search_space import REFERENCES, NetworkConfig, build_network

SMOKE = BUDGETS["smoke"]


def stripes_dataset(n_train: int = 512, n_val: int = 128, seed: int = 0) -> Dataset:
    """A learnable 4-class texture task on noise: horizontal stripes, vertical stripes, a
    checkerboard, or nothing; at a random phase, so crops and flips keep the class."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(28).view(28, 1)
    c = torch.arange(28).view(1, 28)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 4, (n,), generator=g)
        images = torch.randint(0, 100, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        phase = torch.randint(0, 4, (n,), generator=g)
        for i, (k, p) in enumerate(zip(labels.tolist(), phase.tolist())):
            on = [(r + p) % 4 < 2, (c + p) % 4 < 2, ((r + p) % 4 < 2) ^ ((c + p) % 4 < 2), None][k]
            if on is not None:
                images[i, 0][on.expand(28, 28)] += 120
        return images, labels

    (tx, ty), (vx, vy), (sx, sy) = make(n_train), make(n_val), make(n_val)
    return Dataset(DATASETS["mnist"], "synthetic", tx, ty, vx, vy, sx, sy)


def small_net(bn: str = "post") -> nn.Module:
    torch.manual_seed(0)
    return build_network(
        NetworkConfig(block=dataclasses.replace(REFERENCES["v2"], bn=bn), width=0.125)
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("optimizer", "adam"),
        ("schedule", "step"),
        ("lr", 0),
        ("lr", float("nan")),
        ("momentum", 1.0),
        ("warmup", 0.0),
        ("weight_decay", -1e-4),
        ("label_smoothing", 1.0),
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("epochs", True),
        ("train_images", 8),
        ("val_images", 0),
        ("final_val_images", 0),
        ("aux_weight", -0.1),
        ("bn_stats_images", -1),
        ("augment", "yes"),
        ("seed", 1.5),
    ],
)
def test_train_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_train_config_round_trip_and_budgets():
    for name, config in BUDGETS.items():
        assert TrainConfig.from_dict(config.to_dict()) == config, name
    assert set(BUDGETS) == {"smoke", "quick", "standard"}
    assert BUDGETS["standard"].train_images is None  # the whole training split
    assert BUDGETS["quick"].epochs >= 3  # the search prunes after each epoch
    assert TrainConfig(schedule="cosine", warmup=0.0).warmup == 0.0
    with pytest.raises(ValueError, match="unknown train config field"):
        TrainConfig.from_dict({"epoch": 3})


def test_devices():
    assert default_budget("cpu") == "quick" and default_budget("cuda") == "standard"
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_lr_schedule_warms_up_then_anneals(schedule):
    config = TrainConfig(schedule=schedule, warmup=0.2)
    f = [lr_factor(s, 100, config) for s in range(100)]
    assert f[0] < 0.1 and max(f) == pytest.approx(1.0) and f.index(max(f)) == 19
    assert all(a <= b for a, b in zip(f[:20], f[1:20])) and all(
        a >= b for a, b in zip(f[19:], f[20:])
    )
    assert f[-1] < 0.01


def test_smoke_budget_learns_a_small_task():
    data = stripes_dataset()
    seen = []
    result = train(small_net(), data, SMOKE, "cpu", epoch_callback=lambda e, r: seen.append(e))
    assert seen == [1, 2] and result.epoch == [1, 2]
    assert result.train_loss[-1] < result.train_loss[0] - 0.3
    assert result.final_val_acc > 0.5  # chance is 0.25
    assert result.images_seen == 2 * SMOKE.train_images and result.images_per_s > 0
    assert 0 < result.train_time_s <= result.wall_time_s and len(result.epoch_time_s) == 2
    assert result.peak_memory_bytes is None  # the CPU reports no peak
    assert set(result.curves()) == {"epoch", "train_loss", "val_loss", "val_acc"}
    loss, acc = evaluate(build_network(NetworkConfig(block=REFERENCES["v1"])), data, "cpu", "test")
    assert loss > 0 and 0 <= acc <= 1


def test_same_seed_same_curves():
    data = stripes_dataset(n_train=128, n_val=32)
    config = dataclasses.replace(SMOKE, epochs=1, train_images=64)
    a = train(small_net(), data, config, "cpu")
    b = train(small_net(), data, config, "cpu")
    assert a.train_loss == b.train_loss and a.val_acc == b.val_acc


class NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


def test_divergence_stops_at_once():
    config = dataclasses.replace(SMOKE, epochs=2)
    with pytest.raises(DivergedError, match="NaN or infinite in epoch 1 by step 1") as err:
        train(NaNNet(), stripes_dataset(n_train=256, n_val=32), config, "cpu")
    assert err.value.result.images_seen == config.batch_size and err.value.result.epoch == []


class _ItemCounter:
    """Counts reads of a tensor's value back to the host (the reads that stall a GPU) made by
    the explorer's own code; torch's CPU kernels make reads of their own that CUDA's do not."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        for name in ("item", "tolist", "cpu", "__bool__", "__float__"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def wrapper(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if os.sep + "explorer" + os.sep in caller:
                self.calls += 1
            return original(tensor, *args, **kwargs)

        return wrapper


def _as_on_a_gpu(monkeypatch) -> None:
    """Make a CPU run check for divergence as a GPU run does (once per epoch)."""
    setup = trainer._setup
    monkeypatch.setattr(
        trainer, "_setup", lambda d: dataclasses.replace(setup(d), check_each_step=False)
    )


@pytest.mark.parametrize("train_images", [64, 256])
def test_gpu_policy_reads_back_a_fixed_number_of_values_per_epoch(monkeypatch, train_images):
    _as_on_a_gpu(monkeypatch)
    config = dataclasses.replace(SMOKE, epochs=1, train_images=train_images, bn_stats_images=0)
    data = stripes_dataset(n_train=256, n_val=32).on("cpu")
    model = small_net()
    counter = _ItemCounter(monkeypatch)
    train(model, data, config, "cpu")
    # The epoch's NaN check and loss, and validation's loss and accuracy: none per step.
    assert counter.calls == 4, f"{counter.calls} reads for {train_images // 16} steps"


def test_gpu_policy_still_stops_a_diverged_run_at_the_epoch_end(monkeypatch):
    _as_on_a_gpu(monkeypatch)
    config = dataclasses.replace(SMOKE, epochs=2, train_images=64)
    with pytest.raises(DivergedError, match="NaN or infinite in epoch 1 by step 4") as err:
        train(NaNNet(), stripes_dataset(n_train=256, n_val=32), config, "cpu")
    assert err.value.result.images_seen == 64 and err.value.result.epoch == []


@pytest.fixture
def restore_backend():
    """Put the process-wide switches configure_backend sets back as they were."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.allow_tf32,
    )
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.set_float32_matmul_precision(before[1])
    (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.allow_tf32,
    ) = before[2:]


def test_configure_backend_is_idempotent_and_reports_what_it_set(restore_backend):
    first = configure_backend("cpu", deterministic=True)
    assert first == configure_backend("cpu", deterministic=True) == backend_settings("cpu")
    assert first["deterministic"] and torch.are_deterministic_algorithms_enabled()
    assert not configure_backend("cpu")["deterministic"]
    with pytest.raises(ValueError, match="deterministic"):
        configure_backend("cpu", deterministic="yes")


def test_train_leaves_backend_switches_alone_and_deterministic_mode_trains(restore_backend):
    configure_backend("cpu", deterministic=True)
    before = (backend_settings("cuda"), torch.backends.cudnn.benchmark)
    config = dataclasses.replace(SMOKE, epochs=1, train_images=64)
    data = stripes_dataset(n_train=128, n_val=32)
    a = train(small_net(), data, config, "cpu")
    assert (backend_settings("cuda"), torch.backends.cudnn.benchmark) == before
    configure_backend("cpu")
    b = train(small_net(), data, config, "cpu")
    assert a.train_loss == b.train_loss  # a CPU run repeats with or without the flag


def test_release_memory_frees_what_a_caught_error_keeps_alive():
    import weakref

    def forward_that_fails() -> weakref.ref:
        activation = torch.ones(1000)
        ref = weakref.ref(activation)
        raise RuntimeError("CUDA out of memory (simulated)", ref)

    try:
        try:
            forward_that_fails()
        except RuntimeError as inner:
            raise ValueError("trial failed") from inner
    except ValueError as exc:
        ref = exc.__cause__.args[1]
        assert ref() is not None  # the traceback keeps the forward pass's locals
        release_memory("cpu", exc)
        assert ref() is None


def test_callback_stops_training_and_keeps_partial_curves():
    kept: list[TrainResult] = []

    def prune_after_first(epoch: int, result: TrainResult) -> None:
        kept.append(result)
        if epoch == 1:
            raise optuna.TrialPruned()

    config = dataclasses.replace(SMOKE, epochs=3, train_images=64)
    with pytest.raises(optuna.TrialPruned):
        train(small_net(), stripes_dataset(n_train=128, n_val=32), config, "cpu", prune_after_first)
    assert len(kept) == 1 and kept[0].epoch == [1] and len(kept[0].val_acc) == 1


AuxOut = namedtuple("AuxOut", ["logits", "aux"])


class AuxNet(nn.Module):
    """Returns (logits, aux logits) in training, like torchvision's GoogLeNet and Inception v3."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Linear(784, 10)
        self.aux_head = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor):
        x = x.flatten(1)
        return AuxOut(self.main(x), self.aux_head(x)) if self.training else self.main(x)


@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_aux_outputs_add_weighted_loss(weight):
    torch.manual_seed(0)
    model = AuxNet()
    config = dataclasses.replace(
        SMOKE,
        epochs=1,
        train_images=64,
        aux_weight=weight,
        weight_decay=0.0,  # decay moves all
    )
    result = train(model, stripes_dataset(n_train=128, n_val=32), config, "cpu")
    assert result.epoch == [1]
    # The auxiliary head learns exactly when its loss counts.
    torch.manual_seed(0)
    untouched = AuxNet().aux_head.weight
    changed = not torch.allclose(model.aux_head.weight, untouched)
    assert changed == (weight > 0)


def test_bn_stats_are_recomputed_from_training_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3))
    model[1].running_mean.fill_(100.0)
    model.eval()
    data = stripes_dataset(n_train=64, n_val=8).on("cpu")
    recompute_bn_stats(model, data, 64, seed=0)
    with torch.no_grad():
        conv_out = model[0](next(data.eval_batches("train", 64))[0])
    assert torch.allclose(model[1].running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert model[1].momentum == 0.3 and not model.training
