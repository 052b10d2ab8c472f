"""The verdicts the dashboard shows, as plain data: where each of the search's claims against v1
and v2 stands after its verification race (`explorer.search.verification`), the retrained test
accuracies behind them, and the paired verdict of two designs that ran the same seeds; all by the
tool's one rule (`explorer.analysis.verdicts`), with the one colour of each verdict word that every
chart and table of the page uses (`VERDICT_COLORS`).

A front design *claims* to beat v1 or v2 when the search scored it more accurate with no more
parameters; the claim is ``held`` when the race, retraining both at the verification budget,
decided it better, ``not held`` when it decided otherwise, ``undecided`` when the race stopped
(its time ran out) before deciding it, and ``not checked`` when no run paired it yet. An
undecided claim is listed as such, never with its interval: the race stated nothing about it.

Stored studies are untrusted: `reeval_results` skips malformed ``verify:*`` attributes, and a
stored race plan beyond `MAX_CAP` seeds is replayed at the default cap instead. No Streamlit here.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from typing import NamedTuple

import optuna
import pandas as pd
from pandas.io.formats.style import Styler

from explorer.analysis import ALPHA, BETTER, WORSE, Reeval, Verdict, compare, reeval_results
from explorer.search import (
    DEFAULT_CAP,
    HELD,
    NOT_HELD,
    PLAN_ATTR,
    UNCHECKED,
    UNDECIDED,
    VERIFY_PREFIX,
    ClaimCheck,
    expected_run_s,
    race_plan,
    search_trials_taken,
    stored_plan,
    verified_claims,
    verify_budget,
)
from explorer.store import DEFAULT_STORAGE, StudyConfig, TrialRecord

from .guard import shown

NOT_DISTINGUISHABLE = "not distinguishable"
# The one colour of each verdict word, for every chart and table: a sign earns a colour, no sign
# is grey. Blue and orange stay the trial states' (app.charts.STATE_STYLE).
VERDICT_COLORS = {BETTER: "#2ca02c", WORSE: "#d62728", NOT_DISTINGUISHABLE: "#9a9a9a"}
VERDICT_LEGEND = "green: better, red: worse, grey: not distinguishable"
# A claim without a verdict (the race stopped first, or never ran) is drawn hollow in this grey.
OPEN_COLOR = "#bab0ac"
# A stored race plan with more seeds a claim than this is not one the tool ran: the page replays
# the claims at the default cap instead of looping over its looks.
MAX_CAP = 100
# The --timeout suggested for a verification whose run length cannot be estimated.
DEFAULT_TIMEOUT_S = 3600


def verdict_key(word: str | None) -> str | None:
    """``better``, ``worse`` or ``not distinguishable`` (the keys of `VERDICT_COLORS`) for a
    verdict's word (``not distinguishable at 5 seeds``); None for no verdict."""
    if word in (BETTER, WORSE):
        return word
    if isinstance(word, str) and word.startswith(NOT_DISTINGUISHABLE):
        return NOT_DISTINGUISHABLE
    return None


def verdict_color(word: str | None) -> str:
    """The colour of a verdict word (`VERDICT_COLORS`), or `OPEN_COLOR` without a verdict."""
    return VERDICT_COLORS.get(verdict_key(word), OPEN_COLOR)


def verdict_css(text: object) -> str:
    """A table cell's style for a text that ends in a verdict word (``... at 5 seeds: better``)
    or says a claim held: coloured as the charts colour it, nothing for other text."""
    key = _word_of(text)
    return "" if key is None else f"color: {VERDICT_COLORS[key]}; font-weight: 600"


def _word_of(text: object) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    if text.startswith(HELD):
        return BETTER
    tail = text.rsplit(": ", 1)[-1]
    return verdict_key(tail) or verdict_key(text)


def style_verdicts(frame: pd.DataFrame, columns: Sequence[str]) -> Styler:
    """`frame` as a pandas Styler whose `columns` are coloured by their verdict words."""
    present = [c for c in columns if c in frame.columns]
    return frame.style.map(verdict_css, subset=present) if present else frame.style


# ---------------------------------------------------------------------------------------------
# The verification of a search's claims


