"""The comparison page: one self-contained HTML file with the tables and the charts."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

from .charts import distribution_chart, latency_time_chart, throughput_chart
from .runs import Run
from .tables import (
    DASH,
    MINUS,
    OPEN_LOOP_NOTE,
    breakdown_rows,
    date_range,
    format_ms,
    format_when,
    has_open_loop,
    html_table,
    locust_notes,
    model_names,
    open_loop_rows,
    page_title,
    summary_rows,
)

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24; background: #fff;
       margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; border-bottom: 1px solid #d8dee4; padding-bottom: 4px; }
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
svg.chart { width: 100%; max-width: 960px; height: auto; display: block; font: 12px system-ui, sans-serif; }
svg .plot { fill: #fff; stroke: none; }
svg .grid line { stroke: #e4e8ec; stroke-width: 1; }
svg .axis { stroke: #57606a; stroke-width: 1; }
svg .ticks text { fill: #57606a; }
svg .axis-label { fill: #1b1f24; font-size: 13px; }
svg .legend text { fill: #1b1f24; font-size: 13px; }
svg .series { fill: none; stroke-width: 2.2; stroke-linejoin: round; stroke-linecap: round; }
code { font-size: 0.92em; }
""".strip()


def _figure(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return f'<p class="note">{html.escape(missing)}</p>'
    return f"<figure>\n{svg}\n<figcaption>{html.escape(caption)}</figcaption>\n</figure>"


def render_html(runs: Sequence[Run]) -> str:
    """The whole comparison page: one file, inline CSS and SVG, nothing to fetch."""
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
        # Nothing may be fetched when the page is viewed: inline styles and inline SVG only.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>Inference latency: {html.escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
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
    parts.append("</section>")

    if has_open_loop(runs):
        o_header, o_rows, o_colors = open_loop_rows(runs)
        parts += [
            '<section aria-labelledby="open-loop">',
            '<h2 id="open-loop">Open loop: did each server keep up?</h2>',
            html_table(o_header, o_rows, o_colors, OPEN_LOOP_NOTE),
            "</section>",
        ]

    if any(r.server_stats is not None for r in runs):
        b_header, b_rows = breakdown_rows(runs)
        parts += [
            '<section aria-labelledby="breakdown">',
            '<h2 id="breakdown">Server-side breakdown</h2>',
            html_table(
                b_header,
                b_rows,
                [r.color for r in runs],
                f"The server's own statistics over the run, mean milliseconds per request; client {MINUS} server "
                f"is the client's mean latency minus the server's total: network, HTTP and (de)serialisation. "
                f"{DASH} means the server does not report them.",
            ),
            "</section>",
        ]

    history_notes = [f"{r.label}: {r.history_note}" for r in runs if r.history_note]
    parts += [
        '<section aria-labelledby="distribution">',
        '<h2 id="distribution">Latency distribution</h2>',
        _figure(
            distribution_chart(runs),
            "Latency at each percentile, HdrHistogram style: the x axis is 1/(1 - percentile) on a log scale, "
            "so the tail gets as much room as the median. The right edge is the maximum.",
            "No latency distribution was recorded.",
        ),
        "</section>",
        '<section aria-labelledby="throughput">',
        '<h2 id="throughput">Throughput over time</h2>',
        _figure(
            throughput_chart(runs),
            "Requests per second as Locust reports it each second: an average over about the last 10 seconds.",
            "No per-second history was recorded.",
        ),
        "</section>",
        '<section aria-labelledby="latency-time">',
        '<h2 id="latency-time">Latency over time</h2>',
        _figure(
            latency_time_chart(runs),
            "p50 (solid) and p95 (dashed) from Locust's per-second history: percentiles over a rolling window, "
            "rounded like Locust's other numbers.",
            "No per-second history was recorded.",
        ),
    ]
    if history_notes:
        parts.append(f'<p class="note">Missing history: {html.escape("; ".join(history_notes))}.</p>')
    parts += ["</section>", '<section aria-labelledby="runs">', '<h2 id="runs">Runs</h2>', "<ul>"]
    for run in runs:
        duration = f", {format_ms(run.duration_s)} s" if run.duration_s is not None else ""
        parts.append(
            f"<li><strong>{html.escape(run.label)}</strong>: model <code>{html.escape(run.model or DASH)}</code> "
            f"at <code>{html.escape(run.host or DASH)}</code>, {html.escape(format_when(run.started))} to "
            f"{html.escape(format_when(run.ended))}{duration}; from <code>{html.escape(str(run.folder))}</code></li>"
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
