"""The comparison page: one self-contained HTML file with the tables and the charts."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from plotly.offline import get_plotlyjs

from .charts import (
    DASHES,
    Line,
    figure_html,
    latency_distribution,
    latency_over_time,
    over_time,
    throughput_over_time,
)
from .runs import PALETTE, MetricsPoint, Run, row_label
from .sweep_charts import SloLine, SweepCurve, batch_size, latency_throughput
from .sweeps import Goodput, SweepStep
from .tables import (
    COMPOSING_NOTE,
    DASH,
    MINUS,
    OPEN_LOOP_NOTE,
    TOKENS_NOTE,
    breakdown_colors,
    breakdown_rows,
    date_range,
    format_ms,
    format_when,
    has_breakdown,
    has_open_loop,
    has_tokens,
    html_table,
    locust_notes,
    model_names,
    open_loop_rows,
    page_title,
    summary_rows,
    sweep_model_goodputs,
    sweep_model_rows,
    sweep_plan_line,
    sweep_result_lines,
    sweep_rows,
    sweep_title,
    token_rows,
)

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24; background: #fff;
       margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; border-bottom: 1px solid #d8dee4; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 24px 0 6px; }
.meta, .note, figcaption, footer { color: #57606a; font-size: 0.92em; }
.note { margin: 4px 0 10px; max-width: 80em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 8px 0; }
th, td { padding: 5px 10px; border-bottom: 1px solid #d8dee4; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; }
thead th { white-space: normal; vertical-align: bottom; max-width: 7.5em; }
th:first-child, td:first-child, th.text, td.text { text-align: left; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px;
          vertical-align: -1px; }
figure { margin: 8px 0 0; }
.chart { width: 100%; max-width: 960px; }
code { font-size: 0.92em; }
.warning { color: #8a1c00; background: #fff4ef; border-left: 4px solid #D55E00; padding: 6px 10px; }
""".strip()


# Plotly draws the charts with inline scripts, from the plotly.js inlined once in <head>; nothing else may
# run or be fetched when the page is viewed (data: is plotly's own inline images, e.g. the modebar's).
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _distribution_lines(runs: Sequence[Run]) -> list[Line]:
    return [
        Line(
            row_label(run, stats),
            run.color,
            [p for p, _ in stats.distribution],
            [ms for _, ms in stats.distribution],
            DASHES[i % len(DASHES)],
        )
        for run in runs
        for i, stats in enumerate(run.requests)
        if stats.distribution
    ]


def _distribution_desc(runs: Sequence[Run]) -> str:
    return "Latency by percentile, one line per server: " + "; ".join(
        f"{row_label(run, s)} p50 {format_ms(s.latency_ms.get('p50'))} ms, p99 {format_ms(s.latency_ms.get('p99'))} "
        f"ms, max {format_ms(s.latency_ms.get('max'))} ms"
        for run in runs
        for s in run.requests
        if s.distribution
    )


def _time_zero(run: Run) -> float:
    """Where a run's history chart starts: the run's start, or its first history row when that is far off."""
    first = run.history[0].t
    start = run.started.timestamp() if run.started else first
    return min(first, start) if first - start < 3600 else first


def _throughput_lines(runs: Sequence[Run]) -> list[Line]:
    lines = []
    for run in runs:
        if run.history:
            zero = _time_zero(run)
            lines.append(
                Line(run.label, run.color, [p.t - zero for p in run.history], [p.requests_per_s for p in run.history])
            )
    return lines


def _latency_time_lines(runs: Sequence[Run]) -> list[Line]:
    lines = []
    for run in runs:
        if run.history:
            zero = _time_zero(run)
            t = [p.t - zero for p in run.history]
            lines.append(Line(f"{run.label} p50", run.color, t, [p.p50_ms for p in run.history]))
            lines.append(Line(f"{run.label} p95", run.color, t, [p.p95_ms for p in run.history], "dash"))
    return lines


def _metrics_zero(run: Run) -> float | None:
    """The x origin of a run's metrics: its throughput chart's, so both share one time axis."""
    if run.history:
        return _time_zero(run)
    return run.started.timestamp() if run.started else None


