"""One search run from its settings: the study opened or made, the worker processes over it,
then the final seeds and the verification of its claims (`run`); `explorer.search.cli` parses the
command line into those settings and calls it."""

from __future__ import annotations

import dataclasses
import sys
import time

import optuna
from optuna.trial import TrialState

from ..evaluate import (
    DataSpec,
    reevaluate,
    select_targets,
    top_rung_budget,
)
from ..store import (
    StorageError,
    default_storage,
    open_storage,
    recover,
    redact,
    rung_studies,
    study_lock,
    study_names,
)
from ..training import DataError, budget, budgets, devices
from ..training import data as data_mod
from ..usage import (
    UsageError,
    first_line,
)
from .processes import plan, run_processes, write_traceback
from .report import Progress
from .rungs import fitting_rungs
from .settings import SearchSettings
from .study import COPIES_IN_A_ROW, open_search_study, out_of_new_designs, search_trials_taken
from .verification import (
    VERIFY_SHARE,
    expected_run_s,
    verification_deadline,
    verify,
    verify_budget,
)
from .workers import WorkerError, run_worker


def run(s: SearchSettings, chosen: str | None = None) -> optuna.Study:
    """Run a search as the CLI does (in-process for one worker, processes for several);
    `chosen` is the line saying which study, printed once the study and its data are found."""

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.monotonic()
    deadline = None if s.timeout is None else started + s.timeout
    if s.verify_seeds and s.timeout is not None:  # the rest of the time is the verification's
        s = dataclasses.replace(s, timeout=s.timeout * (1 - VERIFY_SHARE))
    if s.timeout is not None:  # one deadline for every worker, however late it starts
        s = dataclasses.replace(s, until=time.time() + s.timeout)
    url = s.storage or default_storage()
    try:
        device = devices.resolve_device(s.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    devices.configure_backend(device, s.deterministic)  # as the workers: final seeds, verification
    s, notes = plan(s)
    for note in notes:
        print(note, file=sys.stderr)
    # The parent waits out a database restart as its workers do (explorer.store.locks).
    storage = open_storage(url, heartbeat=s.heartbeat_s, retry=True)
    s = _fit_rungs(s, storage)
    budget = s.budget or budgets.default_budget(device, *s.new_rungs)
    study, config = open_search_study(s, storage, url, budget)
    # Check the data before starting workers, so a missing dataset is one clear line.
    data_mod.find_dataset(config.dataset, s.data_dir)
    if chosen is not None:
        print(chosen, file=sys.stderr)
    rungs = rung_studies(storage, study, config)
    with study_lock(url, study.study_name):
        for rung_study in rungs.values():
            recover(rung_study, url)
    if not s.quiet:
        what = (
            f"{config.rungs} rungs (eta {config.eta}) up to budget {config.budget}"
            if config.rungs > 1
            else f"budget {config.budget}"
        )
        print(
            f"study {study.study_name!r} in {redact(url)}: {what} on {device}, "
            f"sampler {config.sampler}, objectives {', '.join(config.objectives)}, "
            f"{s.workers} worker(s), {search_trials_taken(rungs[min(rungs)])}/{s.trials} search trials "
            "done or running",
            file=sys.stderr,
        )
    progress = Progress(rungs, s.trials, s.quiet)
    try:
        if s.workers == 1:
            try:
                run_worker(s, 0, on_trial=lambda st, t: progress.update())
            except (UsageError, StorageError, DataError, WorkerError):
                raise
            except Exception as exc:  # the same one line as a worker process's error
                where = write_traceback(s, 0)
                raise WorkerError(
                    f"the worker stopped: {type(exc).__name__}: {first_line(exc)} "
                    f"(traceback in {where})"
                ) from None
        else:
            run_processes(s, progress.update)
    except KeyboardInterrupt:
        progress.close()
        print(
            "\ninterrupted: finished trials are stored; rerun the same command to continue",
            file=sys.stderr,
        )
        raise
    finally:
        with study_lock(url, study.study_name):
            for rung_study in rungs.values():
                recover(rung_study, url)
    progress.update()
    progress.close()
    search_s = time.monotonic() - started
    bottom = rungs[min(rungs)]
    taken = search_trials_taken(bottom)
    if taken < s.trials and out_of_new_designs(bottom):
        print(
            f"the sampler's last {COPIES_IN_A_ROW} proposals were all designs already trained: "
            f"the study holds {taken} distinct search designs of the {s.trials} asked for",
            file=sys.stderr,
        )
    if s.final_seeds > 1:
        unfinished = search_unfinished(rungs, s.trials)
        if unfinished:
            print(f"final seeds: not yet, {unfinished}", file=sys.stderr)
        else:
            # Every machine that ends its search here shares the runs (the study's shared runs):
            # each trains what no other has stored or is training, and waits for the rest.
            final_seeds(study, config, s, device, url)
    if s.verify_seeds:
        until = verification_deadline(time.monotonic(), search_s, deadline)
        verify_claims(study, config, s, device, until, url)
    return study


def _fit_rungs(s: SearchSettings, storage) -> SearchSettings:
    """A new study searched with the default rungs gets as many as its trials and budget can
    use (`fitting_rungs`), and says so when that is fewer; a given --rungs, or an existing
    study's own, stands."""
    if s.rungs is not None or s.study_name in study_names(storage, rungs=True):
        return s
    rungs, eta = s.new_rungs
    top = budget(s.budget).train_images if s.budget else None  # default: bottom is quick
    fit, why = fitting_rungs(rungs, eta, s.trials, top)
    if fit < rungs:
        print(f"searching with {fit} rung(s) instead of {rungs}: {why} (--rungs sets them)",
              file=sys.stderr)  # fmt: skip
    return dataclasses.replace(s, rungs=fit)


def search_unfinished(rungs: dict[int, optuna.Study], target: int) -> str | None:
    """Why a study's search is not finished (trials still running or queued at some rung, or
    fewer than `target` search trials), or None when it is."""
    busy = sum(
        len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))
        for study in rungs.values()
    )
    if busy:
        return f"{busy} trial(s) still run or wait on other workers; the last to finish retrains"
    taken = search_trials_taken(rungs[min(rungs)])
    if taken < target and out_of_new_designs(rungs[min(rungs)]):
        return None  # it found no more distinct designs: as finished as it will be
    if taken < target:
        return f"the search stopped at {taken} of {target} trials; rerun to finish it"
    return None


