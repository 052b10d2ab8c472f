"""Shaping study records into the plain data the dashboard draws: tables and small NamedTuples.

Everything here is a pure function of `TrialRecord`s (see `explorer.analysis` for the trial
attribute schema) or of a loaded study, with no Streamlit: `app.loaders` caches these results and
`app.charts` turns the infos into Plotly figures, in the manner of Optuna's
``visualization/_pareto_front.py`` (``_get_..._info`` -> NamedTuple, ``_get_..._plot(info)``).
"""

from __future__ import annotations

import math
import shlex
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import optuna
import pandas as pd

from explorer.analysis import (
    DEFAULT_OBJECTIVES,
    OBJECTIVES,
    design_path,
    hypervolume,
    hypervolume_curve,
    hypervolume_spec,
    non_dominated_fronts,
    pareto_front,
    rung_counts,
)
from explorer.store import DEFAULT_STORAGE, StudyConfig, TrialRecord
from search_space import BlockConfig

from .guard import short, shown

SEARCH_COMMAND = "python -m explorer.search --trials 100"

# Trial states in the order the dashboard lists them; the rest of Optuna's states follow.
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
X_AXES = ("params", "flops", "latency_ms")
# The y-axes of the Pareto chart: the search's validation accuracy, or the re-evaluated test
# accuracy (mean over seeds, with the standard deviation as an error bar).
Y_AXES = {"val_acc": "validation accuracy", "reeval": "re-evaluated test accuracy (mean ± std)"}
MIN_IMPORTANCE_TRIALS = 5


def search_command(storage: str | None = None, study: str | None = None) -> str:
    """The command that starts a search into this storage and study (defaults left out)."""
    parts = [SEARCH_COMMAND]
    if storage and storage != DEFAULT_STORAGE:
        parts.append(f"--storage {shlex.quote(shown(storage))}")
    if study:
        parts.append(f"--study {shlex.quote(study)}")
    return " ".join(parts)


def export_command(storage: str, study: str, number: int) -> str:
    """The `explorer.export` command line that writes the same file as the dashboard's button."""
    parts = ["python", "-m", "explorer.export", "--study", study]
    if storage and storage != DEFAULT_STORAGE:
        parts += ["--storage", shown(storage)]
    return shlex.join([*parts, "--trial", str(number), "-o", export_filename(number)])


def export_filename(number: int) -> str:
    return f"trial{number}.py"


# ---------------------------------------------------------------------------------------------
# Per-trial values


def accuracy(record: TrialRecord) -> tuple[float | None, str]:
    """The trial's validation accuracy and where it comes from.

    Complete trials report ``val_acc``; pruned and failed ones are placed at the last epoch
    their learning curve reached (``"last epoch"``), so they can be drawn beside the others.
    """
    value = record.val_acc
    if _is_number(value):
        return float(value), "final"
    curve = _curves(record).get("val_acc") or []
    finite = [v for v in curve if _is_number(v)]
    if finite:
        return float(finite[-1]), "last epoch"
    return None, "none"


def reeval_accuracy(record: TrialRecord) -> tuple[float | None, float | None]:
    """(mean, std) of the re-evaluated test accuracy, or (None, None) without a re-evaluation."""
    reeval = record.reeval
    if not isinstance(reeval, dict) or not _is_number(reeval.get("test_acc_mean")):
        return None, None
    std = reeval.get("test_acc_std")
    return float(reeval["test_acc_mean"]), float(std) if _is_number(std) else None


def design(record: TrialRecord) -> str:
    """The design in short form on one line (stage by stage when per-stage), or why there is
    none."""
    if record.network is not None:
        return record.network.short()
    return record.problem or "no design stored"


def _per_stage(record: TrialRecord, field: Callable[[BlockConfig], str | None]) -> str | None:
    """One field of a trial's design; in a per-stage design, each stage's joined by ``/``
    (``post/post/pre``, ``-`` where a stage does not use it)."""
    net = record.network
    if net is None:
        return None
    if not net.per_stage:
        return field(net.block)
    return "/".join(field(d) or "-" for d in net.designs)


