"""Command-line plumbing every CLI of the project shares: a bad-input error printed as one line
with exit status 2, an argparse parser that raises it instead of printing its usage, the help
formatter, and the first line of an exception for messages."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sysconfig
from pathlib import Path

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
