"""Verified claims (`explorer.search.verification`): a search's claims against v1 and v2 are retrained
at ten times its budget, and the summary states only those that hold."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import os
import random
import time

import optuna
import pytest

from explorer import search
from explorer.analysis import reeval_results, study_records
from explorer.search import verification as V
from explorer.store import open_storage, study_config
from explorer.training import budget
from tests.helpers import journal_url, make_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def claimed(tmp_path):
    """A synthetic smoke study whose front holds two claims against v1 and two against v2."""
    study = make_study(str(tmp_path / "s.journal"), n_search=10, seed=4, weights=False)
    claims = V.search_claims(study_records(study))
    assert {c.reference.reference for c in claims} == {"v1", "v2"} and len(claims) == 4
    return study, claims


def test_claims_are_front_designs_no_larger_and_more_accurate(claimed):
    study, claims = claimed
    records = study_records(study)
    refs = {r.reference: r for r in records if r.reference}
    for c in claims:
        assert c.design.params <= refs[c.reference.reference].params
        assert c.design.val_acc > refs[c.reference.reference].val_acc
        assert c.holds is None  # nothing verified yet
    # every front design below a reference's size and above its accuracy is a claim
    from explorer.analysis import pareto_front

    front = [r for r in pareto_front(records, ("val_acc", "params")) if not r.reference]
    expected = {(r.number, name) for name, ref in refs.items() for r in front
                if r.params <= ref.params and r.val_acc > ref.val_acc}  # fmt: skip
    assert {(c.design.number, c.reference.reference) for c in claims} == expected


def _noise(seed: int, salt: int) -> float:
    """A small, seeded, design-specific wobble, so paired differences have a spread."""
    return random.Random(seed * 1000 + salt).gauss(0.0, 0.003)


def test_verification_races_claims_and_states_only_those_that_hold(claimed):
    """The claims the search scored highest first, each with its reference, at 10x the search
    budget with seeds from 100 (never one `explorer.evaluate` trains). Every claim starts with 3 paired
    seeds; a clear winner is decided there, a claimant below its reference stops there as
    futile, and a claim too close to call gets seeds up to the cap; the references' runs are
    shared. The results stay apart from `explorer.evaluate`'s re-evaluations."""
    study, claims = claimed
    config = study_config(study)
    designs = sorted({c.design.number: c.design for c in claims}.values(),
                     key=lambda r: (-r.val_acc, r.number))  # fmt: skip
    winner, close = designs[-1], designs[0]
    refs = sorted({c.reference.number: c.reference for c in claims}.values(),
                  key=lambda r: r.reference)  # fmt: skip
    trained = []

    def fake_run(network, data, train_config, device, seed):
        trained.append((network, train_config, seed))
        salt = next(i for i, r in enumerate(designs + refs) if r.network == network)
        base = 0.70 if any(network == r.network for r in refs) else 0.6
        if network == winner.network:
            base = 0.95
        if network == close.network and close != winner:
            base = 0.70 + 0.0005
        return base, base + _noise(seed, salt)

    checks = V.verify(
        study, config, 5, data=None, device="cpu", run=fake_run, url=journal_url(study)
    )
    nets = [n for n, _, _ in trained]
    # the strongest claim first: its references and its claimant, three seeds each, before any
    # other design trains; then the next claimant
    strongest = designs[0]
    its_refs = [r.network for r in refs if any(c.design == strongest and c.reference == r
                                               for c in claims)]  # fmt: skip
    first = its_refs + [strongest.network]
    assert nets[: 3 * len(first)] == first * 3
    second = [c.reference.network for c in claims if c.design == designs[1]] + [designs[1].network]
    assert nets[3 * len(first)] in second
    smoke = budget("smoke")
    assert all(cfg.train_images == 10 * smoke.train_images for _, cfg, _ in trained)
    assert min(seed for _, _, seed in trained) == V.VERIFY_FIRST_SEED == 100
    by = {(c.design.number, c.reference.reference): c for c in checks}
    for c in checks:
        if c.design == winner:
            assert c.status == V.HELD and c.seeds == 3 and c.state.verdict.word == "better"
        elif c.design == close:
            assert c.status == V.NOT_HELD and c.seeds in (3, 5)  # futile at 3 or capped at 5
        else:
            assert c.status == V.NOT_HELD and c.seeds == 3 and c.state.why in ("futile", "decided")
    assert all(c.holds is not None for c in checks)
    stored = reeval_results(study, V.VERIFY_PREFIX)
    assert {k for k in stored} == {r.number for r in refs + designs}
    assert {r.budget for r in stored.values()} == {"smokex10"}
    # a reference has as many seeds as its most-raced claim; no design more than the cap
    for r in refs:
        assert stored[r.number].seeds == max(c.seeds for c in checks if c.reference == r)
    assert max(r.seeds for r in stored.values()) <= 5
    assert reeval_results(study) == {}  # evaluate's own re-evaluations are untouched
    lines = search.report.claim_lines(study, config)
    assert lines[0].startswith("claims against v1/v2, raced at smokex10 (3 to 5 paired seeds")
    held = [c for c in checks if c.holds]
    assert f"{len(held)} of {len(checks)} held" in lines[0]
    for c in held:
        (line,) = [x for x in lines if x.startswith(f"  held: #{c.design.number} vs "
                                                    f"{c.reference.reference}:")]  # fmt: skip
        low, high = c.state.verdict.interval
        assert f"{c.state.verdict.mean:+.4f} [{low:+.4f}, {high:+.4f}] at 3 seeds: better" in line
    assert by  # every claim is listed once
    assert len([x for x in lines if x.startswith("  ")]) == len(checks)
    # a rerun trains nothing more: every run the race wanted is stored
    trained.clear()
    V.verify(study, config, 5, data=None, device="cpu", run=fake_run, url=journal_url(study))
    assert trained == []


