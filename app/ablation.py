"""The Ablation tab's data: the study's measured ladders (`explorer.ablate`), one table row per
step, the waterfall's bars, and where the ablation and the parameter importances disagree."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

import optuna
import pandas as pd

from explorer.ablate import (
    GROUP_OF_FIELD,
    GROUP_TITLES,
    LEAVE_ONE_OUT,
    Measured,
    StepResult,
    collect,
    find_ablation,
    measure,
    reused_runs,
    stored_ladders,
)
from explorer.analysis import Verdict
from explorer.store import DEFAULT_STORAGE, storage_of

from .guard import shown


def ablate_command(storage: str, study: str) -> str:
    """The command that measures (or resumes) the default ladders of this study."""
    parts = ["python", "-m", "explorer.ablate", "--study", study]
    if storage and storage != DEFAULT_STORAGE:
        parts += ["--storage", shown(storage)]
    return shlex.join(parts)


def measured_ladders(study: optuna.Study) -> list[Measured]:
    """Every ladder stored beside `study`, each step measured over the seeds asked for."""
    abl = find_ablation(storage_of(study), study.study_name)
    if abl is None:
        return []
    trials = abl.get_trials(deepcopy=False)
    out = []
    for stored in stored_ladders(abl):
        runs = collect(trials, reused_runs(study, stored.train_config))
        out.append(measure(stored, runs))
    return out


def fingerprint(study: optuna.Study) -> tuple:
    """Changes whenever an ablation run starts or ends, or a ladder is asked for."""
    abl = find_ablation(storage_of(study), study.study_name)
    if abl is None:
        return ()
    trials = abl.get_trials(deepcopy=False)
    states = tuple(t.state.name for t in trials)
    return (len(trials), states, tuple(sorted(abl.user_attrs)))


@dataclass(frozen=True)
class Bar:
    """One bar of the waterfall: from `base` to `base + delta`; a step's bar carries its verdict
    (the ladder's, Holm-corrected), the start and end totals none."""

    label: str
    base: float
    delta: float
    params: int  # of the design after the step
    step: int | None  # index into the ladder's steps; None for the start and end totals
    verdict: Verdict | None = None

    @property
    def distinguishable(self) -> bool:
        """Whether the rule gives the step a sign (a total always stands as it is)."""
        return self.verdict is None or self.verdict.decided

    @property
    def word(self) -> str | None:
        """``better``, ``worse`` or ``not distinguishable at N seeds``; None for a total."""
        return self.verdict.word if self.verdict is not None else None

    @property
    def half(self) -> float:
        """Half the width of the step's interval: its error bar (0 for a total, or a step
        below two seeds, which has no interval)."""
        if self.verdict is None:
            return 0.0
        low, high = self.verdict.interval
        return (high - low) / 2 if math.isfinite(high - low) else 0.0

    @property
    def text(self) -> str:
        """The step's difference in words: its interval, seeds and verdict."""
        return self.verdict.text() if self.verdict is not None else ""


def bars(measured: Measured, metric: str = "val") -> list[Bar]:
    """A path's start, its main steps stacked on one another, and its end; or, for
    leave-one-out, each group's worth from zero."""
    steps = list(enumerate(measured.steps))
    if measured.stored.ladder.kind == LEAVE_ONE_OUT:
        return [
            Bar(r.label, 0.0, _mean(r, metric), r.params[1], i, _paired(r, metric))
            for i, r in steps
        ]
    main = [(i, r) for i, r in steps if r.step.order == "main"]
    if not main:
        return []
    start = _level(measured, main[0][1].step.before, metric)
    out = [Bar(main[0][1].before.name, 0.0, start, main[0][1].params[0], None)]
    level = start
    for i, r in main:
        delta = _mean(r, metric)
        out.append(Bar(r.step.title, level, delta, r.params[1], i, _paired(r, metric)))
        level += 0.0 if math.isnan(delta) else delta
    end = main[-1][1]
    out.append(
        Bar(end.after.name, 0.0, _level(measured, end.step.after, metric), end.params[1], None)
    )
    return out


def _paired(r: StepResult, metric: str) -> Verdict:
    return r.val if metric == "val" else r.test


def _mean(r: StepResult, metric: str) -> float:
    return _paired(r, metric).mean


def _level(measured: Measured, index: int, metric: str) -> float:
    """The mean accuracy of design `index` of the ladder over the seeds asked for."""
    val, test = measured.means[index]
    return val if metric == "val" else test


def step_name(r: StepResult, index: int) -> str:
    """``3. batch norm: none -> post (other order)``: unique within a ladder."""
    return f"{index + 1}. {r.label}" + (" (other order)" if r.step.order == "other" else "")


def steps_frame(measured: Measured) -> pd.DataFrame:
    """One row per step: the change, its cost, and its paired differences."""
    rows = []
    for i, r in enumerate(measured.steps):
        rows.append(
            {
                "step": step_name(r, i),
                "from": r.before.name,
                "to": r.after.name,
                "Δ params": r.params[1] - r.params[0],
                "Δ MFLOPs": (r.flops[1] - r.flops[0]) / 1e6 if r.flops else None,
                "Δ val acc": r.val.text(),
                "Δ test acc": r.test.text(),
                "seeds": r.val.n,
            }
        )
    return pd.DataFrame(rows)


def group_importances(importances: dict[str, float]) -> dict[str, float]:
    """Parameter importances summed over each field group (and over the stages of a per-stage
    study, whose parameters are named by stage: ``s1.bn``)."""
    out: dict[str, float] = {}
    for param, value in importances.items():
        stage, dot, field = param.partition(".")
        per_stage = dot and stage[:1] == "s" and stage[1:].isdigit()
        group = GROUP_OF_FIELD.get(field if per_stage else param)
        if group is not None:
            out[group] = out.get(group, 0.0) + float(value)
    return out


def disagreement(measured: Measured, importances: dict[str, float]) -> str | None:
    """A line saying where the interventional (ablation) and the correlational (importance)
    answers part; None without importances or measured steps."""
    grouped = group_importances(importances)
    effects: dict[str, list[float]] = {}
    sure: dict[str, bool] = {}
    for r in measured.steps:
        if r.val.n and not math.isnan(r.val.mean):
            effects.setdefault(r.group, []).append(abs(r.val.mean))
            sure[r.group] = sure.get(r.group, False) or r.val.decided
    if not grouped or not effects:
        return None
    effect = {g: sum(v) / len(v) for g, v in effects.items()}
    top_effect = max(effect, key=effect.get)
    top_importance = max(grouped, key=grouped.get)
    said = []
    if top_effect != top_importance:
        said.append(
            f"the ablation finds {GROUP_TITLES[top_effect]} worth most (|Δ val| "
            f"{effect[top_effect]:.4f}), the importances rank {GROUP_TITLES[top_importance]} "
            f"first ({grouped[top_importance]:.2f})"
        )
    for group, value in sorted(grouped.items(), key=lambda kv: -kv[1]):
        if group in sure and not sure[group] and value >= 0.25:
            said.append(
                f"{GROUP_TITLES[group]} carries {value:.2f} of the importance, but no step "
                f"changing it is distinguishable at {measured.seeds} seeds"
            )
    if not said:
        return (
            f"Both answers rank {GROUP_TITLES[top_effect]} first: the interventional and the "
            "correlational answers agree on the largest effect."
        )
    return "Where they disagree: " + "; ".join(said) + "."
