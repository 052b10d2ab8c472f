"""One trial of the search: sample a design, build it, measure it, train it, store its record.

`TrialRunner` is what a worker calls for each trial Optuna hands it. Its results are written as
the user attributes of `explorer.store.records.TrialRecord`, each once. `PruneRule` is the early stop of
dominated trials (Optuna's pruners do not work in multi-objective studies).
"""

from __future__ import annotations

import gc
import io
import math
import platform
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from search_space import (
    DEFAULT_SPACE,
    NetworkConfig,
    build_network,
    network_from_trial,
    network_params,
)

from ..analysis import dominates
from ..store import (
    StorageUnavailable,
    StudyConfig,
    TakenOver,
    TrialRecord,
    artifact_dir,
    fail_dead,
    storage_lock,
    trial_attr,
)
from ..training import budgets, compute_proxies, metrics, proxy_batch, trainer
from ..usage import first_line
from .settings import SearchSettings
from .study import FINISHED

TWIN_WAIT_S = 2.0  # how often a trial waiting for its design's result elsewhere looks again


class TrialFailed(Exception):
    """A trial that could not finish (invalid design, divergence, out of memory); recorded, not fatal."""


class TrialTakenOver(TakenOver):
    """Another worker failed this trial as interrupted while it ran here (this worker was paused
    or cut off past the heartbeat grace period); its retry is queued, so this run is dropped."""