def test_a_passed_deadline_leaves_claims_unverified_and_says_so(claimed):
    study, claims = claimed
    config = study_config(study)

    def never(*args):
        raise AssertionError("no run starts after the deadline")

    before = search.report.claim_lines(study, config)  # never verified: says how to verify
    assert len(before) == 2 and all(
        "not verified (--verify-seeds 8 races them" in x for x in before
    )
    checks = V.verify(
        study,
        config,
        8,
        None,
        "cpu",
        deadline=time.monotonic() - 1,
        run=never,
        url=journal_url(study),
    )
    assert [c.holds for c in checks] == [None] * len(claims)
    assert {c.status for c in checks} == {V.UNCHECKED}
    lines = search.report.claim_lines(study, config)
    assert len(lines) == 2 and all(
        "not verified: the race's share of the time ran out" in x for x in lines
    )


def test_no_run_starts_that_would_end_after_the_deadline(claimed):
    """With runs expected to take longer than the time left, the race starts none and says in
    one line that it cannot decide a claim in its share."""
    study, _ = claimed
    logged = []

    def never(*args):
        raise AssertionError("no run starts that would end after the deadline")

    V.verify(study, study_config(study), 8, None, "cpu", deadline=time.monotonic() + 50,
             run=never, log=logged.append, expected_s=100.0, url=journal_url(study))  # fmt: skip
    assert len(logged) == 1 and logged[0].startswith("verification skipped: 4 claim(s) need")


def test_a_race_cut_short_lists_its_open_claims_as_undecided(claimed):
    """A race stopped after its first seeds (the time ran out) states nothing it did not decide:
    an open claim is listed as undecided, not held."""
    from search_space import network_params

    study, claims = claimed
    config = study_config(study)
    calls = []

    def close_run(network, data, train_config, device, seed):
        calls.append(seed)
        return 0.7, 0.7 + (0.002 if any(network == c.design.network for c in claims) else 0.0) + (
            _noise(seed, network_params(network))
        )

    # 3 seeds of every design, then the deadline passes: nothing more starts
    V.verify(study, config, 3, None, "cpu", run=close_run, url=journal_url(study))
    checks = V.verified_claims(study, config, cap=8)
    assert {c.status for c in checks} <= {V.UNDECIDED, V.NOT_HELD}
    assert any(c.status == V.UNDECIDED for c in checks)
    study.set_user_attr(V.PLAN_ATTR, {"first": 3, "cap": 8})
    lines = search.report.claim_lines(study, config)
    assert any(x.startswith("  undecided (time ran out; not stated): #") for x in lines)
    assert not any(x.startswith("  held:") for x in lines)


