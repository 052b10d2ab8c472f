"""`python -m explorer.export`: the command line of the exporter.

Bad input (an unknown study or trial, a design that cannot be exported, an unwritable output, a
missing optional package) is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Sequence

from ..store import StorageError, add_study_args, artifact_dir, redact, the_study
from ..usage import Parser, UsageError, add_renamed, positive_int
from .files import export_onnx, export_to_file
from .selection import ExportError, select_trials

PROG = "python -m explorer.export"
FORMATS = ("py", "onnx")


def _accuracy(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m explorer.export`."""
    p = Parser(
        prog=PROG,
        description=(
            "Write trials of a study as a standalone PyTorch module that needs only torch: a\n"
            "ConvNormAct unit, an Inception block and one network class per design, whose\n"
            "no-argument constructor builds the design (model = Trial12Net()). The header\n"
            "states the accuracy, parameters, FLOPs and the command that rewrites the file.\n"
            "Every network takes float images in [0, 1] (torchvision's ToTensor) and applies\n"
            "its dataset's normalisation itself (TRIAL12_CFG states the mean, std, input size\n"
            "and class names). --format onnx writes one trained design as an ONNX model instead."
        ),
        epilog=(
            "examples:\n"
            f"  {PROG} --study demo --best --select-max-params 100000 -o best.py\n"
            f"  {PROG} --study demo --trial 12 --weights -o net.py\n"
            "      (also writes net_trial12.pt and load_trial12() in net.py)\n"
            f"  {PROG} --study demo --pareto -o front.py\n"
            f"  {PROG} --study demo --best --format onnx -o best.onnx\n"
            "      (needs the onnx extra: pip install -e '.[onnx]')"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_study_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--trial",
        type=int,
        nargs="+",
        metavar="N",
        help="export these trial numbers (complete ones)",
    )
    which.add_argument(
        "--best",
        action="store_true",
        help="export the most accurate design (validation accuracy) meeting the constraints",
    )
    which.add_argument(
        "--pareto",
        action="store_true",
        help="export every Pareto-optimal design meeting the constraints, one class each",
    )
    # Named for what they limit, the selection: a search's --max-params limits what it trains.
    p.add_argument(
        "--select-max-params",
        dest="max_params",
        type=positive_int,
        metavar="P",
        help="with --best/--pareto: select only designs with at most P parameters",
    )
    p.add_argument(
        "--select-min-accuracy",
        dest="min_accuracy",
        type=_accuracy,
        metavar="A",
        help="with --best/--pareto: select only designs with validation accuracy at least A (0..1)",
    )
    add_renamed(p, "--max-params", "--select-max-params")
    add_renamed(p, "--min-accuracy", "--select-min-accuracy")
    p.add_argument(
        "--weights",
        action="store_true",
        help="also save each trial's trained weights as FILE_trialN.pt beside the module and "
        "generate a load_trialN() that reads them (the search must have kept weights; they are "
        "read from $EXPLORER_ARTIFACTS, else the artifacts folder beside the journal file)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="py",
        help="py (default): the standalone PyTorch module; onnx: one trial with its trained "
        "weights as an ONNX model with a dynamic batch dimension (-o FILE.onnx; needs the onnx "
        "extra and weights kept by the search)",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the file to write (.py or .onnx)"
    )
    return p


def _command(args: argparse.Namespace, study: str) -> str:
    parts = ["python", "-m", "explorer.export", "--study", study]
    if args.storage:
        parts += ["--storage", redact(args.storage)]
    if args.trial is not None:
        parts += ["--trial", *(str(n) for n in args.trial)]
    else:
        parts.append("--best" if args.best else "--pareto")
        if args.max_params is not None:
            parts += ["--select-max-params", str(args.max_params)]
        if args.min_accuracy is not None:
            parts += ["--select-min-accuracy", f"{args.min_accuracy:g}"]
    if args.weights:
        parts.append("--weights")
    if args.format != "py":
        parts += ["--format", args.format]
    return shlex.join([*parts, "-o", args.output])


def _one_line(text: str) -> str:
    """A message safe to print as one line: control characters shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, after one line on stderr)."""
    try:
        args = build_parser().parse_args(argv)
        if args.trial is not None and (
            args.max_params is not None or args.min_accuracy is not None
        ):
            raise ExportError(
                "--select-max-params and --select-min-accuracy go with --best or --pareto, "
                "not --trial"
            )
        chosen: list[str] = []  # the line saying which study, once the export is written
        study = the_study(args.storage, args.study, chosen.append)
        mode = "best" if args.best else "pareto" if args.pareto else None
        numbers = (
            args.trial
            if mode is None
            else select_trials(study, mode, args.max_params, args.min_accuracy)
        )
        if args.format == "onnx":
            if len(set(numbers)) != 1:
                raise ExportError(
                    f"--format onnx writes one trial, got {len(set(numbers))} "
                    "(choose one with --trial N or --best)"
                )
            onnx_file = export_onnx(
                study, numbers[0], args.output, artifacts=artifact_dir(args.storage)
            )
            for line in chosen:
                print(line, file=sys.stderr)
            print(f"wrote {onnx_file}: trial {numbers[0]} with its trained weights, as ONNX")
            return 0
        written = export_to_file(
            study,
            numbers,
            args.output,
            weights=args.weights,
            artifacts=artifact_dir(args.storage),
            command=_command(args, study.study_name),
        )
    except (ExportError, StorageError, UsageError) as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    for line in chosen:
        print(line, file=sys.stderr)
    code, *pts = written
    classes = ", ".join(f"Trial{n}Net" for n in dict.fromkeys(numbers))
    print(f"wrote {code}: {classes}")
    for path in pts:
        print(f"wrote {path}: trained weights (load_{path.stem.rsplit('_', 1)[-1]}() reads them)")
    return 0