class Claim(NamedTuple):
    """One claim and where its race stands; `verdict` only when the race decided (held or not
    held): an open race states nothing."""

    design: int  # trial number of the claimant
    reference_trial: int
    reference: str  # the reference's name as stored ("v1")
    status: str  # held, not held, undecided, not checked
    seeds: int  # paired seeds the race judged it on
    verdict: Verdict | None
    design_acc: float | None  # mean retrained test accuracy over the paired seeds
    reference_acc: float | None

    @property
    def label(self) -> str:
        return f"#{self.design} vs {self.reference}"

    @property
    def word(self) -> str | None:
        return self.verdict.word if self.verdict is not None else None

    def short(self) -> str:
        """``held vs v1 [+0.0050, +0.0196]``, ``not held vs v2: worse``, ``undecided vs v1``."""
        head = f"{self.status} vs {self.reference}"
        if self.verdict is None:
            return head
        if self.status == NOT_HELD or self.verdict.n < 2:
            return f"{head}: {self.verdict.word}"
        low, high = self.verdict.interval
        return f"{head} [{low:+.4f}, {high:+.4f}]"

    def text(self) -> str:
        """The claim's verdict in words, or why it has none."""
        if self.status == UNDECIDED:
            return (
                f"undecided: the race stopped at {_seeds(self.seeds)} before deciding it "
                "(not a result)"
            )
        if self.verdict is None:
            return "not checked: no paired verification run yet"
        return self.verdict.text()


class Retrained(NamedTuple):
    """One design's verification runs: its test accuracy over its seeds at the budget."""

    number: int
    label: str  # "#12", or the reference's name
    params: int | None
    mean: float
    low: float  # the interval of the mean (the rule's t interval, at ALPHA)
    high: float
    seeds: int
    reference: bool
    status: str  # its claims' best status ("" for a reference)
    word: str | None  # the verdict word of its best decided claim (None: none decided)


class VerificationInfo(NamedTuple):
    """A study's claims against v1/v2 and their verification at one budget."""

    search_budget: str | None  # the budget the search scored the claims at
    budget: str | None  # the verification's (None: no verification run stored)
    first: int  # the race's plan: first look and cap, seeds a claim
    cap: int
    claims: list[Claim]
    retrained: list[Retrained]  # claimants and references run at `budget`, references first
    runs: dict[int | str, Reeval]  # every well-formed verification run, by trial
    references: tuple[str, ...]  # the study's complete reference trials, by name
    command: str  # resumes the study with no new design and races its claims
    attempted: bool = False  # a verification started (its plan is stored), runs or none

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.claims)

    @property
    def held(self) -> int:
        return self.count(HELD)

    @property
    def open(self) -> int:
        """Claims without a verdict: undecided or not checked."""
        return self.count(UNDECIDED) + self.count(UNCHECKED)

    def claims_of(self, number: int) -> list[Claim]:
        """The claims trial `number` makes, or that are made against it."""
        return [c for c in self.claims if number in (c.design, c.reference_trial)]


def verification_info(
    study: optuna.Study,
    records: Sequence[TrialRecord],
    config: StudyConfig | None,
    storage: str,
    bottom: optuna.Study | None = None,
) -> VerificationInfo:
    """The claims of `study` (the top rung, whose `records` are given) with their race states
    replayed from the stored runs, and the command that resumes it to verify them (adding no
    design: ``--trials`` is what the bottom rung, `bottom` or the study itself, has)."""
    runs = reeval_results(study, VERIFY_PREFIX)
    plan = stored_plan(study, runs)
    if plan.cap > MAX_CAP:
        plan = race_plan(DEFAULT_CAP)
        checks = verified_claims(study, config, list(records), cap=DEFAULT_CAP)
    else:
        checks = verified_claims(study, config, list(records))
    claims = [_claim(c) for c in checks]
    budget = _budget(runs, checks)
    search_budget = config.budget if config is not None else None
    refs = tuple(sorted({r.reference for r in records if r.is_reference and r.complete}))
    return VerificationInfo(
        search_budget=search_budget,
        budget=budget,
        first=plan.first,
        cap=plan.cap,
        claims=claims,
        retrained=_retrained(records, runs, claims, budget),
        runs=runs,
        references=refs,
        attempted=PLAN_ATTR in study.user_attrs,
        command=verify_command(
            storage,
            study.study_name,
            search_trials_taken(bottom if bottom is not None else study),
            plan.cap,
            _timeout(study, config, checks, plan.cap),
        ),
    )


def _claim(c: ClaimCheck) -> Claim:
    decided = c.status in (HELD, NOT_HELD)
    return Claim(
        design=c.design.number,
        reference_trial=c.reference.number,
        reference=str(c.reference.reference),
        status=c.status,
        seeds=c.seeds,
        verdict=c.state.verdict if decided and c.state is not None else None,
        design_acc=c.design_acc,
        reference_acc=c.reference_acc,
    )


def _budget(runs: dict[int | str, Reeval], checks: Sequence[ClaimCheck]) -> str | None:
    """The budget the claims' runs trained at (`verification_budget_name`'s choice among the
    runs of the claims' designs), None without one."""
    numbers = {r.number for c in checks for r in (c.design, c.reference)}
    names = sorted({r.budget for k, r in runs.items() if k in numbers and r.seeds})
    return names[0] if names else None


