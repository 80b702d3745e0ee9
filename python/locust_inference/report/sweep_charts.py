"""The load sweep's charts, drawn by plotly from plain data: latency against throughput, and batch size.

Like :mod:`.charts`, the functions know nothing of runs or files: a server's sweep is a :class:`SweepCurve`
(its label, colour and one value per step), a latency SLO a :class:`SloLine`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from .charts import _INK, _layout

# Each percentile's dash: one colour per server, one dash per percentile.
PERCENTILE_DASHES = {"p50": "solid", "p90": "dot", "p99": "dash"}
OTHER_DASH = "dashdot"  # a percentile drawn only because an SLO is on it (p95, p99.9, ...)
HOVER_PERCENTILES = ("p50", "p90", "p99", "p99.9")
THROUGHPUT_TITLE = "achieved throughput (requests/s)"
_X_PAD, _Y_PAD = 1.06, 1.25  # room past the last step (x, linear) and around the latencies (y, log)


@dataclass(frozen=True)
class SweepCurve:
    """One server's sweep, a value per step: ``throughput`` (achieved req/s) is the x of every chart;
    ``latency`` maps a percentile (``p99``) to its ms per step; ``batch``, ``queue_ms`` are the server's own
    numbers (``None`` where it reports none); ``goodput`` is the rate within the SLO, if any."""

    label: str
    color: str
    step: list[int]
    load: list[float]
    load_unit: str  # "users" or "req/s offered"
    throughput: list[float]
    latency: dict[str, list[float | None]]
    stable: list[bool]
    batch: list[float | None] = field(default_factory=list)
    queue_ms: list[float | None] = field(default_factory=list)
    goodput: float | None = None
    goodput_slo_ms: float | None = None  # the SLO the goodput was judged by
    goodput_how: str = ""

    @property
    def interpolated(self) -> bool:
        return self.goodput_how.startswith("interpolated")


@dataclass(frozen=True)
class SloLine:
    """A latency SLO: a horizontal line at ``ms``, labelled with its ``text`` (``p99 <= 30 ms``)."""

    ms: float
    text: str


def _symbols(curve: SweepCurve) -> list[str]:
    """A filled dot for a stable step, an open one for a step that never stabilised."""
    return ["circle" if stable else "circle-open" for stable in curve.stable]


def _state(curve: SweepCurve) -> list[str]:
    return ["stable" if stable else "unstable" for stable in curve.stable]


def _step_hover(curve: SweepCurve) -> str:
    """The hover's first two lines: step and load (customdata 0, 1), then the achieved rate (x)."""
    load = "%{customdata[1]:.4~g} " + curve.load_unit
    return "step %{customdata[0]}: " + load + "<br>%{x:.3r} req/s achieved<br>"


def _percentile_trace(curve: SweepCurve, key: str) -> go.Scatter:
    missing: list[float | None] = [None] * len(curve.step)
    rows = zip(curve.step, curve.load, *(curve.latency.get(p, missing) for p in HOVER_PERCENTILES), strict=True)
    customdata = [[*row, state] for row, state in zip(rows, _state(curve), strict=True)]
    percentiles = ", ".join(f"{p} %{{customdata[{i + 2}]:.3r}}" for i, p in enumerate(HOVER_PERCENTILES))
    state = len(HOVER_PERCENTILES) + 2
    return go.Scatter(
        name=f"{curve.label} {key}",
        legendgroup=curve.label,
        x=curve.throughput,
        y=curve.latency[key],
        mode="lines+markers",
        line={"color": curve.color, "dash": PERCENTILE_DASHES.get(key, OTHER_DASH), "width": 2.0},
        marker={"color": curve.color, "size": 8, "symbol": _symbols(curve), "line": {"color": curve.color, "width": 2}},
        customdata=customdata,
        hovertemplate=_step_hover(curve)
        + f"{percentiles} ms<br>%{{customdata[{state}]}}<extra>%{{fullData.name}}</extra>",
    )


