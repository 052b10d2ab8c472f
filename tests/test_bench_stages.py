"""bench/stages.py: the arms it trains and how it reports them, on stored numbers (no training)."""

from __future__ import annotations

import dataclasses

import pytest

from bench._common import JsonState
from bench.stages import (
    TRANSFER_DESIGNS,
    arms,
    report,
    rule_answer,
    run_key,
    transfer_arms,
    transfer_report,
)
from explorer.analysis import compare
from search_space import REFERENCES, NetworkConfig, build_network, network_params


def test_rule_arms_change_one_stage_each():
    nets = arms()
    base = nets["v2"]
    assert base.stages == (1, 1, 1) and all(d == REFERENCES["v2"] for d in base.designs)
    for s in range(3):
        net = nets[f"asym@s{s}"]
        changed = [i for i in range(3) if net.stage_design(i) != base.stage_design(i)]
        assert changed == [s]
        assert net.stage_design(s).wide_kind == "asym" and net.stage_design(s).asym_n == 7
        model = build_network(net)
        assert sum(p.numel() for p in model.parameters()) == network_params(net)


def _fill(state, nets, accs):
    for arm, net in nets.items():
        for seed, acc in enumerate(accs[arm]):
            state.put(run_key(arm, net, "b", seed), {"test_acc": acc})


def test_rule_report_judges_each_stage_under_holm(tmp_path):
    nets = arms()
    state = JsonState(tmp_path / "runs.json")
    base = [0.850, 0.852, 0.849, 0.851]
    accs = {
        "v2": base,
        "asym@s0": [a - 0.010 + j for a, j in zip(base, (0.0, 0.0004, -0.0003, 0.0001))],
        "asym@s1": [a + 0.0001 * (-1) ** i for i, a in enumerate(base)],
        "asym@s2": [a + 0.012 + j for a, j in zip(base, (0.0002, -0.0001, 0.0003, 0.0))],
    }
    _fill(state, nets, accs)
    text = report(state, nets, "b", 4)
    lines = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("- stage")}
    assert lines["- stage 0 (28x28 grid)"].endswith("worse")
    assert "not distinguishable at 4 seeds" in lines["- stage 1 (14x14 grid)"]
    assert lines["- stage 2 (7x7 grid)"].endswith("better")
    # worse on the first grid, undecided on the medium one: the paper's rule is not shown here
    assert "**Answer:** the rule does not hold here at 4 seeds" in text


def test_rule_report_waits_for_two_whole_pairs(tmp_path):
    nets = arms()
    state = JsonState(tmp_path / "runs.json")
    _fill(state, nets, {arm: [0.85] for arm in nets})
    assert "no effect can be judged yet" in report(state, nets, "b", 3)


def test_rule_answer_says_holds_only_for_the_papers_pattern():
    worse, same, better = (
        compare([-0.01, -0.011, -0.009]),
        compare([0.01, -0.01]),
        compare([0.01, 0.011, 0.009]),
    )
    assert "holds here" in rule_answer([same, better, same], 3)
    assert "holds here" in rule_answer([worse, better, better], 3)
    assert "does not hold" in rule_answer([better, better, same], 3)
    assert "not distinguishable at 2 seeds in any stage" in rule_answer([same, same, same], 2)


@pytest.mark.parametrize(
    ("deeper_gap", "said"),
    [
        (0.02, "holds (better in both)"),
        (-0.02, "reversed (better in the search network, worse deeper)"),
    ],
)
def test_transfer_report_says_whether_the_order_holds(tmp_path, deeper_gap, said):
    nets = transfer_arms()
    assert len(nets) == 2 * (len(TRANSFER_DESIGNS) + 2)
    state = JsonState(tmp_path / "runs.json")
    noise = (0.0, 0.0003, -0.0002)
    accs = {}
    for arm in nets:
        gap = 0.0
        if arm.startswith("#"):
            gap = 0.02 if "search" in arm else deeper_gap
        accs[arm] = [0.85 + gap + (n if arm.startswith("#") else 0.0) for n in noise]
    _fill(state, nets, accs)
    text = transfer_report(state, nets, "b", 3)
    assert f"- #58 against v1: {said}" in text
    assert f"- #14 against v2: {said}" in text


def test_transfer_report_judges_each_network_at_the_seeds_it_has(tmp_path):
    nets = transfer_arms()
    state = JsonState(tmp_path / "runs.json")
    accs = {
        arm: ([0.87, 0.871, 0.869] if "search" in arm else [0.88])
        if arm.startswith("#")
        else ([0.85, 0.852, 0.851] if "search" in arm else [0.86])
        for arm in nets
    }
    _fill(state, nets, accs)
    text = transfer_report(state, nets, "b", 3)
    assert "- search (1,1), Holm over its 4 comparisons:" in text
    assert "  - #58 - v1: " in text and "at 3 seeds: better" in text
    assert "- deeper (2,2): 1 paired seed(s) finished, too few to judge yet" in text
    assert "Does the order found" not in text and "not judged until both networks" in text


def test_the_per_stage_fronts_wide_paths_are_counted_stage_by_stage():
    from types import SimpleNamespace

    from bench import strategies

    v1, v2 = REFERENCES["v1"], REFERENCES["v2"]
    asym = dataclasses.replace(v2, wide_kind="asym", asym_n=5)
    gone = dataclasses.replace(v2, wide=0, wide_reduce=0)
    front = [
        SimpleNamespace(network=NetworkConfig(block=b[0], stages=(1, 1, 1), stage_blocks=b))
        for b in ((v1, asym, v2), (v2, asym, gone))
    ]
    fronts = {("stages3-per-stage", 0): {10.0: (front, {}, [])}}
    lines = strategies.wide_path_lines(fronts, ["stages3-shared", "stages3-per-stage"], [0, 1],
                                       10.0, (1, 1, 1))  # fmt: skip
    assert "2 front designs over seeds 0,1" in lines[0]
    assert lines[2] == "| stage (grid) | 5x5 | asymmetric 1x5 | double 3x3 | none |"
    assert lines[4:7] == ["| 0 (28x28) | 1 | 0 | 1 | 0 |", "| 1 (14x14) | 0 | 2 | 0 | 0 |",
                          "| 2 (7x7) | 0 | 0 | 1 | 1 |"]  # fmt: skip
