"""Compare load-test runs: one self-contained HTML page and a Markdown table.

Each run folder (normally ``results/triton`` and ``results/litserve``) holds the ``latency.json``
written at the end of a load test, and optionally Locust's per-second ``*_stats_history.csv``::

    python -m locust_inference.report results/triton results/litserve --out results

writes ``results/compare.html`` (tables and inline SVG charts: no scripts, fonts or anything else
fetched at view time) and ``results/compare.md`` (the tables, for pasting into a pull request).

This module uses the standard library only, so it can run where the extension is not built.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

LATENCY_FILE = "latency.json"
SUPPORTED_VERSION = 1

# Okabe-Ito: distinct for the common kinds of colour blindness, and on white and in print.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "6 4", "2 3", "8 3 2 3")
MINUS = "\u2212"
DASH = "\u2014"  # an empty cell

BREAKDOWN_FIELDS = (
    ("avg_batch_size", "avg batch"),
    ("queue_ms", "queue ms"),
    ("compute_input_ms", "compute input ms"),
    ("compute_infer_ms", "compute infer ms"),
    ("compute_output_ms", "compute output ms"),
    ("server_total_ms", "server total ms"),
    ("client_mean_ms", "client mean ms"),
    ("client_minus_server_ms", f"client {MINUS} server ms"),
)


KEPT_UP_SHARE = 0.99  # an open loop kept up: achieved >= 99% of offered, and nothing dropped


class ReportError(ValueError):
    """A run folder cannot be reported on; the message says why and what to do."""


@dataclass(frozen=True)
class OpenLoop:
    """``requests.<name>.open_loop`` in ``latency.json``: an open-loop stream's rates, counts and send lags."""

    offered_per_s: float | None
    achieved_per_s: float | None
    scheduled: int | None
    sent: int | None
    dropped: int | None
    completed: int | None
    unfinished: int | None
    lag_ms: dict[str, float]

    @property
    def kept_up(self) -> bool | None:
        """Achieved at least 99% of the offered rate and dropped nothing; ``None`` when the rates are missing."""
        if self.offered_per_s is None or self.achieved_per_s is None or self.dropped is None:
            return None
        return self.dropped == 0 and self.achieved_per_s >= KEPT_UP_SHARE * self.offered_per_s


@dataclass(frozen=True)
class RequestStats:
    """One entry of ``requests`` in ``latency.json``: a request name's counts and latencies (ms).

    ``latency_ms`` runs from each request's intended send time (open loop) or its send (closed loop);
    ``service_ms`` from its actual send; ``open_loop`` is ``None`` for a closed loop."""

    name: str
    count: int
    failures: int | None
    requests_per_s: float | None
    latency_ms: dict[str, float]
    ttfb_ms: dict[str, float]
    distribution: list[tuple[float, float]]
    service_ms: dict[str, float] = field(default_factory=dict)
    open_loop: OpenLoop | None = None


@dataclass(frozen=True)
class HistoryPoint:
    """One ``Aggregated`` row of Locust's stats history; ``None`` where Locust wrote ``N/A``."""

    t: float
    users: int | None
    requests_per_s: float | None
    p50_ms: float | None
    p95_ms: float | None


