"""``python -m bench NAME [args]``: run one bench; ``python -m bench --help`` lists them.

Each bench is the module bench/NAME.py with a ``main()`` that parses ``sys.argv[1:]``; adding one
is its module and one line in `BENCHES`.
"""

from __future__ import annotations

import importlib
import sys

# name: what it measures (the BENCHMARKS.md section it writes). Quick: a few minutes on 2 CPU
# cores, run by `make bench`.
BENCHES = {
    "ablate": "the v1-to-v2 ablation ladder of a study, paired seeds ('Ablation: v1 to v2')",
    "calibrate": "whether a training budget is short enough and still ranks designs right",
    "chaos": "a shared study under killed and paused workers and a restarted PostgreSQL",
    "gpu": "the GPU path and its speed: gpu tests, peaks, trainer, workers per GPU (bench/gpu.sh)",
    "latency": "how noisy latency_ms is, alone and beside training workers (quick)",
    "locks": "how long a claim holds the study's lock at 2,000 trials",
    "prescreen": "whether pre-screening with a zero-cost proxy finds a better front in equal time",
    "proxies": "zero-cost proxies against trained accuracy on this search space",
    "rungs": "successive halving: its cost, whether its front holds, whether it pays",
    "search": "the default 100-trial search, tpe against random, what pruning saves",
    "stages": "per-stage blocks: where Inception v3's asymmetric factorization pays, resumable",
    "strategies": "search strategies at equal wall time, resumable (bench/results/strategies)",
    "threads": "torch threads per trial against worker processes on a CPU (quick)",
    "trainer": "the trainer's images/s against the matmul peak and a DataLoader loop (quick)",
    "verdicts": "the verdict rule's false-claim rate and power on recorded seed noise (quick)",
}
QUICK = tuple(name for name, what in BENCHES.items() if what.endswith("(quick)"))


def usage() -> str:
    width = max(map(len, BENCHES))
    rows = [f"  {name:<{width}}  {what}" for name, what in BENCHES.items()]
    return "\n".join(
        [
            "usage: python -m bench NAME [args]   (from the repository root)",
            "",
            "Runs one bench; `python -m bench NAME --help` says what it takes. Each writes (with",
            "its write flag, where it has one) a BENCHMARKS.md section naming its command.",
            "",
            "benches:",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHES:
        print(f"python -m bench: no bench {name!r}; one of: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    sys.argv = [f"python -m bench {name}", *rest]  # argparse's prog, and the bench's own argv
    return module.main() or 0


if __name__ == "__main__":
    sys.exit(main())
