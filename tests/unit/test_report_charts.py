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
from locust_inference.report.sweep_charts import SloLine, SweepCurve, batch_size, latency_throughput
from support.report_page import figures


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


def _curves() -> tuple[SweepCurve, SweepCurve]:
    fast = SweepCurve(
        label="fast",
        color="#0072B2",
        step=[1, 2, 3],
        load=[1.0, 2.0, 4.0],
        load_unit="users",
        throughput=[37.5, 69.25, 146.0],
        latency={
            "p50": [26.0, 27.75, 26.5],
            "p90": [28.0, 31.5, 30.0],
            "p99": [29.5, 39.25, 34.5],
            "p99.9": [34.25, 47.5, 42.0],
        },
        stable=[True, False, True],
        batch=[1.0, 1.25, 1.5],
        queue_ms=[0.375, 0.4375, 0.5],
        goodput=38.75,
        goodput_slo_ms=30.0,
        goodput_how="interpolated between steps 1 and 2",
    )
    slow = SweepCurve(
        label="slow",
        color="#D55E00",
        step=[1, 2],
        load=[20.0, 40.0],
        load_unit="req/s offered",
        throughput=[20.0, 39.5],
        latency={"p50": [26.25, 27.0], "p90": [27.5, 29.0], "p99": [29.75, 31.0], "p99.9": [35.0, None]},
        stable=[True, True],
        batch=[None, None],
        queue_ms=[None, None],
        goodput=20.0,
        goodput_slo_ms=30.0,
        goodput_how="at step 1",
    )
    return fast, slow


def test_latency_throughput_draws_each_percentile_of_each_server_at_its_achieved_rates() -> None:
    fast, slow = _curves()
    figure = latency_throughput([fast, slow], ["p50", "p90", "p99"], [SloLine(30.0, "p99 <= 30 ms")])
    lines = [t for t in figure.data if t.name.split()[-1] in ("p50", "p90", "p99")]
    assert [(t.name, list(t.x), list(t.y)) for t in lines] == [
        (f"{c.label} {p}", c.throughput, c.latency[p]) for c in (fast, slow) for p in ("p50", "p90", "p99")
    ]
    assert [(t.line.color, t.line.dash) for t in lines[:3]] == [
        ("#0072B2", "solid"),
        ("#0072B2", "dot"),
        ("#0072B2", "dash"),
    ]
    assert {t.line.color for t in lines[3:]} == {"#D55E00"}
    # the unstable step is an open marker and says so in the hover
    assert list(lines[0].marker.symbol) == ["circle", "circle-open", "circle"]
    assert list(lines[3].marker.symbol) == ["circle", "circle"]
    assert [list(row) for row in lines[0].customdata] == [
        [1, 1.0, 26.0, 28.0, 29.5, 34.25, "stable"],
        [2, 2.0, 27.75, 31.5, 39.25, 47.5, "unstable"],
        [3, 4.0, 26.5, 30.0, 34.5, 42.0, "stable"],
    ]
    assert [list(row) for row in lines[3].customdata][1] == [2, 40.0, 27.0, 29.0, 31.0, None, "stable"]
    assert lines[0].hovertemplate == (
        "step %{customdata[0]}: %{customdata[1]:.4~g} users<br>%{x:.3r} req/s achieved<br>"
        "p50 %{customdata[2]:.3r}, p90 %{customdata[3]:.3r}, p99 %{customdata[4]:.3r}, "
        "p99.9 %{customdata[5]:.3r} ms<br>%{customdata[6]}<extra>%{fullData.name}</extra>"
    )
    assert "req/s offered<br>" in lines[3].hovertemplate
    assert figure.layout.yaxis.type == "log"
    assert figure.layout.xaxis.title.text == "achieved throughput (requests/s)"


def test_latency_throughput_draws_the_slo_across_and_each_goodput_up_to_it() -> None:
    fast, slow = _curves()
    figure = latency_throughput([fast, slow], ["p50", "p99"], [SloLine(30.0, "p99 <= 30 ms")])
    by_name = {t.name: t for t in figure.data}
    assert list(by_name) == ["fast p50", "fast p99", "slow p50", "slow p99", "SLO p99 <= 30 ms", "fast goodput",
                             "slow goodput"]  # fmt: skip
    slo = by_name["SLO p99 <= 30 ms"]
    right = 146.0 * 1.06  # past the fastest step
    assert (list(slo.x), list(slo.y)) == ([0.0, pytest.approx(right)], [30.0, 30.0])
    assert list(figure.layout.xaxis.range) == [0.0, pytest.approx(right)]
    assert list(slo.text) == ["", "SLO p99 <= 30 ms"]
    bottom = 26.0 / 1.25  # below the lowest latency drawn, on the log axis
    assert list(figure.layout.yaxis.range) == pytest.approx([math.log10(bottom), math.log10(39.25 * 1.25)])
    good = by_name["fast goodput"]
    assert list(good.x) == [38.75, 38.75]
    assert list(good.y) == [pytest.approx(bottom), 30.0]
    assert list(good.text) == ["", "38.8 req/s (interpolated)"]
    assert good.line.color == "#0072B2"
    assert "interpolated between steps 1 and 2" in good.hovertemplate
    other = by_name["slow goodput"]
    assert (list(other.x), other.y[1], list(other.text)) == ([20.0, 20.0], 30.0, ["", "20 req/s"])


def test_latency_throughput_without_goodput_or_slo_draws_only_the_curves() -> None:
    fast, _ = _curves()
    bare = SweepCurve(**{**fast.__dict__, "goodput": None, "goodput_slo_ms": None, "goodput_how": ""})
    figure = latency_throughput([bare], ["p99"])
    assert [t.name for t in figure.data] == ["fast p99"]
    # an SLO on another percentile gets its own line (dash-dotted)
    figure = latency_throughput([bare], ["p50", "p99.9"], [SloLine(50.0, "p99.9 <= 50 ms")])
    assert [(t.name, t.line.dash) for t in figure.data] == [
        ("fast p50", "solid"),
        ("fast p99.9", "dashdot"),
        ("SLO p99.9 <= 50 ms", "longdash"),
    ]


def test_batch_size_draws_the_servers_batch_at_each_achieved_rate() -> None:
    fast, _ = _curves()
    figure = batch_size([fast])
    (trace,) = figure.data
    assert (trace.name, list(trace.x), list(trace.y)) == ("fast", fast.throughput, fast.batch)
    assert list(trace.marker.symbol) == ["circle", "circle-open", "circle"]
    assert [list(row) for row in trace.customdata] == [
        [1, 1.0, 0.375, "stable"],
        [2, 2.0, 0.4375, "unstable"],
        [3, 4.0, 0.5, "stable"],
    ]
    assert "avg batch %{y:.3r}, queue %{customdata[2]:.3r} ms" in trace.hovertemplate
    assert figure.layout.showlegend is True
