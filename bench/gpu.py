"""The GPU measurement of issues 18 and 44, in one go: whether the GPU path works and how fast the
trainer and the search run on one GPU.

Runs the tests marked ``gpu`` (the CUDA graph capture among them); measures the bf16 and TF32
matmul peaks; `explorer.training`'s images/s and achieved FLOP/s (MFU against the bf16 peak) on
v1, v2 and two designs of the search space at the ``standard`` budget's batch, eager and with the
training step captured in a CUDA graph (`train(cuda_graph=True)`, off by default until this has
measured it), with how far the graphed curves drifted from the eager ones; and a 24-trial
``standard`` search with 1, 2, 4 and 8 workers per GPU (trials per minute), which picks
``--workers-per-gpu``. Optional steps: torch.compile and one whole ``standard`` trial (both
measured on 2026-12-04, BENCHMARKS.md "GPU", so skipped unless asked for). Each step runs in its own
process under its own time cap, so a step that fails or overruns is reported and the others still
run; the results file is rewritten after every step. FLOPs are 2 x multiply-adds per image, a
training step 3 x the forward (see explorer.training.metrics).

    bash bench/gpu.sh                      # on a GPU machine: under 9.5 minutes, writes
                                           # bench/gpu-results.md (a "## GPU" section to paste)
                                           # and bench/gpu-tests.log beside it
    python -m bench gpu --dry-run          # tiny sizes on the CPU, no tests, no searches
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from explorer.training import (
    BUDGETS,
    TRAIN_FLOPS_PER_FORWARD,
    DataError,
    configure_backend,
    count_flops,
    device_info,
    find_dataset,
    load_dataset,
    train,
)
from search_space import REFERENCES, BlockConfig, NetworkConfig, build_network, config_from_trial

from ._common import BENCH, ROOT, matmul_peak, stamp, write_section

SECTION = "GPU"
DEFAULT_OUTPUT = BENCH / "gpu-results.md"
TESTS_LOG = "gpu-tests.log"  # beside the results file
WORKERS_PER_GPU = (1, 2, 4, 8)
SEARCH_TRIALS = 24
# Seconds each step may take, process start-up included. The default steps add up to 520 s, so
# the whole run stays under 9.5 minutes (bench/gpu.sh adds a hard stop at 560 s), inside a
# 10-minute device call; compile and trial (skipped by default) would add 135 s.
CAPS = {
    "env": 20,
    "tests": 150,
    "peaks": 20,
    "trainer": 50,
    "graphs": 50,
    "compile": 75,
    "trial": 60,
    **{f"search{k}": 55 for k in WORKERS_PER_GPU},
}
DEFAULT_SKIP = "compile,trial"  # measured on 2026-12-04 (BENCHMARKS.md, "GPU")
GPU_TESTS = ("tests/test_gpu.py", "tests/test_graph_step.py", "tests/test_metrics.py")
# v1, v2 and two designs the search space proposes (a wide one of 227k parameters and a narrow
# one of 26k at the default width, against v1's 48k and v2's 66k).
NETS = ("v1", "v2", "s0", "s1")
TIMED_STEPS = 120  # training steps per epoch in the trainer steps (two epochs, the last timed)
# A dry run's training: two epochs of two steps, on narrow networks, enough to run every line.
DRY_RUN = dict(
    batch_size=8, epochs=2, train_images=16, val_images=16, final_val_images=16, bn_stats_images=8
)


@dataclasses.dataclass(frozen=True)
class Context:
    """What every step needs: the device, the data folder, and whether this is a dry run."""

    device: str
    data_dir: str | None
    dry_run: bool
    deterministic: bool = False


# --- data ---------------------------------------------------------------------------------------


def _write_idx(path: Path, array: torch.Tensor) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


def synthetic_fmnist(folder: Path, train: int = 60000, test: int = 10000) -> Path:
    """Random images in Fashion-MNIST's four files: throughput does not depend on what the
    pixels show (accuracy and pruning do, so a search on them only times the machinery)."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", train), ("t10k", test)):
        _write_idx(
            folder / f"{prefix}-images-idx3-ubyte.gz",
            torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8),
        )
        _write_idx(
            folder / f"{prefix}-labels-idx1-ubyte.gz",
            torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8),
        )
    return folder


