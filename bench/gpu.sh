#!/usr/bin/env bash
# The GPU measurement of issue 18 in one go (bench/gpu.py): under 8 minutes on one GPU, it
# rewrites the "## GPU" section of bench/gpu-results.md, ready to paste into BENCHMARKS.md.
#
#   bash bench/gpu.sh                        # the measurement; exit 2 without a CUDA device
#   bash bench/gpu.sh --data-dir DIR         # where the Fashion-MNIST files are (else random
#                                            # images in their format, and the report says so)
#   bash bench/gpu.sh --dry-run              # tiny sizes on the CPU, no searches
#   PYTHON=.venv/bin/python bash bench/gpu.sh
#
# Every step has its own cap inside bench/gpu.py (450 s in all); the hard stop below is a last
# resort, and the results file is rewritten after each step, so what finished is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=TERM --kill-after=10 470 "$PYTHON" bench/gpu.py "$@"
