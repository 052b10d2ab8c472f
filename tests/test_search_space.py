"""The search space and its builders: forward and backward over reference, ablated, extreme and
sampled designs, arithmetic against the modules, validation, and round trips through JSON and
Optuna trials."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import search_space.config as config_module
from search_space import (
    DEFAULT_SPACE,
    REFERENCES,
    BlockConfig,
    Dimension,
    NetworkConfig,
    SearchSpace,
    build_network,
    config_from_trial,
    network_from_trial,
    network_params,
    reference_network,
)
from search_space.blocks import ConvNormAct, InceptionBlock, block_params, conv_params
from search_space.config import (
    BN_PLACEMENT_DESCRIPTIONS,
    BN_PLACEMENTS,
    MAX_CHANNELS,
    MAX_DEPTH,
    MAX_STAGES,
    WIDTH_FIELDS,
)
from search_space.references import v3_stage_designs

SEED = 0
N_SAMPLES = 50
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _extreme(high: bool, **choices) -> BlockConfig:
    """Every integer dimension at its bound (read from the space), categorical ones as given."""
    params: dict = {}
    for dim in DEFAULT_SPACE.dimensions:
        if not dim.active(params):
            continue
        if dim.choices is not None:
            params[dim.name] = choices.get(dim.name, dim.choices[0])
        else:
            params[dim.name] = choices.get(dim.name, dim.high if high else dim.low)
    return DEFAULT_SPACE.config_from_params(params)


def _smallest_nonzero(name: str) -> int:
    dim = DEFAULT_SPACE[name]
    return dim.low if dim.low > 0 else dim.low + dim.step


@functools.cache
def _extremes() -> dict[str, BlockConfig]:
    """The space's corners. All minimum widths leave one branch (see
    `test_all_minimum_widths_is_rejected`), so the smallest designs add one minimal branch."""
    out = {
        "min+1x1": _extreme(False, ch1x1=_smallest_nonzero("ch1x1")),
        "min+wide": _extreme(False, bn="post", wide=_smallest_nonzero("wide")),
        "min+pool": _extreme(False, bn="pre", pool_proj=_smallest_nonzero("pool_proj")),
    }
    for bn in BN_PLACEMENTS:
        out[f"max-5x5-{bn}"] = _extreme(True, bn=bn, wide_kind="5x5", pool_type="avg")
    out["max-double3x3"] = _extreme(True, bn="post", wide_kind="double3x3")
    for n in DEFAULT_SPACE["asym_n"].choices:
        out[f"max-asym{n}"] = _extreme(True, bn="post", wide_kind="asym", asym_n=n)
    return out


@functools.cache
def _samples() -> tuple[BlockConfig | str, ...]:
    """`N_SAMPLES` seeded draws through `config_from_trial`; a rejected draw is kept as its
    error message."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SEED))
    out: list[BlockConfig | str] = []
    for _ in range(N_SAMPLES):
        trial = study.ask()
        try:
            out.append(config_from_trial(trial))
        except ValueError as exc:
            out.append(str(exc))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, 0.0)
    return tuple(out)


# The seeded sampler accepts all 50 draws today; the sampled tests below skip a rejected draw, so
# they would pass vacuously if the space started rejecting most of them: each asserts this floor.
MIN_ACCEPTED = N_SAMPLES // 2


def _sample(i: int) -> BlockConfig:
    samples = _samples()
    accepted = sum(isinstance(s, BlockConfig) for s in samples)
    assert accepted >= MIN_ACCEPTED, (
        f"only {accepted} of {N_SAMPLES} seeded draws were accepted (at least {MIN_ACCEPTED} "
        f"expected): {[s for s in samples if isinstance(s, str)][:5]}"
    )
    cfg = samples[i]
    if isinstance(cfg, str):
        pytest.skip(f"sample {i} was rejected by the space: {cfg}")
    return cfg