def resolve_data_dir(data_dir: str | None, tmp: Path, dry_run: bool) -> tuple[str, str]:
    """(folder, what it is): the real Fashion-MNIST where it can be found (no download), else
    random images in its format."""
    if not dry_run:
        try:
            return str(find_dataset("fashion-mnist", data_dir, download=False)), "Fashion-MNIST"
        except DataError:
            pass
    size = (600, 100) if dry_run else (60000, 10000)
    folder = synthetic_fmnist(tmp / "synthetic-fmnist", *size)
    return str(folder), f"random images in Fashion-MNIST's format ({size[0]:,} train)"


def _data(ctx: Context):
    val = 100 if ctx.dry_run else 5000
    return load_dataset("fashion-mnist", data_dir=ctx.data_dir, val_size=val, download=False)


def search_design(seed: int) -> BlockConfig:
    """The design a seeded random sampler draws first from the search space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return config_from_trial(study.ask())


def _net(ctx: Context, name: str) -> NetworkConfig:
    """A network of `NETS` (v1, v2, or sN: `search_design(N)`) at the search's default width
    (half of it in a dry run)."""
    block = REFERENCES[name] if name in REFERENCES else search_design(int(name[1:]))
    return NetworkConfig(block=block, **({"width": 0.125} if ctx.dry_run else {}))


def _trainer_config(ctx: Context):
    """The standard budget's step (batch, optimizer, augmentation) over two short epochs."""
    base = BUDGETS["standard"]
    if ctx.dry_run:
        return dataclasses.replace(base, **DRY_RUN)
    return dataclasses.replace(
        base,
        epochs=2,
        train_images=TIMED_STEPS * base.batch_size,
        val_images=512,
        final_val_images=512,
    )


# --- steps: each returns a JSON-safe dict --------------------------------------------------------


def step_env(ctx: Context) -> dict[str, Any]:
    backend = configure_backend(ctx.device, ctx.deterministic)
    return {
        "device": device_info(ctx.device),
        "backend": backend,
        "python": platform.python_version(),
        "cuda_mps": bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY"))
        or Path("/tmp/nvidia-mps").exists(),
    }


def step_peaks(ctx: Context) -> dict[str, Any]:
    configure_backend(ctx.device, ctx.deterministic)
    device = torch.device(ctx.device)
    sizes, seconds = ((128, 256), 0.1) if ctx.dry_run else ((4096, 8192), 2.0)
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("tf32", torch.float32)):
        if device.type != "cuda" and name == "bf16" and ctx.dry_run:
            dtype = torch.float32  # a CPU's bf16 matmul is emulated and slow; the code path counts
        flops, n = matmul_peak(device, dtype, sizes, seconds)
        out[name] = {"flops": flops, "n": n}
    return out


def trainer_rates(
    ctx: Context, compile_model: bool = False, cuda_graph: bool = False, nets=NETS
) -> dict[str, Any]:
    """images/s of `explorer.training.train`'s last epoch per network, and its curves."""
    configure_backend(ctx.device, ctx.deterministic)
    data = _data(ctx).on(ctx.device)
    config = _trainer_config(ctx)
    out = {}
    for name in nets:
        torch.manual_seed(0)
        model = build_network(_net(ctx, name))
        fwd = count_flops(model, data.input_shape)
        if compile_model:
            model = torch.compile(model)
        result = train(model, data, config, ctx.device, cuda_graph=cuda_graph)
        images = result.images_seen // config.epochs
        out[name] = {
            "images_per_s": images / result.epoch_train_s[-1],
            "first_epoch_s": result.epoch_time_s[0],
            "fwd_flops": fwd,
            "batch": config.batch_size,
            "step_ms": 1000 * result.epoch_train_s[-1] / (images // config.batch_size),
            "steps": images // config.batch_size,
            "peak_memory_bytes": result.peak_memory_bytes,
            "cuda_graph": result.cuda_graph,
            "graph_fallback": result.graph_fallback,
            "train_loss": result.train_loss,
            "val_acc": result.val_acc,
        }
    return out


def step_trainer(ctx: Context) -> dict[str, Any]:
    return trainer_rates(ctx)


def step_graphs(ctx: Context) -> dict[str, Any]:
    """The trainer with its step captured in a CUDA graph (on a CPU, a dry run: eager)."""
    return trainer_rates(ctx, cuda_graph=True)


def step_compile(ctx: Context) -> dict[str, Any]:
    # v1 only: compiling every network (training and evaluation graphs) would not fit its cap.
    return trainer_rates(ctx, compile_model=True, nets=("v1",))


def step_tests(output: Path, cap_s: float) -> dict[str, Any]:
    """The tests marked ``gpu`` in a fresh process, their whole log written beside `output`."""
    log = output.with_name(TESTS_LOG)
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    try:
        proc = subprocess.run(
            [*command, *GPU_TESTS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=cap_s,
            check=False,
        )
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        text, rc = f"{exc.stdout or ''}{exc.stderr or ''}", None
        text = text.decode() if isinstance(text, bytes) else text
    log.write_text(text)
    lines = text.strip().splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if " in " in line), "no summary")
    return {
        "command": " ".join(["python", *command[1:], *GPU_TESTS]),
        "rc": rc,
        "summary": summary if rc is not None else f"stopped at its {cap_s:.0f} s cap",
        "failed": [line for line in lines if line.startswith(("FAILED", "ERROR"))][:20],
        "log": str(log.relative_to(ROOT) if log.is_relative_to(ROOT) else log),
    }


