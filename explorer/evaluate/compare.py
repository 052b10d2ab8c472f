"""The paired verdict of a re-evaluation: for each reference, the design chosen on validation among
those no larger, and its test accuracy against the reference's over the seeds both ran, judged by
the tool's one rule (`explorer.analysis.verdicts`: a paired t-test, Holm-corrected across the
references of one re-evaluation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from ..analysis import RULE, Reeval, Verdict, compare, holm
from .budget_words import Budget
from .retrain import Target


@dataclass(frozen=True)
class Comparison:
    """The design chosen on re-evaluation validation accuracy among those with no more
    parameters than a reference, and its test accuracy against the reference's, seed by seed."""

    reference: Target
    reference_result: Reeval
    design: Target
    design_result: Reeval
    verdict: Verdict | None = None  # set by `comparisons`, judged with the other references

    @property
    def paired_seeds(self) -> int:
        """How many seeds both ran (seeds 0..n-1): what the difference rests on."""
        return min(self.design_result.seeds, self.reference_result.seeds)

    @property
    def differences(self) -> tuple[float, ...]:
        """Design minus reference test accuracy, seed by seed."""
        n = self.paired_seeds
        return tuple(
            d - r
            for d, r in zip(self.design_result.test_acc[:n], self.reference_result.test_acc[:n])
        )

    def judged_alone(self) -> Verdict:
        return compare(self.differences)


def comparisons(targets: Sequence[Target], results: dict[int | str, Reeval]) -> list[Comparison]:
    """For each reference, the searched design with the best mean re-evaluation validation
    accuracy at equal or fewer parameters (fewer parameters breaks ties), if any. Test accuracy
    plays no part in the choice."""
    out = []
    designs = [t for t in targets if t.reference is None and results.get(t.key, None)]
    for ref in (t for t in targets if t.reference is not None):
        r = results.get(ref.key)
        if r is None or not r.seeds:
            continue
        fits = [t for t in designs if t.params <= ref.params and results[t.key].seeds]
        if fits:
            best = max(fits, key=lambda t: (results[t.key].val_acc_mean, -t.params))
            out.append(Comparison(ref, r, best, results[best.key]))
    judged = holm([c.judged_alone() for c in out])
    return [dataclasses.replace(c, verdict=v) for c, v in zip(out, judged)]


def _seed_range(n: int) -> str:
    return "seed 0" if n == 1 else f"seeds 0..{n - 1}"


def report(
    study: optuna.Study,
    targets: Sequence[Target],
    results: dict[int | str, Reeval],
    budget: Budget | None = None,
) -> str:
    """The closing table (validation and test accuracy of each design), then the verdicts:
    chosen on validation, reported on test."""
    counts = sorted({r.seeds for r in results.values() if r.seeds})
    lines = [f"re-evaluation of study {study.study_name!r}"]
    if budget is not None:
        lines.append(f"budget {budget.name}: {budget.text}")
    if counts:
        seeds = _seed_range(counts[-1]) if len(counts) == 1 else "seeds 0..n-1"
        lines.append(f"{seeds}, the same for every design; mean ± standard deviation over seeds")
    lines += [
        "",
        f"{'design':<12} {'params':>8} {'search val':>10} {'re-eval val':>11}  re-eval test",
        f"{'':<12} {'':>8} {'':>10} {'(chooses)':>11}  (reports)",
    ]
    for t in targets:
        r = results.get(t.key)
        search = f"{t.search_val_acc:.4f}" if t.search_val_acc is not None else "-"
        val = f"{r.val_acc_mean:.4f}" if r and r.seeds else "-"
        lines.append(
            f"{t.label:<12} {t.params:>8,} {search:>10} {val:>11}  {r.short() if r and r.seeds else '-'}"
        )
    found = comparisons(targets, results)
    if found:
        lines += [
            "",
            "chosen on re-evaluation validation accuracy among designs with no more parameters "
            "than each reference; test accuracy is only reported, never used to choose; "
            f"the verdict: {RULE}:",
        ]
    for c in found:
        where = f"#{c.reference.key}, " if isinstance(c.reference.key, int) else ""
        lines.append(
            f"vs {c.reference.reference} ({where}{c.reference.params:,} params): "
            f"{c.design.label} ({c.design.params:,} params), "
            f"val {c.design_result.val_acc_mean:.4f} vs {c.reference_result.val_acc_mean:.4f}; "
            f"test {c.design_result.test_acc_mean:.4f} vs {c.reference_result.test_acc_mean:.4f}, "
            f"paired difference {c.verdict.text()}"
        )
    return "\n".join(lines).rstrip()
