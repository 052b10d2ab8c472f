"""Rendering validated designs as one standalone module: plain data in, source text out.

The module is a generated header docstring (what was exported, its accuracy, the input it takes
and the command that rewrites it), then the text of `standalone` verbatim (the building blocks,
never assembled from strings), then per design an `InputConfig` constant and a small network
class whose keyword defaults are the design, written as literals of validated integers, floats
and the project's own choice strings, and, with weights, a ``load_trialN`` function.

Names and labels read from a storage appear only in docstrings, escaped, so a hostile study
cannot break or inject into the module.
"""

from __future__ import annotations

import ast
import datetime
import importlib.resources
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from .selection import ExportDesign, ExportError, network_kwargs
from .standalone import InputConfig

LINE_LENGTH = 100  # the project's ruff line length; the generated module keeps to it
STANDALONE = "standalone.py"


def blocks_source() -> str:
    """The text of the `standalone` module after its docstring: the body of every export."""
    text = importlib.resources.files(__package__).joinpath(STANDALONE).read_text(encoding="utf-8")
    docstring = ast.parse(text).body[0]
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    lines = text.splitlines(keepends=True)
    return "".join(lines[docstring.end_lineno :]).lstrip("\n")


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


def _literal(value: object) -> str:
    """A validated int, float, bool or string (or tuple of them) as Python source."""
    if isinstance(value, tuple):
        items = [_literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return f'"{_escape(value)}"'
    raise TypeError(f"not a literal of the design: {value!r}")


def _numbers(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def _input_sentence(inputs: InputConfig) -> str:
    """What the network takes and what it does with it, for docstrings."""
    c, h, w = inputs.input_size
    takes = f"Takes float images N x {c} x {h} x {w} with values in [0, 1] (torchvision's ToTensor)"
    if inputs.dataset == "unknown":
        return f"{takes}; the dataset is not recorded, so it uses them as given (mean 0, std 1)."
    return (
        f"{takes} and standardises them itself with the {inputs.dataset} mean "
        f"({_numbers(inputs.mean)}) and std ({_numbers(inputs.std)}): do not normalise them again."
    )


def _cfg_unit(design: ExportDesign) -> list[str]:
    inputs = design.inputs
    lines = [f"{design.cfg_name} = InputConfig("]
    for field, value in inputs._asdict().items():
        one = f"    {field}={_literal(value)},"
        if len(one) <= LINE_LENGTH:
            lines.append(one)
        else:  # the class names, one a line
            lines += [f"    {field}=(", *(f"        {_literal(v)}," for v in value), "    ),"]
    return [*lines, ")"]


def _network_unit(design: ExportDesign) -> list[str]:
    """The network class: the design as keyword defaults, so ``Net()`` builds it as trained."""
    net = design.network
    kwargs = network_kwargs(design)
    size = int(net.image_size)
    doc = _docstring(
        [
            f"Trial {design.number}: {_escape(net.short())}.",
            f"{_sentence(_kind(design))}; block widths x{float(net.width):g} of paper scale, "
            f"{len(net.stages)} stage{'s' * (len(net.stages) > 1)}. {_sentence(_stats(design))} "
            f"{_input_sentence(design.inputs)} Its input, mean, std and class names are "
            f"``{design.cfg_name}`` (also ``{design.class_name}.cfg``).",
            "The keyword defaults are the design; other ``depths`` (blocks per stage), "
            "``widths`` (one ``BlockWidths`` per stage, a 2x2 pool before each stage after the "
            "first) or ``wide_kernels`` build variants of it."
            + (
                " Each stage has its own design: ``wide_kernels``, ``pool_type`` and ``bn`` "
                "hold one entry per stage."
                if net.per_stage
                else ""
            ),
        ],
        4,
    )
    plan = net.channel_plan()
    widths: list[str] = []
    index = 1
    for s, (depth, row) in enumerate(zip(kwargs["depths"], kwargs["widths"])):
        side = size >> s
        cin, cout = plan[index][1], plan[index + depth - 1][2]
        index += depth
        where = f"{side} x {side}" + (f" after a 2x2 {kwargs['downsample']} pool" if s else "")
        widths.append(f"            # stage {s}: {where}, {int(cin)} -> {int(cout)} channels")
        values = [f"{name}={int(v)}" for name, v in row._asdict().items()]
        widths += _call("BlockWidths", values, 12, ",")
    annotations = {
        "in_channels": "int",
        "num_classes": "int",
        "stem_width": "int",
        "depths": "tuple[int, ...]",
        "widths": "tuple[BlockWidths, ...]",
        "wide_kernels": "tuple[tuple[int, int], ...]",
        "pool_type": "str",
        "bn": "str",
    }
    if net.per_stage:  # one entry per stage (`standalone.per_stage`)
        annotations |= {
            "wide_kernels": "tuple[tuple[tuple[int, int], ...], ...]",
            "pool_type": "tuple[str, ...]",
            "bn": "tuple[str, ...]",
        }
    annotations |= {
        "stem_bn": "bool",
        "downsample": "str",
        "dropout": "float",
        "mean": "tuple[float, ...]",
        "std": "tuple[float, ...]",
    }
    assert list(annotations) == list(kwargs)  # one annotation per keyword of InceptionNet
    params = []
    for name, kind in annotations.items():
        if name == "widths":
            params += [f"        widths: {kind} = (", *widths, "        ),"]
        elif name in ("mean", "std"):
            params.append(f"        {name}: {kind} = {design.cfg_name}.{name},")
        else:
            one = f"        {name}: {kind} = {_literal(kwargs[name])},"
            if len(one) <= LINE_LENGTH or len(kwargs[name]) < 2:
                params.append(one)
            else:  # a per-stage choice, one stage a line
                items = [
                    f"            {_literal(v)},  # stage {i}" for i, v in enumerate(kwargs[name])
                ]
                params += [f"        {name}: {kind} = (", *items, "        ),"]
    lines = [f"class {design.class_name}(InceptionNet):", *doc, ""]
    lines += [f"    cfg = {design.cfg_name}", ""]
    lines += ["    def __init__(", "        self,", *params, "    ) -> None:"]
    lines += [
        "        super().__init__(",
        *(f"            {n}={n}," for n in annotations),
        "        )",
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
    lines += _docstring(
        [
            f"{design.class_name} with the trained weights of trial {design.number}, in eval "
            "mode; it takes images in [0, 1].",
            "``path`` defaults to the weights file saved beside this module.",
        ],
        4,
    )
    lines += ["    if path is None:"]
    lines += _call("path = Path(__file__).with_name", [name], 8)
    lines += [
        f"    model = {design.class_name}()",
        "    load_weights(model, path, map_location)",
        "    return model",
    ]
    return lines


def _header(
    designs: Sequence[ExportDesign],
    study_name: str,
    command: str,
    date: datetime.date,
    loaders: Sequence[ExportDesign],
) -> list[str]:
    first = designs[0]
    if len(designs) == 1:
        title = (
            f"Inception network exported from study {_quoted(study_name)}, trial {first.number}."
        )
        facts: list[str | list[str]] = [f"{_sentence(_what(first))}: {_stats(first)}"]
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
    if loaders:
        names = ", ".join(f"``{d.loader_name}()``" for d in loaders)
        usage += f"; {names} return{'s' * (len(loaders) == 1)} it with its trained weights"
    inputs = {d.inputs for d in designs}
    preprocessing = (
        f"{_input_sentence(first.inputs)} Classes, in label order: "
        f"{', '.join(first.inputs.class_names)}. ``{first.cfg_name}`` states them."
        if len(inputs) == 1
        else "Inputs are float images in [0, 1] (torchvision's ToTensor); each network "
        "standardises them itself, with the statistics its ``TRIALn_CFG`` states beside its "
        "input size and class names."
    )
    return _docstring(
        [
            title,
            *facts,
            preprocessing,
            f"Exported on {date.isoformat()} by the Inception block explorer. Reproduce with:",
            _command_lines(command),
            f"Needs only PyTorch: {usage}.",
        ],
        0,
    )


def _command_lines(command: str) -> list[str]:
    """The command, escaped, wrapped at spaces, each option kept with its value."""
    shown: list[str] = []
    for token in _escape(command, None).split(" "):
        if (
            shown
            and shown[-1].startswith("-")
            and " " not in shown[-1]
            and not token.startswith("-")
        ):
            shown[-1] += " " + token
        else:
            shown.append(token)
    lines, current = [], "    "
    for token in shown:
        if current.strip() and len(current) + 1 + len(token) > LINE_LENGTH - 4:
            lines.append(current)
            current = "        "
        current += (" " if current.strip() else "") + token
    return [*lines, current]


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
    loaders = [d for d in designs if d.number in weights_files]
    names = [
        *(d.cfg_name for d in designs),
        *(d.class_name for d in designs),
        *(d.loader_name for d in loaders),
    ]
    units = [_all(names)]
    for d in designs:
        units += [_cfg_unit(d), _network_unit(d)]
        if d in loaders:
            units.append(_loader_unit(d, weights_files[d.number]))
    header = _header(designs, study_name, command, date, loaders)
    generated = "\n\n\n".join("\n".join(unit) for unit in units)
    return "\n".join(header) + "\n\n" + blocks_source() + "\n\n" + generated + "\n"


def _all(names: Sequence[str]) -> list[str]:
    one = "__all__ = [" + ", ".join(f'"{n}"' for n in names) + "]"
    if len(one) <= LINE_LENGTH:
        return [one]
    return ["__all__ = [", *(f'    "{n}",' for n in names), "]"]
