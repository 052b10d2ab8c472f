"""What the bench scripts share: the machine they ran on, and writing their results into a section
of BENCHMARKS.md (or another markdown file). A library, not a command: the scripts beside it
import it (a script run as ``python bench/X.py`` has bench/ first on ``sys.path``)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

from explorer.training import cpu_name

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"

# The 1-minute load average when the benchmark started (this module is imported at its start),
# before its own work loads the machine.
LOAD_AT_START = os.getloadavg()[0]


def machine(threads: bool = False) -> str:
    """The machine in one line: CPU, cores, Python and torch, and the load average at the start;
    with `threads`, also this process's torch threads (for scripts that train in this process)."""
    torch_threads = f", {torch.get_num_threads()} torch thread(s)" if threads else ""
    return (
        f"{cpu_name()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}{torch_threads}, load average {LOAD_AT_START:.2f} at the start"
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

    ``load_start`` is the 1-minute load average before the benchmark's own work: the machine
    counts as shared (and the figures as a lower bound) when it was already half busy then.
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
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Load average: {start}{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} when written "
        f"(1/5/15 min, the benchmark's own runs included)"
        + (" - other work shared this machine; re-run on a quiet one to compare" if busy else ""),
    ]


def write_section(title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the ``## title`` section of BENCHMARKS.md, leaving the others alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head = f"## {title}\n"
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + head + body.rstrip() + "\n" + (text[nxt:] if nxt != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + head + body.rstrip() + "\n"
    path.write_text(text)


def update_section(path: Path, heading: str, body: str) -> None:
    """Replace the ``## heading`` section of a markdown file (or add it), keeping all others; unlike
    `write_section`, a blank line follows the heading (the layout of the sections it writes)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    title = f"## {heading}"
    new = [title, "", *body.rstrip("\n").split("\n")]
    if title in lines:
        start = lines.index(title)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = new + ([""] if end < len(lines) else [])
    else:
        lines += ["", *new]
    path.write_text("\n".join(lines) + "\n")
