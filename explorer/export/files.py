"""Writing exports: the standalone module (with the trained weights beside it) or an ONNX file.

`export_source` is the module as text, for the dashboard's download button; `export_to_file`
writes it, and with ``weights`` each trial's state dict as ``FILE_trialN.pt``; `export_onnx`
writes one trained design through ``torch.onnx.export`` with a dynamic batch dimension, from the
same `standalone.InceptionNet` the module's classes extend, so both files compute the same thing.
Everything is checked before the first file is written.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import io
import json
import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
import torch

from .render import render_source
from .selection import ExportDesign, ExportError, export_design, network_kwargs, trial_weights
from .standalone import InceptionNet

ONNX_PACKAGES = ("onnx", "onnxscript")  # torch.onnx.export's exporter needs both
ONNX_INSTALL = "pip install -e '.[onnx]'"
ONNX_OPSET = 18


class MissingExtra(ExportError):
    """An export format whose optional packages are not installed."""


def default_command(study_name: str, trial_numbers: Sequence[int], output: str = "model.py") -> str:
    """The CLI call that exports these trials (without ``--storage``: a study does not know it)."""
    parts = ["python", "-m", "explorer.export", "--study", study_name, "--trial"]
    return shlex.join([*parts, *(str(n) for n in trial_numbers), "-o", output])


def _designs(study: optuna.Study, trial_numbers: Sequence[int]) -> list[ExportDesign]:
    numbers = list(dict.fromkeys(trial_numbers))  # once each, in the order given
    if not numbers:
        raise ExportError("nothing to export: no trials given")
    return [export_design(study, n) for n in numbers]


def export_source(
    study: optuna.Study,
    trial_numbers: list[int],
    *,
    command: str | None = None,
    weights_files: Mapping[int, str] | None = None,
    date: datetime.date | None = None,
) -> str:
    """The source of a module, needing only ``torch``, with one network class per trial.

    command: the command shown in the header as the way to reproduce the file (default: the
    equivalent ``python -m explorer.export`` call). weights_files: trial number -> name of a
    weights file saved beside the module; a ``load_trialN`` function is generated for each.
    """
    designs = _designs(study, trial_numbers)
    return render_source(
        designs,
        study_name=study.study_name,
        command=command or default_command(study.study_name, [d.number for d in designs]),
        date=date or datetime.date.today(),
        weights_files=weights_files,
    )


def weights_path(output: str | Path, number: int) -> Path:
    """Where `export_to_file` saves a trial's weights: ``FILE_trialN.pt`` beside ``FILE.py``."""
    output = Path(output)
    return output.with_name(f"{output.stem}_trial{number}.pt")


def export_to_file(
    study: optuna.Study,
    trial_numbers: list[int],
    output: str | Path,
    *,
    weights: bool = False,
    artifacts: str | Path | None = None,
    command: str | None = None,
) -> list[Path]:
    """Write the module to `output` (and, with `weights`, each trial's state dict beside it);
    returns the paths written. Everything is checked before the first file is written."""
    output = Path(output)
    _check_output(output, ".py")
    designs = _designs(study, trial_numbers)
    states = (
        {d.number: trial_weights(study, d.number, artifacts) for d in designs} if weights else {}
    )
    files = {n: weights_path(output, n) for n in states}
    source = render_source(
        designs,
        study_name=study.study_name,
        command=command
        or default_command(study.study_name, [d.number for d in designs], output.name),
        date=datetime.date.today(),
        weights_files={n: p.name for n, p in files.items()},
    )
    written = []
    try:
        for n, path in files.items():
            torch.save(states[n], path)
            written.append(path)
        output.write_text(source, encoding="utf-8")
    except OSError as exc:
        raise ExportError(
            f"cannot write {str(exc.filename or output)!r}: {exc.strerror or exc}"
        ) from None
    return [output, *written]


def _check_output(output: Path, suffix: str) -> None:
    if output.suffix != suffix:
        raise ExportError(f"the output must be a {suffix} file, got {str(output)!r}")
    if output.is_dir():
        raise ExportError(f"the output {str(output)!r} is a folder")
    if not output.parent.is_dir():
        raise ExportError(
            f"cannot write {str(output)!r}: folder {str(output.parent)!r} does not exist"
        )


def onnx_available() -> bool:
    """Whether the packages of the ``onnx`` extra that writing ONNX needs are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def trained_model(design: ExportDesign, state: Mapping[str, torch.Tensor]) -> InceptionNet:
    """The design as the exported classes build it, with trained weights, in eval mode."""
    model = InceptionNet(**network_kwargs(design))
    model.load_state_dict(state)
    return model.eval()


def export_onnx(
    study: optuna.Study,
    number: int,
    output: str | Path,
    *,
    artifacts: str | Path | None = None,
) -> Path:
    """Write trial `number` with its trained weights as an ONNX model: input ``images``
    (N x C x H x W floats in [0, 1], any N), output ``logits``; the dataset, mean, std and class
    names are in its metadata. `MissingExtra` when the ``onnx`` extra is not installed."""
    output = Path(output)
    _check_output(output, ".onnx")
    if not onnx_available():
        raise MissingExtra(
            f"--format onnx needs the packages {' and '.join(ONNX_PACKAGES)}: {ONNX_INSTALL}"
        )
    import onnx  # the onnx extra, installed only for --format onnx

    design = export_design(study, number)
    model = trained_model(design, trial_weights(study, number, artifacts))
    inputs = design.inputs
    example = torch.rand(2, *inputs.input_size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        path = Path(tmp) / output.name
        # The exporter reports its progress on stdout: keep the command's output to its own lines.
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    input_names=["images"],
                    output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    opset_version=ONNX_OPSET,
                    dynamo=True,
                    external_data=False,
                )
        except Exception as exc:  # noqa: BLE001 - a failed conversion is one line, not a traceback
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise ExportError(f"torch.onnx.export failed for trial {number}: {lines[0]}") from None
        proto = onnx.load(str(path))
        metadata = {
            "study": study.study_name,
            "trial": str(design.number),
            "input_range": "[0, 1]",
            **{k: json.dumps(v) for k, v in inputs._asdict().items()},
        }
        onnx.helper.set_model_props(proto, metadata)
        onnx.save(proto, str(path))
        try:
            os.replace(path, output)
        except OSError as exc:
            raise ExportError(f"cannot write {str(output)!r}: {exc.strerror or exc}") from None
    return output
