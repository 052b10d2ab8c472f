"""`python -m explorer.evaluate --stages/--width/--stem`: the transfer check. Designs and the
references retrained in a bigger network, kept apart from the study's own re-evaluations, and the
search network's ordering against each reference judged again there by the tool's one rule."""

from __future__ import annotations

import random

import optuna
import pytest

from explorer import evaluate
from explorer.analysis import Reeval, reeval_results
from explorer.evaluate import main, select_targets
from explorer.evaluate.transfer import HOLDS, REVERSED, Shape, pairs, placed, transfer_prefix
from explorer.store import open_storage
from search_space import REFERENCES, NetworkConfig, network_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _study(path: str) -> optuna.Study:
    return optuna.load_study(study_name="demo", storage=open_storage(path, create=False))


def _smallest_design(path: str) -> int:
    trials = [t for t in _study(path).trials if "network" in t.user_attrs]
    designs = [t for t in trials if "reference" not in t.user_attrs]
    return min(designs, key=lambda t: t.user_attrs["params"]).number


def _rigged(calls: list):
    """A run whose test accuracy is set by the design and the network: the searched design beats
    v1 on the search network (one block per stage) and loses to it when the stages are deeper;
    v2 is the design's equal in both, up to seed noise."""

    def run(network: NetworkConfig, data, config, device, seed):
        calls.append((network.stages, network.width, seed))
        deep = network.stages != (1, 1)
        if network.block == REFERENCES["v1"]:
            acc = 0.80
        elif network.block == REFERENCES["v2"]:
            acc = 0.85
        else:
            acc = 0.75 if deep else 0.85
        noise = random.Random(f"{network.to_json()}/{seed}").uniform(-0.004, 0.004)
        return acc + noise, acc + noise

    return run


def _args(path: str, n: int, *extra: str) -> list[str]:
    return [
        "--storage", path, "--study", "demo", "--trial", str(n), "--seeds", "4", "--budget", "smoke",
        "--workers", "1", "--quiet", *extra,
    ]  # fmt: skip


def test_transfer_results_are_kept_apart_and_the_ordering_is_judged(
    study_path, monkeypatch, capsys
):
    n = _smallest_design(study_path)
    calls: list = []
    monkeypatch.setattr(evaluate.pool, "train_and_test", _rigged(calls))
    assert main(_args(study_path, n, "--stages", "2,2")) == 0
    # three designs (v1, v2, #n), four seeds, in each of the two networks
    runs = [((1, 1), 0.25, s) for s in range(4)] + [((2, 2), 0.25, s) for s in range(4)]
    assert sorted(calls) == sorted(runs * 3)
    study = _study(study_path)
    moved = transfer_prefix(NetworkConfig(block=REFERENCES["v1"], stages=(2, 2)))
    assert moved == "transfer:stages_2,2_width_0.25_stem_96:"
    search, transfer = reeval_results(study), reeval_results(study, moved)
    assert set(search) == set(transfer) and n in transfer and len(transfer) == 3
    assert transfer[n].test_acc_mean < 0.8 < search[n].test_acc_mean  # not mixed
    out = capsys.readouterr().out
    rows = out.splitlines()
    v1 = next(rows[i + 1] for i, row in enumerate(rows) if row.startswith("  vs v1:"))
    v2 = next(rows[i + 1] for i, row in enumerate(rows) if row.startswith("  vs v2:"))
    assert "transfer network" in v1 and "worse; ordering: reversed" in v1
    assert "at 4 seeds" in v1 and "[" in v1  # interval and seed count
    assert "ordering: no ordering to test" in v2
    assert "transfer network stages 2,2 width 0.25 stem 96" in out

    # a wider network is another transfer network: its results go elsewhere, the deeper one's stay
    calls.clear()
    assert main(_args(study_path, n, "--width", "0.5")) == 0
    # the search network's runs were stored: only the wider network trains
    assert sorted(calls) == sorted([((1, 1), 0.5, s) for s in range(4)] * 3)
    wider = reeval_results(_study(study_path), "transfer:stages_1,1_width_0.5_stem_96:")
    assert set(wider) == set(transfer)
    assert reeval_results(_study(study_path), moved) == transfer


def test_dry_run_counts_the_runs_of_both_networks(study_path, capsys):
    n = _smallest_design(study_path)
    assert main(_args(study_path, n, "--stem", "64", "--dry-run")) == 0
    assert "24 runs to train in 2 networks" in capsys.readouterr().out