def test_results_that_end_out_of_order_are_stored_without_gaps():
    from explorer.evaluate.pool import SeedOrder

    stored = {}
    order = SeedOrder(stored, "b", {})
    assert order.add("k", 1, 0.5, 0.6) is None  # seed 1 ended first: it waits for seed 0
    assert order.ended("k", 1) and not order.ended("k", 0) and order.have("k") == 0
    grown = order.add("k", 0, 0.4, 0.45)
    assert grown.test_acc == (0.45, 0.6) and stored["k"] == grown and order.have("k") == 2
    assert order.add("k", 2, 0.5, 0.5).seeds == 3


def test_the_verification_spreads_its_runs_over_worker_processes(tiny_fmnist):
    """Two worker processes train the runs (each loads the data itself), and results come back
    to the parent, which alone writes the study."""
    from explorer.evaluate.pool import DataSpec, Run, RunPool
    from search_space import REFERENCES, NetworkConfig

    net = NetworkConfig(block=REFERENCES["v1"], width=0.125)
    config = budget("smoke")
    results = []
    with RunPool(2, DataSpec("fashion-mnist", str(tiny_fmnist), 0), "cpu") as pool:
        for seed in range(4):
            pool.submit(Run("v1", net, config, seed))
        while pool.busy:
            results += list(pool.finished(timeout=60))
    assert sorted(r.run.seed for r in results) == [0, 1, 2, 3]
    assert len({r.worker for r in results}) == 2 and os.getpid() not in {r.worker for r in results}
    assert all(0.0 <= r.test_acc <= 1.0 for r in results)


def test_verify_budget_scales_the_top_budget_and_names_it():
    from explorer.store import StudyConfig

    quick = StudyConfig.from_study({"budget": "quick", "objectives": ["val_acc", "params"]})
    assert V.verify_budget(quick).name == "quickx10"
    assert V.verify_budget(quick).config.train_images == 10 * budget("quick").train_images
    top9 = dataclasses.replace(quick, budget="quickx9")
    assert V.verify_budget(top9).name == "quickx90"
    assert V.verify_budget(top9).config.train_images == 90 * budget("quick").train_images
    named = V.verify_budget(quick, "quickx3")
    assert named.name == "quickx3" and named.config == budget("quickx3")