def trial_note(record: TrialRecord) -> str | None:
    """What went wrong with a trial, in one line (a bad stored design, a failure, a pruning),
    shortened: a stored reason may be of any length."""
    note = record.problem or record.fail_reason
    if note is None and record.state == "PRUNED":
        note = f"pruned at epoch {record.pruned_at_epoch or '?'}"
    return None if note is None else short(note)


def has_reeval(records: list[TrialRecord]) -> bool:
    return any(reeval_accuracy(r)[0] is not None for r in records)


def fingerprint(records: list[TrialRecord]) -> tuple:
    """A small key that changes when a trial is added, changes state or reports an epoch."""
    return tuple(
        (r.number, r.state, len(_curves(r).get("val_acc") or []), r.reeval is not None)
        for r in records
    )


# ---------------------------------------------------------------------------------------------
# Study summary and trial table


class StudySummary(NamedTuple):
    n_trials: int
    states: dict[str, int]
    n_front: int
    hypervolume: float
    best: TrialRecord | None  # the most accurate complete trial
    references: tuple[str, ...]
    hypervolume_over: str = ""  # what the hypervolume is measured over and against
    limits: str = ""  # the study's limits (--max-params ...), "" when it has none


def study_summary(records: list[TrialRecord], config: StudyConfig | None = None) -> StudySummary:
    """Counts by state, the front's size, hypervolume and the most accurate design, on the
    study's objectives (`config`; accuracy and parameters when None)."""
    spec = hypervolume_spec(config, records)
    states: dict[str, int] = {}
    for r in records:
        states[r.state] = states.get(r.state, 0) + 1
    done = [r for r in records if r.complete and r.val_acc is not None]
    best = max(done, key=lambda r: r.val_acc, default=None)
    return StudySummary(
        n_trials=len(records),
        states={s: states[s] for s in sorted(states, key=_state_rank)},
        n_front=len(pareto_front(records, spec.objectives)),
        hypervolume=hypervolume(records, spec),
        best=best,
        references=tuple(sorted({r.reference for r in records if r.is_reference})),
        hypervolume_over=spec.describe(),
        limits=limits_text(config),
    )


def limits_text(config: StudyConfig | None) -> str:
    """The study's limits in words (``params <= 50,000``), or ""."""
    if config is None or not config.constraints:
        return ""
    return ", ".join(f"{k} <= {v:,g}" for k, v in sorted(config.constraints.items()))


TABLE_COLUMNS = (
    "trial",
    "label",
    "kind",
    "state",
    "val_acc",
    "params",
    "flops",
    "latency_ms",
    "on_front",
    "verification",
    "design",
    "test_acc",
    "test_acc_std",
    "bn",
    "wide_kind",
    "pool_type",
    "epochs",
    "train_time_s",
    "note",
)


def trials_frame(
    records: list[TrialRecord],
    config: StudyConfig | None = None,
    verification: dict[int, str] | None = None,
) -> pd.DataFrame:
    """One row per trial with its state, objectives, design and a note on what went wrong;
    ``on_front`` is membership of the front on the study's objectives, ``verification`` where
    the claims of a front design stand (`app.verdicts.trial_statuses`, by trial number)."""
    front = {r.number for r in pareto_front(records, _objectives(config))}
    verification = verification or {}
    rows = []
    for r in records:
        acc, source = accuracy(r)
        test_acc, test_std = reeval_accuracy(r)
        curves = _curves(r)
        rows.append(
            {
                "trial": r.number,
                "label": r.label(),
                "kind": "reference" if r.is_reference else "search",
                "state": r.state,
                "val_acc": acc if source == "final" else None,
                "params": r.params,
                "flops": r.flops,
                "latency_ms": r.latency_ms,
                "test_acc": test_acc,
                "test_acc_std": test_std,
                "on_front": r.number in front,
                "verification": verification.get(r.number),
                "design": design(r),
                "bn": _per_stage(r, lambda b: b.bn),
                "wide_kind": _per_stage(r, lambda b: b.wide_kind if b.wide else None),
                "pool_type": _per_stage(r, lambda b: b.pool_type if b.has_pool_branch else None),
                "epochs": len(curves.get("epoch") or []) or None,
                "train_time_s": r.train_time_s,
                "note": trial_note(r),
            }
        )
    frame = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for col in (
        "val_acc",
        "params",
        "flops",
        "latency_ms",
        "test_acc",
        "test_acc_std",
        "epochs",
        "train_time_s",
    ):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def filter_trials(
    frame: pd.DataFrame, states: list[str] | None = None, kinds: list[str] | None = None
) -> pd.DataFrame:
    """The rows whose state is in `states` and kind (reference/search) in `kinds`; None
    keeps all."""
    keep = pd.Series(True, index=frame.index)
    if states is not None:
        keep &= frame["state"].isin(states)
    if kinds is not None:
        keep &= frame["kind"].isin(kinds)
    return frame[keep]


