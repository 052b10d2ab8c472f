"""The one verdict rule (`explorer.analysis.verdicts`): a paired t-test over seeds, Holm across a
family, a race split over its looks; its error rates recomputed on small simulated tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from explorer.analysis import verdicts as V


@pytest.mark.parametrize("seed", range(5))
def test_the_p_value_and_interval_are_the_paired_t_tests(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.86, 0.005, 4), rng.normal(0.865, 0.005, 4)
    v = V.compare(b - a)
    assert v.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue)
    low, high = v.interval
    ci = stats.ttest_rel(b, a).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high))
    assert v.decided == (v.p_value < 0.05) == (low > 0 or high < 0)


def test_words_sign_only_what_the_rule_carries():
    assert V.compare([0.010, 0.012, 0.008]).word == "better"
    assert V.compare([-0.010, -0.012, -0.008]).word == "worse"
    # 2.5 standard errors over 3 seeds: a normal 2-SE bar signs it, the t-test on 2 df does not
    d = [0.0040, 0.0070, 0.0160]
    v = V.compare(d)
    assert abs(v.mean) / v.se == pytest.approx(2.5, abs=0.05)
    assert v.word == "not distinguishable at 3 seeds" and not v.decided
    assert V.compare([0.02]).word == "not distinguishable at 1 seed"
    assert V.compare([]).text() == "no paired seeds yet"
    assert V.compare(d).text().startswith("+0.0090 [-0.0")


def test_paired_takes_the_seeds_both_sides_ran_in_seed_order():
    assert V.paired({0: 0.5, 1: 0.6, 2: 0.7}, {1: 0.65, 0: 0.52, 5: 0.9}) == pytest.approx(
        (0.02, 0.05)
    )
    assert V.paired({0: 0.5, 1: 0.6}, {0: 0.6, 1: 0.7}, seeds=1) == pytest.approx((0.1,))


def test_holm_steps_down_and_stops_at_the_first_undecided():
    # p-values about 0.00002, 0.037 and 0.03: alone all three are below 0.05
    family = [V.compare([0.01, 0.011, 0.0105, 0.0102]), V.compare([0.01, 0.02, 0.015, 0.004]),
              V.compare([0.01, 0.02, 0.015, 0.005])]  # fmt: skip
    ps = [v.p_value for v in family]
    assert all(p < 0.05 for p in ps)
    assert sum(v.decided for v in V.holm(family)) == 1  # the second smallest misses 0.05 / 2
    judged = V.holm(family)
    order = np.argsort(ps)
    assert judged[order[0]].alpha == pytest.approx(0.05 / 3)
    expected = []
    stepping = True
    for rank, i in enumerate(order):  # the textbook step-down, recomputed
        stepping = stepping and ps[i] <= 0.05 / (3 - rank)
        expected.append((i, stepping))
    assert [(i, judged[i].decided) for i in order] == expected
    with pytest.raises(ValueError, match="m must be at least"):
        V.holm(family, m=2)


def _race(family_means, sd, plan, rng, reps):
    """Simulate `reps` live races of claims with true differences `family_means` and normal
    seed noise `sd`; returns (rate stated better per claim, mean seeds per claim)."""
    better = np.zeros(len(family_means))
    seeds = np.zeros(len(family_means))
    for _ in range(reps):
        draws = [mu + sd * rng.standard_normal(plan.cap) for mu in family_means]
        have = [plan.first] * len(draws)
        while True:
            states = V.race_verdicts([d[:h] for d, h in zip(draws, have)], plan)
            open_ = [i for i, s in enumerate(states) if not s.stopped]
            if not open_:
                break
            for i in open_:
                have[i] += 1
        better += [s.held for s in states]
        seeds += have
    return better / reps, seeds / reps


def test_a_race_of_equal_designs_states_few_false_claims():
    """A/A: a design exactly as good as its reference is stated better in at most 5% of races
    (the rule's bound is 2.5%: a two-sided 5%), for one claim and for a family of four."""
    rng = np.random.default_rng(0)
    plan = V.RacePlan(3, 8)
    alone, seeds = _race([0.0], 0.005, plan, rng, 600)
    assert alone[0] <= 0.05 and 3 <= seeds[0] <= 8
    family, _ = _race([0.0] * 4, 0.005, plan, rng, 200)
    assert family.mean() <= 0.05


def test_a_race_finds_most_true_differences_of_one_point():
    """Power: a true +0.01 at a paired seed spread of 0.004 (about what pairing leaves at
    quickx10, BENCHMARKS.md) is stated better in at least 80% of races capped at 8 seeds."""
    rng = np.random.default_rng(1)
    power, seeds = _race([0.01], 0.004, V.RacePlan(3, 8), rng, 300)
    assert power[0] >= 0.8 and seeds[0] < 6


def test_a_race_replays_what_it_decided():
    """A claim decided at an early look stays decided when another claim's later seeds arrive,
    and a claim whose mean is at or below zero stops as futile."""
    plan = V.RacePlan(3, 5)
    clear = [0.02, 0.021, 0.019]
    loser = [-0.01, 0.0, -0.005]
    close = [0.004, -0.002, 0.006, 0.001, 0.003]
    states = V.race_verdicts([clear, loser, close], plan)
    assert [s.why for s in states] == ["decided", "futile", "cap"]
    assert states[0].held and not states[2].held
    assert states[0].verdict.alpha == pytest.approx(0.05 / 3 / 3)
    early = V.race_verdicts([clear, loser, close[:3]], plan)
    assert early[2].why == "open" and early[0].why == "decided"
    with pytest.raises(ValueError, match="first must be 2..cap"):
        V.RacePlan(1, 8)


def test_one_rule_in_words():
    assert "paired t-test" in V.RULE and "Holm" in V.RULE and "5%" in V.RULE
    assert math.isclose(V.ALPHA, 0.05)


def test_a_stored_plan_or_result_is_untrusted():
    """A race's cap is bounded (a stored plan of 10^9 seeds would replay for ever), and a stored
    re-evaluation with a non-finite accuracy is rejected, so readers skip that entry."""
    from explorer.analysis import Reeval

    with pytest.raises(ValueError, match="cap must be at most"):
        V.RacePlan(3, 10**9)
    with pytest.raises(ValueError, match="finite"):
        Reeval.from_dict({"test_acc": [0.8, float("nan")], "val_acc": [0.8, 0.8], "budget": "b"})
