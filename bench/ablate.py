"""The v1 -> v2 ablation ladder of a study, measured and written up: what each change from GoogLeNet's
block to BN-Inception's is worth, with paired seeds.

    python -m bench ablate --storage S --study NAME              # train what is missing, print
    python -m bench ablate --storage S --study NAME --write      # and write BENCHMARKS.md + SVG

Runs `python -m explorer.ablate` on the study (resumable: a rerun trains only the runs not
stored yet), then prints each step's paired difference in validation and test accuracy as a
markdown table; with ``--write`` it replaces the section "Ablation: v1 to v2" of BENCHMARKS.md
and draws the main path as a waterfall of test accuracy in ``docs/ablation-v1-v2.svg``.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import date

from explorer.ablate import (
    GROUP_TITLES,
    Measured,
    collect,
    find_ablation,
    measure,
    reused_runs,
    stored_ladders,
)
from explorer.ablate import (
    main as run_ablation,
)
from explorer.evaluate import resolve_budget, top_rung_budget
from explorer.store import load_study, open_storage, study_config

from ._common import ROOT, machine, publish

SECTION = "Ablation: v1 to v2"
SVG = ROOT / "docs" / "ablation-v1-v2.svg"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--storage", required=True, help="the study's journal file or database URL")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--seeds", type=int, default=3, help="seeds per design (default 3)")
    p.add_argument("--budget", default="top", help="as explorer.ablate's --budget (default top)")
    p.add_argument("--write", action="store_true", help="write BENCHMARKS.md and the SVG")
    return p.parse_args(argv)


def table(measured: Measured) -> list[str]:
    """Designs with their means, then steps with their paired differences, as markdown."""
    ladder = measured.stored.ladder
    out = ["| design | block | val acc (mean) | test acc (mean) |", "|---|---|---|---|"]
    for design, (val, test) in zip(ladder.designs, measured.means, strict=True):
        out.append(f"| {design.name} | `{design.block.short()}` | {val:.4f} | {test:.4f} |")
    out += [
        "",
        "| step | Δ params | Δ MFLOPs | Δ val acc | Δ test acc |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(measured.steps):
        name = f"{i + 1}. {r.label}" + (" (other order)" if r.step.order == "other" else "")
        flops = f"{(r.flops[1] - r.flops[0]) / 1e6:+.2f}" if r.flops else "-"
        cells = [name, f"{r.params[1] - r.params[0]:+,}", flops, r.val.text(), r.test.text()]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if measured.interaction_val is not None:
        out += [
            "",
            "Interaction of batch norm and the factorized wide path (what one adds with the other "
            f"minus what it adds alone): val {measured.interaction_val.text()}, test "
            f"{measured.interaction_test.text()}.",
        ]
    return out


def svg(measured: Measured) -> str:
    """The main path as a waterfall of test accuracy: start, each step ± one SE, end."""
    main = [r for r in measured.steps if r.step.order == "main"]
    start = measured.means[main[0].step.before][1]
    bars, level = [(main[0].before.name, 0.0, start, 0.0, "#4c78a8")], start
    for r in main:
        color = "#bab0ac" if not r.test.decided else ("#2ca02c" if r.test.mean > 0 else "#d62728")
        se = 0.0 if math.isnan(r.test.se) else r.test.se
        bars.append((GROUP_TITLES[r.group], level, r.test.mean, se, color))
        level += r.test.mean
    bars.append((main[-1].after.name, 0.0, measured.means[main[-1].step.after][1], 0.0, "#4c78a8"))
    tops = [b + d for _, b, d, _, _ in bars] + [b for _, b, _, _, _ in bars[1:-1]]
    low, high = min(tops) - 0.01, max(tops) + 0.01
    w, h, left, bottom, slot = 760, 340, 70, 40, 110

    def y(v: float) -> float:
        return 20 + (h - bottom - 20) * (high - v) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="14" text-anchor="middle" font-size="14">{measured.stored.ladder.title}: test accuracy, '
             f'{measured.seeds} paired seeds, ± one SE (grey, n.d.: not distinguishable)</text>']  # fmt: skip
    for k in range(5):
        v = low + (high - low) * k / 4
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')  # fmt: skip
    for i, (label, base, delta, se, color) in enumerate(bars):
        x = left + 10 + i * slot
        lo, hi = (low, delta) if base == 0.0 else sorted((base, base + delta))
        parts.append(f'<rect x="{x}" y="{y(hi):.1f}" width="{slot - 30}" height="{max(1.0, y(lo) - y(hi)):.1f}" fill="{color}"/>')  # fmt: skip
        top = base + delta
        if se:
            cx = x + (slot - 30) / 2
            parts.append(f'<line x1="{cx}" x2="{cx}" y1="{y(top - se):.1f}" y2="{y(top + se):.1f}" stroke="black"/>')  # fmt: skip
        if base == 0.0:
            text = f"{delta:.4f}"
        else:
            text = f"{delta:+.4f}" if color != "#bab0ac" else "n.d."
        parts.append(f'<text x="{x + (slot - 30) / 2}" y="{y(max(top, base)) - 6:.1f}" text-anchor="middle">{text}</text>')  # fmt: skip
        parts.append(f'<text x="{x + (slot - 30) / 2}" y="{h - bottom + 18}" text-anchor="middle">{label}</text>')  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    argv_ablate = ["--storage", ns.storage, "--study", ns.study, "--seeds", str(ns.seeds),
                   "--budget", ns.budget, "--winner", "none"]  # fmt: skip
    code = run_ablation(argv_ablate)
    if code != 0:
        return code
    storage = open_storage(ns.storage, create=False)
    study = load_study(storage, ns.study)
    if ns.budget == "top":
        budget = top_rung_budget(study_config(study))
    else:
        budget = resolve_budget(study, ns.budget)
    chosen = next(
        s
        for s in stored_ladders(find_ablation(storage, ns.study))
        if s.ladder.title == "v1 -> v2" and s.budget == budget.name
    )
    runs = collect(
        find_ablation(storage, ns.study).get_trials(deepcopy=False),
        reused_runs(study, chosen.train_config),
    )
    measured = measure(chosen, runs, ns.seeds)
    if measured.missing:
        print(f"{measured.missing} runs missing: not writing a half-run result", file=sys.stderr)
        return 1
    body = [
        f"`python -m bench ablate --storage STORAGE --study {ns.study} --seeds {ns.seeds} --write` "
        f"(the ladder of `python -m explorer.ablate`), {date.today().isoformat()}, {machine()}.",
        f"Budget {chosen.budget} (the study's top rung); seeds 0..{ns.seeds - 1}, the same for "
        "every design; each step is after minus before, paired seed by seed, ± one standard error.",
        "",
        *table(measured),
    ]
    publish(SECTION, body, ns.write)
    if ns.write:
        SVG.parent.mkdir(exist_ok=True)
        SVG.write_text(svg(measured))
        print(f"wrote BENCHMARKS.md ({SECTION}) and {SVG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
