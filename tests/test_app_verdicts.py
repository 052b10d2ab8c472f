"""Tests of the dashboard's verdicts (`app.verdicts`, issue 40): each front design's verification
status in the trial table and the details view, the view of the verified results beside the search
front, one colour per verdict word in every chart, the rule stated where verdicts are shown, and
the empty, interrupted and malformed verifications. Studies are verified as
`tests/test_verification.py` verifies them: with a seeded stand-in for training."""

from __future__ import annotations

import json
import math
import random
import shlex
import time

import optuna
import pytest
from streamlit.testing.v1 import AppTest

from app import charts, data, verdicts
from explorer.analysis import ALPHA, RULE, reeval_results, study_records
from explorer.search import parse_settings, search_trials_taken
from explorer.search import verification as V
from explorer.store import TrialRecord, load_study, study_config
from search_space import network_params
from tests.helpers import journal_url, make_study
from tests.test_app import APP, _figure, _texts
from tests.test_dashboard_security import _markup_outside_code, make_hostile_study

N_SEARCH = 10
SEED = 4  # a study whose front holds two claims against v1 and two against v2


def _noise(seed: int, salt: int) -> float:
    return random.Random(seed * 1000 + salt).gauss(0.0, 0.003)


def make_verified_study(storage: str, name: str = "verified") -> optuna.Study:
    """A study whose four claims were raced at smokex10, up to 5 seeds: the smallest claimant
    held against v1, the others not held."""
    study = make_study(storage, name, n_search=N_SEARCH, seed=SEED, weights=False)
    claims = V.search_claims(study_records(study))
    designs = sorted({c.design.number: c.design for c in claims}.values(),
                     key=lambda r: (-r.val_acc, r.number))  # fmt: skip
    refs = [c.reference.network for c in claims]
    winner = designs[-1].network

    def fake_run(network, data, train_config, device, seed):
        base = 0.95 if network == winner else 0.70 if network in refs else 0.6
        return base, base + _noise(seed, network_params(network))

    V.verify(
        study, study_config(study), 5, data=None, device="cpu", run=fake_run, url=journal_url(study)
    )
    return study


def make_interrupted_study(storage: str, name: str = "interrupted") -> optuna.Study:
    """A study whose race, capped at 8 seeds, stopped after its first 3: its close claims are
    undecided."""
    study = make_study(storage, name, n_search=N_SEARCH, seed=SEED, weights=False)
    claimants = {c.design.network for c in V.search_claims(study_records(study))}

    def close_run(network, data, train_config, device, seed):
        bump = 0.002 if network in claimants else 0.0
        return 0.7, 0.7 + bump + _noise(seed, network_params(network))

    V.verify(study, study_config(study), 3, None, "cpu", run=close_run, url=journal_url(study))
    study.set_user_attr(V.PLAN_ATTR, {"first": 3, "cap": 8})  # as a race the deadline cut
    return study


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    """One journal: study ``verified``, ``interrupted`` and ``unverified`` (its claims never run)."""
    path = str(tmp_path_factory.mktemp("verdicts") / "explorer.journal")
    make_verified_study(path)
    make_interrupted_study(path)
    make_study(path, "unverified", n_search=N_SEARCH, seed=SEED, weights=False)
    return path


def _info(storage: str, name: str) -> verdicts.VerificationInfo:
    study = load_study(storage, name)
    return verdicts.verification_info(study, study_records(study), study_config(study), storage)


# ---------------------------------------------------------------------------------------------
# app.verdicts and app.charts


def test_each_claim_carries_its_race_status_and_verdict(storage):
    study = load_study(storage, "verified")
    info = _info(storage, "verified")
    checks = V.verified_claims(study, study_config(study))
    assert [(c.design, c.reference, c.status) for c in info.claims] == [
        (c.design.number, c.reference.reference, c.status) for c in checks
    ]
    assert [c.status for c in info.claims].count(V.HELD) == info.held == 1
    assert {c.status for c in info.claims} == {V.HELD, V.NOT_HELD}
    for claim, check in zip(info.claims, checks, strict=True):
        assert claim.verdict == check.state.verdict  # the race's own, Holm-corrected verdict
        assert claim.seeds == check.seeds and claim.design_acc == check.design_acc
    assert (info.budget, info.first, info.cap) == ("smokex10", 3, 5)
    assert verdicts.front_label(info, "smoke") == (
        "search front at smoke: single runs; 1 of 4 claims held at smokex10"
    )
    assert verdicts.front_label(info, "smoke", top=False) == "search front at smoke: single runs"


