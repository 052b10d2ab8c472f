#!/usr/bin/env bash
# The GPU checks of issues 18 and 44 in one command (python -m bench gpu): the tests marked gpu (the CUDA
# graph capture among them), the matmul peaks, the trainer's images/s eager and with its step in a
# CUDA graph (v1, v2 and two search designs), and a search at 1, 2, 4 and 8 workers per GPU. Under
# 9.5 minutes on one GPU, so it fits one 10-minute device call; it rewrites the "## GPU" section of
# the results file after every step (ready to paste into BENCHMARKS.md) and writes the tests' log
# (gpu-tests.log) beside it.
#
#   bash bench/gpu.sh                              # everything; exit 2 without a CUDA device
#   bash bench/gpu.sh --data-dir DIR               # where the Fashion-MNIST files are (else random
#                                                  # images in their format, and the report says so)
#   bash bench/gpu.sh --output "$OUT/gpu-results.md"   # results and test log there
#   bash bench/gpu.sh --skip tests,peaks,trainer,graphs --search-cap 100   # the searches alone
#   bash bench/gpu.sh --skip ''                    # also torch.compile and one whole trial
#   bash bench/gpu.sh --dry-run                    # tiny sizes on the CPU, no tests, no searches
#   PYTHON=.venv/bin/python bash bench/gpu.sh
#
# Every step has its own cap inside bench/gpu.py (520 s for the default steps); the hard stop
# below is a last resort, and the results file is rewritten after each step, so what finished is
# kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=TERM --kill-after=10 560 "$PYTHON" -m bench gpu "$@"