Pick = Callable[[MetricsPoint], float | dict[str, float] | None]  # a number, or one per GPU


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _metric_lines(runs: Sequence[Run], series: Sequence[tuple[str, str, Pick]], scale: float = 1.0) -> list[Line]:
    """One line per run and series (label, dash, pick), or per GPU when the pick gives one value per GPU."""
    lines = []
    for run in runs:
        zero = _metrics_zero(run)
        if zero is None or not run.metrics:
            continue
        t = [p.t - zero for p in run.metrics]
        for label, dash, pick in series:
            values = [pick(p) for p in run.metrics]
            per_gpu = [v if isinstance(v, dict) else {} for v in values]
            single = [v if isinstance(v, float | int) else None for v in values]
            for i, key in enumerate(sorted({k for v in per_gpu for k in v})[:8]):
                ys = [_scaled(v.get(key), scale) for v in per_gpu]
                lines.append(Line(f"{run.label} {label} {key[:12]}", run.color, t, ys, DASHES[i % len(DASHES)]))
            if any(v is not None for v in single):
                lines.append(Line(f"{run.label} {label}", run.color, t, [_scaled(v, scale) for v in single], dash))
    return lines


def _utilization_lines(runs: Sequence[Run]) -> list[Line]:
    return _metric_lines(
        runs,
        [
            ("GPU", "solid", lambda p: p.gpu_utilization_pct),
            ("server CPU", "dash", lambda p: p.cpu_utilization_pct),
            ("server process CPU", "dot", lambda p: p.process_cpu_pct),
        ],
    )


def _server_time_lines(runs: Sequence[Run]) -> list[Line]:
    return _metric_lines(
        runs, [("queue", "dash", lambda p: p.queue_ms), ("compute infer", "solid", lambda p: p.compute_infer_ms)]
    )


def _memory_lines(runs: Sequence[Run]) -> list[Line]:
    return _metric_lines(
        runs,
        [
            ("GPU memory", "solid", lambda p: p.gpu_memory_used_bytes),
            ("server CPU memory", "dash", lambda p: p.cpu_memory_used_bytes),
            ("server process memory", "dot", lambda p: p.process_rss_bytes),
        ],
        scale=2**-20,
    )


def _power_lines(runs: Sequence[Run]) -> list[Line]:
    return _metric_lines(runs, [("GPU power", "solid", lambda p: p.gpu_power_w)])


def _client_cpu_lines(runs: Sequence[Run]) -> list[Line]:
    lines = []
    for run in runs:
        zero = _metrics_zero(run)
        if zero is None:
            continue
        for i, (process, samples) in enumerate(sorted(run.health.cpu.items())):
            if samples:
                t = [s - zero for s, _ in samples]
                lines.append(Line(f"{run.label} {process[:24]}", run.color, t, [p for _, p in samples], DASHES[i % 4]))
    return lines


def _lag_lines(runs: Sequence[Run]) -> list[Line]:
    lines = []
    for run in runs:
        zero = _metrics_zero(run)
        if zero is not None and run.health.lag:
            t = [s - zero for s, _ in run.health.lag]
            lines.append(Line(f"{run.label} p99 send lag", run.color, t, [v for _, v in run.health.lag]))
    return lines


