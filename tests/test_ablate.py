"""`python -m explorer.ablate`: ladders one field group apart, paired statistics, real smoke runs
stored beside the study, resuming a killed ablation, workers at once, bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from explorer import ablate
from explorer.ablate import leave_one_out, path_ladder
from explorer.ablate.ladder import GROUPS, Design, changed_groups
from explorer.ablate.stats import interaction, paired
from explorer.store import ablation_study_name, open_storage, study_names
from search_space import (
    DEFAULT_SPACE,
    REFERENCES,
    NetworkConfig,
    config_from_trial,
    reference_network,
)
from tests.helpers import make_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks: one thread is faster

ROOT = Path(__file__).resolve().parents[1]


def _design(name: str) -> Design:
    return Design(name, NetworkConfig(block=REFERENCES[name]))


def _random_designs(n: int, seed: int) -> list[Design]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    while len(out) < n:
        trial = study.ask()
        try:
            block = config_from_trial(trial)
        except ValueError:  # fewer than two branches
            continue
        out.append(Design(f"r{len(out)}", NetworkConfig(block=block)))
    return out


def _check_one_group_per_step(ladder) -> None:
    for step in ladder.steps:
        before, after = ladder.designs[step.before], ladder.designs[step.after]
        assert changed_groups(before.block, after.block) == [step.group], ladder.label(step)
        assert DEFAULT_SPACE.contains(after.block) and DEFAULT_SPACE.contains(before.block)


# ---------------------------------------------------------------------------------------------
# Ladders


def test_v1_to_v2_changes_one_group_per_step_with_both_orders_of_bn_and_factorization():
    ladder = path_ladder(_design("v1"), _design("v2"))
    _check_one_group_per_step(ladder)
    assert [d.name for d in ladder.designs][0] == "v1" and ladder.designs[-1].name == "v2"
    assert ladder.designs[-1].block == REFERENCES["v2"]
    main = [s for s in ladder.steps if s.order == "main"]
    assert [s.group for s in main] == ["bn", "factorization", "widths", "pool"]
    for a, b in zip(main, main[1:], strict=False):  # the main path is one chain from v1 to v2
        assert a.after == b.before
    other = [s for s in ladder.steps if s.order == "other"]
    assert [s.group for s in other] == ["factorization", "bn"]
    start, with_bn, with_fact, both = ladder.factorial
    assert (start, both) == (main[0].before, main[1].after)
    assert (
        ladder.designs[with_bn].block.bn == "post"
        and ladder.designs[with_bn].block.wide_kind == "5x5"
    )
    assert ladder.designs[with_fact].block.bn == "none"
    assert ladder.designs[with_fact].block.wide_kind == "double3x3"
    assert ladder.designs[with_fact].block.wide == REFERENCES["v1"].wide  # at v1's widths
    assert len(ladder.designs) == 6


def test_paths_between_random_designs_change_one_group_per_step_and_arrive():
    designs = _random_designs(40, seed=3)
    for a, b in zip(designs[::2], designs[1::2], strict=True):
        if not changed_groups(a.block, b.block):
            continue
        ladder = path_ladder(a, b)
        _check_one_group_per_step(ladder)
        end = ladder.designs[[s for s in ladder.steps if s.order == "main"][-1].after]
        assert not changed_groups(end.block, b.block)


def test_leave_one_out_reverts_one_group_of_the_winner_at_a_time():
    for winner in _random_designs(12, seed=5):
        for ref in ("v1", "v2"):
            base = _design(ref)
            groups = changed_groups(winner.block, base.block)
            if not groups:
                continue
            ladder = leave_one_out(winner, base)
            _check_one_group_per_step(ladder)
            assert [s.group for s in ladder.steps] == groups
            assert all(s.after == 0 for s in ladder.steps)  # every step ends at the winner


def test_nearest_reference_differs_in_fewest_groups():
    v2_with_max_pool = Design("w", NetworkConfig(block=REFERENCES["v2"].__class__(
        **{**REFERENCES["v2"].to_dict(), "pool_type": "max"})))  # fmt: skip
    assert ablate.nearest(v2_with_max_pool, [_design("v1"), _design("v2")]).name == "v2"


def test_unused_fields_are_no_difference():
    a = REFERENCES["v1"].__class__(**{**REFERENCES["v1"].to_dict(), "pool_proj": 0})
    b = a.__class__(**{**a.to_dict(), "pool_type": "avg"})
    assert changed_groups(a, b) == []
    assert set(GROUPS) == {"bn", "factorization", "widths", "pool"}


# ---------------------------------------------------------------------------------------------
# Statistics


def test_paired_difference_and_standard_error_are_recomputed():
    before = {0: 0.80, 1: 0.82, 2: 0.78, 3: 0.5}
    after = {0: 0.85, 1: 0.86, 2: 0.84}
    p = paired(before, after)
    diffs = [0.05, 0.04, 0.06]
    assert p.n == 3 and p.mean == pytest.approx(statistics.fmean(diffs))
    assert p.se == pytest.approx(statistics.stdev(diffs) / math.sqrt(3))
    low, high = p.interval
    assert (
        p.text() == f"+{statistics.fmean(diffs):.4f} [{low:+.4f}, {high:+.4f}] at 3 seeds: better"
    )
    assert paired(before, after, seeds=2).n == 2


def test_a_difference_the_t_test_does_not_carry_has_no_sign():
    p = paired({0: 0.80, 1: 0.80, 2: 0.80}, {0: 0.83, 1: 0.78, 2: 0.80})
    assert not p.decided
    assert p.text().endswith(": not distinguishable at 3 seeds")
    # 2.5 standard errors over 3 seeds: signed by a 2-SE bar, not by the t-test on 2 df
    wide = paired({0: 0.8, 1: 0.8, 2: 0.8}, {0: 0.804, 1: 0.807, 2: 0.816})
    assert wide.mean / wide.se > 2.4 and not wide.decided
    one = paired({0: 0.8}, {0: 0.9})
    assert not one.decided and "not distinguishable at 1 seed" in one.text()


def test_a_ladders_steps_are_judged_together():
    """Holm across the steps: a step that passes alone can lose its sign in the ladder."""
    strong = paired({0: 0.8, 1: 0.8, 2: 0.8, 3: 0.8}, {0: 0.81, 1: 0.811, 2: 0.8105, 3: 0.8102})
    weak = paired({0: 0.8, 1: 0.8, 2: 0.8, 3: 0.8}, {0: 0.81, 1: 0.82, 2: 0.815, 3: 0.805})
    assert strong.decided and weak.decided
    judged = ablate.judge([strong, weak, weak])
    assert judged[0].decided and not judged[1].decided and not judged[2].decided


def test_interaction_is_the_difference_of_differences_seed_by_seed():
    start, bn, fact, both = {0: 0.5, 1: 0.6}, {0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6}, {0: 0.7, 1: 0.75}
    got = interaction(start, bn, fact, both)
    expected = [(both[s] - fact[s]) - (bn[s] - start[s]) for s in (0, 1)]
    assert got.differences == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# Real runs


def _args(path: str, data: Path, *extra: str) -> list[str]:
    return ["--storage", path, "--budget", "smoke", "--data-dir", str(data), "--quiet", *extra]


def _ablation(path: str) -> optuna.Study:
    return optuna.load_study(
        study_name=ablation_study_name("demo"), storage=open_storage(path, create=False)
    )


def test_a_seeded_smoke_ladder_is_stored_beside_the_study_and_resumes_with_more_seeds(
    study_path, tiny_fmnist, monkeypatch, capsys
):
    assert ablate.main(_args(study_path, tiny_fmnist, "--seeds", "1", "--winner", "none")) == 0
    out = capsys.readouterr().out
    abl = _ablation(study_path)
    done = [t for t in abl.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 6 and {t.user_attrs["seed"] for t in done} == {0}
    (stored,) = ablate.stored_ladders(abl)
    _check_one_group_per_step(stored.ladder)
    by_key = {t.user_attrs["run_key"]: t for t in done}
    for design, key in zip(stored.ladder.designs, stored.keys(), strict=True):
        assert NetworkConfig.from_dict(by_key[key].user_attrs["network"]) == design.network
    assert "batch norm: none -> post" in out and "pool type: max pool -> avg pool" in out
    assert "not distinguishable at 1 seed" in out  # one seed never gives a sign
    assert study_names(study_path) == ["demo"]  # the ablation study stays out of study lists

    calls = []

    def fake(network, data, config, device, seed):
        calls.append(seed)
        return 0.5 + seed / 100, 0.4 + seed / 100

    monkeypatch.setattr(ablate.runs, "train_and_test", fake)
    assert ablate.main(_args(study_path, tiny_fmnist, "--seeds", "2", "--winner", "none")) == 0
    assert calls == [1] * 6  # seed 0 of every design was stored: only seed 1 trains


def test_reevaluated_seeds_of_the_same_design_and_recipe_are_reused(study_path, tiny_fmnist):
    study = optuna.load_study(study_name="demo", storage=open_storage(study_path, create=False))
    budget = ablate.cli.resolve_budget(study, "smoke")
    v1 = next(t.number for t in study.trials if t.user_attrs.get("reference") == "v1")
    study.set_user_attr(f"reeval:{v1}", {"test_acc": [0.6, 0.61], "val_acc": [0.5, 0.51],
        "seeds": 2, "budget": "smoke", "train_config": budget.config.to_dict()})  # fmt: skip
    calls = []
    worker = ablate.Worker(
        ablate.open_ablation(open_storage(study_path), study_path, study), study, study_path,
        budget, lambda: None, "cpu", train=lambda n, d, c, dev, s: calls.append(n) or (0.5, 0.5),
    )  # fmt: skip
    ladder = path_ladder(*(ablate.cli.Designs(study).reference(r) for r in ("v1", "v2")))
    stored = ablate.StoredLadder(ladder, "smoke", budget.config.to_dict(), 2)
    runs = worker.work(ablate.units([stored], 2))
    assert len(calls) == 10 and ladder.designs[0].network not in calls  # v1's two seeds reused
    assert runs.test[stored.keys()[0]] == {0: 0.6, 1: 0.61}


def _ablate_process(path: str, data: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "explorer.ablate", *_args(path, data, *extra)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _trials(path: str, name: str = "demo") -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(path, create=False)
    try:
        return optuna.load_study(study_name=ablation_study_name(name), storage=storage).trials
    except KeyError:
        return []


def test_a_killed_ablation_resumes_without_retraining_what_finished(study_path, tiny_fmnist):
    extra = ("--seeds", "1", "--winner", "none")
    proc = _ablate_process(study_path, tiny_fmnist, *extra)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        trials = _trials(study_path)
        finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if len(finished) >= 2 and running and "worker" in running[0].user_attrs:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the ablation never had two finished runs and one running")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t.datetime_complete for t in finished}
    killed = running[0].user_attrs["run_key"]

    again = _ablate_process(study_path, tiny_fmnist, *extra)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    trials = _trials(study_path)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    keys = [t.user_attrs["run_key"] for t in complete]
    assert len(complete) == 6 and len(set(keys)) == 6  # each design once
    for t in complete:
        if t.number in before:
            assert t.datetime_complete == before[t.number]  # finished runs kept as they were
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.user_attrs["run_key"] for t in failed] == [killed]  # the killed run, failed once
    (retry,) = [t for t in complete if t.user_attrs["run_key"] == killed]
    assert retry.user_attrs["attempt"] == 2  # retried exactly once
    assert retry.user_attrs["retry_of"] == failed[0].number
    assert "died" in retry.user_attrs["retry_reason"]
    assert len(trials) == 7 and "v1 -> v2" in out


@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_workers_started_at_once_train_each_run_once(storage, tmp_path, tiny_fmnist, request):
    if storage == "postgresql":
        path = request.getfixturevalue("postgres_url")
    else:
        path = str(tmp_path / "s.journal")
    make_study(path, name="demo", n_search=2, weights=False)
    extra = ("--seeds", "1", "--winner", "none")
    procs = [_ablate_process(path, tiny_fmnist, *extra) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    trials = _trials(path)
    keys = [t.user_attrs["run_key"] for t in trials]
    assert len(trials) == 6 and len(set(keys)) == 6  # no run trained twice, none lost
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both trained some of them
    assert all("v1 -> v2" in out for out, _ in outs)  # both waited for the whole ladder


# ---------------------------------------------------------------------------------------------
# Bad input


def _fails(capsys, argv: list[str], words: str) -> None:
    assert ablate.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m explorer.ablate: error:"), err
    assert words in err[0], err[0]


def test_bad_input_is_one_line_and_exit_2(study_path, tiny_fmnist, tmp_path, capsys):
    base = _args(study_path, tiny_fmnist, "--dry-run")
    _fails(capsys, [*base, "--to", "999"], "has no trial 999")
    _fails(capsys, [*base, "--winner", "12345"], "has no trial 12345")
    _fails(capsys, [*base, "--seeds", "0"], "--seeds must be at least 1")
    _fails(capsys, [*base, "--budget", "huge"], "unknown budget 'huge'")
    _fails(capsys, [*base, "--to", "nowhere"], "is not a reference")
    _fails(capsys, [*base, "--to", "v1"], "are the same design")
    _fails(capsys, [*base, "--study", "nope"], "no study named 'nope'")
    other = NetworkConfig(block=REFERENCES["v2"], image_size=32, in_channels=3)
    (tmp_path / "cifar.json").write_text(other.to_json())
    _fails(capsys, [*base, "--to", str(tmp_path / "cifar.json")], "comes from another space")
    outside = {**REFERENCES["v2"].to_dict(), "wide_kind": "3x3"}
    (tmp_path / "outside.json").write_text(json.dumps(outside))
    _fails(
        capsys, [*base, "--to", str(tmp_path / "outside.json")], "not a point of the search space"
    )
    (tmp_path / "broken.json").write_text("{")
    _fails(capsys, [*base, "--to", str(tmp_path / "broken.json")], "cannot read")
    _fails(capsys, [*base, "--storage", str(tmp_path / "missing.journal")], "")


def test_dry_run_lists_designs_and_trains_nothing(study_path, tiny_fmnist, capsys):
    argv = _args(study_path, tiny_fmnist, "--dry-run", "--seeds", "2", "--winner", "none")
    assert ablate.main(argv) == 0
    out = capsys.readouterr().out
    assert "v1 -> v2" in out and "12 of 12 runs to train" in out
    assert _trials(study_path) == []


def _add_design(study: optuna.Study, block, val_acc: float) -> int:
    net = NetworkConfig(block=block)
    study.enqueue_trial(DEFAULT_SPACE.params_from_config(block))
    trial = study.ask()
    params = ablate.ladder.network_params(net)
    for key, value in {"network": net.to_dict(), "params": params, "val_acc": val_acc}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, [val_acc, params])
    return trial.number


def test_the_winner_is_the_best_search_design_no_larger_than_v2(study_path, capsys):
    study = optuna.load_study(study_name="demo", storage=open_storage(study_path, create=False))
    v2 = REFERENCES["v2"]
    small = v2.__class__(**{**v2.to_dict(), "ch3x3": 32, "pool_type": "max"})
    smaller = v2.__class__(**{**v2.to_dict(), "ch3x3": 16})
    big = v2.__class__(**{**v2.to_dict(), "ch1x1": 192})
    _add_design(study, big, 0.99)  # the best, but larger than v2
    best = _add_design(study, small, 0.95)
    _add_design(study, smaller, 0.90)
    designs = ablate.cli.Designs(study)
    assert designs.winner().name == f"#{best}"
    assert ablate.main(["--storage", study_path, "--dry-run", "--to", "none"]) == 0
    out = capsys.readouterr().out
    # its nearest reference is v2 (two groups apart): one step per group
    assert f"#{best} leave-one-out against v2" in out
    assert f"#{best} with v2's branch widths" in out and f"#{best} with v2's pool type" in out


def test_nothing_to_measure_says_why_in_one_line(study_path, capsys):
    # the seeded study has no search design no larger than v2, so no winner, and no path asked
    _fails(capsys, ["--storage", study_path, "--to", "none", "--dry-run"],
           "nothing to measure: no leave-one-out: the study has no complete search design")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Per-stage designs


def _per_stage(name: str, *designs) -> Design:
    skeleton = NetworkConfig(block=designs[0], stages=(1,) * len(designs))
    return Design(name, skeleton.with_designs(designs))


def _check_one_stage_group_per_step(ladder) -> None:
    for step in ladder.steps:
        before, after = ladder.designs[step.before], ladder.designs[step.after]
        assert step.stage is not None, ladder.label(step)
        assert ablate.ladder.changes(before.network, after.network) == [(step.stage, step.group)]
        assert ladder.label(step).startswith(f"stage {step.stage + 1}: ")
        assert all(DEFAULT_SPACE.contains(d) for d in after.network.designs)


def test_a_per_stage_path_changes_one_group_of_one_stage_per_step():
    v2, v3 = REFERENCES["v2"], REFERENCES["v3"]
    v1 = REFERENCES["v1"]
    start, end = _per_stage("a", v2, v2, v1), _per_stage("b", v2, v3, v2)
    ladder = path_ladder(start, end)
    _check_one_stage_group_per_step(ladder)
    assert [(s.stage, s.group) for s in ladder.steps] == [
        (1, "factorization"), (2, "bn"), (2, "factorization"), (2, "widths"), (2, "pool"),
    ]  # fmt: skip
    assert ladder.designs[-1].name == "b" and ladder.designs[-1].network.designs == (v2, v3, v2)
    assert ladder.label(ladder.steps[0]) == "stage 2: factorized wide path: double3x3 -> 1x7+7x1"
    assert ladder.factorial is None
    assert ablate.Ladder.from_dict(json.loads(json.dumps(ladder.to_dict()))) == ladder


def test_a_per_stage_winner_against_v2_placed_per_stage_reverts_one_stage_group_at_a_time():
    v2 = REFERENCES["v2"]
    odd = v2.__class__(**{**v2.to_dict(), "wide_kind": "asym", "asym_n": 3, "bn": "pre"})
    winner = _per_stage("#9", v2, odd, v2)
    baseline = Design("v2", reference_network("v2", winner.network))
    ladder = leave_one_out(winner, baseline)
    _check_one_stage_group_per_step(ladder)
    assert [(s.stage, s.group) for s in ladder.steps] == [(1, "bn"), (1, "factorization")]
    assert [d.name for d in ladder.designs[1:]] == [
        "#9 with v2's stage 2 batch norm", "#9 with v2's stage 2 factorized wide path",
    ]  # fmt: skip
    assert all(s.after == 0 for s in ladder.steps)


def test_a_shared_ladder_is_stored_as_before():
    ladder = path_ladder(_design("v1"), _design("v2"))
    assert all(s.stage is None and "stage" not in s.to_dict() for s in ladder.steps)
    assert not any(d.network.per_stage for d in ladder.designs)


def test_a_shared_design_goes_to_a_per_stage_one_stage_by_stage():
    v1, v2 = REFERENCES["v1"], REFERENCES["v2"]
    shared = Design("v1", NetworkConfig(block=v1, stages=(1, 1)))
    ladder = path_ladder(shared, _per_stage("b", v1, v2))
    _check_one_stage_group_per_step(ladder)
    assert {s.stage for s in ladder.steps} == {1}


def test_a_per_stage_study_ablates_stage_by_stage(tmp_path, capsys):
    path = str(tmp_path / "s.journal")
    make_study(path, n_search=4, weights=False, stages=(1, 1, 1), per_stage=True)
    study = optuna.load_study(study_name="demo", storage=open_storage(path, create=False))
    n = next(t.number for t in study.trials if t.state.name == "COMPLETE" and t.number > 1)
    argv = ["--storage", path, "--study", "demo", "--dry-run", "--from", "v2", "--to", str(n)]
    assert ablate.main([*argv, "--winner", "none"]) == 0
    out = capsys.readouterr().out
    assert f"v2 -> #{n}" in out and "s2[" in out  # designs listed stage by stage
    # a design from a two-stage network does not fit the three-stage study
    (tmp_path / "two.json").write_text(NetworkConfig(block=REFERENCES["v2"]).to_json())
    _fails(capsys, [*argv[:-2], "--to", str(tmp_path / "two.json")], "comes from another space")
