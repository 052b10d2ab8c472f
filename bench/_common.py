"""What the benches share: the machine they ran on, timing, the BENCHMARKS.md sections they write
(each naming the command that rewrites it), and the state a long bench resumes from.

Benches import it as ``from ._common import ...``; none keeps its own copy of these.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from explorer.training import cpu_name, synchronize

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
# Where a bench keeps what it resumes from (one folder per bench, committed where a later session
# goes on from it: bench/results/strategies).
RESULTS = BENCH / "results"

# The 1-minute load average when the bench started (this module is imported at its start),
# before its own work loads the machine.
LOAD_AT_START = os.getloadavg()[0]


# --- the machine ---------------------------------------------------------------------------------


def gpu_name() -> str | None:
    """The first CUDA device's name, or None where torch sees none."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine(threads: bool = False) -> str:
    """The machine in one line: CPU, cores, the GPU if any, Python and torch, and the load average
    at the start; with `threads`, also this process's torch threads (for benches that train in
    this process)."""
    gpu = gpu_name()
    torch_threads = f", {torch.get_num_threads()} torch thread(s)" if threads else ""
    return (
        f"{cpu_name()}, {os.cpu_count()} CPU cores{f', {gpu}' if gpu else ''}, "
        f"Python {platform.python_version()}, torch {torch.__version__}{torch_threads}, "
        f"load average {LOAD_AT_START:.2f} at the start"
    )


def set_threads(threads: int | None) -> int:
    """Set torch's CPU thread count (None keeps its choice) and return the count in force."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def environment_lines(
    device: torch.device, threads: int, load_start: float | None = None
) -> list[str]:
    """Machine, software, date and load average, as markdown lines.

    ``load_start`` is the 1-minute load average before the bench's own work: the machine counts
    as shared (and the figures as a lower bound) when it was already half busy then.
    """
    if device.type == "cuda":
        name = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        name = f"{cpu_name()}, {os.cpu_count()} logical CPUs"
    load = os.getloadavg()
    busy = load_start is None or load_start > 0.5 * (os.cpu_count() or 1)
    start = "" if load_start is None else f"{load_start:.2f} at the start (1 min), "
    return [
        f"- Machine: {name}; device `{device}`, {threads} torch threads",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}",
        f"- Date: {stamp()}",
        f"- Load average: {start}{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} when written "
        f"(1/5/15 min, the bench's own runs included)"
        + (" - other work shared this machine; re-run on a quiet one to compare" if busy else ""),
    ]


def stamp() -> str:
    """Now, to the minute, in the machine's time zone."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


# --- timing --------------------------------------------------------------------------------------


def timed(fn, *args, device: torch.device | str = "cpu", **kwargs) -> tuple[Any, float]:
    """(fn's result, its wall seconds), the device's queued work waited for on both sides."""
    synchronize(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    synchronize(device)
    return out, time.perf_counter() - start


def _matmuls(a: torch.Tensor, b: torch.Tensor, times: int) -> None:
    for _ in range(times):
        torch.mm(a, b)


def matmul_peak(
    device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...], seconds: float
) -> tuple[float, int]:
    """(best FLOP/s, at size n) of n x n matmuls; 2 n^3 FLOPs each."""
    best, best_n = 0.0, sizes[0]
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            _, took = timed(_matmuls, a, b, 4, device=device)
            if 4 * 2 * n**3 / took > best:
                best, best_n = 4 * 2 * n**3 / took, n
    return best, best_n


# --- BENCHMARKS.md sections ----------------------------------------------------------------------


def command(name: str, argv: Sequence[str] | None = None) -> str:
    """The command line that runs bench `name` with `argv` (this process's arguments if None)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m bench", name, *([shlex.join(args)] if args else [])])


def add_run_args(parser: argparse.ArgumentParser, section: str, quick: str) -> None:
    """The flags of a bench that trains here and rewrites one section: --device, --data-dir,
    --quick (a sanity run: `quick`, nothing written), --output and --no-write."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST files")
    parser.add_argument(
        "--quick", action="store_true", help=f"a sanity run: {quick}, nothing written"
    )
    parser.add_argument(
        "--output",
        default=str(BENCHMARKS.relative_to(ROOT)),
        help=f"the file whose '{section}' section is rewritten (default: %(default)s)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")


def provenance(command_line: str) -> str:
    """A section's first line: the command that rewrites it, the machine and the date."""
    return f"Command: `{command_line}`. Machine: {machine()}. Date: {stamp()}."


def names_its_command(body: str) -> bool:
    """Whether a section's text names a bench command (`python -m bench NAME`, or the GPU run's
    `bash bench/gpu.sh`) in inline code, so a reader knows what rewrites it."""
    return "`python -m bench " in body or "`bash bench/gpu.sh" in body


def write_section(title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the ``## title`` section of a markdown file (BENCHMARKS.md unless told), or add it,
    leaving every other section alone. The body must name the command that rewrites it."""
    if not names_its_command(body):
        raise ValueError(f"section {title!r} does not name the `python -m bench` command behind it")
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    head = f"## {title}"
    new = [head, "", *body.strip("\n").split("\n")]
    if head in lines:
        start = lines.index(head)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
        lines[start : end or len(lines)] = new + ([""] if end else [])
    else:
        lines += ["", *new]
    path.write_text("\n".join(lines) + "\n")


def publish(title: str, lines: list[str], write: bool = True, path: Path = BENCHMARKS) -> None:
    """Print a section's lines, and with `write` make them the ``## title`` section of `path`."""
    print("\n".join(lines))
    if write:
        write_section(title, "\n".join(lines), path)


# --- resumable state -----------------------------------------------------------------------------


def results_dir(name: str) -> Path:
    """bench/results/NAME, the folder bench `name` keeps its resumable state in."""
    return RESULTS / name


class JsonState:
    """A bench's resumable state: finished work by key, in one JSON file. Several processes may
    share it: each `put` re-reads the file under a lock, adds its entry and replaces the file
    whole, so none loses another's entries and a killed run leaves the last complete file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._data: dict[str, Any] = {}
        self._stamp: int | None = None

    def _read(self) -> dict[str, Any]:
        try:
            stamp_ns = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return self._data
        if stamp_ns != self._stamp:  # another process (or run) wrote it since
            self._data, self._stamp = json.loads(self.path.read_text()), stamp_ns
        return self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._read().get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._stamp = None  # read it again under the lock
            data = dict(self._read())
            data[key] = value
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
            os.replace(tmp, self.path)
            self._data, self._stamp = data, self.path.stat().st_mtime_ns
