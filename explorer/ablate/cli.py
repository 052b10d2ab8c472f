"""`inception-explorer ablate` (or `python -m explorer.ablate`): why one design beats another.

Two ladders, trained with the same seeds under one budget and stored in the study's storage:

1. a path from ``--from`` (v1) to ``--to`` (v2) one field group at a time, with batch norm and the
   factorized wide path in both orders (`explorer.ablate.ladder.path_ladder`);
2. leave-one-out on ``--winner`` (the study's best design no larger than v2): each group of the
   winner reverted to the nearest reference's, one at a time.

Each step prints its paired difference in validation and test accuracy with its standard error,
and its change in parameters and FLOPs. Rerun to resume; raise ``--seeds`` to add seeds; run it on
several machines at once against one ``--storage`` to share the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from search_space import (
    DEFAULT_REFERENCES,
    DEFAULT_SPACE,
    REFERENCES,
    BlockConfig,
    NetworkConfig,
    network_params,
    reference_network,
)

from ..analysis import study_records
from ..evaluate import HEARTBEAT_S, TOP, add_budget, collect, resolve_budget, reused_runs
from ..store import (
    StorageError,
    StorageUnavailable,
    TrialRecord,
    add_study_args,
    default_storage,
    open_storage,
    redact,
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
)
from .ladder import Design, Ladder, canonical, leave_one_out, nearest, path_ladder, skeleton
from .report import lines, measure
from .runs import (
    StoredLadder,
    Worker,
    find_ablation,
    open_ablation,
    store_ladder,
    units,
)

PROG = "python -m explorer.ablate"
DEFAULT_SEEDS = 3


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Why one design beats another: train the designs between them, one field group\n"
            "(batch norm, factorized wide path, branch widths, pool type) at a time, with the\n"
            "same seeds, and print each step's paired difference in validation and test accuracy\n"
            "with its standard error. Default: v1 to v2 (batch norm and factorization in both\n"
            "orders, a 2x2 factorial), then leave-one-out on the study's best design no larger\n"
            "than v2. Runs are stored beside the study; rerun to resume or to add seeds; start it\n"
            "on several machines against one --storage to share the runs."
        ),
        epilog=(
            "examples:\n"
            f"  {PROG}                                   # v1 -> v2 and the winner, 3 seeds\n"
            f"  {PROG} --winner none --seeds 5\n"
            f"  {PROG} --from v2 --to 17 --winner 17 --budget quick\n"
            "A difference within two standard errors prints as 'not distinguishable at K seeds'."
        ),
    )
    add_study_args(p)
    p.add_argument(
        "--from", dest="start", default="v1", metavar="DESIGN",
        help="where the path starts: a reference (v1, v2, v3), a trial number, or a JSON file of "
        "a block design (default v1)",
    )  # fmt: skip
    p.add_argument(
        "--to", dest="end", default="v2", metavar="DESIGN",
        help="where the path ends, as --from (default v2); 'none' for no path",
    )  # fmt: skip
    p.add_argument(
        "--winner", default="best", metavar="DESIGN",
        help="the design to take apart by leave-one-out, as --from; 'best' (default) is the "
        "study's best search design by validation accuracy among those no larger than v2; "
        "'none' for no leave-one-out",
    )  # fmt: skip
    p.add_argument(
        "--baseline", default=None, metavar="DESIGN",
        help="what leave-one-out reverts each group to (default: whichever of v1 and v2 differs "
        "from the winner in fewer groups)",
    )  # fmt: skip
    add_seeds(p, DEFAULT_SEEDS)
    add_budget(p, TOP, "every run")
    add_data_dir(p)
    add_device(p)
    add_dry_run(p)
    add_quiet(p)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ns = build_parser().parse_args(argv)
    if ns.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {ns.seeds}")
    if ns.end == "none" and ns.winner == "none":
        raise UsageError("--to none and --winner none leave nothing to measure")
    return ns


class Designs:
    """Turns the --from / --to / --winner / --baseline words into designs of the study."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.records = {r.number: r for r in study_records(study)}
        nets = [r.network for r in self.records.values() if r.network is not None]
        if not nets:
            raise UsageError(f"study {study.study_name!r} has no trained design to ablate")
        self.base = nets[0]

    def reference(self, name: str) -> Design:
        return Design(name, reference_network(name, self.base))

    def resolve(self, word: str, flag: str) -> Design:
        if word in REFERENCES:
            return self.reference(word)
        if word.isdigit():
            record = self.records.get(int(word))
            if record is None:
                raise UsageError(
                    f"{flag}: study {self.study.study_name!r} has no trial {word} "
                    f"(trials 0..{max(self.records, default=-1)})"
                )
            if record.network is None:
                raise UsageError(f"{flag}: trial {word} has no valid design")
            return self._checked(Design(record.label(), record.network), flag)
        path = Path(word)
        if path.suffix == ".json" or path.exists():
            return self._checked(self._from_file(path, flag), flag)
        raise UsageError(
            f"{flag}: {word!r} is not a reference ({', '.join(REFERENCES)}), a trial number or a "
            "JSON file"
        )

    def _from_file(self, path: Path, flag: str) -> Design:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{flag}: cannot read {path}: {exc}") from None
        try:
            if isinstance(data, dict) and "block" in data:
                network = NetworkConfig.from_dict(data)
            else:
                block = BlockConfig.from_dict(data)  # the study's way: shared or in each stage
                network = (
                    self.base.with_designs([block] * len(self.base.stages))
                    if self.base.per_stage
                    else self.base.with_block(block)
                )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{flag}: {path} is not a block design: {exc}") from None
        return Design(path.stem, network)

    def _checked(self, design: Design, flag: str) -> Design:
        ours, theirs = skeleton(self.base), skeleton(design.network)
        diff = [f"{k} {theirs[k]!r} (study: {ours[k]!r})" for k in ours if ours[k] != theirs[k]]
        if diff:
            raise UsageError(
                f"{flag}: {design.name} comes from another space: its network differs from the "
                f"study's in {', '.join(diff)}"
            )
        outside = [d for d in design.network.designs if not DEFAULT_SPACE.contains(canonical(d))]
        if outside:
            raise UsageError(
                f"{flag}: {design.name} ({outside[0].short()}) is not a point of the search "
                "space, so the ladder's steps would leave it"
            )
        return design

    def winner(self) -> Design | None:
        """The best complete search design by validation accuracy no larger than v2."""
        limit = network_params(self.reference("v2").network)
        fits = [
            r
            for r in self.records.values()
            if r.complete and r.is_search and r.network is not None and r.val_acc is not None
            and r.params is not None and r.params <= limit
        ]  # fmt: skip
        if not fits:
            return None
        best: TrialRecord = max(fits, key=lambda r: (r.val_acc, -r.number))
        return Design(best.label(), best.network)