_STATUS_RANK = {HELD: 0, UNDECIDED: 1, NOT_HELD: 2, UNCHECKED: 3}


def _retrained(
    records: Sequence[TrialRecord],
    runs: dict[int | str, Reeval],
    claims: Sequence[Claim],
    budget: str | None,
) -> list[Retrained]:
    by_number = {r.number: r for r in records}
    out = []
    for number in sorted({n for c in claims for n in (c.reference_trial, c.design)}):
        run, record = runs.get(number), by_number.get(number)
        if run is None or record is None or run.budget != budget or not _finite(run):
            continue
        # The rule's t interval, of a mean accuracy here rather than of a mean difference.
        spread = compare(run.test_acc)
        low, high = spread.interval
        mine = sorted((c for c in claims if c.design == number),
                      key=lambda c: _STATUS_RANK[c.status])  # fmt: skip
        words = [verdict_key(c.word) for c in mine if c.word is not None]
        word = next((w for w in (BETTER, NOT_DISTINGUISHABLE, WORSE) if w in words), None)
        out.append(
            Retrained(number, record.label(), record.params, spread.mean, low, high, run.seeds,
                      record.is_reference, mine[0].status if mine else "", word)
        )  # fmt: skip
    return sorted(out, key=lambda r: (not r.reference, r.label if r.reference else r.number))


def verify_command(storage: str, study: str, trials: int, cap: int, timeout_s: int) -> str:
    """The command that resumes `study` without new designs (``--trials``: the designs it has)
    and races its claims, up to `cap` seeds a claim, for at most `timeout_s` seconds (without a
    --timeout the verification gets as long as the search took, so next to nothing on a
    resumed study)."""
    parts = ["python", "-m", "explorer.search", "--study", study]
    if storage and storage != DEFAULT_STORAGE:
        parts += ["--storage", shown(storage)]
    parts += ["--trials", str(trials), "--verify-seeds", str(cap), "--timeout", str(timeout_s)]
    return shlex.join(parts)


def _timeout(
    study: optuna.Study, config: StudyConfig | None, checks: Sequence[ClaimCheck], cap: int
) -> int:
    """Seconds enough for the race on one worker: every claimant and reference to `cap` seeds
    at the runs' expected length (from the search's trial times), in whole minutes."""
    if config is None or not checks:
        return DEFAULT_TIMEOUT_S
    try:
        each = expected_run_s(study, config, verify_budget(config))
    except ValueError:
        each = None
    if each is None or not math.isfinite(each) or each <= 0:
        return DEFAULT_TIMEOUT_S
    designs = len({r.number for c in checks for r in (c.design, c.reference)})
    return max(60, math.ceil(each * designs * cap / 60) * 60)


def trial_statuses(info: VerificationInfo | None) -> dict[int, str]:
    """Each claimant's claims in short (``held vs v1 [+0.0050, +0.0196]; not held vs v2``), by
    trial number."""
    out: dict[int, list[str]] = {}
    claims = info.claims if info is not None else []
    for c in sorted(claims, key=lambda c: _STATUS_RANK[c.status]):  # the best first
        out.setdefault(c.design, []).append(c.short())
    return {n: "; ".join(v) for n, v in out.items()}


def front_label(info: VerificationInfo | None, budget: str | None, top: bool = True) -> str:
    """``search front at quick: single runs; 2 of 9 claims held at quickx10``: what the search
    front's accuracies are, and how many of its claims held when retrained (said only of the
    top rung's front, whose claims they are)."""
    head = f"search front at {budget}: single runs" if budget else "search front: single runs"
    if info is None or not top:
        return head
    n = len(info.claims)
    if n == 0:
        return f"{head}; no claim against {_refs(info)} to verify"
    if info.budget is None:
        return f"{head}; {n} claim{'s' if n != 1 else ''} against {_refs(info)}, not verified"
    tail = f"; {info.held} of {n} claim{'s' if n != 1 else ''} held at {info.budget}"
    return head + tail + (f" ({info.open} undecided)" if info.open else "")


def _refs(info: VerificationInfo) -> str:
    return "/".join(info.references) or "v1/v2"


CLAIM_COLUMNS = ("claim", "trial", "status", "seeds", "difference", "interval", "verdict",
                 "design acc", "reference acc")  # fmt: skip