# Named designs: the references, each BN placement and each wide kind on v1/v2, the extremes.
NAMED: dict[str, BlockConfig] = {
    **{f"ref-{k}": v for k, v in REFERENCES.items()},
    **{f"bn-{bn}": dataclasses.replace(REFERENCES["v1"], bn=bn) for bn in BN_PLACEMENTS},
    **{
        f"wide-{kind}": dataclasses.replace(REFERENCES["v2"], wide_kind=kind)
        for kind in ("5x5", "double3x3", "3x3")
    },
    **{
        f"wide-asym{n}": dataclasses.replace(REFERENCES["v2"], wide_kind="asym", asym_n=n)
        for n in (3, 5, 7)
    },
}
NAMED_IDS = sorted(NAMED)


def _named(name: str) -> BlockConfig:
    return NAMED[name] if name in NAMED else _extremes()[name]


DESIGN_IDS = NAMED_IDS + sorted(_extremes())


def _check_train_step(net: NetworkConfig, batch: int = 2) -> None:
    torch.manual_seed(SEED)
    model = build_network(net).train()
    x = torch.randn(batch, net.in_channels, net.image_size, net.image_size)
    out = model(x)
    assert out.shape == (batch, net.num_classes)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.arange(batch) % net.num_classes).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def _check_arithmetic(net: NetworkConfig) -> None:
    """Parameters and channels computed from the config equal those of the built module."""
    model = build_network(net)
    assert network_params(net) == _numel(model)
    plan = net.channel_plan()
    assert plan[0] == ("stem", net.in_channels, model.stem.conv.out_channels)
    blocks = [m for m in model.modules() if isinstance(m, InceptionBlock)]
    assert len(blocks) == len(plan) - 1 == sum(net.stages)
    for (name, cin, cout), block in zip(plan[1:], blocks):
        assert (block.in_channels, block.out_channels) == (cin, cout), name
        assert block.config.out_channels(cin) == cout, name
        assert block_params(block.config, cin) == _numel(block), name
    # and the shapes a forward pass really produces
    shapes: list[int] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: shapes.append(o.shape[1])) for b in blocks]
    with torch.no_grad():
        model.eval()(torch.zeros(1, net.in_channels, net.image_size, net.image_size))
    for hook in hooks:
        hook.remove()
    assert shapes == [cout for _, _, cout in plan[1:]]
    assert model.fc.in_features == net.out_channels


# --- forward, backward and arithmetic over designs -------------------------------------------


@pytest.mark.parametrize("name", DESIGN_IDS)
def test_design_trains(name: str) -> None:
    _check_train_step(NetworkConfig(block=_named(name)))


@pytest.mark.parametrize("i", range(N_SAMPLES), ids=lambda i: f"sample{i}")
def test_sampled_design_trains(i: int) -> None:
    _check_train_step(NetworkConfig(block=_sample(i)))


@pytest.mark.parametrize("name", DESIGN_IDS)
def test_design_arithmetic(name: str) -> None:
    _check_arithmetic(NetworkConfig(block=_named(name)))


@pytest.mark.parametrize("i", range(N_SAMPLES), ids=lambda i: f"sample{i}")
def test_sampled_design_arithmetic(i: int) -> None:
    _check_arithmetic(NetworkConfig(block=_sample(i)))


NETWORK_VARIANTS = {
    "rgb32-3stages": dict(in_channels=3, image_size=32, stages=(1, 2, 1)),
    "wide-avg-dropout": dict(width=0.5, downsample="avg", dropout=0.2, num_classes=7),
    "stem-bn-forced": dict(stem_bn=True),
    "stem-bn-off": dict(stem_bn=False, stem_channels=40),
}


@pytest.mark.parametrize("variant", sorted(NETWORK_VARIANTS))
@pytest.mark.parametrize("ref", ["v1", "v2"])
def test_network_variants(ref: str, variant: str) -> None:
    net = NetworkConfig(block=REFERENCES[ref], **NETWORK_VARIANTS[variant])
    _check_arithmetic(net)
    _check_train_step(net)


@pytest.mark.parametrize("bias", [None, True, False])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 5), (1, 7), (7, 1)])
@pytest.mark.parametrize("bn", BN_PLACEMENTS)
def test_conv_params_match_module(bn: str, kernel: tuple[int, int], bias: bool | None) -> None:
    unit = ConvNormAct(6, 10, kernel, bn=bn, bias=bias)
    assert conv_params(6, 10, kernel, bn, bias=bias) == _numel(unit)
    assert unit(torch.zeros(1, 6, 9, 9)).shape == (1, 10, 9, 9)


