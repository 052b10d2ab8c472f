"""Zero-cost proxies and pre-screening: finite, deterministic, and the relations they must keep."""

from __future__ import annotations

import dataclasses
import math

import optuna
import pytest
import torch
from torch import nn

from explorer.search.prescreen import Prescreener, prescreen
from explorer.training import PROXY_NAMES, compute_proxies, load_dataset, proxy_scores
from explorer.training.proxies import naswot, synflow
from search_space import REFERENCES, NetworkConfig, build_network, config_from_trial, network_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks: one thread is faster

BN_PLACEMENTS = ("none", "post", "pre", "post_act")


def small_net(bn: str = "post", **kwargs) -> NetworkConfig:
    """The v2 block at an eighth of the default width on 16x16 images: milliseconds per proxy."""
    block = dataclasses.replace(REFERENCES["v2"], bn=bn)
    return NetworkConfig(block=block, image_size=16, width=0.125, **kwargs)


def batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def built(config: NetworkConfig, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(config)


@pytest.mark.parametrize("bn", BN_PLACEMENTS)
def test_proxies_are_finite_and_deterministic(bn):
    x, y = batch()
    first = compute_proxies(built(small_net(bn)), x, y)
    again = compute_proxies(built(small_net(bn)), x, y)
    assert set(first) == set(PROXY_NAMES)
    assert all(math.isfinite(v) for v in first.values()), first
    assert first == again


def test_a_different_initialisation_gives_different_scores():
    x, y = batch()
    a = compute_proxies(built(small_net(), seed=0), x, y)
    b = compute_proxies(built(small_net(), seed=1), x, y)
    assert all(a[k] != b[k] for k in ("synflow", "snip", "grad_norm"))


def test_the_model_is_left_untouched():
    model = built(small_net("post", dropout=0.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    compute_proxies(model, *batch())
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():  # weights and BN running statistics
        assert torch.equal(value, before[key]), key


def test_dropout_does_not_make_scores_random():
    x, y = batch()
    model = built(small_net("post", dropout=0.5))
    assert compute_proxies(model, x, y) == compute_proxies(model, x, y)


@pytest.mark.parametrize("bn", ["none", "post"])
def test_synflow_of_zeroed_weights_is_zero(bn):
    model = built(small_net(bn))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.zero_()
    assert synflow(model, *batch()) == 0.0


@pytest.mark.parametrize("bn", BN_PLACEMENTS)
def test_synflow_is_positive_and_data_free(bn):
    model = built(small_net(bn))
    a = synflow(model, *batch(seed=0))
    assert a > 0
    assert a == synflow(model, *batch(seed=1))


def test_synflow_grows_with_width():
    x, y = batch()
    narrow = synflow(built(small_net()), x, y)
    wide = synflow(built(dataclasses.replace(small_net(), width=0.25)), x, y)
    assert wide > narrow


@pytest.mark.parametrize("bn", BN_PLACEMENTS)
def test_loss_gradient_proxies_are_positive(bn):
    scores = compute_proxies(built(small_net(bn)), *batch(), names=["snip", "grad_norm"])
    assert scores["grad_norm"] > 0 and scores["snip"] > 0


def test_naswot_kernel_is_singular_when_two_images_are_equal():
    x, y = batch()
    model = built(small_net())
    assert math.isfinite(naswot(model, x, y))
    x[1] = x[0]
    assert naswot(model, x, y) == -math.inf


def test_unknown_proxy_name_is_refused():
    with pytest.raises(ValueError, match="fisher"):
        compute_proxies(built(small_net()), *batch(), names=["synflow", "fisher"])


def test_proxy_scores_on_real_batches_repeat_with_the_seed(tiny_fmnist):
    data = load_dataset("fashion-mnist", data_dir=tiny_fmnist)
    net = NetworkConfig(block=REFERENCES["v1"], width=0.125)
    a = proxy_scores(net, data, "cpu", seed=3, batch_size=16)
    assert a == proxy_scores(net, data, "cpu", seed=3, batch_size=16)
    assert a != proxy_scores(net, data, "cpu", seed=4, batch_size=16)
    assert set(a) == set(PROXY_NAMES) and all(isinstance(v, float) for v in a.values())


# --- prescreen --------------------------------------------------------------------------------


def test_prescreen_without_cost_takes_the_best_score_earliest_on_ties():
    scores = [0.1, 0.7, 0.3, 0.7]
    chosen = prescreen(lambda i: i, 4, lambda i: scores[i])
    assert (chosen.choice, chosen.index, chosen.scores) == (1, 1, tuple(scores))


def test_prescreen_with_cost_passes_over_dominated_candidates_only():
    # (score, cost): 0 is beaten by 2 (better and smaller); 1 is not dominated; 2 neither.
    points = [(0.2, 50.0), (0.9, 90.0), (0.5, 40.0)]
    chosen = prescreen(lambda i: i, 3, lambda i: points[i][0], lambda i: points[i][1])
    assert chosen.index == 1  # the earliest non-dominated, not the best score per se
    points[1] = (0.9, 30.0)  # now 1 dominates everything
    assert prescreen(lambda i: i, 3, lambda i: points[i][0], lambda i: points[i][1]).index == 1
    points[0] = (0.2, 20.0)  # the smallest is never dominated: the sampler's first draw stands
    assert prescreen(lambda i: i, 3, lambda i: points[i][0], lambda i: points[i][1]).index == 0


def test_prescreen_skips_invalid_draws_and_refuses_bad_m():
    draws = [None, "a", None]
    chosen = prescreen(lambda i: draws[i], 3, lambda c: 1.0)
    assert chosen.choice == "a" and chosen.scores[0] == -math.inf
    assert prescreen(lambda i: None, 2, lambda c: 1.0).index == 0
    with pytest.raises(ValueError, match="m must be"):
        prescreen(lambda i: i, 0, float)


def _network(trial) -> NetworkConfig:
    return NetworkConfig(block=config_from_trial(trial))


def test_prescreener_queues_the_chosen_design_and_the_next_trial_takes_it():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    calls = []

    def score_fn(net, seed):  # a proxy that prefers small designs
        calls.append(net)
        return {"naswot": -float(network_params(net))}

    pre = Prescreener(
        m=4,
        network=_network,
        make_sampler=lambda seed: optuna.samplers.RandomSampler(seed=seed),
        score_fn=score_fn,
        target=2,
    )
    attr = pre(study)
    assert attr["m"] == 4 and len(attr["scores"]) == 4 and 0 <= attr["chosen"] < 4
    valid = [s for s in attr["scores"] if s is not None]
    assert attr["scores"][attr["chosen"]] == max(valid)  # with cost = params, also the smallest
    assert pre(study) is None  # one queued pre-screened trial at a time
    trial = study.ask()
    assert trial.user_attrs["prescreen"] == attr
    net = _network(trial)
    assert network_params(net) == attr["params"][attr["chosen"]]
    study.tell(trial, [0.5, network_params(net)])
    assert pre(study) is not None  # 1 done + 1 queued = target
    assert pre(study) is None
    study.tell(study.ask(), [0.5, 1.0])
    assert pre(study) is None  # target reached
    assert len(study.trials) == 2


def test_prescreener_keeps_one_queued_trial_per_worker():
    study = optuna.create_study(directions=["maximize", "minimize"])
    pre = Prescreener(
        2,
        _network,
        lambda n: optuna.samplers.RandomSampler(seed=n),
        score_fn=lambda net, seed: {"naswot": 0.0},
        max_waiting=3,
    )
    assert [pre(study) is not None for _ in range(4)] == [True, True, True, False]
    assert len({str(t.system_attrs["fixed_params"]) for t in study.trials}) == 3


def test_prescreener_with_m_1_does_nothing():
    study = optuna.create_study(directions=["maximize", "minimize"])
    pre = Prescreener(
        1,
        _network,
        lambda s: optuna.samplers.RandomSampler(seed=s),
        score_fn=lambda n, s: {"naswot": 0.0},
    )
    assert pre(study) is None and not study.trials