@dataclass
class Run:
    """One load test, read from ``<folder>/latency.json`` (and its history CSV, if any)."""

    folder: Path  # as the report names it: relative to the report's own folder (see build_report)
    server: str
    model: str
    host: str
    started: datetime | None
    ended: datetime | None
    duration_s: float | None
    requests: list[RequestStats]
    server_stats: dict[str, float] | None
    locust: dict[str, float] | None
    history: list[HistoryPoint] = field(default_factory=list)
    history_note: str = ""
    label: str = ""
    color: str = PALETTE[0]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, ``N/A``, not a number)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _numbers(value: Any) -> dict[str, float]:
    """The numeric entries of a JSON object (others are dropped)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): n for k, v in value.items() if (n := _number(v)) is not None}


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _distribution(value: Any) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, list | tuple) and len(item) == 2:
                p, ms = _number(item[0]), _number(item[1])
                if p is not None and ms is not None and 0.0 <= p <= 100.0:
                    points.append((p, ms))
    return sorted(points)


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _open_loop(value: Any) -> OpenLoop | None:
    if not isinstance(value, dict):
        return None
    return OpenLoop(
        offered_per_s=_number(value.get("offered_rate_per_s")),
        achieved_per_s=_number(value.get("achieved_per_s")),
        scheduled=_count(value.get("scheduled")),
        sent=_count(value.get("sent")),
        dropped=_count(value.get("dropped")),
        completed=_count(value.get("completed")),
        unfinished=_count(value.get("unfinished")),
        lag_ms=_numbers(value.get("lag_ms")),
    )


def _requests(raw: Any, where: Path) -> list[RequestStats]:
    if not isinstance(raw, dict) or not raw:
        raise ReportError(f"{where} has no requests: the load test recorded none; run it again")
    stats = []
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise ReportError(f"{where}: requests[{name!r}] is not an object")
        rps = _number(entry.get("requests_per_s"))
        stats.append(
            RequestStats(
                name=str(name),
                count=int(_number(entry.get("count")) or 0),
                failures=None if (failures := _number(entry.get("failures"))) is None else int(failures),
                requests_per_s=rps,
                latency_ms=_numbers(entry.get("latency_ms")),
                ttfb_ms=_numbers(entry.get("ttfb_ms")),
                distribution=_distribution(entry.get("distribution")),
                service_ms=_numbers(entry.get("service_ms")),
                open_loop=_open_loop(entry.get("open_loop")),
            )
        )
    return stats


def read_history(path: Path) -> list[HistoryPoint]:
    """The ``Aggregated`` rows of a Locust ``*_stats_history.csv``, in time order."""
    points = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("Name") != "Aggregated":
                continue
            t = _number(row.get("Timestamp"))
            if t is None:
                continue
            users = _number(row.get("User Count"))
            points.append(
                HistoryPoint(
                    t=t,
                    users=None if users is None else int(users),
                    requests_per_s=_number(row.get("Requests/s")),
                    p50_ms=_number(row.get("50%")),
                    p95_ms=_number(row.get("95%")),
                )
            )
    points.sort(key=lambda p: p.t)
    return points


def load_run(folder: Path, shown: Path | None = None) -> Run:
    """Reads ``folder/latency.json`` and the history CSV it names; raises :class:`ReportError`. ``shown`` is
    how the report names the folder (default: ``folder``)."""
    shown = folder if shown is None else shown
    path = folder / LATENCY_FILE
    if not path.is_file():
        guess = folder.name or "SERVER"
        raise ReportError(
            f"no {LATENCY_FILE} in {folder}: run a load test against {guess} first "
            f"(make performance-test CONFIG=configs/low.conf MODEL_NAME=resnet50_onnx SERVER={guess})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not valid JSON ({e}): run the load test again") from e
    if not isinstance(data, dict):
        raise ReportError(f"{path} does not hold a JSON object")
    version = data.get("version")
    if version != SUPPORTED_VERSION:
        raise ReportError(f"{path} has version {version!r}; this report reads version {SUPPORTED_VERSION}")
    server = data.get("server")
    if not isinstance(server, str) or not server:
        raise ReportError(f'{path} does not say which server it measured ("server" is missing)')

    server_stats = data.get("server_stats")
    locust = data.get("locust")
    run = Run(
        folder=shown,
        server=server,
        model=str(data.get("model") or ""),
        host=str(data.get("host") or ""),
        started=_timestamp(data.get("started")),
        ended=_timestamp(data.get("ended")),
        duration_s=_number(data.get("duration_s")),
        requests=_requests(data.get("requests"), path),
        server_stats=_numbers(server_stats) if isinstance(server_stats, dict) else None,
        locust=_numbers(locust) if isinstance(locust, dict) else None,
    )

    history_csv = data.get("history_csv")
    if isinstance(history_csv, str) and history_csv:
        history_path = folder / history_csv
        try:
            run.history = read_history(history_path)
        except FileNotFoundError:
            run.history_note = f"{shown / history_csv} is missing"
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            run.history_note = f"cannot read {shown / history_csv}: {e.strerror if isinstance(e, OSError) else e}"
        else:
            if not run.history:
                run.history_note = f"{shown / history_csv} has no Aggregated rows"
    else:
        run.history_note = "no history CSV recorded"
    return run


def _label_runs(runs: list[Run]) -> None:
    """Gives each run a unique label (its server, plus its folder when servers repeat) and a colour."""
    servers = [r.server for r in runs]
    for i, run in enumerate(runs):
        run.label = run.server if servers.count(run.server) == 1 else f"{run.server} ({run.folder})"
        run.color = PALETTE[i % len(PALETTE)]


def _row_label(run: Run, stats: RequestStats) -> str:
    return run.label if len(run.requests) == 1 else f"{run.label} {stats.name}"


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def format_ms(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without exponent (``30.9``, ``1230``, ``0.123``)."""
    if value is None or not math.isfinite(value):
        return DASH
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def _as_given(value: float | None) -> str:
    """A number as it was written (Locust's are already rounded): ``31``, not ``31.0``."""
    if value is None:
        return DASH
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _format_count(value: int) -> str:
    return f"{value:,}"