def _goodput_trace(curve: SweepCurve, bottom: float) -> go.Scatter:
    """A vertical dotted line at the goodput rate up to its SLO, with a diamond where they meet."""
    assert curve.goodput is not None and curve.goodput_slo_ms is not None
    label = f"{curve.goodput:.3g} req/s" + (" (interpolated)" if curve.interpolated else "")
    return go.Scatter(
        name=f"{curve.label} goodput",
        legendgroup=curve.label,
        x=[curve.goodput, curve.goodput],
        y=[bottom, curve.goodput_slo_ms],
        mode="lines+markers+text",
        line={"color": curve.color, "dash": "dot", "width": 1.5},
        marker={"color": curve.color, "size": [0, 12], "symbol": "diamond"},
        text=["", label],
        textposition="top center",
        textfont={"color": curve.color},
        hovertemplate=f"goodput %{{x:.3r}} req/s<br>{curve.goodput_how}<extra>%{{fullData.name}}</extra>",
    )


def _bounds(curves: Sequence[SweepCurve], percentiles: Sequence[str], slos: Sequence[SloLine]) -> tuple[float, float]:
    values = [v for c in curves for p in percentiles for v in c.latency.get(p, []) if v is not None and v > 0]
    values += [slo.ms for slo in slos if slo.ms > 0]
    values += [c.goodput_slo_ms for c in curves if c.goodput_slo_ms is not None and c.goodput_slo_ms > 0]
    if not values:
        return 0.1, 10.0
    return min(values) / _Y_PAD, max(values) * _Y_PAD


def latency_throughput(
    curves: Sequence[SweepCurve], percentiles: Sequence[str] = ("p50", "p90", "p99"), slos: Sequence[SloLine] = ()
) -> go.Figure:
    """Latency (``y``, ms, log axis) against achieved throughput (``x``): a line per server and percentile,
    one point per step (open markers: unstable steps); each SLO a horizontal line across the chart, each
    server's goodput a dotted vertical line up to the SLO it was judged by."""
    bottom, top = _bounds(curves, percentiles, slos)
    right = max([1.0, *(x for c in curves for x in c.throughput), *(c.goodput or 0.0 for c in curves)]) * _X_PAD
    layout: dict[str, Any] = _layout("Latency against throughput", THROUGHPUT_TITLE, "latency (ms, log scale)")
    layout["xaxis"] = {**layout["xaxis"], "range": [0.0, right]}
    layout["yaxis"] = {**layout["yaxis"], "type": "log", "range": [math.log10(bottom), math.log10(top)]}
    del layout["yaxis"]["rangemode"]
    # a line per server and percentile, the SLOs and the goodputs: too many for a legend above the chart
    layout["legend"] = {"orientation": "v", "x": 1.02, "y": 1.0, "xanchor": "left", "yanchor": "top"}
    layout["margin"] = {**layout["margin"], "t": 48}
    traces = [_percentile_trace(c, p) for c in curves for p in percentiles if p in c.latency]
    for slo in slos:
        traces.append(
            go.Scatter(
                name=f"SLO {slo.text}",
                x=[0.0, right],
                y=[slo.ms, slo.ms],
                mode="lines+text",
                line={"color": _INK, "dash": "longdash", "width": 1.5},
                text=["", f"SLO {slo.text}"],
                textposition="top left",
                hovertemplate=f"SLO {slo.text}<extra></extra>",
            )
        )
    traces += [_goodput_trace(c, bottom) for c in curves if c.goodput is not None and c.goodput_slo_ms is not None]
    return go.Figure(traces, layout)


def batch_size(curves: Sequence[SweepCurve]) -> go.Figure:
    """The server's average batch size (``y``) at each step's achieved throughput (``x``), a line per server
    that reports one: dynamic batching taking over as the load grows."""
    layout = _layout("Average batch size per step (server-side)", THROUGHPUT_TITLE, "requests per model execution")
    layout["showlegend"] = True  # name the server even when it is the only one
    layout["xaxis"] = {**layout["xaxis"], "rangemode": "tozero"}
    traces = []
    for curve in curves:
        customdata = [
            [step, load, queue, state]
            for step, load, queue, state in zip(curve.step, curve.load, curve.queue_ms, _state(curve), strict=True)
        ]
        traces.append(
            go.Scatter(
                name=curve.label,
                x=curve.throughput,
                y=curve.batch,
                mode="lines+markers",
                line={"color": curve.color, "width": 2.0},
                marker={
                    "color": curve.color,
                    "size": 8,
                    "symbol": _symbols(curve),
                    "line": {"color": curve.color, "width": 2},
                },
                connectgaps=True,
                customdata=customdata,
                hovertemplate=_step_hover(curve) + "avg batch %{y:.3r}, queue %{customdata[2]:.3r} ms"
                "<br>%{customdata[3]}<extra>%{fullData.name}</extra>",
            )
        )
    return go.Figure(traces, layout)
