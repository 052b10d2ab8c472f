"""Creating and loading a search study: its sampler, its stored `StudyConfig`, its references.

Every process that starts on a storage, on any machine, goes through `open_search_study`, which
takes the study's lock (`explorer.store`) while it creates the study, writes its settings and
queues the v1/v2 reference trials: however many start at once, the study is made once, its settings
once and each reference once. A resumed study is checked against its stored settings; a flag that
would change them is refused with one line naming the field, both values and the flag that
continues the study as it was.
"""

from __future__ import annotations

import dataclasses
import shlex
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_space import DEFAULT_REFERENCES, DEFAULT_SPACE, NetworkConfig, reference_network

from ..analysis import DEFAULT_OBJECTIVES, OBJECTIVES
from ..store import STUDY_CONFIG_ATTR, StudyConfig, is_search_trial, study_lock, trial_attr
from ..training import DATASETS, budgets
from ..usage import UsageError
from .rungs import create_lower_rungs
from .settings import NEW_STUDY_DEFAULTS, SAMPLERS, SearchSettings

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_NETWORK_DEFAULTS = NetworkConfig.__dataclass_fields__  # what a new study's network gets


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler suited to a ~100-trial multi-objective budget. The limits of a
    constrained study reach TPE, NSGA-II and GP through each trial's constraints
    (`optuna.trial.Trial.set_constraint`, set by `explorer.search.trial`)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10)
    return optuna.samplers.RandomSampler(seed=seed)


