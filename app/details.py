"""The dashboard's per-trial views as plain data: learning curves, the metrics table, the block
diagram (per stage, at the trained network's real widths) and two designs side by side. No
Streamlit here; `app.charts` draws these, `app.main` lays them out."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pandas as pd

from explorer.store import TrialRecord
from search_space import BN_PLACEMENT_DESCRIPTIONS, BlockConfig, NetworkConfig

from .data import _curves, _format, _number_or_none, design, reeval_accuracy
from .guard import short


def curves_frame(record: TrialRecord) -> pd.DataFrame:
    """The per-epoch learning curves: ``epoch``, ``train_loss``, ``val_loss``, ``val_acc``."""
    curves = _curves(record)
    columns = ("train_loss", "val_loss", "val_acc")
    n = max((len(curves.get(c) or []) for c in ("epoch", *columns)), default=0)
    epochs = list(curves.get("epoch") or [])
    if len(epochs) != n or not all(isinstance(e, int) and not isinstance(e, bool) for e in epochs):
        epochs = list(range(1, n + 1))
    data: dict[str, list] = {"epoch": epochs}
    for col in columns:
        values = list(curves.get(col) or [])
        data[col] = [_number_or_none(v) for v in values] + [None] * (n - len(values))
    return pd.DataFrame(data, dtype=float).astype({"epoch": int})


# Attributes shown elsewhere (the design, curves) or too bulky for the metrics table.
_NOT_METRICS = ("network", "curves", "reference", "reeval", "versions")


def trial_metrics(record: TrialRecord) -> pd.DataFrame:
    """Every scalar attribute of a trial (and its re-evaluation) as ``metric`` / ``value`` rows,
    each value shortened (a stored attribute may be of any size)."""
    rows = [("state", record.state), ("label", record.label())]
    stored = record.to_dict()
    for key in sorted(stored):
        if key in _NOT_METRICS or isinstance(stored[key], dict):
            continue
        rows.append((key, _format(stored[key])))
    reeval = record.reeval
    if isinstance(reeval, dict):
        rows += [(f"reeval.{k}", _format(v)) for k, v in sorted(reeval.items())]
    for group in ("device_info", "proxies"):
        values = getattr(record, group)
        if isinstance(values, dict):
            rows += [(f"{group}.{k}", _format(v)) for k, v in sorted(values.items())]
    versions = record.versions
    if isinstance(versions, dict):
        rows += [(f"versions.{k}", _format(v)) for k, v in sorted(versions.items())]
    return pd.DataFrame([(short(k), short(v)) for k, v in rows], columns=["metric", "value"])


class Layer(NamedTuple):
    label: str  # "3x3 conv" or "3x3 max pool"
    width: int | None  # output channels; None for a pool
    kind: str  # "conv" or "pool"


class Branch(NamedTuple):
    name: str  # "1x1", "3x3", the wide kind, "pool"
    layers: tuple[Layer, ...]  # empty when the branch is removed
    out: int | None  # channels it contributes; None for a stride-2 pass-through


class BlockDiagram(NamedTuple):
    title: str
    branches: tuple[Branch, Branch, Branch, Branch]
    unit: str  # how one conv unit orders conv, BN and ReLU
    out: int | None  # concatenated channels (None when a pass-through's width is unknown)
    stride: int


# How one convolution unit is ordered under each BN placement (search_space's one table).
BN_UNITS = {k: v.replace("->", "→") for k, v in BN_PLACEMENT_DESCRIPTIONS.items()}


def block_diagram(
    block: BlockConfig, title: str = "", in_channels: int | None = None
) -> BlockDiagram:
    """The four branches of a block as layers with kernels and widths, in concatenation order."""
    s = "/2" if block.stride == 2 else ""
    b1 = (Layer("1x1 conv", block.ch1x1, "conv"),) if block.ch1x1 else ()
    b2 = (
        (Layer("1x1 conv", block.ch3x3_reduce, "conv"), Layer(f"3x3 conv{s}", block.ch3x3, "conv"))
        if block.ch3x3
        else ()
    )
    b3: tuple[Layer, ...] = ()
    if block.wide:
        kernels = block.wide_kernels()
        b3 = (Layer("1x1 conv", block.wide_reduce, "conv"),) + tuple(
            Layer(f"{k[0]}x{k[1]} conv{s if i == len(kernels) - 1 else ''}", block.wide, "conv")
            for i, k in enumerate(kernels)
        )
    if block.stride == 2:
        b4: tuple[Layer, ...] = (Layer("3x3/2 max pool", None, "pool"),)
        pool_out = in_channels
    elif block.pool_proj:
        b4 = (
            Layer(f"3x3 {block.pool_type} pool", None, "pool"),
            Layer("1x1 conv", block.pool_proj, "conv"),
        )
        pool_out = block.pool_proj
    else:
        b4, pool_out = (), 0
    wide_name = (
        f"1x{block.asym_n} + {block.asym_n}x1" if block.wide_kind == "asym" else block.wide_kind
    )
    branches = (
        Branch("1x1", b1, block.ch1x1),
        Branch("3x3", b2, block.ch3x3),
        Branch(wide_name, b3, block.wide),
        Branch(f"{block.pool_type} pool", b4, pool_out),
    )
    out = None if pool_out is None else block.ch1x1 + block.ch3x3 + block.wide + pool_out
    return BlockDiagram(title, branches, BN_UNITS[block.bn], out, block.stride)


# ---------------------------------------------------------------------------------------------
# Comparing two designs

COMPARED_METRICS = ("val_acc", "params", "flops", "latency_ms", "test_acc")


def compare_frame(a: TrialRecord, b: TrialRecord) -> pd.DataFrame:
    """Each block field and metric of two trials side by side, with whether they differ; when
    either design is per-stage, the fields stage by stage (group ``stage 1``, ...)."""
    rows = []
    fields = [f.name for f in dataclasses.fields(BlockConfig)]
    nets = (a.network, b.network)
    if any(n is not None and n.per_stage for n in nets):
        stages = max(len(n.stages) for n in nets if n is not None)
        groups = [(f"stage {s + 1}", s) for s in range(stages)]
    else:
        groups = [("design", None)]
    for group, stage in groups:
        da, db = (_design_of(n, stage) for n in nets)
        for name in fields:
            va = getattr(da, name) if da else None
            vb = getattr(db, name) if db else None
            rows.append((group, name, _format(va), _format(vb), va != vb))
    for key in COMPARED_METRICS:
        if key == "test_acc":
            va, vb = reeval_accuracy(a)[0], reeval_accuracy(b)[0]
        else:
            va, vb = a.value(key), b.value(key)
        if va is None and vb is None:
            continue
        rows.append(("metric", key, _format(va), _format(vb), va != vb))
    return pd.DataFrame(rows, columns=["group", "field", a.label(), b.label(), "differs"])


def _design_of(network: NetworkConfig | None, stage: int | None) -> BlockConfig | None:
    """The shared block (`stage` None), or a stage's design (None past the network's stages)."""
    if network is None:
        return None
    if stage is None:
        return network.block
    return network.stage_design(stage) if stage < len(network.stages) else None


def design_lines(record: TrialRecord) -> str:
    """The design in short form: one line, or one line per stage for a per-stage design."""
    net = record.network
    if net is None or not net.per_stage:
        return design(record)
    return "\n".join(f"stage {s + 1}: {d.short()}" for s, d in enumerate(net.designs))


def stage_diagrams(record: TrialRecord) -> list[BlockDiagram]:
    """The block as the trained network has it in each stage (each stage's own design in a
    per-stage network): its widths scaled by the network's width (0.25 by default) in stage 0,
    doubled in each later stage, so the drawing shows the real channel counts rather than the
    paper-scale design."""
    net = record.network
    if net is None:
        return []
    out = []
    own = " (its own design)" if net.per_stage else ""
    for stage in range(len(net.stages)):
        factor = net.width * 2**stage
        title = f"{record.label()}, stage {stage + 1} of {len(net.stages)}{own}, widths x{factor:g}"
        out.append(block_diagram(net.stage_block(stage), title))
    return out
