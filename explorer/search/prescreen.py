"""Pre-screening search candidates with a zero-cost proxy (``--prescreen M``).

Among `m` candidates the study's own sampler proposes, a proxy of
`explorer.training.proxy_scores` chooses the one a search trial trains; with a cost (parameters),
only a candidate another one dominates in (score, cost) is passed over (`analysis.dominates`, the
one dominance of the project). `Prescreener` queues the choice as the study's next trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import optuna
from optuna.trial import TrialState

from search_space import NetworkConfig, network_params

from ..analysis import dominates
from ..store import trial_attr
from ..training import check_names, proxy_scores

T = TypeVar("T")


@dataclass(frozen=True)
class Prescreened(Generic[T]):
    """The outcome of `prescreen`: the chosen candidate, its index, and every candidate's score."""

    choice: T
    index: int
    scores: tuple[float, ...]
    costs: tuple[float, ...] | None = None


def _ok(value: float) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def prescreen(
    sample: Callable[[int], T | None],
    m: int,
    score: Callable[[T], float],
    cost: Callable[[T], float] | None = None,
) -> Prescreened[T]:
    """Draw `m` candidates with ``sample(i)`` and choose the one to train.

    Without `cost`, the highest score wins. With `cost`, a candidate is passed over only when
    another one scores at least as high at no higher cost, better on one of the two: of the
    candidates no other dominates in (score, cost), the earliest drawn wins. In a search for
    accuracy *and* size this keeps the sampler's aim along the front (a proxy that grows with
    size would otherwise always pick the largest candidate) and lets the proxy veto only
    candidates it expects to be beaten by one no larger. ``sample`` may return None for an
    invalid draw; such a candidate is chosen only if every draw was invalid (then the first).
    Ties go to the earlier draw.
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    candidates = [sample(i) for i in range(m)]
    scores = tuple(-math.inf if c is None else _ok(score(c)) for c in candidates)
    costs = (
        None
        if cost is None
        else tuple(math.inf if c is None else float(cost(c)) for c in candidates)
    )
    valid = [i for i, c in enumerate(candidates) if c is not None]
    if not valid:
        return Prescreened(candidates[0], 0, scores, costs)
    if costs is None:
        best = max(valid, key=lambda i: (scores[i], -i))
    else:
        # (score, cost) as minimisation vectors: a higher score and a lower cost are better
        points = {i: (-scores[i], costs[i]) for i in valid}

        def dominated(i: int) -> bool:
            return any(dominates(points[j], points[i]) for j in valid)

        best = next(i for i in valid if not dominated(i))
    return Prescreened(candidates[best], best, scores, costs)


@dataclass
class Prescreener:
    """Queues the next search trial as the pre-screened choice among `m` sampler proposals.

    Optuna fixes a trial's parameters as it suggests them, so the choice must be made before the
    trial exists. Call this object once before ``study.optimize`` and pass it in ``callbacks``:
    each time it runs it copies the study's trials (complete, pruned and running) into an
    in-memory study, draws `m` candidates there with a fresh sampler, scores each design with
    `proxy` (see `prescreen`; with `by_cost`, parameters are the cost) and enqueues the chosen
    parameters with ``enqueue_trial`` and a ``prescreen`` user attribute (m, proxy, every
    candidate's score and parameters, the chosen index, the seconds spent). The next trial pops
    them. Reference, retried and other queued trials come first, unchanged. Nothing is queued
    once `target` search trials are done or queued, or while `max_waiting` pre-screened trials
    wait (set it to the number of workers sharing the study).

    The sampler is of the same kind and settings as the study's, so its proposals follow
    everything learned so far (TPE is stateless between trials; with constant liar each draw
    also sees the ones before it as running, which spreads the m candidates).
    make_sampler(n): that sampler, seeded from n, the number of trials so far (add a worker's
    index to n so workers differ). network: turns a trial (here the in-memory one) into the
    design the search would build (`explorer.search.Objective.network`). seed: the seed a trial
    builds its network with, so candidates are scored at the weights they would train from.
    score_fn: (design, seed) -> proxy scores; by default `proxy_scores` on `data` and `device`.
    """

    m: int
    network: Callable[[Any], NetworkConfig]
    make_sampler: Callable[[int], optuna.samplers.BaseSampler]
    data: Any = None
    device: Any = "cpu"
    proxy: str = "naswot"  # the best on our space: BENCHMARKS.md, "Zero-cost proxies on our space"
    seed: int = 0
    target: int | None = None
    max_waiting: int = 1  # the number of workers: each finds one pre-screened trial queued
    by_cost: bool = True
    score_fn: Callable[[NetworkConfig, int], dict[str, float | None]] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_names([self.proxy])
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"prescreen m must be a positive integer, got {self.m!r}")

    def __call__(self, study: optuna.Study, trial: Any = None) -> dict[str, Any] | None:
        """Enqueue one pre-screened trial if one is due; returns the ``prescreen`` attribute."""
        chosen = self.choose(study)
        if chosen is None:
            return None
        params, attr = chosen
        study.enqueue_trial(params, user_attrs={"prescreen": attr})
        return attr

    def choose(self, study: optuna.Study) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The pre-screened choice (its parameters and ``prescreen`` attribute) if one is due,
        without queueing it: a search samples and scores here, outside its study's lock, and
        queues the choice under the lock only when a new design is due."""
        if self.m < 2:
            return None
        trials = study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if sum(trial_attr(t, "prescreen") is not None for t in waiting) >= self.max_waiting:
            return None
        if self.target is not None:
            live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
            searched = sum(1 for t in trials if t.state in live and not trial_attr(t, "reference"))
            if searched >= self.target:
                return None
        start = time.perf_counter()
        shadow = optuna.create_study(
            directions=study.directions,
            sampler=self.make_sampler(len(trials)),
        )
        keep = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        shadow.add_trials(t for t in trials if t.state in keep)
        drawn: list[dict[str, Any]] = []

        def sample(i: int) -> NetworkConfig | None:
            t = shadow.ask()
            try:
                net = self.network(t)
            except ValueError:
                net = None
            drawn.append(dict(t.params))
            return net

        chosen = prescreen(
            sample,
            self.m,
            lambda net: _ok(self._score(net)),
            network_params if self.by_cost else None,
        )
        attr = {
            "m": self.m,
            "proxy": self.proxy,
            "chosen": chosen.index,
            "scores": [s if math.isfinite(s) else None for s in chosen.scores],
            "params": None
            if chosen.costs is None
            else [int(c) if math.isfinite(c) else None for c in chosen.costs],
            "time_s": round(time.perf_counter() - start, 3),
        }
        self.log.append(attr)
        return drawn[chosen.index], attr

    def _score(self, net: NetworkConfig) -> float:
        if self.score_fn is not None:
            value = self.score_fn(net, self.seed).get(self.proxy)
        else:
            value = proxy_scores(net, self.data, self.device, self.seed, [self.proxy])[self.proxy]
        return -math.inf if value is None else float(value)
