"""Verified claims (`explorer.search.verification`): a search's claims against v1 and v2 are retrained
at ten times its budget, and the summary states only those that hold."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time

import optuna
import pytest

from explorer import search
from explorer.analysis import reeval_results, study_records
from explorer.search import verification as V
from explorer.store import open_storage, study_config
from explorer.training import budget
from tests.helpers import make_study

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


def test_verification_retrains_claimants_and_states_only_claims_that_hold(claimed):
    """References first, then the claimants the search scored highest, at 10x the search budget
    with seeds from 100 (never one `explorer.evaluate` trains); a claim holds
    when the claimant's retrained test accuracy is above its reference's; the results stay apart
    from `explorer.evaluate`'s re-evaluations."""
    study, claims = claimed
    config = study_config(study)
    winner = min((c.design for c in claims), key=lambda r: r.params)
    trained = []

    def fake_run(network, data, train_config, device, seed):
        trained.append((network, train_config, seed))
        if network.block == winner.block:
            return 0.95, 0.95
        return (0.70, 0.70) if any(network == c.reference.network for c in claims) else (0.6, 0.6)

    checks = V.verify(study, config, 1, data=None, device="cpu", run=fake_run)
    nets = [n for n, _, _ in trained]
    refs = sorted({c.reference.number: c.reference for c in claims}.values(),
                  key=lambda r: r.reference)  # fmt: skip
    designs = sorted({c.design.number: c.design for c in claims}.values(),
                     key=lambda r: (-r.val_acc, r.number))  # fmt: skip
    assert nets == [r.network for r in refs] + [r.network for r in designs]
    smoke = budget("smoke")
    assert all(cfg.train_images == 10 * smoke.train_images for _, cfg, _ in trained)
    assert {seed for _, _, seed in trained} == {V.VERIFY_FIRST_SEED} == {100}
    held = {(c.design.number, c.reference.reference) for c in checks if c.holds}
    assert held == {(winner.number, c.reference.reference) for c in claims if c.design == winner}
    assert all(c.holds is not None for c in checks)
    stored = reeval_results(study, V.VERIFY_PREFIX)
    assert {k for k in stored} == {r.number for r in refs + designs}
    assert {r.budget for r in stored.values()} == {"smokex10"}
    assert reeval_results(study) == {}  # evaluate's own re-evaluations are untouched
    lines = search.report.claim_lines(study, config)
    for name in sorted({c.reference.reference for c in claims}):
        mine = [c for c in checks if c.reference.reference == name]
        wins = [c for c in mine if c.holds]
        (line,) = [x for x in lines if f"scored above {name} " in x]
        assert line.startswith("verified at smokex10 (1 seed(s), test accuracy): ")
        assert f"{len(wins)} of {len(mine)} front design(s)" in line
        assert all(f"#{c.design.number} 0.9500 vs 0.7000" in line for c in wins)
    # a rerun trains nothing more: every run is stored
    trained.clear()
    V.verify(study, config, 1, data=None, device="cpu", run=fake_run)
    assert trained == []