@pytest.mark.parametrize("size", [27, 28, 7, 8])
@pytest.mark.parametrize("kind", ["5x5", "double3x3", "asym", "3x3"])
def test_stride2_block_halves_even_and_odd_maps(kind: str, size: int) -> None:
    cfg = BlockConfig(0, 8, 12, 4, 6, 0, wide_kind=kind, asym_n=5, bn="post", stride=2)
    block = InceptionBlock(10, cfg)
    out = block(torch.randn(1, 10, size, size))
    half = (size + 1) // 2
    assert out.shape == (1, cfg.out_channels(10), half, half) == (1, 12 + 6 + 10, half, half)
    assert block_params(cfg, 10) == _numel(block)


def test_parameter_count_is_linear_in_depth(monkeypatch) -> None:
    """The deepest network the bounds allow counts in one pass and agrees with the module."""
    net = NetworkConfig(block=REFERENCES["v2"], stages=(MAX_DEPTH,) * 3)
    calls = 0
    out_channels = BlockConfig.out_channels

    def counting(self: BlockConfig, in_channels: int) -> int:
        nonlocal calls
        calls += 1
        return out_channels(self, in_channels)

    monkeypatch.setattr(BlockConfig, "out_channels", counting)
    n = network_params(net)
    # A count that re-walks the channel plan for every block would call this 48 x 48 times.
    assert calls <= 2 * sum(net.stages)
    monkeypatch.undo()
    assert n == _numel(build_network(net))


@pytest.mark.parametrize("placement", BN_PLACEMENTS)
def test_bn_placement_descriptions_match_the_unit(placement: str) -> None:
    """Each description spells the order in which `ConvNormAct` really runs its layers."""
    assert tuple(BN_PLACEMENT_DESCRIPTIONS) == BN_PLACEMENTS
    unit = ConvNormAct(4, 4, 3, bn=placement).eval()
    order: list[str] = []
    names = {"conv": "conv", "bn": "BN", "act": "ReLU"}
    for attr, label in names.items():
        if hasattr(unit, attr):
            getattr(unit, attr).register_forward_hook(
                lambda _m, _i, _o, label=label: order.append(label)
            )
    with torch.no_grad():
        unit(torch.randn(1, 4, 5, 5))
    assert " -> ".join(order) == BN_PLACEMENT_DESCRIPTIONS[placement]


def test_width_fields_are_the_scaled_fields() -> None:
    scaled = V1.scaled(2.0)
    changed = {
        f.name
        for f in dataclasses.fields(BlockConfig)
        if getattr(scaled, f.name) != getattr(V1, f.name)
    }
    assert changed == set(WIDTH_FIELDS)
    assert len(WIDTH_FIELDS) == len(set(WIDTH_FIELDS)) == 6


# --- the sample itself -----------------------------------------------------------------------


def test_samples_are_seeded_and_all_valid() -> None:
    samples = _samples()
    assert [s for s in samples if isinstance(s, str)] == []  # the space proposes no rejected design
    assert len({s for s in samples if isinstance(s, BlockConfig)}) > N_SAMPLES // 2
    _samples.cache_clear()
    assert _samples() == samples


def test_all_minimum_widths_is_rejected() -> None:
    # the space itself refuses it: with 1x1 and wide removed the pool branch starts at 16
    with pytest.raises(ValueError, match="pool_proj is outside the space: 0"):
        _extreme(False)
    with pytest.raises(ValueError, match="at least two branches"):  # and so does the block
        BlockConfig(ch1x1=0, ch3x3_reduce=16, ch3x3=16, wide_reduce=0, wide=0, pool_proj=0)