# ---------------------------------------------------------------------------------------------
# Pareto chart


class Point(NamedTuple):
    number: int
    x: float
    y: float
    label: str  # "#12", or "v1" for a reference
    design: str
    state: str
    error: float | None = None  # standard deviation of y, when re-evaluated
    note: str = ""  # where y comes from when it is not the final accuracy


class ParetoInfo(NamedTuple):
    x_key: str
    x_label: str
    y_key: str
    y_label: str
    log_x: bool
    by_state: dict[str, list[Point]]  # searched trials, per state
    references: list[Point]
    front: list[Point]  # sorted by x
    not_drawn: dict[str, int]  # per state, trials lacking x or y
    limit: float | None = None  # the study's limit on x, drawn as a line (None: no limit)
    title: str = ""  # what the front is: its budget, and how many of its claims held


def pareto_info(
    records: list[TrialRecord],
    x: str = "params",
    y: str = "val_acc",
    log_x: bool = False,
    config: StudyConfig | None = None,
    title: str = "",
) -> ParetoInfo:
    """Every trial placed at (x, accuracy), split by state, with the references and the front.

    x: ``params``, ``flops`` or ``latency_ms``. y: ``val_acc`` (the front is the study's own,
    `explorer.analysis.pareto_front` on its objectives, the same the summary and the exporter use)
    or ``reeval`` (re-evaluated trials only). `title`: the chart's (`app.verdicts.front_label`).
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {list(X_AXES)}, got {x!r}")
    if y not in Y_AXES:
        raise ValueError(f"y must be one of {list(Y_AXES)}, got {y!r}")
    by_state: dict[str, list[Point]] = {}
    references: list[Point] = []
    not_drawn: dict[str, int] = {}
    points: dict[int, Point] = {}
    for r in records:
        point = _point(r, x, y)
        if point is None:
            not_drawn[r.state] = not_drawn.get(r.state, 0) + 1
            continue
        points[r.number] = point
        if r.is_reference:
            references.append(point)
        else:
            by_state.setdefault(r.state, []).append(point)
    if y == "val_acc":
        front = [points[r.number] for r in pareto_front(records, _objectives(config))
                 if r.number in points]  # fmt: skip
    else:
        front = front_2d([p for p in points.values() if p.state == "COMPLETE"])
    return ParetoInfo(
        x_key=x,
        x_label=OBJECTIVES[x].label,
        y_key=y,
        y_label=Y_AXES[y],
        log_x=log_x,
        by_state={s: by_state[s] for s in sorted(by_state, key=_state_rank)},
        references=sorted(references, key=lambda p: p.label),
        front=sorted(front, key=lambda p: (p.x, -p.y)),
        not_drawn={s: not_drawn[s] for s in sorted(not_drawn, key=_state_rank)},
        limit=(config.constraints.get(x) if config is not None else None),
        title=title,
    )


def front_2d(points: list[Point]) -> list[Point]:
    """The points no other point beats (higher or equal y at lower or equal x, one strictly)."""
    fronts = non_dominated_fronts([(p.x, -p.y) for p in points])
    return sorted((points[i] for i in fronts[0]) if fronts else [], key=lambda p: (p.x, -p.y))


def _point(r: TrialRecord, x: str, y: str) -> Point | None:
    xv = r.value(x)
    if not _is_number(xv):
        return None
    error = None
    if y == "reeval":
        yv, error = reeval_accuracy(r)
        note = ""
    else:
        yv, source = accuracy(r)
        note = "" if source == "final" else source
    if yv is None:
        return None
    return Point(r.number, float(xv), yv, r.label(), design(r), r.state, error, note)


# ---------------------------------------------------------------------------------------------
# Search progress


class ProgressInfo(NamedTuple):
    hypervolume: list[tuple[int, float]]  # (trial number, hypervolume up to it)
    accuracy: dict[str, list[Point]]  # per state: x = trial number, y = accuracy
    best_so_far: list[tuple[int, float]]  # running best final accuracy
    references: dict[str, float]  # reference label -> final accuracy


def progress_info(records: list[TrialRecord], config: StudyConfig | None = None) -> ProgressInfo:
    """Hypervolume and accuracy over trial numbers, with the references' accuracies."""
    accuracy_by_state: dict[str, list[Point]] = {}
    best_so_far: list[tuple[int, float]] = []
    best = -math.inf
    references: dict[str, float] = {}
    for r in sorted(records, key=lambda r: r.number):
        acc, source = accuracy(r)
        if acc is None:
            continue
        note = "" if source == "final" else source
        accuracy_by_state.setdefault(r.state, []).append(
            Point(r.number, float(r.number), acc, r.label(), design(r), r.state, None, note)
        )
        if source == "final" and r.complete:
            if r.is_reference:
                references.setdefault(r.reference, acc)
            if acc > best:
                best = acc
            best_so_far.append((r.number, best))
    return ProgressInfo(
        hypervolume=hypervolume_curve(records, hypervolume_spec(config, records)),
        accuracy={s: accuracy_by_state[s] for s in sorted(accuracy_by_state, key=_state_rank)},
        best_so_far=best_so_far,
        references=dict(sorted(references.items())),
    )


