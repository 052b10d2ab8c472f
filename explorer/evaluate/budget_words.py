"""The stored side of a re-evaluation: the budgets it trains under and one `Reeval` per design.

`explorer.evaluate` retrains designs over several seeds; each design's results are a study user
attribute ``reeval:<trial number>`` (or ``reeval:v1`` for a reference the study never trained),
read back here as a `Reeval` (see `explorer.evaluate` for the schema). ``long``, the default
budget, is `budgets.long_budget` of the budget the study was searched with (`StudyConfig`).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import optuna

from ..analysis import LONG, Budget
from ..store import StudyConfig, study_config
from ..training import budgets
from ..usage import UsageError

# The budget words of every subcommand: the presets of `budgets.BUDGETS`, each also with xK, and
# two words that read the study's own budget (its top rung's): top is that budget, long is
# `budgets.LONG_FACTOR` times its training images.
TOP = "top"
PRESETS_HELP = (
    f"a preset ({', '.join(budgets.BUDGETS)}) or one with xK for K times its training images "
    "(quickx9)"
)
STUDY_WORDS_HELP = (
    f"{TOP}: the study's own budget (its top rung's); {LONG}: {budgets.LONG_FACTOR} x the images "
    f"of {TOP}"
)


def budget_names() -> list[str]:
    """What a subcommand's ``--budget`` accepts besides xK: the study's words and the presets."""

    return [TOP, LONG, *budgets.BUDGETS]


def budget_word(text: str) -> str:
    """An argparse type: one of `budget_names`, or a preset with xK."""
    if text in (TOP, LONG) or budgets.is_budget(text):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown budget {text!r} (choose from {', '.join(budget_names())}, or a preset with xK)"
    )


def add_budget(p: argparse.ArgumentParser, default: str, what: str) -> None:
    """--budget as every subcommand that trains a study's designs takes it: `what` is trained."""
    p.add_argument(
        "--budget",
        type=budget_word,
        default=default,
        metavar="BUDGET",
        help=f"training budget of {what}: {PRESETS_HELP}; {STUDY_WORDS_HELP} (default: {default})",
    )


def preset_word(text: str) -> str:
    """An argparse type: a preset of `budgets.BUDGETS`, or one with xK."""
    if budgets.is_budget(text):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown budget {text!r} (choose from {', '.join(budgets.BUDGETS)}, or one with xK)"
    )


def _size(config: Any) -> str:
    images = (
        "the whole training split"
        if config.train_images is None
        else f"{config.train_images:,} training images"
    )
    val = (
        "the whole validation split"
        if config.final_val_images is None
        else f"{config.final_val_images:,} validation images"
    )
    return f"{images} x {config.epochs} epochs at batch {config.batch_size}, validated on {val}"


def base_budget(stored: Any) -> tuple[Any, str]:
    """The `TrainConfig` a study was searched with, and its name, from what the study stores: a
    dict of `TrainConfig` fields or a budget name of `budgets.BUDGETS`. `UsageError` otherwise."""

    if isinstance(stored, dict):
        try:
            config = budgets.TrainConfig.from_dict(stored)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"the study's stored training config is not valid: {exc}") from None
        same = (
            n
            for n, c in budgets.BUDGETS.items()
            if dataclasses.replace(c, seed=config.seed) == config
        )
        return config, next(same, "searched")
    if isinstance(stored, str):
        try:
            return budgets.budget(stored), stored
        except ValueError as exc:
            raise UsageError(f"the study's stored {exc}") from None
    raise UsageError(
        "the study stores no training budget to make 'long' from; pass --budget with one of "
        + ", ".join(budgets.BUDGETS)
    )


def resolve_budget(study: optuna.Study, name: str) -> Budget:
    """``long``: `budgets.long_budget` of the study's own budget (its stored ``train_config``
    fields, else its ``budget`` name); ``top``: the study's top-rung budget; any other name: that
    budget of `budgets.BUDGETS`."""

    if name == TOP:
        config = study_config(study)
        if config is None:
            raise UsageError(f"the study stores no budget to read {TOP!r} from; pass --budget "
                             "with a preset")  # fmt: skip
        return top_rung_budget(config)
    if name == LONG:
        config = study_config(study)
        stored = (config.train_config or config.budget) if config is not None else None
        base, base_name = base_budget(stored)
        if (
            base_name == "searched"
            and config is not None
            and budgets.is_budget(config.budget)
            and dataclasses.replace(budgets.budget(config.budget), seed=base.seed) == base
        ):
            base_name = config.budget  # a scaled preset (quickx9), the top rung of a study
        config = budgets.long_budget(base)
        text = f"{budgets.LONG_FACTOR}x the study's {base_name} budget: {_size(config)}"
        return Budget(name, config, text)
    try:
        config = budgets.budget(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return named_budget(name, config)


def named_budget(name: str, config: Any) -> Budget:
    """A `Budget` of a `TrainConfig` under `name`, with the line saying what it trains on."""
    return Budget(name, config, f"the {name} budget: {_size(config)}")


def _budget(study: optuna.Study, budget: str | Budget) -> Budget:
    return budget if isinstance(budget, Budget) else resolve_budget(study, budget)


def top_rung_budget(config: StudyConfig) -> Budget:
    """The budget of a study's top rung (the whole budget of a single-budget study)."""
    top = budgets.study_train_config(config)
    return Budget(config.budget, top, f"the top rung, {config.budget}: {_size(top)}")
