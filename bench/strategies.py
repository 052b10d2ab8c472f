"""Search strategies at equal wall time: which returns the best front for its time on this machine.

    python -m bench strategies run --minutes 30 --seeds 0,1,2        # search cells, resumable
    python -m bench strategies judge --points 10,30 --budget quickx10 # retrain fronts, resumable
    python -m bench strategies report --points 10,30 --write          # the table, BENCHMARKS.md
    python -m bench strategies claims --strategies quick-tpe-verify3 --seeds 2 --points 30
                                      # each search claim: margin at search, verification, judge

`run` gives each (strategy, seed) cell the whole machine for --minutes (``--timeout``, every
core's worker), one cell after another, each in its own journal under --dir; a cell runs the
search as `make search` does but for its strategy's flags (and ``--no-weights``: the judge
retrains every design anyway). A TIMED strategy (one that verifies its claims when its time is
up) has its answer only at the end of its own timeout, so it runs one cell per time point of
--points, that many minutes long. A cell that finished leaves ``CELL.done`` (its start time and
wall time) and its journal gzipped (``CELL.journal.gz``); a cell cut short (the session ended, the
machine rebooted) has no ``.done``: its journal is removed and it runs again from the start, so a
half-run cell never counts. `judge` takes, for each finished cell and time point T (minutes from
the cell's start), the search front of the designs finished by T (the top rung's, for a rung
search; one entry per distinct design), and retrains each of its designs, and v1 and v2, from
scratch at --budget with seed 0, once per distinct design, in --jobs processes of one torch thread,
caching every result (and its seconds) in ``DIR/judged.json``. `report` computes each front's
hypervolume with the retrained test accuracy, pairs strategies by seed, and counts the claims
against v1 and v2 that the retraining reverses: the claims a strategy states (a front design the
search found more accurate than a reference with no more parameters, or, for a verifying
strategy, such a claim its verification upheld, with seeds other than the judge's).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import gzip
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
import torch

from explorer.analysis import (
    RULE,
    HypervolumeSpec,
    compare,
    holm,
    hypervolume,
    hypervolume_spec,
    pareto_front,
    study_records,
)
from explorer.evaluate import train_and_test
from explorer.search import verified_claims
from explorer.store import TrialRecord, open_storage, study_config
from explorer.training import budget, load_dataset
from search_space import REFERENCES, NetworkConfig, network_params, reference_network

from ._common import ROOT, JsonState, machine, publish, results_dir, timed

STUDY = "s"
SECTION = "Search strategies at equal wall time"
# name -> the search flags of that strategy (the seed, storage and timeout are added per cell)
# Each names every flag that has changed its default since the cells ran (--rungs, --verify), so a
# cell run again searches as the committed one did.
STRATEGIES = {
    # the search's first default: three rungs, top rung quickx9
    "rungs3-tpe": ["--rungs", "3", "--verify-seeds", "0"],
    "quick-tpe": ["--rungs", "1", "--budget", "quick", "--sampler", "tpe", "--verify-seeds", "0"],
    "quick-random": ["--rungs", "1", "--budget", "quick", "--sampler", "random", "--verify-seeds", "0"],
    # quick-tpe whose claims against v1/v2 are raced at quickx10 before they are stated; the
    # search stops at 3/4 of --timeout and the verification takes the rest. The search's default,
    # chosen on these cells. The cells recorded up to 2026-12-05 ran the check of that time (one
    # seed a claim against a fixed margin, `--verify 1`); a cell run now races up to 8 seeds.
    "quick-tpe-verify": ["--rungs", "1", "--budget", "quick", "--sampler", "tpe", "--verify-seeds", "8"],
    # the same verified at quickx3: measured once, and not enough (BENCHMARKS); not run by default
    "quick-tpe-verify3": ["--rungs", "1", "--budget", "quick", "--sampler", "tpe", "--verify-seeds", "8",
                          "--verify-budget", "quickx3"],
    # Per-stage freedom against one shared block, on a three-stage network (28, 14, 7): the same
    # search but for --per-stage. Judged on their own (`--strategies stages3-shared,stages3-per-stage`),
    # into their own section, with v1 and v2 placed in the same network.
    "stages3-shared": ["--rungs", "1", "--budget", "quick", "--sampler", "tpe", "--verify-seeds", "0",
                       "--stages", "1,1,1"],
    "stages3-per-stage": ["--rungs", "1", "--budget", "quick", "--sampler", "tpe", "--verify-seeds", "0",
                          "--stages", "1,1,1", "--per-stage"],
}  # fmt: skip
# The network each strategy searches in, where it is not the default two stages of one block.
STAGES = {"stages3-shared": (1, 1, 1), "stages3-per-stage": (1, 1, 1)}
DEFAULT_STAGES = (1, 1)
STAGES_SECTION = "Per-stage blocks: does per-stage freedom pay?"
DEFAULT_STRATEGIES = ["rungs3-tpe", "quick-tpe", "quick-random", "quick-tpe-verify"]
# Strategies whose answer exists only when their own --timeout ends (the verification runs last):
# each time point is a cell of its own, that many minutes long, and its front is the whole run's.
TIMED = {"quick-tpe-verify", "quick-tpe-verify3"}
BASELINE = "quick-random"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("mode", choices=("run", "judge", "report", "claims"))
    p.add_argument(
        "--dir",
        default=str(results_dir("strategies")),
        help="where the journals and results go (committed: a later session goes on)",
    )
    p.add_argument(
        "--strategies", default=",".join(DEFAULT_STRATEGIES), help="comma-separated names"
    )
    p.add_argument("--seeds", default="0,1,2", help="search seeds")
    p.add_argument("--minutes", type=float, default=30.0, help="run: each cell's wall time")
    p.add_argument(
        "--points", default="10,30", help="judge/report: minutes at which fronts are taken"
    )
    p.add_argument("--budget", default="quickx10", help="judge: the common retraining budget")
    p.add_argument("--up-to", default="v2", choices=("v1", "v2", "all"),
                   help="judge/report: the hypervolume's box ends at this reference's parameters "
                   "(the region where designs claim to beat v1 and v2; larger designs take up "
                   "to 14 minutes each to retrain on one core); all: the space's largest design")  # fmt: skip
    p.add_argument("--jobs", type=int, default=os.cpu_count(),
                   help="judge: retraining processes, one torch thread each")  # fmt: skip
    p.add_argument("--max-cells", type=int, default=None, help="run: stop after this many cells")
    p.add_argument("--write", action="store_true", help="report: replace the BENCHMARKS.md section")
    return p.parse_args(argv)


def network_stages(names: list[str]) -> tuple[int, ...]:
    """The stages every one of `names` searches in: strategies are compared in one network only."""
    found = {STAGES.get(n, DEFAULT_STAGES) for n in names}
    if len(found) != 1:
        raise SystemExit(f"strategies {', '.join(names)} search different networks; judge apart")
    return found.pop()


def cells(ns: argparse.Namespace) -> list[tuple[str, int]]:
    names = [n for n in ns.strategies.split(",") if n]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        sys.exit(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    seeds = [int(s) for s in ns.seeds.split(",") if s]
    return [(n, s) for s in seeds for n in names]  # seed-major: early seeds complete first


def journal(folder: Path, name: str, seed: int) -> Path:
    """The cell's journal while it runs; a finished cell's is packed (`packed`)."""
    return folder / f"{name}-s{seed}.journal"


def done_file(folder: Path, name: str, seed: int) -> Path:
    return folder / f"{name}-s{seed}.done"


def packed(folder: Path, name: str, seed: int) -> Path:
    """A finished cell's journal, gzipped (a 30-minute single-budget journal is several MB of
    curves, a tenth of that packed)."""
    return folder / f"{name}-s{seed}.journal.gz"


def pack(folder: Path, name: str, seed: int) -> None:
    """Gzip a finished cell's journal in place (atomically: the .gz appears whole or not)."""
    src, dst = journal(folder, name, seed), packed(folder, name, seed)
    if not src.exists() or not done_file(folder, name, seed).exists():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    with src.open("rb") as fin, gzip.open(tmp, "wb", compresslevel=9) as fout:
        shutil.copyfileobj(fin, fout)
    tmp.replace(dst)
    src.unlink()


