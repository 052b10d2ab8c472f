"""`python -m explorer.evaluate`: retrain chosen designs and the references over several seeds.

A search trains each design once, briefly, and ranks designs by one validation accuracy: a
difference of a point can be seed noise. This command retrains the chosen designs (the Pareto
front, given trial numbers or the top K by validation accuracy) and the v1/v2 reference designs
from scratch, with a longer budget (``long`` by default: ten times the images of ``quick``), once
per seed, and records the test accuracy of each run (whole test split), their mean and standard
deviation, and the last-epoch validation accuracy the trainer measured (as in the search).

Where the results live. Optuna does not let a finished trial's attributes change, so each
design's results are a *study* user attribute::

    study.user_attrs["reeval:<trial number>"] = {
        "test_acc_mean": float, "test_acc_std": float,   # std over seeds, n - 1 in the denominator
        "test_acc": [per-seed floats], "val_acc": [per-seed floats],   # seed 0, 1, ... in order
        "seeds": int, "budget": str,
    }

A reference design with no trial in the study (a study searched with ``--no-references``) is
stored as ``reeval:v1`` / ``reeval:v2``. Read them all with `reeval_results(study)`. The
validation split is the one the search used (the study's dataset seed). Seed ``s`` initialises the
network with ``torch.manual_seed(s)`` and seeds the training stream with ``s``. Each finished seed is stored at
once, so an interrupted run resumes where it stopped, and asking for more seeds later trains only
the new ones. Run one re-evaluation per study at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from search_space import REFERENCES, NetworkConfig, network_params

from .results import DEFAULT_OBJECTIVES, REEVAL_PREFIX, TrialRecord, pareto_front, study_records
from .storage import StorageError, default_storage, load_study, open_storage, study_names

ATTR_PREFIX = REEVAL_PREFIX
DEFAULT_SEEDS = 3
DEFAULT_REFERENCES = ("v1", "v2")


def _budgets() -> dict[str, Any]:
    """The training budgets a re-evaluation may use: `explorer.train.BUDGETS` plus ``long``."""
    from . import train

    budgets = dict(train.BUDGETS)
    if "long" not in budgets:
        # Ten times quick's 4 x 1,024 training images (10 x 4,096), same optimiser and schedule,
        # so the ranking it gives is the one the search approximated, only less noisy.
        budgets["long"] = dataclasses.replace(
            budgets["quick"], epochs=10, train_images=4096, val_images=1000
        )
    return budgets


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Reeval:
    """One design's re-evaluation: per-seed accuracies, in seed order, under one budget."""

    test_acc: tuple[float, ...]
    val_acc: tuple[float, ...]
    budget: str

    @property
    def seeds(self) -> int:
        return len(self.test_acc)

    @property
    def test_acc_mean(self) -> float:
        return statistics.fmean(self.test_acc) if self.test_acc else math.nan

    @property
    def test_acc_std(self) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        return statistics.stdev(self.test_acc) if len(self.test_acc) > 1 else 0.0

    def added(self, val_acc: float, test_acc: float) -> Reeval:
        return Reeval(self.test_acc + (test_acc,), self.val_acc + (val_acc,), self.budget)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_acc_mean": self.test_acc_mean,
            "test_acc_std": self.test_acc_std,
            "test_acc": list(self.test_acc),
            "val_acc": list(self.val_acc),
            "seeds": self.seeds,
            "budget": self.budget,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Reeval:
        """Parse a stored attribute; `ValueError` says what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"a re-evaluation must be a mapping, got {type(data).__name__}")
        test, val, budget = data.get("test_acc"), data.get("val_acc"), data.get("budget")
        if not isinstance(test, list) or not isinstance(val, list) or len(test) != len(val):
            raise ValueError("test_acc and val_acc must be lists of equal length")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in test + val):
            raise ValueError("accuracies must be numbers")
        if not isinstance(budget, str):
            raise ValueError(f"budget must be a string, got {budget!r}")
        return cls(tuple(map(float, test)), tuple(map(float, val)), budget)

    def short(self) -> str:
        """``0.8812 ± 0.0031 (3 seeds, long)``."""
        return f"{self.test_acc_mean:.4f} ± {self.test_acc_std:.4f} ({self.seeds} seeds, {self.budget})"


def reeval_key(key: int | str) -> str:
    """The study attribute holding a trial's (int) or an unrun reference's (name) results."""
    return f"{ATTR_PREFIX}{key}"


def reeval_results(study: optuna.Study) -> dict[int | str, Reeval]:
    """Every stored re-evaluation, by trial number (or reference name); bad entries are skipped."""
    out: dict[int | str, Reeval] = {}
    for attr, value in study.user_attrs.items():
        if not attr.startswith(ATTR_PREFIX):
            continue
        key: int | str = attr[len(ATTR_PREFIX) :]
        if key.isdigit():
            key = int(key)
        try:
            out[key] = Reeval.from_dict(value)
        except ValueError:
            continue
    return out


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
    return Target(record.number, record.network, record.reference, record.get("val_acc"))


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
        objectives = tuple(study.user_attrs.get("objectives") or DEFAULT_OBJECTIVES)
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
        done = [
            r for r in records if r.complete and not r.reference and r.get("val_acc") is not None
        ]
        if not done:
            raise UsageError(f"study {study.study_name!r} has no complete searched design")
        chosen += sorted(done, key=lambda r: (-r.get("val_acc"), r.number))[:top]
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

    Validation accuracy is the trainer's last-epoch figure (the first ``config.val_images`` of the
    validation split, as in the search); test accuracy is over the whole test split.
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
        _, val_acc = train.evaluate(model, data, device, "val", config.val_images)
    _, test_acc = train.evaluate(model, data, device, "test")
    return float(val_acc), float(test_acc)


def reevaluate(
    study: optuna.Study,
    targets: Sequence[Target],
    seeds: int,
    budget: str,
    data: Any,
    device: Any,
    restart: bool = False,
    run: Callable[..., tuple[float, float]] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[int | str, Reeval]:
    """Train each target until it has `seeds` runs under `budget`, storing each run as it ends.

    Raises `UsageError` before training anything if a target holds results of another budget
    (unless `restart`, which discards them).
    """
    config = _budgets()[budget]
    run = run or train_and_test
    log = log or (lambda line: None)
    check_stored(study, targets, budget, restart)
    stored = reeval_results(study)
    results: dict[int | str, Reeval] = {}
    for t in targets:
        result = stored.get(t.key)
        if result is None or restart or result.budget != budget:
            result = Reeval((), (), budget)
        for seed in range(result.seeds, seeds):
            start = time.perf_counter()
            val_acc, test_acc = run(t.network, data, config, device, seed)
            result = result.added(val_acc, test_acc)
            study.set_user_attr(reeval_key(t.key), result.to_dict())
            log(
                f"{t.label:<10} seed {seed + 1}/{seeds}: val {val_acc:.4f} test {test_acc:.4f} "
                f"({time.perf_counter() - start:.0f} s)"
            )
        results[t.key] = result
    return results


def check_stored(
    study: optuna.Study, targets: Sequence[Target], budget: str, restart: bool = False
) -> None:
    """`UsageError` if a target holds results of another budget (and `restart` is not set)."""
    stored = reeval_results(study)
    for t in targets:
        old = stored.get(t.key)
        if old is not None and old.budget != budget and not restart:
            raise UsageError(
                f"{t.label} was re-evaluated with budget {old.budget!r} ({old.seeds} seeds); "
                f"pass --budget {old.budget} to add seeds, or --restart to discard them"
            )


def runs_needed(
    study: optuna.Study, targets: Sequence[Target], seeds: int, budget: str, restart: bool = False
) -> int:
    """How many training runs `reevaluate` would do."""
    stored = reeval_results(study)
    done = 0
    for t in targets:
        old = stored.get(t.key)
        if old is not None and old.budget == budget and not restart:
            done += min(old.seeds, seeds)
    return len(targets) * seeds - done


@dataclass(frozen=True)
class Comparison:
    """The most accurate re-evaluated design with no more parameters than a reference."""

    reference: Target
    reference_result: Reeval
    design: Target
    design_result: Reeval

    @property
    def difference(self) -> float:
        return self.design_result.test_acc_mean - self.reference_result.test_acc_mean

    @property
    def standard_error(self) -> float:
        """Of the difference of the two means (unequal variances)."""
        a, b = self.design_result, self.reference_result
        return math.sqrt(a.test_acc_std**2 / a.seeds + b.test_acc_std**2 / b.seeds)


def comparisons(targets: Sequence[Target], results: dict[int | str, Reeval]) -> list[Comparison]:
    """For each reference, the best searched design at equal or fewer parameters, if any."""
    out = []
    designs = [t for t in targets if t.reference is None and results.get(t.key, None)]
    for ref in (t for t in targets if t.reference is not None):
        r = results.get(ref.key)
        if r is None or not r.seeds:
            continue
        fits = [t for t in designs if t.params <= ref.params and results[t.key].seeds]
        if fits:
            best = max(fits, key=lambda t: results[t.key].test_acc_mean)
            out.append(Comparison(ref, r, best, results[best.key]))
    return out


def report(study: optuna.Study, targets: Sequence[Target], results: dict[int | str, Reeval]) -> str:
    """The closing table: each design's test accuracy with its spread, then the comparisons."""
    lines = [
        f"re-evaluation of study {study.study_name!r}: test accuracy, mean ± standard deviation "
        "over seeds",
        "",
        f"{'design':<12} {'params':>8} {'search val':>10} {'re-eval val':>11}  test accuracy",
    ]
    for t in targets:
        r = results.get(t.key)
        search = f"{t.search_val_acc:.4f}" if t.search_val_acc is not None else "-"
        val = f"{statistics.fmean(r.val_acc):.4f}" if r and r.seeds else "-"
        lines.append(
            f"{t.label:<12} {t.params:>8,} {search:>10} {val:>11}  {r.short() if r and r.seeds else '-'}"
        )
    lines.append("")
    for c in comparisons(targets, results):
        lines.append(
            f"best design with no more parameters than {c.reference.reference}: {c.design.label} "
            f"({c.design.params:,} vs {c.reference.params:,} params), "
            f"{c.design_result.test_acc_mean:.4f} vs {c.reference_result.test_acc_mean:.4f}: "
            f"{c.difference:+.4f} ± {c.standard_error:.4f} (standard error)"
        )
    return "\n".join(lines).rstrip()


