"""`SearchSettings`: what one run of the search was asked to do, validated once, frozen.

The fields that shape the study itself (dataset, the network: width, stages, stem and
per-stage designs; seed, budget, sampler, objectives and the constraints) default to None, which means "as the study was made" when it exists and the defaults
in `NEW_STUDY_DEFAULTS` for a new one; `explorer.search.study` turns them into the study's
`StudyConfig`. The other fields only steer this run (how many trials, which workers, what to keep).
"""

from __future__ import annotations

from dataclasses import dataclass

from search_space import DEFAULT_SPACE, NetworkConfig

from ..analysis import DEFAULT_OBJECTIVES, OBJECTIVES
from ..store import ABLATION_SUFFIX, MAX_RUNGS, is_rung_study, rung_of_name
from ..training import DATASETS, DEFAULT_WORKERS_PER_GPU, PROXY_NAMES, budget
from .rungs import DEFAULT_ETA, DEFAULT_RUNGS

SAMPLERS = ("tpe", "nsga2", "gp", "random")
CONSTRAINTS = {"max_params": "params", "max_flops": "flops", "max_latency_ms": "latency_ms"}

# What a new study gets for a study-level setting left at None.
NEW_STUDY_DEFAULTS = {"dataset": "fashion-mnist", "seed": 0, "sampler": "tpe", "rungs": DEFAULT_RUNGS,
                      "eta": DEFAULT_ETA}  # fmt: skip