def test_statuses_name_the_held_interval_and_the_others_word(storage):
    info = _info(storage, "verified")
    statuses = verdicts.trial_statuses(info)
    (held,) = [c for c in info.claims if c.status == V.HELD]
    low, high = held.verdict.interval
    assert statuses[held.design] == f"held vs v1 [{low:+.4f}, {high:+.4f}]"
    for c in info.claims:
        if c.status == V.NOT_HELD:
            assert statuses[c.design] == f"not held vs {c.reference}: {c.verdict.word}"
    records = study_records(load_study(storage, "verified"))
    frame = data.trials_frame(records, None, statuses)
    by_trial = dict(zip(frame["trial"], frame["verification"], strict=True))
    assert by_trial[held.design] == statuses[held.design]
    assert {n for n, v in by_trial.items() if isinstance(v, str)} == set(statuses)
    assert data.trials_frame(records)["verification"].isna().all()  # no info: no status


def test_the_claims_table_gives_differences_only_where_the_race_decided(storage):
    decided = verdicts.claims_frame(_info(storage, "verified").claims)
    assert list(decided.columns) == list(verdicts.CLAIM_COLUMNS)
    assert decided["difference"].notna().all() and decided["interval"].notna().all()
    assert set(decided["verdict"]) <= {"better", "worse"} | {
        w for w in decided["verdict"] if w.startswith("not distinguishable at ")
    }
    interrupted = _info(storage, "interrupted")
    frame = verdicts.claims_frame(interrupted.claims)
    open_rows = frame[frame["status"] == V.UNDECIDED]
    assert len(open_rows) >= 1 and interrupted.open == len(open_rows)
    # an undecided claim is listed as such, never with a difference, an interval or a word
    assert open_rows["difference"].isna().all() and open_rows["interval"].isna().all()
    assert open_rows["verdict"].isna().all()
    assert (open_rows["seeds"] == 3).all()
    assert verdicts.front_label(interrupted, "smoke").endswith(
        f"held at smokex10 ({interrupted.open} undecided)"
    )
    for c in interrupted.claims:
        if c.status == V.UNDECIDED:
            assert c.verdict is None and c.text().startswith("undecided: the race stopped")


def test_an_unverified_study_gives_the_command_that_verifies_it(storage):
    info = _info(storage, "unverified")
    taken = search_trials_taken(load_study(storage, "unverified"))
    assert taken == N_SEARCH + 1  # its pruned design counts towards --trials too: none is added
    assert info.budget is None and info.retrained == [] and len(info.claims) == 4
    assert {c.status for c in info.claims} == {V.UNCHECKED}
    assert info.command.startswith(
        f"python -m explorer.search --study unverified --storage {storage} "
        f"--trials {taken} --verify-seeds {V.DEFAULT_CAP} --timeout "
    )
    assert verdicts.front_label(info, "smoke") == (
        "search front at smoke: single runs; 4 claims against v1/v2, not verified"
    )
    # what the search makes of it: this study, no design more, the race with time to run
    settings = parse_settings(shlex.split(info.command)[3:])
    assert (settings.study, settings.storage, settings.trials) == ("unverified", storage, taken)
    assert settings.verify_seeds == V.DEFAULT_CAP and settings.timeout > 0


def test_the_command_shows_no_password():
    command = verdicts.verify_command("postgresql://me:secret@db/nas", "s", 40, 8, 600)
    assert command == (
        "python -m explorer.search --study s --storage 'postgresql://me:***@db/nas' "
        "--trials 40 --verify-seeds 8 --timeout 600"
    )


def test_retrained_accuracies_carry_the_rules_interval(storage):
    info = _info(storage, "verified")
    runs = reeval_results(load_study(storage, "verified"), V.VERIFY_PREFIX)
    assert [r.label for r in info.retrained][:2] == ["v1", "v2"]  # the references first
    for r in info.retrained:
        run = runs[r.number]
        assert r.seeds == run.seeds and r.mean == pytest.approx(run.test_acc_mean)
        assert r.low < r.mean < r.high
    (held,) = [r for r in info.retrained if r.status == V.HELD]
    assert held.word == "better"
    assert verdicts.retrained_text(info, held.number).startswith(
        f"retrained at smokex10: test accuracy {held.mean:.4f} ["
    )


