"""Command-line plumbing every CLI of the project shares: a bad-input error printed as one line
with exit status 2, an argparse parser that raises it instead of printing its usage, the help
formatter, the first line of an exception for messages, and the grammar of the flags several
subcommands take (one definition each, `add_device` and the like, so that a flag means the same
everywhere; tests/test_grammar.py checks it) with the old spellings kept for one release
(`add_renamed`).

The study flags (--study, --storage) are defined beside the rule that resolves a study, in
`explorer.store.studies`; the budget words in `explorer.evaluate.budget_words`."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

PROG = "inception-explorer"
MODULE_PROG = "python -m explorer"


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors become `UsageError` (one line from `main`, exit 2)."""

    def error(self, message: str) -> None:
        raise UsageError(message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag (unless its help already says it, or it has none); the
    description and examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def command_prefix() -> str:
    """How to start this install's command: ``inception-explorer`` where that console script is on
    PATH and belongs to this interpreter's install, else ``python -m explorer``."""
    found = shutil.which(PROG)
    if found is None:
        return MODULE_PROG
    scripts = {sysconfig.get_path("scripts")}
    try:
        scripts.add(sysconfig.get_path("scripts", f"{os.name}_user"))
    except KeyError:  # a platform without a user scheme
        pass
    here = {Path(p).resolve() for p in scripts if p}
    return PROG if Path(found).resolve().parent in here else MODULE_PROG


def command(*args: str) -> str:
    """A shell command line: this install's command (`command_prefix`) with `args`, quoted."""
    return " ".join([command_prefix(), *(shlex.quote(str(a)) for a in args)])


# --------------------------------------------------------------------------------------------
# The shared flags: one definition each


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def workers_arg(text: str) -> int | str:
    """An argparse type: ``auto`` or a number of worker processes >= 1."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be auto or a number >= 1, got {text!r}") from None


# The shared first part of each flag's help; a subcommand may add what is its own after it.
DEVICE_HELP = "device to train on: auto (CUDA, else MPS, else the CPU), cpu, cuda, cuda:N or mps"
DATA_DIR_HELP = (
    "folder holding the dataset files (default: $EXPLORER_DATA, system packages, download)"
)
SEEDS_HELP = "runs per design, seeds 0..K-1, the same seeds for every design"
QUIET_HELP = "print no progress as it runs, only the result"
WORKERS_HELP = "worker processes on this machine: auto or a number"
DRY_RUN_HELP = "list the designs and runs, train nothing"


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, metavar="DIR", help=DATA_DIR_HELP)


def add_seeds(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument(
        "--seeds", type=int, default=default, metavar="K", help=f"{SEEDS_HELP} (default: {default})"
    )


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def add_workers(p: argparse.ArgumentParser, detail: str) -> None:
    """--workers, auto by default; `detail` says what auto means and how the runs are spread."""
    p.add_argument("--workers", type=workers_arg, default="auto", help=f"{WORKERS_HELP}; {detail}")


def add_dry_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)


# --------------------------------------------------------------------------------------------
# Old spellings


class Renamed(argparse.Action):
    """An old spelling of a flag, kept for one release: hidden from --help, it says once on
    stderr that it is deprecated and then does what the new spelling does."""

    def __init__(self, option_strings: list[str], dest: str, new: argparse.Action, **_: Any):
        self.new = new
        super().__init__(
            option_strings, new.dest, nargs=new.nargs, const=new.const, default=argparse.SUPPRESS,
            type=new.type, choices=new.choices, metavar=new.metavar, help=argparse.SUPPRESS,
        )  # fmt: skip

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        spelled = self.new.option_strings[0]
        print(
            f"{parser.prog}: {option_string} is deprecated and goes in the next release; use "
            f"{spelled}",
            file=sys.stderr,
        )
        self.new(parser, namespace, values, spelled)


def add_renamed(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep `old` working as the flag `new` (already added to `p`) with a deprecation notice."""
    p.add_argument(old, action=Renamed, new=p._option_string_actions[new])


def renamed_flags(p: argparse.ArgumentParser) -> dict[str, str]:
    """A parser's old spellings, each with its new one."""
    return {
        old: a.new.option_strings[0]
        for a in p._actions
        if isinstance(a, Renamed)
        for old in a.option_strings
    }


def stages_arg(text: str) -> tuple[int, ...]:
    """An argparse type: blocks per stage, one number per stage separated by commas (``1,1,1``)."""
    try:
        stages = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be blocks per stage as integers separated by commas (1,1,1), got {text!r}"
        ) from None
    if any(n < 1 for n in stages):
        raise argparse.ArgumentTypeError(f"every stage needs at least one block, got {text!r}")
    return stages
