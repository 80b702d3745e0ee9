"""Tables: the numbers of each run formatted once, laid out as Markdown (``compare.md``) and HTML tables."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .runs import KEPT_UP_SHARE, OpenLoop, RequestStats, Run, row_label

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


def model_names(runs: Sequence[Run]) -> str:
    models = sorted({r.model for r in runs if r.model})
    return ", ".join(models) if models else "unknown model"


def date_range(runs: Sequence[Run]) -> str:
    days = sorted({r.started.astimezone(UTC).date().isoformat() for r in runs if r.started})
    return f"{days[0]} to {days[-1]}" if len(days) > 1 else (days[0] if days else "undated")


def format_when(stamp: datetime | None) -> str:
    if stamp is None:
        return DASH
    if stamp.utcoffset() == UTC.utcoffset(None):
        return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
    return stamp.isoformat()


def page_title(runs: Sequence[Run]) -> str:
    return f"{' vs '.join(r.label for r in runs)}: {model_names(runs)}, {date_range(runs)}"


def summary_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
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
                    row_label(run, stats),
                    run.model or DASH,
                    _format_count(stats.count),
                    format_ms(stats.requests_per_s),
                    _format_failures(stats),
                    *(format_ms(lat.get(k)) for k in ("p50", "p90", "p99", "p99.9", "max")),
                    format_ms(stats.ttfb_ms.get("p50")),
                ]
            )
    return header, rows


def breakdown_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
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


def has_open_loop(runs: Sequence[Run]) -> bool:
    return any(s.open_loop is not None for r in runs for s in r.requests)


def _kept_up(ol: OpenLoop) -> str:
    kept = ol.kept_up
    return DASH if kept is None else ("yes" if kept else "no")


def _optional_count(value: int | None) -> str:
    return DASH if value is None else _format_count(value)


def open_loop_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]], list[str]]:
    """The open-loop table: its header, one row per request name, and each row's run colour."""
    rows, colors = [], []
    for run in runs:
        for stats in run.requests:
            ol = stats.open_loop
            colors.append(run.color)
            if ol is None:
                rows.append([row_label(run, stats), *(DASH for _ in OPEN_LOOP_HEADER[1:])])
                continue
            rows.append(
                [
                    row_label(run, stats),
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


def locust_notes(runs: Sequence[Run]) -> list[str]:
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
    header, rows = summary_rows(runs)
    lines = [f"## Inference latency: {page_title(runs)}", "", *_md_table(header, rows), ""]
    if any(r.server_stats is not None for r in runs):
        b_header, b_rows = breakdown_rows(runs)
        lines += [
            "Server-side breakdown (the server's own statistics, mean per request; "
            f"client {MINUS} server is time spent outside the server; {DASH}: not reported by the server):",
            "",
            *_md_table(b_header, b_rows),
            "",
        ]
    if has_open_loop(runs):
        o_header, o_rows, _ = open_loop_rows(runs)
        lines += ["Open loop, did each server keep up? " + OPEN_LOOP_NOTE, "", *_md_table(o_header, o_rows), ""]
    notes = locust_notes(runs)
    if notes:
        lines += ["Locust's own p50 / p95 / p99 (rounded) vs ours: " + "; ".join(notes) + ".", ""]
    if html_path is not None:  # written beside this file: its name is the path from here
        lines += [f"Charts (latency distribution, throughput and latency over time): `{html_path.name}`", ""]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]], colors: list[str], caption: str) -> str:
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
