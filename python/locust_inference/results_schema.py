"""``latency.json``, a run's results: its one schema.

Written by :mod:`locust_inference.latency` (``Collector.summary``, checked against these types by mypy);
read by ``--check`` (:mod:`locust_inference.checks`, the document in memory) and, through :func:`read`, by
the report (:mod:`locust_inference.report.runs`), the demo's table (``servers/demo.py``) and the bench
(``bench/clients.py``). A reader of a file still checks every value it uses: the types say what this
version writes, not what a file on disk holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

__all__ = [
    "HISTOGRAMS",
    "LATENCY_CSV",
    "LATENCY_FILE",
    "SUMMARY_KEYS",
    "VERSION",
    "ClientHealth",
    "LatencyDocument",
    "LocustNumbers",
    "OpenLoop",
    "Percentiles",
    "RequestEntry",
    "SchemaError",
    "ServerBreakdown",
    "ServerMetrics",
    "SloEntry",
    "TokenEntry",
    "histograms",
    "read",
    "read_versioned_json",
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
# Triton's statistics over the run (server_stats.breakdown): counts, avg_batch_size, queue_ms,
# compute_input_ms, compute_infer_ms, compute_output_ms, server_total_ms, request_ms, client_mean_ms and
# client_minus_server_ms, numbers or None; an ensemble's also ``composing``: per composing model the same
# without the client keys, or None (docs/multi-model.md#ensembles)
ServerBreakdown = dict[str, Any]


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


class SloEntry(TypedDict):
    """``requests.<name>.tokens.slo``: the requests judged against ``--token-slo`` and the goodput."""

    objectives: dict[str, float]  # "ttft_p99" -> ms, as given
    met: int  # requests that succeeded and met every objective
    judged: int  # every reported request, failed ones included
    attainment: float | None  # met / judged
    goodput_per_s: float  # met over the run's duration
    held: dict[str, bool | None]  # per objective: the measure's percentile within its bound (None: unmeasured)


class TokenEntry(TypedDict):
    """``requests.<name>.tokens``: a generative endpoint's token measures (docs/generative.md), over its
    successful requests unless named otherwise; None for tensor requests (``--api infer``)."""

    ttft_ms: Percentiles  # time to first token (from the intended send time in an open loop)
    itl_ms: Percentiles  # inter-token latency: every gap between content chunks
    tpot_ms: Percentiles  # time per output token: (end - first token) / (output tokens - 1), per request
    output_tokens: Percentiles  # per request (counts, not ms)
    input_tokens: Percentiles  # per request, from the server's usage, else --tokenizer's (empty without both)
    output_tokens_total: int
    output_tokens_failed: int  # received by failed requests before they failed
    token_requests: int  # successful requests with an output token count
    approximate_requests: int  # of those, counted by content chunks (no usage from the server)
    no_token_requests: int  # successful requests without a content chunk
    usage_disagreements: int  # successful requests whose usage and --tokenizer counts differ
    approximate: bool  # some counts are chunks, not tokens
    output_tokens_per_s: float  # output_tokens_total over the run's duration
    users: int  # the most users that ran at once (all workers)
    output_tokens_per_s_per_user: float | None  # None without users
    slo: SloEntry | None  # None without --token-slo


class RequestEntry(TypedDict):
    """``requests.<name>``: one request name's counts and latencies."""

    count: int  # successful requests: what the histograms hold
    failures: int | None  # Locust's count; None when Locust has no entry of that name
    resent: int
    # closed-loop requests sent and never reported: their users were stopped (killed) while they were out
    abandoned: int
    requests_per_s: float
    latency_ms: Percentiles
    ttfb_ms: Percentiles
    service_ms: Percentiles
    open_loop: OpenLoop | None
    tokens: TokenEntry | None
    distribution: list[tuple[float, float]]  # (percentile, ms) points; lists in the file
    # several models in one run (docs/multi-model.md): Triton's statistics of this name's model. None with
    # one model (they are the document's ``server_stats``) and in the web UI's live view; always written,
    # absent only from files written before several models existed
    server_stats: NotRequired[ServerBreakdown | None]


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


class ServerMetrics(TypedDict):
    """``server_metrics``: the server's own metrics over the run (see docs/metrics.md), read by the master.

    Each window runs from one read to the next: ``t`` (unix seconds, the read that ends it), ``duration_s``,
    ``models`` (per model: ``success``, ``failure``, ``inference_count``, ``execution_count`` in the window,
    each also ``*_per_s``; ``request_ms``, ``queue_ms``, ``compute_input_ms``, ``compute_infer_ms``,
    ``compute_output_ms`` as means per successful request; ``avg_batch_size``; ``pending`` at its end; or
    ``reset``), ``gpus`` (per GPU: ``utilization_pct``, ``memory_used_bytes``, ``memory_total_bytes``,
    ``power_w``, ``power_limit_w``), ``cpu`` (``utilization_pct``, ``memory_used_bytes``,
    ``memory_total_bytes``) and, with ``--server-pid``, ``server_process`` (``cpu_pct``, ``rss_bytes``)."""

    source: str | None  # the URL read; None without one
    server_pid: int | None
    interval_s: float
    note: str | None  # "no server metrics: ..." or the first failed read's reason
    failed_reads: int
    windows: list[dict[str, Any]]
    totals: dict[str, Any]  # the windows as one step (telemetry.windows.summarize)


class ClientHealth(TypedDict):
    """``client_health``: the load generator's processes over the measured window."""

    threshold_pct: float  # Python's thread at or above this % of a core is saturated
    processes: dict[str, list[dict[str, float]]]  # "local", "master" or a worker id: t, python/process CPU %
    peak_python_cpu_pct: dict[str, float]
    saturated: list[str]  # the processes that reached the threshold: their numbers are suspect
    lag: list[dict[str, Any]]  # per monitor window: t, count, p99_ms, max_ms of the open-loop send lag


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
    server_stats: ServerBreakdown | None  # Triton's own statistics over the run, per inference
    locust: LocustNumbers
    server_metrics: ServerMetrics | None
    client_health: ClientHealth | None


class SchemaError(ValueError):
    """A results file that is not a JSON object of the version this code reads, in one line."""


def read_versioned_json(path: Path, version: int, rerun: str, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in ``path``, of format ``version``; ``error`` (one line, naming the file) otherwise.
    ``rerun`` says what makes the file again."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e}): {rerun}") from e
    if not isinstance(data, dict):
        raise error(f"{path} does not hold a JSON object")
    found = data.get("version")
    if found != version:
        raise error(f"{path} has version {found!r}; this report reads version {version}")
    return data


def read(path: Path, error: type[Exception] = SchemaError) -> LatencyDocument:
    """The ``latency.json`` in ``path`` (of :data:`VERSION`); ``error`` in one line otherwise. Only the
    version is checked here: each value is still input to its reader."""
    return cast(LatencyDocument, read_versioned_json(path, VERSION, "run the load test again", error))
