"""`python -m explorer.evaluate`: selection, real runs at the smoke budget, resuming, bad input."""

from __future__ import annotations

import dataclasses
import math
import statistics
import subprocess
import sys

import optuna
import pytest

from explorer import evaluate
from explorer import training as train
from explorer.analysis import Reeval, reeval_results
from explorer.evaluate import Target, main, select_targets
from explorer.store import open_storage
from explorer.usage import UsageError
from search_space import REFERENCES, NetworkConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks: one thread is faster


def _study(path: str) -> optuna.Study:
    return optuna.load_study(study_name="demo", storage=open_storage(path, create=False))


def _smallest_design(path: str) -> int:
    """The smallest searched design with a stored network (a pruned one may be retrained too)."""
    trials = [t for t in _study(path).trials if "network" in t.user_attrs]
    designs = [t for t in trials if "reference" not in t.user_attrs]
    return min(designs, key=lambda t: t.user_attrs["params"]).number


def fake_run(calls: list):
    def run(network, data, config, device, seed):
        calls.append(seed)
        return 0.5 + seed / 100, 0.4 + seed / 100

    return run


def test_real_runs_then_resume_then_more_seeds(study_path, tiny_fmnist, monkeypatch, capsys):
    n = _smallest_design(study_path)

    def args(seeds: int, *extra: str) -> list[str]:
        return [
            *extra,
            "--storage",
            study_path,
            "--trial",
            str(n),
            "--references",
            "v1",
            "--seeds",
            str(seeds),
            "--budget",
            "smoke",
            "--data-dir",
            str(tiny_fmnist),
            "--quiet",
        ]

    assert main(args(1)) == 0  # two real runs: the design and v1, seed 0, on the worker processes
    results = reeval_results(_study(study_path))
    ref = next(t.number for t in _study(study_path).trials if t.user_attrs.get("reference") == "v1")
    assert set(results) == {n, ref}
    stored = _study(study_path).user_attrs[f"reeval:{n}"]
    assert stored["seeds"] == 1 and stored["budget"] == "smoke"
    assert len(stored["test_acc"]) == len(stored["val_acc"]) == 1
    assert all(0 <= a <= 1 for a in stored["test_acc"] + stored["val_acc"])
    assert stored["test_acc_mean"] == stored["test_acc"][0] and stored["test_acc_std"] == 0
    assert stored["val_acc_mean"] == stored["val_acc"][0] and stored["val_acc_std"] == 0
    assert stored["train_config"] == train.BUDGETS["smoke"].to_dict()
    out = capsys.readouterr().out
    assert f"#{n}" in out and "#0 (v1)" in out and "± " in out

    calls: list[int] = []
    monkeypatch.setattr(evaluate.pool, "train_and_test", fake_run(calls))
    assert main(args(1, "--workers", "1")) == 0
    assert calls == []  # every seed was already done
    assert main(args(3, "--workers", "1")) == 0
    assert calls == [1, 2, 1, 2]  # only the new seeds, for each design
    again = _study(study_path).user_attrs[f"reeval:{n}"]
    assert (
        again["test_acc"] == pytest.approx([stored["test_acc"][0], 0.41, 0.42])
        and again["seeds"] == 3
    )
    assert math.isclose(again["test_acc_mean"], sum(again["test_acc"]) / 3)


def test_pareto_selects_the_front_and_references(study_path):
    study = _study(study_path)
    targets = select_targets(study, pareto=True)
    assert [t.reference for t in targets[:2]] == ["v1", "v2"]
    designs = targets[2:]
    assert designs and all(t.reference is None for t in designs)
    assert [t.params for t in designs] == sorted(t.params for t in designs)


def test_top_k_and_a_reference_missing_from_the_study(study_path):
    study = _study(study_path)
    top = select_targets(study, top=2, references=("v3",))
    assert top[0].key == "v3" and top[0].reference == "v3"  # no v3 trial: built in the skeleton
    accs = [t.search_val_acc for t in top[1:]]
    assert len(accs) == 2 and accs == sorted(accs, reverse=True)


def test_stored_results_of_another_budget_are_kept_unless_restart(study_path, tiny_fmnist, capsys):
    study = _study(study_path)
    n = _smallest_design(study_path)
    study.set_user_attr(f"reeval:{n}", Reeval((0.7,), (0.71,), "quick").to_dict())
    base = [
        "--storage",
        study_path,
        "--trial",
        str(n),
        "--references",
        "none",
        "--seeds",
        "1",
        "--budget",
        "smoke",
        "--data-dir",
        str(tiny_fmnist),
    ]
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget 'quick'" in err[0] and "--restart" in err[0]
    calls: list[int] = []
    targets = select_targets(study, trials=[n], references=())
    results = evaluate.reevaluate(
        study, targets, 1, "smoke", None, "cpu", restart=True, run=fake_run(calls), url=study_path
    )
    assert calls == [0] and results[n].budget == "smoke" and results[n].test_acc == (0.4,)


