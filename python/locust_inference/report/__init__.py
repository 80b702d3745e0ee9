"""Compare load-test runs: one self-contained HTML page and a Markdown table.

Each run folder (normally ``results/triton`` and ``results/litserve``) holds the ``latency.json``
written at the end of a load test, and optionally Locust's per-second ``*_stats_history.csv`` and the
``sweep.json`` of ``make sweep`` (a Load sweep section: latency against throughput, goodput, a table per step)::

    python -m locust_inference.report results/triton results/litserve --out results

writes ``results/compare.html`` (tables and plotly charts with hover values, plotly.js embedded once:
nothing is fetched at view time, so it opens offline) and ``results/compare.md`` (the tables, for pasting
into a pull request).

One module per job: ``runs`` loads the results (``sweeps`` a sweep's), ``tables`` formats them as Markdown and
HTML tables, ``charts`` and ``sweep_charts`` draw them, ``page`` lays out the HTML page and ``cli`` writes both
files. The package needs
plotly but not the Rust extension, so it runs where the extension is not built.
"""

from __future__ import annotations

from .cli import build_report, main
from .page import render_html
from .runs import HistoryPoint, OpenLoop, ReportError, RequestStats, Run, load_run, read_history
from .tables import format_ms, render_markdown

__all__ = [
    "HistoryPoint",
    "OpenLoop",
    "ReportError",
    "RequestStats",
    "Run",
    "build_report",
    "format_ms",
    "load_run",
    "main",
    "read_history",
    "render_html",
    "render_markdown",
]
