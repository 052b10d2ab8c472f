"""The dashboard's charts as plain Plotly figures, one function per chart, drawn from the infos of
`app.data` and `app.verdicts` (no Streamlit here, so every figure can be built and checked in a
plain test). A verdict is drawn in the one colour of its word, `app.verdicts.VERDICT_COLORS`.

Trials carry their number in ``customdata[0]``, so a selection on any chart names a trial. Plotly
reads a subset of HTML in every text it draws (titles, labels, hovers): text read from a study
(names, labels) goes through `_text` first, so that it is drawn as it is, never as markup.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.analysis import BETTER, WORSE
from explorer.search import HELD, NOT_HELD, UNCHECKED, UNDECIDED

from .data import ImportanceInfo, ParetoInfo, Point, ProgressInfo, ProxyInfo
from .details import BlockDiagram
from .verdicts import (
    NOT_DISTINGUISHABLE,
    OPEN_COLOR,
    VERDICT_COLORS,
    VerificationInfo,
    verdict_color,
    verdict_key,
)

# One look per trial state: complete trials are plain dots, pruned ones hollow, failed ones
# crosses, so the states stay apart in print and for colour-blind readers too.
STATE_STYLE = {
    "COMPLETE": dict(name="complete", symbol="circle", color="#4c78a8", size=8),
    "PRUNED": dict(name="pruned", symbol="circle-open", color="#f58518", size=8),
    "FAIL": dict(name="failed", symbol="x-thin-open", color="#d62728", size=9),
    "RUNNING": dict(name="running", symbol="hourglass", color="#7f7f7f", size=9),
    "WAITING": dict(name="waiting", symbol="hourglass", color="#bab0ac", size=9),
}
FRONT_COLOR = "#2ca02c"
TOTAL_COLOR = "#4c78a8"  # a waterfall's start and end designs, which are levels, not verdicts
REFERENCE_STYLE = {
    "v1": dict(symbol="star", color="#9467bd"),
    "v2": dict(symbol="diamond", color="#8c564b"),
    "v3": dict(symbol="pentagon", color="#e377c2"),
}
_OTHER_REFERENCE = dict(symbol="square", color="#17becf")
# Keep zoom and selection across the live refreshes of a running search.
UIREVISION = "inception-explorer"


def _text(value: object) -> str:
    """Text read from a study as Plotly draws it literally: ``<`` cannot open a tag, ``&`` an
    entity, ``%{`` a hover template's field."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace("%", "&#37;")


def state_style(state: str) -> dict:
    """Legend name and marker of a trial state (grey circles for states without a style)."""
    return STATE_STYLE.get(state, dict(name=state.lower(), symbol="circle", color="#999", size=8))


def state_name(state: str) -> str:
    return state_style(state)["name"]


def _fmt_x(key: str) -> str:
    return {"params": ",.0f", "flops": ".3s", "latency_ms": ".3f"}.get(key, ".4g")


def _hover(info_x_label: str, x_key: str, y_label: str) -> str:
    return (
        "<b>%{customdata[1]}</b> (%{customdata[3]})<br>"
        "%{customdata[2]}<br>"
        f"{info_x_label}: %{{x:{_fmt_x(x_key)}}}<br>"
        f"{y_label}: %{{y:.4f}}%{{customdata[4]}}<extra></extra>"
    )


def _customdata(points: list[Point]) -> list[list]:
    return [
        [
            p.number,
            _text(p.label),
            _text(p.design),
            state_name(p.state),
            f" ({_text(p.note)})" if p.note else "",
        ]
        for p in points
    ]


def _error_y(points: list[Point]) -> dict | None:
    if not any(p.error is not None for p in points):
        return None
    return dict(type="data", array=[p.error or 0.0 for p in points], visible=True, thickness=1)


def pareto_figure(info: ParetoInfo) -> go.Figure:
    """Accuracy against size: a trace per trial state, the front joined, v1/v2 labelled."""
    fig = go.Figure()
    hover = _hover(info.x_label, info.x_key, info.y_label)
    for state, points in info.by_state.items():
        style = state_style(state)
        fig.add_trace(
            go.Scatter(
                x=[p.x for p in points],
                y=[p.y for p in points],
                mode="markers",
                name=style["name"],
                marker=dict(
                    symbol=style["symbol"],
                    color=style["color"],
                    size=style["size"],
                    line=dict(width=1.5, color=style["color"]),
                ),
                opacity=0.85 if state == "COMPLETE" else 0.7,
                error_y=_error_y(points),
                customdata=_customdata(points),
                hovertemplate=hover,
            )
        )
    if info.limit is not None:
        fig.add_vline(
            x=info.limit,
            line=dict(color="#b22222", dash="dash", width=1.5),
            annotation_text=f"limit {info.limit:,g}",
            annotation_position="top right",
        )
    front = info.front
    fig.add_trace(
        go.Scatter(
            x=[p.x for p in front],
            y=[p.y for p in front],
            mode="lines+markers",
            name="Pareto front",
            line=dict(color=FRONT_COLOR, width=2, shape="hv"),
            marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(width=2, color=FRONT_COLOR)),
            customdata=_customdata(front),
            hovertemplate=hover,
        )
    )
    for p in info.references:
        style = REFERENCE_STYLE.get(p.label, _OTHER_REFERENCE)
        fig.add_trace(
            go.Scatter(
                x=[p.x],
                y=[p.y],
                mode="markers+text",
                name=_text(p.label),
                text=[_text(p.label)],
                textposition="top center",
                textfont=dict(size=14, color=style["color"]),
                marker=dict(
                    symbol=style["symbol"],
                    size=18,
                    color=style["color"],
                    line=dict(width=1, color="white"),
                ),
                error_y=_error_y([p]),
                customdata=_customdata([p]),
                hovertemplate=hover,
            )
        )
    fig.update_layout(
        template="plotly_white",
        title=dict(text=_text(info.title), font=dict(size=14), y=0.98) if info.title else None,
        xaxis=dict(title=info.x_label, type="log" if info.log_x else "linear"),
        yaxis=dict(title=info.y_label, tickformat=".0%"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        margin=dict(l=10, r=10, t=80 if info.title else 40, b=10),
        height=480,
        clickmode="event+select",
        uirevision=UIREVISION,
    )
    return fig


def hypervolume_figure(info: ProgressInfo) -> go.Figure:
    """The hypervolume of all trials so far against trial number."""
    fig = go.Figure(
        go.Scatter(
            x=[n for n, _ in info.hypervolume],
            y=[h for _, h in info.hypervolume],
            mode="lines+markers",
            line=dict(shape="hv", color=FRONT_COLOR),
            name="hypervolume",
            hovertemplate="after trial #%{x}: %{y:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=340,
        margin=dict(l=10, r=10, t=50, b=10),
        title=dict(text="hypervolume over trials", font=dict(size=14)),
        xaxis_title="trial",
        yaxis_title="hypervolume (accuracy × parameters)",
        uirevision=UIREVISION,
    )
    return fig


def accuracy_figure(info: ProgressInfo) -> go.Figure:
    """Accuracy of each trial against its number, the running best, and the references."""
    fig = go.Figure()
    for state, points in info.accuracy.items():
        style = state_style(state)
        fig.add_trace(
            go.Scatter(
                x=[p.x for p in points],
                y=[p.y for p in points],
                mode="markers",
                name=style["name"],
                marker=dict(symbol=style["symbol"], color=style["color"], size=style["size"]),
                customdata=_customdata(points),
                hovertemplate=(
                    "<b>%{customdata[1]}</b> (%{customdata[3]})<br>%{customdata[2]}<br>"
                    "accuracy %{y:.4f}%{customdata[4]}<extra></extra>"
                ),
            )
        )
    if info.best_so_far:
        fig.add_trace(
            go.Scatter(
                x=[n for n, _ in info.best_so_far],
                y=[b for _, b in info.best_so_far],
                mode="lines",
                line=dict(shape="hv", color=FRONT_COLOR),
                name="best so far",
                hoverinfo="skip",
            )
        )
    for label, acc in info.references.items():
        style = REFERENCE_STYLE.get(label, _OTHER_REFERENCE)
        fig.add_hline(
            y=acc,
            line=dict(color=style["color"], dash="dot", width=1),
            annotation_text=f"{_text(label)} {acc:.3f}",
            annotation_position="bottom right",
        )
    fig.update_layout(
        template="plotly_white",
        height=340,
        margin=dict(l=10, r=10, t=50, b=10),
        title=dict(text="accuracy by trial", font=dict(size=14)),
        xaxis_title="trial",
        yaxis=dict(title="validation accuracy", tickformat=".0%"),
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
        uirevision=UIREVISION,
    )
    return fig


def importance_figure(info: ImportanceInfo) -> go.Figure:
    """Parameter importances for validation accuracy as horizontal bars, largest on top."""
    names = list(info.importances)[::-1]
    fig = go.Figure(
        go.Bar(
            x=[info.importances[n] for n in names],
            y=[_text(n) for n in names],
            orientation="h",
            marker_color="#4c78a8",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=max(220, 28 * len(names) + 80),
        margin=dict(l=10, r=10, t=50, b=10),
        title=dict(text="parameter importance for validation accuracy", font=dict(size=14)),
        xaxis_title="importance",
    )
    return fig


def proxy_correlation_figure(info: ProxyInfo) -> go.Figure:
    """Spearman correlation with validation accuracy per proxy, the parameter count as baseline."""
    names = list(info.correlations)[::-1]
    fig = go.Figure(
        go.Bar(
            x=[info.correlations[n] for n in names],
            y=[f"{n} (baseline)" if n == "params" else _text(n) for n in names],
            orientation="h",
            marker_color=["#bab0ac" if n == "params" else "#4c78a8" for n in names],
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=max(220, 30 * len(names) + 90),
        margin=dict(l=10, r=10, t=50, b=10),
        title=dict(
            text=f"rank correlation with validation accuracy ({info.trials} trials)",
            font=dict(size=14),
        ),
        xaxis=dict(title="Spearman correlation", range=[-1, 1]),
    )
    return fig


def proxy_scatter_figure(info: ProxyInfo, proxy: str) -> go.Figure:
    """One proxy's score against the trained accuracy, a point per trial."""
    points = info.points.get(proxy, [])
    fig = go.Figure(
        go.Scatter(
            x=[p[1] for p in points],
            y=[p[2] for p in points],
            mode="markers",
            customdata=[[p[0]] for p in points],
            marker=dict(color="#4c78a8", size=7),
            hovertemplate="trial %{customdata[0]}<br>" + _text(proxy) + " %{x:.4g}<br>"
            "val acc %{y:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=360,
        margin=dict(l=10, r=10, t=50, b=10),
        title=dict(
            text=f"{_text(proxy)} at initialisation against trained accuracy "
            f"(Spearman {info.correlations.get(proxy, float('nan')):.2f})",
            font=dict(size=14),
        ),
        xaxis_title=f"{_text(proxy)} score",
        yaxis_title="validation accuracy",
        uirevision=UIREVISION,
    )
    return fig


def curves_figure(curves) -> go.Figure:
    """Training and validation loss, and validation accuracy, per epoch (from
    `app.details.curves_frame`)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation accuracy"))
    for col, color in (("train_loss", "#4c78a8"), ("val_loss", "#f58518")):
        fig.add_trace(
            go.Scatter(
                x=curves["epoch"],
                y=curves[col],
                name=col,
                mode="lines+markers",
                line=dict(color=color),
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=curves["epoch"],
            y=curves["val_acc"],
            name="val_acc",
            mode="lines+markers",
            line=dict(color=FRONT_COLOR),
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    fig.update_layout(
        template="plotly_white",
        height=300,
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0),
    )
    return fig


# Box fills in the manner of the GoogLeNet paper's figure: 1x1 convolutions, larger kernels, pools.
_FILL = {"1x1": "#fff2b3", "conv": "#c6dbef", "pool": "#fcbba1", "io": "#e5e5e5"}


def block_figure(diagram: BlockDiagram) -> go.Figure:
    """A drawing of the block: input, its four branches with kernels and widths, the concat."""
    fig = go.Figure()
    w, h = 0.84, 0.62
    depth = max(3, max(len(b.layers) for b in diagram.branches))
    bottom = depth + 1

    def box(
        x: float, y: float, text: str, fill: str, dash: str = "solid", width: float = w
    ) -> None:
        fig.add_shape(
            type="rect",
            x0=x - width / 2,
            x1=x + width / 2,
            y0=y - h / 2,
            y1=y + h / 2,
            line=dict(color="#555" if dash == "solid" else "#bbb", width=1, dash=dash),
            fillcolor=fill,
            layer="below",
        )
        fig.add_annotation(x=x, y=y, text=text, showarrow=False, font=dict(size=12))

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        fig.add_annotation(
            x=x1,
            y=y1,
            ax=x0,
            ay=y0,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            text="",
            showarrow=True,
            arrowhead=2,
            arrowsize=1,
            arrowwidth=1,
            arrowcolor="#555",
        )

    box(1.5, 0, "input", _FILL["io"], width=1.6)
    out = "?" if diagram.out is None else f"{diagram.out:,}"
    box(1.5, bottom, f"concatenate → {out} channels", _FILL["io"], width=2.6)
    for i, branch in enumerate(diagram.branches):
        if not branch.layers:
            box(i, 1, f"<i>no {branch.name} branch</i>", "white", dash="dot")
            continue
        prev = (1.5 + (i - 1.5) * 0.4, h / 2)
        for j, layer in enumerate(branch.layers):
            y = j + 1
            fill = (
                _FILL["pool"]
                if layer.kind == "pool"
                else (_FILL["1x1"] if layer.label.startswith("1x1") else _FILL["conv"])
            )
            text = f"<b>{layer.label}</b>" + ("" if layer.width is None else f"<br>{layer.width}")
            box(i, y, text, fill)
            arrow(prev[0], prev[1], i, y - h / 2)
            prev = (i, y + h / 2)
        out_text = "pass-through" if branch.out is None else f"{branch.out} ch"
        arrow(prev[0], prev[1], 1.5 + (i - 1.5) * 0.55, bottom - h / 2)
        fig.add_annotation(
            x=i,
            y=prev[1] + 0.05,
            text=out_text,
            showarrow=False,
            yanchor="top",
            xanchor="left",
            xshift=4,
            font=dict(size=10, color="#555"),
        )
    title = " · ".join(
        t
        for t in (
            _text(diagram.title),
            f"each conv: {diagram.unit}",
            "stride 2" if diagram.stride == 2 else "",
        )
        if t
    )
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title, font=dict(size=13)),
        height=90 * (bottom + 1) + 40,
        margin=dict(l=10, r=10, t=40, b=10),
        showlegend=False,
        xaxis=dict(range=[-0.55, 3.55], visible=False, fixedrange=True),
        yaxis=dict(range=[bottom + 0.5, -0.5], visible=False, fixedrange=True),
    )
    return fig


def waterfall_figure(bars, title: str, metric: str = "val") -> go.Figure:
    """A ladder as a waterfall: the start design's accuracy, each step's paired mean difference
    stacked on the one before with its interval (the ladder's, Holm-corrected) as its error bar
    and its verdict's colour (`VERDICT_COLORS`), the end design; the parameters of each design on
    the right axis. Each step's bar carries its index in the ladder in ``customdata[0]``."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    tops = [b.base + b.delta for b in bars]
    finite = [t for t in tops if t == t]  # NaN: a step with no paired seed yet
    low = min(finite, default=0.0) - 0.02
    colors = [TOTAL_COLOR if b.step is None else verdict_color(b.word) for b in bars]
    totals_from_low = [b.step is None and b.base == 0.0 for b in bars]
    labels = [_text(b.label) for b in bars]
    fig.add_trace(
        go.Bar(
            x=labels,
            y=[
                (b.delta - low) if t else b.delta
                for b, t in zip(bars, totals_from_low, strict=True)
            ],
            base=[low if t else b.base for b, t in zip(bars, totals_from_low, strict=True)],
            marker_color=colors,
            error_y=dict(type="data", array=[b.half for b in bars], visible=True),
            customdata=[
                [-1 if b.step is None else b.step, b.text or f"{b.base + b.delta:.4f}", b.params]
                for b in bars
            ],
            hovertemplate="%{x}<br>%{customdata[1]}<br>%{customdata[2]:,} parameters"
            "<extra></extra>",
            name=f"{metric} accuracy (step: Δ with its interval, coloured by its verdict)",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=[b.params for b in bars],
            mode="lines+markers",
            line=dict(color="#9467bd", dash="dot"),
            name="parameters",
            hoverinfo="skip",  # in the bar's hover: a click in a column picks its bar alone
        ),
        secondary_y=True,
    )
    fig.update_layout(
        template="plotly_white",
        height=420,
        margin=dict(l=10, r=10, t=50, b=10),
        title=dict(text=_text(title), font=dict(size=14)),
        showlegend=True,
        legend=dict(orientation="h", y=-0.2),
        # A step worth little is a bar a pixel high under its interval: hovering or clicking
        # anywhere in its column picks it.
        hovermode="x",
        hoverdistance=-1,
        uirevision=UIREVISION,
    )
    fig.update_yaxes(title_text=f"{metric} accuracy", secondary_y=False)
    fig.update_yaxes(title_text="parameters", secondary_y=True, rangemode="tozero")
    return fig


# ---------------------------------------------------------------------------------------------
# The verification of the search's claims

# How a claimant is drawn by where its claims stand: filled in its verdict's colour where the
# race decided, hollow where it did not.
_CLAIMANT_GROUPS = (
    (HELD, BETTER, "held (better)"),
    (NOT_HELD, NOT_DISTINGUISHABLE, "not held (not distinguishable)"),
    (NOT_HELD, WORSE, "not held (worse)"),
    (UNDECIDED, None, "undecided (race stopped)"),
    (UNCHECKED, None, "not checked"),
)


def _error(points, low: str = "low", high: str = "high") -> dict:
    """Asymmetric error bars from each point's interval; none where it has no finite one."""

    def finite(v: float) -> float:
        return v if math.isfinite(v) else 0.0

    return dict(
        type="data",
        symmetric=False,
        array=[finite(getattr(p, high) - p.mean) for p in points],
        arrayminus=[finite(p.mean - getattr(p, low)) for p in points],
        visible=True,
        thickness=1.5,
    )


def verified_figure(info: VerificationInfo) -> go.Figure:
    """The claimants and the references they claim against, retrained at the verification
    budget: test accuracy (mean over seeds, with the rule's interval) against parameters. A
    claimant is coloured by its best claim's verdict (`VERDICT_COLORS`), hollow when the race
    decided none; v1/v2 are labelled as on the search front, with a dotted line at their mean.
    Each point carries its trial number in ``customdata[0]``."""
    fig = go.Figure()
    hover = (
        "<b>%{customdata[1]}</b><br>test accuracy %{y:.4f} %{customdata[2]}<br>"
        "parameters %{x:,.0f}<br>%{customdata[3]}<extra></extra>"
    )

    def customdata(points) -> list[list]:
        return [
            [
                p.number,
                _text(p.label),
                f"[{p.low:.4f}, {p.high:.4f}] over {p.seeds} seeds"
                if p.seeds > 1
                else "over 1 seed",
                "<br>".join(_text(c.short()) for c in info.claims_of(p.number)),
            ]
            for p in points
        ]

    claimants = [p for p in info.retrained if not p.reference and p.params is not None]
    for status, word, name in _CLAIMANT_GROUPS:
        points = [p for p in claimants if p.status == status and (word is None or p.word == word)]
        if not points:
            continue
        color = VERDICT_COLORS[word] if word is not None else OPEN_COLOR
        fig.add_trace(
            go.Scatter(
                x=[p.params for p in points],
                y=[p.mean for p in points],
                mode="markers",
                name=name,
                marker=dict(
                    symbol="circle" if word is not None else "circle-open",
                    size=11,
                    color=color,
                    line=dict(width=2, color=color),
                ),
                error_y=_error(points),
                customdata=customdata(points),
                hovertemplate=hover,
            )
        )
    for p in (p for p in info.retrained if p.reference and p.params is not None):
        style = REFERENCE_STYLE.get(p.label, _OTHER_REFERENCE)
        if math.isfinite(p.mean):
            fig.add_hline(y=p.mean, line=dict(color=style["color"], dash="dot", width=1))
        fig.add_trace(
            go.Scatter(
                x=[p.params],
                y=[p.mean],
                mode="markers+text",
                name=_text(p.label),
                text=[_text(p.label)],
                textposition="top center",
                textfont=dict(size=14, color=style["color"]),
                marker=dict(
                    symbol=style["symbol"],
                    size=18,
                    color=style["color"],
                    line=dict(width=1, color="white"),
                ),  # fmt: skip
                error_y=_error([p]),
                customdata=customdata([p]),
                hovertemplate=hover,
            )
        )
    fig.update_layout(
        template="plotly_white",
        title=dict(
            text=f"retrained at {_text(info.budget)}: test accuracy, mean and interval over seeds",
            font=dict(size=14),
        ),
        xaxis=dict(title="parameters"),
        yaxis=dict(title=f"test accuracy at {_text(info.budget)}", tickformat=".1%"),
        legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
        margin=dict(l=10, r=10, t=50, b=10),
        height=460,
        clickmode="event+select",
        uirevision=UIREVISION,
    )
    return fig


def claims_figure(info: VerificationInfo) -> go.Figure:
    """Each claim the race decided: its difference (design minus reference test accuracy) with
    its interval, coloured by its verdict (`VERDICT_COLORS`), against zero. Undecided and
    unchecked claims are not drawn: the race stated nothing about them."""
    decided = [c for c in info.claims if c.verdict is not None and c.verdict.n >= 2]
    labels = [_text(c.label) for c in decided]
    fig = go.Figure()
    for key in (BETTER, NOT_DISTINGUISHABLE, WORSE):
        mine = [c for c in decided if verdict_key(c.word) == key]
        if not mine:
            continue
        points = [_Diff(c.verdict.mean, *c.verdict.interval) for c in mine]
        fig.add_trace(
            go.Scatter(
                x=[p.mean for p in points],
                y=[_text(c.label) for c in mine],
                mode="markers",
                name=key,
                marker=dict(size=11, color=VERDICT_COLORS[key], symbol="diamond"),
                error_x=_error(points),
                customdata=[[c.design, _text(c.verdict.text())] for c in mine],
                hovertemplate="<b>%{y}</b><br>%{customdata[1]}<extra></extra>",
            )
        )
    fig.add_vline(x=0, line=dict(color="#555", width=1))
    fig.update_layout(
        template="plotly_white",
        title=dict(
            text=f"each claim at {_text(info.budget)}: test accuracy, design minus reference",
            font=dict(size=14),
        ),
        xaxis=dict(tickformat="+.1%", zeroline=False),
        yaxis=dict(categoryorder="array", categoryarray=labels[::-1], type="category"),
        legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
        margin=dict(l=10, r=10, t=50, b=10),
        height=max(260, 34 * len(decided) + 150),
        uirevision=UIREVISION,
    )
    return fig


class _Diff(NamedTuple):
    mean: float
    low: float
    high: float
