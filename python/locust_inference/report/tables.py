"""Tables: the numbers of each run formatted once, laid out as Markdown (``compare.md``) and HTML tables."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .runs import KEPT_UP_SHARE, OpenLoop, RequestStats, Run, row_label
from .sweeps import Sweep

MINUS = "\u2212"
DASH = "\u2014"  # an empty cell

COMPOSING_MARK = "\u203a composing"  # a composing model's row follows its ensemble's: "run \u203a composing prep"
COMPOSING_NOTE = (
    f"an ensemble's composing models follow its row ({COMPOSING_MARK} <model>), each per inference of its own"
)
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


def _breakdowns(runs: Sequence[Run]) -> list[tuple[Run, str, dict[str, float] | None]]:
    """The server-side breakdown's rows: a run's, or with several models in the run, each model's; under an
    ensemble's, one row per composing model."""
    found: list[tuple[Run, str, dict[str, float] | None]] = []
    for run in runs:
        per_model = [(run, row_label(run, s), s) for s in run.requests if s.server_stats is not None]
        if run.server_stats is None and per_model:
            for _, label, stats in per_model:
                found += [(run, label, stats.server_stats), *_composing_rows(run, label, stats.composing)]
        else:
            found += [(run, run.label, run.server_stats), *_composing_rows(run, run.label, run.composing)]
    return found


def _composing_rows(
    run: Run, label: str, composing: dict[str, dict[str, float] | None]
) -> list[tuple[Run, str, dict[str, float] | None]]:
    return [(run, f"{label} {COMPOSING_MARK} {name}", stats) for name, stats in composing.items()]


def has_breakdown(runs: Sequence[Run]) -> bool:
    return any(stats is not None for _, _, stats in _breakdowns(runs))


def breakdown_colors(runs: Sequence[Run]) -> list[str]:
    return [run.color for run, _, _ in _breakdowns(runs)]


def breakdown_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["server", *(label for _, label in BREAKDOWN_FIELDS)]
    rows = []
    for _, label, stats in _breakdowns(runs):
        if stats is None:
            rows.append([label, *(DASH for _ in BREAKDOWN_FIELDS)])
        else:
            rows.append([label, *(format_ms(stats.get(key)) for key, _ in BREAKDOWN_FIELDS)])
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


TEXT_SECOND_COLUMNS = ("model", "kept up", "request name")  # tables whose second column is text (left-aligned)


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


TOKENS_HEADER = [
    "run",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "ITL p99 ms",
    "TPOT p50 ms",
    "tokens per request p50",
    "output tokens/s",
    "per user",
    "goodput req/s",
    "counted by",
]
TOKENS_NOTE = (
    "Time to first token (TTFT, from the intended send time in an open loop), inter-token latency (ITL, every "
    "gap between content chunks) and time per output token (TPOT, a request's mean gap after its first token), "
    "over successful requests; output tokens/s over the run. Tokens are counted from the server's usage, else "
    "as content chunks (approximate). Goodput: requests that met every --token-slo objective, per second."
)


def has_tokens(runs: Sequence[Run]) -> bool:
    return any(s.tokens is not None for r in runs for s in r.requests)


def token_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]], list[str]]:
    """The token table: its header, one row per generative request name, and each row's run colour."""
    rows, colors = [], []
    for run in runs:
        for stats in run.requests:
            t = stats.tokens
            if t is None:
                continue
            colors.append(run.color)
            rows.append(
                [
                    row_label(run, stats),
                    *(format_ms(t.ttft_ms.get(k)) for k in ("p50", "p99")),
                    *(format_ms(t.itl_ms.get(k)) for k in ("p50", "p99")),
                    format_ms(t.tpot_ms.get("p50")),
                    format_ms(t.output_tokens.get("p50")),
                    format_ms(t.output_tokens_per_s),
                    format_ms(t.output_tokens_per_s_per_user),
                    format_ms(t.goodput_per_s),
                    "chunks (approximate)" if t.approximate else "usage",
                ]
            )
    return TOKENS_HEADER, rows, colors


