"""Charts: latency by percentile, throughput and latency over time, as inline SVG."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .runs import Run, row_label
from .tables import format_ms

DASHES = ("", "6 4", "2 3", "8 3 2 3")


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


def distribution_chart(runs: Sequence[Run]) -> str | None:
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
            row_label(run, stats),
            run.color,
            [(_percentile_x(p, top), ms) for p, ms in stats.distribution],
            DASHES[i % len(DASHES)],
        )
        for run, i, stats in series
    ]
    desc = "Latency by percentile, one line per server: " + "; ".join(
        f"{row_label(run, s)} p50 {format_ms(s.latency_ms.get('p50'))} ms, p99 {format_ms(s.latency_ms.get('p99'))} "
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


def throughput_chart(runs: Sequence[Run]) -> str | None:
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


def latency_time_chart(runs: Sequence[Run]) -> str | None:
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
