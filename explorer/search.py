"""`python -m explorer.search`: the multi-objective search over Inception block designs.

Each trial samples a block from the search space, builds the small-image network around it, trains
it under a named budget and stores everything needed to rebuild and judge it (see
`explorer.results` for the attribute schema). The v1 and v2 reference designs are trained first in
every new study as ordinary trials tagged ``reference``. Running the same command again resumes the
study up to the requested number of trials; several processes or machines may share one storage.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import io
import multiprocessing as mp
import os
import platform
import signal
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search_space import DEFAULT_SPACE, REFERENCES, NetworkConfig, config_from_trial, network_params

from .proxies import PROXY_NAMES
from .results import (
    DEFAULT_OBJECTIVES,
    OBJECTIVES,
    TrialRecord,
    hypervolume,
    pareto_front,
    study_records,
    trial_record,
)
from .storage import StorageError, artifact_dir, default_storage, open_storage, redact

DATASETS = ("fashion-mnist", "mnist", "cifar10")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
DEFAULT_REFERENCES = ("v1", "v2")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


class TrialFailed(Exception):
    """A trial that could not finish (invalid design, divergence, out of memory); recorded, not fatal."""


@dataclass(frozen=True)
class PruneRule:
    """Stop a trial after an epoch when at least `min_dominators` completed trials had a higher
    validation accuracy at that same epoch while being no worse on every other objective.

    Optuna's pruners do not work in multi-objective studies, hence this rule of our own. It waits
    for `warmup` completed trials and never stops reference trials or a trial's last epoch.
    """

    min_dominators: int = 3
    warmup: int = 8

    def should_prune(
        self, epoch: int, acc: float, costs: dict[str, float], completed: list[TrialRecord]
    ) -> bool:
        if len(completed) < self.warmup:
            return False
        dominators = 0
        for rec in completed:
            curve = (rec.get("curves") or {}).get("val_acc") or []
            if len(curve) <= epoch or not curve[epoch] > acc:
                continue
            if all(
                isinstance(rec.get(k), (int, float)) and rec.get(k) <= v for k, v in costs.items()
            ):
                dominators += 1
                if dominators >= self.min_dominators:
                    return True
        return False


@dataclass
class SearchSettings:
    """Everything one worker needs, picklable so worker processes can receive it."""

    trials: int = 100
    study: str | None = None
    storage: str | None = None
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    budget: str | None = None
    device: str = "auto"
    seed: int = 0
    sampler: str = "tpe"
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    workers: int | None = None  # None: auto (`auto_workers`)
    timeout: float | None = None
    references: bool = True
    prune: bool = True
    keep_weights: bool = True
    proxies: bool = True
    prescreen: int = 1
    proxy: str = "naswot"
    width: float | None = None
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def study_name(self) -> str:
        return self.study or f"{self.dataset}-{DEFAULT_SPACE.name}"


# --------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2 from main(), without the usage
        raise UsageError(message)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag; the description and examples kept as written."""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m explorer.search`."""
    d = SearchSettings()
    p = _Parser(
        prog="python -m explorer.search",
        formatter_class=_HelpFormatter,
        description=(
            "Multi-objective search over Inception block designs. Each trial samples a block,\n"
            "trains a small network around it briefly and records accuracy, parameters, FLOPs\n"
            "and latency. The v1 (GoogLeNet) and v2 (BN-Inception) blocks are trained first as\n"
            "reference trials. Rerun the same command to resume; run it on several machines\n"
            "against one --storage to share the work."
        ),
        epilog=(
            "examples:\n"
            "  python -m explorer.search --trials 100\n"
            "  python -m explorer.search --trials 20 --budget smoke     # a minute, to try it\n"
            "  python -m explorer.search --config studies/cpu-default.toml\n"
            "  python -m explorer.search --workers 4 --storage postgresql://user@db:5432/nas\n"
            "then:\n"
            "  streamlit run app/main.py                                 # the dashboard\n"
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
        help="search trials the study should have in total (references not counted); "
        "a rerun continues up to this number",
    )
    p.add_argument(
        "--study",
        default=None,
        help="study name (default: DATASET-inception-block, e.g. fashion-mnist-inception-block)",
    )
    p.add_argument(
        "--storage",
        default=None,
        help=f"journal file path or SQLAlchemy URL (default: $EXPLORER_STORAGE or {default_storage()})",
    )
    p.add_argument("--dataset", default=d.dataset, choices=DATASETS, help="dataset to train on")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the dataset files (default: $EXPLORER_DATA, system packages, download)",
    )
    p.add_argument(
        "--budget",
        default=None,
        choices=("smoke", "quick", "standard"),
        help="training budget per trial (default: standard on CUDA, quick otherwise)",
    )
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--seed", type=int, default=d.seed, help="seed of the sampler and of every trial's training"
    )
    p.add_argument(
        "--sampler",
        default=d.sampler,
        choices=SAMPLERS,
        help="Optuna sampler (tpe: multi-objective TPE, see BENCHMARKS.md)",
    )
    p.add_argument(
        "--objectives",
        default=",".join(d.objectives),
        help=f"comma-separated, from: {', '.join(OBJECTIVES)}; val_acc is always first",
    )
    p.add_argument(
        "--workers",
        type=_workers_arg,
        default="auto",
        help="worker processes on this machine: auto is one per GPU on CUDA and one per CPU "
        "core (up to 8) on a CPU, where separate processes beat threads (BENCHMARKS.md)",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="stop starting trials after this many seconds"
    )
    p.add_argument(
        "--width",
        type=float,
        default=None,
        help="network width multiplier for block widths (default: NetworkConfig's 0.25)",
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
        dest="keep_weights",
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
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-trial lines")
    return p


def _workers_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or auto, got {text!r}") from None


def auto_workers(device: Any) -> int:
    """Worker processes for ``--workers auto``: one per GPU, one per CPU core up to 8 on a CPU
    (the search's networks are small: two one-thread processes train 1.4x as many trials per
    minute as one two-thread process, BENCHMARKS.md "Threads per trial"), one on MPS."""
    import torch

    if device.type == "cuda":
        return max(1, torch.cuda.device_count())
    if device.type == "cpu":
        return max(1, min(8, os.cpu_count() or 1))
    return 1


# Config keys that are switches: the value that turns the flag on.
_SWITCHES = {
    "references": ("--no-references", False),
    "prune": ("--no-prune", False),
    "weights": ("--no-weights", False),
    "proxies": ("--no-proxies", False),
    "quiet": ("--quiet", True),
}


def config_args(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The flags a ``--config`` TOML file stands for, checked by the same parser as the command
    line: ``budget = "smoke"`` is ``--budget smoke``, ``prune = false`` is ``--no-prune``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None
    known = {a.dest for a in parser._actions} - {"help", "config", "keep_weights", *_SWITCHES}
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
            tokens += [f"--{name.replace('_', '-')}", str(value)]
        else:
            raise UsageError(
                f"--config {path}: unknown key {key!r}; keys are the flag names: "
                f"{', '.join(sorted(known | set(_SWITCHES)))}"
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
    if ns.trials < 0:
        raise UsageError(f"--trials must be >= 0, got {ns.trials}")
    if ns.workers == "auto":
        ns.workers = None
    elif ns.workers < 1:
        raise UsageError(f"--workers must be >= 1 or auto, got {ns.workers}")
    if ns.timeout is not None and ns.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {ns.timeout}")
    if ns.prescreen < 1:
        raise UsageError(f"--prescreen must be >= 1, got {ns.prescreen}")
    if ns.width is not None and not 0 < ns.width <= 8:
        raise UsageError(f"--width must be in (0, 8], got {ns.width}")
    objectives = tuple(o.strip() for o in ns.objectives.split(",") if o.strip())
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise UsageError(
            f"unknown objective(s) {', '.join(unknown)}; choose from {', '.join(OBJECTIVES)}"
        )
    if not objectives or objectives[0] != "val_acc" or len(set(objectives)) != len(objectives):
        raise UsageError(
            f"--objectives must start with val_acc and not repeat, got {ns.objectives!r}"
        )
    if len(objectives) < 2:
        raise UsageError(
            "--objectives needs at least one cost besides val_acc (e.g. val_acc,params)"
        )
    values = vars(ns) | {"objectives": objectives}
    values.pop("config")
    return SearchSettings(**values)


# --------------------------------------------------------------------------------------------
# Study set-up


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler suited to a ~100-trial multi-objective budget."""
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


def create_or_load_study(
    s: SearchSettings, storage: optuna.storages.BaseStorage, budget: str
) -> optuna.Study:
    """Create the study, or load it and check it was made for the same objectives and budget."""
    directions = [OBJECTIVES[o].direction for o in s.objectives]
    try:
        study = optuna.create_study(
            study_name=s.study_name,
            storage=storage,
            directions=directions,
            sampler=make_sampler(s.sampler, s.seed),
            load_if_exists=True,
        )
    except ValueError as exc:
        raise UsageError(f"study {s.study_name!r}: {exc}") from None
    attrs = study.user_attrs
    if not attrs.get("objectives"):
        # Workers started together may all get here. "objectives" goes last, as the mark that the
        # settings are complete: a worker that sees it sees the rest.
        study.set_user_attr("dataset", s.dataset)
        study.set_user_attr("budget", budget)
        study.set_user_attr("space", DEFAULT_SPACE.name)
        study.set_user_attr("seed", s.seed)
        if s.width is not None:
            study.set_user_attr("width", s.width)
        if s.references:
            queued = {t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)}
            for ref in DEFAULT_REFERENCES:
                if ref not in queued:
                    enqueue_reference(study, ref)
        study.set_user_attr("objectives", list(s.objectives))
        return study
    for key, want in (
        ("objectives", list(s.objectives)),
        ("dataset", s.dataset),
        ("budget", budget),
    ):
        if attrs.get(key) != want:
            raise UsageError(
                f"study {s.study_name!r} was made with {key}={attrs.get(key)!r}, not {want!r}; "
                f"pass the same settings or another --study"
            )
    if attrs.get("width") != s.width and s.width is not None:
        raise UsageError(f"study {s.study_name!r} was made with width={attrs.get('width')!r}")
    return study


def enqueue_reference(study: optuna.Study, name: str, attempt: int = 1) -> None:
    params = DEFAULT_SPACE.params_from_config(REFERENCES[name])
    study.enqueue_trial(
        params, user_attrs={"reference": name, "attempt": attempt}, skip_if_exists=False
    )


def recover(study: optuna.Study, live_check: Callable[[str], bool] | None = None) -> list[int]:
    """Fail the trials a dead worker on this host left RUNNING, and queue interrupted trials again.

    A trial counts as interrupted when it failed without a recorded reason (Ctrl-C, a killed
    process, a machine that stopped sending heartbeats); designs that failed for a reason (NaN
    loss, out of memory, invalid) are not retried. Workers on other hosts are left to Optuna's
    heartbeat (RDB storages), which fails their stale trials. Returns the trial numbers queued.
    """
    live_check = live_check or _worker_alive
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if isinstance(worker, str) and not live_check(worker):
            study._storage.set_trial_user_attr(
                t._trial_id, "fail_reason", f"interrupted: worker {worker} died"
            )
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for t in trials:
        reason = t.user_attrs.get("fail_reason")
        interrupted = reason is None or str(reason).startswith("interrupted")
        if t.state == TrialState.FAIL and interrupted and t.number not in retried:
            if retry(study, t):
                queued.append(t.number)
    return queued


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Queue a trial's design again (three attempts at most), keeping its reference tag."""
    attempt = int(trial.user_attrs.get("attempt", 1))
    if attempt >= 3 or not trial.params:
        return False
    attrs = {"attempt": attempt + 1, "retry_of": trial.number}
    if trial.user_attrs.get("reference"):
        attrs["reference"] = trial.user_attrs["reference"]
    study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)
    return True


def _worker_alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def search_done(study: optuna.Study, target: int) -> int:
    """Search trials (not references) finished or running: what counts towards --trials."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=states)
        if not t.user_attrs.get("reference")
    )


# --------------------------------------------------------------------------------------------
# One trial


class Objective:
    """The function Optuna calls for each trial: sample, build, train, measure, store."""

    def __init__(
        self, s: SearchSettings, budget: str, data: Any, device: Any, storage_url: str
    ) -> None:
        from . import metrics, train

        self.s, self.budget, self.data, self.device = s, budget, data, device
        self.train_config = dataclasses.replace(train.BUDGETS[budget], seed=s.seed)
        self.train_mod, self.metrics = train, metrics
        self.rule = PruneRule() if s.prune else None
        self.store = None
        if s.keep_weights:
            from optuna.artifacts import FileSystemArtifactStore

            folder = artifact_dir(storage_url)
            folder.mkdir(parents=True, exist_ok=True)
            self.store = FileSystemArtifactStore(str(folder))
        self.versions = _versions()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def network(self, trial: optuna.Trial) -> NetworkConfig:
        block = config_from_trial(trial, DEFAULT_SPACE)
        kwargs = {"width": self.s.width} if self.s.width is not None else {}
        return NetworkConfig(
            block=block,
            in_channels=self.data.info.channels,
            num_classes=self.data.info.num_classes,
            image_size=self.data.info.image_size,
            **kwargs,
        )

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        import torch

        trial.set_user_attr("worker", self.worker)
        try:
            net = self.network(trial)
        except ValueError as exc:
            return self._fail(trial, f"invalid design: {exc}")
        twin = None if trial.user_attrs.get("reference") else self._trained_twin(trial)
        if twin is not None:
            return self._copy(trial, twin)
        model = None
        try:
            model = self._build(net)
            attrs = self._static_metrics(model, net)
            if self.s.proxies:
                attrs["proxies"] = self._proxies(model)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            result = self._train(trial, model, attrs)
            attrs.update(self._after_training(model, result))
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if self.store is not None:
                trial.set_user_attr("weights", self._save_weights(trial, model))
            return tuple(float(attrs[o]) for o in self.s.objectives)
        except self.train_mod.DivergedError as exc:
            return self._fail(trial, f"diverged: {exc}")
        except torch.cuda.OutOfMemoryError:
            return self._fail(trial, "out of memory")
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                return self._fail(trial, "out of memory")
            raise
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _trained_twin(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """An earlier finished trial of the same design: training is seeded, so it would give the
        same result again (samplers do propose a design twice, TPE late in a search)."""
        for t in trial.study.get_trials(deepcopy=False, states=FINISHED):
            attrs = t.user_attrs
            if (
                t.params == trial.params
                and attrs.get("budget") == self.budget
                and attrs.get("seed") == self.s.seed
                and attrs.get("curves")
            ):
                return t
        return None

    def _copy(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> tuple[float, ...]:
        """Record `twin`'s results as this trial's, without training (a pruned twin prunes)."""
        own = ("worker", "reference", "attempt", "retry_of", "prescreen", "duplicate_of")
        for key, value in twin.user_attrs.items():
            if key not in own:
                trial.set_user_attr(key, value)
        trial.set_user_attr("duplicate_of", twin.number)
        if twin.state == TrialState.PRUNED:
            raise optuna.TrialPruned(f"the same design as trial {twin.number}, which was pruned")
        return tuple(twin.values)

    def _build(self, net: NetworkConfig):
        import torch

        from search_space import build_network

        torch.manual_seed(self.s.seed)
        return build_network(net).to(self.device)

    def _static_metrics(self, model, net: NetworkConfig) -> dict[str, Any]:
        params = network_params(net)
        shape = (net.in_channels, net.image_size, net.image_size)
        batch = self.train_config.batch_size
        return {
            "network": net.to_dict(),
            "block_short": net.block.short(),
            "params": params,
            "flops": self.metrics.count_flops(model, shape),
            # Short timing budgets: a trial on the quick budget trains for only ~10 s.
            "latency_ms": round(
                self.metrics.measure_latency(model, shape, 1, self.device, repeats=7, budget_s=0.3),
                4,
            ),
            "latency_batch_ms": round(
                self.metrics.measure_latency(
                    model, shape, batch, self.device, repeats=3, budget_s=0.3
                ),
                4,
            ),
            "device": str(self.device),
            "budget": self.budget,
            "seed": self.s.seed,
            "dataset": self.s.dataset,
            "versions": self.versions,
        }

    def _proxies(self, model) -> dict[str, float | None]:
        """Zero-cost proxy scores at the weights the trial trains from (on a copy of the model)."""
        import math

        import torch

        from .proxies import compute_proxies, proxy_batch

        rng = torch.random.get_rng_state()
        x, y = proxy_batch(self.data, self.device, self.s.seed)
        scores = compute_proxies(model, x, y)
        torch.random.set_rng_state(rng)  # training starts from the same state with or without
        return {k: (round(v, 6) if math.isfinite(v) else None) for k, v in scores.items()}

    def _train(self, trial: optuna.Trial, model, attrs: dict[str, Any]):
        costs = {k: attrs[k] for k in self.s.objectives[1:] if k in attrs}
        reference = trial.user_attrs.get("reference")

        def on_epoch(epoch: int, partial) -> None:  # epochs count from 1
            curves = partial.curves()
            trial.set_user_attr("curves", curves)
            if self.rule is None or reference or epoch >= self.train_config.epochs:
                return
            completed = [
                trial_record(t)
                for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            ]
            if self.rule.should_prune(epoch - 1, curves["val_acc"][-1], costs, completed):
                trial.set_user_attr("pruned_at_epoch", epoch)
                trial.set_user_attr("train_time_s", round(partial.wall_time_s, 3))
                raise optuna.TrialPruned(f"dominated at epoch {epoch}")

        return self.train_mod.train(
            model, self.data, self.train_config, self.device, epoch_callback=on_epoch
        )

    def _after_training(self, model, result) -> dict[str, Any]:
        return {
            "curves": result.curves(),
            "val_acc": float(result.val_acc[-1]),
            "val_loss": float(result.val_loss[-1]),
            "train_time_s": round(float(result.wall_time_s), 3),
            "images_per_s": round(float(result.images_per_s), 1),
        }

    def _save_weights(self, trial: optuna.Trial, model) -> str:
        import torch
        from optuna.artifacts import upload_artifact

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial{trial.number}.pt"
            buf = io.BytesIO()
            torch.save(state, buf)
            path.write_bytes(buf.getvalue())
            return upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial
            )

    def _fail(self, trial: optuna.Trial, reason: str):
        trial.set_user_attr("fail_reason", reason)
        raise TrialFailed(reason)


def _versions() -> dict[str, str]:
    import torch

    from . import __name__ as _pkg  # noqa: F401

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "explorer": _package_version(),
    }


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("inception-explorer")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "source"


# --------------------------------------------------------------------------------------------
# Workers


def run_worker(
    s: SearchSettings,
    worker_index: int = 0,
    n_trials: int | None = None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    recover_first: bool = True,
) -> None:
    """Run trials in this process until the study has `s.trials` search trials (or `n_trials`
    were run here, or the timeout passed)."""
    import torch

    from . import data as data_mod
    from . import train

    # Failed trials are reported by our own one-line log (trial_line), not by Optuna's tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if s.workers is None:  # called directly: this process is the only worker
        s = dataclasses.replace(s, workers=1)
    storage_url = s.storage or default_storage()
    device = train.resolve_device(_worker_device(s.device, worker_index))
    budget = s.budget or train.default_budget(device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(s.workers))
    storage = open_storage(storage_url, heartbeat=60)
    study = create_or_load_study(s, storage, budget)
    study.sampler = make_sampler(s.sampler, s.seed + worker_index)
    if recover_first:
        recover(study)
    data = data_mod.load_dataset(s.dataset, data_dir=s.data_dir, seed=s.seed).on(device)
    objective = Objective(s, budget, data, device, storage_url)
    target = s.trials

    def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(study, trial)
        recover(study)  # retry trials whose worker died meanwhile
        if search_done(study, target) >= target and not _pending_references(study):
            study.stop()

    if search_done(study, target) >= target and not _pending_references(study):
        return
    callbacks = [stop_when_done]
    if s.prescreen > 1:
        from .proxies import Prescreener

        prescreener = Prescreener(
            m=s.prescreen,
            network=objective.network,
            make_sampler=lambda n: make_sampler(s.sampler, s.seed + worker_index + n),
            data=data,
            device=device,
            proxy=s.proxy,
            seed=s.seed,
            target=target,
            max_waiting=s.workers,
        )
        prescreener(study)  # the first trial is pre-screened too
        callbacks.insert(0, prescreener)
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=s.timeout,
        catch=(TrialFailed,),
        callbacks=callbacks,
        gc_after_trial=False,
    )


def cpu_threads(workers: int) -> int:
    """Torch threads per worker process on a CPU: the cores shared out evenly."""
    return max(1, (os.cpu_count() or 1) // workers)


def _pending_references(study: optuna.Study) -> bool:
    return any(
        t.user_attrs.get("reference")
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    )


def _worker_device(device: str, index: int) -> str:
    """Spread workers over the GPUs: worker i gets cuda:(i mod count) when device is auto/cuda."""
    if device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{index % torch.cuda.device_count()}"
    return device


def _worker_main(s: SearchSettings, index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        run_worker(s, index, recover_first=False)
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        print(f"worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


# --------------------------------------------------------------------------------------------
# Progress and summary


class Progress:
    """A progress bar over search trials, with one line per finished trial."""

    def __init__(self, study: optuna.Study, target: int, quiet: bool) -> None:
        from tqdm.auto import tqdm

        self.study, self.target, self.quiet = study, target, quiet
        self.seen: set[int] = set()
        self.start = time.time()
        done = self._finished_search()
        self.bar = tqdm(
            total=target,
            initial=min(done, target),
            unit="trial",
            dynamic_ncols=True,
            disable=quiet,
            desc="search",
        )
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished():
                self.seen.add(t.number)

    def _finished_search(self) -> int:
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False, states=FINISHED)
            if not t.user_attrs.get("reference")
        )

    def update(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                if not self.quiet:
                    self.bar.write(trial_line(trial_record(t)))
        done = self._finished_search()
        self.bar.n = min(done, self.target)
        best = max(
            (r.get("val_acc", 0.0) for r in map(trial_record, trials) if r.complete), default=None
        )
        if best is not None:
            self.bar.set_postfix_str(f"best acc {best:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def trial_line(r: TrialRecord) -> str:
    """One log line for a finished trial."""
    tag = f"[{r.reference}]" if r.reference else ""
    head = f"trial {r.number:>4}{tag:<5} {r.state.lower():<8}"
    if r.state == "FAIL":
        return f"{head} {r.get('fail_reason', 'failed')}"
    acc = r.get("val_acc")
    if acc is None:
        curve = (r.get("curves") or {}).get("val_acc") or []
        acc = curve[-1] if curve else float("nan")
        head += f" at epoch {r.get('pruned_at_epoch', len(curve))}"
    design = r.block.short() if r.block else "?"
    if isinstance(r.get("duplicate_of"), int):
        design += f"  (same design as trial {r.get('duplicate_of')}, not retrained)"
    return (
        f"{head} acc {acc:.4f}  params {r.get('params', 0):>8,}  "
        f"time {r.get('train_time_s', 0):5.1f}s  {design}"
    )


def summary(study: optuna.Study, storage_url: str) -> str:
    """The closing table: Pareto-optimal designs beside the references, and what to run next."""
    records = study_records(study)
    objectives = tuple(study.user_attrs.get("objectives", DEFAULT_OBJECTIVES))
    front = pareto_front(records, objectives)
    refs = [r for r in records if r.reference and r.complete]
    rows = [(r, "front") for r in front if not r.reference] + [(r, "reference") for r in refs]
    reevals = {r.number: _reeval_text(r) for r, _ in rows}
    reeval_col = any(reevals.values())
    lines = [
        f"study {study.study_name!r}: {sum(r.complete for r in records)} complete, "
        f"{sum(r.state == 'PRUNED' for r in records)} pruned, {sum(r.state == 'FAIL' for r in records)} failed; "
        f"hypervolume {hypervolume(records):.4f}",
        "",
        f"{'trial':>7}  {'role':<9} {'val acc':>7} "
        + (f"{'re-evaluated test acc':<24} " if reeval_col else "")
        + f"{'params':>9} {'MFLOPs':>8} {'lat ms':>7}  design",
    ]
    for r, role in rows:
        role = r.reference if role == "reference" else "front"
        flops = r.get("flops")
        lines.append(
            f"{r.number:>7}  {role:<9} {r.get('val_acc', float('nan')):7.4f} "
            + (f"{reevals[r.number] or '-':<24} " if reeval_col else "")
            + f"{r.get('params', 0):>9,} "
            f"{(flops or 0) / 1e6:8.2f} {r.get('latency_ms', float('nan')):7.2f}  {r.block.short() if r.block else '?'}"
        )
    for r in refs:
        better = [
            f
            for f in front
            if not f.reference
            and f.get("val_acc") > r.get("val_acc")
            and f.get("params") <= r.get("params")
        ]
        if better:
            lines.append(
                f"{len(better)} front design(s) beat {r.reference}: more accurate with no more parameters"
                " (single runs at the search budget)"
            )
    lines.append(
        "(FLOPs per image are 2 x multiply-adds; latency at batch 1 on the trial's device"
        + (
            "; re-evaluated: test accuracy mean ± std over seeds, python -m explorer.evaluate)"
            if reeval_col
            else ")"
        )
    )
    storage_arg = (
        "" if storage_url == default_storage() else f" --storage {_quote(redact(storage_url))}"
    )
    name = _quote(study.study_name)
    lines += [
        "",
        "next:",
        f"  streamlit run app/main.py --{storage_arg} --study {name}",
        f"  python -m explorer.evaluate --study {name}{storage_arg} --pareto"
        "   # retrain the front 10x longer, 3 seeds",
        f"  python -m explorer.export --study {name}{storage_arg} --best -o best_block.py",
    ]
    return "\n".join(lines)


def _reeval_text(r: TrialRecord) -> str:
    """``0.8812 ± 0.0031 (3 seeds)`` from a record's re-evaluation, or "" when it has none."""
    from .evaluate import Reeval

    try:
        reeval = Reeval.from_dict(r.attrs.get("reeval"))
    except ValueError:
        return ""
    return f"{reeval.test_acc_mean:.4f} ± {reeval.test_acc_std:.4f} ({reeval.seeds}x)"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# --------------------------------------------------------------------------------------------
# Entry point


def run(s: SearchSettings) -> optuna.Study:
    """Run a search as the CLI does (in-process for one worker, processes for several)."""
    from . import data as data_mod
    from . import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_url = s.storage or default_storage()
    storage = open_storage(storage_url, heartbeat=60)
    device = train.resolve_device(s.device)
    budget = s.budget or train.default_budget(device)
    if s.workers is None:
        s = dataclasses.replace(s, workers=auto_workers(device))
    # Check the data before starting workers, so a missing dataset is one clear line.
    data_mod.find_dataset(s.dataset, s.data_dir)
    study = create_or_load_study(s, storage, budget)
    recover(study)
    if not s.quiet:
        print(
            f"study {study.study_name!r} in {redact(storage_url)}: budget {budget} on {device}, "
            f"sampler {s.sampler}, objectives {', '.join(s.objectives)}, {s.workers} worker(s), "
            f"{search_done(study, s.trials)}/{s.trials} search trials done or running",
            file=sys.stderr,
        )
    progress = Progress(study, s.trials, s.quiet)
    try:
        if s.workers == 1:
            run_worker(s, 0, on_trial=lambda st, t: progress.update(), recover_first=False)
        else:
            _run_processes(s, progress)
    except KeyboardInterrupt:
        progress.close()
        print(
            "\ninterrupted: finished trials are stored; rerun the same command to continue",
            file=sys.stderr,
        )
        raise
    progress.update()
    progress.close()
    return study


def _run_processes(s: SearchSettings, progress: Progress) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(s, i), daemon=False) for i in range(s.workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            progress.update()
            time.sleep(2.0)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
        recover(progress.study)
        raise
    for p in procs:
        p.join()
    failed = [i for i, p in enumerate(procs) if p.exitcode]
    if failed:
        raise RuntimeError(f"worker(s) {failed} stopped with an error (see above)")


def main(argv: Sequence[str] | None = None) -> int:
    from .data import DataError

    try:
        s = parse_settings(argv)
        study = run(s)
    except (UsageError, StorageError, DataError) as exc:
        print(f"python -m explorer.search: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(summary(study, s.storage or default_storage()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
