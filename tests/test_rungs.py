"""Successive halving across budgets (`explorer.search.rungs`): budgets per rung, ranking, promotion,
references at every rung, the top rung as the study's result, retries of killed promotions."""

from __future__ import annotations

import dataclasses
import itertools
import random

import optuna
import pytest
from optuna.trial import TrialState

from explorer import search
from explorer import training as train
from explorer.analysis import rung_records
from explorer.search import rungs, summary
from explorer.store import (
    StudyConfig,
    TrialRecord,
    WorkerToken,
    open_storage,
    study_config,
    study_names,
)
from explorer.store.work import recover

# --------------------------------------------------------------------------------------------
# Budgets


def test_scaled_budget_names_and_rung_budgets():
    quick = train.BUDGETS["quick"]
    top = train.budget("quickx9")
    assert top.train_images == 9 * quick.train_images and top.epochs == quick.epochs
    assert dataclasses.replace(top, train_images=quick.train_images) == quick
    # A three-rung CPU search (--rungs 3): eta 3 up to quickx9, whose bottom rung is quick itself.
    assert train.default_budget("cpu", 3, 3) == "quickx9" and train.default_budget("cpu") == "quick"
    assert train.default_budget("cpu", 2, 4) == "quickx4"
    assert [train.rung_budget(top, k, 3, 3, 50_000).train_images for k in range(3)] == [
        1024, 3072, 9216
    ]  # fmt: skip
    assert train.rung_budget(top, 0, 3, 3, 50_000) == quick
    # The whole split: each rung below draws 1/eta of the rung above's images per epoch.
    standard = train.BUDGETS["standard"]
    assert train.rung_budget(standard, 2, 3, 3, 54_000) == standard
    assert train.rung_budget(standard, 1, 3, 3, 54_000).train_images == 18_000
    assert train.rung_budget(standard, 0, 3, 3, 54_000).train_images == 6_000
    assert train.budget("standardx2").epochs == 2 * standard.epochs
    for bad in ("quickx0", "fastx3", "quick9", "x3"):
        with pytest.raises(ValueError, match="quickx9"):
            train.budget(bad)


@pytest.mark.parametrize(
    ("name", "factor", "scaled"),
    [("quick", 10, "quickx10"), ("quickx9", 10, "quickx90"), ("standard", 10, "standardx10"),
     ("smokex2", 1, "smokex2"), ("quick", 1, "quick")],
)  # fmt: skip
def test_a_scaled_budget_name_reads_back_as_the_scaled_budget(name, factor, scaled):
    assert train.scaled_name(name, factor) == scaled
    assert train.budget(scaled) == train.scaled(train.budget(name), factor)
    long = train.long_budget(train.budget(name), factor)
    assert long == dataclasses.replace(train.budget(scaled), final_val_images=None)


def test_study_config_keeps_rungs_and_older_configs_read_as_one_rung():
    config = StudyConfig(dataset="fashion-mnist", width=0.25, split_seed=0, train_seed=0,
                         budget="quickx9", train_config={}, space="inception-block",
                         space_dims=(), objectives=("val_acc", "params"), sampler="tpe",
                         rungs=3, eta=3)  # fmt: skip
    data = config.to_dict()
    assert StudyConfig.from_dict(data) == config
    older = {k: v for k, v in data.items() if k not in ("rungs", "eta")}
    assert StudyConfig.from_dict(older).rungs == 1  # a study made before successive halving
    for bad in ({"rungs": 0}, {"rungs": 99}, {"eta": 1}):
        with pytest.raises(ValueError):
            StudyConfig.from_dict({**data, **bad})


# --------------------------------------------------------------------------------------------
# Ranking and promotion


def _record(number: int, acc: float, params: int, state: str = "COMPLETE", **kw) -> TrialRecord:
    return TrialRecord(number=number, state=state, val_acc=acc if state == "COMPLETE" else None,
                       params=params, curves={"val_acc": [acc]}, suggested={"x": number},
                       network=kw.pop("network", _NET), **kw)  # fmt: skip