def test_a_timed_search_leaves_a_quarter_of_its_time_to_the_verification(tmp_path, monkeypatch):
    """With --timeout and the default verification, the workers stop starting trials at 3/4 of
    it; with --verify-seeds 0 they get all of it."""
    seen = []

    def fake_worker(s, index, on_trial=None):
        seen.append(s.timeout)

    monkeypatch.setattr(search.session, "run_worker", fake_worker)
    monkeypatch.setattr(search.session, "verify_claims", lambda *a: None)
    monkeypatch.setattr(search.session.data_mod, "find_dataset", lambda *a: None)
    base = ["--storage", str(tmp_path / "s.journal"), "--study", "t", "--workers", "1",
            "--budget", "smoke", "--rungs", "1", "--quiet", "--timeout", "100"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert search.main(base) == 0  # the default: --verify-seeds 8
        assert search.main(base + ["--verify-seeds", "0"]) == 0
    assert seen == [pytest.approx(100 * (1 - V.VERIFY_SHARE)), 100]


def test_the_verification_gets_a_quarter_of_the_run():
    """With a timeout it runs until the run's deadline; without, as long as the search took."""
    assert V.verification_deadline(1000.0, 600.0, None) == pytest.approx(1600.0)
    assert V.verification_deadline(1000.0, 600.0, 1100.0) == 1100.0


def test_an_untimed_search_hands_the_verification_the_search_time(tmp_path, monkeypatch):
    """By default (no --timeout) the claims are verified after the search, which hands the
    verification the time it took; --verify-seeds 0 skips the verification."""
    seen, calls = [], []

    def slow_worker(s, index, on_trial=None):
        time.sleep(0.3)

    def deadline(now, search_s, run_deadline):
        seen.append((search_s, run_deadline))
        return now + search_s / 3

    monkeypatch.setattr(search.session, "run_worker", slow_worker)
    monkeypatch.setattr(search.session, "verification_deadline", deadline)
    monkeypatch.setattr(search.session, "verify_claims", lambda *a: calls.append(a[-2]))
    monkeypatch.setattr(search.session.data_mod, "find_dataset", lambda *a: None)
    base = ["--storage", str(tmp_path / "s.journal"), "--study", "t", "--workers", "1",
            "--budget", "smoke", "--rungs", "1", "--quiet"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert search.main(base) == 0  # the default: --verify-seeds 8
        assert search.main(base + ["--verify-seeds", "0"]) == 0
    assert len(seen) == len(calls) == 1
    search_s, run_deadline = seen[0]
    assert run_deadline is None and search_s >= 0.3
    assert calls[0] > time.monotonic() - 60  # a deadline, on the monotonic clock


def test_a_verified_search_end_to_end(tmp_path, tiny_fmnist):
    """A real smoke search with --verify-seeds 2 (at smoke, to stay cheap): every claim its summary
    makes was retrained there (both sides), and the summary's claim lines say verified."""
    storage = str(tmp_path / "s.journal")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = search.main(["--storage", storage, "--study", "t", "--trials", "4",
                            "--budget", "smoke", "--rungs", "1", "--workers", "1", "--seed", "1",
                            "--data-dir", str(tiny_fmnist), "--no-weights", "--quiet",
                            "--verify-seeds", "2", "--verify-budget", "smoke", "--timeout", "900"])  # fmt: skip
    assert code == 0
    study = optuna.load_study(study_name="t", storage=open_storage(storage))
    checks = V.verified_claims(study, study_config(study))
    stored = reeval_results(study, V.VERIFY_PREFIX)
    for c in checks:
        assert c.status != V.UNCHECKED and c.seeds == 2
        assert stored[c.design.number].budget == "smoke"
    assert ("raced at smoke (2 to 2 paired seeds" in out.getvalue()) == bool(checks)
    assert "not verified" not in out.getvalue()
    assert checks  # this seeded search makes a claim (design 2 against v1), so it was verified


def test_a_design_proposed_again_is_one_claimant(claimed):
    """A copy of a claimant (the sampler proposed the design again; the copy reused its result)
    is on the front beside it, but is neither a second claim nor retrained again."""
    study, claims = claimed
    first = study.trials[claims[0].design.number]
    study.add_trial(
        optuna.trial.create_trial(
            params=first.params, distributions=first.distributions, values=first.values,
            user_attrs={**first.user_attrs, "duplicate_of": first.number},
        )
    )  # fmt: skip
    again = V.search_claims(study_records(study))
    assert [(c.design.number, c.reference.number) for c in again] == [
        (c.design.number, c.reference.number) for c in claims
    ]
    trained = []
    V.verify(study, study_config(study), 2, None, "cpu",
             run=lambda net, *a: trained.append(net) or (0.5, 0.5), url=journal_url(study))  # fmt: skip
    counts = collections.Counter(n.to_json() for n in trained)
    assert set(counts.values()) == {2}  # each design its two seeds, the copy none of its own


def test_a_failed_run_leaves_its_claims_undecided_and_the_race_goes_on(claimed):
    """A verification run that raises (out of memory, say) is logged in one line; that design gets
    no more runs, its claims stay undecided, and the other claims are still raced."""
    study, claims = claimed
    config = study_config(study)
    broken = claims[0].design
    logged = []

    def run(network, data, train_config, device, seed):
        if network == broken.network:
            raise RuntimeError("out of memory")
        return 0.7, 0.7 + _noise(seed, 3)

    checks = V.verify(
        study, config, 3, None, "cpu", run=run, log=logged.append, url=journal_url(study)
    )
    assert sum("failed (RuntimeError: out of memory)" in line for line in logged) == 1
    for c in checks:
        if c.design == broken:
            assert c.status == V.UNCHECKED
        else:
            assert c.status != V.UNCHECKED
