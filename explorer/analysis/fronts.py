"""Ranking designs by several objectives: the objectives a study may search, Pareto dominance,
non-dominated sorting, NSGA-II's crowding distance, and the front of a study's records.

This is the one implementation of dominance in the project: the front the summary, the exporter
and the dashboard show, the ranking successive halving promotes by, and the early stop of
dominated trials all use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..store import TrialRecord


class ObjectiveInfo(NamedTuple):
    key: str
    direction: str  # "maximize" or "minimize"
    label: str


OBJECTIVES: dict[str, ObjectiveInfo] = {
    "val_acc": ObjectiveInfo("val_acc", "maximize", "validation accuracy"),
    "params": ObjectiveInfo("params", "minimize", "parameters"),
    "flops": ObjectiveInfo("flops", "minimize", "FLOPs per image (2 x multiply-adds)"),
    "latency_ms": ObjectiveInfo("latency_ms", "minimize", "latency at batch 1 (ms)"),
}
DEFAULT_OBJECTIVES = ("val_acc", "params")


def objective_vector(
    record: TrialRecord, objectives: Sequence[str], partial: bool = False
) -> tuple[float, ...] | None:
    """Objective values turned to minimisation (accuracy negated); None if any is missing.

    partial: a design stopped early counts with the accuracy of the last epoch it reached (how
    the search ranks a rung's designs)."""
    out = []
    for key in objectives:
        value = record.last_val_acc() if partial and key == "val_acc" else record.value(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        out.append(-float(value) if OBJECTIVES[key].direction == "maximize" else float(value))
    return tuple(out)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether minimisation vector `a` Pareto-dominates `b`."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """The indices of `points` (minimisation vectors) by non-dominated front, best front first.

    One dominance matrix, then peeling: O(n^2) comparisons done by numpy, which keeps a few
    thousand designs well under a second."""
    n = len(points)
    if n == 0:
        return []
    p = np.asarray(points, dtype=float)
    le = (p[:, None, :] <= p[None, :, :]).all(axis=2)
    lt = (p[:, None, :] < p[None, :, :]).any(axis=2)
    dom = le & lt  # dom[i, j]: i dominates j
    count = dom.sum(axis=0)
    left = np.ones(n, dtype=bool)
    fronts = []
    while left.any():
        front = np.flatnonzero(left & (count == 0))
        fronts.append(front.tolist())
        left[front] = False
        count = count - dom[front].sum(axis=0)
    return fronts


def feasible(record: TrialRecord) -> bool:
    """Whether a trial meets every limit of its study (``--max-params`` and the like)."""
    return all(v <= 0 for v in record.constraint_values or ())


def pareto_front(
    records: list[TrialRecord], objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
) -> list[TrialRecord]:
    """The complete, feasible trials no other such trial dominates on `objectives` (the study's,
    `StudyConfig.objectives`), sorted by the last objective."""
    points = [
        (r, v)
        for r in records
        if r.complete and r.network is not None and feasible(r)
        for v in [objective_vector(r, objectives)]
        if v is not None
    ]
    fronts = non_dominated_fronts([v for _, v in points])
    front = [points[i][0] for i in fronts[0]] if fronts else []
    return sorted(front, key=lambda r: r.value(objectives[-1]))


def crowding(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within one front (boundary points: infinite)."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for j in range(1, n - 1):
            gap = points[order[j + 1]][m] - points[order[j - 1]][m]
            distance[order[j]] += gap / (high - low)
    return distance


def rank_order(records: Sequence[TrialRecord], objectives: Sequence[str]) -> list[TrialRecord]:
    """The records best first: by non-dominated front, then by larger crowding distance within a
    front (spread along the front wins ties), then by trial number. A design stopped early ranks
    by the last accuracy it reached; records without the values to rank come last."""
    ranked, unranked = [], []
    for r in records:
        v = objective_vector(r, objectives, partial=True)
        (unranked if v is None else ranked).append((r, v))
    out: list[TrialRecord] = []
    for front in non_dominated_fronts([v for _, v in ranked]):
        distance = crowding([ranked[i][1] for i in front])
        order = sorted(range(len(front)), key=lambda k: (-distance[k], ranked[front[k]][0].number))
        out += [ranked[front[k]][0] for k in order]
    return out + sorted((r for r, _ in unranked), key=lambda r: r.number)