def _net():
    from search_space import REFERENCES, NetworkConfig

    return NetworkConfig(block=REFERENCES["v1"])


_NET = _net()


def _dominates(a: TrialRecord, b: TrialRecord) -> bool:
    av, bv = (a.last_val_acc(), a.params), (b.last_val_acc(), b.params)
    return av[0] >= bv[0] and av[1] <= bv[1] and av != bv


def test_rank_order_is_non_dominated_sorting_with_crowding_ties():
    rng = random.Random(3)
    records = [_record(i, rng.uniform(0.3, 0.9), rng.randint(1_000, 90_000)) for i in range(40)]
    order = rungs.rank_order(records, ("val_acc", "params"))
    assert sorted(r.number for r in order) == list(range(40))
    # Recomputed by brute force: peel off the non-dominated set, front after front; no record
    # ever comes after one it dominates.
    position = {r.number: i for i, r in enumerate(order)}
    for a, b in itertools.permutations(records, 2):
        if _dominates(a, b):
            assert position[a.number] < position[b.number]
    first = [r for r in records if not any(_dominates(o, r) for o in records)]
    assert {r.number for r in order[: len(first)]} == {r.number for r in first}
    # Within the first front, the two extremes (most accurate, fewest parameters) come first.
    extremes = {
        max(first, key=lambda r: r.val_acc).number,
        min(first, key=lambda r: r.params).number,
    }
    assert {r.number for r in order[:2]} == extremes