def _targets() -> tuple[Target, ...]:
    v1, v2 = (Target(i, NetworkConfig(block=REFERENCES[r]), r) for i, r in enumerate(("v1", "v2")))
    small = Target(5, NetworkConfig(block=REFERENCES["v2"].scaled(0.5)))  # fewer params than v1
    middle = Target(6, NetworkConfig(block=REFERENCES["v2"].scaled(0.9)))  # between v1 and v2
    large = Target(7, NetworkConfig(block=REFERENCES["v2"].scaled(2.0)))  # more than both
    assert small.params < v1.params < middle.params < v2.params < large.params
    return v1, v2, small, middle, large


def test_comparison_chooses_on_validation_and_reports_a_paired_test_difference(study_path):
    v1, v2, small, middle, large = targets = _targets()
    # (test per seed, validation per seed). `middle` has the best test accuracy of the designs
    # no larger than v2 but a worse validation accuracy than `small`: choosing on test would
    # pick it; choosing on validation must not.
    results = {
        0: Reeval((0.80, 0.82, 0.78), (0.80, 0.80, 0.80), "smoke"),
        1: Reeval((0.84, 0.86, 0.83), (0.85, 0.85, 0.85), "smoke"),
        5: Reeval((0.81, 0.81, 0.80), (0.82, 0.83, 0.84), "smoke"),
        6: Reeval((0.90, 0.91, 0.92), (0.81, 0.81, 0.81), "smoke"),
        7: Reeval((0.99, 0.99, 0.99), (0.99, 0.99, 0.99), "smoke"),  # larger than both
    }
    found = {c.reference.reference: c for c in evaluate.comparisons(targets, results)}
    assert found["v1"].design is small  # the only design no larger than v1
    assert found["v2"].design is small  # best validation, though middle has the best test

    # The verdict against v2, by hand from the per-seed numbers: design minus reference, seed by
    # seed, then the mean and the standard error of that mean.
    diffs = [0.81 - 0.84, 0.81 - 0.86, 0.80 - 0.83]
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
    c = found["v2"]
    assert c.paired_seeds == 3
    assert c.differences == pytest.approx(diffs)
    assert math.isclose(c.verdict.mean, mean) and math.isclose(c.verdict.se, se)
    # Paired, not the unpaired standard error of two means: the seeds move together here.
    unpaired = math.sqrt(
        statistics.variance(results[5].test_acc) / 3 + statistics.variance(results[1].test_acc) / 3
    )
    assert not math.isclose(c.verdict.se, unpaired)
    # the two references' verdicts are one Holm family: the smaller p-value at 0.05 / 2
    assert sorted(v.verdict.alpha for v in found.values())[0] == pytest.approx(0.025)

    text = evaluate.report(_study(study_path), targets, results)
    assert "0.8433 ± 0.0153 (3 seeds, smoke)" in text
    assert "chosen on re-evaluation validation accuracy" in text
    assert "test accuracy is only reported, never used to choose" in text
    assert f"vs v2 (#1, {v2.params:,} params): #5 ({small.params:,} params)" in text
    assert f"paired difference {c.verdict.text()}" in text
    assert c.verdict.text().startswith(f"{mean:+.4f} [")


def test_comparison_pairs_only_the_seeds_both_ran():
    v1, _, small, _, _ = _targets()
    results = {
        0: Reeval((0.80, 0.82), (0.8, 0.8), "smoke"),
        5: Reeval((0.81, 0.85, 0.60), (0.8, 0.8, 0.8), "smoke"),  # a third seed v1 lacks
    }
    (c,) = evaluate.comparisons([v1, small], results)
    assert c.paired_seeds == 2
    assert math.isclose(c.verdict.mean, ((0.81 - 0.80) + (0.85 - 0.82)) / 2)
    one = {0: Reeval((0.80,), (0.8,), "smoke"), 5: Reeval((0.81,), (0.8,), "smoke")}
    (c,) = evaluate.comparisons([v1, small], one)
    assert c.paired_seeds == 1 and math.isnan(c.verdict.se)
    assert "not distinguishable at 1 seed (no interval)" in evaluate.report(
        optuna.create_study(study_name="x"), [v1, small], one
    )


@pytest.mark.parametrize("name", ["smoke", "quick", "standard"])
def test_long_budget_is_ten_times_the_studys_own(study_path, name):
    base = train.BUDGETS[name]
    long = train.long_budget(base)
    images = (base.train_images or 50_000) * base.epochs  # any split size: both scale alike
    long_images = (long.train_images or 50_000) * long.epochs
    assert long_images == 10 * images
    same = ("optimizer", "lr", "schedule", "batch_size", "augment", "weight_decay")
    assert all(getattr(long, f) == getattr(base, f) for f in same)
    assert long.final_val_images is None  # selection uses the whole validation split

    study = _study(study_path)
    study.set_user_attr("budget", name)
    budget = evaluate.resolve_budget(study, "long")
    assert budget.config == long
    assert budget.text.startswith(f"10x the study's {name} budget: ")
    if base.train_images is None:
        assert f"the whole training split x {base.epochs * 10} epochs" in budget.text
    else:
        assert f"{base.train_images * 10:,} training images x {base.epochs} epochs" in budget.text
    assert f"at batch {base.batch_size}" in budget.text