def _format_failures(stats: RequestStats) -> str:
    if stats.failures is None:
        return DASH
    if stats.failures == 0:
        return "0"
    # count is the successful requests (the ones the latencies are over); failures come on top.
    share = 100.0 * stats.failures / (stats.count + stats.failures)
    return f"{stats.failures:,} ({format_ms(share, 2)}%)"


def _models(runs: Sequence[Run]) -> str:
    models = sorted({r.model for r in runs if r.model})
    return ", ".join(models) if models else "unknown model"


def _dates(runs: Sequence[Run]) -> str:
    days = sorted({r.started.astimezone(UTC).date().isoformat() for r in runs if r.started})
    return f"{days[0]} to {days[-1]}" if len(days) > 1 else (days[0] if days else "undated")


def _when(stamp: datetime | None) -> str:
    if stamp is None:
        return DASH
    if stamp.utcoffset() == UTC.utcoffset(None):
        return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
    return stamp.isoformat()


def _title(runs: Sequence[Run]) -> str:
    return f"{' vs '.join(r.label for r in runs)}: {_models(runs)}, {_dates(runs)}"


def _summary_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    header = [
        "server",
        "model",
        "requests",
        "requests/s",
        "failures",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "TTFB p50 ms",
    ]
    rows = []
    for run in runs:
        for stats in run.requests:
            lat = stats.latency_ms
            rows.append(
                [
                    _row_label(run, stats),
                    run.model or DASH,
                    _format_count(stats.count),
                    format_ms(stats.requests_per_s),
                    _format_failures(stats),
                    *(format_ms(lat.get(k)) for k in ("p50", "p90", "p99", "p99.9", "max")),
                    format_ms(stats.ttfb_ms.get("p50")),
                ]
            )
    return header, rows


def _breakdown_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["server", *(label for _, label in BREAKDOWN_FIELDS)]
    rows = []
    for run in runs:
        stats = run.server_stats
        if stats is None:
            rows.append([run.label, *(DASH for _ in BREAKDOWN_FIELDS)])
        else:
            rows.append([run.label, *(format_ms(stats.get(key)) for key, _ in BREAKDOWN_FIELDS)])
    return header, rows


OPEN_LOOP_HEADER = [
    "server",
    "kept up",
    "offered req/s",
    "achieved req/s",
    "dropped",
    "unfinished",
    "lag p50 ms",
    "lag p99 ms",
    "lag max ms",
    "latency p50 ms (from intended send)",
    "latency p99 ms (from intended send)",
    "service p50 ms (from actual send)",
    "service p99 ms (from actual send)",
]

OPEN_LOOP_NOTE = (
    f"Open-loop users send on a schedule whatever the answers. Kept up: achieved at least "
    f"{KEPT_UP_SHARE:.0%} of the offered rate and dropped nothing. Dropped: due while --max-in-flight requests "
    f"were out, never sent; unfinished: in flight or queued when the run stopped. Lag: actual {MINUS} intended "
    f"send time. Latency runs from the intended send time (what a user waits, coordinated omission included), "
    f"service time from the actual send. {DASH}: a closed loop (no schedule)."
)


TEXT_SECOND_COLUMNS = ("model", "kept up")  # tables whose second column is text (left-aligned)


def _has_open_loop(runs: Sequence[Run]) -> bool:
    return any(s.open_loop is not None for r in runs for s in r.requests)


def _kept_up(ol: OpenLoop) -> str:
    kept = ol.kept_up
    return DASH if kept is None else ("yes" if kept else "no")