class ProxyInfo(NamedTuple):
    """How well each zero-cost proxy (scored before training) ranks the trained designs."""

    correlations: dict[str, float]  # score name -> Spearman rank correlation with val_acc
    trials: int  # complete trials scored by every proxy shown
    points: dict[str, list[tuple[int, float, float]]]  # proxy -> (trial, score, val_acc)
    message: str | None  # why there is nothing to show


MIN_PROXY_TRIALS = 5


def proxy_info(records: list[TrialRecord], min_trials: int = MIN_PROXY_TRIALS) -> ProxyInfo:
    """Spearman rank correlation of each stored proxy score, and of the parameter count alone
    (a strong baseline), with final validation accuracy over the complete trials."""
    scored: dict[str, list[tuple[int, float, float]]] = {}
    for r in records:
        acc = r.val_acc
        proxies = r.proxies
        if not r.complete or acc is None or not isinstance(proxies, dict):
            continue
        scores = {str(k): _number_or_none(v) for k, v in proxies.items()}
        scores["params"] = r.params
        for name, value in scores.items():
            if value is not None:
                scored.setdefault(name, []).append((r.number, value, acc))
    usable = {k: v for k, v in scored.items() if len(v) >= min_trials}
    if "params" not in usable or len(usable) < 2:
        return ProxyInfo(
            {},
            0,
            {},
            f"Proxy scores need at least {min_trials} complete trials that stored them "
            "(the search scores every trial unless --no-proxies).",
        )
    correlations = {
        name: spearman([p[1] for p in pts], [p[2] for p in pts]) for name, pts in usable.items()
    }
    order = sorted(correlations, key=lambda k: (k == "params", -abs(correlations[k])))
    return ProxyInfo(
        {k: correlations[k] for k in order},
        min(len(v) for v in usable.values()),
        {k: usable[k] for k in order if k != "params"},
        None,
    )


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when a side is constant."""
    rx, ry = pd.Series(x).rank(), pd.Series(y).rank()
    value = rx.corr(ry)
    return float(value) if value == value else math.nan


class ImportanceInfo(NamedTuple):
    importances: dict[str, float]  # parameter -> importance, largest first
    message: str | None  # why there are none


def param_importances(
    study: optuna.Study, min_trials: int = MIN_IMPORTANCE_TRIALS
) -> ImportanceInfo:
    """Importance of each search parameter for validation accuracy (the first objective).

    Optuna's default evaluator ranks parameters for reaching *low* target values, so the target
    is the negated accuracy. Fewer than `min_trials` complete trials give a message instead.
    """
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values and t.params
    ]
    if len(complete) < min_trials:
        return ImportanceInfo(
            {},
            f"parameter importances need at least {min_trials} complete trials "
            f"({len(complete)} so far)",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study, target=lambda t: -t.values[0]
            )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return ImportanceInfo({}, f"parameter importances are not available yet: {exc}")
    if not importances:
        return ImportanceInfo({}, "parameter importances are not available yet")
    ranked = sorted(importances.items(), key=lambda kv: -kv[1])
    return ImportanceInfo({k: float(v) for k, v in ranked}, None)


# ---------------------------------------------------------------------------------------------
# Helpers


def _objectives(config: StudyConfig | None) -> tuple[str, ...]:
    return config.objectives if config is not None else DEFAULT_OBJECTIVES


def _curves(record: TrialRecord) -> dict[str, list]:
    return record.curves


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number_or_none(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _format(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    return str(value)


def _state_rank(state: str) -> tuple[int, str]:
    return (STATES.index(state) if state in STATES else len(STATES), state)


# ---------------------------------------------------------------------------------------------
# Successive-halving rungs


def rung_label(config: StudyConfig | None, rung: int) -> str:
    """``rung 2 (top): quickx9`` / ``rung 0: 1/9 of quickx9``."""
    if config is None or config.rungs <= 1:
        return "the study's budget"
    factor = config.eta ** (config.rungs - 1 - rung)
    if factor == 1:
        return f"rung {rung} (top): {config.budget}"
    return f"rung {rung}: 1/{factor} of {config.budget}"


def front_budget(config: StudyConfig | None, rung: int | None = None) -> str | None:
    """The budget the search front shown was trained at: ``quick``, ``quickx9 (rung 2, the
    top)`` or ``1/9 of quickx9 (rung 0)``; None without the study's settings."""
    if config is None:
        return None
    if config.rungs <= 1 or rung is None:
        return config.budget
    factor = config.eta ** (config.rungs - 1 - rung)
    if factor == 1:
        return f"{config.budget} (rung {rung}, the top)"
    return f"1/{factor} of {config.budget} (rung {rung})"