def sampler_for(config: StudyConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The study's sampler with this worker's seed."""
    name = config.sampler if config.sampler in SAMPLERS else "tpe"  # "?": an older study
    return make_sampler(name, seed)


def new_config(s: SearchSettings, budget: str) -> StudyConfig:
    """The `StudyConfig` a new study gets from these settings (None fields take defaults)."""

    seed = s.seed if s.seed is not None else NEW_STUDY_DEFAULTS["seed"]
    width = s.width if s.width is not None else NetworkConfig.__dataclass_fields__["width"].default
    train_config = dataclasses.replace(budgets.budget(budget), seed=seed)
    rungs, eta = s.new_rungs
    return StudyConfig(
        dataset=s.dataset or NEW_STUDY_DEFAULTS["dataset"],
        width=float(width),
        split_seed=seed,
        train_seed=seed,
        budget=budget,
        train_config=train_config.to_dict(),
        space=DEFAULT_SPACE.name,
        space_dims=tuple(d.describe() for d in DEFAULT_SPACE.dimensions),
        objectives=tuple(s.objectives or DEFAULT_OBJECTIVES),
        sampler=s.sampler or NEW_STUDY_DEFAULTS["sampler"],
        constraints=dict(s.constraints or {}),
        rungs=rungs,
        eta=eta,
        stages=tuple(s.stages or _NETWORK_DEFAULTS["stages"].default),
        stem_channels=s.stem if s.stem is not None else _NETWORK_DEFAULTS["stem_channels"].default,
        per_stage=bool(s.per_stage),
    )


def _given(s: SearchSettings, budget_given: bool) -> dict[str, Any]:
    """The study-level values this run asked for explicitly, by `StudyConfig` field."""
    given: dict[str, Any] = {}
    if s.dataset is not None:
        given["dataset"] = s.dataset
    if s.width is not None:
        given["width"] = float(s.width)
    if s.seed is not None:
        given["split_seed"] = given["train_seed"] = s.seed
    if s.sampler is not None:
        given["sampler"] = s.sampler
    if s.objectives is not None:
        given["objectives"] = tuple(s.objectives)
    if s.constraints is not None:
        given["constraints"] = dict(s.constraints)
    if s.rungs is not None:
        given["rungs"] = s.rungs
    if s.eta is not None:
        given["eta"] = s.eta
    if s.stages is not None:
        given["stages"] = tuple(s.stages)
    if s.stem is not None:
        given["stem_channels"] = s.stem
    if s.per_stage is not None:
        given["per_stage"] = s.per_stage
    if budget_given:
        given["budget"] = s.budget
    return given


# The network's settings are fixed when a study is made, even under --override: every design of
# a study is placed in the same network (a per-stage study's parameters are named by stage).
NETWORK_FIELDS = ("stages", "stem_channels", "per_stage")


def _flag_value(field: str, value: Any) -> str:
    if field in ("objectives", "stages"):
        return ",".join(map(str, value))
    if field == "constraints":
        return " ".join(f"--max-{k.replace('_', '-')} {v:g}" for k, v in value.items()) or "none"
    return shlex.quote(str(value))


def check_resume(stored: StudyConfig, s: SearchSettings, name: str) -> StudyConfig:
    """The config a resumed run trains under: the stored one. Raises `UsageError` when a flag
    asks for another value (unless `s.override`), or when the budget preset named on the
    command line no longer matches the stored budget's definition."""

    given = _given(s, s.budget is not None)
    for field, value in given.items():
        have = getattr(stored, field)
        if stored.legacy and field == "sampler":
            continue
        if field in ("rungs", "eta") and have != value:
            raise UsageError(
                f"study {name!r} was made with {field}={have}, not {value}; its rungs are fixed "
                f"when it is made: leave {StudyConfig.FLAGS[field]} out to continue it, or use "
                "another --study"
            )
        if field in NETWORK_FIELDS and have != value:
            flag = StudyConfig.FLAGS[field]
            shown = {"per_stage": "per-stage" if have else "shared-block"}.get(field)
            raise UsageError(
                f"study {name!r} was made with {field}={_show(have)}, not {_show(value)}; its "
                f"network is fixed when it is made ({stored.network_text()}): leave {flag} out "
                f"to continue this {shown or 'study'}, or use another --study"
            )
        if have != value and not s.override:
            flag = StudyConfig.FLAGS[field]
            keep = (
                f"{flag} {_flag_value(field, have)}"
                if field != "constraints"
                else (_flag_value(field, have))
            )
            raise UsageError(
                f"study {name!r} was made with {field}={_show(have)}, not {_show(value)}; "
                f"to continue it as it was, pass {keep} (or leave {flag} out); for new settings "
                "use another --study, or --override to train the new settings into this study"
            )
    if s.budget is not None and not stored.legacy and not s.override:
        now = dataclasses.replace(budgets.budget(s.budget), seed=stored.train_seed).to_dict()
        changed = sorted(k for k in now if now[k] != stored.train_config.get(k))
        if s.budget == stored.budget and changed:
            field = changed[0]
            raise UsageError(
                f"study {name!r} was made with budget {s.budget!r} when its {field} was "
                f"{stored.train_config.get(field)!r}; the preset now has {now[field]!r}; leave "
                "--budget out to continue under the stored budget, or use another --study"
            )
    if s.override and given:
        config = dataclasses.replace(stored, **{k: v for k, v in given.items() if k != "budget"})
        if "budget" in given:  # the new trials train under the budget asked for, and record it
            top = dataclasses.replace(budgets.budget(s.budget), seed=config.train_seed)
            config = dataclasses.replace(config, budget=s.budget, train_config=top.to_dict())
        return config
    return stored


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return repr(value)


def open_search_study(
    s: SearchSettings, storage: optuna.storages.BaseStorage, url: str, budget: str
) -> tuple[optuna.Study, StudyConfig]:
    """Create the study with its settings and references, or load it and check the settings.

    `budget` is the budget a new study gets (the device's default when --budget was not given).
    Safe when any number of processes call it at once on the same storage.
    """
    name = s.study_name
    with study_lock(url, name):
        objectives = s.objectives or DEFAULT_OBJECTIVES
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:
            try:
                stored = StudyConfig.from_study(existing.user_attrs)
            except ValueError as exc:
                raise UsageError(f"study {name!r} has unreadable settings: {exc}") from None
            if stored is not None:
                config = check_resume(stored, s, name)
                if config.rungs > 1:
                    _set_up_rungs(storage, existing, config, s.references)
                return existing, config
            study = existing  # made by a process that died before writing its settings
        else:
            directions = [OBJECTIVES[o].direction for o in objectives]
            study = optuna.create_study(study_name=name, storage=storage, directions=directions)
        config = new_config(s, budget)
        if len(study.directions) != len(config.objectives):
            raise UsageError(f"study {name!r} has {len(study.directions)} objectives, not "
                             f"{len(config.objectives)}; use another --study")  # fmt: skip
        image_size = DATASETS[config.dataset].image_size
        if image_size >> (len(config.stages) - 1) < 2:
            raise UsageError(
                f"--stages {_flag_value('stages', config.stages)}: {len(config.stages)} stages "
                f"downsample {config.dataset}'s {image_size}x{image_size} images too far"
            )
        if s.references:
            queued = {trial_attr(t, "reference") for t in study.get_trials(deepcopy=False)}
            for ref in DEFAULT_REFERENCES:
                if ref not in queued:
                    enqueue_reference(
                        study, ref, rung=config.rungs - 1 if config.rungs > 1 else None,
                        config=config,
                    )  # fmt: skip
        if config.rungs > 1:
            _set_up_rungs(storage, study, config, s.references)
        study.set_user_attr(STUDY_CONFIG_ATTR, config.to_dict())
        return study, config


def _set_up_rungs(
    storage: optuna.storages.BaseStorage,
    study: optuna.Study,
    config: StudyConfig,
    references: bool,
) -> None:
    """The lower rungs' studies, each with the references queued once (they run at every rung);
    under the study's lock. The top rung's references are queued by the caller."""

    for rung, lower in enumerate(create_lower_rungs(storage, study, config)):
        if not references:
            continue
        queued = {trial_attr(t, "reference") for t in lower.get_trials(deepcopy=False)}
        for ref in DEFAULT_REFERENCES:
            if ref not in queued:
                enqueue_reference(lower, ref, rung=rung, config=config)


def enqueue_reference(
    study: optuna.Study,
    name: str,
    attempt: int = 1,
    rung: int | None = None,
    config: StudyConfig | None = None,
) -> None:
    """Queue reference `name` as a trial of `study`, placed in the study's network
    (`search_space.reference_network`: per stage in a per-stage study)."""
    config = config or _config_of(study)
    params = DEFAULT_SPACE.params_from_network(reference_network(name, skeleton(config)))
    attrs: dict[str, Any] = {"reference": name, "attempt": attempt}
    if rung is not None:
        attrs["rung"] = rung
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)