def _optional_count(value: int | None) -> str:
    return DASH if value is None else _format_count(value)


def _open_loop_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]], list[str]]:
    """The open-loop table: its header, one row per request name, and each row's run colour."""
    rows, colors = [], []
    for run in runs:
        for stats in run.requests:
            ol = stats.open_loop
            colors.append(run.color)
            if ol is None:
                rows.append([_row_label(run, stats), *(DASH for _ in OPEN_LOOP_HEADER[1:])])
                continue
            rows.append(
                [
                    _row_label(run, stats),
                    _kept_up(ol),
                    format_ms(ol.offered_per_s),
                    format_ms(ol.achieved_per_s),
                    _optional_count(ol.dropped),
                    _optional_count(ol.unfinished),
                    *(format_ms(ol.lag_ms.get(k)) for k in ("p50", "p99", "max")),
                    *(format_ms(stats.latency_ms.get(k)) for k in ("p50", "p99")),
                    *(format_ms(stats.service_ms.get(k)) for k in ("p50", "p99")),
                ]
            )
    return OPEN_LOOP_HEADER, rows, colors


def _locust_notes(runs: Sequence[Run]) -> list[str]:
    """One sentence per run: Locust's own (rounded) p50/p95/p99 next to ours."""
    notes = []
    for run in runs:
        if not run.locust or not run.requests:
            continue
        lat = run.requests[0].latency_ms
        theirs = " / ".join(_as_given(run.locust.get(f"{p}_ms")) for p in ("p50", "p95", "p99"))
        ours = " / ".join(format_ms(lat.get(p)) for p in ("p50", "p95", "p99"))
        notes.append(f"{run.label}: Locust {theirs} ms, ours {ours} ms")
    return notes


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    text_columns = 2 if header[1] in TEXT_SECOND_COLUMNS else 1
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(runs: Sequence[Run], html_path: Path | None = None) -> str:
    """The comparison as Markdown: the summary table, the server-side breakdown and notes."""
    header, rows = _summary_rows(runs)
    lines = [f"## Inference latency: {_title(runs)}", "", *_md_table(header, rows), ""]
    if any(r.server_stats is not None for r in runs):
        b_header, b_rows = _breakdown_rows(runs)
        lines += [
            "Server-side breakdown (the server's own statistics, mean per request; "
            f"client {MINUS} server is time spent outside the server; {DASH}: not reported by the server):",
            "",
            *_md_table(b_header, b_rows),
            "",
        ]
    if _has_open_loop(runs):
        o_header, o_rows, _ = _open_loop_rows(runs)
        lines += ["Open loop, did each server keep up? " + OPEN_LOOP_NOTE, "", *_md_table(o_header, o_rows), ""]
    notes = _locust_notes(runs)
    if notes:
        lines += ["Locust's own p50 / p95 / p99 (rounded) vs ours: " + "; ".join(notes) + ".", ""]
    if html_path is not None:  # written beside this file: its name is the path from here
        lines += [f"Charts (latency distribution, throughput and latency over time): `{html_path.name}`", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# SVG charts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    label: str
    lo: float
    hi: float
    ticks: list[tuple[float, str]]


@dataclass(frozen=True)
class _Series:
    label: str
    color: str
    points: list[tuple[float, float | None]]  # None: no value (skipped)
    dash: str = ""


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _tick_text(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / 10 ** math.floor(math.log10(step)) == 2.5 else 0))
    return f"{value:.{decimals}f}"


def _linear_axis(label: str, hi: float, target: int = 6) -> _Axis:
    """An axis from 0 to a round number at or above ``hi``, with ticks at round steps."""
    if not hi > 0:
        hi = 1.0
    step = _nice_step(hi, target)
    top = math.ceil(hi / step - 1e-9) * step
    count = round(top / step)
    return _Axis(label, 0.0, top, [(i * step, _tick_text(i * step, step)) for i in range(count + 1)])


def _percentile_x(p: float, top: float) -> float:
    """HdrHistogram's x: log10(1 / (1 - p)); 100% sits at ``top`` (beyond the last decade)."""
    if p >= 100.0:
        return top
    return math.log10(1.0 / (1.0 - p / 100.0))