@contextlib.contextmanager
def open_cell(folder: Path, name: str, seed: int) -> Iterator[optuna.Study]:
    """A finished cell's study, read from its packed journal (unpacked into a temporary file for
    the while: Optuna's journal storage reads its file on every query) or from a journal not yet
    packed."""
    if not packed(folder, name, seed).exists():
        yield optuna.load_study(
            study_name=STUDY, storage=open_storage(str(journal(folder, name, seed)))
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.journal"
        with gzip.open(packed(folder, name, seed), "rb") as fin, path.open("wb") as fout:
            shutil.copyfileobj(fin, fout)
        yield optuna.load_study(study_name=STUDY, storage=open_storage(str(path)))


def cell_id(name: str, minutes: float) -> str:
    """The files' name of strategy `name`'s cell of `minutes` (TIMED strategies have one per time
    point; the others one, whose fronts are taken at each point)."""
    return f"{name}-{minutes:g}min" if name in TIMED else name


def runs(ns: argparse.Namespace) -> list[tuple[str, str, int, float]]:
    """(cell id, strategy, seed, minutes) of every cell `run` makes, seed-major."""
    points = [float(p) for p in ns.points.split(",")]
    return [
        (cell_id(name, m), name, seed, m)
        for name, seed in cells(ns)
        for m in (points if name in TIMED else [ns.minutes])
    ]


def finished(folder: Path, name: str, seed: int, points: list[float]) -> bool:
    """Whether strategy `name` has every cell of `seed` it needs for `points` finished."""
    ids = {cell_id(name, m) for m in points}
    return all(done_file(folder, c, seed).exists() for c in ids)


def run_cell(folder: Path, cell: str, name: str, seed: int, minutes: float) -> None:
    """One search of strategy `name` with `seed` for `minutes`, from a fresh journal named after
    `cell`; records its start."""
    path = journal(folder, cell, seed)
    for stale in folder.glob(f"{path.name}*"):  # a cell cut short (and any .gz): start it again
        stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "explorer.search", "--storage", str(path), "--study", STUDY,
           "--trials", "100000", "--seed", str(seed), "--timeout", f"{minutes * 60:.0f}",
           "--no-weights", "--quiet", *STRATEGIES[name]]  # fmt: skip
    print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    start = datetime.now()  # naive local time, as Optuna stores trial times
    load = os.getloadavg()[0]  # machine() gives the load when this script started, cells ago
    _, wall = timed(subprocess.run, cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    info = {"start": start.isoformat(), "wall_s": wall, "minutes": minutes, "machine": machine(),
            "load_at_cell_start": load}  # fmt: skip
    done_file(folder, cell, seed).write_text(json.dumps(info) + "\n")
    pack(folder, cell, seed)
    print(f"{cell} seed {seed}: {wall / 60:.1f} min", file=sys.stderr, flush=True)


def mode_run(ns: argparse.Namespace) -> None:
    folder = Path(ns.dir)
    ran = 0
    for cell, name, seed, minutes in runs(ns):
        if done_file(folder, cell, seed).exists():
            pack(folder, cell, seed)  # finished by an older run that left it unpacked
            continue
        if ns.max_cells is not None and ran >= ns.max_cells:
            break
        run_cell(folder, cell, name, seed, minutes)
        ran += 1
    left = [r for r in runs(ns) if not done_file(folder, r[0], r[2]).exists()]
    print(f"{len(left)} cells left" + (f"; continue with: python -m bench strategies run "
          f"--minutes {ns.minutes:g} --points {ns.points} --seeds {ns.seeds} "
          f"--strategies {ns.strategies}" if left else ""))  # fmt: skip


Claims = list[tuple[TrialRecord, TrialRecord]]  # (front design, reference it claims to beat)


def fronts_at(
    folder: Path, name: str, seed: int, points: list[float]
) -> dict[float, tuple[list[TrialRecord], dict[str, TrialRecord], Claims]]:
    """For each time point T (minutes): the strategy's search front of the designs finished
    within T of its cell's start (for a TIMED strategy, the whole run of its T-minute cell), one
    record per distinct design (a design proposed again repeats its first record); its
    references' records (by name) as the search trained them; and the claims against them it
    states: a front design more accurate than a reference with no more parameters, in the
    search's scores, or, for a verifying strategy, the claims its verification upheld."""
    out = {}
    for minutes in points:
        cell = cell_id(name, minutes)
        info = json.loads(done_file(folder, cell, seed).read_text())
        cutoff = datetime.fromisoformat(info["start"]) + timedelta(minutes=minutes)
        with open_cell(folder, cell, seed) as study:
            config = study_config(study)
            ended = {t.number: t.datetime_complete for t in study.get_trials(deepcopy=False)}
            records = [r for r in study_records(study) if r.complete]
            verified = verified_claims(study, config) if name in TIMED else None
        if name in TIMED:
            cutoff = max((t for t in ended.values() if t is not None), default=cutoff)
        now = [r for r in records if ended[r.number] is not None and ended[r.number] <= cutoff]
        refs = {r.reference: r for r in now if r.reference}
        front, seen = [], set()
        for r in sorted(pareto_front(now, config.objectives), key=lambda r: r.number):
            if not r.reference and r.network.to_json() not in seen:
                seen.add(r.network.to_json())
                front.append(r)
        if verified is None:
            claims = [(r, ref) for ref in refs.values() for r in front
                      if r.params <= ref.params and r.val_acc > ref.val_acc]  # fmt: skip
        else:
            claims = [(c.design, c.reference) for c in verified if c.holds]
        out[minutes] = front, refs, claims
    return out


class Judged:
    """Retrained results by design (network JSON), budget and seed, kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.state = JsonState(path)

    def key(self, network: NetworkConfig, budget_name: str, seed: int) -> str:
        return f"{network.to_json()}|{budget_name}|{seed}"

    def get(self, network: NetworkConfig, budget_name: str, seed: int = 0) -> dict | None:
        return self.state.get(self.key(network, budget_name, seed))

    def put(self, network: NetworkConfig, budget_name: str, seed: int, val: float, test: float,
            seconds: float | None = None):  # fmt: skip
        entry = {"val": val, "test": test}
        if seconds is not None:
            entry["seconds"] = round(seconds, 1)
        self.state.put(self.key(network, budget_name, seed), entry)


_DATA = None  # each judge process's copy of the dataset (`_judge_init`)


def _judge_init() -> None:
    global _DATA
    torch.set_num_threads(1)  # one process per core, as the search's workers
    _DATA = load_dataset("fashion-mnist", seed=0).on("cpu")


def _judge_one(network_json: str, budget_name: str) -> tuple[str, float, float, float]:
    net = NetworkConfig.from_json(network_json)
    (val, test), seconds = timed(train_and_test, net, _DATA, budget(budget_name), "cpu", 0)
    return network_json, val, test, seconds


def mode_judge(ns: argparse.Namespace) -> None:
    folder = Path(ns.dir)
    judged = Judged(folder / "judged.json")
    points = [float(p) for p in ns.points.split(",")]
    todo: dict[str, NetworkConfig] = {}  # in cell order: early seeds are judged whole first
    for name, seed in cells(ns):
        if not finished(folder, name, seed, points):
            continue
        for front, _, _ in fronts_at(folder, name, seed, points).values():
            front = inside(front, ns.up_to, STAGES.get(name, DEFAULT_STAGES))
            # v1 and v2 in the front's network, one shared block (the same runs for every strategy)
            nets = [r.network for r in front] + [
                reference_network(v, front[0].network, per_stage=False)
                for v in ("v1", "v2") if front
            ]  # fmt: skip
            for net in nets:
                if judged.get(net, ns.budget) is None:
                    todo[net.to_json()] = net
    print(f"{len(todo)} designs to retrain at {ns.budget} in {ns.jobs} process(es)",
          file=sys.stderr, flush=True)  # fmt: skip
    if not todo:
        return
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(ns.jobs, spawn, initializer=_judge_init) as pool:
        jobs = [pool.submit(_judge_one, key, ns.budget) for key in todo]
        for i, job in enumerate(concurrent.futures.as_completed(jobs)):
            key, val, test, seconds = job.result()
            net = todo[key]
            judged.put(net, ns.budget, 0, val, test, seconds)
            print(f"{i + 1}/{len(todo)}: {net.block.short()} test {test:.4f} ({seconds:.0f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip


def box(up_to: str, stages: tuple[int, ...] = DEFAULT_STAGES) -> HypervolumeSpec:
    """The (accuracy, parameters) hypervolume whose box ends just above reference `up_to`'s
    parameters in the network of `stages` (so a design as large as it still counts), or at the
    space's largest design for "all"."""
    spec = hypervolume_spec(None)
    if up_to == "all":
        return spec
    limit = network_params(NetworkConfig(block=REFERENCES[up_to], stages=stages)) + 1
    return HypervolumeSpec(spec.objectives, {**spec.reference, "params": float(limit)})


def inside(
    front: list[TrialRecord], up_to: str, stages: tuple[int, ...] = DEFAULT_STAGES
) -> list[TrialRecord]:
    """The front's designs inside `box(up_to, stages)`: only they can add to its hypervolume."""
    limit = box(up_to, stages).reference["params"]
    return [r for r in front if r.params is not None and r.params < limit]


def judged_front(
    front: list[TrialRecord], judged: Judged, budget_name: str, up_to: str = "all",
    stages: tuple[int, ...] = DEFAULT_STAGES,
):  # fmt: skip
    """(hypervolume of the retrained front in `box(up_to, stages)`, whether a design inside it
    still misses its retraining)."""
    again = []
    for r in inside(front, up_to, stages):
        got = judged.get(r.network, budget_name)
        if got is None:
            return math.nan, True
        again.append(dataclasses.replace(r, val_acc=got["test"]))
    return hypervolume(again, box(up_to, stages)), False


def reversed_claims(claims: Claims, judged: Judged, budget_name: str) -> tuple[int, int, int]:
    """(claims the retraining reverses, claims made, claims not yet judged): a claim of a design
    against a reference is reversed when the design's retrained test accuracy is not above the
    reference's."""
    flipped = unjudged = 0
    for design, ref in claims:
        # The reference as the judge retrains it: in the design's network, one shared block (a
        # per-stage study stores its references stage by stage, the same network).
        theirs_net = ref.network
        if ref.reference in REFERENCES and design.network is not None:
            theirs_net = reference_network(ref.reference, design.network, per_stage=False)
        mine, theirs = judged.get(design.network, budget_name), judged.get(theirs_net, budget_name)
        if mine is None or theirs is None:
            unjudged += 1
        elif mine["test"] <= theirs["test"]:
            flipped += 1
    return flipped, len(claims), unjudged


def mode_report(ns: argparse.Namespace) -> None:
    folder = Path(ns.dir)
    judged = Judged(folder / "judged.json")
    points = [float(p) for p in ns.points.split(",")]
    names = [n for n in ns.strategies.split(",") if n]
    stages = network_stages(names)
    seeds = [int(s) for s in ns.seeds.split(",") if s]
    table: dict[tuple[str, int, float], float] = {}
    lines = ["| strategy | minutes | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean | claims reversed |",
             "|---|---|" + "---|" * len(seeds) + "---|---|"]  # fmt: skip
    fronts = {
        (name, seed): fronts_at(folder, name, seed, points)
        for name in names
        for seed in seeds
        if finished(folder, name, seed, points)
    }
    for name in names:
        for minutes in points:
            texts, flips, made = [], 0, 0
            for seed in seeds:
                if (name, seed) not in fronts:
                    texts.append("not run")
                    continue
                front, _, claims = fronts[(name, seed)][minutes]
                hv, missing = judged_front(front, judged, ns.budget, ns.up_to, stages)
                f, m, unjudged = reversed_claims(claims, judged, ns.budget)
                if missing or unjudged:
                    texts.append("not judged")
                    continue
                flips, made = flips + f, made + m
                table[(name, seed, minutes)] = hv
                texts.append(f"{hv:.4f} ({len(inside(front, ns.up_to, stages))})")
            hvs = [table[(name, s, minutes)] for s in seeds if (name, s, minutes) in table]
            mean = f"{statistics.fmean(hvs):.4f}" if len(hvs) == len(seeds) else "-"
            lines.append(f"| {name} | {minutes:g} | " + " | ".join(texts)
                         + f" | {mean} | {flips} of {made} |")  # fmt: skip
    lines += [
        "",
        *paired_lines(table, names, seeds, points),
        "",
        *effort_lines(fronts, folder, names, seeds, max(points)),
        *wide_path_lines(fronts, names, seeds, max(points), stages),
        *cpu_lines(folder, names, seeds, points),
    ]
    which = "" if stages == DEFAULT_STAGES else f" --strategies {ns.strategies}"
    body = [
        f"Command: `python -m bench strategies run{which} --minutes {max(points):g} --seeds "
        f"{ns.seeds}`, `judge --budget {ns.budget} --up-to {ns.up_to}`, `report --up-to "
        f"{ns.up_to}`{' (each with the same --strategies)' if which else ''}. "
        f"Report made on: {machine()} (it only reads; the CPU each seed's cells ran on is listed "
        f"below). Date: {datetime.now(timezone.utc):%Y-%m-%d}.",
        "",
        "Each cell: hypervolume of the search front (designs finished by that minute) with every "
        f"design retrained at {ns.budget}, seed 0, in the box of accuracy 0 to 1 and parameters "
        f"0 to {box(ns.up_to, stages).reference['params']:,.0f} ({ns.up_to} in a network of "
        f"stages {','.join(map(str, stages))}); in brackets, the front's "
        "designs inside it. Only finished cells count.",
        "",
        *lines,
    ]
    publish(SECTION if stages == DEFAULT_STAGES else STAGES_SECTION, body, ns.write)


def wide_path(block) -> str:
    """A block's wide path as the v3 rule names it: removed, 5x5, one 3x3, double 3x3 or
    asymmetric 1xn then nx1."""
    if block.wide == 0:
        return "none"
    if block.wide_kind == "asym":
        return f"asymmetric 1x{block.asym_n}"
    return {"double3x3": "double 3x3"}.get(block.wide_kind, block.wide_kind)


def wide_path_lines(fronts, names, seeds, minutes, stages) -> list[str]:
    """For a per-stage strategy: which wide path its search fronts chose in each stage at
    `minutes` (every seed's front, designs counted once per front): Inception v3's rule says
    asymmetric paths pay on medium grids (12 to 20) and not on early ones."""
    out = []
    for name in names:
        if "--per-stage" not in STRATEGIES.get(name, []):
            continue
        counts = [collections.Counter() for _ in stages]
        n = 0
        for seed in seeds:
            if (name, seed) not in fronts:
                continue
            front, _, _ = fronts[(name, seed)][minutes]
            n += len(front)
            for r in front:
                for i, block in enumerate(r.network.designs):
                    counts[i][wide_path(block)] += 1
        kinds = sorted({k for c in counts for k in c})
        grid = [28 // 2**i for i in range(len(stages))]
        out += [
            f"Wide path per stage on {name}'s search fronts at {minutes:g} minutes ({n} front "
            f"designs over seeds {','.join(map(str, seeds))}; counts, not a verdict):",
            "",
            "| stage (grid) | " + " | ".join(kinds) + " |",
            "|---|" + "---|" * len(kinds),
            *[f"| {i} ({g}x{g}) | " + " | ".join(str(c[k]) for k in kinds) + " |"
              for i, (c, g) in enumerate(zip(counts, grid, strict=True))],
            "",
        ]  # fmt: skip
    return out


def effort_lines(fronts, folder: Path, names, seeds, minutes) -> list[str]:
    """How many search designs each cell finished by `minutes`, with their median parameters:
    what equal wall time bought each strategy (a strategy of larger designs trains fewer)."""
    out = [f"Search designs finished by {minutes:g} minutes, per seed (median parameters):", ""]
    for name in names:
        cells = []
        for seed in seeds:
            if (name, seed) not in fronts:
                cells.append("not run")
                continue
            info = json.loads(done_file(folder, cell_id(name, minutes), seed).read_text())
            cutoff = datetime.fromisoformat(info["start"]) + timedelta(minutes=minutes)
            with open_cell(folder, cell_id(name, minutes), seed) as study:
                ended = {t.number: t.datetime_complete for t in study.get_trials(deepcopy=False)}
                done = [r for r in study_records(study) if r.complete and not r.reference
                        and ended[r.number] is not None and ended[r.number] <= cutoff]  # fmt: skip
            median = statistics.median(r.params for r in done) if done else 0
            cells.append(f"seed {seed}: {len(done)} ({median:,.0f})")
        out.append(f"- {name}: " + ", ".join(cells))
    return [*out, ""]


def cpu_lines(folder: Path, names: list[str], seeds: list[int], points: list[float]) -> list[str]:
    """The CPU each seed's finished cells ran on; a seed whose cells ran on more than one kind is
    said to be unpaired (equal wall time means something else on another CPU)."""
    out = []
    for seed in seeds:
        cpus = sorted({
            json.loads(done_file(folder, cell_id(n, m), seed).read_text())["machine"].split(",")[0]
            for n in names for m in points if done_file(folder, cell_id(n, m), seed).exists()
        })  # fmt: skip
        if len(cpus) > 1:
            out.append(f"- seed {seed}: cells on {' and '.join(cpus)}: NOT paired on one CPU")
        elif cpus:
            out.append(f"- seed {seed}: every cell on the {cpus[0]}")
    return out


def paired_lines(table, names, seeds, points) -> list[str]:
    """Every pair of strategies (random search last in each pair it is in), paired by seed, judged
    by the tool's one rule (`explorer.analysis.verdicts`: a paired t-test over the seeds,
    Holm-corrected across every pair and time point of this report)."""
    out, family, heads = [], [], []
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    for a, b in [(b, a) if a == BASELINE else (a, b) for a, b in pairs]:
        for minutes in points:
            diffs = [table[(a, s, minutes)] - table[(b, s, minutes)] for s in seeds
                     if (a, s, minutes) in table and (b, s, minutes) in table]  # fmt: skip
            if len(diffs) < 2:
                out.append(f"- {a} - {b} at {minutes:g} min: {len(diffs)} paired seeds, too few")
                continue
            family.append(compare(diffs))
            heads.append(f"- {a} - {b} at {minutes:g} min")
    judged = holm(family)
    if judged:
        out.insert(0, f"Differences of retrained hypervolume, paired by seed; {RULE} "
                      f"(here Holm over the {len(judged)} comparisons below).")  # fmt: skip
    out += [f"{head}: {v.text()}" for head, v in zip(heads, judged)]
    return out


def mode_claims(ns: argparse.Namespace) -> None:
    """For each finished cell of a verifying strategy: every claim its search made against v1/v2,
    with the claimant's margin over the reference in the search (validation accuracy), in its
    verification and in the judge's retraining (test accuracy; "-" where not run)."""
    folder = Path(ns.dir)
    judged = Judged(folder / "judged.json")
    print("| cell | trial | params | against | search | verification | judge |")
    print("|---|---|---|---|---|---|---|")
    for name, seed in cells(ns):
        for minutes in [float(p) for p in ns.points.split(",")]:
            cell = cell_id(name, minutes)
            if not done_file(folder, cell, seed).exists():
                continue
            with open_cell(folder, cell, seed) as study:
                checks = verified_claims(study, study_config(study))
            for c in checks:
                mine, theirs = (judged.get(r.network, ns.budget) for r in (c.design, c.reference))
                again = f"{mine['test'] - theirs['test']:+.3f}" if mine and theirs else "-"
                check = "-" if c.holds is None else f"{c.design_acc - c.reference_acc:+.3f}"
                print(f"| {cell} s{seed} | #{c.design.number} | {c.design.params:,} | "
                      f"{c.reference.reference} | {c.design.val_acc - c.reference.val_acc:+.3f} | "
                      f"{check} | {again} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    modes = {"run": mode_run, "judge": mode_judge, "report": mode_report, "claims": mode_claims}
    modes[ns.mode](ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