def final_seeds(study: optuna.Study, config, s: SearchSettings, device, url: str) -> None:
    """Retrain the top rung's front and the references with `s.final_seeds` seeds at the top
    rung's budget, stored as the study's re-evaluation (`explorer.evaluate`)."""
    budget = top_rung_budget(config)
    targets = select_targets(study, pareto=True)
    if not s.quiet:
        print(
            f"final seeds: {len(targets)} designs x {s.final_seeds} seeds at {budget.text}",
            file=sys.stderr,
        )
    data = data_mod.load_dataset(config.dataset, data_dir=s.data_dir, seed=config.split_seed)
    log = None if s.quiet else (lambda line: print(line, file=sys.stderr))
    reevaluate(study, targets, s.final_seeds, budget, data.on(device), device, log=log, url=url)


def verify_claims(
    study: optuna.Study, config, s: SearchSettings, device, deadline, url: str
) -> None:
    """Retrain the search's claimants against v1/v2 and those references at the verification
    budget (`explorer.search.verification`), stopping at `deadline` (a `time.monotonic` value)."""
    log = None if s.quiet else (lambda line: print(line, file=sys.stderr))
    spec = DataSpec(config.dataset, s.data_dir, config.split_seed)
    budget = verify_budget(config, s.verify_budget)
    verify(study, config, s.verify_seeds, None, device, deadline=deadline, log=log,
           budget_name=s.verify_budget, workers=s.workers or 1, spec=spec,
           expected_s=expected_run_s(study, config, budget), url=url)  # fmt: skip