def _decade_label(k: int) -> str:
    return "0%" if k == 0 else f"{100.0 * (1.0 - 10.0**-k):.{max(0, k - 2)}f}%"


_W, _H = 820, 400
_LEFT, _RIGHT, _BOTTOM = 72, 24, 56


def _legend(series: Sequence[_Series], width: float) -> tuple[list[str], float]:
    """Legend items laid out in rows above the plot; returns the SVG and the height it takes."""
    parts, x, y = [], float(_LEFT), 18.0
    for s in series:
        item_w = 30 + 7.2 * len(s.label) + 22
        if x + item_w > width - _RIGHT and x > _LEFT:
            x, y = float(_LEFT), y + 20
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(
            f'<g class="legend-item"><line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 24:.1f}" y2="{y - 4:.1f}" '
            f'stroke="{s.color}" stroke-width="3"{dash}/>'
            f'<text x="{x + 30:.1f}" y="{y:.1f}">{html.escape(s.label)}</text></g>'
        )
        x += item_w
    return parts, y + 16


def _svg_chart(chart_id: str, *, title: str, desc: str, x: _Axis, y: _Axis, series: Sequence[_Series]) -> str:
    """A line chart as standalone inline SVG, with <title>/<desc>, gridlines, labelled axes, legend."""
    legend, top = _legend(series, _W)
    x0, x1, y0, y1 = _LEFT, _W - _RIGHT, _H - _BOTTOM, top

    def sx(v: float) -> float:
        return x0 + (v - x.lo) / (x.hi - x.lo) * (x1 - x0)

    def sy(v: float) -> float:
        return y0 - (v - y.lo) / (y.hi - y.lo) * (y0 - y1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" role="img" class="chart" '
        f'id="{chart_id}" aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{html.escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{html.escape(desc)}</desc>',
        f'<rect x="{x0}" y="{y1:.1f}" width="{x1 - x0}" height="{y0 - y1:.1f}" class="plot"/>',
        '<g class="grid">',
    ]
    for v, _ in x.ticks:
        out.append(f'<line x1="{sx(v):.1f}" y1="{y1:.1f}" x2="{sx(v):.1f}" y2="{y0}"/>')
    for v, _ in y.ticks:
        out.append(f'<line x1="{x0}" y1="{sy(v):.1f}" x2="{x1}" y2="{sy(v):.1f}"/>')
    out.append('</g><g class="ticks">')
    for v, text in x.ticks:
        out.append(f'<text x="{sx(v):.1f}" y="{y0 + 18}" text-anchor="middle">{html.escape(text)}</text>')
    for v, text in y.ticks:
        out.append(f'<text x="{x0 - 8}" y="{sy(v) + 4:.1f}" text-anchor="end">{html.escape(text)}</text>')
    out += [
        "</g>",
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" class="axis"/>',
        f'<line x1="{x0}" y1="{y1:.1f}" x2="{x0}" y2="{y0}" class="axis"/>',
        f'<text class="axis-label" x="{(x0 + x1) / 2:.1f}" y="{_H - 12}" text-anchor="middle">'
        f"{html.escape(x.label)}</text>",
        f'<text class="axis-label" transform="translate(18 {(y0 + y1) / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(y.label)}</text>',
    ]
    for s in series:
        # Per-second history has N/A until the first response: skip those, join the rest.
        points = [(sx(px), sy(py)) for px, py in s.points if py is not None]
        if not points:
            continue
        label = f"<title>{html.escape(s.label)}</title>"
        if len(points) == 1:
            out.append(
                f'<circle cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="3.5" fill="{s.color}">{label}</circle>'
            )
            continue
        d = " ".join(f"{'L' if i else 'M'}{px:.1f} {py:.1f}" for i, (px, py) in enumerate(points))
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<path class="series" d="{d}" stroke="{s.color}"{dash}>{label}</path>')
    out += ['<g class="legend">', *legend, "</g>", "</svg>"]
    return "\n".join(out)


