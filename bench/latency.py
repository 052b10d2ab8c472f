"""How noisy ``latency_ms`` is as the search measures it: the same design timed again and again,
alone and while sibling workers train on the same cores.

    python -m bench latency                     # v1 and v2, 15 timings each, 0 and 1 siblings
    python -m bench latency --siblings 0 1 --repeats 15 --write

A trial times its design at batch 1 with `explorer.training.measure_latency` (7 repeats within
0.3 s, the median) right before it trains, while the other workers of the machine train their own
designs. This script times each reference design the same way `--repeats` times with 0, 1, ...
sibling processes training a network at the smoke budget (one torch thread each, as the search's
workers), and reports the median and the spread (the 5-95% range relative to the median).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import date

import torch

from explorer.training import load_dataset, measure_latency
from search_space import REFERENCES, NetworkConfig, build_network

from ._common import machine, write_section

SECTION = "Latency noise"

SIBLING = """
import torch
from explorer.training import BUDGETS, load_dataset, train
from search_space import REFERENCES, NetworkConfig, build_network
torch.set_num_threads(1)
data = load_dataset("fashion-mnist").on("cpu")
net = NetworkConfig(block=REFERENCES["v2"], in_channels=1, num_classes=10, image_size=28)
while True:
    train(build_network(net), data, BUDGETS["smoke"], "cpu")
"""


def timings(name: str, repeats: int) -> list[float]:
    net = NetworkConfig(block=REFERENCES[name], in_channels=1, num_classes=10, image_size=28)
    model = build_network(net).eval()
    out = []
    for _ in range(repeats):
        out.append(measure_latency(model, (1, 28, 28), 1, torch.device("cpu"), repeats=7,
                                   budget_s=0.3))  # fmt: skip
        time.sleep(0.2)
    return out


def spread(values: list[float]) -> tuple[float, float]:
    """(median, 5-95% range / median)."""
    ordered = sorted(values)
    low = ordered[round(0.05 * (len(ordered) - 1))]
    high = ordered[round(0.95 * (len(ordered) - 1))]
    median = statistics.median(ordered)
    return median, (high - low) / median


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--siblings", type=int, nargs="+", default=(0, 1))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = p.parse_args()
    torch.set_num_threads(1)
    load_dataset("fashion-mnist")  # fail early, with one line, where the data is missing
    lines = [f"{machine()}; {date.today()}; `python -m bench latency --siblings "
             f"{' '.join(map(str, args.siblings))} --repeats {args.repeats}`", "",
             "| design | siblings training | median ms | 5-95% range / median |",
             "|---|---|---|---|"]  # fmt: skip
    for n in args.siblings:
        procs = [subprocess.Popen([sys.executable, "-c", SIBLING]) for _ in range(n)]
        try:
            time.sleep(8 if n else 0)  # the siblings are training by then
            for name in ("v1", "v2"):
                median, rel = spread(timings(name, args.repeats))
                line = f"| {name} | {n} | {median:.3f} | {rel:.0%} |"
                print(line, flush=True)
                lines.append(line)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    if args.write:
        write_section(SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