METRIC_CHARTS = (
    # id, drawn from, title, y axis, unit, caption
    (
        "server-utilization",
        _utilization_lines,
        "Server utilisation over time",
        "utilisation (%)",
        "%",
        "The server's GPU utilisation per GPU (solid) and its host's CPU utilisation (dashed) as Triton's metrics "
        "report them, or a local server process's CPU (dotted, % of one core), each window's value at its end.",
    ),
    (
        "server-time",
        _server_time_lines,
        "Server time per request over time",
        "ms per request",
        "ms",
        "Triton's queue (dashed) and compute-infer (solid) time per successful request of the run's model, "
        "each window's mean: where the server spends the latency above.",
    ),
    (
        "server-memory",
        _memory_lines,
        "Server memory over time",
        "MiB",
        "MiB",
        "GPU memory used per GPU (solid), the server host's CPU memory used (dashed) or a local server "
        "process's resident memory (dotted).",
    ),
    (
        "server-power",
        _power_lines,
        "GPU power over time",
        "W",
        "W",
        "Each GPU's power draw, as Triton reports it.",
    ),
    (
        "client-cpu",
        _client_cpu_lines,
        "Load generator CPU over time",
        "Python thread CPU (% of a core)",
        "%",
        "The CPU of each load-generator process's Python thread (it runs every user: at 90% of a core and "
        "above, requests wait for it and the run's latencies are suspect).",
    ),
    (
        "client-lag",
        _lag_lines,
        "Open-loop send lag over time",
        "p99 send lag (ms)",
        "ms",
        "The p99 of how late open-loop requests were sent after their intended time, per window of completions.",
    ),
)


def _metrics_section(runs: Sequence[Run], charts: dict[str, str | None]) -> list[str]:
    """The server's metrics and the load generator's health over time, when any run recorded them."""
    drawn = [(chart_id, caption) for chart_id, _, _, _, _, caption in METRIC_CHARTS if charts.get(chart_id)]
    notes = [f"{run.label}: {run.metrics_note}" for run in runs if run.metrics_note]
    if not drawn and not notes:
        return []
    parts = [
        '<section aria-labelledby="server-metrics">',
        '<h2 id="server-metrics">Server metrics and load generator over time</h2>',
        '<p class="note">On the time axis of the throughput chart: read by the load test from the server\'s '
        "metrics endpoint (Triton's Prometheus metrics) once per interval, and from each load-generator "
        "process (see docs/metrics.md).</p>",
    ]
    for chart_id, caption in drawn:
        parts.append(_figure(charts[chart_id], caption, caption, ""))
    if notes:
        parts.append(f'<p class="note">{html.escape("; ".join(notes))}.</p>')
    parts.append("</section>")
    return parts


def saturation_warnings(runs: Sequence[Run]) -> list[str]:
    """One line per run whose load generator was saturated during its measured window."""
    return [
        f"{run.label}: the load generator was saturated (Python's thread at or above "
        f"{run.health.threshold_pct:.0f}% of a core in "
        + ", ".join(f"{p} (peak {run.health.peaks.get(p, 0):.0f}%)" for p in run.health.saturated[:8])
        + "): its latencies and rates are suspect; add workers or lower the load"
        for run in runs
        if run.health.saturated
    ]


def _sweep_curve(label: str, color: str, mode: str, steps: Sequence[SweepStep], good: Goodput | None) -> SweepCurve:
    keys = sorted({k for s in steps for k in s.latency_ms})
    return SweepCurve(
        label=label,
        color=color,
        step=[s.step for s in steps],
        load=[s.load for s in steps],
        load_unit="users" if mode == "concurrency" else "req/s offered",
        throughput=[s.achieved_per_s for s in steps],
        latency={k: [s.latency_ms.get(k) for s in steps] for k in keys},
        stable=[s.stable for s in steps],
        batch=[(s.server or {}).get("avg_batch_size") for s in steps],
        queue_ms=[(s.server or {}).get("queue_ms") for s in steps],
        goodput=None if good is None else good.rate_per_s,
        goodput_slo_ms=None if good is None else good.slo_ms,
        goodput_how="" if good is None else good.how,
    )


def sweep_curves(runs: Sequence[Run]) -> list[SweepCurve]:
    """A curve per sweep (its total), and with several models one per model, in the next colours."""
    curves = []
    for run in runs:
        sweep = run.sweep
        if sweep is None or not sweep.steps:
            continue
        curves.append(_sweep_curve(run.label, run.color, sweep.mode, sweep.steps, sweep.goodput))
        first = PALETTE.index(run.color) if run.color in PALETTE else 0
        for k, name in enumerate(sweep.model_names, start=1):
            good = (sweep.model_goodput or {}).get(name)
            color = PALETTE[(first + k) % len(PALETTE)]
            curves.append(_sweep_curve(f"{run.label} {name}", color, sweep.mode, sweep.model_steps(name), good))
    return curves


