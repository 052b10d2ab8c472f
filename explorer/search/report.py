"""What the search prints: the progress bar with one line per finished trial, and the closing
summary (the front beside the references, and the commands to run next)."""

from __future__ import annotations

import time

import optuna
from tqdm.auto import tqdm

from ..analysis import (
    DEFAULT_OBJECTIVES,
    Reeval,
    feasible,
    hypervolume,
    hypervolume_spec,
    pareto_front,
    rung_counts,
    rung_records,
    study_records,
)
from ..store import (
    StudyConfig,
    TrialRecord,
    default_storage,
    is_search_trial,
    redact,
    storage_of,
    trial_attr,
)
from ..usage import command
from .study import FINISHED
from .verification import (
    DEFAULT_CAP,
    HELD,
    NOT_HELD,
    PLAN_ATTR,
    UNCHECKED,
    UNDECIDED,
    VERIFY_FACTOR,
    stored_plan,
    verification_budget_name,
    verified_claims,
)


class Progress:
    """A progress bar over search trials (new designs at the bottom rung), with one line per
    finished trial of any rung."""

    def __init__(
        self, rungs: optuna.Study | dict[int, optuna.Study], target: int, quiet: bool
    ) -> None:
        self.rungs = rungs if isinstance(rungs, dict) else {0: rungs}
        self.target, self.quiet = target, quiet
        self.seen: set[tuple[str, int]] = set()
        self.start = time.time()
        done = self._finished_search()
        self.bar = tqdm(
            total=target,
            initial=min(done, target),
            unit="trial",
            dynamic_ncols=True,
            disable=quiet,
            desc="search",
        )
        for study in self.rungs.values():
            for t in study.get_trials(deepcopy=False):
                if t.state.is_finished():
                    self.seen.add((study.study_name, t.number))

    def _finished_search(self) -> int:
        return sum(
            1
            for t in self.rungs[min(self.rungs)].get_trials(deepcopy=False, states=FINISHED)
            if is_search_trial(t)
        )

    def update(self) -> None:
        several, top_rung = len(self.rungs) > 1, max(self.rungs)
        top = []
        for rung, study in self.rungs.items():
            trials = study.get_trials(deepcopy=False)
            for t in trials:
                if t.state.is_finished() and (study.study_name, t.number) not in self.seen:
                    self.seen.add((study.study_name, t.number))
                    if not self.quiet:
                        line = trial_line(TrialRecord.from_trial(t))
                        self.bar.write(f"rung {rung} {line}" if several else line)
            if rung == top_rung:
                top = trials
        done = self._finished_search()
        self.bar.n = min(done, self.target)
        accs = [trial_attr(t, "val_acc") for t in top if t.state.name == "COMPLETE"]
        best = max((a for a in accs if isinstance(a, (int, float))), default=None)
        if best is not None:
            where = "top rung " if several else ""
            self.bar.set_postfix_str(f"best {where}acc {best:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def trial_line(r: TrialRecord) -> str:
    """One log line for a finished trial."""
    tag = f"[{r.reference}]" if r.reference else ""
    head = f"trial {r.number:>4}{tag:<5} {r.state.lower():<8}"
    if r.state == "FAIL":
        return f"{head} {r.fail_reason or 'failed'}"
    if r.skipped:
        return f"{head} {r.skipped}, not trained"
    acc = r.val_acc
    if acc is None:
        curve = r.curves.get("val_acc") or []
        acc = curve[-1] if curve else float("nan")
        head += f" at epoch {r.pruned_at_epoch or len(curve)}"
    design = r.network.short() if r.network else "?"
    if r.duplicate_of is not None:
        design += f"  (same design as trial {r.duplicate_of}, not retrained)"
    return (
        f"{head} acc {acc:.4f}  params {r.params or 0:>8,}  "
        f"time {r.train_time_s or 0:5.1f}s  {design}"
    )


def summary(study: optuna.Study, storage_url: str) -> str:
    """The closing table: Pareto-optimal designs beside the references, and what to run next."""
    records = study_records(study)
    config = StudyConfig.from_study(study.user_attrs)
    objectives = config.objectives if config else DEFAULT_OBJECTIVES
    front = pareto_front(records, objectives)
    refs = [r for r in records if r.reference and r.complete]
    rows = [(r, "front") for r in front if not r.reference] + [(r, "reference") for r in refs]
    reevals = {r.number: _reeval_text(r) for r, _ in rows}
    reeval_col = any(reevals.values())
    spec = hypervolume_spec(config, records)
    lines = [
        f"study {study.study_name!r}: {sum(r.complete for r in records)} complete, "
        f"{sum(r.state == 'PRUNED' for r in records)} pruned, {sum(r.state == 'FAIL' for r in records)} failed; "
        f"hypervolume {hypervolume(records, spec):.4f} {spec.describe()}",
    ]
    if config is not None:
        lines.append(f"network: {config.network_text()}")
    if config is not None and config.rungs > 1:
        lines.append(rungs_line(study, config))
    if config is not None and config.constraints:
        over = sum(1 for r in records if not feasible(r))
        limits = ", ".join(f"{k} <= {v:,g}" for k, v in sorted(config.constraints.items()))
        lines.append(f"limits: {limits}; {over} design(s) over them, left off the front")
    lines += [
        "",
        f"{'trial':>7}  {'role':<9} {'val acc':>7} "
        + (f"{'re-evaluated test acc':<24} " if reeval_col else "")
        + f"{'params':>9} {'MFLOPs':>8} {'lat ms':>7}  design",
    ]
    for r, role in rows:
        role = r.reference if role == "reference" else "front"
        nan = float("nan")
        lines.append(
            f"{r.number:>7}  {role:<9} {r.val_acc if r.val_acc is not None else nan:7.4f} "
            + (f"{reevals[r.number] or '-':<24} " if reeval_col else "")
            + f"{r.params or 0:>9,} "
            f"{(r.flops or 0) / 1e6:8.2f} {r.latency_ms if r.latency_ms is not None else nan:7.2f}"
            f"  {r.network.short() if r.network else '?'}"
        )
    lines += claim_lines(study, config, records)
    lines.append(
        "(FLOPs per image are 2 x multiply-adds; latency at batch 1 on the trial's device"
        + (
            "; re-evaluated: test accuracy mean ± std over seeds, python -m explorer.evaluate)"
            if reeval_col
            else ")"
        )
    )

    where = [] if storage_url == default_storage() else ["--storage", redact(storage_url)]
    name = study.study_name
    lines += [
        "",
        "next:",
        f"  {command('dashboard', *where, '--study', name)}",
        f"  {command('evaluate', '--study', name, *where, '--pareto')}"
        f"   # retrain the front longer (10x the {_budget_word(config)}), 3 seeds",
        f"  {command('export', '--study', name, *where, '--best', '-o', 'best_block.py')}",
        f"  {command('ablate', '--study', name, *where)}"
        "   # why v2 beats v1, one change at a time, paired seeds",
    ]
    return "\n".join(lines)


def claim_lines(
    study: optuna.Study, config: StudyConfig | None, records: list[TrialRecord] | None = None
) -> list[str]:
    """What the search may claim against v1 and v2: each claim its verification race upheld,
    with its difference, interval and seeds; the claims it decided against, and those it left
    undecided or never checked, listed as such. For a study never verified, how many front
    designs scored above each reference with no more parameters, said to be single unverified
    runs."""
    checks = verified_claims(study, config, records)
    if not checks:
        return []
    where = "the top rung" if config is not None and config.rungs > 1 else "the search budget"
    if all(c.status == UNCHECKED for c in checks):
        why = (
            "not verified: the race's share of the time ran out before its first look (rerun "
            "with --timeout SECONDS to give it longer)"
            if PLAN_ATTR in study.user_attrs
            else f"not verified (--verify-seeds {DEFAULT_CAP} races them at {VERIFY_FACTOR}x the budget)"
        )
        return [
            f"{sum(c.reference.reference == ref for c in checks)} front design(s) scored above "
            f"{ref} with no more parameters: single runs at {where}, {why}"
            for ref in sorted({c.reference.reference for c in checks})
        ]
    plan = stored_plan(study)
    held = [c for c in checks if c.status == HELD]
    out = [
        f"claims against v1/v2, raced at {verification_budget_name(study)} ({plan.first} to "
        f"{plan.cap} paired seeds, test accuracy, design minus reference, intervals Holm-corrected "
        f"over the {len(checks)} claims): {len(held)} of {len(checks)} held"
    ]
    for status in (HELD, NOT_HELD, UNDECIDED, UNCHECKED):
        mine = [c for c in checks if c.status == status]
        note = {UNDECIDED: " (time ran out; not stated)", UNCHECKED: " (no run; not stated)"}
        for c in mine:
            out.append(f"  {status}{note.get(status, '')}: {c.text()}")
    return out


def _budget_word(config: StudyConfig | None) -> str:
    if config is not None and config.rungs > 1:
        return f"top rung's budget, {config.budget}"
    return "study's budget"


def rungs_line(study: optuna.Study, config: StudyConfig) -> str:
    """``rungs (eta 3): 0 quick 100 designs (52 pruned) -> 1 quickx3 34 -> 2 quickx9 12; the
    table is the top rung's``."""

    counts = rung_counts(rung_records(storage_of(study), study, config))
    parts = []
    for rung in range(config.rungs):
        c = counts.get(rung, {"finished": 0, "pruned": 0, "running": 0})
        factor = config.eta ** (config.rungs - 1 - rung)
        size = config.budget if factor == 1 else f"1/{factor} of {config.budget}"
        extra = [f"{c[k]} {k}" for k in ("pruned", "running") if c[k]]
        parts.append(
            f"{rung} ({size}): {c['finished']}" + (f" ({', '.join(extra)})" if extra else "")
        )
    return (
        f"rungs (eta {config.eta}), designs finished per rung: {' -> '.join(parts)}; the table is "
        "the top rung's, v1 and v2 trained at every rung"
    )


def _reeval_text(r: TrialRecord) -> str:
    """``0.8812 ± 0.0031 (3 seeds)`` from a record's re-evaluation, or "" when it has none."""

    try:
        reeval = Reeval.from_dict(r.reeval)
    except ValueError:
        return ""
    return f"{reeval.test_acc_mean:.4f} ± {reeval.test_acc_std:.4f} ({reeval.seeds}x)"