@dataclass(frozen=True)
class PruneRule:
    """Stop a trial after an epoch when at least `min_dominators` designs that completed dominated
    it at that same epoch: no worse on every objective, the accuracy being theirs at that epoch,
    and better on one. Copies of one design (``duplicate_of``) count once.

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
        mine = (-acc, *costs.values())
        dominators = 0
        for rec in completed:
            curve = rec.curves.get("val_acc") or []
            theirs = [rec.value(k) for k in costs]
            if rec.duplicate_of is not None or len(curve) <= epoch or None in theirs:
                continue
            if dominates((-curve[epoch], *theirs), mine):
                dominators += 1
                if dominators >= self.min_dominators:
                    return True
        return False


def versions() -> dict[str, str]:
    """The versions a trial was produced with."""

    try:
        package = version("inception-explorer")
    except Exception:  # noqa: BLE001 - running from a source tree
        package = "source"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "explorer": package,
    }


class TrialRunner:
    """The function Optuna's trials go through: sample, build, train, measure, store."""

    def __init__(
        self,
        s: SearchSettings,
        config: StudyConfig,
        data: Any,
        device: Any,
        storage_url: str,
        worker: str,
        device_info: dict[str, Any] | None = None,
    ) -> None:

        self.s, self.config, self.data, self.device = s, config, data, device
        self.top_config = budgets.study_train_config(config)
        # Each rung's budget (`budgets.rung_budget`); a single-budget study has only the top one.
        self.rung_configs = [
            budgets.rung_budget(self.top_config, k, config.rungs, config.eta, data.size("train"))
            for k in range(config.rungs)
        ]
        self.rung = config.rungs - 1
        self.train_config = self.top_config
        self.rule = PruneRule() if s.prune else None
        self.store = None
        self.url = storage_url
        if s.weights:
            folder = artifact_dir(storage_url)
            folder.mkdir(parents=True, exist_ok=True)
            self.store = FileSystemArtifactStore(str(folder))
        self.versions = versions()
        self.worker = worker
        self.device_info = device_info
        self.sampler_seed: int | None = None

    def network(self, trial: optuna.Trial) -> NetworkConfig:
        info = self.data.info
        skeleton = self.config.skeleton(info.channels, info.num_classes, info.image_size)
        return network_from_trial(trial, skeleton, self.config.per_stage, DEFAULT_SPACE)

    def __call__(self, trial: optuna.Trial, rung: int | None = None) -> tuple[float, ...]:
        """Run `trial` at `rung` (default: the top rung, the whole budget of a single-budget
        study). Raises `TrialFailed` (recorded), `optuna.TrialPruned`, or `TrialTakenOver`."""
        try:
            return self._run(trial, rung)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TrialTakenOver(f"trial {trial.number} was finished by another worker") from None

    def _run(self, trial: optuna.Trial, rung: int | None) -> tuple[float, ...]:

        self.rung = self.config.rungs - 1 if rung is None else rung
        self.train_config = self.rung_configs[self.rung]
        first = {"worker": self.worker}
        if self.config.rungs > 1:
            first["rung"] = self.rung
        if self.sampler_seed is not None:
            first["sampler_seed"] = self.sampler_seed
        self._write(trial, first)
        try:
            net = self.network(trial)
        except ValueError as exc:
            return self._fail(trial, f"invalid design: {exc}")
        params = network_params(net)
        reference = trial_attr(trial, "reference")
        # The references are trained whatever the limits: every comparison needs them.
        over = None if reference else self._over_static_limits(params)
        twin = None if reference else self._trained_twin(trial)
        if twin is not None:
            return self._copy(trial, twin)
        model = None
        try:
            model = self._build(net)
            attrs = self._static_metrics(model, net, params)
            flops_limit = self.config.constraints.get("flops")
            if not reference and over is None and flops_limit and attrs["flops"] > flops_limit:
                over = f"{attrs['flops']:,.0f} FLOPs > --max-flops {flops_limit:,.0f}"
            # A promoted design's proxies are its parent's: the same weights it starts from.
            if self.s.proxies and over is None and self.rung == 0:
                attrs["proxies"] = self._proxies(model)
            attrs["constraint_values"] = self._constraint_values(attrs)
            for key, limit in sorted(self.config.constraints.items()):
                if key in attrs:  # what the samplers read: <= 0 is feasible
                    trial.set_constraint(key, float(attrs[key]) - float(limit))
            if over is not None:
                return self._skip(trial, attrs, over)
            self._write(trial, attrs)
            result = self._train(trial, model, attrs)
            after = self._after_training(result)
            if self.store is not None:
                after["weights"] = self._save_weights(trial, model)
            self._write(trial, after)
            return tuple(float(({**attrs, **after})[o]) for o in self.config.objectives)
        except trainer.DivergedError as exc:
            return self._fail(trial, f"diverged: {exc}")
        except torch.cuda.OutOfMemoryError as exc:
            # The traceback holds every activation: free them before the next trial.
            trainer.release_memory(self.device, exc)
            return self._fail(trial, "out of memory")
        except (TrialFailed, optuna.TrialPruned, optuna.exceptions.UpdateFinishedTrialError):
            raise
        except StorageUnavailable:  # not the design's fault: the worker gives up, the trial is
            raise  # left RUNNING and recovered as a dead worker's
        except Exception as exc:  # noqa: BLE001 - recorded as the trial's reason, not retried
            if "out of memory" in str(exc).lower():
                trainer.release_memory(self.device, exc)
                return self._fail(trial, "out of memory")
            return self._fail(trial, f"error: {type(exc).__name__}: {first_line(exc)}")
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _write(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        """Store attributes, each once (every write is a round trip to the database)."""
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def _over_static_limits(self, params: int) -> str | None:
        """The first parameter limit the design breaks (known before training), else None.
        FLOP limits are checked once the FLOPs are counted (`_constraint_values`)."""
        limit = self.config.constraints.get("params")
        if limit is not None and params > limit:
            return f"{params:,} parameters > --max-params {limit:,.0f}"
        return None

    def _constraint_values(self, attrs: dict[str, Any]) -> list[float]:
        """Optuna's constraint values, one per limit: value - limit (<= 0 is feasible)."""
        return [
            float(attrs[key]) - float(limit)
            for key, limit in sorted(self.config.constraints.items())
            if key in attrs
        ] or [0.0]

    def _trained_twin(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """An earlier finished trial of the same design under the same budget and seed, whose
        result this trial reuses instead of training again. On a CPU, or on a GPU with
        --deterministic, seeded training would repeat that result exactly; otherwise the copy is a
        cache of the earlier result (a GPU run with autotuned kernels differs in the last digits),
        and the record says which (`reuse`).

        A design being trained is visible to every worker (``training``, written under the
        study's design lock): a trial of the same design waits for that one's result
        (``waiting_for`` says which) instead of training it a second time; if that one fails, or
        its worker dies, the check runs again and this trial may train it."""
        while True:
            with storage_lock(self.url, f"designs:{trial.study.study_name}"):
                training = None
                states = (*FINISHED, TrialState.RUNNING)
                for t in trial.study.get_trials(deepcopy=False, states=states):
                    if t.number == trial.number or t.params != trial.params:
                        continue
                    if t.state != TrialState.RUNNING and (
                        trial_attr(t, "budget") == self.config.budget
                        and trial_attr(t, "seed") == self.config.train_seed
                        and trial_attr(t, "curves")
                    ):
                        return t
                    if t.state == TrialState.RUNNING and t.user_attrs.get("training"):
                        training = training or t
                if training is None:
                    trial.set_user_attr("training", True)
                    return None
                fail_dead(trial.study, self.url)  # a dead or paused trainer's trial is freed
            trial.set_user_attr("waiting_for", training.number)
            time.sleep(TWIN_WAIT_S)

    def _copy(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> tuple[float, ...]:
        """Record `twin`'s results as this trial's, without training (a pruned twin prunes)."""
        own = {"worker", "reference", "attempt", "retry_of", "prescreen", "duplicate_of",
               "sampler_seed", "reuse", "rung", "parent", "promotion", "training", "deaths",
               "waiting_for"}  # fmt: skip
        self._write(trial, {k: v for k, v in twin.user_attrs.items() if k not in own})
        for key, value in twin.constraints.items():
            trial.set_constraint(key, value)
        repeats = self.device.type == "cpu" or self.s.deterministic
        self._write(trial, {"duplicate_of": twin.number, "reuse": "repeat" if repeats else "cache"})
        if twin.state == TrialState.PRUNED:
            raise optuna.TrialPruned(f"the same design as trial {twin.number}, which was pruned")
        return tuple(twin.values)

    def _build(self, net: NetworkConfig):

        torch.manual_seed(self.config.train_seed)
        return build_network(net).to(self.device)

    def _static_metrics(self, model, net: NetworkConfig, params: int) -> dict[str, Any]:
        shape = (net.in_channels, net.image_size, net.image_size)
        batch = self.train_config.batch_size
        attrs = {
            "network": net.to_dict(),
            "params": params,
            "flops": metrics.count_flops(model, shape),
            # Short timing budgets: a trial on the quick budget trains for only ~10 s.
            "latency_ms": round(
                metrics.measure_latency(model, shape, 1, self.device, repeats=7, budget_s=0.3),
                4,
            ),
            "latency_batch_ms": round(
                metrics.measure_latency(model, shape, batch, self.device, repeats=3, budget_s=0.3),
                4,
            ),
            "device": str(self.device),
            "budget": self.config.budget,
            "seed": self.config.train_seed,
            "dataset": self.config.dataset,
            "versions": self.versions,
        }
        if self.device_info:
            attrs["device_info"] = self.device_info
        if self.config.rungs > 1:  # the rung's own budget: the top one with fewer images
            attrs["train_images"] = self.train_config.train_images
        return attrs

    def _proxies(self, model) -> dict[str, float | None]:
        """Zero-cost proxy scores at the weights the trial trains from (on a copy of the model,
        with its own generator: training starts from the same state with or without them)."""

        x, y = proxy_batch(self.data, self.device, self.config.train_seed)
        scores = compute_proxies(model, x, y)
        return {k: (round(v, 6) if math.isfinite(v) else None) for k, v in scores.items()}

    def _train(self, trial: optuna.Trial, model, attrs: dict[str, Any]):
        costs = {k: attrs[k] for k in self.config.objectives[1:] if k in attrs}
        reference = trial_attr(trial, "reference")

        def on_epoch(epoch: int, partial) -> None:  # epochs count from 1
            curves = partial.curves()
            trial.set_user_attr("curves", curves)
            if self.rule is None or reference or epoch >= self.train_config.epochs:
                return
            completed = [
                TrialRecord.from_trial(t)
                for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            ]
            if self.rule.should_prune(epoch - 1, curves["val_acc"][-1], costs, completed):
                self._write(
                    trial,
                    {"pruned_at_epoch": epoch, "train_time_s": round(partial.wall_time_s, 3)},
                )
                raise optuna.TrialPruned(f"dominated at epoch {epoch}")

        return trainer.train(
            model, self.data, self.train_config, self.device, epoch_callback=on_epoch
        )

    def _after_training(self, result) -> dict[str, Any]:
        # The curves were written after the last epoch already.
        return {
            "val_acc": float(result.val_acc[-1]),
            "val_loss": float(result.val_loss[-1]),
            "train_time_s": round(float(result.wall_time_s), 3),
            "images_per_s": round(float(result.images_per_s), 1),
        }

    def _save_weights(self, trial: optuna.Trial, model) -> str:

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial{trial.number}.pt"
            buf = io.BytesIO()
            torch.save(state, buf)
            path.write_bytes(buf.getvalue())
            return upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial
            )

    def _skip(self, trial: optuna.Trial, attrs: dict[str, Any], reason: str) -> tuple[float, ...]:
        """A design that provably breaks a limit: recorded with its costs, not trained. Optuna
        gets it as a complete trial with the worst accuracy and its constraint values, so the
        samplers learn the region is infeasible; it has no accuracy of its own (``val_acc``
        unset), is on no front and does not count towards --trials."""
        self._write(trial, {**attrs, "skipped": f"infeasible: {reason}"})
        return tuple(0.0 if o == "val_acc" else float(attrs[o]) for o in self.config.objectives)

    def _fail(self, trial: optuna.Trial, reason: str):
        trial.set_user_attr("fail_reason", reason)
        raise TrialFailed(reason)
