"""The report's chart functions on known inputs: every trace holds exactly the numbers it was given."""

from __future__ import annotations

import json
import math
import re

import pytest
from locust_inference.report.charts import (
    Line,
    figure_html,
    latency_distribution,
    latency_over_time,
    throughput_over_time,
)
from report_page import figures


def test_distribution_keeps_percentiles_and_latencies_and_places_them_on_the_log_axis() -> None:
    fast = Line("fast", "#0072B2", [0.0, 50.0, 90.0, 99.0, 99.9, 100.0], [1.25, 2.5, 3.75, 8.0, 12.5, 20.0])
    slow = Line("slow", "#D55E00", [0.0, 75.0, 99.999, 100.0], [4.0, 5.5, 30.25, 41.0], "dash")
    figure = latency_distribution([fast, slow])
    a, b = figure.data
    assert (a.name, b.name) == ("fast", "slow")
    assert (list(a.customdata), list(a.y)) == (fast.x, fast.y)
    assert (list(b.customdata), list(b.y)) == (slow.x, slow.y)
    # 99.999% is five nines, so the axis runs to the 5th decade; the maximum sits half a decade past it.
    top = 5.5
    assert list(a.x) == pytest.approx([0.0, math.log10(2.0), 1.0, 2.0, 3.0, top], rel=1e-12)
    assert list(b.x) == pytest.approx([0.0, math.log10(4.0), 5.0, top], rel=1e-12)
    axis = figure.layout.xaxis
    assert list(axis.tickvals) == [0, 1, 2, 3, 4, 5, top]
    assert list(axis.ticktext) == ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "max"]
    assert list(axis.range) == [0.0, top]
    assert (a.line.color, a.line.dash, b.line.color, b.line.dash) == ("#0072B2", "solid", "#D55E00", "dash")
    assert a.hovertemplate == "p%{customdata:.6~g}: %{y:.3r} ms<extra>%{fullData.name}</extra>"
    assert figure.layout.title.text == "Latency distribution by percentile"


def test_distribution_axis_shows_at_least_four_decades() -> None:
    figure = latency_distribution([Line("a", "#000000", [0.0, 50.0, 100.0], [1.0, 2.0, 3.0])])
    assert list(figure.layout.xaxis.ticktext) == ["0%", "90%", "99%", "99.9%", "99.99%", "max"]
    assert list(figure.data[0].x) == pytest.approx([0.0, math.log10(2.0), 4.5], rel=1e-12)


def test_throughput_keeps_times_values_and_gaps() -> None:
    line = Line("triton", "#0072B2", [0.0, 1.0, 2.0, 3.0], [None, 12.5, 30.125, 29.75])
    figure = throughput_over_time([line])
    (trace,) = figure.data
    assert (list(trace.x), list(trace.y)) == (line.x, line.y)
    assert (trace.mode, trace.connectgaps) == ("lines", True)  # N/A seconds are skipped, the rest joined
    assert trace.hovertemplate == "%{x:.1f} s: %{y:.3r} requests/s<extra>%{fullData.name}</extra>"
    assert figure.layout.xaxis.title.text == "seconds since the start of the run"
    assert figure.layout.yaxis.title.text == "requests/s"


def test_a_line_with_one_value_is_drawn_as_a_dot() -> None:
    (trace,) = throughput_over_time([Line("once", "#000000", [0.0, 1.0], [None, 7.5])]).data
    assert trace.mode == "markers"


def test_latency_over_time_keeps_each_line_with_its_dash() -> None:
    p50 = Line("triton p50", "#0072B2", [0.0, 1.0, 2.0], [None, 28.0, 29.0])
    p95 = Line("triton p95", "#0072B2", [0.0, 1.0, 2.0], [None, 31.0, 33.0], "dash")
    figure = latency_over_time([p50, p95])
    assert [(t.name, list(t.x), list(t.y), t.line.dash) for t in figure.data] == [
        ("triton p50", p50.x, p50.y, "solid"),
        ("triton p95", p95.x, p95.y, "dash"),
    ]
    assert figure.layout.title.text == "p50 and p95 latency over time"


def test_figure_html_draws_with_the_pages_plotlyjs_and_links_nothing() -> None:
    line = Line("a", "#000000", [0.0, 1.0], [0.1, 0.2])
    chunk = figure_html(throughput_over_time([line]), "chart-id")
    assert re.findall(r"<script[^>]*>", chunk) == ["<script>"]  # one inline script, no src
    assert "plotly.js v" not in chunk  # the library is the page's, not the chart's
    assert re.findall(r"https?://", chunk) == []
    (figure,) = figures(chunk).values()
    assert list(figures(chunk)) == ["chart-id"]
    assert figure["data"][0]["x"] == line.x and figure["data"][0]["y"] == line.y
    assert figure["config"] == {"displaylogo": False, "showSendToCloud": False, "responsive": True}
    # the same numbers as the figure object's, after the trip through the page's JSON
    assert figure["data"] == json.loads(throughput_over_time([line]).to_json())["data"]