# A step's server metrics shown in the sweep's table, when any step has them: (key, column, scale).
SWEEP_METRICS = (
    ("gpu_utilization_pct", "GPU %", 1.0),
    ("gpu_power_w", "GPU W", 1.0),
    ("gpu_memory_used_peak_bytes", "GPU memory peak MiB", 2**-20),
    ("cpu_utilization_pct", "server CPU %", 1.0),
    ("server_process_cpu_pct", "server process CPU %", 1.0),
    ("client_python_cpu_peak_pct", "load generator CPU peak %", 1.0),
)


def sweep_rows(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    """A sweep's table: one row per step; the server's batch size and queue time when it reports them, and
    the server's metrics (GPU, CPU) and the load generator's CPU when the steps carry them."""
    server = sweep.has_server_stats
    shown = [m for m in SWEEP_METRICS if any(m[0] in (s.metrics or {}) for s in sweep.steps)]
    header = [
        "step",
        "users" if sweep.mode == "concurrency" else "offered req/s",
        "achieved req/s",
        *(f"{p} ms" for p in ("p50", "p90", "p99", "p99.9")),
        "failures",
        "dropped",
        "windows",
        "stable",
        *(["avg batch", "queue ms"] if server else []),
        *(column for _, column, _ in shown),
    ]
    rows = []
    for s in sweep.steps:
        if sweep.mode == "concurrency":
            load = _optional_count(s.users) if s.users is not None else _as_given(s.load)
        else:
            load = _as_given(s.offered_per_s if s.offered_per_s is not None else s.load)
        stats = s.server or {}
        rows.append(
            [
                str(s.step),
                load,
                format_ms(s.achieved_per_s),
                *(format_ms(s.latency_ms.get(p)) for p in ("p50", "p90", "p99", "p99.9")),
                _optional_count(s.failures),
                _optional_count(s.dropped),
                _optional_count(s.windows),
                "yes" if s.stable else "NO",
                *([format_ms(stats.get("avg_batch_size")), format_ms(stats.get("queue_ms"))] if server else []),
                *(_scaled_ms((s.metrics or {}).get(key), scale) for key, _, scale in shown),
            ]
        )
    return header, rows


def sweep_model_rows(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    """Several models: a row per step and model, its part of the step (Triton's breakdown of that model);
    no rows with one model."""
    header = [
        "step",
        "request name",
        "users" if sweep.mode == "concurrency" else "offered req/s",
        "achieved req/s",
        *(f"{p} ms" for p in ("p50", "p90", "p99", "p99.9")),
        "failures",
        "dropped",
        "avg batch",
        "queue ms",
        "compute infer ms",
    ]
    rows = []
    for s in sweep.steps:
        for name, m in (s.models or {}).items():
            stats = m.server or {}
            load = _optional_count(m.users) if sweep.mode == "concurrency" else _as_given(m.offered_per_s)
            rows.append(
                [
                    str(s.step),
                    name,
                    load,
                    format_ms(m.achieved_per_s),
                    *(format_ms(m.latency_ms.get(p)) for p in ("p50", "p90", "p99", "p99.9")),
                    _optional_count(m.failures),
                    _optional_count(m.dropped),
                    format_ms(stats.get("avg_batch_size")),
                    format_ms(stats.get("queue_ms")),
                    format_ms(stats.get("compute_infer_ms")),
                ]
            )
    return header, rows


def sweep_model_goodputs(sweep: Sweep) -> list[str]:
    """Several models: each one's goodput, one sentence each."""
    lines = []
    for name, good in (sweep.model_goodput or {}).items():
        rate = "none" if good.rate_per_s is None else f"{format_ms(good.rate_per_s)} req/s"
        lines.append(f"Goodput of {name} at {good.slo}: {rate}, {good.how}.")
    return lines


def _scaled_ms(value: float | None, scale: float) -> str:
    return format_ms(None if value is None else value * scale)


def _percent(fraction: float) -> str:
    return f"{100.0 * fraction:g}%"


def sweep_plan_line(sweep: Sweep) -> str:
    """The settings the sweep ran with, in one sentence: enough to run it again."""
    plan = sweep.plan
    steps = ", ".join(_as_given(v) for v in plan.steps) or DASH
    if sweep.mode == "concurrency":
        what = f"concurrency steps {steps} users (closed loop)"
    else:
        per_user = f", {_as_given(plan.stream_rate)} req/s per open-loop user" if plan.stream_rate else ""
        what = f"rate steps {steps} req/s offered{per_user}"
    parts = [
        what,
        f"{_as_given(plan.window_s)} s windows after a {_as_given(plan.warmup_s)} s warm-up",
        f"stable when the last {_optional_count(plan.stable_windows)} windows agree within "
        f"{DASH if plan.tolerance is None else _percent(plan.tolerance)} on throughput and p99 "
        f"(at most {_optional_count(plan.max_windows)} windows a step)",
        f"SLO {plan.slo or 'none'}",
    ]
    if plan.stop_latency:
        parts.append(f"stop past {plan.stop_latency}")
    if plan.stop_error_rate is not None:
        parts.append(f"stop past {_percent(plan.stop_error_rate)} failures")
    deployment = f" Deployment: {sweep.deployment}." if sweep.deployment else ""
    return "Plan: " + "; ".join(parts) + "." + deployment


def sweep_result_lines(sweep: Sweep) -> list[str]:
    """The goodput (or why there is none) and why the sweep stopped early, if it did."""
    good = sweep.goodput
    if good is None:
        lines = ["Goodput: no SLO was given (make sweep SLO=p99=100ms)."]
    elif good.rate_per_s is None:
        lines = [f"Goodput at {good.slo}: none, {good.how.removeprefix('none: ')}."]
    else:
        lines = [f"Goodput at {good.slo}: {format_ms(good.rate_per_s)} req/s, {good.how}."]
    if not sweep.steps:
        lines.append("No step was measured.")
    if sweep.stopped:
        lines.append(sweep.stopped[0].upper() + sweep.stopped[1:] + ("" if sweep.stopped.endswith(".") else "."))
    return lines


def sweep_title(run: Run, sweep: Sweep) -> str:
    return f"{run.label}: {sweep.mode} steps, {sweep.model or 'unknown model'}"


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
    if has_breakdown(runs):
        b_header, b_rows = breakdown_rows(runs)
        lines += [
            "Server-side breakdown (the server's own statistics, mean per request; "
            f"client {MINUS} server is time spent outside the server; {DASH}: not reported by the server; "
            f"{COMPOSING_NOTE}):",
            "",
            *_md_table(b_header, b_rows),
            "",
        ]
    if has_open_loop(runs):
        o_header, o_rows, _ = open_loop_rows(runs)
        lines += ["Open loop, did each server keep up? " + OPEN_LOOP_NOTE, "", *_md_table(o_header, o_rows), ""]
    if has_tokens(runs):
        t_header, t_rows, _ = token_rows(runs)
        lines += ["Tokens: " + TOKENS_NOTE, "", *_md_table(t_header, t_rows), ""]
    notes = locust_notes(runs)
    if notes:
        lines += ["Locust's own p50 / p95 / p99 (rounded) vs ours: " + "; ".join(notes) + ".", ""]
    sweeps = [(run, run.sweep) for run in runs if run.sweep is not None]
    if sweeps:
        lines += ["## Load sweep", ""]
    for run, sweep in sweeps:
        s_header, s_rows = sweep_rows(sweep)
        lines += [f"### {sweep_title(run, sweep)}", "", sweep_plan_line(sweep), ""]
        lines += [*_md_table(s_header, s_rows), ""] if s_rows else []
        lines += [line for text in sweep_result_lines(sweep) for line in (text, "")]
        m_header, m_rows = sweep_model_rows(sweep)
        if m_rows:
            lines += [f"Per model ({sweep_title(run, sweep)}; the step's stability is judged on its total):", ""]
            lines += [*_md_table(m_header, m_rows), ""]
            lines += [line for text in sweep_model_goodputs(sweep) for line in (text, "")]
    if html_path is not None:  # written beside this file: its name is the path from here
        charts = "latency distribution, throughput and latency over time" + (
            ", latency against throughput in the sweeps" if sweeps else ""
        )
        lines += [f"Charts ({charts}): `{html_path.name}`", ""]
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
