"""Exporting searched designs as standalone PyTorch code: a module that needs only ``torch``.

`python -m explorer.export --study NAME (--trial N | --best | --pareto) -o FILE.py` writes the
chosen trials of a study as plain PyTorch, in the manner of torchvision's GoogLeNet: one
``ConvNormAct`` unit (with only the batch-norm placements the designs use), one ``Inception``
block taking named widths, and one network class per design whose ``__init__`` keyword
defaults are the design (a table of literal ``BlockWidths``, one per stage, with the shapes in
comments), so ``Net()`` builds it as trained and other keywords build variants. With
``--weights`` the trained state dicts are saved beside the code with a loader for each.

The generated networks reproduce `search_space.build_network` exactly: the same parameters, the
same state-dict keys and shapes, the same outputs for the same weights.

Nothing read from a storage is pasted into the code: designs go through `NetworkConfig.from_dict`
and only the validated integers, floats and known choice strings are written; names and labels
appear only in docstrings, escaped, so a hostile study cannot break or inject into the module.
`export_source` is the same export as a function, for the dashboard's download button.
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import re
import shlex
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from search_space import NetworkConfig, build_network, network_params
from search_space.blocks import conv_bias
from search_space.config import BN_PLACEMENTS, DOWNSAMPLES, POOL_TYPES

from .results import (
    DEFAULT_OBJECTIVES,
    OBJECTIVES,
    TrialRecord,
    pareto_front,
    study_records,
)
from .storage import StorageError, artifact_dir, load_study, redact

PROG = "python -m explorer.export"
MODES = ("best", "pareto")
WIDTH_FIELDS = ("ch1x1", "ch3x3_reduce", "ch3x3", "wide_reduce", "wide", "pool_proj")
LINE_LENGTH = 100  # the project's ruff line length; the generated module keeps to it
_ARTIFACT_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")


class ExportError(ValueError):
    """A request that cannot be exported (no such trial, nothing meets the constraints, ...)."""


@dataclass(frozen=True)
class ExportDesign:
    """One validated design to export and the facts its docstring states."""

    number: int
    network: NetworkConfig
    params: int  # computed from the design: what the generated class has
    reference: str | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    flops: float | None = None
    weights: str | None = None  # artifact id of the trained state dict
    reeval: tuple[float, float, int, str] | None = None  # test acc mean, std, seeds, budget

    @property
    def class_name(self) -> str:
        return f"Trial{self.number}Net"

    @property
    def loader_name(self) -> str:
        return f"load_trial{self.number}"


# Reading designs from a study


def _number(value: Any) -> float | None:
    """A finite int or float attribute, else None (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


_STATES = {
    "PRUNED": "was pruned",
    "FAIL": "failed",
    "RUNNING": "is still running",
    "WAITING": "is waiting to run",
}


def _design(record: TrialRecord) -> ExportDesign:
    if not record.complete:
        raise ExportError(
            f"trial {record.number} {_STATES.get(record.state, record.state.lower())}, not complete: "
            "only finished designs can be exported"
        )
    if record.network is None:
        raise ExportError(
            f"trial {record.number} cannot be exported: {record.problem or 'it stores no design'}"
        )
    weights = record.attrs.get("weights")
    flops = _number(record.attrs.get("flops"))
    reeval = _reeval(record.attrs.get("reeval"))
    return ExportDesign(
        number=record.number,
        network=record.network,
        params=network_params(record.network),
        reference=record.reference,
        val_acc=_number(record.attrs.get("val_acc")),
        test_acc=_number(record.attrs.get("test_acc")),
        flops=flops if flops is not None and flops >= 0 else None,
        weights=weights if isinstance(weights, str) else None,
        reeval=reeval,
    )


def _reeval(value: Any) -> tuple[float, float, int, str] | None:
    """A stored re-evaluation (`explorer.evaluate`), checked: numbers in range, a plain budget
    name; anything else is left out of the header."""
    if not isinstance(value, dict):
        return None
    mean, std, seeds = (_number(value.get(k)) for k in ("test_acc_mean", "test_acc_std", "seeds"))
    budget = value.get("budget")
    if (
        mean is None
        or std is None
        or seeds is None
        or not (0 <= mean <= 1 and 0 <= std <= 1 and seeds >= 1 and seeds == int(seeds))
        or not (isinstance(budget, str) and re.fullmatch(r"[a-z][a-z0-9_-]{0,19}", budget))
    ):
        return None
    return mean, std, int(seeds), budget


def export_design(study: optuna.Study, number: int) -> ExportDesign:
    """The validated design of one complete trial; `ExportError` if there is none to export."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise ExportError(f"a trial number must be an integer, got {number!r}")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if not trials:
        raise ExportError(f"study {study.study_name!r} has no trials")
    if number not in trials:
        raise ExportError(
            f"study {study.study_name!r} has no trial {number} "
            f"(its trials are {min(trials)} to {max(trials)})"
        )
    record = next(r for r in study_records(study) if r.number == number)  # with its re-evaluation
    return _design(record)


def _objectives(study: optuna.Study) -> tuple[str, ...]:
    """The study's objectives as the search recorded them, if they are known ones."""
    stored = study.user_attrs.get("objectives")
    if (
        isinstance(stored, list)
        and len(stored) >= 2
        and all(isinstance(k, str) and k in OBJECTIVES for k in stored)
    ):
        return tuple(stored)
    return DEFAULT_OBJECTIVES


def select_trials(
    study: optuna.Study,
    mode: str,
    max_params: int | None = None,
    min_accuracy: float | None = None,
) -> list[int]:
    """Trial numbers to export: ``"best"``, the most accurate design meeting the constraints, or
    ``"pareto"``, the Pareto front (on the study's objectives) of the designs meeting them."""
    if mode not in MODES:
        raise ExportError(f"mode must be one of {list(MODES)}, got {mode!r}")
    objectives = _objectives(study)
    records = [
        r
        for r in study_records(study)
        if r.complete
        and r.network is not None
        and all(_number(r.get(k)) is not None for k in ("val_acc", "params", *objectives))
    ]
    if not records:
        raise ExportError(
            f"study {study.study_name!r} has no complete trials with a design and its "
            "accuracy and parameters"
        )
    meets = [
        r
        for r in records
        if (max_params is None or r.get("params") <= max_params)
        and (min_accuracy is None or r.get("val_acc") >= min_accuracy)
    ]
    if not meets:
        wanted = []
        if max_params is not None:
            wanted.append(f"at most {max_params:,} parameters")
        if min_accuracy is not None:
            wanted.append(f"validation accuracy at least {min_accuracy:.4f}")
        smallest = min(r.get("params") for r in records)
        best = max(r.get("val_acc") for r in records)
        raise ExportError(
            f"none of the {len(records)} complete trials has {' and '.join(wanted)} "
            f"(smallest: {smallest:,} parameters; most accurate: {best:.4f})"
        )
    if mode == "best":
        top = max(meets, key=lambda r: (r.get("val_acc"), -r.get("params"), -r.number))
        return [top.number]
    return [r.number for r in pareto_front(meets, objectives)]


# Trained weights


def expected_state_shapes(network: NetworkConfig) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of `build_network(network)`, built without memory (meta)."""
    with torch.device("meta"):
        model = build_network(network)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def trial_weights(
    study: optuna.Study, number: int, artifacts: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The trained state dict the search kept for a trial, checked against its design.

    artifacts: the artifact folder (default: `artifact_dir()` of the default storage).
    """
    design = export_design(study, number)
    if design.weights is None:
        raise ExportError(f"trial {number} kept no trained weights (the search ran without them)")
    if not _ARTIFACT_ID.fullmatch(design.weights):
        raise ExportError(f"trial {number} has a malformed weights artifact id {design.weights!r}")
    folder = Path(artifacts) if artifacts is not None else artifact_dir()
    try:
        with FileSystemArtifactStore(str(folder)).open_reader(design.weights) as reader:
            data = reader.read()
    except Exception:  # noqa: BLE001 - a missing or unreadable artifact is one clear line
        raise ExportError(
            f"the weights of trial {number} (artifact {design.weights}) are not in "
            f"{str(folder)!r}; "
            "point EXPLORER_ARTIFACTS at the folder the search kept them in"
        ) from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(
            f"the weights of trial {number} are not a readable state dict: {_first_line(exc)}"
        ) from None
    try:
        expected = expected_state_shapes(design.network)
    except Exception as exc:  # noqa: BLE001 - an absurd stored design
        raise ExportError(f"trial {number}'s design cannot be built: {_first_line(exc)}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ExportError(f"the weights of trial {number} are not a state dict of tensors")
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or extra or wrong:
        parts = [
            f"{what} {', '.join(map(str, keys[:3]))}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if keys
        ]
        raise ExportError(
            f"the weights of trial {number} do not fit its design: {'; '.join(parts)}"
        )
    return {k: state[k] for k in expected}


# Rendering the module


def _escape(text: str, limit: int | None = None) -> str:
    """`text` for a docstring or string literal: printable ASCII stays, anything else (quotes,
    backslashes, newlines, non-ASCII) becomes an escape, so it cannot end the string or add
    code. Cut to about `limit` characters (never inside an escape) with ``...`` when longer."""
    out, length = [], 0
    for char in str(text):
        if " " <= char <= "~" and char not in "\\\"'":
            piece = char
        elif ord(char) < 0x100:
            piece = f"\\x{ord(char):02x}"
        elif ord(char) < 0x10000:
            piece = f"\\u{ord(char):04x}"
        else:
            piece = f"\\U{ord(char):08x}"
        if limit is not None and length + len(piece) > limit:
            out.append("...")
            break
        out.append(piece)
        length += len(piece)
    return "".join(out)


def _quoted(text: str, limit: int | None = 48) -> str:
    """An untrusted name for a docstring: escaped, cut, in single quotes."""
    return f"'{_escape(text, limit)}'"


def _str(value: str, choices: tuple[str, ...]) -> str:
    """A known choice string as a literal: the project's own constant, never the stored text."""
    return f'"{choices[choices.index(value)]}"'


def _wrap(text: str, indent: int) -> list[str]:
    """Prose wrapped to the line length; breaks only at spaces, so escapes stay whole."""
    return textwrap.wrap(
        text,
        LINE_LENGTH - indent,
        initial_indent=" " * indent,
        subsequent_indent=" " * indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _item(text: str) -> list[str]:
    """A bullet item of a docstring list, wrapped under its first line."""
    return textwrap.wrap(
        text,
        LINE_LENGTH,
        initial_indent="- ",
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _call(head: str, args: Sequence[str], indent: int, suffix: str = "") -> list[str]:
    """``head(args)`` on one line if it fits, else one argument a line with a trailing comma
    (which keeps the formatter from joining them again)."""
    pad = " " * indent
    one = f"{pad}{head}({', '.join(args)}){suffix}"
    if len(one) <= LINE_LENGTH:
        return [one]
    return [f"{pad}{head}(", *(f"{pad}    {a}," for a in args), f"{pad}){suffix}"]


def _docstring(paragraphs: Sequence[str | list[str]], indent: int) -> list[str]:
    """A docstring from paragraphs (prose is wrapped; a list is kept as preformatted lines)."""
    pad = " " * indent
    first, *rest = paragraphs
    assert isinstance(first, str)  # the summary line is always prose
    summary = f'{pad}"""{first}'
    if not rest and len(summary) + 3 <= LINE_LENGTH:
        return [summary + '"""']
    lines = _wrap(f'"""{first}', indent)
    for para in rest:
        lines.append("")
        lines += (
            [pad + line if line else "" for line in para]
            if isinstance(para, list)
            else _wrap(para, indent)
        )
    return [*lines, f'{pad}"""']


def _shape(channels: int, size: int) -> str:
    return f"N x {channels} x {size} x {size}"


def _stats(design: ExportDesign) -> str:
    """Accuracy, size and cost as one sentence (numbers only, formatted here)."""
    val = f"{design.val_acc:.4f}" if design.val_acc is not None else "not recorded"
    test = f"{design.test_acc:.4f}" if design.test_acc is not None else "not measured"
    flops = (
        f"{design.flops / 1e6:,.2f} MFLOPs per image (2 x multiply-adds)"
        if design.flops is not None
        else "FLOPs not recorded"
    )
    if design.reeval is not None:
        mean, std, seeds, budget = design.reeval
        test = (
            f"re-evaluated test accuracy {mean:.4f} ± {std:.4f} "
            f"(mean ± std over {seeds} seed{'s' if seeds > 1 else ''}, budget {budget})"
        )
    else:
        test = f"test accuracy {test}"
    return f"validation accuracy {val}, {test}, {design.params:,} parameters, {flops}."


def _kind(design: ExportDesign) -> str:
    if design.reference:
        return f"reference design {_quoted(design.reference)}"
    return "searched design"


def _what(design: ExportDesign) -> str:
    return f"trial {design.number} ({_kind(design)})"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Used:
    """The layer choices the exported designs use: the generated units include only these."""

    def __init__(self, designs: Sequence[ExportDesign]) -> None:
        nets = [d.network for d in designs]
        stem = {"post" if n.use_stem_bn else "none" for n in nets}
        block = {n.block.bn for n in nets}
        self.placements = [p for p in BN_PLACEMENTS if p in stem | block]
        self.pools = [p for p in POOL_TYPES if p in {n.block.pool_type for n in nets}]

    @property
    def bn_arg(self) -> bool:
        return len(self.placements) > 1

    @property
    def pool_arg(self) -> bool:
        return len(self.pools) > 1


_PLACEMENT_FORWARD = {
    "none": ("conv -> ReLU", "self.act(self.conv(x))"),
    "post": ("conv -> BN -> ReLU", "self.act(self.bn(self.conv(x)))"),
    "pre": ("BN -> ReLU -> conv", "self.conv(self.act(self.bn(x)))"),
    "post_act": ("conv -> ReLU -> BN", "self.bn(self.act(self.conv(x)))"),
}
_POOL = {
    "max": "nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)",
    "avg": "nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=False)",
}


def _conv_unit(used: _Used) -> list[str]:
    placements = used.placements
    with_bias = [p for p in placements if conv_bias(p)]
    normed = [p for p in placements if p != "none"]
    if used.bn_arg:
        order = "; ".join(f"``{p}``: {_PLACEMENT_FORWARD[p][0]}" for p in placements)
        doc = _docstring(
            [
                'A "same"-padded convolution with ReLU and batch norm placed as ``bn`` says.',
                f"{order}. The convolution has a bias only where no batch norm directly "
                "follows it.",
            ],
            4,
        )
    else:
        only = placements[0]
        doc = _docstring([f'A "same"-padded convolution: {_PLACEMENT_FORWARD[only][0]}.'], 4)
    args = ["self", "in_channels: int", "out_channels: int", "kernel_size: int | tuple[int, int]"]
    if used.bn_arg:
        args.append(f'bn: str = "{placements[-1] if "post" not in placements else "post"}"')
    if not with_bias:
        bias = "False"
    elif len(with_bias) == len(placements):
        bias = "True"
    elif len(with_bias) == 1:
        bias = f'bn == "{with_bias[0]}"'
    else:
        bias = "bn in (" + ", ".join(f'"{p}"' for p in with_bias) + ")"
    lines = ["class ConvNormAct(nn.Module):", *doc, ""]
    lines += ["    def __init__(", *(f"        {a}," for a in args), "    ) -> None:"]
    lines += [
        "        super().__init__()",
        "        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else "
        "kernel_size",
    ]
    if used.bn_arg:
        lines.append("        self.placement = bn")
    lines += _call(
        "self.conv = nn.Conv2d",
        ["in_channels", "out_channels", "(kh, kw)", "padding=(kh // 2, kw // 2)", f"bias={bias}"],
        8,
    )
    if normed:
        if "pre" in normed and len(normed) > 1:
            channels = 'in_channels if bn == "pre" else out_channels'
        else:
            channels = "in_channels" if normed == ["pre"] else "out_channels"
        if "none" in placements:
            lines += [
                '        if bn != "none":',
                f"            self.bn = nn.BatchNorm2d({channels})",
            ]
        else:
            lines.append(f"        self.bn = nn.BatchNorm2d({channels})")
    lines += ["        self.act = nn.ReLU(inplace=True)", ""]
    lines.append("    def forward(self, x: torch.Tensor) -> torch.Tensor:")
    for p in placements[:-1]:
        lines += [
            f'        if self.placement == "{p}":',
            f"            return {_PLACEMENT_FORWARD[p][1]}",
        ]
    lines.append(f"        return {_PLACEMENT_FORWARD[placements[-1]][1]}")
    return lines


def _inception_unit(used: _Used) -> list[str]:
    doc = _docstring(
        [
            "An Inception block: four branches side by side, concatenated on channels.",
            "``branch1`` is a 1x1 convolution; ``branch2`` a 1x1 reduction then a 3x3; "
            "``branch3`` a 1x1 reduction then the wide path, one convolution per kernel in "
            "``wide_kernels`` (a 5x5, two 3x3, or 1xn then nx1); ``branch4`` a 3x3 stride-1 pool "
            "then a 1x1 projection. A width of 0 removes its branch.",
        ],
        4,
    )
    args = [
        "self",
        "in_channels: int",
        "*",
        "ch1x1: int",
        "ch3x3_reduce: int",
        "ch3x3: int",
        "wide_reduce: int",
        "wide: int",
        "pool_proj: int",
        "wide_kernels: tuple[tuple[int, int], ...]",
    ]
    if used.pool_arg:
        args.append("pool_type: str")
    if used.bn_arg:
        args.append("bn: str")
    lines = ["class Inception(nn.Module):", *doc, ""]
    lines += ["    def __init__(", *(f"        {a}," for a in args), "    ) -> None:"]
    lines.append("        super().__init__()")
    lines.append(
        "        conv = partial(ConvNormAct, bn=bn)"
        if used.bn_arg
        else "        conv = ConvNormAct"
    )
    lines += [
        "        if ch1x1:",
        "            self.branch1 = conv(in_channels, ch1x1, 1)",
        "        if ch3x3:",
        "            self.branch2 = nn.Sequential(",
        "                conv(in_channels, ch3x3_reduce, 1),",
        "                conv(ch3x3_reduce, ch3x3, 3),",
        "            )",
        "        if wide:",
        "            layers = [conv(in_channels, wide_reduce, 1)]",
        "            channels = wide_reduce",
        "            for kernel in wide_kernels:",
        "                layers.append(conv(channels, wide, kernel))",
        "                channels = wide",
        "            self.branch3 = nn.Sequential(*layers)",
        "        if pool_proj:",
        "            # Ceil mode (and for average pooling, dividing by real pixels only), "
        "as trained.",
    ]
    if used.pool_arg:
        lines += [
            "            pool = (",
            f"                {_POOL['max']}",
            '                if pool_type == "max"',
            f"                else {_POOL['avg']}",
            "            )",
        ]
    else:
        lines.append(f"            pool = {_POOL[used.pools[0]]}")
    lines += [
        "            self.branch4 = nn.Sequential(pool, conv(in_channels, pool_proj, 1))",
        "        self.out_channels = ch1x1 + ch3x3 + wide + pool_proj",
        "",
        "    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:",
        "        return [branch(x) for branch in self.children()]",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return torch.cat(self._forward(x), 1)",
    ]
    return lines


def _init_unit(used: _Used) -> list[str]:
    lines = [
        "def init_weights(module: nn.Module) -> None:",
        '    """He-normal convolutions (fan-out), unit batch norm, small linear layers: the',
        '    initialisation the search trained from, so designs without batch norm train too."""',
        "    for m in module.modules():",
        "        if isinstance(m, nn.Conv2d):",
        '            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")',
        "            if m.bias is not None:",
        "                nn.init.zeros_(m.bias)",
    ]
    if used.placements != ["none"]:
        lines += [
            "        elif isinstance(m, nn.BatchNorm2d):",
            "            nn.init.ones_(m.weight)",
            "            nn.init.zeros_(m.bias)",
        ]
    lines += [
        "        elif isinstance(m, nn.Linear):",
        "            nn.init.normal_(m.weight, std=0.01)",
        "            nn.init.zeros_(m.bias)",
    ]
    return lines


def _widths_unit() -> list[str]:
    return [
        "class BlockWidths(NamedTuple):",
        '    """Output channels of each branch of an Inception block; 0 removes the branch."""',
        "",
        *(f"    {name}: int" for name in WIDTH_FIELDS),
    ]


def _network_unit(design: ExportDesign, used: _Used) -> list[str]:
    """The network class: the design as keyword defaults, so ``Net()`` builds it as trained."""
    net = design.network
    block = net.block
    size = int(net.image_size)
    in_ch = int(net.in_channels)
    stage_info = f"stages {tuple(int(s) for s in net.stages)}"
    doc = _docstring(
        [
            f"Trial {design.number}: {_escape(block.short())}.",
            f"{_sentence(_kind(design))}; block widths x{float(net.width):g} of paper scale, "
            f"{stage_info}. {_sentence(_stats(design))} Shapes are for N x {in_ch} x {size} x "
            f"{size} inputs.",
            "The keyword defaults are the design; other ``depths`` (blocks per stage), "
            "``widths`` (one ``BlockWidths`` per stage, a 2x2 pool before each stage after the "
            "first) or ``wide_kernels`` build variants of it.",
        ],
        4,
    )
    kernels = "(" + ", ".join(f"({int(h)}, {int(w)})" for h, w in block.wide_kernels())
    kernels += ",)" if len(block.wide_kernels()) == 1 else ")"
    depths = "(" + ", ".join(str(int(d)) for d in net.stages)
    depths += ",)" if len(net.stages) == 1 else ")"
    plan = net.channel_plan()
    downsample = f"2x2 {_str(net.downsample, DOWNSAMPLES)[1:-1]} pool"
    widths: list[str] = []
    index = 1
    for s, depth in enumerate(net.stages):
        cfg = net.stage_block(s)
        side = size >> s
        cin, cout = plan[index][1], plan[index + depth - 1][2]
        index += depth
        where = f"{side} x {side}" + (f" after a {downsample}" if s else "")
        widths.append(f"            # stage {s}: {where}, {int(cin)} -> {int(cout)} channels")
        values = [f"{name}={int(getattr(cfg, name))}" for name in WIDTH_FIELDS]
        widths += _call("BlockWidths", values, 12, ",")
    lines = [f"class {design.class_name}(nn.Module):", *doc, ""]
    lines += [
        "    def __init__(",
        "        self,",
        f"        in_channels: int = {in_ch},",
        f"        num_classes: int = {int(net.num_classes)},",
        f"        dropout: float = {float(net.dropout)!r},",
        f"        stem_width: int = {int(net.stem_width)},",
        f"        depths: tuple[int, ...] = {depths},",
        "        widths: tuple[BlockWidths, ...] = (",
        *widths,
        "        ),",
        f"        wide_kernels: tuple[tuple[int, int], ...] = {kernels},",
        "    ) -> None:",
        "        super().__init__()",
    ]
    partial_args = ["Inception", "wide_kernels=wide_kernels"]
    if used.pool_arg:
        partial_args.append(f"pool_type={_str(block.pool_type, POOL_TYPES)}")
    if used.bn_arg:
        partial_args.append(f"bn={_str(block.bn, BN_PLACEMENTS)}")
    lines += _call("block = partial", partial_args, 8)
    stem_args = ["in_channels", "stem_width", "3"]
    if used.bn_arg:
        stem_args.append('bn="post"' if net.use_stem_bn else 'bn="none"')
    lines += _call("self.stem = ConvNormAct", stem_args, 8)
    down = f"nn.{'MaxPool2d' if net.downsample == DOWNSAMPLES[0] else 'AvgPool2d'}(2, 2)"
    lines += [
        "        channels, stages = stem_width, []",
        "        for stage, (depth, stage_widths) in enumerate(zip(depths, widths, strict=True)):",
        f"            layers = [{down}] if stage else []",
        "            for _ in range(depth):",
        "                layers.append(block(channels, **BlockWidths(*stage_widths)._asdict()))",
        "                channels = layers[-1].out_channels",
        "            stages.append(nn.Sequential(*layers))",
        "        self.stages = nn.Sequential(*stages)",
    ]
    out = int(net.out_channels)
    last = size >> (len(net.stages) - 1)
    if block.bn == "pre":
        lines += [
            "        # The blocks end on a convolution: normalise and activate once before the head.",
            "        self.head_norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))",
        ]
    lines += [
        "        self.pool = nn.AdaptiveAvgPool2d(1)",
        "        self.dropout = nn.Dropout(dropout)",
        "        self.fc = nn.Linear(channels, num_classes)",
        "        init_weights(self)",
        "",
        "    def forward_features(self, x: torch.Tensor) -> torch.Tensor:",
        f"        # x: {_shape(in_ch, size)}; shapes for the default design",
        f"        x = self.stem(x)  # {_shape(int(net.stem_width), size)}",
        *(
            [
                f"        x = self.stages(x)  # {_shape(out, last)}",
                "        return self.head_norm(x)",
            ]
            if block.bn == "pre"
            else [f"        return self.stages(x)  # {_shape(out, last)}"]
        ),
        "",
        "    def forward_head(self, x: torch.Tensor) -> torch.Tensor:",
        f"        x = torch.flatten(self.pool(x), 1)  # N x {out}",
        f"        return self.fc(self.dropout(x))  # N x {int(net.num_classes)}",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return self.forward_head(self.forward_features(x))",
    ]
    return lines


def _loader_unit(design: ExportDesign, filename: str) -> list[str]:
    name = f'"{_escape(Path(filename).name)}"'
    lines = [
        f"def {design.loader_name}(",
        "    path: str | Path | None = None,",
        '    map_location: str | torch.device = "cpu",',
        f") -> {design.class_name}:",
    ]
    doc = _docstring(
        [
            f"{design.class_name} with the trained weights of trial {design.number}, in eval mode.",
            "``path`` defaults to the weights file saved beside this module.",
        ],
        4,
    )
    lines += doc
    lines.append(f"    model = {design.class_name}()")
    lines.append("    if path is None:")
    lines += _call("path = Path(__file__).with_name", [name], 8)
    lines += [
        "    state = torch.load(path, map_location=map_location, weights_only=True)",
        "    model.load_state_dict(state)",
        "    return model.eval()",
    ]
    return lines


def render_source(
    designs: Sequence[ExportDesign],
    *,
    study_name: str,
    command: str,
    date: datetime.date,
    weights_files: Mapping[int, str] | None = None,
) -> str:
    """The standalone module for validated designs (plain data in, source text out)."""
    if not designs:
        raise ExportError("nothing to export: no trials given")
    weights_files = weights_files or {}
    used = _Used(designs)
    first = designs[0]
    if len(designs) == 1:
        title = (
            f"Inception network exported from study {_quoted(study_name)}, trial {first.number}."
        )
        facts = [f"{_sentence(_what(first))}: {_stats(first)}"]
        usage = f"``model = {first.class_name}()`` builds the design"
    else:
        numbers = ", ".join(str(d.number) for d in designs)
        title = f"{len(designs)} Inception networks exported from study {_quoted(study_name)}."
        facts = [f"Trials {numbers}, one class each:"]
        facts.append(
            [
                line
                for d in designs
                for line in _item(f"``{d.class_name}``: {_what(d)}: {_stats(d)}")
            ]
        )
        usage = f"``model = {first.class_name}()`` builds a design"
    if weights_files:
        loaders = ", ".join(f"``{d.loader_name}()``" for d in designs if d.number in weights_files)
        usage += f"; {loaders} return{'s' * (len(weights_files) == 1)} it with its trained weights"
    shown = []
    for token in _escape(command, None).split(" "):
        if (
            shown
            and shown[-1].startswith("-")
            and " " not in shown[-1]
            and not token.startswith("-")
        ):
            shown[-1] += " " + token  # keep an option with its value on one line
        else:
            shown.append(token)
    command_lines, current = [], "    "
    for token in shown:
        if current.strip() and len(current) + 1 + len(token) > LINE_LENGTH - 4:
            command_lines.append(current)
            current = "        "
        current += (" " if current.strip() else "") + token
    command_lines.append(current)
    header = _docstring(
        [
            title,
            *facts,
            f"Exported on {date.isoformat()} by the Inception block explorer. Reproduce with:",
            command_lines,
            f"Needs only PyTorch: {usage}.",
        ],
        0,
    )
    names = (
        ["BlockWidths"]
        + [d.class_name for d in designs]
        + [d.loader_name for d in designs if d.number in weights_files]
    )
    lines = [*header, ""]
    lines.append("from functools import partial")
    if weights_files:
        lines.append("from pathlib import Path")
    lines.append("from typing import NamedTuple")
    lines += ["", "import torch", "from torch import nn", ""]
    lines += _all(names)
    units = [_conv_unit(used), _inception_unit(used), _widths_unit(), _init_unit(used)]
    for d in designs:
        units.append(_network_unit(d, used))
        if d.number in weights_files:
            units.append(_loader_unit(d, weights_files[d.number]))
    for unit in units:
        lines += ["", "", *unit]
    return "\n".join(lines) + "\n"


def _all(names: Sequence[str]) -> list[str]:
    one = "__all__ = [" + ", ".join(f'"{n}"' for n in names) + "]"
    if len(one) <= LINE_LENGTH:
        return [one]
    return ["__all__ = [", *(f'    "{n}",' for n in names), "]"]


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
    if output.suffix != ".py":
        raise ExportError(f"the output must be a .py file, got {str(output)!r}")
    if output.is_dir():
        raise ExportError(f"the output {str(output)!r} is a folder")
    if not output.parent.is_dir():
        raise ExportError(
            f"cannot write {str(output)!r}: folder {str(output.parent)!r} does not exist"
        )
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


# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2 from main(), without the usage
        raise ExportError(f"{message} (see --help)")


def _accuracy(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m explorer.export`."""
    p = _Parser(
        prog=PROG,
        description=(
            "Write trials of a study as a standalone PyTorch module that needs only torch: a\n"
            "ConvNormAct unit, an Inception block and one network class per design, whose\n"
            "no-argument constructor builds the design (model = Trial12Net()). The header\n"
            "states the accuracy, parameters, FLOPs and the command that rewrites the file."
        ),
        epilog=(
            "examples:\n"
            f"  {PROG} --study demo --best --max-params 100000 -o best.py\n"
            f"  {PROG} --study demo --trial 12 --weights -o net.py\n"
            "      (also writes net_trial12.pt and load_trial12() in net.py)\n"
            f"  {PROG} --study demo --pareto -o front.py"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--study", required=True, help="name of the study to export from")
    p.add_argument(
        "--storage",
        help="journal file or database URL of the study (default: $EXPLORER_STORAGE, else "
        "studies/explorer.journal)",
    )
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
    p.add_argument(
        "--max-params",
        type=_positive_int,
        metavar="P",
        help="with --best/--pareto: only designs with at most P parameters",
    )
    p.add_argument(
        "--min-accuracy",
        type=_accuracy,
        metavar="A",
        help="with --best/--pareto: only designs with validation accuracy at least A (0..1)",
    )
    p.add_argument(
        "--weights",
        action="store_true",
        help="also save each trial's trained weights as FILE_trialN.pt beside the module and "
        "generate a load_trialN() that reads them (the search must have kept weights; they are "
        "read from $EXPLORER_ARTIFACTS, else the artifacts folder beside the journal file)",
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE.py", help="the module to write")
    return p


def _command(args: argparse.Namespace) -> str:
    parts = ["python", "-m", "explorer.export", "--study", args.study]
    if args.storage:
        parts += ["--storage", redact(args.storage)]
    if args.trial is not None:
        parts += ["--trial", *(str(n) for n in args.trial)]
    else:
        parts.append("--best" if args.best else "--pareto")
        if args.max_params is not None:
            parts += ["--max-params", str(args.max_params)]
        if args.min_accuracy is not None:
            parts += ["--min-accuracy", f"{args.min_accuracy:g}"]
    if args.weights:
        parts.append("--weights")
    return shlex.join([*parts, "-o", args.output])


def _one_line(text: str) -> str:
    """A message safe to print as one line: control characters shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.trial is not None and (
            args.max_params is not None or args.min_accuracy is not None
        ):
            raise ExportError(
                "--max-params and --min-accuracy go with --best or --pareto, not --trial"
            )
        study = load_study(args.storage, args.study)
        mode = "best" if args.best else "pareto" if args.pareto else None
        numbers = (
            args.trial
            if mode is None
            else select_trials(study, mode, args.max_params, args.min_accuracy)
        )
        written = export_to_file(
            study,
            numbers,
            args.output,
            weights=args.weights,
            artifacts=artifact_dir(args.storage),
            command=_command(args),
        )
    except (ExportError, StorageError) as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    code, *pts = written
    classes = ", ".join(f"Trial{n}Net" for n in dict.fromkeys(numbers))
    print(f"wrote {code}: {classes}")
    for path in pts:
        print(f"wrote {path}: trained weights (load_{path.stem.rsplit('_', 1)[-1]}() reads them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
