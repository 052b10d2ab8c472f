"""The hypervolume a study's front is judged by: its reference point (`HypervolumeSpec`) from the
space's largest design, and the normalised volume the front dominates."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from search_space import DEFAULT_SPACE, NetworkConfig, build_network, network_params

from ..store import StudyConfig, TrialRecord
from ..training import DATASETS, count_flops
from .fronts import DEFAULT_OBJECTIVES, OBJECTIVES, objective_vector, pareto_front


class HypervolumeSpec(NamedTuple):
    """What a hypervolume is measured over: the objectives and the reference point, each
    objective's worst value counted (accuracy 0; the largest design of the space at the study's
    width for parameters and FLOPs; latency a tenth above the slowest trial's)."""

    objectives: tuple[str, ...]
    reference: dict[str, float]

    def describe(self) -> str:
        parts = [f"{k} {_short(self.reference[k])}" for k in self.objectives]
        return f"over ({', '.join(self.objectives)}) against ({', '.join(parts)})"


def _short(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:g}"


@functools.lru_cache(maxsize=32)
def largest_design(
    dataset: str = "fashion-mnist",
    width: float = 0.25,
    stages: tuple[int, ...] = (1, 1),
    stem_channels: int = 96,
) -> tuple[int, float]:
    """(parameters, FLOPs per image) of the space's largest design at `width` in the network the
    search builds for `dataset` (its `stages` and stem): every width at its maximum, each choice
    the costliest. The same block in every stage is also the largest per-stage design, up to the
    stem's and the head's batch norm (a few hundred parameters at most)."""

    info = DATASETS[dataset]
    widest = {d.name: d.high for d in DEFAULT_SPACE.dimensions if d.high is not None}
    choices = [d for d in DEFAULT_SPACE.dimensions if d.choices]
    best = None
    for combo in itertools.product(*(d.choices for d in choices)):
        params = widest | {d.name: v for d, v in zip(choices, combo)}
        try:
            block = DEFAULT_SPACE.config_from_params(params)
            net = NetworkConfig(block=block, in_channels=info.channels, num_classes=info.num_classes,
                                image_size=info.image_size, width=width, stages=tuple(stages),
                                stem_channels=stem_channels)  # fmt: skip
        except ValueError:
            continue
        count = network_params(net)
        if best is None or count > best[0]:
            best = (count, net)
    assert best is not None, "the space has no valid design"

    flops = count_flops(build_network(best[1]), (info.channels, info.image_size, info.image_size))
    return best[0], float(flops)


def hypervolume_spec(
    config: StudyConfig | None, records: list[TrialRecord] = ()
) -> HypervolumeSpec:
    """The hypervolume a study is judged by: over its objectives, against a reference point from
    its space, dataset and width (`HypervolumeSpec`)."""
    objectives = config.objectives if config is not None else DEFAULT_OBJECTIVES
    dataset = config.dataset if config is not None else "fashion-mnist"
    width = config.width if config is not None else 0.25
    reference: dict[str, float] = {"val_acc": 0.0}
    if "params" in objectives or "flops" in objectives:
        shape = (config.stages, config.stem_channels) if config is not None else ()
        params, flops = largest_design(dataset, width, *shape)
        reference["params"], reference["flops"] = float(params), flops
    if "latency_ms" in objectives:
        slowest = max((r.latency_ms for r in records if r.latency_ms is not None), default=1.0)
        reference["latency_ms"] = 1.1 * slowest
    return HypervolumeSpec(objectives, {k: reference[k] for k in objectives})


def dominated_volume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume of the region that the minimisation vectors `points` dominate and that
    dominates `reference`: the exact hypervolume, by slicing along the last objective (HSO; fine
    for the few dozen points and two to four objectives of a front)."""
    inside = [tuple(p) for p in points if all(x < r for x, r in zip(p, reference))]
    if not inside:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in inside)
    inside.sort(key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(inside):
        top = inside[i + 1][-1] if i + 1 < len(inside) else reference[-1]
        if top > p[-1]:
            volume += (top - p[-1]) * dominated_volume(
                [q[:-1] for q in inside[: i + 1]], reference[:-1]
            )
    return volume


def hypervolume(records: list[TrialRecord], spec: HypervolumeSpec | None = None) -> float:
    """Normalised hypervolume of the front on `spec`'s objectives against its reference point.

    The volume the front dominates inside the box from the ideal point (accuracy 1, every cost 0)
    to the reference point, divided by that box's volume, so it lies in [0, 1]. Designs beyond the
    reference point on any objective add nothing. The default spec is (accuracy, parameters) in
    the default network (`hypervolume_spec(None)`).
    """

    spec = spec or hypervolume_spec(None)
    ref = np.array(
        [
            -spec.reference[k] if OBJECTIVES[k].direction == "maximize" else spec.reference[k]
            for k in spec.objectives
        ]  # fmt: skip
    )
    ideal = np.array([-1.0 if OBJECTIVES[k].direction == "maximize" else 0.0
                      for k in spec.objectives])  # fmt: skip
    scale = ref - ideal
    points = [
        (np.array(v) - ideal) / scale
        for r in pareto_front(records, spec.objectives)
        for v in [objective_vector(r, spec.objectives)]
        if v is not None and all(x < y for x, y in zip(v, ref))
    ]
    if not points:
        return 0.0
    return dominated_volume([tuple(x) for x in points], tuple(np.ones(len(ref))))


def hypervolume_curve(
    records: list[TrialRecord], spec: HypervolumeSpec | None = None
) -> list[tuple[int, float]]:
    """(trial number, hypervolume of all complete trials up to it) for each complete trial.

    Keeps only the running front, so a long study costs about n x front size, not n squared.
    """
    spec = spec or hypervolume_spec(None)
    done = sorted((r for r in records if r.complete), key=lambda r: r.number)
    front: list[TrialRecord] = []
    curve = []
    for r in done:
        front = pareto_front([*front, r], spec.objectives)
        curve.append((r.number, hypervolume(front, spec)))
    return curve
