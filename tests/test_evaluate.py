"""`python -m explorer.evaluate`: selection, real runs at the smoke budget, resuming, bad input."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from explorer import evaluate
from explorer.evaluate import Reeval, Target, main, reeval_results, select_targets
from explorer.storage import open_storage
from search_space import REFERENCES, NetworkConfig
from tests.helpers import make_study


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: one thread beats two on a busy machine (and leaves one free)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "s.journal"
    make_study(str(path), name="demo", n_search=6, weights=False)
    return path


@pytest.fixture
def study_path(template, tmp_path) -> str:
    """A fresh copy of one seeded study (a journal file copies whole)."""
    path = tmp_path / "s.journal"
    shutil.copyfile(template, path)
    return str(path)


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

    def args(seeds: int) -> list[str]:
        return [
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

    assert main(args(1)) == 0  # two real runs: the design and v1, seed 0
    results = reeval_results(_study(study_path))
    ref = next(t.number for t in _study(study_path).trials if t.user_attrs.get("reference") == "v1")
    assert set(results) == {n, ref}
    stored = _study(study_path).user_attrs[f"reeval:{n}"]
    assert stored["seeds"] == 1 and stored["budget"] == "smoke"
    assert len(stored["test_acc"]) == len(stored["val_acc"]) == 1
    assert all(0 <= a <= 1 for a in stored["test_acc"] + stored["val_acc"])
    assert stored["test_acc_mean"] == stored["test_acc"][0] and stored["test_acc_std"] == 0
    out = capsys.readouterr().out
    assert f"#{n}" in out and "#0 (v1)" in out and "± " in out

    calls: list[int] = []
    monkeypatch.setattr(evaluate, "train_and_test", fake_run(calls))
    assert main(args(1)) == 0
    assert calls == []  # every seed was already done
    assert main(args(3)) == 0
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
        study, targets, 1, "smoke", None, "cpu", restart=True, run=fake_run(calls)
    )
    assert calls == [0] and results[n].budget == "smoke" and results[n].test_acc == (0.4,)


def test_comparison_finds_the_best_design_no_larger_than_each_reference(study_path):
    v1, v2 = (Target(i, NetworkConfig(block=REFERENCES[r]), r) for i, r in enumerate(("v1", "v2")))
    small = Target(5, NetworkConfig(block=REFERENCES["v2"].scaled(0.5)))  # fewer params than v1
    middle = Target(6, NetworkConfig(block=REFERENCES["v2"].scaled(0.9)))  # between v1 and v2
    large = Target(7, NetworkConfig(block=REFERENCES["v2"].scaled(2.0)))  # more than both
    assert small.params < v1.params < middle.params < v2.params < large.params
    targets = [v1, v2, small, middle, large]
    results = {
        0: Reeval((0.80, 0.82), (0.8, 0.8), "smoke"),
        1: Reeval((0.84, 0.86), (0.8, 0.8), "smoke"),
        5: Reeval((0.81, 0.81), (0.8, 0.8), "smoke"),
        6: Reeval((0.70, 0.70), (0.7, 0.7), "smoke"),
        7: Reeval((0.99, 0.99), (0.9, 0.9), "smoke"),
    }
    found = {c.reference.reference: c for c in evaluate.comparisons(targets, results)}
    assert found["v1"].design is small and math.isclose(found["v1"].difference, 0.0)
    assert found["v2"].design is small  # middle is no larger but worse; large is larger
    assert math.isclose(found["v2"].difference, -0.04)
    assert math.isclose(found["v2"].standard_error, math.sqrt(0.0002 / 2))
    text = evaluate.report(_study(study_path), targets, results)
    assert "0.8500 ± 0.0141 (2 seeds, smoke)" in text
    assert "best design with no more parameters than v2: #5" in text


def test_dry_run_trains_nothing(study_path, capsys):
    assert main(["--storage", study_path, "--pareto", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "runs to train under budget long" in out
    assert not reeval_results(_study(study_path))


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "one of the arguments --pareto --trial --top is required"),
        (["--pareto", "--top", "2"], "not allowed with"),
        (["--top", "0"], "--top must be at least 1"),
        (["--pareto", "--seeds", "0"], "--seeds must be at least 1"),
        (["--pareto", "--budget", "forever"], "invalid choice"),
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