def _sweep_slos(runs: Sequence[Run]) -> list[SloLine]:
    """Each distinct SLO the sweeps' goodputs were judged by."""
    slos: list[SloLine] = []
    for run in runs:
        good = run.sweep.goodput if run.sweep is not None else None
        if good is not None and all(slo.ms != good.slo_ms for slo in slos):
            slos.append(SloLine(good.slo_ms, good.slo))
    return slos


def _sweep_percentiles(runs: Sequence[Run], curves: Sequence[SweepCurve]) -> list[str]:
    """p50, p90 and p99, and any other percentile an SLO is on."""
    keys = ["p50", "p90", "p99"]
    for run in runs:
        good = run.sweep.goodput if run.sweep is not None else None
        if good is not None and good.percentile not in keys and any(good.percentile in c.latency for c in curves):
            keys.append(good.percentile)
    return keys


def _charts(runs: Sequence[Run]) -> dict[str, str | None]:
    """Each chart's HTML by its id, ``None`` where there is nothing to draw."""
    charts = {
        "latency-distribution": (latency_distribution, _distribution_lines(runs)),
        "throughput-over-time": (throughput_over_time, _throughput_lines(runs)),
        "latency-over-time": (latency_over_time, _latency_time_lines(runs)),
    }
    metric_lines = {chart_id: lines_of(runs) for chart_id, lines_of, *_ in METRIC_CHARTS}
    # Every chart over time spans the same seconds, so a moment is at the same place in each.
    timed = [
        *charts["throughput-over-time"][1],
        *charts["latency-over-time"][1],
        *(line for lines in metric_lines.values() for line in lines),
    ]
    ends = [x for line in timed for x in line.x]
    span = [min(0.0, *ends), max(ends)] if ends else None
    drawn = {}
    for chart_id, (draw, lines) in charts.items():
        figure = draw(lines) if lines else None
        if figure is not None and chart_id != "latency-distribution" and span is not None:
            figure.update_xaxes(range=span)
        drawn[chart_id] = figure_html(figure, chart_id) if figure is not None else None
    curves = sweep_curves(runs)
    batched = [c for c in curves if any(b is not None for b in c.batch)]
    drawn["sweep-latency-throughput"] = (
        figure_html(
            latency_throughput(curves, _sweep_percentiles(runs, curves), _sweep_slos(runs)), "sweep-latency-throughput"
        )
        if curves
        else None
    )
    drawn["sweep-batch-size"] = figure_html(batch_size(batched), "sweep-batch-size") if batched else None
    for chart_id, _, title, y_title, unit, _ in METRIC_CHARTS:
        lines = metric_lines[chart_id]
        figure = over_time(lines, title, y_title, unit).update_xaxes(range=span) if lines else None
        drawn[chart_id] = figure_html(figure, chart_id) if figure is not None else None
    return drawn


def _goodput_text(run: Run) -> str:
    good = run.sweep.goodput if run.sweep is not None else None
    if good is None:
        return f"{run.label} no SLO"
    if good.rate_per_s is None:
        return f"{run.label} none at {good.slo}"
    return f"{run.label} {format_ms(good.rate_per_s)} req/s at {good.slo}"


