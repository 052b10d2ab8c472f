"""`python -m explorer.evaluate`: retrain chosen designs and the references over several seeds.

A search trains each design once, briefly, and ranks designs by one validation accuracy: a
difference of a point can be seed noise. This command retrains the chosen designs (the Pareto
front, given trial numbers or the top K by validation accuracy) and the v1/v2 reference designs
from scratch, once per seed, with a longer budget: ``long`` by default, `budgets.long_budget` of the
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
        "seeds": int, "budget": str,   # "long" or a name of budgets.BUDGETS
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
trains only the new ones. With ``--stages``, ``--width`` or ``--stem`` the same designs and
references are also retrained in that network, their results kept apart per network shape as
``transfer:<shape>:<key>`` (`explorer.evaluate.transfer`). Every run goes through the study's
shared runs (`explorer.evaluate.runs`, the work loop the search and the ablation use): any number
of re-evaluations of one study, on any machines, share the work; none trains a run another has
stored or is training, and a run whose process died is trained again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool

import optuna

from search_space import DEFAULT_REFERENCES, REFERENCES

from ..store import (
    StorageError,
    StorageUnavailable,
    add_study_args,
    default_storage,
    open_storage,
    study_config,
    the_study,
)
from ..training import DataError, devices, load_dataset
from ..usage import (
    Parser,
    UsageError,
    add_data_dir,
    add_device,
    add_dry_run,
    add_quiet,
    add_seeds,
    add_workers,
    stages_arg,
)
from .budget_words import LONG, add_budget, resolve_budget
from .compare import report
from .pool import DataSpec
from .retrain import ATTR_PREFIX, check_stored, reevaluate, runs_needed, select_targets
from .runs import HEARTBEAT_S
from .transfer import Shape, placed, transfer_prefix
from .transfer import report as transfer_report

DEFAULT_SEEDS = 3


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
            "reports test accuracy, as a paired difference over seeds judged by the tool's one\n"
            "rule (a paired t-test, Holm-corrected over the references).\n"
            "Seeds already done are not trained again: rerun to resume, or raise --seeds."
        ),
        epilog=(
            "examples:\n"
            "  python -m explorer.evaluate --pareto                     # the front, 3 seeds, long\n"
            "  python -m explorer.evaluate --study NAME --trial 17 42 --seeds 5\n"
            "  python -m explorer.evaluate --top 3 --budget quick --dry-run\n"
            "  python -m explorer.evaluate --pareto --stages 2,2    # transfer check: twice the depth\n"
            "budgets, the words of every subcommand: top = the budget the study was searched with\n"
            "(its top rung); long = top with 10 x its training images (10 x its epochs where it\n"
            "trains on the whole split), so each run takes about 10 x a top-rung trial's time;\n"
            "smoke, quick and standard as in the search, and any of them with xK (quickx10: 10 x\n"
            "quick's images)."
        ),
    )
    add_study_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--pareto", action="store_true", help="the searched designs on the Pareto front"
    )
    which.add_argument("--trial", type=int, nargs="+", metavar="N", help="these trial numbers")
    which.add_argument(
        "--top", type=int, metavar="K", help="the K best by search validation accuracy"
    )
    add_seeds(p, DEFAULT_SEEDS)
    add_budget(p, LONG, "each run")
    p.add_argument(
        "--references",
        default=",".join(DEFAULT_REFERENCES),
        help="comma-separated reference designs to re-evaluate beside them, or 'none' (default v1,v2)",
    )
    add_data_dir(p)
    add_device(p)
    add_workers(
        p,
        "the runs are spread over them, each with its share of the cores (default auto: one per "
        "CPU core up to 8 on a CPU, as the search; 1 trains in this process)",
    )
    p.add_argument(
        "--restart", action="store_true", help="discard stored results of these designs first"
    )
    add_dry_run(p)
    add_quiet(p)
    moved = p.add_argument_group(
        "transfer check",
        "retrain the designs and the references also in another network (results kept apart, "
        "under transfer:<shape>:<trial>) and say whether their ordering against each reference "
        "found on the search network holds there; a per-stage design keeps its stage count",
    )
    moved.add_argument(
        "--stages",
        type=stages_arg,
        default=None,
        metavar="N,N,...",
        help="blocks per stage of the transfer network, e.g. 2,2 (default: as searched)",
    )
    moved.add_argument(
        "--width",
        type=float,
        default=None,
        help="width multiplier of the transfer network, e.g. 0.5 (default: as searched)",
    )
    moved.add_argument(
        "--stem",
        type=int,
        default=None,
        metavar="CHANNELS",
        help="stem channels at paper scale, before the width (default: as searched)",
    )
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
    ns.shape = Shape(ns.stages, ns.width, ns.stem)
    if ns.shape.given and not ns.references:
        raise UsageError(
            "a transfer check compares designs with references: --references none leaves none"
        )
    return ns


def main(argv: Sequence[str] | None = None) -> int:

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        ns = parse_args(argv)
        chosen: list[str] = []  # the line saying which study, once the input is known good
        url = ns.storage or default_storage()
        # With heartbeats, so that a run of this process left RUNNING when it dies is found by
        # the next claim on any machine sharing the storage (`explorer.evaluate.runs`).
        storage = open_storage(url, create=False, heartbeat=HEARTBEAT_S)
        study = the_study(storage, ns.study, chosen.append)
        targets = select_targets(
            study, pareto=ns.pareto, trials=ns.trial or (), top=ns.top, references=ns.references
        )
        budget = resolve_budget(study, ns.budget)
        # (targets, attribute prefix) per network: the searched one, then the transfer one
        networks = [(targets, ATTR_PREFIX)]
        if ns.shape.given:
            moved = placed(targets, ns.shape)
            networks.append((moved, transfer_prefix(moved[0].network)))
        for group, prefix in networks:
            check_stored(study, group, budget, ns.restart, prefix)
        needed = sum(
            runs_needed(study, group, ns.seeds, budget, ns.restart, prefix)
            for group, prefix in networks
        )
        if ns.dry_run:
            for line in chosen:
                print(line, file=sys.stderr)
            where = f" in {len(networks)} networks" if len(networks) > 1 else ""
            print(
                f"{len(targets)} designs ({', '.join(t.label for t in targets)}), "
                f"{needed} runs to train{where} under budget {budget.name} ({budget.text})"
            )
            return 0

        try:
            device = devices.resolve_device(ns.device)
        except ValueError as exc:
            raise UsageError(f"--device: {exc}") from None
        devices.configure_backend(device)  # TF32 and autotuning, as the search's workers train
        try:
            workers = len(devices.plan_workers(ns.device, None if ns.workers == "auto" else
                                               ns.workers))  # fmt: skip
        except ValueError as exc:
            raise UsageError(f"--workers: {exc}") from None
        data, spec = None, None
        if needed:
            config = study_config(study)
            dataset = config.dataset if config is not None else "fashion-mnist"
            seed = config.split_seed if config is not None else 0  # the search's validation split
            spec = DataSpec(dataset, ns.data_dir, seed)
            found = load_dataset(dataset, data_dir=ns.data_dir, seed=seed)  # one clear line if not
            data = found.on(device) if workers == 1 else None
        for line in chosen:
            print(line, file=sys.stderr)
        if not ns.quiet:
            print(
                f"study {study.study_name!r}: {len(targets)} designs, {needed} runs to train "
                f"({ns.seeds} seeds, {device}, {workers} worker(s)); budget {budget.name}: "
                f"{budget.text}",
                file=sys.stderr,
            )
        # Several re-evaluations of a study at once, on any machines, share its runs: each trains
        # what no other has stored or is training, and waits for the rest.
        results = [
            reevaluate(
                study,
                group,
                ns.seeds,
                budget,
                data,
                device,
                restart=ns.restart,
                log=None if ns.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
                prefix=prefix,
                workers=workers,
                spec=spec,
                url=url,
            )
            for group, prefix in networks
        ]
    except (UsageError, StorageError, DataError) as exc:
        print(f"python -m explorer.evaluate: error: {exc}", file=sys.stderr)
        return 2
    except StorageUnavailable as exc:  # a storage down past TRANSIENT_S: one line naming it
        print(f"python -m explorer.evaluate: {exc}; finished runs are kept", file=sys.stderr)
        return 1
    except BrokenProcessPool as exc:  # training processes kept dying (the OOM killer)
        print(f"python -m explorer.evaluate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished seeds are stored; rerun the same command to continue",
            file=sys.stderr,
        )
        return 130
    print(report(study, targets, results[0], budget))
    if len(networks) > 1:
        print(transfer_report(targets, networks[1][0], results[0], results[1]))
    return 0
