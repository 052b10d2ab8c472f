"""The two records a study is made of: its settings (`StudyConfig`) and each trial (`TrialRecord`).

Both are frozen dataclasses with ``to_dict`` / ``from_dict`` and are the only code that knows the
names under which Optuna keeps them (study and trial user attributes). Every other part of the
project (the search's workers, the summary, the re-evaluation, the exporter, the dashboard) reads
a study through these two types.

A study keeps its settings under one study attribute, ``config``, written once when the study is
created. Its network (`StudyConfig.stages`, `stem_channels`, `per_stage`) was added later: a
config stored without it reads as the network every study had then, stages (1, 1), stem 96, one
shared block. Studies written before that attribute existed kept each setting under its own name
(``dataset``, ``budget``, ``seed``, ``width``, ``objectives``, ``space``); `StudyConfig.from_study`
reads both.

A trial keeps one user attribute per field of `TrialRecord` (names in `TrialRecord.ATTRS`);
attributes this version does not know are kept in `TrialRecord.extra` and written back unchanged.
Nothing here trusts the storage: a record whose stored design does not validate has
``network=None`` and says why in ``problem``; a stored number that is not a finite number reads
as None.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from search_space import (
    DEFAULT_SPACE,
    MAX_IMAGE_SIZE,
    REFERENCES,
    BlockConfig,
    NetworkConfig,
    reference_network,
)

STUDY_CONFIG_ATTR = "config"
MAX_RUNGS = 6
WORKERS_STARTED_ATTR = "workers_started"  # how many workers have joined the study, ever
REEVAL_PREFIX = "reeval:"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


# --------------------------------------------------------------------------------------------
# The study


@dataclass(frozen=True)
class StudyConfig:
    """The settings a study was made with; every trial of the study was trained under them.

    `train_config` is the budget's whole `TrainConfig` as a dict (`TrainConfig.to_dict`), so a
    preset that is recalibrated later cannot silently change what a resumed study trains.
    `legacy` marks a config read from the separate attributes of a study made before
    `StudyConfig` existed: its `train_config` is unknown (empty) and its split seed is its seed.
    """

    dataset: str
    width: float
    split_seed: int
    train_seed: int
    budget: str
    train_config: dict[str, Any]
    space: str
    space_dims: tuple[str, ...]
    objectives: tuple[str, ...]
    sampler: str
    constraints: dict[str, float] = field(default_factory=dict)
    # Successive halving: `rungs` budgets, each 1/eta of the training images of the one above;
    # `budget` and `train_config` are the top rung's. One rung is a single-budget search.
    rungs: int = 1
    eta: int = 3
    # The network the designs are placed in: blocks per stage, the stem's channels at paper scale,
    # and whether each stage has its own design (`NetworkConfig.stage_blocks`).
    stages: tuple[int, ...] = NetworkConfig.__dataclass_fields__["stages"].default
    stem_channels: int = NetworkConfig.__dataclass_fields__["stem_channels"].default
    per_stage: bool = False
    legacy: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be a name, got {self.dataset!r}")
        if not isinstance(self.width, (int, float)) or not 0 < self.width <= 8:
            raise ValueError(f"width must be in (0, 8], got {self.width!r}")
        for name in ("split_seed", "train_seed"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not self.objectives or self.objectives[0] != "val_acc":
            raise ValueError(f"objectives must start with val_acc, got {self.objectives!r}")
        for key, value in self.constraints.items():
            if _number(value) is None or value <= 0:
                raise ValueError(f"constraint {key} must be a positive number, got {value!r}")
        if _int(self.rungs) is None or not 1 <= self.rungs <= MAX_RUNGS:
            raise ValueError(f"rungs must be in 1..{MAX_RUNGS}, got {self.rungs!r}")
        if _int(self.eta) is None or not self.eta >= 2:
            raise ValueError(f"eta must be an integer >= 2, got {self.eta!r}")
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        if not isinstance(self.per_stage, bool):
            raise ValueError(f"per_stage must be true or false, got {self.per_stage!r}")
        # The network's own checks (stage count and depths, stem at the study's width); whether
        # the stages fit the dataset's images is checked where the images are known.
        self.skeleton(image_size=MAX_IMAGE_SIZE)

    def skeleton(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28
    ) -> NetworkConfig:
        """The study's network for data of this shape, with v1 placed in it (per stage in a
        per-stage study); trials replace the design (`search_space.network_from_trial`)."""
        shape = NetworkConfig(
            block=REFERENCES["v1"],
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            stem_channels=self.stem_channels,
            stages=self.stages,
            width=self.width,
        )
        return reference_network("v1", shape, per_stage=self.per_stage)

    def network_text(self) -> str:
        """The network in one line, as `info` and the summary show it."""
        design = "one design per stage" if self.per_stage else "one shared block"
        return (
            f"stages {','.join(map(str, self.stages))} (blocks per stage), width {self.width:g}, "
            f"stem {self.stem_channels}, {design}"
        )

    # Fields a resumed run is checked against, with the flag that sets each.
    FLAGS = {
        "dataset": "--dataset",
        "width": "--width",
        "split_seed": "--seed",
        "train_seed": "--seed",
        "budget": "--budget",
        "train_config": "--budget",
        "space": None,
        "space_dims": None,
        "objectives": "--objectives",
        "sampler": "--sampler",
        "constraints": "--max-params/--max-flops/--max-latency-ms",
        "rungs": "--rungs",
        "eta": "--eta",
        "stages": "--stages",
        "stem_channels": "--stem",
        "per_stage": "--per-stage",
    }

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["space_dims"] = list(self.space_dims)
        data["objectives"] = list(self.objectives)
        data["stages"] = list(self.stages)
        data.pop("legacy")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        if not isinstance(data, Mapping):
            raise ValueError(f"a study config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"legacy"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown study config field(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        values["space_dims"] = tuple(values.get("space_dims") or ())
        values["objectives"] = tuple(values.get("objectives") or ())
        values["train_config"] = dict(values.get("train_config") or {})
        values["constraints"] = dict(values.get("constraints") or {})
        if "stages" in values:
            stages = values["stages"]
            values["stages"] = tuple(stages) if isinstance(stages, (list, tuple)) else stages
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"incomplete study config: {exc}") from None

    @classmethod
    def from_study(cls, attrs: Mapping[str, Any]) -> StudyConfig | None:
        """The config in a study's user attributes; None while the study has none yet."""
        if STUDY_CONFIG_ATTR in attrs:
            return cls.from_dict(attrs[STUDY_CONFIG_ATTR])
        if not attrs.get("objectives"):  # "objectives" was written last by earlier versions
            return None

        seed = _int(attrs.get("seed"))
        width = _number(attrs.get("width"))
        return cls(
            dataset=str(attrs.get("dataset", "fashion-mnist")),
            width=width
            if width is not None
            else NetworkConfig.__dataclass_fields__["width"].default,
            split_seed=seed or 0,
            train_seed=seed or 0,
            budget=str(attrs.get("budget", "?")),
            train_config={},
            space=str(attrs.get("space", DEFAULT_SPACE.name)),
            space_dims=(),
            objectives=tuple(attrs["objectives"]),
            sampler="?",
            legacy=True,
        )