def _distribution_chart(runs: Sequence[Run]) -> str | None:
    series = []
    finite_max = 1.0
    for run in runs:
        for i, stats in enumerate(run.requests):
            if stats.distribution:
                finite = [1.0 / (1.0 - p / 100.0) for p, _ in stats.distribution if p < 100.0]
                finite_max = max([finite_max, *finite])
                series.append((run, i, stats))
    if not series:
        return None
    last_decade = max(4, math.ceil(math.log10(finite_max) - 1e-9))
    top = last_decade + 0.5
    ticks = [(float(k), _decade_label(k)) for k in range(last_decade + 1)] + [(top, "max")]
    x = _Axis("percentile (log scale: each step is ten times rarer)", 0.0, top, ticks)
    y = _linear_axis("latency (ms)", max(ms for _, _, s in series for _, ms in s.distribution))
    lines = [
        _Series(
            _row_label(run, stats),
            run.color,
            [(_percentile_x(p, top), ms) for p, ms in stats.distribution],
            DASHES[i % len(DASHES)],
        )
        for run, i, stats in series
    ]
    desc = "Latency by percentile, one line per server: " + "; ".join(
        f"{_row_label(run, s)} p50 {format_ms(s.latency_ms.get('p50'))} ms, p99 {format_ms(s.latency_ms.get('p99'))} "
        f"ms, max {format_ms(s.latency_ms.get('max'))} ms"
        for run, _, s in series
    )
    return _svg_chart(
        "latency-distribution", title="Latency distribution by percentile", desc=desc, x=x, y=y, series=lines
    )


def _history_x(runs: Sequence[Run]) -> tuple[dict[str, float], _Axis]:
    """Each run's time zero (its start, or first history row) and the shared time axis."""
    zeros, longest = {}, 1.0
    for run in runs:
        if not run.history:
            continue
        first = run.history[0].t
        start = run.started.timestamp() if run.started else first
        zeros[run.label] = min(first, start) if first - start < 3600 else first
        longest = max(longest, run.history[-1].t - zeros[run.label])
    return zeros, _linear_axis("seconds since the start of the run", longest, 8)


def _throughput_chart(runs: Sequence[Run]) -> str | None:
    with_history = [r for r in runs if r.history]
    if not with_history:
        return None
    zeros, x = _history_x(with_history)
    lines = [
        _Series(r.label, r.color, [(p.t - zeros[r.label], p.requests_per_s) for p in r.history]) for r in with_history
    ]
    peak = max((v for s in lines for _, v in s.points if v is not None), default=1.0)
    y = _linear_axis("requests/s", peak)
    desc = "Requests per second over time, one line per server, from Locust's stats history."
    return _svg_chart("throughput-over-time", title="Throughput over time", desc=desc, x=x, y=y, series=lines)


def _latency_time_chart(runs: Sequence[Run]) -> str | None:
    with_history = [r for r in runs if r.history]
    if not with_history:
        return None
    zeros, x = _history_x(with_history)
    lines = []
    for r in with_history:
        t = [p.t - zeros[r.label] for p in r.history]
        lines.append(_Series(f"{r.label} p50", r.color, list(zip(t, (p.p50_ms for p in r.history), strict=True))))
        lines.append(
            _Series(f"{r.label} p95", r.color, list(zip(t, (p.p95_ms for p in r.history), strict=True)), "6 4")
        )
    peak = max((v for s in lines for _, v in s.points if v is not None), default=1.0)
    y = _linear_axis("latency (ms)", peak)
    desc = "p50 (solid) and p95 (dashed) latency over time, per server, from Locust's stats history."
    return _svg_chart("latency-over-time", title="p50 and p95 latency over time", desc=desc, x=x, y=y, series=lines)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

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


def _html_table(header: list[str], rows: list[list[str]], colors: list[str], caption: str) -> str:
    text_cols = {0, 1} if header[1] in TEXT_SECOND_COLUMNS else {0}

    def cls(i: int) -> str:
        return ' class="text"' if i in text_cols else ""

    head = "".join(f'<th scope="col"{cls(i)}>{html.escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for row, color in zip(rows, colors, strict=True):
        cells = [
            f'<th scope="row"><span class="swatch" style="background:{color}" aria-hidden="true"></span>'
            f"{html.escape(row[0])}</th>"
        ]
        cells += [f"<td{cls(i)}>{html.escape(c)}</td>" for i, c in enumerate(row) if i]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>\n'
        f'<p class="note">{html.escape(caption)}</p>'
    )