def test_verified_figures_draw_statuses_in_the_verdict_colours(storage):
    info = _info(storage, "verified")
    fig = charts.verified_figure(info)
    names = [t.name for t in fig.data]
    assert names == ["held (better)", "not held (worse)", "v1", "v2"]
    held, not_held = fig.data[0], fig.data[1]
    assert held.marker.color == verdicts.VERDICT_COLORS["better"]
    assert not_held.marker.color == verdicts.VERDICT_COLORS["worse"]
    assert held.error_y.array[0] > 0 and held.error_y.arrayminus[0] > 0
    assert "smokex10" in fig.layout.title.text
    claims = charts.claims_figure(info)
    colours = {t.name: t.marker.color for t in claims.data}
    assert colours == {"better": verdicts.VERDICT_COLORS["better"],
                       "worse": verdicts.VERDICT_COLORS["worse"]}  # fmt: skip
    assert sum(len(t.x) for t in claims.data) == len(info.claims)
    # an interrupted race's undecided claims are not drawn as differences
    interrupted = _info(storage, "interrupted")
    drawn = sum(len(t.x) for t in charts.claims_figure(interrupted).data)
    assert drawn == len(interrupted.claims) - interrupted.open
    undecided = [t for t in charts.verified_figure(interrupted).data
                 if t.name.startswith("undecided")]  # fmt: skip
    assert undecided and undecided[0].marker.symbol == "circle-open"


@pytest.mark.parametrize(
    "word, key",
    [("better", "better"), ("worse", "worse"),
     ("not distinguishable at 5 seeds", "not distinguishable"), (None, None)],
)  # fmt: skip
def test_one_colour_per_verdict_word(word, key):
    assert verdicts.verdict_key(word) == key
    colour = verdicts.VERDICT_COLORS.get(key, verdicts.OPEN_COLOR)
    assert verdicts.verdict_color(word) == colour
    if word is not None:
        assert colour in verdicts.verdict_css(f"+0.0100 [+0.0010, +0.0190] at 5 seeds: {word}")
    assert verdicts.verdict_css("held vs v1 [+0.0100, +0.0200]").startswith(
        f"color: {verdicts.VERDICT_COLORS['better']}"
    )
    assert verdicts.verdict_css("undecided: the race stopped") == ""


def test_paired_verdicts_of_two_designs(storage):
    info = _info(storage, "verified")
    records = {r.number: r for r in study_records(load_study(storage, "verified"))}
    (held,) = [c for c in info.claims if c.status == V.HELD]
    ref, design = records[held.reference_trial], records[held.design]
    (pair,) = verdicts.paired_verdicts(ref, design, info)  # B minus A: the claim itself
    assert pair.verdict == held.verdict and pair.runs == "verification at smokex10"
    (back,) = verdicts.paired_verdicts(design, ref, info)
    assert back.verdict.mean == pytest.approx(-held.verdict.mean) and back.verdict.word == "worse"
    # two claimants are no claim: judged alone on the seeds both ran
    a, b = sorted({c.design for c in info.claims})[:2]
    (alone,) = verdicts.paired_verdicts(records[a], records[b], info)
    assert alone.judged == "alone" and alone.verdict.alpha == ALPHA
    assert verdicts.paired_verdicts(ref, ref, info) == []
    assert verdicts.paired_verdicts(ref, design, None) == []  # a lower rung's trials
    frame = verdicts.paired_frame([pair, alone], "v1", f"#{held.design}")
    assert list(frame.columns) == ["runs", "seeds", f"#{held.design} minus v1", "verdict",
                                   "judged"]  # fmt: skip
    assert frame["verdict"][0] == "better"


def test_malformed_verification_attributes_do_not_break_the_replay(tmp_path):
    path = str(tmp_path / "bad.journal")
    study = make_verified_study(path, "bad")
    good = reeval_results(study, V.VERIFY_PREFIX)
    number = next(k for k in good if isinstance(k, int) and k > 1)
    study.set_user_attr(f"{V.VERIFY_PREFIX}{number}", "garbage")
    study.set_user_attr(f"{V.VERIFY_PREFIX}x", [1, 2])
    study.set_user_attr(f"{V.VERIFY_PREFIX}999", {"test_acc": [], "val_acc": [], "budget": "<b>"})
    study.set_user_attr(V.PLAN_ATTR, {"first": 2, "cap": 10**9})
    info = _info(path, "bad")
    assert info.cap == V.DEFAULT_CAP  # a plan no race ran is replayed at the default cap
    assert {c.status for c in info.claims if c.design == number} == {V.UNCHECKED}
    charts.verified_figure(info).to_json()
    charts.claims_figure(info).to_json()
    verdicts.claims_frame(info.claims)
    study.set_user_attr(V.PLAN_ATTR, "first=3")
    assert _info(path, "bad").cap >= V.DEFAULT_CAP