def test_a_sampler_pushed_towards_one_branch_never_gets_one() -> None:
    """TPE rewarded for removing branches drives 1x1 and wide to 0; the space then keeps the pool
    branch, so no proposal is a design it rejects, and the one-branch corner is not a point."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED))
    corner = 0
    for _ in range(150):
        trial = study.ask()
        block = config_from_trial(trial)  # raises for a rejected design
        assert block.num_branches >= 2
        corner += block.ch1x1 == 0 and block.wide == 0
        study.tell(trial, -(block.ch1x1 + block.wide + block.pool_proj))
    assert corner > 10  # the sampler did reach the corner, and kept two branches there
    params = DEFAULT_SPACE.params_from_config(REFERENCES["v1"])
    with pytest.raises(ValueError, match="pool_proj is outside the space"):
        DEFAULT_SPACE.config_from_params({**params, "ch1x1": 0, "wide": 0, "pool_proj": 0})
    assert not DEFAULT_SPACE["pool_proj"].contains(0, {"ch1x1": 0, "wide": 0})
    assert DEFAULT_SPACE["pool_proj"].contains(0, {"ch1x1": 16, "wide": 0})


def test_the_one_branch_check_on_test_journals_finds_such_a_failure(tmp_path) -> None:
    """conftest fails any test whose journals hold a one-branch failure; its scan does find one."""
    from explorer.store import open_storage
    from tests.helpers import one_branch_failures

    study = optuna.create_study(storage=open_storage(str(tmp_path / "clean.journal")))
    study.tell(study.ask(), 0.5)
    assert one_branch_failures(tmp_path) == []
    (tmp_path / "sub").mkdir()
    bad = optuna.create_study(storage=open_storage(str(tmp_path / "sub" / "bad.journal")))
    trial = bad.ask()
    try:
        BlockConfig(ch1x1=0, ch3x3_reduce=16, ch3x3=16, wide_reduce=0, wide=0, pool_proj=0)
    except ValueError as exc:
        trial.set_user_attr("fail_reason", str(exc))
    bad.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert [p.name for p in one_branch_failures(tmp_path)] == ["bad.journal"]
    (tmp_path / "sub" / "bad.journal").unlink()  # this test's own journal is not a search's


def test_extremes_are_points_of_the_space() -> None:
    for name, cfg in _extremes().items():
        assert DEFAULT_SPACE.contains(cfg), name
    small = network_params(NetworkConfig(block=_extremes()["min+1x1"]))
    big = network_params(NetworkConfig(block=_extremes()["max-5x5-none"]))
    for cfg in NAMED.values():
        assert small <= network_params(NetworkConfig(block=cfg)) <= big


# --- validation ------------------------------------------------------------------------------

V1 = REFERENCES["v1"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(ch1x1=-1), "ch1x1"),
        (dict(ch3x3=1.5), "ch3x3"),
        (dict(pool_proj=True), "pool_proj"),
        (dict(wide_kind="7x7"), "wide_kind"),
        (dict(asym_n=4), "asym_n"),
        (dict(pool_type="l2"), "pool_type"),
        (dict(bn="batch"), "bn"),
        (dict(stride=3), "stride"),
        (dict(wide_reduce=0), "wide_reduce"),  # a reduction without its branch, and vice versa
        (dict(ch3x3=0), "ch3x3_reduce"),
        (dict(stride=2), "ch1x1"),  # stride 2 forbids the 1x1 branch ...
        (dict(stride=2, ch1x1=0), "pool_proj"),  # ... and the pool projection
        (dict(ch1x1=0, wide_reduce=0, wide=0, pool_proj=0), "branches"),
        (dict(ch3x3=MAX_CHANNELS + 1), "ch3x3"),
    ],
)
def test_invalid_block_raises(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(V1, **changes)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**V1.to_dict(), "ch7x7": 3}, "ch7x7"),
        ({k: v for k, v in V1.to_dict().items() if k != "pool_proj"}, "pool_proj"),
        ({**V1.to_dict(), "bn": "batch"}, "bn"),
        ([1, 2, 3], "mapping"),
    ],
)
def test_invalid_block_dict_raises(data, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BlockConfig.from_dict(data)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(block=V1.to_dict()), "block"),
        (dict(block=dataclasses.replace(V1, ch1x1=0, pool_proj=0, stride=2)), "block.stride"),
        (dict(in_channels=2), "in_channels"),
        (dict(num_classes=1), "num_classes"),
        (dict(num_classes=10.0), "num_classes"),
        (dict(image_size=4), "image_size"),
        (dict(stem_channels=0), "stem_channels"),
        (dict(stages=()), "stages"),
        (dict(stages=(1, 0)), "stages"),
        (dict(stages="11"), "stages"),
        (dict(image_size=8, stages=(1, 1, 1, 1, 1)), "stages"),
        (dict(width=0), "width"),
        (dict(width=9), "width"),
        (dict(downsample="conv"), "downsample"),
        (dict(dropout=1.0), "dropout"),
        (dict(stem_bn="yes"), "stem_bn"),
        (dict(stages=(MAX_DEPTH + 1,)), "stages"),
        (dict(image_size=512, stages=(1,) * (MAX_STAGES + 1)), "stages"),
        (dict(num_classes=10**6), "num_classes"),
        (dict(image_size=10**5), "image_size"),
        (dict(stem_channels=MAX_CHANNELS + 1), "stem_channels"),
        (dict(width=8, stem_channels=MAX_CHANNELS), "stem_channels"),
        (dict(width=8, image_size=64, stages=(1,) * 5), "width"),  # 128 x 8 x 2**4 at the end
    ],
)
def test_invalid_network_raises(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NetworkConfig(**{"block": V1, **changes})


def test_out_of_bound_depth_from_a_stored_design_raises_quickly(monkeypatch) -> None:
    """A design read from someone else's study must fail fast, not hang the exporter: the bounds
    on `stages` are checked before any work that grows with them (scaling widths by
    ``2**len(stages)``, the channel plan, building), and the message does not echo the list."""

    def forbidden(*_args, **_kwargs):
        raise AssertionError("out-of-bound stages reached work that grows with the stages")

    monkeypatch.setattr(config_module, "_scale", forbidden)
    monkeypatch.setattr(BlockConfig, "scaled", forbidden)
    monkeypatch.setattr(NetworkConfig, "channel_plan", forbidden)
    with pytest.raises(ValueError, match=rf"stages .*1\.\.{MAX_DEPTH}.*100000"):
        NetworkConfig.from_dict({"block": V1.to_dict(), "stages": [100000]})
    with pytest.raises(ValueError, match=rf"stages must be a list of 1\.\.{MAX_STAGES}") as info:
        NetworkConfig.from_dict({"block": V1.to_dict(), "stages": [1] * 100000})
    assert len(str(info.value)) < 300, "the message echoes the whole stages list"


def test_invalid_network_dict_raises() -> None:
    with pytest.raises(ValueError, match="depth"):
        NetworkConfig.from_dict({"block": V1.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="block"):
        NetworkConfig.from_dict({"width": 0.5})
    with pytest.raises(ValueError, match="ch1x1"):
        NetworkConfig.from_dict({"block": {**V1.to_dict(), "ch1x1": -5}})


def test_invalid_space_raises() -> None:
    with pytest.raises(ValueError, match="'w'"):
        Dimension("w")
    with pytest.raises(ValueError, match="'w'"):
        Dimension("w", 32, 16)
    with pytest.raises(ValueError, match="'w'"):
        Dimension("w", 0, 16, condition=("x", "<", 1))
    with pytest.raises(ValueError, match="'b'"):
        SearchSpace((Dimension("b", 0, 8, condition=("a", "!=", 0)), Dimension("a", 0, 8)))
    params = DEFAULT_SPACE.params_from_config(V1)
    with pytest.raises(ValueError, match="ch1x1"):
        DEFAULT_SPACE.config_from_params({**params, "ch1x1": 8})  # off the step
    with pytest.raises(ValueError, match="pool_proj"):
        DEFAULT_SPACE.config_from_params({k: v for k, v in params.items() if k != "pool_proj"})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(wide_kind="3x3"), "wide_kind"),  # torchvision's kernel is a block, not a point here
        (dict(ch1x1=40), "ch1x1"),
        (dict(ch1x1=0, pool_proj=0, stride=2), "stride"),
    ],
)
def test_space_rejects_outside_points(changes: dict, field: str) -> None:
    cfg = dataclasses.replace(V1, **changes)
    assert not DEFAULT_SPACE.contains(cfg)
    with pytest.raises(ValueError, match=field):
        DEFAULT_SPACE.params_from_config(cfg)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DESIGN_IDS)
def test_block_json_round_trip(name: str) -> None:
    cfg = _named(name)
    text = cfg.to_json()
    assert json.loads(text) == cfg.to_dict()
    assert BlockConfig.from_json(text) == cfg
    assert BlockConfig.from_dict(json.loads(text)) == cfg


@pytest.mark.parametrize("variant", sorted(NETWORK_VARIANTS))
def test_network_json_round_trip(variant: str) -> None:
    net = NetworkConfig(block=REFERENCES["v3"], **NETWORK_VARIANTS[variant])
    back = NetworkConfig.from_json(net.to_json())
    assert back == net
    assert isinstance(back.stages, tuple) and isinstance(back.block, BlockConfig)
    assert network_params(back) == network_params(net)


def _trial_round_trip(cfg: BlockConfig) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SEED))
    params = DEFAULT_SPACE.params_from_config(cfg)
    study.enqueue_trial(params)
    trial = study.ask()
    assert config_from_trial(trial) == cfg
    assert trial.params == params
    assert DEFAULT_SPACE.config_from_params(trial.params) == cfg


@pytest.mark.parametrize("name", ["ref-v1", "ref-v2", "ref-v3", *sorted(_extremes())])
def test_trial_params_round_trip(name: str) -> None:
    _trial_round_trip(_named(name))


@pytest.mark.parametrize("i", range(0, N_SAMPLES, 5), ids=lambda i: f"sample{i}")
def test_sampled_trial_params_round_trip(i: int) -> None:
    _trial_round_trip(_sample(i))


@pytest.mark.parametrize("ref", ["v1", "v2", "v3"])
def test_space_contains_references(ref: str) -> None:
    assert DEFAULT_SPACE.contains(REFERENCES[ref])


# --- the command line ------------------------------------------------------------------------


def test_python_m_search_space_prints_the_space() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "search_space"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for dim in DEFAULT_SPACE.dimensions:
        assert dim.name in result.stdout, dim.name
    for ref in REFERENCES:
        assert f"{ref}:" in result.stdout, ref
    assert "1x3+3x1" in result.stdout.split("v3 placed per stage")[1]


# --- per-stage designs -----------------------------------------------------------------------

V2 = REFERENCES["v2"]
PER_STAGE = {
    # a different design per stage, and a per-stage network whose stages happen to agree
    "v1-v2-v3": dict(designs=("v1", "v2", "v3"), stages=(1, 1, 1)),
    "v2-v1-deep": dict(designs=("v2", "v1"), stages=(2, 1)),
    "v3-grids": dict(designs=None, stages=(1, 1, 1)),
    "pre-last": dict(designs=("v1", "pre"), stages=(1, 1)),  # the head follows the last stage
    "pre-first": dict(designs=("pre", "v1"), stages=(1, 1)),  # the stem BN follows the first
    "rgb32": dict(designs=("v2", "v1", "v2"), stages=(1, 1, 1), in_channels=3, image_size=32),
    "one-stage": dict(designs=("v1",), stages=(2,)),
}


def _per_stage(name: str) -> NetworkConfig:
    spec = dict(PER_STAGE[name])
    names = spec.pop("designs")
    skeleton = NetworkConfig(block=V1, **spec)
    if names is None:
        return reference_network("v3", skeleton, per_stage=True)
    lookup = {**REFERENCES, "pre": dataclasses.replace(V1, bn="pre")}
    return skeleton.with_designs([lookup[n] for n in names])


@pytest.mark.parametrize("name", sorted(PER_STAGE))
def test_per_stage_arithmetic_and_training(name: str) -> None:
    net = _per_stage(name)
    assert net.per_stage and net.block == net.stage_blocks[0]
    _check_arithmetic(net)
    _check_train_step(net)
    model = build_network(net)
    for s, stage in enumerate(model.stages):
        blocks = [m for m in stage if isinstance(m, InceptionBlock)]
        assert blocks and all(b.config == net.stage_block(s) for b in blocks), s
    assert isinstance(model.head_norm, nn.Sequential) == (net.designs[-1].bn == "pre")


def test_per_stage_flops_follow_each_stage() -> None:
    """FLOPs are counted on the built model, so a stage's design moves only that stage's share:
    swapping the last stage's 5x5 for a 3x3 saves its multiply-adds and no others."""
    from explorer.training import count_flops

    net = NetworkConfig(block=V1, stages=(1, 1, 1)).with_designs((V1, V1, V1))
    cheaper = net.with_stage_design(2, dataclasses.replace(V1, wide_kind="double3x3"))
    shape = (1, 28, 28)
    grid = 28 // 4  # the third stage's 7x7 map
    # the wide path's second 3x3 after its first: wide_reduce -> wide -> wide at the stage's widths
    wide, red = net.stage_block(2).wide, net.stage_block(2).wide_reduce
    five = 2 * grid * grid * red * wide * 25
    double = 2 * grid * grid * (red * wide * 9 + wide * wide * 9)
    assert (
        count_flops(build_network(net), shape) - count_flops(build_network(cheaper), shape)
        == five - double
    )
    assert network_params(net) == network_params(net.with_block(V1))