def step_trial(ctx: Context, cap_s: float) -> dict[str, Any]:
    """One v1 trial on the whole ``standard`` budget, stopped (and extrapolated) past `cap_s`."""
    configure_backend(ctx.device, ctx.deterministic)
    start = time.perf_counter()
    data = _data(ctx).on(ctx.device)
    config = BUDGETS["standard"]
    if ctx.dry_run:
        config = dataclasses.replace(config, **DRY_RUN)
    deadline = start + cap_s

    class _Stop(Exception):
        pass

    def stop_late(epoch, partial) -> None:
        if epoch < config.epochs and time.perf_counter() + partial.epoch_time_s[-1] > deadline:
            raise _Stop

    torch.manual_seed(0)
    model = build_network(_net(ctx, "v1"))
    holder: dict[str, Any] = {}

    def keep(epoch, partial) -> None:
        holder["result"] = partial
        stop_late(epoch, partial)

    try:
        train(model, data, config, ctx.device, epoch_callback=keep)
        done = True
    except _Stop:
        done = False
    result = holder["result"]
    per_epoch = sum(result.epoch_time_s) / len(result.epoch)
    return {
        "network": "v1",
        "epochs_run": len(result.epoch),
        "epochs": config.epochs,
        "finished": done,
        "wall_s": result.wall_time_s,
        "projected_s": result.wall_time_s + per_epoch * (config.epochs - len(result.epoch)),
        "val_acc": result.val_acc[-1],
        "images_per_s": result.images_per_s,
        "peak_memory_bytes": result.peak_memory_bytes,
    }