def _verdict_pairs(search_diff: float, transfer_diff: float, seeds: int = 4):
    study_targets = [
        evaluate.Target("v1", NetworkConfig(block=REFERENCES["v1"]), "v1"),
        evaluate.Target(7, NetworkConfig(block=REFERENCES["v3"])),
    ]
    noise = [0.001 * (-1) ** s * (s + 1) for s in range(seeds)]

    def results(diff: float):
        base = tuple(0.8 + e for e in noise)
        design = tuple(0.8 + diff + 0.5 * e for e in noise)
        return {"v1": Reeval(base, base, "smoke"), 7: Reeval(design, design, "smoke")}

    (pair,) = pairs(study_targets, results(search_diff), results(transfer_diff))
    return pair


@pytest.mark.parametrize(
    "search, transfer, seeds, ordering",
    [
        (0.05, 0.04, 4, HOLDS),
        (-0.05, -0.04, 4, HOLDS),
        (0.05, -0.04, 4, REVERSED),
        (0.05, 0.0005, 4, "not distinguishable at 4 seeds"),
        (0.05, 0.04, 1, "no ordering to test (search network: not distinguishable at 1 seed)"),
    ],
)
def test_ordering_words(search, transfer, seeds, ordering):
    assert _verdict_pairs(search, transfer, seeds).ordering == ordering


def _per_stage_study(path: str) -> int:
    """A three-stage study whose one searched design has its own block per stage; its number."""
    study = optuna.create_study(
        study_name="demo", storage=open_storage(path), directions=["maximize", "minimize"]
    )
    study.set_user_attr("budget", "smoke")
    skeleton = NetworkConfig(block=REFERENCES["v2"], stages=(1, 1, 1))
    v1, v2, v3 = (REFERENCES[r] for r in ("v1", "v2", "v3"))
    nets = [
        ("v1", skeleton.with_designs([v1] * 3)),
        ("v2", skeleton.with_designs([v2] * 3)),
        (None, skeleton.with_designs([v2, v3, v2])),
    ]
    for ref, net in nets:
        attrs = {"network": net.to_dict(), "params": network_params(net), "val_acc": 0.8}
        if ref:
            attrs["reference"] = ref
        study.add_trial(
            optuna.trial.create_trial(values=[0.8, network_params(net)], user_attrs=attrs)
        )
    return len(nets) - 1


def test_a_per_stage_design_keeps_its_stages(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "s.journal")
    n = _per_stage_study(path)
    assert main(_args(path, n, "--stages", "2,2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 2 stages but the per-stage design has 3" in err[0]
    assert f"#{n}:" in err[0], err

    calls: list = []
    monkeypatch.setattr(evaluate.pool, "train_and_test", _rigged(calls))
    assert main(_args(path, n, "--stages", "2,2,2", "--seeds", "2")) == 0
    moved = reeval_results(_study(path), "transfer:stages_2,2,2_width_0.25_stem_96:")
    assert set(moved) == {0, 1, n}
    (target,) = placed(select_targets(_study(path), trials=[n], references=()), Shape((2, 2, 2)))
    assert target.network.designs == (REFERENCES["v2"], REFERENCES["v3"], REFERENCES["v2"])
    assert target.network.stages == (2, 2, 2)
    assert "s1[" in capsys.readouterr().out  # the design drawn stage by stage in the report


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--stages", "0,2"], "every stage needs at least one block"),
        (["--stages", "two"], "blocks per stage as integers separated by commas"),
        (["--width", "0"], "width must be in (0, 8]"),
        (["--stem", "0"], "stem_channels must be an integer"),
        (["--stages", "1,1"], "is the searched one"),
        (["--width", "0.5", "--references", "none"], "--references none leaves none"),
    ],
)
def test_bad_transfer_input_is_one_line_and_exit_2(study_path, capsys, extra, message):
    assert main(_args(study_path, _smallest_design(study_path), *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_real_runs_in_a_deeper_network(study_path, tiny_fmnist, capsys):
    n = _smallest_design(study_path)
    args = _args(study_path, n, "--stages", "1,2", "--references", "v1", "--seeds", "1")
    assert main([*args, "--data-dir", str(tiny_fmnist)]) == 0
    study = _study(study_path)
    moved = reeval_results(study, "transfer:stages_1,2_width_0.25_stem_96:")
    assert set(moved) == set(reeval_results(study)) and len(moved) == 2
    for result in moved.values():
        assert result.seeds == 1 and 0 <= result.test_acc[0] <= 1 and result.budget == "smoke"
    out = capsys.readouterr().out
    assert "vs v1:  search network" in out and "at 1 seed" in out


def test_a_reference_missing_from_a_per_stage_study_is_placed_per_stage(tmp_path):
    path = str(tmp_path / "s.journal")
    _per_stage_study(path)
    (v3,) = select_targets(_study(path), references=("v3",))
    assert v3.network.per_stage and len(v3.network.designs) == 3
    assert v3.network.designs[1] == REFERENCES["v3"]  # Inception v3's asymmetric middle grid