def test_promotable_takes_the_best_floor_n_over_eta_not_yet_promoted():
    objectives = ("val_acc", "params")
    records = [
        _record(0, 0.90, 1_000),  # dominates everything
        _record(1, 0.80, 2_000),
        _record(2, 0.70, 3_000),
        _record(3, 0.60, 4_000),
        _record(4, 0.50, 5_000),
        _record(5, 0.40, 6_000),
        _record(6, 0.95, 500, reference="v1"),  # references are not candidates nor counted
        _record(7, 0.99, 100, skipped="infeasible: over"),  # neither are skipped designs
        _record(8, 0.90, 1_000, duplicate_of=0),  # nor copies of an earlier trial
    ]
    found = rungs.promotable(records, set(), 3, objectives)
    assert [(p.record.number, p.rank, p.among) for p in found] == [(0, 0, 6), (1, 1, 6)]
    assert [p.record.number for p in rungs.promotable(records, {0}, 3, objectives)] == [1]
    assert rungs.promotable(records[:2], set(), 3, objectives) == []  # floor(2/3) = 0
    # A design stopped early counts among the finished but is never promoted itself.
    stopped = [_record(0, 0.99, 100, state="PRUNED"), *records[1:6]]
    assert [p.record.number for p in rungs.promotable(stopped, set(), 3, objectives)] == [1]
    assert found[0].attrs(1) == {
        "rung": 1, "parent": 0, "promotion": {"from_rung": 0, "rank": 0, "among": 6}
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# A real search with two rungs


def _args(tmp_path, data, trials: int, *more: str) -> list[str]:
    return ["--trials", str(trials), "--budget", "smoke", "--rungs", "2", "--device", "cpu",
            "--data-dir", str(data), "--storage", str(tmp_path / "s.journal"), "--study", "t",
            "--workers", "1", "--quiet", "--no-proxies", "--verify-seeds", "0", *more]  # fmt: skip


@pytest.fixture(scope="module")
def two_rungs(tmp_path_factory, tiny_fmnist):
    """A seeded 7-design search at the smoke budget with two rungs (eta 3): rung 0 trains 1/3 of
    smoke's images, rung 1 (the top) smoke itself."""
    tmp_path = tmp_path_factory.mktemp("rungs")
    assert search.main(_args(tmp_path, tiny_fmnist, 7)) == 0
    storage = open_storage(str(tmp_path / "s.journal"))
    top = optuna.load_study(study_name="t", storage=storage)
    bottom = optuna.load_study(study_name="t@rung0", storage=storage)
    return tmp_path, storage, bottom, top


def test_two_rungs_layout_budgets_and_references(two_rungs):
    _, storage, bottom, top = two_rungs
    config = study_config(top)
    assert (config.rungs, config.eta, config.budget) == (2, 3, "smoke")
    assert study_config(bottom) == config  # a lower rung reads its study's settings
    assert study_names(storage) == ["t"]  # the rungs are not studies of their own to users
    assert sorted(study_names(storage, rungs=True)) == ["t", "t@rung0"]
    smoke = train.BUDGETS["smoke"].train_images
    for study, rung, images in ((bottom, 0, round(smoke / 3)), (top, 1, smoke)):
        records = [TrialRecord.from_trial(t) for t in study.trials]
        assert {r.rung for r in records} == {rung}
        assert {r.train_images for r in records if r.complete} == {images}
        refs = {r.reference for r in records if r.reference and r.complete}
        assert refs == {"v1", "v2"}  # at every rung, trained under that rung's budget
    searched = [t for t in bottom.trials if not t.user_attrs.get("reference")]
    assert len(searched) == 7 and all(t.state.is_finished() for t in searched)
    v1 = [
        t.values[0]
        for s in (bottom, top)
        for t in s.trials
        if t.user_attrs.get("reference") == "v1"
    ]
    assert v1[0] != v1[1]  # two budgets, two results


def test_promotions_are_only_of_the_best_third_when_they_were_made(two_rungs):
    _, _, bottom, top = two_rungs
    config = study_config(top)
    lower = {t.number: t for t in bottom.trials}
    promoted = [t for t in top.trials if t.user_attrs.get("parent") is not None]
    assert promoted, "no design was promoted"
    for t in promoted:
        parent = lower[t.user_attrs["parent"]]
        assert t.params == parent.params and parent.state == TrialState.COMPLETE
        # Recomputed: the rung-0 designs finished when this promotion was made.
        before = [
            TrialRecord.from_trial(o)
            for o in bottom.trials
            if o.state.is_finished() and o.datetime_complete <= t.datetime_start
        ]
        finished = rungs.finished_designs(before)
        order = [r.number for r in rungs.rank_order(finished, config.objectives)]
        rank = order.index(parent.number)
        assert rank < len(finished) // config.eta
        assert t.user_attrs["promotion"] == {"from_rung": 0, "rank": rank, "among": len(finished)}
    # At the end every design of rung 0's final best third has been promoted, each once.
    final = rungs.rank_order(
        rungs.finished_designs([TrialRecord.from_trial(o) for o in bottom.trials]),
        config.objectives,
    )
    best = {r.number for r in final[: len(final) // config.eta]}
    parents = [t.user_attrs["parent"] for t in promoted]
    assert best <= set(parents) and len(parents) == len(set(parents))


def test_the_top_rung_is_what_summary_export_and_dashboard_report(two_rungs, tmp_path):
    from explorer.analysis import pareto_front, study_records
    from explorer.export import main as export_main

    root, storage, bottom, top = two_rungs
    text = summary(top, str(root / "s.journal"))
    assert "rungs (eta 3), designs finished per rung: 0 (1/3 of smoke): 7 -> 1 (smoke): " in text
    front = [r for r in pareto_front(study_records(top), ("val_acc", "params")) if not r.reference]
    for r in front:
        assert f"\n{r.number:>7}  front " in text
    out = tmp_path / "best.py"
    assert export_main(["--storage", str(root / "s.journal"), "--study", "t", "--best", "-o",
                        str(out)]) == 0  # fmt: skip
    best = max((r for r in study_records(top) if r.complete and not r.reference),
               key=lambda r: r.val_acc)  # fmt: skip
    assert f"TRIAL{best.number}_CFG" in out.read_text()

    from app import data

    by_rung = rung_records(storage, top, study_config(top))
    assert sorted(by_rung) == [0, 1]
    counts = data.rung_counts_frame(by_rung, study_config(top))
    assert list(counts["designs finished"]) == [
        7,
        len([t for t in top.trials if t.user_attrs.get("parent") is not None]),
    ]
    path = data.design_path_frame(by_rung, 1, best.number)
    assert list(path["rung"]) == [0, 1] and path["promoted as"].iloc[1].startswith("#")
    assert path["last-epoch train loss"].notna().all()


def test_dashboard_page_shows_the_top_rung_and_switches_rungs(two_rungs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP

    root, _, bottom, top = two_rungs
    monkeypatch.setenv("EXPLORER_STORAGE", str(root / "s.journal"))
    monkeypatch.setenv("EXPLORER_STUDY", "t")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    [radio] = [r for r in at.radio if r.label == "Rung"]
    assert radio.value == 1  # the top rung by default
    trials = {m.label: m.value for m in at.metric}["Trials"]
    assert int(trials) == len(top.trials)
    radio.set_value(0).run()
    assert int({m.label: m.value for m in at.metric}["Trials"]) == len(bottom.trials)


def test_resuming_keeps_the_rungs_and_refuses_other_rungs(two_rungs, tiny_fmnist, capsys):
    root, *_ = two_rungs
    args = _args(root, tiny_fmnist, 7)
    code = search.main([a if a != "2" else "3" for a in args])  # --rungs 3
    assert code == 2 and "made with rungs=2, not 3" in capsys.readouterr().err
    with pytest.raises(ValueError, match="is a rung of study 't'"):
        search.SearchSettings(study="t@rung0")


def test_final_seeds_retrain_the_top_front_at_the_top_budget(two_rungs, tiny_fmnist):
    """``--final-seeds 2`` after the search: the top rung's front and v1/v2, seeds 0 and 1, at
    the top rung's budget; seed 0 is the search's own run again (training is seeded on a CPU).
    (Next to last in this file: it adds re-evaluations to the shared study.)"""
    from explorer.analysis import pareto_front, reeval_results, study_records

    root, _, _, top = two_rungs
    config = study_config(top)
    s = search.SearchSettings(study="t", storage=str(root / "s.journal"), final_seeds=2,
                              data_dir=str(tiny_fmnist), quiet=True)  # fmt: skip
    search.final_seeds(top, config, s, train.resolve_device("cpu"), s.storage)
    results = reeval_results(top)
    records = {r.number: r for r in study_records(top)}
    front = [r.number for r in pareto_front(list(records.values()), config.objectives)]
    refs = [n for n, r in records.items() if r.reference and r.complete]
    assert set(results) == set(front) | set(refs)
    for number, result in results.items():
        assert result.seeds == 2 and result.budget == "smoke"
        assert result.val_acc[0] == pytest.approx(records[number].val_acc, abs=1e-9)
    assert "(2x)" in summary(top, str(root / "s.journal"))


def test_a_killed_promotion_is_retried_once_with_its_tags(two_rungs, tiny_fmnist):
    """A worker dies while training a promotion: the next worker fails it as interrupted and
    queues the same design at the same rung once, with its parent and rank. (Runs last: it adds
    a failed promotion and its retry to the shared study.)"""
    root, storage, bottom, top = two_rungs
    url = str(root / "s.journal")
    done = next(t for t in top.trials if t.user_attrs.get("parent") is not None)
    # Make the promotion look killed: queue it again (as a promotion of the same parent) and
    # leave it RUNNING under a dead worker.
    record = TrialRecord.from_trial(bottom.trials[done.user_attrs["parent"]])
    rungs.promote(top, 1, rungs.Promotion(record, 0, 3))
    dead = WorkerToken(url)
    killed = top.ask()
    killed.set_user_attr("worker", dead.id)
    dead._file.close()
    assert recover(top, url) == [killed.number]
    retry = top.trials[-1]
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == killed.number
    assert retry.user_attrs["rung"] == 1 and retry.user_attrs["parent"] == record.number
    assert retry.user_attrs["promotion"] == {"from_rung": 0, "rank": 0, "among": 3}
    assert recover(top, url) == []  # once
    # The next run trains the retry and promotes nothing more.
    assert search.main(_args(root, tiny_fmnist, 7)) == 0
    top = optuna.load_study(study_name="t", storage=storage)
    assert top.trials[retry.number].state == TrialState.COMPLETE
    assert len(top.trials) == retry.number + 1