def _store_train_config(study, train_config: dict) -> None:
    """Give a study the whole-budget settings a study made by today's search has."""
    from explorer.store import StudyConfig

    legacy = StudyConfig.from_study(study.user_attrs)
    config = dataclasses.replace(legacy, train_config=train_config, sampler="tpe", legacy=False)
    study.set_user_attr("config", config.to_dict())


def test_long_budget_reads_a_stored_train_config(study_path):
    study = _study(study_path)
    custom = dataclasses.replace(train.BUDGETS["quick"], epochs=3, seed=4)
    _store_train_config(study, custom.to_dict())  # wins over the budget name
    budget = evaluate.resolve_budget(study, "long")
    assert budget.config == train.long_budget(custom)
    assert "the study's searched budget" in budget.text
    _store_train_config(study, dataclasses.replace(train.BUDGETS["smoke"], seed=3).to_dict())
    assert "the study's smoke budget" in evaluate.resolve_budget(study, "long").text
    _store_train_config(study, {"epochs": 0})
    with pytest.raises(UsageError, match="epochs"):
        evaluate.resolve_budget(study, "long")


def test_long_budget_of_a_multi_rung_study_is_ten_times_its_top_rung(study_path):
    from explorer.store import StudyConfig

    study = _study(study_path)
    top = dataclasses.replace(train.budget("quickx9"), seed=0)
    legacy = StudyConfig.from_study(study.user_attrs)
    config = dataclasses.replace(legacy, budget="quickx9", train_config=top.to_dict(), rungs=3,
                                 sampler="tpe", legacy=False)  # fmt: skip
    study.set_user_attr("config", config.to_dict())
    budget = evaluate.resolve_budget(study, "long")
    assert budget.config == train.long_budget(top)
    assert budget.config.train_images == 10 * 9 * train.BUDGETS["quick"].train_images
    assert budget.text.startswith("10x the study's quickx9 budget: 92,160 training images")
    # And a scaled preset by name, as the benchmarks re-evaluate at 10 x quick.
    assert evaluate.resolve_budget(study, "quickx10").config == train.budget("quickx10")


def test_older_stored_results_still_read_but_old_long_is_not_extended(study_path, capsys):
    """Entries older code wrote (no validation means, no train config) parse, and are
    re-evaluated from scratch rather than extended under today's ``long``."""
    old = {
        "test_acc_mean": 0.5,
        "test_acc_std": 0.0,
        "test_acc": [0.5],
        "val_acc": [0.6],
        "seeds": 1,
        "budget": "long",
    }
    study = _study(study_path)
    n = _smallest_design(study_path)
    study.set_user_attr(f"reeval:{n}", old)
    r = reeval_results(study)[n]
    assert r == Reeval((0.5,), (0.6,), "long") and r.val_acc_mean == 0.6
    targets = select_targets(study, trials=[n], references=())
    assert evaluate.runs_needed(study, targets, 1, "long") == 1
    args = ["--storage", study_path, "--trial", str(n), "--references", "none", "--dry-run"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "another definition of budget 'long'" in err and "--restart" in err


def test_dry_run_trains_nothing(study_path, capsys):
    assert main(["--storage", study_path, "--pareto", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "runs to train under budget long (10x the study's smoke budget: 5,120 training" in out
    assert not reeval_results(_study(study_path))


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "one of the arguments --pareto --trial --top is required"),
        (["--pareto", "--top", "2"], "not allowed with"),
        (["--top", "0"], "--top must be at least 1"),
        (["--pareto", "--seeds", "0"], "--seeds must be at least 1"),
        (["--pareto", "--budget", "forever"], "unknown budget 'forever'"),
        (["--pareto", "--references", "v9"], "unknown reference(s) v9"),
        (["--trial", "999"], "has no trial 999"),
        (["--pareto", "--study", "nope"], "no study named 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(study_path, capsys, args, message):
    assert main(["--storage", study_path, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_cli_process_exit_2_on_a_missing_storage(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "explorer.evaluate",
            "--pareto",
            "--storage",
            str(tmp_path / "none.journal"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no study storage" in proc.stderr


def test_reeval_results_skips_malformed_entries(study_path):
    study = _study(study_path)
    study.set_user_attr("reeval:3", {"test_acc": [0.5], "val_acc": []})
    study.set_user_attr("reeval:v1", Reeval((0.5,), (0.6,), "long").to_dict())
    assert reeval_results(study) == {"v1": Reeval((0.5,), (0.6,), "long")}