@dataclass(frozen=True)
class SearchSettings:
    """Everything one worker needs; picklable so worker processes can receive it."""

    trials: int = 100
    study: str | None = None
    storage: str | None = None
    # study-level: None = as stored, or the new-study default
    dataset: str | None = None
    width: float | None = None
    stages: tuple[int, ...] | None = None  # blocks per stage
    stem: int | None = None  # stem channels at paper scale
    per_stage: bool | None = None  # one design per stage
    seed: int | None = None
    budget: str | None = None
    sampler: str | None = None
    objectives: tuple[str, ...] | None = None
    max_params: float | None = None
    max_flops: float | None = None
    max_latency_ms: float | None = None
    rungs: int | None = None
    eta: int | None = None
    override: bool = False
    # this run
    data_dir: str | None = None
    device: str = "auto"
    workers: int | None = None  # None: auto (`devices.plan_workers`)
    workers_per_gpu: int = DEFAULT_WORKERS_PER_GPU
    deterministic: bool = False
    timeout: float | None = None
    # When this run stops starting trials (`time.time()` seconds), set by `session.run` from
    # --timeout at the run's start, so worker processes started later keep the same deadline.
    until: float | None = None
    heartbeat_s: int = 60  # seconds between a trial's heartbeats (any storage); twice is the grace
    references: bool = True
    prune: bool = True
    weights: bool = True
    proxies: bool = True
    prescreen: int = 1
    proxy: str = "naswot"
    final_seeds: int = 1
    verify_seeds: int = (
        8  # seeds cap of the claims' verification race (`explorer.search.verification`); 0: off
    )
    verify_budget: str | None = None  # None: 10x the search's top budget
    quiet: bool = False

    def __post_init__(self) -> None:

        if not isinstance(self.trials, int) or self.trials < 0:
            raise ValueError(f"trials must be >= 0, got {self.trials!r}")
        if self.study is not None and is_rung_study(self.study):
            raise ValueError(
                f"study {self.study!r} is a rung of study {rung_of_name(self.study)[0]!r}; "
                "search that study instead"
            )
        if self.study is not None and self.study.endswith(ABLATION_SUFFIX):
            raise ValueError(
                f"study {self.study!r} holds the ablation runs of study "
                f"{self.study[: -len(ABLATION_SUFFIX)]!r}; search that study instead"
            )
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.width is not None and not 0 < self.width <= 8:
            raise ValueError(f"width must be in (0, 8], got {self.width}")
        if self.stages is not None or self.stem is not None:
            self._check_network()
        if self.budget is not None:
            budget(self.budget)  # ValueError names the known budgets
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.objectives is not None:
            _check_objectives(self.objectives)
        for name in CONSTRAINTS:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 or auto, got {self.workers}")
        if self.workers_per_gpu < 1:
            raise ValueError(f"workers_per_gpu must be >= 1, got {self.workers_per_gpu}")
        if not isinstance(self.heartbeat_s, int) or self.heartbeat_s < 1:
            raise ValueError(
                f"heartbeat_s must be a whole number of seconds >= 1, got {self.heartbeat_s!r}"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.rungs is not None and not 1 <= self.rungs <= MAX_RUNGS:
            raise ValueError(f"rungs must be in 1..{MAX_RUNGS}, got {self.rungs}")
        if self.eta is not None and self.eta < 2:
            raise ValueError(f"eta must be >= 2, got {self.eta}")
        if self.final_seeds < 1:
            raise ValueError(f"final_seeds must be >= 1, got {self.final_seeds}")
        if (
            not isinstance(self.verify_seeds, int)
            or self.verify_seeds < 0
            or self.verify_seeds == 1
            or self.verify_seeds > 64
        ):
            raise ValueError(
                "verify_seeds must be 0 (off) or a cap of 2 to 64 seeds per claim, got "
                f"{self.verify_seeds!r}"
            )
        if self.verify_budget is not None:
            budget(self.verify_budget)  # ValueError names the known budgets
        if self.prescreen < 1:
            raise ValueError(f"prescreen must be >= 1, got {self.prescreen}")
        if self.proxy not in PROXY_NAMES:
            raise ValueError(f"proxy must be one of {', '.join(PROXY_NAMES)}, got {self.proxy!r}")

    def _check_network(self) -> None:
        """The network asked for fits the dataset's images and the channel limits (the space's
        widest design in every stage)."""
        info = DATASETS[self.dataset or NEW_STUDY_DEFAULTS["dataset"]]
        shape: dict = {"image_size": info.image_size, "in_channels": info.channels}
        if self.stages is not None:
            shape["stages"] = self.stages
        if self.stem is not None:
            shape["stem_channels"] = self.stem
        if self.width is not None:
            shape["width"] = self.width
        widest: dict = {}
        for dim in DEFAULT_SPACE.dimensions:
            if dim.active(widest):
                widest[dim.name] = dim.high if dim.choices is None else dim.choices[0]
        try:
            NetworkConfig(block=DEFAULT_SPACE.config_from_params(widest), **shape)
        except ValueError as exc:
            # The network's words for the flags: stem_channels is --stem.
            raise ValueError(str(exc).replace("stem_channels", "stem")) from None

    @property
    def study_name(self) -> str:
        """--study, else the dataset's default name."""
        return self.study or f"{self.dataset or NEW_STUDY_DEFAULTS['dataset']}-{DEFAULT_SPACE.name}"

    @property
    def network_words(self) -> str:
        """The network flags given that differ from the default network, as a study name's tail
        (``-stages1-1-1-per-stage``); empty when none does."""
        default = NetworkConfig.__dataclass_fields__
        parts = []
        if self.stages is not None and tuple(self.stages) != default["stages"].default:
            parts.append("stages" + "-".join(map(str, self.stages)))
        if self.stem is not None and self.stem != default["stem_channels"].default:
            parts.append(f"stem{self.stem}")
        if self.per_stage:
            parts.append("per-stage")
        return "".join(f"-{p}" for p in parts)

    @property
    def new_rungs(self) -> tuple[int, int]:
        """(rungs, eta) a new study gets from these settings."""
        return (
            self.rungs if self.rungs is not None else NEW_STUDY_DEFAULTS["rungs"],
            self.eta if self.eta is not None else NEW_STUDY_DEFAULTS["eta"],
        )

    @property
    def constraints(self) -> dict[str, float] | None:
        """The limits given on this run, by objective name; None when none was given."""
        given = {CONSTRAINTS[k]: getattr(self, k) for k in CONSTRAINTS if getattr(self, k)}
        return given or None


def _check_objectives(objectives: tuple[str, ...]) -> None:
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise ValueError(
            f"unknown objective(s) {', '.join(unknown)}; choose from {', '.join(OBJECTIVES)}"
        )
    if not objectives or objectives[0] != "val_acc" or len(set(objectives)) != len(objectives):
        raise ValueError(f"objectives must start with val_acc and not repeat, got {objectives!r}")
    if len(objectives) < 2:
        raise ValueError("objectives need at least one cost besides val_acc (e.g. val_acc,params)")


__all__ = ["DEFAULT_OBJECTIVES", "NEW_STUDY_DEFAULTS", "SAMPLERS", "SearchSettings"]