RUNG_COLUMNS = ("rung", "budget", "designs finished", "complete", "pruned", "running",
                "queued", "failed")  # fmt: skip


def rung_counts_frame(
    by_rung: dict[int, list[TrialRecord]], config: StudyConfig | None
) -> pd.DataFrame:
    """One row per rung, bottom first: how many searched designs finished, ran or wait there
    (references, which run at every rung, not counted)."""

    rows = [
        (
            rung,
            rung_label(config, rung),
            c["finished"],
            c["complete"],
            c["pruned"],
            c["running"],
            c["waiting"],
            c["failed"],
        )  # fmt: skip
        for rung, c in rung_counts(by_rung).items()
    ]
    return pd.DataFrame(rows, columns=list(RUNG_COLUMNS))


PATH_COLUMNS = ("rung", "trial", "state", "val_acc", "last-epoch train loss", "train_time_s",
                "promoted as")  # fmt: skip


def design_path_frame(
    by_rung: dict[int, list[TrialRecord]], rung: int, number: int
) -> pd.DataFrame:
    """A design's trials across rungs, bottom first: accuracy, training loss and time at each,
    and its rank where it was promoted from."""

    rows = []
    for k, r in design_path(by_rung, rung, number):
        acc, source = accuracy(r)
        promo = r.promotion or {}
        rank, among = promo.get("rank", 0), promo.get("among")
        promoted = (
            f"#{rank + 1} of {among} at rung {promo.get('from_rung', k - 1)}"
            if _is_int(rank) and _is_int(among)
            else ""
        )
        rows.append((k, r.label(), r.state, acc, r.final_train_loss, r.train_time_s, promoted))
    return pd.DataFrame(rows, columns=list(PATH_COLUMNS))
