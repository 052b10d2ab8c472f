"""Fronts and hypervolume on the study's own objectives, against a reference point taken from
the study's space and width, recomputed here by hand."""

from __future__ import annotations

import random

import pytest

from explorer.analysis import feasible, hypervolume, hypervolume_spec, pareto_front
from explorer.analysis.hypervolume import largest_design
from explorer.store import StudyConfig, TrialRecord
from search_space import DEFAULT_SPACE, REFERENCES, NetworkConfig, network_params


def _rec(n, acc, params, latency=1.0, flops=1e6, limits=None):
    net = NetworkConfig(block=REFERENCES["v1"])
    return TrialRecord(n, "COMPLETE", network=net, val_acc=acc, params=params, flops=flops,
                       latency_ms=latency, constraint_values=limits)  # fmt: skip


def _config(objectives=("val_acc", "params"), width=0.25, constraints=None):
    return StudyConfig(dataset="fashion-mnist", width=width, split_seed=0, train_seed=0,
                       budget="smoke", train_config={}, space="inception-block", space_dims=(),
                       objectives=objectives, sampler="tpe", constraints=constraints or {})  # fmt: skip


def test_reference_point_is_the_largest_design_of_the_space_at_the_study_width():
    small, _ = largest_design("fashion-mnist", 0.25)
    big, big_flops = largest_design("fashion-mnist", 0.5)
    assert big > small > 0 and big_flops > 0
    rng = random.Random(0)
    for _ in range(200):  # no design of the space is larger
        params = {}
        for d in DEFAULT_SPACE.dimensions:
            params[d.name] = rng.choice(d.values()) if d.active(params) else d.default
        try:
            block = DEFAULT_SPACE.config_from_params(params)
        except ValueError:
            continue
        assert network_params(NetworkConfig(block=block, width=0.25)) <= small
    spec = hypervolume_spec(_config(width=0.5))
    assert spec.reference == {"val_acc": 0.0, "params": float(big)}
    assert f"params {big:,}" in spec.describe()


def test_two_objective_hypervolume_by_hand():
    spec = hypervolume_spec(_config())
    p_ref = spec.reference["params"]
    a = _rec(0, 0.8, 10_000)
    b = _rec(1, 0.9, 40_000)
    dominated = _rec(2, 0.7, 50_000)
    expected = 0.8 * (40_000 - 10_000) / p_ref + 0.9 * (p_ref - 40_000) / p_ref
    assert hypervolume([a, b, dominated], spec) == pytest.approx(expected)
    assert hypervolume([], spec) == 0.0
    outside = _rec(3, 0.99, p_ref * 2)  # beyond the reference point: adds nothing
    assert hypervolume([a, b, outside], spec) == pytest.approx(expected)


def test_three_objective_hypervolume_uses_the_study_objectives():
    config = _config(("val_acc", "params", "latency_ms"))
    slow = _rec(1, 0.5, 20_000, latency=4.0)
    spec = hypervolume_spec(config, [slow])
    assert spec.reference["latency_ms"] == pytest.approx(4.4)
    one = _rec(0, 0.9, 10_000, latency=2.0)
    p_ref = spec.reference["params"]
    expected = 0.9 * (1 - 10_000 / p_ref) * (1 - 2.0 / 4.4)
    assert hypervolume([one], spec) == pytest.approx(expected)
    # a design dominated in (acc, params) but fastest is on the three-objective front
    fast = _rec(2, 0.85, 12_000, latency=0.5)
    assert {r.number for r in pareto_front([one, fast], config.objectives)} == {0, 2}
    assert {r.number for r in pareto_front([one, fast])} == {0}


def test_infeasible_designs_are_not_on_the_front():
    ok = _rec(0, 0.8, 10_000, limits=[-5.0])
    over = _rec(1, 0.95, 9_000, limits=[3.0])
    assert feasible(ok) and not feasible(over) and feasible(_rec(2, 0.1, 1))
    assert [r.number for r in pareto_front([ok, over])] == [0]