# ---------------------------------------------------------------------------------------------
# The page, through AppTest


@pytest.fixture
def page(monkeypatch, storage):
    monkeypatch.delenv("EXPLORER_DASHBOARD_TOKEN", raising=False)
    monkeypatch.setenv("EXPLORER_STORAGE", storage)
    monkeypatch.delenv("EXPLORER_STUDY", raising=False)

    def make(study: str, view: str | None = None) -> AppTest:
        monkeypatch.setattr("sys.argv", ["app/main.py", "--study", study])
        at = AppTest.from_file(APP, default_timeout=60).run()
        if view is not None:
            at.session_state["view"] = view
            at.run()
        assert not at.exception and not at.error
        return at

    return make


def test_the_search_front_is_labelled_with_its_budget_and_claims(page):
    at = page("verified")
    assert _figure(at)["layout"]["title"]["text"] == (
        "search front at smoke: single runs; 1 of 4 claims held at smokex10"
    )
    (front,) = [d.value for d in at.dataframe if "verification" in d.value.columns]
    assert (front["verification"].dropna().str.contains(r"^(?:held|not held) vs ")).all()


def test_the_verified_view_shows_both_charts_the_claims_and_the_rule(page):
    at = page("verified", "Verified claims")
    titles = [_figure(at, i)["layout"]["title"]["text"] for i in range(2)]
    assert titles[0].startswith("retrained at smokex10: test accuracy")
    assert titles[1].startswith("each claim at smokex10: test accuracy, design minus reference")
    (table,) = [d.value for d in at.dataframe if "claim" in d.value.columns]
    assert len(table) == 4 and sorted(table["status"]) == ["held"] + ["not held"] * 3
    assert "**1 of 4 claims held** when retrained at smokex10" in _texts(at)
    assert _texts(at).count(RULE) == 1  # stated once, where the verdicts are
    assert not at.code and not at.warning  # nothing left to run


def test_a_claimant_shows_its_status_in_the_table_and_its_details(page, storage):
    info = _info(storage, "verified")
    (held,) = [c for c in info.claims if c.status == V.HELD]
    at = page("verified", "Trials")
    table = at.dataframe[0].value
    (status,) = table.loc[table["trial"] == held.design, "verification"]
    assert status.startswith("held vs v1 [")
    at.session_state["view"] = "Trial details"
    at.session_state["detail_trial"] = held.design
    at.run()
    assert not at.exception
    (claims,) = [d.value for d in at.dataframe if "claim" in d.value.columns]
    assert claims["status"].tolist() == ["held"]
    assert claims["verdict"][0] == held.verdict.text()
    assert "retrained at smokex10: test accuracy" in _texts(at)


def test_the_compare_view_states_the_claims_verdict(page, storage):
    info = _info(storage, "verified")
    (held,) = [c for c in info.claims if c.status == V.HELD]
    at = page("verified", "Compare")
    at.session_state["compare_a"] = held.reference_trial
    at.session_state["compare_b"] = held.design
    at.run()
    assert not at.exception
    (pairs,) = [d.value for d in at.dataframe if "judged" in d.value.columns]
    assert pairs["verdict"].tolist() == ["better"]
    assert RULE in _texts(at)


def test_an_unverified_study_shows_the_command_and_its_unchecked_claims(page, storage):
    at = page("unverified", "Verified claims")
    (command,) = [c.value for c in at.code]
    assert command.startswith(f"python -m explorer.search --study unverified --storage {storage}")
    assert "--verify-seeds 8" in command and "--timeout " in command
    assert "No verification runs in this study yet" in at.info[0].value
    (table,) = [d.value for d in at.dataframe if "claim" in d.value.columns]
    assert set(table["status"]) == {"not checked"}
    assert not at.get("plotly_chart")  # nothing retrained to draw


