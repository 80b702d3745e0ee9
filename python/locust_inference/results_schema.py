"""``latency.json``, a run's results: its one schema.

Written by :mod:`locust_inference.latency` (``Collector.summary``, checked against these types by mypy);
read by ``--check`` (:mod:`locust_inference.checks`), the report (:mod:`locust_inference.report.runs`), the
demo's table (``servers/demo.py``) and the bench (``bench/clients.py``). A reader of a file still checks
every value it uses: the types say what this version writes, not what a file on disk holds.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = [
    "HISTOGRAMS",
    "LATENCY_CSV",
    "LATENCY_FILE",
    "SUMMARY_KEYS",
    "VERSION",
    "LatencyDocument",
    "LocustNumbers",
    "OpenLoop",
    "Percentiles",
    "RequestEntry",
    "histograms",
]

LATENCY_FILE = "latency.json"
LATENCY_CSV = "latency.csv"  # one row per request name and histogram, the SUMMARY_KEYS as <key>_ms
VERSION = 1  # the document's "version"; readers refuse others

# The keys of a histogram's summary (LatencyHistogram.summary() in Rust), in ms.
SUMMARY_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "p99.9", "p99.99", "max")
# A request name's three histograms of successful requests: from the intended send time (the send, in a
# closed loop), to the first byte of the response, and from the actual send.
HISTOGRAMS = ("latency_ms", "ttfb_ms", "service_ms")

Percentiles = dict[str, float]  # SUMMARY_KEYS -> ms; empty when nothing was measured


class OpenLoop(TypedDict):
    """``requests.<name>.open_loop``: the streams' rates and counters, None for a closed loop.

    The counters keep ``carried + scheduled = dropped + completed + unfinished + pending``."""

    offered_rate_per_s: float
    carried: int
    scheduled: int
    sent: int
    dropped: int
    completed: int
    unfinished: int
    pending: int
    streams: int
    stream_seconds: float
    scheduled_per_s: float | None
    achieved_per_s: float | None
    lag_ms: Percentiles  # p50, p99, max of the send lag (actual - intended send time)


class RequestEntry(TypedDict):
    """``requests.<name>``: one request name's counts and latencies."""

    count: int  # successful requests: what the histograms hold
    failures: int | None  # Locust's count; None when Locust has no entry of that name
    resent: int
    requests_per_s: float
    latency_ms: Percentiles
    ttfb_ms: Percentiles
    service_ms: Percentiles
    open_loop: OpenLoop | None
    distribution: list[tuple[float, float]]  # (percentile, ms) points; lists in the file


def histograms(entry: RequestEntry) -> tuple[tuple[str, Percentiles], ...]:
    """``entry``'s histograms as (``latency``, ``ttfb`` or ``service``, its percentiles), in HISTOGRAMS' order."""
    return (("latency", entry["latency_ms"]), ("ttfb", entry["ttfb_ms"]), ("service", entry["service_ms"]))


class LocustNumbers(TypedDict, total=False):
    """``locust``: Locust's own view of the request name, empty when it recorded none."""

    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


class LatencyDocument(TypedDict):
    """The whole file."""

    version: int
    server: str
    model: str
    host: str
    protocol: NotRequired[str]  # http or grpc (Triton); absent from files written before gRPC
    started: str  # ISO 8601, UTC, seconds
    ended: str
    duration_s: float
    history_csv: str | None  # Locust's stats history CSV, beside the file
    requests: dict[str, RequestEntry]
    server_stats: dict[str, float | None] | None  # Triton's own statistics over the run, per inference
    locust: LocustNumbers
