"""How a CPU search should spend its cores: torch threads per trial against worker processes.

    python -m bench threads [--budget quick] [--trials 3]

Trains the v1 and v2 reference designs in the search's own skeleton on Fashion-MNIST under one
budget, the way a search worker does, in three layouts of the machine's cores:

- one worker process with one torch thread,
- one worker process with as many threads as cores,
- as many worker processes as cores, one thread each, all training at once.

and reports seconds per trial and trials per minute for each. Prints a table and replaces the
"Threads per trial" section of BENCHMARKS.md (command, machine, date).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from ._common import ROOT, provenance, publish, timed


def one(args) -> None:
    """Child: train `trials` times (alternating v1 and v2) with `threads` torch threads."""
    import dataclasses

    import torch

    from explorer.training import BUDGETS, load_dataset, train
    from search_space import REFERENCES, NetworkConfig, build_network

    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", seed=0).on("cpu")
    info = data.info
    config = dataclasses.replace(BUDGETS[args.budget], seed=0)
    times = []
    for i in range(args.trials):
        ref = ("v1", "v2")[i % 2]
        net = NetworkConfig(
            block=REFERENCES[ref],
            in_channels=info.channels,
            num_classes=info.num_classes,
            image_size=info.image_size,
        )
        torch.manual_seed(0)
        model = build_network(net)
        times.append(timed(train, model, data, config, "cpu")[1])
    print(json.dumps(times))


def run(threads: int, processes: int, args) -> tuple[float, float]:
    """(seconds per trial, trials per minute) for `processes` children of `threads` threads."""
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "threads",
        "_one",
        "--threads",
        str(threads),
        "--budget",
        args.budget,
        "--trials",
        str(args.trials),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(processes)
    ]
    times = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            sys.exit(f"child failed with exit status {p.returncode}")
        times += json.loads(out.strip().splitlines()[-1])
    per_trial = sum(times) / len(times)
    return per_trial, 60.0 * processes / per_trial


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("mode", nargs="?", default="all", choices=("all", "_one"))
    p.add_argument("--budget", default="quick")
    p.add_argument("--trials", type=int, default=4, help="trials per process (v1, v2 alternating)")
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode == "_one":
        one(args)
        return
    cores = os.cpu_count() or 1
    layouts = [(1, 1), (cores, 1), (1, cores)]
    rows = []
    for threads, processes in layouts:
        per_trial, rate = run(threads, processes, args)
        rows.append(f"| {processes} | {threads} | {per_trial:.1f} | {rate:.2f} |")
        print(rows[-1], flush=True)
    body = [
        provenance(f"python -m bench threads --budget {args.budget} --trials {args.trials}"),
        f"v1 and v2 in the search skeleton, {args.budget} budget, {args.trials} trials per "
        "process; processes run at the same time.",
        "",
        "| worker processes | torch threads each | s per trial | trials per minute |",
        "|---|---|---|---|",
        *rows,
    ]
    publish("Threads per trial", body)


if __name__ == "__main__":
    main()