# --------------------------------------------------------------------------------------------
# A trial


@dataclass(frozen=True)
class TrialRecord:
    """One trial as plain data, whatever its state.

    Metrics: `val_acc` (final validation accuracy in [0, 1]), `val_loss`, `test_acc` (where
    measured), `params` (trainable parameters), `flops` (per image, 2 x multiply-adds),
    `latency_ms` (batch 1) and `latency_batch_ms` (training batch) on the trial's device,
    `train_time_s`, `images_per_s`; `curves` holds per-epoch lists (``epoch``, ``train_loss``,
    ``val_loss``, ``val_acc``). Provenance: `worker` (a unique id per worker process), `device`,
    `device_info`, `versions`, `budget`, `seed`, `sampler_seed`, `dataset`, `attempt`,
    `retry_of` and `deaths` (a retry of an interrupted trial); in a successive-halving study `rung`,
    `parent` and `promotion` (see `explorer.search.rungs`). Outcome notes: `fail_reason`,
    `pruned_at_epoch`, `duplicate_of` (the earlier trial of the same design whose result this one
    reuses; `reuse` says whether training would have repeated it, ``repeat``, or it is a
    ``cache``), `skipped` (why a design over a limit was not trained), `constraint_values` (value minus limit per limit of the study, <= 0 feasible),
    `weights` (artifact id of the trained state dict), `proxies`, `prescreen`. `reeval`
    is the study's re-evaluation of this trial (`explorer.evaluate`), when there is one.
    `suggested` is the point of the search space Optuna proposed (the trial's params).
    """

    number: int
    state: str
    reference: str | None = None
    network: NetworkConfig | None = None
    suggested: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    # metrics
    val_acc: float | None = None
    val_loss: float | None = None
    test_acc: float | None = None
    params: int | None = None
    flops: float | None = None
    latency_ms: float | None = None
    latency_batch_ms: float | None = None
    train_time_s: float | None = None
    images_per_s: float | None = None
    curves: dict[str, list] = field(default_factory=dict)
    # provenance
    worker: str | None = None
    device: str | None = None
    device_info: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    budget: str | None = None
    seed: int | None = None
    sampler_seed: int | None = None
    dataset: str | None = None
    attempt: int = 1
    retry_of: int | None = None
    retry_reason: str | None = None  # why the trial this one retries was interrupted
    deaths: int | None = None  # how many of the design's runs before this one lost their worker
    # successive halving: the rung (0 is the bottom), the trial of the rung below this design was
    # promoted from, and how it ranked there when it was promoted
    rung: int | None = None
    train_images: int | None = None  # images per epoch at the trial's rung
    parent: int | None = None
    promotion: dict[str, Any] | None = None
    # outcome notes
    fail_reason: str | None = None
    pruned_at_epoch: int | None = None
    duplicate_of: int | None = None
    reuse: str | None = None
    skipped: str | None = None
    constraint_values: list[float] | None = None
    weights: str | None = None
    proxies: dict[str, float | None] | None = None
    prescreen: dict[str, Any] | None = None
    reeval: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # The trial user attributes each field is stored under (all but the Optuna-owned ones).
    ATTRS = (
        "reference", "network", "val_acc", "val_loss", "test_acc", "params", "flops",
        "latency_ms", "latency_batch_ms", "train_time_s", "images_per_s", "curves", "worker",
        "device", "device_info", "versions", "budget", "seed", "sampler_seed", "dataset",
        "attempt", "retry_of", "retry_reason", "deaths", "rung", "train_images", "parent", "promotion", "fail_reason", "pruned_at_epoch", "duplicate_of", "reuse", "skipped",
        "constraint_values", "weights", "proxies", "prescreen",
    )  # fmt: skip
    _NUMBERS = ("val_acc", "val_loss", "test_acc", "flops", "latency_ms", "latency_batch_ms",
                "train_time_s", "images_per_s")  # fmt: skip
    _INTS = ("params", "seed", "sampler_seed", "retry_of", "deaths", "pruned_at_epoch", "duplicate_of",
             "rung", "train_images", "parent")  # fmt: skip
    _STRS = ("worker", "device", "budget", "dataset", "fail_reason", "weights", "reuse", "skipped",
             "retry_reason")  # fmt: skip
    _DICTS = ("device_info", "versions", "proxies", "prescreen", "promotion")

    @property
    def block(self) -> BlockConfig | None:
        return self.network.block if self.network is not None else None

    @property
    def is_reference(self) -> bool:
        return self.reference is not None

    @property
    def is_search(self) -> bool:
        """A design the search proposed and trained: not a reference, not skipped for breaking
        a limit (what ``--trials`` counts)."""
        return self.reference is None and self.skipped is None

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    def value(self, key: str) -> float | None:
        """An objective's value by its name (``val_acc``, ``params``, ``flops``, ``latency_ms``)."""
        if key not in self._NUMBERS + ("params",):
            raise KeyError(f"unknown objective {key!r}")
        value = getattr(self, key)
        return None if value is None else float(value) if key != "params" else value

    def label(self) -> str:
        return self.reference or f"#{self.number}"

    @property
    def final_train_loss(self) -> float | None:
        """The last epoch's mean training loss (lower is better), where training got that far."""
        losses = self.curves.get("train_loss") or []
        return _number(losses[-1]) if losses else None

    def last_val_acc(self) -> float | None:
        """The final accuracy, or the last epoch's of a trial stopped early."""
        if self.val_acc is not None:
            return self.val_acc
        curve = self.curves.get("val_acc") or []
        return _number(curve[-1]) if curve else None

    def to_dict(self) -> dict[str, Any]:
        """The user attributes this record is stored as (None fields left out)."""
        out: dict[str, Any] = dict(self.extra)
        for name in self.ATTRS:
            value = getattr(self, name)
            if name == "network":
                value = value.to_dict() if value is not None else None
            if name == "curves" and not value:
                continue
            if name == "attempt" and value == 1:
                continue
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(
        cls,
        attrs: Mapping[str, Any],
        number: int = -1,
        state: str = "COMPLETE",
        suggested: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        """A record from stored user attributes; never raises on bad stored data."""
        attrs = dict(attrs)
        values: dict[str, Any] = {}
        network, problem = None, None
        raw = attrs.get("network")
        if raw is not None:
            try:
                network = NetworkConfig.from_dict(raw)
            except (ValueError, TypeError) as exc:
                problem = f"invalid stored design: {exc}"
        reference = attrs.get("reference")
        values["reference"] = None if reference is None else str(reference)
        for name in cls._NUMBERS:
            values[name] = _number(attrs.get(name))
        for name in cls._INTS:
            values[name] = _int(attrs.get(name))
        for name in cls._STRS:
            values[name] = _str(attrs.get(name))
        for name in cls._DICTS:
            values[name] = _dict(attrs.get(name))
        curves = _dict(attrs.get("curves")) or {}
        values["curves"] = {k: list(v) for k, v in curves.items() if isinstance(v, (list, tuple))}
        values["attempt"] = _int(attrs.get("attempt")) or 1
        limits = attrs.get("constraint_values")
        values["constraint_values"] = (
            [float(v) for v in limits if _number(v) is not None]
            if isinstance(limits, (list, tuple))
            else None
        )
        values["reeval"] = _dict(attrs.get("reeval"))  # kept on the trial by hand-made studies
        extra = {k: v for k, v in attrs.items() if k not in cls.ATTRS and k != "reeval"}
        if state == "FAIL" and values["fail_reason"] is None:
            # Recovery fails a dead worker's trial in one write, the state alone.
            values["fail_reason"] = "interrupted"
        return cls(
            number=number,
            state=state,
            network=network,
            problem=problem,
            suggested=dict(suggested or {}),
            extra=extra,
            **values,
        )

    @classmethod
    def from_trial(cls, trial: FrozenTrial, reeval: dict[str, Any] | None = None) -> TrialRecord:
        record = cls.from_dict(trial.user_attrs, trial.number, trial.state.name, trial.params)
        return dataclasses.replace(record, reeval=reeval) if reeval is not None else record


def trial_attr(trial: FrozenTrial, name: str) -> Any:
    """One stored field of a trial by its `TrialRecord` name, read without building the whole
    record (for the hot loops of the workers, which look at every trial of a study often)."""
    if name not in TrialRecord.ATTRS:
        raise KeyError(f"unknown trial field {name!r}")
    return trial.user_attrs.get(name)


def is_search_trial(trial: FrozenTrial) -> bool:
    """`TrialRecord.is_search` read from a stored trial without building its record."""
    return trial.user_attrs.get("reference") is None and trial.user_attrs.get("skipped") is None
