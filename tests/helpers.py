"""Small seeded studies for tests of the readers (export, dashboard), without training.

Designs, parameter counts and weights are real (built from the space); accuracies and curves are
a seeded synthetic function of the design, so readers see every state and attribute they handle.
"""

from __future__ import annotations

import io
import math
import random
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from explorer.store import artifact_dir, open_storage
from search_space import (
    DEFAULT_SPACE,
    REFERENCES,
    NetworkConfig,
    build_network,
    network_from_trial,
    network_params,
    reference_network,
)


def make_study(
    storage: str,
    name: str = "demo",
    n_search: int = 10,
    seed: int = 0,
    weights: bool = True,
    pruned: int = 1,
    failed: int = 1,
    stages: tuple[int, ...] = (1, 1),
    per_stage: bool = False,
) -> optuna.Study:
    """A study with the v1/v2 references, `n_search` complete designs, pruned and failed trials;
    with `per_stage`, each design has its own block per stage of `stages`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(seed)
    proxy_rng = random.Random(seed + 1)  # its own stream: the accuracies stay as they were
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage),
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    study.set_user_attr("objectives", ["val_acc", "params"])
    study.set_user_attr("dataset", "fashion-mnist")
    study.set_user_attr("budget", "smoke")
    store = FileSystemArtifactStore(str(_mkdir(artifact_dir(storage)))) if weights else None
    skeleton = NetworkConfig(block=REFERENCES["v2"], stages=stages)
    for ref in ("v1", "v2"):
        study.enqueue_trial(
            DEFAULT_SPACE.params_from_network(reference_network(ref, skeleton, per_stage)),
            user_attrs={"reference": ref},
        )
    plan = ["complete"] * (2 + n_search) + ["pruned"] * pruned + ["failed"] * failed
    for kind in plan:
        trial = study.ask()
        try:
            net = network_from_trial(trial, skeleton, per_stage)
        except ValueError as exc:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            trial.set_user_attr("fail_reason", str(exc))
            continue
        params = network_params(net)
        acc = _synthetic_accuracy(net.block, params, rng)
        epochs = 3 if kind != "pruned" else 1
        curve = [acc * (0.6 + 0.4 * (e + 1) / 3) for e in range(epochs)]
        attrs = {
            "network": net.to_dict(),
            "params": params,
            "flops": 2 * params * 150,
            "latency_ms": 0.5 + params / 1e5,
            "latency_batch_ms": 5 + params / 1e4,
            "curves": {
                "epoch": list(range(1, epochs + 1)),
                "train_loss": [2.0 - c for c in curve],
                "val_loss": [2.1 - c for c in curve],
                "val_acc": curve,
            },
            "train_time_s": 1.0,
            "images_per_s": 1000.0,
            "device": "cpu",
            "budget": "smoke",
            "seed": seed,
            "dataset": "fashion-mnist",
            # naswot follows accuracy, synflow follows size, snip is noise
            "proxies": {
                "naswot": 1000 * acc + proxy_rng.uniform(-5, 5),
                "synflow": math.log(params) + proxy_rng.uniform(-0.1, 0.1),
                "snip": proxy_rng.uniform(0, 1),
            },
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if kind == "failed":
            trial.set_user_attr("fail_reason", "diverged: loss is nan at step 3")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if kind == "pruned":
            trial.set_user_attr("pruned_at_epoch", 1)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        trial.set_user_attr("val_acc", curve[-1])
        if store is not None:
            torch.manual_seed(seed + trial.number)
            model = build_network(net)
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"trial{trial.number}.pt"
                path.write_bytes(buf.getvalue())
                trial.set_user_attr(
                    "weights",
                    upload_artifact(
                        artifact_store=store, file_path=str(path), study_or_trial=trial
                    ),
                )
        study.tell(trial, [curve[-1], params])
    return study


def _synthetic_accuracy(block, params: int, rng: random.Random) -> float:
    base = 0.55 + 0.08 * math.log10(max(params, 10) / 1000)
    if block.bn != "none":
        base += 0.1
    return min(0.95, base + rng.uniform(-0.02, 0.02))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_ablation(storage: str, name: str = "demo", seeds: int = 3) -> None:
    """The v1 -> v2 ladder and a leave-one-out of study `name`, stored as `python -m
    explorer.ablate` stores them, with accuracies a seeded synthetic function of each design
    (batch norm helps, the rest is small) instead of training."""
    from explorer import ablate  # the ablation package imports torch-heavy modules late

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    budget = ablate.cli.resolve_budget(study, "smoke")
    designs = ablate.cli.Designs(study)
    v1, v2 = designs.reference("v1"), designs.reference("v2")
    winner = designs.winner() or designs.resolve(
        str(next(r.number for r in designs.records.values() if r.is_search and r.complete)),
        "--winner",
    )
    ladders = [ablate.path_ladder(v1, v2), ablate.leave_one_out(winner, v2)]

    def train(network, data, config, device, seed):
        rng = random.Random(f"{network.to_json()}/{seed}")
        acc = 0.7 + (0.08 if network.block.bn != "none" else 0.0) + rng.uniform(-0.01, 0.01)
        return acc, acc - 0.01

    abl = ablate.open_ablation(open_storage(storage), storage, study)
    stored = [
        ablate.StoredLadder(lad, budget.name, budget.config.to_dict(), seeds) for lad in ladders
    ]
    for s in stored:
        ablate.store_ladder(abl, s)
    ablate.Worker(abl, study, storage, budget, lambda: None, "cpu", train=train).work(
        ablate.units(stored, seeds)
    )


ONE_BRANCH = "at least two branches"  # the block's error for a design with one branch


def one_branch_failures(folder: Path) -> list[Path]:
    """The journals under `folder` in which a trial failed as a one-branch design (its
    ``fail_reason`` holds the block's error; the journal is JSON lines, so the words appear as
    they are)."""
    return [p for p in sorted(folder.rglob("*.journal")) if ONE_BRANCH.encode() in p.read_bytes()]


def journal_url(study: optuna.Study) -> str:
    """The journal file a test study lives in: the address its runs' locks are taken on."""
    return study._storage._backend._file_path


def timed_trial(
    number: int,
    start: datetime,
    seconds: float,
    state: TrialState = TrialState.COMPLETE,
    **user_attrs,
) -> optuna.trial.FrozenTrial:
    """A finished trial that ran `seconds` from `start` (values only when complete)."""
    return optuna.trial.FrozenTrial(
        number=number,
        trial_id=number,
        state=state,
        value=None,
        values=[0.5, 1.0] if state == TrialState.COMPLETE else None,
        datetime_start=start,
        datetime_complete=start + timedelta(seconds=seconds),
        params={},
        distributions={},
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values={},
    )