def step_search(ctx: Context, k: int, cap_s: float, tmp: Path, trials: int) -> dict[str, Any]:
    """A fresh ``standard`` search with `k` workers per GPU, stopped at `cap_s`; trials per
    minute from the storage's own timestamps (overall, and between the first and last finished
    trial, which leaves out the workers' start-up)."""
    import optuna

    from explorer.store import open_storage, study_names

    journal = tmp / f"search-k{k}" / "explorer.journal"
    journal.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "explorer.search",
        "--workers-per-gpu",
        str(k),
        "--trials",
        str(trials),
        "--budget",
        "standard",
        "--storage",
        str(journal),
        "--quiet",
    ]
    if ctx.data_dir:
        command += ["--data-dir", ctx.data_dir]
    start = time.time()
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its worker processes can be stopped with it
    )
    try:
        output, _ = proc.communicate(timeout=cap_s)
        stopped = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        stopped = True
    wall = time.time() - start
    row: dict[str, Any] = {
        "k": k,
        "command": " ".join(command[1:]),
        "wall_s": wall,
        "stopped_at_cap": stopped,
        "rc": proc.returncode,
    }
    if proc.returncode not in (0, None) and not stopped:
        row["error"] = (output or "").strip().splitlines()[-1:] or ["no output"]
        row["error"] = row["error"][0][:300]
        return row
    if not journal.exists():
        row["error"] = "no journal written"
        return row
    # Every training counts: a rung search keeps its lower rungs in studies of their own.
    store = open_storage(str(journal), create=False)
    every_trial = [
        t
        for name in study_names(store, rungs=True)
        for t in optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)
    ]
    finished = [
        t
        for t in every_trial
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    ends = sorted(t.datetime_complete.timestamp() for t in finished)
    row.update(
        finished=len(finished),
        complete=sum(t.state == optuna.trial.TrialState.COMPLETE for t in finished),
        failed=sum(t.state == optuna.trial.TrialState.FAIL for t in every_trial),
        trials_per_min=60 * len(finished) / wall,
        steady_trials_per_min=(
            60 * (len(ends) - 1) / (ends[-1] - ends[0])
            if len(ends) > 2 and ends[-1] > ends[0]
            else None
        ),
    )
    return row


IN_PROCESS = {
    "env": step_env,
    "peaks": step_peaks,
    "trainer": step_trainer,
    "graphs": step_graphs,
    "compile": step_compile,
}


# --- the report ---------------------------------------------------------------------------------


def _fmt_bytes(n: int | None) -> str:
    return "-" if not n else f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _failed(results: dict[str, Any], name: str) -> str | None:
    """Why step `name` has no figures ("not run", or its error), or None when it has them."""
    r = results.get(name)
    if r is None:
        return "not run"
    return r.get("error") if isinstance(r, dict) and "error" in r and len(r) <= 3 else None


def _env_lines(results: dict[str, Any]) -> list[str]:
    """The device, the software and the backend, and the matmul peaks."""
    lines = []
    env = results.get("env")
    if env and "device" in env:
        d = env["device"]
        if d["type"] == "cuda":
            lines.append(
                f"- GPU: {d['name']} ({_fmt_bytes(d['memory_bytes'])}, compute {d['capability']}, "
                f"{d['multiprocessors']} SMs); CUDA {d['cuda']}, cuDNN {d['cudnn']}, driver "
                f"{d['driver']}; CUDA MPS {'running' if env['cuda_mps'] else 'not running'}"
            )
        else:
            lines.append(f"- Device: {d['type']}, {d.get('name')} ({d.get('threads')} threads)")
        lines.append(f"- Software: Python {env['python']}, torch {d['torch']}")
        lines.append(
            "- Backend: "
            + ", ".join(f"{k} {v}" for k, v in env["backend"].items() if v is not None)
        )
    elif _failed(results, "env"):
        lines.append(f"- Environment: {_failed(results, 'env')}")
    peaks = results.get("peaks") or {}
    if peaks.get("bf16", {}).get("flops"):
        lines.append(
            f"- Matmul peaks: bf16 {peaks['bf16']['flops'] / 1e12:.1f} TFLOP/s "
            f"(n = {peaks['bf16']['n']}), "
            f"TF32 {peaks['tf32']['flops'] / 1e12:.1f} TFLOP/s (n = {peaks['tf32']['n']})"
        )
    elif _failed(results, "peaks"):
        lines.append(f"- Matmul peaks: {_failed(results, 'peaks')}")
    return lines


def _trainer_lines(results: dict[str, Any]) -> list[str]:
    """The trainer's table: eager, with its step in a CUDA graph, and under torch.compile."""
    bf16 = ((results.get("peaks") or {}).get("bf16") or {}).get("flops")
    rows = [row for step in ("trainer", "graphs") for row in (results.get(step) or {}).values()]
    steps = rows[0].get("steps", TIMED_STEPS) if rows and isinstance(rows[0], dict) else TIMED_STEPS
    lines = [
        "",
        f"Trainer at the `standard` batch, last of two epochs of {steps} steps (s0 and s1: "
        "the first designs random samplers seeded 0 and 1 draw from the search space; training "
        f"FLOPs = {TRAIN_FLOPS_PER_FORWARD} x forward; MFU against the bf16 peak):",
        "",
        "| network | mode | images/s | ms per step | first epoch s | achieved TFLOP/s | MFU "
        "| peak memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step, mode in (
        ("trainer", "eager"),
        ("graphs", "CUDA graph"),
        ("compile", "torch.compile"),
    ):
        r = results.get(step) or {}
        if _failed(results, step):
            lines.append(f"| - | {mode} | {_failed(results, step)} | | | | | |")
            continue
        for ref, row in r.items():
            achieved = row["images_per_s"] * TRAIN_FLOPS_PER_FORWARD * row["fwd_flops"]
            mfu = f"{achieved / bf16:.2%}" if bf16 else "-"
            lines.append(
                f"| {ref} | {mode} | {row['images_per_s']:,.0f} | {row['step_ms']:.2f} | "
                f"{row['first_epoch_s']:.1f} | {achieved / 1e12:.3f} | {mfu} | "
                f"{_fmt_bytes(row['peak_memory_bytes'])} |"
            )
    return lines


def _graph_and_trial_lines(results: dict[str, Any]) -> list[str]:
    """Eager against a CUDA graph, and the one ``standard`` trial."""
    lines = [
        "",
        "The trainer eager against the same trainer with its step captured in a CUDA graph "
        "(same seed; drift: the largest difference of a per-epoch training loss, relative, and "
        "of a validation accuracy):",
        "",
        "| network | eager images/s | graphed images/s | ratio | captured | train loss drift "
        "| val acc drift |",
        "|---|---|---|---|---|---|---|",
    ]
    eager, graphed = results.get("trainer") or {}, results.get("graphs") or {}
    for step in ("trainer", "graphs"):
        if _failed(results, step):
            lines.append(f"| - | {step}: {_failed(results, step)} | | | | | |")
    both = not _failed(results, "trainer") and not _failed(results, "graphs")
    for name in [n for n in graphed if n in eager] if both else []:
        e, g = eager[name], graphed[name]
        loss_drift = max(abs(a - b) / abs(b) for a, b in zip(g["train_loss"], e["train_loss"]))
        acc_drift = max(abs(a - b) for a, b in zip(g["val_acc"], e["val_acc"]))
        captured = "yes" if g["cuda_graph"] else f"no ({g['graph_fallback'] or 'not on CUDA'})"
        lines.append(
            f"| {name} | {e['images_per_s']:,.0f} | {g['images_per_s']:,.0f} | "
            f"{g['images_per_s'] / e['images_per_s']:.2f}x | {captured} | {loss_drift:.1e} | "
            f"{acc_drift:.3f} |"
        )
    t = results.get("trial")
    lines.append("")
    if t and "wall_s" in t:
        how = (
            f"{t['wall_s']:.1f} s"
            if t["finished"]
            else f"{t['projected_s']:.0f} s projected from {t['epochs_run']} of {t['epochs']} "
            f"epochs ({t['wall_s']:.1f} s)"
        )
        lines.append(
            f"One `standard` trial ({t['network']}): {how}; validation accuracy "
            f"{t['val_acc']:.3f}, {t['images_per_s']:,.0f} training images/s, peak memory "
            f"{_fmt_bytes(t['peak_memory_bytes'])}."
        )
    else:
        lines.append(f"One `standard` trial: {_failed(results, 'trial') or 'not run'}.")
    return lines


def _search_lines(results: dict[str, Any]) -> list[str]:
    """The searches per workers-per-GPU count, and the default 100-trial search if it ran."""
    lines = [
        "",
        f"A {SEARCH_TRIALS}-trial `standard` search per workers-per-GPU count, each stopped at "
        f"its cap (finished = complete or pruned, references included; steady = between the "
        f"first and last finished trial):",
        "",
        "| workers per GPU | wall s | stopped at cap | finished (complete) | failed | trials/min "
        "| steady trials/min |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in WORKERS_PER_GPU:
        r = results.get(f"search{k}")
        if r is None:
            lines.append(f"| {k} | not run | | | | | |")
        elif "finished" not in r:
            lines.append(f"| {k} | {r.get('error', 'failed')} | | | | | |")
        else:
            steady = r["steady_trials_per_min"]
            lines.append(
                f"| {k} | {r['wall_s']:.0f} | {r['stopped_at_cap']} | {r['finished']} "
                f"({r['complete']}) | {r['failed']} | {r['trials_per_min']:.1f} | "
                f"{'-' if steady is None else f'{steady:.1f}'} |"
            )
    full = results.get("search_full")
    if full:
        lines += [
            "",
            f"The default 100-trial search: {full.get('wall_s', 0):.0f} s"
            + (" (stopped at its cap)" if full.get("stopped_at_cap") else "")
            + (f", {full['finished']} trials finished" if "finished" in full else "")
            + (f"; {full['error']}" if "error" in full else ""),
        ]
    return lines


def _tests_lines(results: dict[str, Any]) -> list[str]:
    """What the tests marked ``gpu`` said, and where their log is."""
    t = results.get("tests")
    if t is None:
        return []
    if "summary" not in t:
        return [f"- Tests marked `gpu`: {t.get('error', 'failed')}"]
    lines = [f"- Tests marked `gpu` (`{t['command']}`): {t['summary']}; log in `{t['log']}`"]
    return lines + [f"  - {line}" for line in t["failed"]]


def render(results: dict[str, Any], command: str, data_note: str, started: str) -> str:
    """The results section as markdown; a step that failed or has not run says so."""
    lines = [f"Command: `{command}`", "", f"- Date: {started}", f"- Data: {data_note}"]
    lines += _env_lines(results)
    lines += _tests_lines(results)
    lines += _trainer_lines(results)
    lines += _graph_and_trial_lines(results)
    lines += _search_lines(results)
    return "\n".join(lines) + "\n"


# --- running the steps --------------------------------------------------------------------------


def run_in_child(name: str, ctx: Context, cap_s: float) -> dict[str, Any]:
    """Run one step in a fresh process (its own CUDA context and backend state) under a cap."""
    command = [sys.executable, "-m", "bench", "gpu", "--step", name]
    command += ["--data-dir", ctx.data_dir] if ctx.data_dir else []
    command += ["--deterministic"] if ctx.deterministic else []
    command += ["--cap", str(cap_s)]
    try:
        proc = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=cap_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped at its {cap_s:.0f} s cap"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:300]}"}


def run_step(name: str, ctx: Context, cap_s: float) -> dict[str, Any]:
    """One step in this process (the child's side of `run_in_child`, and the dry run)."""
    if name == "trial":
        return step_trial(ctx, cap_s)
    return IN_PROCESS[name](ctx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny sizes on the CPU, in this process, without the tests and the searches: "
        "checks the code",
    )
    parser.add_argument(
        "--output",
        default=None,
        help=f"file whose '## {SECTION}' section is rewritten (default: {DEFAULT_OUTPUT.relative_to(ROOT)}; "
        "a dry run writes nothing unless given one)",
    )
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST files")
    parser.add_argument(
        "--skip",
        default=DEFAULT_SKIP,
        help="comma-separated steps to leave out, from: "
        + ", ".join([*CAPS, "searches"])
        + f" (default: {DEFAULT_SKIP}, measured on 2026-12-04; --skip '' runs every step)",
    )
    parser.add_argument(
        "--search-cap",
        type=float,
        default=CAPS["search1"],
        help=f"seconds each search may run (default: {CAPS['search1']})",
    )
    parser.add_argument(
        "--full-search",
        type=float,
        default=None,
        metavar="CAP_S",
        help="also time the default 100-trial search, stopped after CAP_S seconds (off by "
        "default: it does not fit in bench/gpu.sh's 9.5 minutes)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="measure under configure_backend(deterministic=True) (slower; for comparison)",
    )
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # a child's one step
    parser.add_argument("--cap", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.step is not None:  # a child process: one step, one JSON line
        ctx = Context("cuda", args.data_dir, False, args.deterministic)
        print(json.dumps(run_step(args.step, ctx, args.cap)), flush=True)
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "python -m bench gpu: no CUDA device (torch sees none); use --dry-run", file=sys.stderr
        )
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if "searches" in skip:
        skip |= {f"search{k}" for k in WORKERS_PER_GPU}
    unknown = skip - set(CAPS) - {"searches"}
    if unknown:
        print(
            f"python -m bench gpu: unknown step(s) in --skip: {', '.join(sorted(unknown))}",
            file=sys.stderr,
        )
        return 2
    output = Path(args.output) if args.output else (None if args.dry_run else DEFAULT_OUTPUT)
    command = "bash bench/gpu.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    started = stamp()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir, data_note = resolve_data_dir(args.data_dir, tmp, args.dry_run)
        ctx = Context("cpu" if args.dry_run else "cuda", data_dir, args.dry_run, args.deterministic)

        def write() -> None:
            if output is not None:
                write_section(SECTION, render(results, command.strip(), data_note, started), output)

        for name, cap in CAPS.items():
            if name in skip or (args.dry_run and name.startswith(("search", "tests"))):
                continue
            t0 = time.perf_counter()
            if name.startswith("search"):
                k = int(name.removeprefix("search"))
                results[name] = step_search(ctx, k, args.search_cap, tmp, SEARCH_TRIALS)
                if "unrecognized arguments" in str(results[name].get("error", "")):
                    print(f"{name}: {results[name]['error']} - skipping the searches", flush=True)
                    break
            elif name == "tests":
                results[name] = step_tests(output, cap)
            elif args.dry_run:
                results[name] = run_step(name, ctx, cap)
            else:
                results[name] = run_in_child(name, ctx, cap)
            print(f"{name}: {time.perf_counter() - t0:.1f} s  {json.dumps(results[name])[:400]}")
            write()
        if args.full_search and not args.dry_run:
            results["search_full"] = step_search(ctx, 4, args.full_search, tmp, 100)
            write()
    print(render(results, command.strip(), data_note, started))
    if output is not None:
        print(f"wrote the '## {SECTION}' section of {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
