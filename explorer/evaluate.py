"""`python -m explorer.evaluate`: retrain chosen designs and the references over several seeds.

A search trains each design once, briefly, and ranks designs by one validation accuracy: a
difference of a point can be seed noise. This command retrains the chosen designs (the Pareto
front, given trial numbers or the top K by validation accuracy) and the v1/v2 reference designs
from scratch, once per seed, with a longer budget: ``long`` by default, `train.long_budget` of the
budget the study was searched with (ten times its training images). Each run records the
validation accuracy the trainer measured after the last epoch (the whole validation split, the
one the search used) and the test accuracy (whole test split).

Validation chooses, test reports. `comparisons` picks, for each reference, the design with the
highest mean re-evaluation *validation* accuracy among those with no more parameters, and only
then reports its test accuracy against the reference's: a paired difference over the seeds both
ran (seed ``s`` is the same seed for every design), with its standard error.

Where the results live. Optuna does not let a finished trial's attributes change, so each
design's results are a *study* user attribute::

    study.user_attrs["reeval:<trial number>"] = {
        "test_acc": [per-seed floats], "val_acc": [per-seed floats],   # seed 0, 1, ... in order
        "test_acc_mean": float, "test_acc_std": float,   # std over seeds, n - 1 in the denominator
        "val_acc_mean": float, "val_acc_std": float,
        "seeds": int, "budget": str,   # "long" or a name of train.BUDGETS
        "train_config": {TrainConfig fields},   # what each seed trained under
    }

Entries written before ``val_acc_mean``, ``val_acc_std`` and ``train_config`` existed still read
(`Reeval.from_dict` recomputes the means); their ``long`` was a fixed quick x 10 at batch 16, so
seeds are not added to them under today's ``long`` (``--restart`` retrains them).

A reference design with no trial in the study (a study searched with ``--no-references``) is
stored as ``reeval:v1`` / ``reeval:v2``. Read them all with `reeval_results(study)`. The
validation split is the one the search used (the study's dataset seed). Seed ``s`` initialises the
network with ``torch.manual_seed(s)`` and seeds the training stream with ``s``. Each finished seed
is stored at once, so an interrupted run resumes where it stopped, and asking for more seeds later
trains only the new ones. Run one re-evaluation per study at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from search_space import REFERENCES, NetworkConfig, network_params

from .records import TrialRecord
from .reeval import (  # noqa: F401 - the stored results are part of this command's API
    ATTR_PREFIX,
    LONG,
    Budget,
    Reeval,
    _budget,
    _mean,
    _std,
    base_budget,
    budget_names,
    reeval_key,
    reeval_results,
    resolve_budget,
)
from .results import DEFAULT_OBJECTIVES, pareto_front, study_records
from .storage import StorageError, default_storage, load_study, open_storage, study_names
from .study import study_config
from .usage import Parser, UsageError

DEFAULT_SEEDS = 3
DEFAULT_REFERENCES = ("v1", "v2")


@dataclass(frozen=True)
class Target:
    """A design to re-evaluate: a trial of the study, or a reference design it never trained."""

    key: int | str
    network: NetworkConfig
    reference: str | None = None
    search_val_acc: float | None = None

    @property
    def label(self) -> str:
        if isinstance(self.key, int):
            return f"#{self.key}" + (f" ({self.reference})" if self.reference else "")
        return str(self.key)

    @property
    def params(self) -> int:
        return network_params(self.network)


def _target(record: TrialRecord) -> Target:
    if record.network is None:
        raise UsageError(
            f"trial {record.number} has no valid design ({record.problem or 'none stored'})"
        )
    return Target(record.number, record.network, record.reference, record.val_acc)


def select_targets(
    study: optuna.Study,
    *,
    pareto: bool = False,
    trials: Sequence[int] = (),
    top: int | None = None,
    references: Sequence[str] = DEFAULT_REFERENCES,
) -> list[Target]:
    """The references, then the chosen designs (front sorted by parameters, or as given)."""
    records = study_records(study)
    by_number = {r.number: r for r in records}
    chosen: list[TrialRecord] = []
    if pareto:
        config = study_config(study)
        objectives = config.objectives if config is not None else DEFAULT_OBJECTIVES
        chosen = [r for r in pareto_front(records, objectives) if not r.reference]
        if not chosen:
            raise UsageError(
                f"study {study.study_name!r} has no complete searched design on its front"
            )
    for n in trials:
        if n not in by_number:
            raise UsageError(
                f"study {study.study_name!r} has no trial {n} (trials 0..{len(records) - 1})"
            )
        chosen.append(by_number[n])
    if top is not None:
        done = [r for r in records if r.complete and not r.reference and r.val_acc is not None]
        if not done:
            raise UsageError(f"study {study.study_name!r} has no complete searched design")
        chosen += sorted(done, key=lambda r: (-r.val_acc, r.number))[:top]
    targets = [_reference_target(records, name) for name in references]
    for record in chosen:
        target = _target(record)
        if all(t.key != target.key for t in targets):
            targets.append(target)
    return targets


def _reference_target(records: list[TrialRecord], name: str) -> Target:
    if name not in REFERENCES:
        raise UsageError(f"unknown reference {name!r}; choose from {', '.join(REFERENCES)}")
    for r in records:
        if r.reference == name and r.complete and r.network is not None:
            return _target(r)
    skeleton = next((r.network for r in records if r.network is not None), None)
    if skeleton is None:
        raise UsageError(f"no trial has a design to take the network skeleton from for {name}")
    return Target(name, dataclasses.replace(skeleton, block=REFERENCES[name]), name)


def train_and_test(
    network: NetworkConfig, data: Any, config: Any, device: Any, seed: int
) -> tuple[float, float]:
    """(validation accuracy, test accuracy) of the design trained from scratch with `seed`.

    Validation accuracy is the trainer's last-epoch figure (the first ``config.final_val_images``
    of the validation split, as in the search); test accuracy is over the whole test split.
    """
    import torch

    from search_space import build_network

    from . import train

    config = dataclasses.replace(config, seed=seed)
    torch.manual_seed(seed)
    model = build_network(network).to(device)
    try:
        val_acc = train.train(model, data, config, device).val_acc[-1]
    except train.DivergedError as exc:  # a real outcome of this design and seed: scored as it is
        print(f"  diverged ({exc}); scored as it stands", file=sys.stderr)
        _, val_acc = train.evaluate(model, data, device, "val", config.final_val_images)
    _, test_acc = train.evaluate(model, data, device, "test")
    return float(val_acc), float(test_acc)


def reevaluate(
    study: optuna.Study,
    targets: Sequence[Target],
    seeds: int,
    budget: str | Budget,
    data: Any,
    device: Any,
    restart: bool = False,
    run: Callable[..., tuple[float, float]] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[int | str, Reeval]:
    """Train each target until it has `seeds` runs under `budget`, storing each run as it ends.

    Every target trains seeds 0..seeds-1, so designs and references pair seed by seed. Raises
    `UsageError` before training anything if a target holds results of another budget (unless
    `restart`, which discards them).
    """
    budget = _budget(study, budget)
    run = run or train_and_test
    log = log or (lambda line: None)
    check_stored(study, targets, budget, restart)
    stored = reeval_results(study)
    results: dict[int | str, Reeval] = {}
    for t in targets:
        result = stored.get(t.key)
        if result is None or restart or not result.same_budget(budget):
            result = Reeval((), (), budget.name, budget.config.to_dict())
        for seed in range(result.seeds, seeds):
            start = time.perf_counter()
            val_acc, test_acc = run(t.network, data, budget.config, device, seed)
            result = result.added(val_acc, test_acc)
            study.set_user_attr(reeval_key(t.key), result.to_dict())
            log(
                f"{t.label:<10} seed {seed + 1}/{seeds}: val {val_acc:.4f} test {test_acc:.4f} "
                f"({time.perf_counter() - start:.0f} s)"
            )
        results[t.key] = result
    return results


def check_stored(
    study: optuna.Study, targets: Sequence[Target], budget: str | Budget, restart: bool = False
) -> None:
    """`UsageError` if a target holds results of another budget (and `restart` is not set)."""
    if restart:
        return
    budget = _budget(study, budget)
    stored = reeval_results(study)
    for t in targets:
        old = stored.get(t.key)
        if old is None or not old.seeds or old.same_budget(budget):
            continue
        if old.budget != budget.name:
            raise UsageError(
                f"{t.label} was re-evaluated with budget {old.budget!r} ({old.seeds} seeds); "
                f"pass --budget {old.budget} to add seeds, or --restart to discard them"
            )
        raise UsageError(
            f"{t.label} was re-evaluated under another definition of budget {old.budget!r} "
            f"({old.seeds} seeds, not {budget.text}); pass --restart to discard them"
        )


def runs_needed(
    study: optuna.Study,
    targets: Sequence[Target],
    seeds: int,
    budget: str | Budget,
    restart: bool = False,
) -> int:
    """How many training runs `reevaluate` would do."""
    budget = _budget(study, budget)
    stored = reeval_results(study)
    done = 0
    for t in targets:
        old = stored.get(t.key)
        if old is not None and old.same_budget(budget) and not restart:
            done += min(old.seeds, seeds)
    return len(targets) * seeds - done


@dataclass(frozen=True)
class Comparison:
    """The design chosen on re-evaluation validation accuracy among those with no more
    parameters than a reference, and its test accuracy against the reference's, seed by seed."""

    reference: Target
    reference_result: Reeval
    design: Target
    design_result: Reeval

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

    @property
    def difference(self) -> float:
        """Paired mean difference of test accuracy (design minus reference)."""
        return _mean(self.differences)

    @property
    def standard_error(self) -> float:
        """Of the paired mean difference: sd of the per-seed differences / sqrt(n); NaN for n < 2."""
        n = self.paired_seeds
        return _std(self.differences) / math.sqrt(n) if n > 1 else math.nan


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
    return out


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
            "than each reference; test accuracy is only reported, never used to choose:",
        ]
    for c in found:
        n = c.paired_seeds
        where = f"#{c.reference.key}, " if isinstance(c.reference.key, int) else ""
        se = (
            f"± {c.standard_error:.4f} (standard error over {n} paired seeds)"
            if n > 1
            else "(1 paired seed: no standard error)"
        )
        lines.append(
            f"vs {c.reference.reference} ({where}{c.reference.params:,} params): "
            f"{c.design.label} ({c.design.params:,} params), "
            f"val {c.design_result.val_acc_mean:.4f} vs {c.reference_result.val_acc_mean:.4f}; "
            f"test {c.design_result.test_acc_mean:.4f} vs {c.reference_result.test_acc_mean:.4f}, "
            f"paired difference {c.difference:+.4f} {se}"
        )
    return "\n".join(lines).rstrip()


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m explorer.evaluate`."""
    p = Parser(
        prog="python -m explorer.evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Retrain designs of a finished search, and the v1 (GoogLeNet) and v2 (BN-Inception)\n"
            "reference blocks, from scratch with a longer budget over several seeds (the same\n"
            "seeds for all); store per-seed validation and test accuracy on the study (study\n"
            "attribute reeval:<trial>), where the search summary, the exporter and the dashboard\n"
            "read it. The verdict against each reference chooses on validation accuracy and\n"
            "reports test accuracy, as a paired difference over seeds with its standard error.\n"
            "Seeds already done are not trained again: rerun to resume, or raise --seeds."
        ),
        epilog=(
            "examples:\n"
            "  python -m explorer.evaluate --pareto                     # the front, 3 seeds, long\n"
            "  python -m explorer.evaluate --study NAME --trial 17 42 --seeds 5\n"
            "  python -m explorer.evaluate --top 3 --budget quick --dry-run\n"
            "budgets: long = the budget the study was searched with (its top rung), with 10 x its\n"
            "training images (10 x its epochs where it trains on the whole split), so each run\n"
            "takes about 10 x a top-rung trial's time; smoke, quick and standard as in the search,\n"
            "and any of them with xK (quickx10: 10 x quick's images)."
        ),
    )
    p.add_argument(
        "--study", default=None, help="study name (default: the only study in the storage)"
    )
    p.add_argument(
        "--storage",
        default=None,
        help=f"journal file path or SQLAlchemy URL (default: $EXPLORER_STORAGE or {default_storage()})",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--pareto", action="store_true", help="the searched designs on the Pareto front"
    )
    which.add_argument("--trial", type=int, nargs="+", metavar="N", help="these trial numbers")
    which.add_argument(
        "--top", type=int, metavar="K", help="the K best by search validation accuracy"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=DEFAULT_SEEDS,
        help=f"runs per design, seeds 0..N-1 (default {DEFAULT_SEEDS})",
    )
    p.add_argument(
        "--budget",
        default="long",
        type=_budget_arg,
        metavar="BUDGET",
        help=f"training budget of each run: {', '.join(budget_names())}, or a preset with xK for "
        "K times its training images (quickx10) (default long: 10 x the study's own budget, "
        "its top rung's in a successive-halving study)",
    )
    p.add_argument(
        "--references",
        default=",".join(DEFAULT_REFERENCES),
        help="comma-separated reference designs to re-evaluate beside them, or 'none' (default v1,v2)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the dataset files (default: $EXPLORER_DATA, system packages, download)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument(
        "--restart", action="store_true", help="discard stored results of these designs first"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the designs and runs, train nothing"
    )
    p.add_argument("--quiet", action="store_true", help="no line per finished run")
    return p


def _budget_arg(text: str) -> str:
    from . import train

    if text == LONG or train.is_budget(text):
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from {', '.join(budget_names())}, or one with xK)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; `UsageError` for anything wrong."""
    ns = build_parser().parse_args(argv)
    if ns.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {ns.seeds}")
    if ns.top is not None and ns.top < 1:
        raise UsageError(f"--top must be at least 1, got {ns.top}")
    if ns.trial is not None and any(n < 0 for n in ns.trial):
        raise UsageError(f"--trial numbers must be >= 0, got {' '.join(map(str, ns.trial))}")
    refs = [r.strip() for r in ns.references.split(",") if r.strip()]
    if refs == ["none"]:
        refs = []
    unknown = [r for r in refs if r not in REFERENCES]
    if unknown:
        raise UsageError(
            f"unknown reference(s) {', '.join(unknown)}; choose from {', '.join(REFERENCES)} or none"
        )
    ns.references = tuple(dict.fromkeys(refs))
    return ns


def _open_study(storage_url: str | None, name: str | None) -> optuna.Study:
    storage = open_storage(storage_url, create=False)
    if name is None:
        names = study_names(storage)
        if len(names) != 1:
            raise UsageError(
                f"the storage holds {len(names)} studies ({', '.join(sorted(names)) or 'none'}); "
                "pick one with --study"
            )
        name = names[0]
    return load_study(storage, name)


def main(argv: Sequence[str] | None = None) -> int:
    from .data import DataError, load_dataset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        ns = parse_args(argv)
        study = _open_study(ns.storage, ns.study)
        targets = select_targets(
            study, pareto=ns.pareto, trials=ns.trial or (), top=ns.top, references=ns.references
        )
        budget = resolve_budget(study, ns.budget)
        check_stored(study, targets, budget, ns.restart)
        needed = runs_needed(study, targets, ns.seeds, budget, ns.restart)
        if ns.dry_run:
            print(
                f"{len(targets)} designs ({', '.join(t.label for t in targets)}), "
                f"{needed} runs to train under budget {budget.name} ({budget.text})"
            )
            return 0
        from . import train

        device = train.resolve_device(ns.device)
        data = None
        if needed:
            config = study_config(study)
            dataset = config.dataset if config is not None else "fashion-mnist"
            seed = config.split_seed if config is not None else 0  # the search's validation split
            data = load_dataset(dataset, data_dir=ns.data_dir, seed=seed).on(device)
        if not ns.quiet:
            print(
                f"study {study.study_name!r}: {len(targets)} designs, {needed} runs to train "
                f"({ns.seeds} seeds, {device}); budget {budget.name}: {budget.text}",
                file=sys.stderr,
            )
        results = reevaluate(
            study,
            targets,
            ns.seeds,
            budget,
            data,
            device,
            restart=ns.restart,
            log=None if ns.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
        )
    except (UsageError, StorageError, DataError, ValueError) as exc:
        print(f"python -m explorer.evaluate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished seeds are stored; rerun the same command to continue",
            file=sys.stderr,
        )
        return 130
    print(report(study, targets, results, budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