def test_a_shared_network_is_stored_as_before() -> None:
    net = NetworkConfig(block=V1)
    assert "stage_blocks" not in net.to_dict()
    assert not net.per_stage and net.designs == (V1, V1)
    assert net.short() == V1.short()
    text = net.to_json()
    assert NetworkConfig.from_json(text) == net
    assert json.loads(text) == {**json.loads(text), "stages": [1, 1]}


@pytest.mark.parametrize("name", sorted(PER_STAGE))
def test_per_stage_json_round_trip(name: str) -> None:
    net = _per_stage(name)
    data = json.loads(net.to_json())
    assert len(data["stage_blocks"]) == len(net.stages)
    back = NetworkConfig.from_json(net.to_json())
    assert back == net and isinstance(back.stage_blocks, tuple)
    assert back.short() == net.short()
    assert net.short() == " ".join(f"s{s}[{d.short()}]" for s, d in enumerate(net.designs))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(stage_blocks=(V1,)), "stage_blocks has 1 designs for 2 stages"),
        (dict(stage_blocks=(V1, V1, V1)), "stage_blocks has 3 designs for 2 stages"),
        (dict(stage_blocks=(V2, V1)), r"block must equal stage_blocks\[0\]"),
        (dict(stage_blocks=(V1, V1.to_dict())), r"stage_blocks\[1\] must be a BlockConfig"),
        (
            dict(stage_blocks=(V1, dataclasses.replace(V1, ch1x1=0, pool_proj=0, stride=2))),
            r"stage_blocks\[1\]\.stride",
        ),
        (dict(stage_blocks="v1"), "stage_blocks must be a list"),
        (
            dict(width=8, image_size=64, stages=(1,) * 5, stage_blocks=(V1,) * 5),
            "stage 4's widest",
        ),
    ],
)
def test_invalid_per_stage_network_raises(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NetworkConfig(**{"block": V1, **changes})


def test_invalid_per_stage_dict_raises() -> None:
    with pytest.raises(ValueError, match="stage_blocks must be a list"):
        NetworkConfig.from_dict({"block": V1.to_dict(), "stage_blocks": V1.to_dict()})
    with pytest.raises(ValueError, match="ch1x1"):
        NetworkConfig.from_dict(
            {"block": V1.to_dict(), "stage_blocks": [V1.to_dict(), {**V1.to_dict(), "ch1x1": -1}]}
        )


def test_stage_helpers() -> None:
    net = NetworkConfig(block=V1, stages=(1, 2, 1), width=0.5).with_designs((V1, V2, V1))
    assert net.designs == (V1, V2, V1)
    assert net.stage_design(1) == V2
    assert net.stage_block(1) == V2.scaled(0.5 * 2)
    swapped = net.with_stage_design(0, V2)
    assert swapped.designs == (V2, V2, V1) and swapped.block == V2
    assert NetworkConfig(block=V1).with_stage_design(1, V2).designs == (V1, V2)
    with pytest.raises(ValueError, match="stage must be in 0..2, got 3"):
        net.stage_design(3)
    deeper = net.with_shape(stages=(2, 2, 2), width=1.0, stem_channels=64)
    assert deeper.designs == net.designs
    assert (deeper.stages, deeper.width, deeper.stem_channels) == ((2, 2, 2), 1.0, 64)
    with pytest.raises(ValueError, match=r"has 2 stages but the per-stage design has 3"):
        net.with_shape(stages=(2, 2))
    # a shared block goes into any shape
    assert NetworkConfig(block=V1).with_shape(stages=(1, 1, 1)).designs == (V1, V1, V1)


def test_v3_per_grid_layout() -> None:
    kinds = {
        n: [(d.wide_kind, d.asym_n if d.wide_kind == "asym" else None) for d in v3_stage_designs(n)]
        for n in (1, 2, 3, 4)
    }
    assert kinds[1] == [("double3x3", None)]
    assert kinds[2] == [("double3x3", None), ("asym", 7)]
    assert kinds[3] == [("double3x3", None), ("asym", 7), ("asym", 3)]
    assert kinds[4] == [("double3x3", None), ("asym", 7), ("asym", 7), ("asym", 3)]
    widths = {f: getattr(REFERENCES["v3"], f) for f in WIDTH_FIELDS}
    for design in v3_stage_designs(3):
        assert {f: getattr(design, f) for f in WIDTH_FIELDS} == widths
        assert DEFAULT_SPACE.contains(design)


@pytest.mark.parametrize("ref", sorted(REFERENCES))
def test_reference_network(ref: str) -> None:
    skeleton = NetworkConfig(block=V1, stages=(2, 1, 1), width=0.5, stem_channels=64)
    shared = reference_network(ref, skeleton)
    assert shared == skeleton.with_block(REFERENCES[ref])
    placed = reference_network(ref, skeleton, per_stage=True)
    assert placed.per_stage and (placed.stages, placed.width, placed.stem_channels) == (
        (2, 1, 1),
        0.5,
        64,
    )
    expected = v3_stage_designs(3) if ref == "v3" else (REFERENCES[ref],) * 3
    assert placed.designs == expected
    # a per-stage skeleton places references per stage by default
    assert reference_network(ref, skeleton.with_designs((V1,) * 3)) == placed
    with pytest.raises(ValueError, match="unknown reference 'v9'"):
        reference_network("v9", skeleton)


@pytest.mark.parametrize("per_stage", [False, True])
def test_network_from_trial_round_trip(per_stage: bool) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SEED))
    skeleton = NetworkConfig(block=V1, stages=(1, 1, 1))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        net = network_from_trial(trial, skeleton, per_stage)
        study.tell(trial, 0.0)
        assert net.per_stage == per_stage
        assert (net.stages, net.width) == (skeleton.stages, skeleton.width)
        if per_stage:
            assert {k.split(".")[0] for k in trial.params} == {"s0", "s1", "s2"}
            # conditional dimensions hold inside each stage
            for s, design in enumerate(net.stage_blocks):
                assert (f"s{s}.wide_kind" in trial.params) == (design.wide != 0)
                assert (f"s{s}.asym_n" in trial.params) == (
                    design.wide != 0 and design.wide_kind == "asym"
                )
            seen.add(tuple(d.wide_kind for d in net.stage_blocks))
        else:
            assert not any("." in k for k in trial.params)
            assert net.block == config_from_trial(optuna.trial.FixedTrial(trial.params))
        assert DEFAULT_SPACE.network_from_params(trial.params, skeleton) == net
        assert DEFAULT_SPACE.params_from_network(net) == trial.params
    if per_stage:
        assert any(len(set(kinds)) > 1 for kinds in seen), "stages were never sampled apart"


def test_network_from_params_rejects_another_stage_count() -> None:
    net = NetworkConfig(block=V1, stages=(1, 1, 1)).with_designs((V1, V2, V1))
    params = DEFAULT_SPACE.params_from_network(net)
    with pytest.raises(ValueError, match=r"name 3 stages .* network has 2"):
        DEFAULT_SPACE.network_from_params(params, NetworkConfig(block=V1))
    with pytest.raises(ValueError, match=r"missing parameter 's1\.bn'"):
        DEFAULT_SPACE.network_from_params(
            {k: v for k, v in params.items() if k != "s1.bn"},
            NetworkConfig(block=V1, stages=(1, 1, 1)),
        )
