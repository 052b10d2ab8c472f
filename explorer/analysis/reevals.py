"""A study's stored re-evaluations: one `Reeval` per design (per-seed accuracies under one budget),
kept as the study attribute ``reeval:<trial number>`` (or ``reeval:v1`` for a reference the study
never trained); `explorer.evaluate` writes them."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from ..store import REEVAL_PREFIX

ATTR_PREFIX = REEVAL_PREFIX


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for a single value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Reeval:
    """One design's re-evaluation: per-seed accuracies, in seed order, under one budget."""

    test_acc: tuple[float, ...]
    val_acc: tuple[float, ...]
    budget: str
    # The TrainConfig fields every seed trained under; None in entries older code wrote.
    train_config: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def seeds(self) -> int:
        return len(self.test_acc)

    @property
    def test_acc_mean(self) -> float:
        return _mean(self.test_acc)

    @property
    def test_acc_std(self) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        return _std(self.test_acc)

    @property
    def val_acc_mean(self) -> float:
        return _mean(self.val_acc)

    @property
    def val_acc_std(self) -> float:
        return _std(self.val_acc)

    def added(self, val_acc: float, test_acc: float) -> Reeval:
        return dataclasses.replace(
            self, test_acc=self.test_acc + (test_acc,), val_acc=self.val_acc + (val_acc,)
        )

    def same_budget(self, budget: Budget) -> bool:
        """Whether more seeds under `budget` may join these: same name and same training."""
        if self.budget != budget.name:
            return False
        if self.train_config is None:  # older code's "long" was quick x 10 whatever the study
            return budget.name != LONG
        return self.train_config == budget.config.to_dict()

    def to_dict(self) -> dict[str, Any]:
        out = {
            "test_acc_mean": self.test_acc_mean,
            "test_acc_std": self.test_acc_std,
            "val_acc_mean": self.val_acc_mean,
            "val_acc_std": self.val_acc_std,
            "test_acc": list(self.test_acc),
            "val_acc": list(self.val_acc),
            "seeds": self.seeds,
            "budget": self.budget,
        }
        if self.train_config is not None:
            out["train_config"] = dict(self.train_config)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Reeval:
        """Parse a stored attribute, of this code or older; `ValueError` says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"a re-evaluation must be a mapping, got {type(data).__name__}")
        test, val, budget = data.get("test_acc"), data.get("val_acc"), data.get("budget")
        if not isinstance(test, list) or not isinstance(val, list) or len(test) != len(val):
            raise ValueError("test_acc and val_acc must be lists of equal length")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in test + val):
            raise ValueError("accuracies must be numbers")
        if not all(math.isfinite(v) for v in test + val):
            raise ValueError("accuracies must be finite")
        if not isinstance(budget, str):
            raise ValueError(f"budget must be a string, got {budget!r}")
        config = data.get("train_config")
        if config is not None and not isinstance(config, dict):
            raise ValueError(f"train_config must be a mapping, got {type(config).__name__}")
        return cls(tuple(map(float, test)), tuple(map(float, val)), budget, config)

    def short(self) -> str:
        """``0.8812 ± 0.0031 (3 seeds, long)``: test accuracy, mean ± standard deviation."""
        return f"{self.test_acc_mean:.4f} ± {self.test_acc_std:.4f} ({self.seeds} seeds, {self.budget})"


def reeval_key(key: int | str) -> str:
    """The study attribute holding a trial's (int) or an unrun reference's (name) results."""
    return f"{ATTR_PREFIX}{key}"


def reeval_results(study: optuna.Study, prefix: str = ATTR_PREFIX) -> dict[int | str, Reeval]:
    """Every stored re-evaluation, by trial number (or reference name); bad entries are skipped.
    `prefix`: the attributes to read (the search's verification keeps its own)."""
    out: dict[int | str, Reeval] = {}
    for attr, value in study.user_attrs.items():
        if not attr.startswith(prefix):
            continue
        key: int | str = attr[len(prefix) :]
        if key.isdigit():
            key = int(key)
        try:
            out[key] = Reeval.from_dict(value)
        except ValueError:
            continue
    return out


LONG = "long"


@dataclass(frozen=True)
class Budget:
    """A re-evaluation's training budget: its name, its `TrainConfig`, and a line saying what it is."""

    name: str
    config: Any  # budgets.TrainConfig (imported lazily: torch is slow to import)
    text: str