def ladders(ns: argparse.Namespace, designs: Designs, log) -> list[Ladder]:
    out = []
    if ns.end != "none":
        start, end = designs.resolve(ns.start, "--from"), designs.resolve(ns.end, "--to")
        try:
            out.append(path_ladder(start, end))
        except ValueError as exc:
            raise UsageError(f"--from/--to: {exc}") from None
    if ns.winner == "none":
        return out
    winner = designs.winner() if ns.winner == "best" else designs.resolve(ns.winner, "--winner")
    if winner is None:
        log("no leave-one-out: the study has no complete search design no larger than v2 yet")
        return out
    if ns.baseline is not None:
        baseline = designs.resolve(ns.baseline, "--baseline")
    else:
        baseline = nearest(winner, [designs.reference(n) for n in DEFAULT_REFERENCES])
    try:
        out.append(leave_one_out(winner, baseline))
    except ValueError as exc:
        log(f"no leave-one-out: {exc}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        ns = parse_args(argv)
        url = ns.storage or default_storage()
        storage = open_storage(url, create=False, heartbeat=HEARTBEAT_S)
        chosen: list[str] = []  # the line saying which study, once the input is known good
        study = the_study(storage, ns.study, chosen.append)
        say = (lambda line: None) if ns.quiet else (lambda line: print(line, file=sys.stderr))
        skipped: list[str] = []
        built = ladders(ns, Designs(study), skipped.append)
        if not built:
            raise UsageError(f"nothing to measure: {'; '.join(skipped)}")
        budget = resolve_budget(study, ns.budget)
        stored = [StoredLadder(b, budget.name, budget.config.to_dict(), ns.seeds) for b in built]
        todo = units(stored, ns.seeds)
        for line in chosen:
            print(line, file=sys.stderr)
        for line in skipped:
            say(line)
        if ns.dry_run:
            return _dry_run(storage, study, stored, todo, budget)
        config = study_config(study)
        try:
            device = devices.resolve_device(ns.device)
        except ValueError as exc:
            raise UsageError(f"--device: {exc}") from None
        devices.configure_backend(device)  # TF32 and autotuning, as the search's workers train
        worker = Worker(
            open_ablation(storage, url, study),
            study,
            url,
            budget,
            lambda: load_dataset(
                config.dataset if config else "fashion-mnist",
                data_dir=ns.data_dir,
                seed=config.split_seed if config else 0,
            ).on(device),
            device,
            log=say,
        )
        for s in stored:
            store_ladder(worker.abl, s)
        runs = worker.runs()
        left = sum(1 for u in todo if not runs.done(u.key, u.seed))
        say(
            f"study {study.study_name!r} ({redact(url)}): {len(todo) // ns.seeds} designs x "
            f"{ns.seeds} seeds, {left} runs to train on {device}; budget {budget.name}: "
            f"{budget.text}"
        )
        runs = worker.work(todo)
    except (UsageError, StorageError, DataError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except StorageUnavailable as exc:  # a storage down past TRANSIENT_S: one line naming it
        print(f"{PROG}: {exc}; finished runs are kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are stored; rerun the same command to continue",
              file=sys.stderr)  # fmt: skip
        return 130
    out = [f"ablation of study {study.study_name!r}, budget {budget.name}: {budget.text}",
           f"seeds 0..{ns.seeds - 1}, the same for every design; ± one standard error of the "
           "paired difference"]  # fmt: skip
    for s in stored:
        out += ["", *lines(measure(s, runs))]
    print("\n".join(out))
    return 0


def _dry_run(storage: Any, study: optuna.Study, stored: list[StoredLadder], todo, budget) -> int:
    abl = find_ablation(storage, study.study_name)
    runs = collect(abl.get_trials(deepcopy=False) if abl else (), reused_runs(study, budget.config))
    left = sum(1 for u in todo if not runs.done(u.key, u.seed))
    for s in stored:
        print(s.ladder.title)
        for d in s.ladder.designs:
            print(f"  {d.name:<48} {d.network.short()}")
    print(f"{left} of {len(todo)} runs to train under budget {budget.name} ({budget.text})")
    return 0