def _sweep_section(runs: Sequence[Run], charts: dict[str, str | None]) -> list[str]:
    """The load sweep: latency against throughput for every server, Triton's batch size, a table per server."""
    swept = [run for run in runs if run.sweep is not None]
    goodputs = "; ".join(_goodput_text(run) for run in swept)
    parts = [
        '<section aria-labelledby="sweep">',
        '<h2 id="sweep">Load sweep</h2>',
        '<p class="note">Each server under a growing load (make sweep), the same steps for each: every step '
        "measured in windows until the last few agree on throughput and p99 (stable) or the windows run out "
        "(unstable, drawn as open circles and marked NO in the tables).</p>",
        _figure(
            charts["sweep-latency-throughput"],
            f"Latency percentiles against achieved throughput, one colour per server. Goodput: {goodputs}.",
            "Latency against achieved throughput, one point per step: p50 solid, p90 dotted, p99 dashed (log scale). "
            "The black line is the latency SLO; a dotted vertical line marks each server's goodput, the highest "
            "throughput within it (interpolated between two steps when so labelled).",
            "No sweep step was measured.",
        ),
    ]
    if charts["sweep-batch-size"] is not None:
        parts.append(
            _figure(
                charts["sweep-batch-size"],
                "Average batch size per sweep step against achieved throughput, for servers that report it.",
                "The server's average batch size at each step (requests per model execution), from its own "
                "statistics for that step alone: above 1, dynamic batching is grouping requests.",
                "",
            )
        )
    for run in swept:
        sweep = run.sweep
        assert sweep is not None
        header, rows = sweep_rows(sweep)
        results = " ".join(sweep_result_lines(sweep))
        saturated = [
            str(s.step) for s in sweep.steps if (s.metrics or {}).get("client_python_cpu_peak_pct", 0.0) >= 90.0
        ]
        parts += [
            f"<h3>{html.escape(sweep_title(run, sweep))}</h3>",
            *(
                [
                    f'<p class="warning" role="alert">The load generator was saturated (Python\'s thread at 90% of '
                    f"a core or more) in step {html.escape(', '.join(saturated))}: those steps' numbers are "
                    "suspect.</p>"
                ]
                if saturated
                else []
            ),
            f'<p class="note">{html.escape(sweep_plan_line(sweep))}</p>',
            html_table(header, rows, [run.color] * len(rows), results)
            if rows
            else f'<p class="note">{html.escape(results)}</p>',
        ]
        m_header, m_rows = sweep_model_rows(sweep)
        if m_rows:
            parts += [
                f"<h3>{html.escape(sweep_title(run, sweep))}, per model</h3>",
                "<p class=\"note\">Each model's part of each step, over the same windows (the step's stability is "
                "judged on its total), with Triton's breakdown of that model for the step.</p>",
                html_table(m_header, m_rows, [run.color] * len(m_rows), " ".join(sweep_model_goodputs(sweep))),
            ]
    parts.append("</section>")
    return parts


def _figure(chart: str | None, desc: str, caption: str, missing: str) -> str:
    if chart is None:
        return f'<p class="note">{html.escape(missing)}</p>'
    return (
        f'<figure>\n<div class="chart" role="img" aria-label="{html.escape(desc)}">\n{chart}\n</div>\n'
        f"<figcaption>{html.escape(caption)}</figcaption>\n</figure>"
    )


