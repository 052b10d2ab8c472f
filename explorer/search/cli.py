"""`python -m explorer.search`: the command line of the multi-objective search over Inception
block designs.

Each trial samples a block from the search space, builds the small-image network around it, trains
it under the study's budget and stores its `explorer.store.records.TrialRecord`. The v1 and v2 reference
designs are trained first in every new study as ordinary trials tagged ``reference``. Running the
same command again resumes the study up to the requested number of trials (under the settings it
was made with); several processes or machines may share one storage. The parts: `settings`
(what a run asks for), `session` (one run of it), `study` (creating, loading, checking), `workers` and `objective` (running
trials), `explorer.store.work` (dead workers' trials), `report` (progress and summary).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from search_space import DEFAULT_SPACE

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..analysis import DEFAULT_OBJECTIVES, OBJECTIVES, RULE
from ..evaluate import (
    LONG,
    PRESETS_HELP,
    preset_word,
)
from ..store import (
    DEFAULT_STUDY,
    TRANSIENT_S,
    StorageError,
    StorageUnavailable,
    add_study_args,
    choose_study,
    default_storage,
    is_journal,
    load_study,
    open_storage,
    study_config,
    study_line,
    study_names,
)
from ..training import DATASETS, PROXY_NAMES, DataError
from ..usage import (
    HelpFormatter,
    Parser,
    UsageError,
    add_data_dir,
    add_device,
    add_quiet,
    add_renamed,
    add_workers,
    renamed_flags,
    stages_arg,
)
from .processes import REPLACEMENTS_PER_WORKER
from .report import summary
from .session import run
from .settings import SAMPLERS, SearchSettings
from .study import COPIES_IN_A_ROW
from .verification import (
    FIRST_SEEDS,
    VERIFY_FACTOR,
    VERIFY_SHARE,
)
from .workers import WorkerError


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m explorer.search`."""
    d = SearchSettings()
    p = Parser(
        prog="python -m explorer.search",
        formatter_class=HelpFormatter,
        description=(
            "Multi-objective search over Inception block designs. Each trial samples a block,\n"
            "trains a small network around it briefly and records accuracy, parameters, FLOPs\n"
            "and latency. The v1 (GoogLeNet) and v2 (BN-Inception) blocks are trained first as\n"
            "reference trials. After the search, each front design that claims to beat v1 or v2\n"
            "is retrained beside it ten times longer, and only the claims that hold are stated\n"
            "(--verify-seeds). Rerun the same command to resume; run it on several machines\n"
            "against one --storage to share the work."
        ),
        epilog=(
            "examples:\n"
            "  python -m explorer.search --trials 100\n"
            "  python -m explorer.search --trials 20 --budget smoke     # a minute, to try it\n"
            "  python -m explorer.search --config studies/cpu-default.toml\n"
            "  python -m explorer.search --workers 4 --storage postgresql://user@db:5432/nas\n"
            "then:\n"
            "  make app                                                  # the dashboard\n"
            "  python -m explorer.evaluate --pareto                      # retrain the front longer\n"
            "  python -m explorer.export --study NAME --best -o net.py   # standalone PyTorch code"
        ),
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of flag values, keys named as the flags (trials = 200, budget = "
        '"standard", prune = false, ...); flags given on the command line win; examples in '
        "studies/",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=d.trials,
        help="distinct search designs the study should have in total (references not counted; "
        "a proposal of a design already trained reuses its result and does not count, and "
        f"{COPIES_IN_A_ROW} of them in a row end the search early); a rerun continues up to "
        "this number",
    )
    add_study_args(
        p,
        f"; where the command would ask, a search starts a new study {DEFAULT_STUDY} instead; "
        f"with --dataset D it makes or resumes "
        f"D-{DEFAULT_SPACE.name}; a new name given makes a new study",
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=tuple(DATASETS),
        help="dataset to train on (default: the study's, fashion-mnist for a new study)",
    )
    add_data_dir(p)
    p.add_argument(
        "--budget",
        default=None,
        type=preset_word,
        metavar="BUDGET",
        help=f"training budget of the top rung: {PRESETS_HELP} (default: the study's own, stored "
        "whole when it "
        "was made; for a new study standard on CUDA, otherwise quick x eta^(rungs-1), so that "
        "the bottom rung is quick: quick with the default single rung, quickx9 with --rungs 3)",
    )
    p.add_argument(
        "--rungs",
        type=int,
        default=None,
        metavar="R",
        help="successive halving over R budgets (default: the study's; for a new study 1, "
        "every design at one budget, which returned the better front for its time on a 2-core "
        "CPU than 3 rungs on every seed measured, BENCHMARKS.md): "
        "rung R-1 is --budget, each rung below it the same schedule on 1/eta of the images of "
        "the rung above. New designs train at rung 0; a design finished at rung k moves to "
        "rung k+1 (retrained from scratch) when it is in the best 1/eta of the designs finished "
        "at rung k so far (non-dominated sorting on the objectives). v1 and v2 train at every "
        "rung. With --rungs 3 on a CPU: rung 0 = quick (4 epochs x 1,024 images), rung 1 = "
        "quickx3 (3,072), rung 2 = quickx9 (9,216); the summary, export and dashboard report "
        "the top rung",
    )
    p.add_argument(
        "--eta",
        type=int,
        default=None,
        help="successive halving's reduction factor: 1/eta of each rung moves up, each rung "
        "has 1/eta of the images of the one above (default: the study's, 3 for a new study)",
    )
    p.add_argument(
        "--final-seeds",
        type=int,
        default=d.final_seeds,
        metavar="K",
        help="after the search, retrain the top rung's front designs and v1/v2 with K seeds at "
        "the top rung's budget and report test accuracy mean ± sd (1: off, the search's own run; "
        "stored as a re-evaluation, like python -m explorer.evaluate --budget top --seeds K)",
    )
    p.add_argument(
        "--verify-seeds",
        type=int,
        default=d.verify_seeds,
        metavar="K",
        help="after the search, race each front design that claims to beat v1 or v2 (more "
        "accurate at the search budget with no more parameters) against that reference at "
        f"--verify-budget: {FIRST_SEEDS} paired seeds each, then one more seed at a time to the "
        "claims still undecided, up to K seeds a claim (default %(default)s; 0: off, claims are "
        "then single runs at the search budget, most of which reversed when retrained, "
        f"BENCHMARKS.md). The rule: {RULE.replace('%', '%%')}. The summary states each claim that holds with its "
        "difference, interval and seeds, and lists those the race could not decide as undecided. "
        "The strongest claims go first, spread over --workers. The verification gets "
        f"{VERIFY_SHARE * 100:.0f}%% of the run: with --timeout the search stops starting trials at "
        f"{(1 - VERIFY_SHARE) * 100:.0f}%% of it and the verification starts no run that would end "
        "after it; without, it may take as long as the search took",
    )
    add_renamed(p, "--verify", "--verify-seeds")
    p.add_argument(
        "--verify-budget",
        default=LONG,
        type=_verify_budget_arg,
        metavar="BUDGET",
        help=f"training budget of --verify-seeds: {PRESETS_HELP}; {LONG}: {VERIFY_FACTOR} x the "
        "images of the study's own budget, quickx10 for quick, as python -m explorer.evaluate's "
        f"(default: {LONG}; at 3x, most claims made at quick that reverse at 10x still held, "
        "BENCHMARKS.md)",
    )
    add_device(p)
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the validation split, of every trial's training and of the first worker's "
        "sampler (default: the study's, 0 for a new study)",
    )
    p.add_argument(
        "--sampler",
        default=None,
        choices=SAMPLERS,
        help="Optuna sampler (default: the study's, tpe for a new study: multi-objective TPE, "
        "see BENCHMARKS.md)",
    )
    p.add_argument(
        "--objectives",
        default=None,
        help=f"comma-separated, from: {', '.join(OBJECTIVES)}; val_acc is always first "
        f"(default: the study's, {','.join(DEFAULT_OBJECTIVES)} for a new study). latency_ms is "
        "timed at batch 1 while the machine's other workers train: the same design timed again "
        "varies by about 10%% (5-95%% range, 2-core Xeon, BENCHMARKS.md 'Latency noise')",
    )
    add_workers(
        p,
        "auto is --workers-per-gpu on each GPU "
        f"({d.workers_per_gpu} unless set; not yet measured), one on MPS, and one per CPU core "
        "(up to 8) on a CPU, where separate processes beat threads (BENCHMARKS.md); a number N "
        "is dealt round-robin over the GPUs. A worker killed by a signal (the OOM killer, kill "
        f"-9) is replaced, up to {REPLACEMENTS_PER_WORKER} replacement(s) per worker in a run, "
        "and the run still ends with its summary (default: auto)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="the run's time in seconds, a deadline: the search starts no trial that could end "
        f"after {(1 - VERIFY_SHARE) * 100:.0f}%% of it (all of it with --verify-seeds 0), the "
        "verification of claims no run that could end after it (could: as long as the longest "
        "so far); the run ends within about 10 s of it",
    )
    p.add_argument(
        "--heartbeat",
        dest="heartbeat_s",
        type=int,
        default=d.heartbeat_s,
        metavar="SEC",
        help="each running trial records a heartbeat every SEC seconds (in the database, or in a "
        "file beside a journal); "
        "a trial silent for twice that is failed as interrupted and retried by another worker "
        "(a worker paused longer drops that trial when it wakes). A storage that drops out (a "
        f"restarting server, a reset connection) is retried for {TRANSIENT_S:.0f} s, one line "
        "each, before the worker gives up",
    )
    p.add_argument(
        "--width",
        type=float,
        default=None,
        help="network width multiplier for block widths (default: the study's, 0.25 for a new "
        "study)",
    )
    p.add_argument(
        "--stages",
        type=stages_arg,
        default=None,
        metavar="N,N,...",
        help="blocks per stage of the network the designs are trained in, one number per stage; "
        "stages are separated by a 2x2 pool, so 1,1,1 is 28x28 -> 14x14 -> 7x7 on Fashion-MNIST "
        "(default: the study's, 1,1 for a new study); fixed when the study is made",
    )
    p.add_argument(
        "--stem",
        type=int,
        default=None,
        metavar="CHANNELS",
        help="channels of the stem's 3x3 convolution at paper scale, multiplied by --width like "
        "the blocks (default: the study's, 96 for a new study); fixed when the study is made",
    )
    p.add_argument(
        "--per-stage",
        action="store_const",
        const=True,
        default=None,
        help="search one block design per stage (each stage's parameters named s0., s1., ...) "
        "instead of one block repeated in every stage; v1 and v2 are repeated per stage as "
        "references (default: the study's, one shared block for a new study); fixed when the "
        "study is made",
    )
    p.add_argument(
        "--workers-per-gpu",
        type=int,
        default=d.workers_per_gpu,
        metavar="K",
        help="with --workers auto, K worker processes share each GPU (the search's networks "
        "leave a big GPU mostly idle); the default, %(default)s, is a guess, not yet measured: "
        "bench/gpu.sh times 1, 2, 4 and 8",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic GPU kernels and no cuDNN benchmark mode, so a seeded GPU run "
        "repeats exactly (slower; CPU runs repeat anyway)",
    )
    for flag, what in (("params", "trainable parameters"), ("flops", "FLOPs per image"),
                       ("latency-ms", "latency at batch 1 in ms")):  # fmt: skip
        p.add_argument(
            f"--max-{flag}",
            type=float,
            default=None,
            metavar="N",
            help=f"limit on {what}: designs over it are recorded as infeasible and steered away "
            "from (never trained when the limit is known before training); stored in the study",
        )
    p.add_argument(
        "--override",
        action="store_true",
        help="resume a study with settings other than those it was made with (dataset, width, "
        "seed, sampler, objectives, limits): new trials are trained with the given ones and "
        "record them, and the study's stored settings are left as they were",
    )
    p.add_argument(
        "--no-references",
        dest="references",
        action="store_false",
        help="do not train the v1/v2 reference designs in a new study",
    )
    p.add_argument(
        "--no-prune",
        dest="prune",
        action="store_false",
        help="train every trial to the end (no early stopping of dominated trials)",
    )
    p.add_argument(
        "--no-weights",
        dest="weights",
        action="store_false",
        help="do not keep trained weights (export --weights needs them)",
    )
    p.add_argument(
        "--no-proxies",
        dest="proxies",
        action="store_false",
        help="do not compute zero-cost proxy scores before training each trial",
    )
    p.add_argument(
        "--prescreen",
        type=int,
        default=d.prescreen,
        metavar="M",
        help="draw M candidates per trial and train the one --proxy prefers (1: off; "
        "off by default because it did not improve the front, see BENCHMARKS.md)",
    )
    p.add_argument(
        "--proxy",
        default=d.proxy,
        choices=PROXY_NAMES,
        help="zero-cost proxy that --prescreen ranks candidates by",
    )
    add_quiet(p)
    return p