def test_a_verification_out_of_time_before_its_first_run_says_so(page, storage):
    study = make_study(storage, "out of time", n_search=N_SEARCH, seed=SEED, weights=False)

    def never(*args):
        raise AssertionError("no run starts after the deadline")

    V.verify(
        study,
        study_config(study),
        8,
        None,
        "cpu",
        deadline=time.monotonic() - 1,
        run=never,
        url=journal_url(study),
    )
    info = _info(storage, "out of time")
    assert info.attempted and info.budget is None
    assert not _info(storage, "unverified").attempted
    at = page("out of time", "Verified claims")
    assert at.info[0].value.startswith(
        "The verification's share of the time ran out before its first run: its 4 claim(s)"
    )
    assert at.code[0].value == info.command


def test_an_interrupted_verification_lists_its_undecided_claims_as_such(page):
    at = page("interrupted", "Verified claims")
    assert "listed as undecided, not as results" in at.warning[0].value
    assert at.code[0].value.startswith("python -m explorer.search --study interrupted")
    (table,) = [d.value for d in at.dataframe if "claim" in d.value.columns]
    undecided = table[table["status"] == "undecided"]
    assert len(undecided) >= 1 and undecided["verdict"].isna().all()
    claims = _figure(at, 1)
    assert sum(len(t["x"]) for t in claims["data"]) == len(table) - len(undecided)
    assert "undecided)" in _figure(page("interrupted"))["layout"]["title"]["text"]


def test_non_finite_accuracies_leave_the_rest_of_the_page(page, storage, caplog):
    """A run holding NaN or infinity cannot be replayed (the rule's standard deviation fails on
    it): the verified view says so, the log says why, and every other view is drawn."""
    study = make_verified_study(storage, "nan")
    nan_run = {"test_acc": [math.nan, math.inf, 0.5], "val_acc": [0.1, 0.2, 0.3],
               "budget": "smokex10"}  # fmt: skip
    study.set_user_attr(f"{V.VERIFY_PREFIX}0", nan_run)
    v1, v2 = (TrialRecord.from_dict({"reeval": run}, n, "COMPLETE")
              for n, run in ((0, nan_run), (1, {**nan_run, "test_acc": [0.5, 0.6, 0.7]})))  # fmt: skip
    assert verdicts.paired_verdicts(v1, v2, None) == []  # no verdict of a NaN
    at = page("nan", "Verified claims")
    if any("cannot be shown" in w.value for w in at.warning):  # the replay failed: said
        assert "cannot replay the verification" in caplog.text
    else:  # the stored entry is rejected as not finite: v1's claims are not checked
        (table,) = [d.value for d in at.dataframe if "claim" in d.value.columns]
        assert "not checked" in set(table["status"])
    for view in ("Pareto front", "Trials", "Trial details", "Compare"):
        at.session_state["view"] = view
        at.run()
        assert not at.exception and not at.error, view


def test_a_hostile_verification_is_shown_as_text(page, storage):
    study = make_verified_study(storage, "hostile verification")
    runs = reeval_results(study, V.VERIFY_PREFIX)
    design, reference = max(k for k in runs if isinstance(k, int)), 0
    study.set_user_attr(f"{V.VERIFY_PREFIX}{design}",
                        {**runs[design].to_dict(), "budget": "<img src=x onerror=alert(1)>"})  # fmt: skip
    study.set_user_attr(f"{V.VERIFY_PREFIX}{reference}",
                        {**runs[reference].to_dict(), "budget": "<img src=x onerror=alert(1)>"})  # fmt: skip
    study.set_user_attr(f"{V.VERIFY_PREFIX}1", {"test_acc": "high"})
    study.set_user_attr(V.PLAN_ATTR, {"first": "x"})
    for view in ("Pareto front", "Verified claims", "Trials", "Trial details", "Compare"):
        at = page("hostile verification", view)
        assert not _markup_outside_code(at), view
        for i in range(len(at.get("plotly_chart"))):
            assert "<img" not in json.dumps(_figure(at, i)), view
    # the budget the runs name is the verification's, shown as the text it is
    assert "retrained at \\<img src=x" in _texts(page("hostile verification", "Verified claims"))


def test_the_hostile_study_has_a_verified_view(monkeypatch, tmp_path):
    """`tests/test_dashboard_security.py`'s study (markup for names, broken trials, settings
    that do not parse): its claims against a reference named with markup are shown as text."""
    storage = str(tmp_path / "hostile.journal")
    make_hostile_study(storage)
    monkeypatch.setattr("sys.argv", ["app/main.py", "--storage", storage])
    at = AppTest.from_file(APP, default_timeout=60).run()
    for view in ("Verified claims", "Trials", "Compare"):
        at.session_state["view"] = view
        at.run()
        assert not at.exception and not at.error, view
        assert not _markup_outside_code(at), view