def render_html(runs: Sequence[Run]) -> str:
    """The whole comparison page: one file with inline CSS, plotly.js and charts; nothing to fetch."""
    charts = _charts(runs)
    title = page_title(runs)
    header, rows = summary_rows(runs)
    row_colors = [run.color for run in runs for _ in run.requests]
    summary = html_table(
        header,
        rows,
        row_colors,
        "Latencies are client-side, measured by the Rust client around each successful request (HdrHistogram, "
        "3 significant digits); requests counts those, failures come on top. TTFB is the time to the first byte "
        "of the response."
        + (
            " For open-loop runs they run from each request's intended send time (see Open loop below)."
            if has_open_loop(runs)
            else ""
        ),
    )
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        f"<title>Inference latency: {html.escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
    ]
    if any(chart is not None for chart in charts.values()):
        parts.append(f"<script>{get_plotlyjs()}</script>")
    parts += [
        "</head>",
        "<body>",
        "<main>",
        f"<h1>Inference latency: {html.escape(' vs '.join(r.label for r in runs))}</h1>",
        f'<p class="meta">Model {html.escape(model_names(runs))}, {html.escape(date_range(runs))}. '
        f"{len(runs)} load test{'s' if len(runs) != 1 else ''}, same client (locust-inference) for each server.</p>",
        '<section aria-labelledby="summary">',
        '<h2 id="summary">Summary</h2>',
        summary,
    ]
    notes = locust_notes(runs)
    if notes:
        parts.append(
            '<p class="note">Locust\'s own p50 / p95 / p99 come from its bucketed (rounded) response times, '
            "so they are coarser than the histogram's: " + html.escape("; ".join(notes)) + ".</p>"
        )
    parts += [f'<p class="warning" role="alert">{html.escape(w)}</p>' for w in saturation_warnings(runs)]
    parts.append("</section>")

    if has_tokens(runs):
        t_header, t_rows, t_colors = token_rows(runs)
        parts += [
            '<section aria-labelledby="tokens">',
            '<h2 id="tokens">Tokens</h2>',
            html_table(t_header, t_rows, t_colors, TOKENS_NOTE),
            "</section>",
        ]

    if has_open_loop(runs):
        o_header, o_rows, o_colors = open_loop_rows(runs)
        parts += [
            '<section aria-labelledby="open-loop">',
            '<h2 id="open-loop">Open loop: did each server keep up?</h2>',
            html_table(o_header, o_rows, o_colors, OPEN_LOOP_NOTE),
            "</section>",
        ]

    if has_breakdown(runs):
        b_header, b_rows = breakdown_rows(runs)
        parts += [
            '<section aria-labelledby="breakdown">',
            '<h2 id="breakdown">Server-side breakdown</h2>',
            html_table(
                b_header,
                b_rows,
                breakdown_colors(runs),
                f"The server's own statistics over the run, mean milliseconds per request; client {MINUS} server "
                f"is the client's mean latency minus the server's total: network, HTTP and (de)serialisation. "
                f"{DASH} means the server does not report them; {COMPOSING_NOTE}.",
            ),
            "</section>",
        ]

    history_notes = [f"{r.label}: {r.history_note}" for r in runs if r.history_note]
    parts += [
        '<section aria-labelledby="distribution">',
        '<h2 id="distribution">Latency distribution</h2>',
        _figure(
            charts["latency-distribution"],
            _distribution_desc(runs),
            "Latency at each percentile, HdrHistogram style: the x axis is 1/(1 - percentile) on a log scale, "
            "so the tail gets as much room as the median. The right edge is the maximum.",
            "No latency distribution was recorded.",
        ),
        "</section>",
        '<section aria-labelledby="throughput">',
        '<h2 id="throughput">Throughput over time</h2>',
        _figure(
            charts["throughput-over-time"],
            "Requests per second over time, one line per server, from Locust's stats history.",
            "Requests per second as Locust reports it each second: an average over about the last 10 seconds.",
            "No per-second history was recorded.",
        ),
        "</section>",
        '<section aria-labelledby="latency-time">',
        '<h2 id="latency-time">Latency over time</h2>',
        _figure(
            charts["latency-over-time"],
            "p50 (solid) and p95 (dashed) latency over time, per server, from Locust's stats history.",
            "p50 (solid) and p95 (dashed) from Locust's per-second history: percentiles over a rolling window, "
            "rounded like Locust's other numbers.",
            "No per-second history was recorded.",
        ),
    ]
    if history_notes:
        parts.append(f'<p class="note">Missing history: {html.escape("; ".join(history_notes))}.</p>')
    parts.append("</section>")
    parts += _metrics_section(runs, charts)
    if any(run.sweep is not None for run in runs):
        parts += _sweep_section(runs, charts)
    parts += ['<section aria-labelledby="runs">', '<h2 id="runs">Runs</h2>', "<ul>"]
    for run in runs:
        duration = f", {format_ms(run.duration_s)} s" if run.duration_s is not None else ""
        parts.append(
            f"<li><strong>{html.escape(run.label)}</strong>: model <code>{html.escape(run.model or DASH)}</code> "
            f"at <code>{html.escape(run.host or DASH)}</code>, {html.escape(format_when(run.started))} to "
            f"{html.escape(format_when(run.ended))}{duration}; from <code>{html.escape(str(run.folder))}</code>"
            + ("" if run.sweep is None else f", sweep from <code>{html.escape(str(run.sweep.file))}</code>")
            + "</li>"
        )
    parts += [
        "</ul>",
        "</section>",
        f"<footer><p>Generated by <code>python -m locust_inference.report</code> on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.</p></footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)