# --------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2 from main(), without the usage
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m explorer.evaluate`."""
    p = _Parser(
        prog="python -m explorer.evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Retrain designs of a finished search, and the v1 (GoogLeNet) and v2 (BN-Inception)\n"
            "reference blocks, from scratch with a longer budget over several seeds; report test\n"
            "accuracy as mean ± standard deviation and store it on the study (study attribute\n"
            "reeval:<trial>), where the search summary, the exporter and the dashboard read it.\n"
            "Seeds already done are not trained again: rerun to resume, or raise --seeds."
        ),
        epilog=(
            "examples:\n"
            "  python -m explorer.evaluate --pareto                     # the front, 3 seeds, long\n"
            "  python -m explorer.evaluate --study NAME --trial 17 42 --seeds 5\n"
            "  python -m explorer.evaluate --top 3 --budget quick --dry-run\n"
            "budgets: long = 10 x quick's training images (about 10 x a quick trial's time each\n"
            "run); quick, smoke and standard as in the search."
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
        choices=sorted(_budgets()),
        help="training budget of each run (default long)",
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
        check_stored(study, targets, ns.budget, ns.restart)
        needed = runs_needed(study, targets, ns.seeds, ns.budget, ns.restart)
        if ns.dry_run:
            print(
                f"{len(targets)} designs ({', '.join(t.label for t in targets)}), "
                f"{needed} runs to train under budget {ns.budget}"
            )
            return 0
        from . import train

        device = train.resolve_device(ns.device)
        data = None
        if needed:
            dataset = study.user_attrs.get("dataset", "fashion-mnist")
            seed = int(study.user_attrs.get("seed", 0))  # the search's validation split
            data = load_dataset(dataset, data_dir=ns.data_dir, seed=seed).on(device)
        if not ns.quiet:
            print(
                f"study {study.study_name!r}: {len(targets)} designs, {needed} runs to train "
                f"(budget {ns.budget}, {ns.seeds} seeds, {device})",
                file=sys.stderr,
            )
        results = reevaluate(
            study,
            targets,
            ns.seeds,
            ns.budget,
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
    print(report(study, targets, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