def search_trials_taken(trials: optuna.Study | Sequence[FrozenTrial]) -> int:
    """Distinct search designs (not references, not designs skipped for breaking a limit, not
    copies of a design already trained, which reuse its result) finished or running among a
    study's trials: what counts towards --trials."""
    if isinstance(trials, optuna.Study):
        trials = trials.get_trials(deepcopy=False)
    taken = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(
        1
        for t in trials
        if t.state in taken and is_search_trial(t) and trial_attr(t, "duplicate_of") is None
    )


# A sampler whose last this-many proposals were all copies of trained designs has run out of new
# ones (a small space, or one it has converged on): the search ends short of --trials and says so.
COPIES_IN_A_ROW = 25


def out_of_new_designs(trials: optuna.Study | Sequence[FrozenTrial]) -> bool:
    """Whether the last `COPIES_IN_A_ROW` finished search proposals were all copies."""
    if isinstance(trials, optuna.Study):
        trials = trials.get_trials(deepcopy=False)
    finished = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and is_search_trial(t)
    ]
    last = sorted(finished, key=lambda t: t.number)[-COPIES_IN_A_ROW:]
    return len(last) == COPIES_IN_A_ROW and all(
        trial_attr(t, "duplicate_of") is not None for t in last
    )


def _config_of(study: optuna.Study) -> StudyConfig:
    """A study's stored settings, or a new study's defaults while it has none (the network of
    studies made before it was a setting)."""
    stored = StudyConfig.from_study(study.user_attrs)
    return stored or new_config(SearchSettings(), "quick")


def skeleton(config: StudyConfig) -> NetworkConfig:
    """The study's network for its dataset's images (`StudyConfig.skeleton`)."""
    info = DATASETS[config.dataset]
    return config.skeleton(info.channels, info.num_classes, info.image_size)