def test_a_passed_deadline_leaves_claims_unverified_and_says_so(claimed):
    study, claims = claimed
    config = study_config(study)

    def never(*args):
        raise AssertionError("no run starts after the deadline")

    checks = V.verify(study, config, 1, None, "cpu", deadline=time.monotonic() - 1, run=never)
    assert [c.holds for c in checks] == [None] * len(claims)
    lines = search.report.claim_lines(study, config)
    assert len(lines) == 2 and all("not verified (--verify 1" in x for x in lines)


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
    """With --timeout and the default --verify 1, the workers stop starting trials at 3/4 of
    it; with --verify 0 they get all of it."""
    seen = []

    def fake_worker(s, index, on_trial=None):
        seen.append(s.timeout)

    monkeypatch.setattr(search.cli, "run_worker", fake_worker)
    monkeypatch.setattr(search.cli, "verify_claims", lambda *a: None)
    monkeypatch.setattr(search.cli.data_mod, "find_dataset", lambda *a: None)
    base = ["--storage", str(tmp_path / "s.journal"), "--study", "t", "--workers", "1",
            "--budget", "smoke", "--rungs", "1", "--quiet", "--timeout", "100"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert search.main(base) == 0  # the default: --verify 1
        assert search.main(base + ["--verify", "0"]) == 0
    assert seen == [pytest.approx(100 * (1 - V.VERIFY_SHARE)), 100]


def test_a_claim_holds_only_beyond_the_seed_spread_of_a_difference():
    """The margin is the spread of the difference of two single runs, recomputed from the
    3-seed retrainings at quickx10 that BENCHMARKS.md records, and shrinks with more seeds."""
    import math
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "BENCHMARKS.md").read_text()
    sds = []
    for title in ("Re-evaluation of the default study's front (long budget)",
                  "Successive halving: does the front hold? (3 rungs)"):  # fmt: skip
        start = text.index(f"## {title}\n")
        section = text[start : text.find("\n## ", start + 3)]
        sds += [float(sd) for sd in re.findall(r"\| 0\.\d{4} ± (0\.\d{4}) \|\s*$", section, re.M)]
    assert len(sds) >= 30
    per_run = math.sqrt(sum(sd * sd for sd in sds) / len(sds))
    assert V.VERIFY_MARGIN == pytest.approx(per_run * math.sqrt(2), abs=0.0005)
    assert V.claim_margin(4) == pytest.approx(V.VERIFY_MARGIN / 2)
    ref, design = object(), object()
    check = lambda d, r, n=1: V.ClaimCheck(design, ref, d, r, n).holds  # noqa: E731
    assert check(0.880, 0.870) is True
    assert check(0.875, 0.870) is False  # within the spread of two single runs: not stated
    assert check(0.875, 0.870, n=4) is True  # 0.005 beyond 0.0035, the spread of 4-seed means
    assert check(0.860, 0.870) is False and check(None, 0.870) is None


def test_the_verification_gets_a_quarter_of_the_run():
    """With a timeout it runs until the run's deadline; without, a third of the search's time
    (so search and verification split the run 3:1, as with --timeout)."""
    assert V.verification_deadline(1000.0, 600.0, None) == pytest.approx(1200.0)
    assert V.verification_deadline(1000.0, 600.0, 1100.0) == 1100.0


def test_an_untimed_search_verifies_for_a_third_of_its_time(tmp_path, monkeypatch):
    """By default (no --timeout) the claims are verified after the search, which hands the
    verification the time it took; --verify 0 skips the verification."""
    seen, calls = [], []

    def slow_worker(s, index, on_trial=None):
        time.sleep(0.3)

    def deadline(now, search_s, run_deadline):
        seen.append((search_s, run_deadline))
        return now + search_s / 3

    monkeypatch.setattr(search.cli, "run_worker", slow_worker)
    monkeypatch.setattr(search.cli, "verification_deadline", deadline)
    monkeypatch.setattr(search.cli, "verify_claims", lambda *a: calls.append(a[-1]))
    monkeypatch.setattr(search.cli.data_mod, "find_dataset", lambda *a: None)
    base = ["--storage", str(tmp_path / "s.journal"), "--study", "t", "--workers", "1",
            "--budget", "smoke", "--rungs", "1", "--quiet"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert search.main(base) == 0  # the default: --verify 1
        assert search.main(base + ["--verify", "0"]) == 0
    assert len(seen) == len(calls) == 1
    search_s, run_deadline = seen[0]
    assert run_deadline is None and search_s >= 0.3
    assert calls[0] > time.monotonic() - 60  # a deadline, on the monotonic clock


def test_a_verified_search_end_to_end(tmp_path, tiny_fmnist):
    """A real smoke search with --verify 1 (at smokex2, to stay cheap): every claim its summary
    makes was retrained there (both sides), and the summary's claim lines say verified."""
    storage = str(tmp_path / "s.journal")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = search.main(["--storage", storage, "--study", "t", "--trials", "4",
                            "--budget", "smoke", "--rungs", "1", "--workers", "1", "--seed", "1",
                            "--data-dir", str(tiny_fmnist), "--no-weights", "--quiet",
                            "--verify", "1", "--verify-budget", "smokex2"])  # fmt: skip
    assert code == 0
    study = optuna.load_study(study_name="t", storage=open_storage(storage))
    checks = V.verified_claims(study, study_config(study))
    stored = reeval_results(study, V.VERIFY_PREFIX)
    for c in checks:
        assert c.holds is not None and c.seeds == 1
        assert stored[c.design.number].budget == "smokex2"
    assert ("verified at smokex2" in out.getvalue()) == bool(checks)
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
    V.verify(study, study_config(study), 1, None, "cpu",
             run=lambda net, *a: trained.append(net) or (0.5, 0.5))  # fmt: skip
    assert len(trained) == len({n.to_json() for n in trained})
