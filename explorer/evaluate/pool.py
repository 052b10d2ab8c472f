"""Training runs spread over worker processes, as the search spreads its trials.

A re-evaluation or a verification race is many independent runs (one design, one seed). On a CPU
two one-thread processes train about 1.4x the runs of one two-thread process (BENCHMARKS.md,
"Threads per trial"); on a GPU several processes fill it. `RunPool` starts `workers` processes
(spawned, each with its share of the cores and the dataset loaded once), takes runs as they are
submitted and hands back each result as it ends; the caller alone writes the study. With one
worker, or with a `run` function given (tests), runs go in this process, one at a time.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from search_space import NetworkConfig, build_network

from ..analysis import Reeval
from ..training import TrainConfig, devices, trainer
from ..training import data as data_mod
from ..usage import first_line


@dataclass(frozen=True)
class DataSpec:
    """What a worker process needs to load the dataset itself (it is not sent over a pipe)."""

    name: str
    data_dir: str | None
    split_seed: int


@dataclass(frozen=True)
class Run:
    """One training run: `key` says whose it is (the caller's), `seed` which."""

    key: Any
    network: NetworkConfig
    config: TrainConfig
    seed: int


@dataclass(frozen=True)
class RunResult:
    run: Run
    val_acc: float
    test_acc: float
    seconds: float
    worker: int  # the process id that trained it
    error: str | None = None  # why the run failed (its accuracies are then NaN)


def train_and_test(
    network: NetworkConfig, data: Any, config: Any, device: Any, seed: int
) -> tuple[float, float]:
    """(validation accuracy, test accuracy) of the design trained from scratch with `seed`.

    Validation accuracy is the trainer's last-epoch figure (the first ``config.final_val_images``
    of the validation split, as in the search); test accuracy is over the whole test split.
    """

    config = dataclasses.replace(config, seed=seed)
    torch.manual_seed(seed)
    model = build_network(network).to(device)
    try:
        val_acc = trainer.train(model, data, config, device).val_acc[-1]
    except trainer.DivergedError as exc:  # a real outcome of this design and seed: scored as it is
        print(f"  diverged ({exc}); scored as it stands", file=sys.stderr)
        _, val_acc = trainer.evaluate(model, data, device, "val", config.final_val_images)
    _, test_acc = trainer.evaluate(model, data, device, "test")
    return float(val_acc), float(test_acc)


_worker_data: Any = None
_worker_device: Any = None


def _init_worker(spec: DataSpec, device: str, threads: int, deterministic: bool) -> None:
    global _worker_data, _worker_device
    torch.set_num_threads(threads)
    _worker_device = torch.device(device)
    trainer.configure_backend(_worker_device, deterministic)
    dataset = data_mod.load_dataset(spec.name, data_dir=spec.data_dir, seed=spec.split_seed)
    _worker_data = dataset.on(_worker_device)


def _train_in_worker(network: dict, config: dict, seed: int) -> tuple[float, float, float, int]:
    start = time.perf_counter()
    val, test = train_and_test(
        NetworkConfig.from_dict(network), _worker_data, TrainConfig.from_dict(config),
        _worker_device, seed,
    )  # fmt: skip
    return val, test, time.perf_counter() - start, os.getpid()


class SeedOrder:
    """Results that end out of seed order, stored in seed order.

    A `Reeval` holds seeds 0..n-1 without gaps; with several workers seed 4 may end before seed 3.
    `add` keeps such a result until the seeds before it have ended, and answers the longer
    `Reeval` whenever one grows (None otherwise)."""

    def __init__(self, stored: dict[Any, Reeval], budget_name: str, config: dict) -> None:
        self.stored = stored
        self._empty = Reeval((), (), budget_name, config)
        self._ended: dict[Any, dict[int, tuple[float, float]]] = {}

    def ended(self, key: Any, seed: int) -> bool:
        """Whether seed `seed` of `key` is stored or has ended and waits for an earlier one."""
        return seed < self.have(key) or seed in self._ended.get(key, {})

    def have(self, key: Any) -> int:
        return self.stored[key].seeds if key in self.stored else 0

    def add(self, key: Any, seed: int, val_acc: float, test_acc: float) -> Reeval | None:
        waiting = self._ended.setdefault(key, {})
        waiting[seed] = (val_acc, test_acc)
        result = self.stored.get(key, self._empty)
        grown = result
        while grown.seeds in waiting:
            grown = grown.added(*waiting.pop(grown.seeds))
        if grown.seeds == result.seeds:
            return None
        self.stored[key] = grown
        return grown


class RunPool:
    """Runs training runs on `workers` processes (or inline); use as a context manager.

    `submit` queues a run; `finished` waits for at least one result (up to `timeout` seconds) and
    yields those that ended. `busy` counts runs submitted and not yet handed back."""

    def __init__(
        self,
        workers: int,
        spec: DataSpec | None,
        device: str = "cpu",
        deterministic: bool = False,
        run: Callable[..., tuple[float, float]] | None = None,
        data: Any = None,
    ) -> None:
        self.workers = max(1, workers)
        self._inline = run is not None or self.workers == 1
        self._run, self._data, self._device = run, data, device
        self._pending: dict[cf.Future, tuple[Run, float]] = {}
        self._executor: cf.ProcessPoolExecutor | None = None
        if not self._inline:
            threads = devices.cpu_threads_per_worker(self.workers)
            self._executor = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context("spawn"),
                initializer=_init_worker, initargs=(spec, device, threads, deterministic),
            )  # fmt: skip
        elif self._run is None:
            self._run = train_and_test
            if self._data is None and spec is not None:
                dataset = data_mod.load_dataset(spec.name, data_dir=spec.data_dir,
                                                seed=spec.split_seed)  # fmt: skip
                self._data = dataset.on(torch.device(device))

    def __enter__(self) -> RunPool:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(stop=kind is not None)

    def close(self, stop: bool = False) -> None:
        """Wait for the runs in flight, or with `stop` (Ctrl-C, an error) end them at once: no
        worker process outlives the pool."""
        if self._executor is not None:
            for future in self._pending:
                future.cancel()
            if stop:
                for process in list(getattr(self._executor, "_processes", {}).values()):
                    process.terminate()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @property
    def busy(self) -> int:
        return len(self._pending)

    @property
    def free(self) -> int:
        """How many more runs can start now without waiting for a worker."""
        return self.workers - self.busy if not self._inline else (0 if self.busy else 1)

    def submit(self, run: Run) -> None:
        start = time.perf_counter()
        if self._inline:
            future: cf.Future = cf.Future()
            try:
                val, test = self._run(run.network, self._data, run.config, self._device, run.seed)
                future.set_result((val, test, time.perf_counter() - start, os.getpid()))
            except BaseException as exc:  # handed back by `finished`, as a process's error would be
                if not isinstance(exc, Exception):
                    raise
                future.set_exception(exc)
        else:
            assert self._executor is not None
            future = self._executor.submit(
                _train_in_worker, run.network.to_dict(), run.config.to_dict(), run.seed
            )
        self._pending[future] = (run, start)

    def finished(self, timeout: float | None = None) -> Iterator[RunResult]:
        """The runs that ended, waiting up to `timeout` for the first. A run that failed comes back
        with its `error`; a worker killed from outside raises
        `concurrent.futures.process.BrokenProcessPool`."""
        if not self._pending:
            return
        done, _ = cf.wait(list(self._pending), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        for future in done:
            run, start = self._pending.pop(future)
            try:
                val, test, seconds, pid = future.result()
            except cf.process.BrokenProcessPool:
                raise
            except Exception as exc:  # noqa: BLE001 - the run's own failure, handed to the caller
                nan = float("nan")
                yield RunResult(run, nan, nan, time.perf_counter() - start, os.getpid(),
                                f"{type(exc).__name__}: {first_line(exc)}")  # fmt: skip
                continue
            yield RunResult(run, float(val), float(test), float(seconds), pid)