def _figure(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return f'<p class="note">{html.escape(missing)}</p>'
    return f"<figure>\n{svg}\n<figcaption>{html.escape(caption)}</figcaption>\n</figure>"


def render_html(runs: Sequence[Run]) -> str:
    """The whole comparison page: one file, inline CSS and SVG, nothing to fetch."""
    title = _title(runs)
    header, rows = _summary_rows(runs)
    row_colors = [run.color for run in runs for _ in run.requests]
    summary = _html_table(
        header,
        rows,
        row_colors,
        "Latencies are client-side, measured by the Rust client around each successful request (HdrHistogram, "
        "3 significant digits); requests counts those, failures come on top. TTFB is the time to the first byte "
        "of the response."
        + (
            " For open-loop runs they run from each request's intended send time (see Open loop below)."
            if _has_open_loop(runs)
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
        f'<p class="meta">Model {html.escape(_models(runs))}, {html.escape(_dates(runs))}. '
        f"{len(runs)} load test{'s' if len(runs) != 1 else ''}, same client (locust-inference) for each server.</p>",
        '<section aria-labelledby="summary">',
        '<h2 id="summary">Summary</h2>',
        summary,
    ]
    notes = _locust_notes(runs)
    if notes:
        parts.append(
            '<p class="note">Locust\'s own p50 / p95 / p99 come from its bucketed (rounded) response times, '
            "so they are coarser than the histogram's: " + html.escape("; ".join(notes)) + ".</p>"
        )
    parts.append("</section>")

    if _has_open_loop(runs):
        o_header, o_rows, o_colors = _open_loop_rows(runs)
        parts += [
            '<section aria-labelledby="open-loop">',
            '<h2 id="open-loop">Open loop: did each server keep up?</h2>',
            _html_table(o_header, o_rows, o_colors, OPEN_LOOP_NOTE),
            "</section>",
        ]

    if any(r.server_stats is not None for r in runs):
        b_header, b_rows = _breakdown_rows(runs)
        parts += [
            '<section aria-labelledby="breakdown">',
            '<h2 id="breakdown">Server-side breakdown</h2>',
            _html_table(
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
            _distribution_chart(runs),
            "Latency at each percentile, HdrHistogram style: the x axis is 1/(1 - percentile) on a log scale, "
            "so the tail gets as much room as the median. The right edge is the maximum.",
            "No latency distribution was recorded.",
        ),
        "</section>",
        '<section aria-labelledby="throughput">',
        '<h2 id="throughput">Throughput over time</h2>',
        _figure(
            _throughput_chart(runs),
            "Requests per second as Locust reports it each second: an average over about the last 10 seconds.",
            "No per-second history was recorded.",
        ),
        "</section>",
        '<section aria-labelledby="latency-time">',
        '<h2 id="latency-time">Latency over time</h2>',
        _figure(
            _latency_time_chart(runs),
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
            f"at <code>{html.escape(run.host or DASH)}</code>, {html.escape(_when(run.started))} to "
            f"{html.escape(_when(run.ended))}{duration}; from <code>{html.escape(str(run.folder))}</code></li>"
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


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def build_report(dirs: Iterable[Path], out: Path) -> tuple[Path, Path]:
    """Reads each run folder, writes ``out/compare.html`` and ``out/compare.md``, returns their paths.

    The reports name every file and folder relative to ``out``, where they are written: nothing in them
    depends on the machine or the directory they were made in. Raises :class:`ReportError` when a folder
    has no usable ``latency.json``.
    """
    runs = [load_run(Path(d), Path(os.path.relpath(Path(d).resolve(), out.resolve()))) for d in dirs]
    if not runs:
        raise ReportError("no run folders given")
    _label_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "compare.html", out / "compare.md"
    html_path.write_text(render_html(runs), encoding="utf-8")
    md_path.write_text(render_markdown(runs, html_path), encoding="utf-8")
    return html_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m locust_inference.report DIR [DIR ...] --out OUTDIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m locust_inference.report",
        description="Compare load-test runs: writes OUTDIR/compare.html (charts) and OUTDIR/compare.md (tables).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a run folder holding latency.json")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where to write (default: results)")
    args = parser.parse_args(argv)
    try:
        html_path, md_path = build_report(args.dirs, args.out)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write the report to {args.out}: {e}", file=sys.stderr)
        return 2
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {html_path}")
    print(f"wrote {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