def _verify_budget_arg(text: str) -> str:
    """A preset, or long (the default: the study's own budget times `VERIFY_FACTOR`)."""
    return text if text == LONG else preset_word(text)


# Config keys that are switches: the value that turns the flag on.
_SWITCHES = {
    "references": ("--no-references", False),
    "prune": ("--no-prune", False),
    "weights": ("--no-weights", False),
    "proxies": ("--no-proxies", False),
    "quiet": ("--quiet", True),
    "deterministic": ("--deterministic", True),
    "override": ("--override", True),
    "per_stage": ("--per-stage", True),
}


def config_args(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The flags a ``--config`` TOML file stands for, checked by the same parser as the command
    line: ``budget = "smoke"`` is ``--budget smoke``, ``prune = false`` is ``--no-prune``."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None
    flags = {o[2:].replace("-", "_"): o for a in parser._actions for o in a.option_strings
             if o.startswith("--")}  # fmt: skip
    known = set(flags) - {"help", "config", *_SWITCHES}
    tokens: list[str] = []
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in _SWITCHES:
            flag, on = _SWITCHES[name]
            if not isinstance(value, bool):
                raise UsageError(f"--config {path}: {key} must be true or false, got {value!r}")
            tokens += [flag] if value == on else []
        elif name in known:
            if isinstance(value, list):
                value = ",".join(map(str, value))
            if isinstance(value, (dict, bool)):
                raise UsageError(f"--config {path}: {key} cannot be {value!r}")
            tokens += [flags[name], str(value)]
        else:
            raise UsageError(
                f"--config {path}: unknown key {key!r}; keys are the flag names: "
                f"{', '.join(sorted((known - set(renamed_flags(parser))) | set(_SWITCHES)))}"
            )
    return tokens


def parse_settings(argv: Sequence[str] | None = None) -> SearchSettings:
    """Parse and validate the command line; raises `UsageError` for values argparse cannot check."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    config = pre.parse_known_args(argv)[0].config
    if config:
        argv = config_args(config, parser) + argv  # the command line comes last and wins
    ns = parser.parse_args(argv)
    values = vars(ns)
    values.pop("config")
    values["workers"] = None if ns.workers == "auto" else ns.workers
    if ns.verify_budget == LONG:
        values["verify_budget"] = None  # the settings' default: the study's budget x VERIFY_FACTOR
    if ns.objectives is not None:
        values["objectives"] = tuple(o.strip() for o in ns.objectives.split(",") if o.strip())
    try:
        return SearchSettings(**values)
    except ValueError as exc:
        raise UsageError(_as_flags(str(exc), parser)) from None


def _as_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """A settings error in the words of the command line (``--verify-seeds`` for ``verify``)."""
    name = message.split(" ", 1)[0]
    if name.isidentifier() and name in SearchSettings.__dataclass_fields__:
        flag = next((a.option_strings[0] for a in parser._actions
                     if a.dest == name and a.option_strings and a.help != argparse.SUPPRESS),
                    f"--{name.replace('_', '-')}")  # fmt: skip
        return flag + message[len(name) :]
    return message


def choose_search_study(s: SearchSettings) -> tuple[SearchSettings, str | None]:
    """The settings with the study every subcommand would choose (`choose_study`), or a new one
    under the default name where a reader would ask for --study; and the line saying which
    (None when --study named it)."""
    if s.study is not None:
        return s, None
    url = s.storage or default_storage()
    missing = is_journal(url) and not Path(url).expanduser().exists()
    names = [] if missing else study_names(url)
    if s.dataset is not None:  # the dataset's own study, not another dataset's only study
        name = s.study_name
        why = f"the default name for --dataset {s.dataset}" + ("" if name in names else ", new")
    else:
        name, why = choose_study(names, None, default=s.study_name, create=True)
    if s.network_words and not _same_network(url, name, names, s):
        # --stages, --stem or --per-stage asked for another network than the chosen study's:
        # that network's own study, not a refusal to mix networks in one study.
        name = s.study_name + s.network_words
        why = "the default name for this network" + ("" if name in names else ", new")
    return dataclasses.replace(s, study=name), study_line(name, why)


def _same_network(url: str, name: str, names: list[str], s: SearchSettings) -> bool:
    """Whether study `name` (chosen without --study) exists and searches the network that
    --stages, --stem and --per-stage ask for."""
    if name not in names:
        return False
    config = study_config(load_study(open_storage(url, create=False), name))
    if config is None:
        return False
    asked = (s.stages or config.stages, s.stem or config.stem_channels,
             config.per_stage if s.per_stage is None else s.per_stage)  # fmt: skip
    return asked == (tuple(config.stages), config.stem_channels, config.per_stage)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        s, chosen = choose_search_study(parse_settings(argv))
        study = run(s, chosen)
    except (UsageError, StorageError, DataError) as exc:
        print(f"python -m explorer.search: error: {exc}", file=sys.stderr)
        return 2
    except (WorkerError, StorageUnavailable) as exc:  # a storage down past TRANSIENT_S
        print(f"python -m explorer.search: {exc}; finished trials are kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(summary(study, s.storage or default_storage()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
