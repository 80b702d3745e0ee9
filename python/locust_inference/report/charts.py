"""Charts, drawn by plotly: one function per chart, each taking plain data and returning a figure.

The functions know nothing of runs or files: a chart is a few :class:`Line` (a label, a colour and its
points), so a new chart over the same kind of data is one more function here. :func:`figure_html` turns a
figure into a ``<div>`` and the script that draws it; the page embeds plotly.js itself, once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

# plotly's names for the dashes that tell lines of one colour apart (several request names of one run).
DASHES = ("solid", "dash", "dot", "dashdot")

# No modebar logo (a link to plotly's site) and no "Share chart" button (an upload to Plotly Cloud):
# the page fetches, sends and links nothing.
CONFIG = {"displaylogo": False, "showSendToCloud": False, "responsive": True}
HEIGHT = "420px"

_INK, _MUTED, _GRID = "#1b1f24", "#57606a", "#e4e8ec"  # the page's text, secondary text and rule colours


@dataclass(frozen=True)
class Line:
    """One line of a chart: its legend label, colour, dash and points; ``None`` in ``y`` is a missing value."""

    label: str
    color: str
    x: list[float]
    y: list[float | None]
    dash: str = "solid"


def _layout(title: str, x_title: str, y_title: str) -> dict[str, Any]:
    axis = {
        "showline": True,
        "linecolor": _MUTED,
        "gridcolor": _GRID,
        "zeroline": False,
        "ticks": "outside",
        "tickcolor": _MUTED,
        "automargin": True,
    }
    return {
        "template": "none",  # plotly's default template would add ~10 kB of unused styles to every chart
        "title": {"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        "font": {"family": 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif', "size": 12, "color": _INK},
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
        "margin": {"l": 64, "r": 24, "t": 72, "b": 56},
        "legend": {"orientation": "h", "x": 0.0, "y": 1.0, "yanchor": "bottom"},
        "hovermode": "closest",
        "xaxis": {**axis, "title": {"text": x_title}},
        "yaxis": {**axis, "title": {"text": y_title}, "rangemode": "tozero"},
    }


def _trace(line: Line, hovertemplate: str, x: list[float] | None = None, **extra: object) -> go.Scatter:
    """A line; a single point is drawn as a dot (a line needs two). Gaps (``None``) are joined across."""
    values = sum(v is not None for v in line.y)
    return go.Scatter(
        name=line.label,
        x=line.x if x is None else x,
        y=line.y,
        mode="lines" if values > 1 else "markers",
        line={"color": line.color, "dash": line.dash, "width": 2.2},
        marker={"color": line.color, "size": 7},
        connectgaps=True,
        hovertemplate=hovertemplate + "<extra>%{fullData.name}</extra>",
        **extra,
    )


def percentile_x(p: float, top: float) -> float:
    """HdrHistogram's x for percentile ``p``: log10(1 / (1 - p)); 100% sits at ``top``, past the last decade."""
    if p >= 100.0:
        return top
    return math.log10(1.0 / (1.0 - p / 100.0))


def _decade_label(k: int) -> str:
    return "0%" if k == 0 else f"{100.0 * (1.0 - 10.0**-k):.{max(0, k - 2)}f}%"


def latency_distribution(lines: Sequence[Line]) -> go.Figure:
    """Latency (``y``, ms) by percentile (``x``, 0 to 100), one line per server, on HdrHistogram's log axis.

    The trace's ``x`` is the axis position; ``customdata`` keeps each point's percentile for the hover."""
    finite_max = max([1.0, *(1.0 / (1.0 - p / 100.0) for line in lines for p in line.x if p < 100.0)])
    last_decade = max(4, math.ceil(math.log10(finite_max) - 1e-9))
    top = last_decade + 0.5
    layout = _layout(
        "Latency distribution by percentile", "percentile (log scale: each step is ten times rarer)", "latency (ms)"
    )
    layout["xaxis"] = {
        **layout["xaxis"],
        "range": [0.0, top],
        "tickmode": "array",
        "tickvals": [*range(last_decade + 1), top],
        "ticktext": [*(_decade_label(k) for k in range(last_decade + 1)), "max"],
    }
    traces = [
        _trace(
            line,
            "p%{customdata:.6~g}: %{y:.3r} ms",
            x=[percentile_x(p, top) for p in line.x],
            customdata=list(line.x),
        )
        for line in lines
    ]
    return go.Figure(traces, layout)


def throughput_over_time(lines: Sequence[Line]) -> go.Figure:
    """Requests per second (``y``) at each second since the run's start (``x``), one line per server."""
    layout = _layout("Throughput over time", "seconds since the start of the run", "requests/s")
    return go.Figure([_trace(line, "%{x:.1f} s: %{y:.3r} requests/s") for line in lines], layout)


def latency_over_time(lines: Sequence[Line]) -> go.Figure:
    """Latency percentiles (``y``, ms) at each second since the run's start (``x``): a line per server and
    percentile (the caller gives each its label and dash)."""
    layout = _layout("p50 and p95 latency over time", "seconds since the start of the run", "latency (ms)")
    return go.Figure([_trace(line, "%{x:.1f} s: %{y} ms") for line in lines], layout)


def over_time(lines: Sequence[Line], title: str, y_title: str, unit: str) -> go.Figure:
    """Any value (``y``, in ``unit``) at each second since the run's start (``x``): the server's metrics and
    the load generator's health, on the same axis as :func:`throughput_over_time`."""
    layout = _layout(title, "seconds since the start of the run", y_title)
    return go.Figure([_trace(line, f"%{{x:.1f}} s: %{{y:.4r}} {unit}") for line in lines], layout)


def figure_html(figure: go.Figure, div_id: str) -> str:
    """The figure as a ``<div>`` and an inline script that draws it with the page's plotly.js."""
    html: str = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config=CONFIG,
        default_width="100%",
        default_height=HEIGHT,
        validate=True,
    )
    return html
