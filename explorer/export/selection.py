"""Which designs to export, read and checked from a study: plain data for the renderer.

`export_design` turns one complete trial into an `ExportDesign` (its `NetworkConfig` through
`NetworkConfig.from_dict`, its recorded facts checked to be finite numbers or known names, and
the `InputConfig` of the dataset it was trained on); `select_trials` picks the best design or the
Pareto front under constraints; `trial_weights` reads the trained state dict the search kept,
checked key by key against the design.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from search_space import (
    BN_PLACEMENTS,
    DOWNSAMPLES,
    POOL_TYPES,
    BlockConfig,
    NetworkConfig,
    build_network,
    network_params,
)

from ..analysis import DEFAULT_OBJECTIVES, pareto_front, study_records
from ..store import TrialRecord, artifact_dir, study_config
from ..training import DATASETS, DEFAULT_DATASET
from ..usage import first_line
from .standalone import BlockWidths, InputConfig

MODES = ("best", "pareto")
_ARTIFACT_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")

# The class names of each dataset, in label order (the datasets' own documentation).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "mnist": tuple(str(digit) for digit in range(10)),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}


class ExportError(ValueError):
    """A request that cannot be exported (no such trial, nothing meets the constraints, ...)."""


@dataclass(frozen=True)
class ExportDesign:
    """One validated design to export and the facts its docstring states."""

    number: int
    network: NetworkConfig
    params: int  # computed from the design: what the generated class has
    reference: str | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    flops: float | None = None
    weights: str | None = None  # artifact id of the trained state dict
    reeval: tuple[float, float, int, str] | None = None  # test acc mean, std, seeds, budget
    dataset: str | None = None  # a key of `explorer.training.data.DATASETS`, or not recorded

    @property
    def class_name(self) -> str:
        return f"Trial{self.number}Net"

    @property
    def loader_name(self) -> str:
        return f"load_trial{self.number}"

    @property
    def cfg_name(self) -> str:
        return f"TRIAL{self.number}_CFG"

    @property
    def inputs(self) -> InputConfig:
        """The input the design was trained on; identity statistics when the dataset is unknown."""
        return input_config(self.network, self.dataset)


def input_config(network: NetworkConfig, dataset: str | None) -> InputConfig:
    """The `InputConfig` of a design trained on `dataset`: its shape, mean, std and class names.

    A dataset that is not recorded, or whose images and classes do not fit the design, gives mean
    0 and std 1 (the network then uses its inputs as given) and the classes by number.
    """
    size = (int(network.in_channels), int(network.image_size), int(network.image_size))
    info = DATASETS.get(dataset) if isinstance(dataset, str) else None
    if (
        info is None
        or (info.channels, info.image_size, info.image_size) != size
        or info.num_classes != network.num_classes
    ):
        return InputConfig(
            dataset="unknown",
            input_size=size,
            mean=(0.0,) * size[0],
            std=(1.0,) * size[0],
            class_names=tuple(f"class {c}" for c in range(int(network.num_classes))),
        )
    return InputConfig(
        dataset=info.name,
        input_size=size,
        mean=tuple(float(m) for m in info.mean),
        std=tuple(float(s) for s in info.std),
        class_names=CLASS_NAMES[info.name],
    )


# Reading designs from a study


def _number(value: Any) -> float | None:
    """A finite int or float attribute, else None (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


_STATES = {
    "PRUNED": "was pruned",
    "FAIL": "failed",
    "RUNNING": "is still running",
    "WAITING": "is waiting to run",
}


def network_kwargs(design: ExportDesign) -> dict[str, Any]:
    """The design as keyword arguments of `standalone.InceptionNet`, in its signature's order:
    the literal defaults of the exported class, and what the ONNX export builds."""
    net = design.network
    inputs = design.inputs
    return {
        "in_channels": int(net.in_channels),
        "num_classes": int(net.num_classes),
        "stem_width": int(net.stem_width),
        "depths": tuple(int(d) for d in net.stages),
        "widths": tuple(
            BlockWidths(*(int(getattr(net.stage_block(s), f)) for f in BlockWidths._fields))
            for s in range(len(net.stages))
        ),
        # once for a shared block, one per stage for a per-stage design
        "wide_kernels": _once_or_per_stage(net, _kernels),
        "pool_type": _once_or_per_stage(net, lambda b: POOL_TYPES[POOL_TYPES.index(b.pool_type)]),
        "bn": _once_or_per_stage(net, lambda b: BN_PLACEMENTS[BN_PLACEMENTS.index(b.bn)]),
        "stem_bn": bool(net.use_stem_bn),
        "downsample": DOWNSAMPLES[DOWNSAMPLES.index(net.downsample)],
        "dropout": float(net.dropout),
        "mean": inputs.mean,
        "std": inputs.std,
    }


def _kernels(block: BlockConfig) -> tuple[tuple[int, int], ...]:
    return tuple((int(h), int(w)) for h, w in block.wide_kernels())


def _once_or_per_stage(net: NetworkConfig, choice: Callable[[BlockConfig], Any]) -> Any:
    """A layer choice of the design: one value for a shared block, a tuple of one per stage for
    a per-stage design (`standalone.per_stage` reads both)."""
    if not net.per_stage:
        return choice(net.block)
    return tuple(choice(design) for design in net.stage_blocks)


def _dataset(record: TrialRecord, study: optuna.Study) -> str:
    """The dataset a trial trained on: its own record, else the study's, else the default."""
    config = study_config(study)
    for value in (record.dataset, config.dataset if config else None):
        if isinstance(value, str) and value in DATASETS:
            return value
    return DEFAULT_DATASET


def _design(record: TrialRecord, dataset: str | None = None) -> ExportDesign:
    if not record.complete:
        raise ExportError(
            f"trial {record.number} {_STATES.get(record.state, record.state.lower())}, not complete: "
            "only finished designs can be exported"
        )
    if record.network is None:
        raise ExportError(
            f"trial {record.number} cannot be exported: {record.problem or 'it stores no design'}"
        )
    flops = record.flops
    reeval = _reeval(record.reeval)
    return ExportDesign(
        number=record.number,
        network=record.network,
        params=network_params(record.network),
        reference=record.reference,
        val_acc=record.val_acc,
        test_acc=record.test_acc,
        flops=flops if flops is not None and flops >= 0 else None,
        weights=record.weights,
        reeval=reeval,
        dataset=dataset,
    )


def _reeval(value: Any) -> tuple[float, float, int, str] | None:
    """A stored re-evaluation (`explorer.evaluate`), checked: numbers in range, a plain budget
    name; anything else is left out of the header."""
    if not isinstance(value, dict):
        return None
    mean, std, seeds = (_number(value.get(k)) for k in ("test_acc_mean", "test_acc_std", "seeds"))
    budget = value.get("budget")
    if (
        mean is None
        or std is None
        or seeds is None
        or not (0 <= mean <= 1 and 0 <= std <= 1 and seeds >= 1 and seeds == int(seeds))
        or not (isinstance(budget, str) and re.fullmatch(r"[a-z][a-z0-9_-]{0,19}", budget))
    ):
        return None
    return mean, std, int(seeds), budget


def export_design(study: optuna.Study, number: int) -> ExportDesign:
    """The validated design of one complete trial; `ExportError` if there is none to export."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise ExportError(f"a trial number must be an integer, got {number!r}")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if not trials:
        raise ExportError(f"study {study.study_name!r} has no trials")
    if number not in trials:
        raise ExportError(
            f"study {study.study_name!r} has no trial {number} "
            f"(its trials are {min(trials)} to {max(trials)})"
        )
    record = next(r for r in study_records(study) if r.number == number)  # with its re-evaluation
    return _design(record, _dataset(record, study))


def _objectives(study: optuna.Study) -> tuple[str, ...]:
    """The study's objectives as the search recorded them, if they are known ones."""
    config = study_config(study)
    return config.objectives if config is not None else DEFAULT_OBJECTIVES


def select_trials(
    study: optuna.Study,
    mode: str,
    max_params: int | None = None,
    min_accuracy: float | None = None,
) -> list[int]:
    """Trial numbers to export: ``"best"``, the most accurate design meeting the constraints, or
    ``"pareto"``, the Pareto front (on the study's objectives) of the designs meeting them."""
    if mode not in MODES:
        raise ExportError(f"mode must be one of {list(MODES)}, got {mode!r}")
    objectives = _objectives(study)
    records = [
        r
        for r in study_records(study)
        if r.complete
        and r.network is not None
        and all(r.value(k) is not None for k in ("val_acc", "params", *objectives))
    ]
    if not records:
        raise ExportError(
            f"study {study.study_name!r} has no complete trials with a design and its "
            "accuracy and parameters"
        )
    meets = [
        r
        for r in records
        if (max_params is None or r.params <= max_params)
        and (min_accuracy is None or r.val_acc >= min_accuracy)
    ]
    if not meets:
        wanted = []
        if max_params is not None:
            wanted.append(f"at most {max_params:,} parameters")
        if min_accuracy is not None:
            wanted.append(f"validation accuracy at least {min_accuracy:.4f}")
        smallest = min(r.params for r in records)
        best = max(r.val_acc for r in records)
        raise ExportError(
            f"none of the {len(records)} complete trials has {' and '.join(wanted)} "
            f"(smallest: {smallest:,} parameters; most accurate: {best:.4f})"
        )
    if mode == "best":
        top = max(meets, key=lambda r: (r.val_acc, -r.params, -r.number))
        return [top.number]
    return [r.number for r in pareto_front(meets, objectives)]


# Trained weights


def expected_state_shapes(network: NetworkConfig) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of `build_network(network)`, built without memory (meta)."""
    with torch.device("meta"):
        model = build_network(network)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def trial_weights(
    study: optuna.Study, number: int, artifacts: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The trained state dict the search kept for a trial, checked against its design.

    artifacts: the artifact folder (default: `artifact_dir()` of the default storage).
    """
    design = export_design(study, number)
    if design.weights is None:
        raise ExportError(f"trial {number} kept no trained weights (the search ran without them)")
    if not _ARTIFACT_ID.fullmatch(design.weights):
        raise ExportError(f"trial {number} has a malformed weights artifact id {design.weights!r}")
    folder = Path(artifacts) if artifacts is not None else artifact_dir()
    try:
        with FileSystemArtifactStore(str(folder)).open_reader(design.weights) as reader:
            data = reader.read()
    except Exception:  # noqa: BLE001 - a missing or unreadable artifact is one clear line
        raise ExportError(
            f"the weights of trial {number} (artifact {design.weights}) are not in "
            f"{str(folder)!r}; "
            "point EXPLORER_ARTIFACTS at the folder the search kept them in"
        ) from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(
            f"the weights of trial {number} are not a readable state dict: {first_line(exc)}"
        ) from None
    try:
        expected = expected_state_shapes(design.network)
    except Exception as exc:  # noqa: BLE001 - an absurd stored design
        raise ExportError(f"trial {number}'s design cannot be built: {first_line(exc)}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ExportError(f"the weights of trial {number} are not a state dict of tensors")
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or extra or wrong:
        parts = [
            f"{what} {', '.join(map(str, keys[:3]))}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if keys
        ]
        raise ExportError(
            f"the weights of trial {number} do not fit its design: {'; '.join(parts)}"
        )
    return {k: state[k] for k in expected}