def claims_frame(claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per claim: its status, the seeds it was judged on, and, where the race decided
    it, the difference (design minus reference test accuracy), its interval and verdict word;
    the mean retrained accuracies of both over the paired seeds."""
    rows = []
    for c in claims:
        v = c.verdict
        interval = None
        if v is not None and v.n >= 2:
            low, high = v.interval
            interval = f"[{low:+.4f}, {high:+.4f}]"
        rows.append(
            (c.label, c.design, c.status, c.seeds or None, v.mean if v is not None else None,
             interval, v.word if v is not None else None,
             c.design_acc if c.status != UNCHECKED else None,
             c.reference_acc if c.status != UNCHECKED else None)
        )  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
    for col in ("seeds", "difference", "design acc", "reference acc"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def retrained_text(info: VerificationInfo, number: int) -> str | None:
    """``retrained at quickx10: test accuracy 0.8812 [0.8701, 0.8923] over 5 seeds``, or None
    when trial `number` has no verification run."""
    for r in info.retrained:
        if r.number == number:
            if r.seeds < 2:
                return f"retrained at {info.budget}: test accuracy {r.mean:.4f} over 1 seed"
            return (
                f"retrained at {info.budget}: test accuracy {r.mean:.4f} "
                f"[{r.low:.4f}, {r.high:.4f}] over {_seeds(r.seeds)}"
            )
    return None


def design_frame(info: VerificationInfo, number: int) -> pd.DataFrame:
    """The claims trial `number` makes (or, for a reference, those made against it), each with
    its status and verdict in words."""
    rows = [(c.label, c.status, c.text()) for c in info.claims_of(number)]
    return pd.DataFrame(rows, columns=["claim", "status", "verdict"])


# ---------------------------------------------------------------------------------------------
# Two designs, paired


class PairedVerdict(NamedTuple):
    """B minus A over the seeds both ran under one budget."""

    runs: str  # which runs: "verification at quickx10", "re-evaluation at long"
    verdict: Verdict | None  # None: the claim's race has not decided it
    judged: str  # how: "alone" or "in its race, Holm-corrected"


def paired_verdicts(
    a: TrialRecord, b: TrialRecord, info: VerificationInfo | None
) -> list[PairedVerdict]:
    """B minus A's test accuracy, seed by seed, wherever both have runs at one budget: the
    verification's (a claimant against its reference: the race's verdict; any other pair judged
    alone) and the re-evaluation's (judged alone). `info`: None where the records are of a lower
    rung, whose trial numbers are not the verification's."""
    if a.number == b.number:
        return []
    out = []
    if info is not None:
        claim = next((c for c in info.claims
                      if {c.design, c.reference_trial} == {a.number, b.number}), None)  # fmt: skip
        if claim is not None and claim.status != UNCHECKED:
            verdict = claim.verdict
            if verdict is not None and claim.design == a.number:  # the claim is design - ref
                verdict = Verdict(tuple(-d for d in verdict.differences), verdict.alpha)
            out.append(PairedVerdict(f"verification at {info.budget}", verdict,
                                     f"in its race over the {len(info.claims)} claims"))  # fmt: skip
        else:
            pair = _paired(info.runs.get(a.number), info.runs.get(b.number))
            if pair is not None:
                out.append(PairedVerdict(f"verification at {pair[0]}", pair[1], "alone"))
    pair = _paired(_reeval(a), _reeval(b))
    if pair is not None:
        out.append(PairedVerdict(f"re-evaluation at {pair[0]}", pair[1], "alone"))
    return out


def _reeval(record: TrialRecord) -> Reeval | None:
    try:
        return Reeval.from_dict(record.reeval) if record.reeval is not None else None
    except ValueError:
        return None


def _paired(a: Reeval | None, b: Reeval | None) -> tuple[str, Verdict] | None:
    """(budget, B - A judged alone) over the seeds both ran, when both trained alike."""
    if a is None or b is None or a.budget != b.budget or not (_finite(a) and _finite(b)):
        return None
    if a.train_config is not None and b.train_config is not None:
        if a.train_config != b.train_config:
            return None
    n = min(a.seeds, b.seeds)
    if n == 0:
        return None
    return a.budget, compare([y - x for x, y in zip(a.test_acc[:n], b.test_acc[:n])], ALPHA)


def _finite(run: Reeval) -> bool:
    """Whether a stored run has seeds and only finite accuracies (a study may hold NaN)."""
    return run.seeds > 0 and all(math.isfinite(v) for v in run.test_acc)


def paired_frame(pairs: Sequence[PairedVerdict], a: str, b: str) -> pd.DataFrame:
    """One row per kind of run both designs have: the seeds, B minus A in words, the verdict."""
    rows = [
        (
            p.runs,
            p.verdict.n if p.verdict is not None else None,
            p.verdict.text()
            if p.verdict is not None
            else "undecided: its race has not decided it (not a result)",
            p.verdict.word if p.verdict is not None else UNDECIDED,
            p.judged,
        )
        for p in pairs
    ]
    return pd.DataFrame(rows, columns=["runs", "seeds", f"{b} minus {a}", "verdict", "judged"])


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")
