"""Microsecond latency histograms across processes, and the results written at the end of a run.

Every successful request's latency is recorded in Rust in an HdrHistogram (1 µs to 60 s, 3 significant
digits). Workers ship what they recorded with each stats report (``events.report_to_master``); the
master merges (``events.worker_report``). At the end the master (or the single local process) writes
``latency.json`` and ``latency.csv`` next to Locust's CSV files and prints a summary.

Locust's own statistics are also made finer: its response-time buckets keep 0.1 ms below 100 ms, by
replacing ``locust.stats.bucket_response_time`` while a run's Environment lives (Locust's is put back
at its ``quit`` event; see :mod:`locust_inference.hooks`).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gevent
import locust.stats
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, LocalRunner, MasterRunner, WorkerRunner

from locust_inference import hooks
from locust_inference._native import Measurements, ProtocolError
from locust_inference.generative import SloCount
from locust_inference.options import Settings
from locust_inference.results_schema import (
    LATENCY_CSV,
    LATENCY_FILE,
    SUMMARY_KEYS,
    VERSION,
    LatencyDocument,
    LocustNumbers,
    OpenLoop,
    Percentiles,
    RequestEntry,
    ServerBreakdown,
    SloEntry,
    TokenEntry,
    histograms,
)
from locust_inference.server_stats import (
    EnsembleSteps,
    ModelsRead,
    ServerStats,
    StatsRead,
    breakdown,
    read_models,
)
from locust_inference.telemetry import monitor as telemetry
from locust_inference.telemetry import wiring

__all__ = [
    "Collector",
    "collector_of",
    "fine_bucket_response_time",
    "install",
    "merge_report",
    "use_fine_buckets",
]

log = logging.getLogger("locust_inference")
REPORT_KEY = "locust_inference"  # a worker report's entry: {request name: Measurements.to_bytes()}
SLO_KEY = "locust_inference_slo"  # with --token-slo: {"met": n, "judged": n} since the worker's last report
# Request names the master keeps measurements for: each costs nine histograms (about 1.2 MiB), so a
# worker naming thousands would cost gigabytes. A run has one name per process in practice.
MAX_NAMES = 100
MAX_WORKERS = 10_000  # worker ids whose count of resets a master keeps
# a worker report's entry: how many resets (--reset-stats, the web UI's) the worker made before taking what it sends
RESETS_KEY = "locust_inference_resets"
# Locust's own (hooks.check_bucket checks it before use_fine_buckets replaces it)
_locust_bucket: Callable[[float], int] | None = getattr(locust.stats, "bucket_response_time", None)
_fine_bucket_users: set[int] = set()  # id() of each Environment whose run uses fine buckets


def fine_bucket_response_time(response_time: float) -> float:
    """Locust's bucketing, but with 0.1 ms resolution below 100 ms (Locust rounds to whole ms)."""
    if response_time < 100:
        return round(response_time, 1)
    assert _locust_bucket is not None, "installed only after hooks.check_bucket found Locust's"
    return _locust_bucket(response_time)


def use_fine_buckets(environment: Environment) -> None:
    """Replaces ``locust.stats.bucket_response_time`` (a process-wide hook) until ``environment``'s ``quit``
    event, when Locust's own is put back unless another Environment still uses it. Raises
    :class:`~locust_inference.hooks.LocustHookError` when Locust's hook is not the one replaced here."""
    hooks.check_bucket()
    original = _locust_bucket
    if original is None:  # check_bucket found one set after this module was imported: not Locust's
        raise hooks.failure(hooks.BUCKET_HOOK, "did not exist when locust_inference was imported")
    if id(environment) in _fine_bucket_users:
        return
    _fine_bucket_users.add(id(environment))
    # Locust hints an int; its buckets are only dict keys and rounding, so tenths of a ms work as well.
    locust.stats.bucket_response_time = fine_bucket_response_time  # type: ignore[assignment]

    @environment.events.quit.add_listener
    def _restore(**_kw: Any) -> None:
        _fine_bucket_users.discard(id(environment))
        if not _fine_bucket_users:
            locust.stats.bucket_response_time = original  # type: ignore[assignment]  # a def to mypy


class Recording(Protocol):
    """What a process's endpoint offers the collector (``_native.Endpoint``)."""

    def take(self) -> Measurements: ...
    def reset(self) -> None: ...


@dataclass
class Collector:
    """What the requests of one process (or, on the master, of all workers) measured, per request name."""

    settings: Settings
    endpoint: Recording | None = None  # this process's, None on a master
    measured: dict[str, Measurements] = field(default_factory=dict)
    window: Measurements = field(default_factory=Measurements)  # all names, since the last take_window()
    started: dt.datetime | None = None
    stopped: dt.datetime | None = None  # when the test stopped: a web UI keeps the process up after it
    stats_at_start: StatsRead | None = None  # Triton's statistics at the start, being read
    resets: int = 0  # restarts so far (--reset-stats, the web UI's "Reset Stats")
    # A master's, per worker id: the restarts it reported last, and those its reports must show to hold only
    # requests since the master's last restart (a worker that joined after it has none to show).
    worker_resets: dict[str, int] = field(default_factory=dict)
    worker_floors: dict[str, int] = field(default_factory=dict)
    final: LatencyDocument | None = None  # the summary written at the end (latency.json's content)
    users: int = 0  # the most users that ran at once (Locust's spawning_complete), for tokens per user
    slo: SloCount | None = None  # with --token-slo: this process's (or, on a master, every worker's) judgements
    monitor: telemetry.Monitor | None = None  # the server's metrics and the load generator's health
    tap: Measurements = field(default_factory=Measurements)  # all names, since the last take_tap()
    # this process's endpoints by request name: ``endpoint``'s alone, or one per model (several models)
    endpoints: dict[str, Recording] = field(default_factory=dict)
    # several models: each model's statistics at the start, by request name (``stats_at_start`` is None then)
    model_stats_at_start: ModelsRead | None = None
    # each name's part of ``window``, kept only once a sweep asks for it (:meth:`track_names`): per-model steps
    window_by_name: dict[str, Measurements] | None = None
    # the composing models of the ensembles read: every read of Triton's statistics in this run shares them
    ensembles: EnsembleSteps = field(default_factory=EnsembleSteps)

    def __post_init__(self) -> None:
        if self.endpoint is not None and not self.endpoints:
            self.endpoints = {self.settings.name: self.endpoint}

    def reset_endpoints(self) -> None:
        """Forgets what this process's endpoints recorded and did not take yet."""
        for endpoint in self.endpoints.values():
            endpoint.reset()

    def read_stats_at_start(self) -> None:
        """Starts reading Triton's statistics now: the run's model's, or each model's."""
        self.stats_at_start = StatsRead(self.settings, self.ensembles)
        self.model_stats_at_start = (
            ModelsRead(self.settings.per_model(), self.ensembles) if self.settings.models else None
        )

    def wait_stats_at_start(self) -> None:
        if self.stats_at_start is not None:
            self.stats_at_start.get()
        if self.model_stats_at_start is not None:
            self.model_stats_at_start.get()

    def add(self, name: str, measurements: Measurements) -> None:
        """Adds ``measurements`` to ``name``'s and to the window; raises ProtocolError, adding nothing, when a
        count would overflow or ``name`` would be one name too many."""
        mine = self.measured.get(name)
        if mine is None:
            if len(self.measured) >= MAX_NAMES:
                raise ProtocolError(f"more than {MAX_NAMES} request names")
            mine = Measurements()
        mine.check_add(measurements)
        self.window.check_add(measurements)
        named = None
        if self.window_by_name is not None:
            named = self.window_by_name.get(name) or Measurements()
            named.check_add(measurements)
        mine.add(measurements)
        self.window.add(measurements)
        if named is not None and self.window_by_name is not None:
            named.add(measurements)
            self.window_by_name[name] = named
        self.measured[name] = mine
        try:
            self.tap.check_add(measurements)
        except ProtocolError:
            self.tap = Measurements()  # only the lag over time would miss it; what is measured is kept above
        self.tap.add(measurements)

    def poll(self) -> None:
        """Takes what this process's endpoints recorded since the last take (a worker sends it instead)."""
        for name, endpoint in self.endpoints.items():
            self.add(name, endpoint.take())

    def take_tap(self) -> Measurements:
        """What arrived since the last call: the monitor's own window, independent of a sweep's."""
        tap, self.tap = self.tap, Measurements()
        return tap

    def take_window(self) -> Measurements:
        """What arrived (from this process's endpoint by poll(), or in workers' reports) since the last call."""
        window, self.window = self.window, Measurements()
        if self.window_by_name is not None:
            self.window_by_name = {}
        return window

    def track_names(self) -> None:
        """Keeps each request name's part of the window from now on (a sweep's per-model rows)."""
        if self.window_by_name is None:
            self.window_by_name = {}

    def take_window_by_name(self) -> tuple[Measurements, dict[str, Measurements]]:
        """:meth:`take_window`, with each request name's part of it (empty unless :meth:`track_names`)."""
        named = self.window_by_name or {}
        return self.take_window(), named

    def restart(self, *, wait: bool = True, workers: Iterable[str] = ()) -> None:
        """Forgets what was measured and counts time from now; streams keep their number and rate. Without
        ``wait``, returns before Triton's statistics are read (the summary waits for them): the caller resets
        Locust's statistics right after, at the same instant (the web UI's "Reset Stats"). On a master,
        ``workers`` are the ids of the workers connected now, each about to restart once more."""
        for worker in {*self.worker_resets, *workers}:
            self.worker_floors[worker] = max(self.worker_floors.get(worker, 0), self.worker_resets.get(worker, 0)) + 1
        for m in self.measured.values():
            m.restart()
        if self.slo is not None:
            self.slo.reset()
        self.resets += 1
        self.started = dt.datetime.now(dt.UTC)
        self.read_stats_at_start()
        if wait:
            self.wait_stats_at_start()  # see _start: the snapshot before the requests it is subtracted from

    def open_loop(self, name: str) -> OpenLoop | None:
        """The open-loop view of ``name``: offered and achieved rates, drops, lags; None without streams.

        Every request a stream scheduled ends once: dropped, completed (reported) or unfinished (its stream
        stopped first), so ``carried + scheduled = dropped + completed + unfinished + pending``. ``carried``
        are the requests still pending at ``--reset-stats`` (scheduled before it, ended after it);
        ``pending`` are those in flight, queued or answered but not reported yet: 0 once every stream
        stopped, as at the end of a run."""
        c = self.measured[name].streams
        if not c["streams"]:
            return None
        mean_seconds = c["stream_seconds"] / c["streams"]  # how long the average stream ran

        def per_s(n: float) -> float | None:
            return n / mean_seconds if mean_seconds > 0 else None

        lag = self.measured[name].lag.summary()
        ended = int(c["dropped"]) + int(c["completed"]) + int(c["unfinished"])
        return {
            "offered_rate_per_s": c["rate"],
            "carried": int(c["carried"]),
            "scheduled": int(c["scheduled"]),
            "sent": int(c["sent"]),
            "dropped": int(c["dropped"]),
            "completed": int(c["completed"]),
            "unfinished": int(c["unfinished"]),
            "pending": int(c["carried"]) + int(c["scheduled"]) - ended,
            "streams": int(c["streams"]),
            "stream_seconds": c["stream_seconds"],
            "scheduled_per_s": per_s(c["scheduled"]),
            "achieved_per_s": per_s(c["completed"]),
            "lag_ms": {k: lag[k] for k in ("p50", "p99", "max") if k in lag},
        }

    def tokens(self, name: str, duration: float) -> TokenEntry:
        """``name``'s token measures (see results_schema.TokenEntry) over ``duration`` seconds."""
        m = self.measured[name]
        counts = m.tokens
        per_s = counts["output_tokens_total"] / duration
        return {
            "ttft_ms": m.ttft.summary(),
            "itl_ms": m.itl.summary(),
            "tpot_ms": m.tpot.summary(),
            "output_tokens": m.output_tokens.summary(),
            "input_tokens": m.input_tokens.summary(),
            "output_tokens_total": counts["output_tokens_total"],
            "output_tokens_failed": counts["output_tokens_failed"],
            "token_requests": counts["token_requests"],
            "approximate_requests": counts["approximate_requests"],
            "no_token_requests": counts["no_token_requests"],
            "usage_disagreements": counts["usage_disagreements"],
            "approximate": counts["approximate_requests"] > 0,
            "output_tokens_per_s": per_s,
            "users": self.users,
            "output_tokens_per_s_per_user": per_s / self.users if self.users else None,
            "slo": self.slo_entry(m, duration),
        }

    def slo_entry(self, m: Measurements, duration: float) -> SloEntry | None:
        """The goodput of ``--token-slo`` (one request name per run in practice: the counts are the run's)."""
        if self.slo is None:
            return None
        c = self.slo
        held: dict[str, bool | None] = {}
        for slo in c.slos:
            hist = {"ttft": m.ttft, "tpot": m.tpot, "latency": m.total}[slo.measure]
            held[slo.key] = hist.percentile(slo.percentile) <= slo.ms if hist.count else None
        return {
            "objectives": {slo.key: slo.ms for slo in c.slos},
            "met": c.met,
            "judged": c.judged,
            "attainment": c.met / c.judged if c.judged else None,
            "goodput_per_s": c.met / duration,
            "held": held,
        }

    def _models_stats_now(self) -> dict[str, ServerStats | None]:
        """Triton's statistics of each model measured (several models) by request name, read now in gevent's
        threadpool, waited for letting other greenlets run; in one budget for them all (read_models)."""
        started = self.model_stats_at_start.names if self.model_stats_at_start is not None else frozenset()
        models = [s for s in self.settings.per_model() if s.name in self.measured and s.name in started]
        return gevent.get_hub().threadpool.spawn(read_models, models, self.ensembles).get() if models else {}

    def summary(
        self,
        environment: Environment,
        history_csv: str | None,
        stats_at_end: Callable[[], ServerStats | None] | None = None,
        model_stats_at_end: Mapping[str, ServerStats | None] | None = None,
    ) -> LatencyDocument:
        """latency.json's content now. ``stats_at_end`` gives Triton's statistics to subtract the start's from
        (by default read now, waiting for the read): the web UI passes its latest read instead of waiting, and
        with several models ``model_stats_at_end``, its latest read of each model's by request name."""
        ended = self.stopped or dt.datetime.now(dt.UTC)
        models_at_start = self.model_stats_at_start
        if stats_at_end is None and models_at_start is not None:  # several models: each one's, read now
            model_stats_at_end = self._models_stats_now()
        if self.stopped is not None and self.monitor is not None:
            # Workers' last reports reach a master after the test stopped and the monitor's last read: their
            # send lags close one more window, so the windows add up to what is summarised here.
            self.monitor.take_lag_window()
        started = self.started or ended
        duration = max((ended - started).total_seconds(), 1e-9)
        requests: dict[str, RequestEntry] = {}
        locust_numbers: LocustNumbers = {}
        for name, m in sorted(self.measured.items()):
            entry = environment.stats.entries.get((name, "infer"))
            hist = m.total
            requests[name] = {
                "count": hist.count,
                "failures": entry.num_failures if entry else None,
                "resent": m.resent,
                "abandoned": m.abandoned,
                "requests_per_s": hist.count / duration,
                "latency_ms": hist.summary(),
                "ttfb_ms": m.ttfb.summary(),
                "service_ms": m.service.summary(),
                "open_loop": self.open_loop(name),
                "tokens": self.tokens(name, duration)
                if self.settings.generative.generative or self.settings.grpc.stream
                else None,
                "distribution": hist.distribution(),
                "server_stats": None,
            }
            # several models: each one's own statistics, read above, or (the web UI) its latest read of each
            if models_at_start is not None and name in models_at_start.names and model_stats_at_end is not None:
                start = models_at_start.get().get(name)
                end = model_stats_at_end.get(name)
                requests[name]["server_stats"] = breakdown(start, end, hist.summary().get("mean"))
            if self.settings.models:  # several models: Locust's view of them all (the "Aggregated" row)
                entry = environment.stats.total
            if entry and entry.num_requests:
                locust_numbers = {  # Locust's own view (one request name per run in practice)
                    "requests": entry.num_requests,
                    "failures": entry.num_failures,
                    "p50_ms": entry.get_response_time_percentile(0.5),
                    "p95_ms": entry.get_response_time_percentile(0.95),
                    "p99_ms": entry.get_response_time_percentile(0.99),
                }
        client_mean = None
        if len(self.measured) == 1:
            client_mean = next(iter(self.measured.values())).total.summary().get("mean")
        server_metrics, client_health = (
            self.monitor.document(started.timestamp(), ended.timestamp()) if self.monitor else (None, None)
        )
        return {
            "version": VERSION,
            "server": self.settings.server,
            "model": self.settings.model,
            "host": self.settings.host,
            "protocol": self.settings.protocol,
            "started": started.isoformat(timespec="seconds"),
            "ended": ended.isoformat(timespec="seconds"),
            "duration_s": duration,
            "history_csv": history_csv,
            "requests": requests,
            "server_stats": breakdown(
                self.stats_at_start.get() if self.stats_at_start else None,
                (stats_at_end or StatsRead(self.settings, self.ensembles).get)(),
                client_mean,
            ),
            "locust": locust_numbers,
            "server_metrics": server_metrics,
            "client_health": client_health,
        }


def _stale(resets: Any, master_resets: int) -> bool:
    """Whether a worker's report, taken after its ``resets``-th reset, is of requests the master forgot
    (``master_resets``: the resets the master expects of that worker by now).

    The master resets (``--reset-stats``) first, then tells the workers to: a report a worker sent before
    its own reset may arrive after the master's, and holds requests from before it (the ones pending at the
    worker's reset are counted in its next report as carried)."""
    if type(resets) is not int or resets < 0:
        raise ProtocolError(f"a worker's report has {RESETS_KEY} = {str(resets)[:40]!r}, not a count of resets")
    return resets < master_resets


def write_results(summary: LatencyDocument, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = folder / LATENCY_FILE, folder / LATENCY_CSV
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "measure", "count", *(f"{k}_ms" for k in SUMMARY_KEYS)])
        for name, entry in summary["requests"].items():
            for measure, values in histograms(entry):
                row = (f"{values.get(k, 0):.3f}" for k in SUMMARY_KEYS)
                writer.writerow([name, measure, entry["count"], *row])
    return json_path, csv_path


def format_summary(summary: LatencyDocument) -> str:
    lines = ["", "Latency (µs histograms, successful requests)", ""]
    header = f"{'name':<32} {'measure':<8} {'count':>8} " + " ".join(
        f"{k:>9}" for k in ("p50", "p90", "p95", "p99", "p99.9", "p99.99", "max", "mean")
    )
    lines.append(header)
    for name, entry in summary["requests"].items():
        for measure, v in histograms(entry):
            values = " ".join(
                f"{v.get(k, 0):>9.3f}" for k in ("p50", "p90", "p95", "p99", "p99.9", "p99.99", "max", "mean")
            )
            lines.append(f"{name:<32} {measure:<8} {entry['count']:>8} {values}")
    for name, entry in summary["requests"].items():
        ol = entry.get("open_loop")
        if ol:
            lines += [
                "",
                f"Open loop, {name}: offered {ol['offered_rate_per_s']:g} req/s ({ol['streams']} streams), "
                f"achieved {_rate(ol['achieved_per_s'])} req/s; {_identity(ol)}; sent {ol['sent']}; lag (ms) "
                + ", ".join(f"{k} {v:.3f}" for k, v in ol["lag_ms"].items())
                + ". latency runs from each request's intended send time, service from its actual send.",
            ]
    for name, entry in summary["requests"].items():
        tokens = entry.get("tokens")
        if tokens:
            lines += ["", *_format_tokens(name, tokens)]
    resent = {name: entry.get("resent", 0) for name, entry in summary["requests"].items()}
    lines += [
        "",
        "Resent (sent again on a new connection: the pooled one was closed before any byte went out): "
        + ", ".join(f"{name} {n}" for name, n in resent.items()),
    ]
    abandoned = {name: entry.get("abandoned", 0) for name, entry in summary["requests"].items()}
    if any(abandoned.values()):  # a closed loop's count; an open loop's are its streams' unfinished
        lines += [
            "",
            "Abandoned (sent, never reported: their users were stopped while they were out; the server may have "
            "run them): " + ", ".join(f"{name} {n}" for name, n in abandoned.items()),
        ]
    lines += telemetry.format_summary(summary.get("server_metrics"), summary.get("client_health"), summary["model"])
    stats = summary.get("server_stats")
    if stats:
        lines += ["", "Triton server side, per inference (ms): " + _format_server_stats(stats)]
        lines += _format_composing(stats)
    for name, entry in summary["requests"].items():  # several models: each one's own
        model_stats = entry.get("server_stats")
        if model_stats:
            lines += ["", f"Triton server side, {name}, per inference (ms): " + _format_server_stats(model_stats)]
            lines += _format_composing(model_stats)
    return "\n".join(lines)


def _format_composing(stats: ServerBreakdown) -> list[str]:
    """An ensemble's composing models, one line each under the ensemble's: the same breakdown, per inference
    of that model."""
    composing = stats.get("composing")
    if not isinstance(composing, dict):
        return []
    return [
        f"  composing model {name}: " + (_format_server_stats(own) if own else "no statistics over the run")
        for name, own in composing.items()
    ]


def _format_server_stats(stats: ServerBreakdown) -> str:
    return (
        ", ".join(
            f"{k.removesuffix('_ms')} {stats[k]:.3f}"
            for k in ("queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms", "server_total_ms")
        )
        + f"; average batch {stats['avg_batch_size']:.2f}"
        + (
            f"; client mean - server = {stats['client_minus_server_ms']:.3f} ms (network + client)"
            if stats.get("client_minus_server_ms") is not None
            else ""
        )
    )


def _format_tokens(name: str, t: TokenEntry) -> list[str]:
    """The token lines of the summary: time to first token, inter-token latency and time per output token
    (p50, p99), and the token rates."""

    def pair(p: Percentiles) -> str:
        return f"p50 {p['p50']:.3f}, p99 {p['p99']:.3f}" if p else "none measured"

    counted = (
        "counted by chunks (approximate: no usage from the server, no --tokenizer)"
        if t["approximate"]
        else "from usage or the tokenizer"
    )
    per_user = t["output_tokens_per_s_per_user"]
    return [
        f"Tokens, {name} (ms): time to first token {pair(t['ttft_ms'])}; inter-token latency {pair(t['itl_ms'])}; "
        f"time per output token {pair(t['tpot_ms'])}",
        f"  output tokens/s {t['output_tokens_per_s']:.1f}"
        + (f" ({per_user:.1f} per user, {t['users']} users)" if per_user is not None else "")
        + f"; {t['output_tokens_total']} output tokens in {t['token_requests']} requests, {counted}"
        + (f"; {t['output_tokens_failed']} in failed requests" if t["output_tokens_failed"] else "")
        + (f"; {t['no_token_requests']} requests without a token" if t["no_token_requests"] else "")
        + (
            f"; {t['usage_disagreements']} requests whose usage differs from the tokenizer's count"
            if t["usage_disagreements"]
            else ""
        ),
        *_format_slo(t["slo"]),
    ]


def _format_slo(slo: SloEntry | None) -> list[str]:
    if slo is None:
        return []
    objectives = ", ".join(f"{key} <= {ms:g} ms" for key, ms in slo["objectives"].items())
    attained = f"{slo['attainment']:.1%}" if slo["attainment"] is not None else "none judged"
    verdicts = {True: "held", False: "missed", None: "unmeasured"}
    held = ", ".join(f"{key} {verdicts[v]}" for key, v in slo["held"].items())
    return [
        f"  goodput {slo['goodput_per_s']:.2f} req/s: {slo['met']} of {slo['judged']} requests ({attained}) met "
        f"every objective ({objectives}); over the run: {held}"
    ]


def _identity(ol: OpenLoop) -> str:
    """The open-loop counters as the identity they keep (see Collector.open_loop)."""
    carried = f" + carried {ol['carried']}" if ol.get("carried") else ""
    pending = f" + pending {ol['pending']}" if ol.get("pending") else ""
    return (
        f"scheduled {ol['scheduled']}{carried} = dropped {ol['dropped']} + completed {ol['completed']} + "
        f"unfinished {ol['unfinished']}{pending}"
    )


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def merge_report(collector: Collector, client_id: Any, data: Any, *, stale: bool = False) -> None:
    """Merges the measurements of a worker's report (``data`` of Locust's ``worker_report``) into ``collector``.
    Of a ``stale`` report (taken before the worker's reset, arriving after the master's) only what a reset
    keeps: the streams that started since the worker's previous report, and their rate. They run on, and no
    later report counts them again.

    Nothing in a report is trusted: an entry that is not ``name (str): bytes``, does not decode, or would
    overflow a count when merged is refused, and the rest merged; one warning per report names the worker
    and the first reason. Nothing raises out of here, as Locust would log the traceback and the run end with
    exit code 2 (and a Rust abort would end the master)."""
    if not isinstance(data, dict) or REPORT_KEY not in data:
        return  # not ours: Locust's own listeners judge the report
    entries = data[REPORT_KEY]
    refused: list[str] = []
    if not isinstance(entries, dict):
        refused.append(f"of type {type(entries).__name__}, not a dict of measurements")
        entries = {}
    for name, blob in entries.items():
        try:
            if not isinstance(name, str):
                raise ProtocolError(f"the name is of type {type(name).__name__}, not str")
            if not isinstance(blob, bytes):
                raise ProtocolError(f"of type {type(blob).__name__}, not bytes")
            measurements = Measurements.from_bytes(blob)
            if stale:
                measurements.restart()
            collector.add(name, measurements)
        except (ProtocolError, ValueError) as err:
            refused.append(f"{name!r:.80}: {err}")
    if SLO_KEY in data and collector.slo is not None and not stale:
        try:
            collector.slo.add(data[SLO_KEY])
        except ProtocolError as err:
            refused.append(f"--token-slo: {err}")
    if refused:
        log.warning(
            "refused %d of the %d latency entries from worker %.80r: %s",
            len(refused),
            max(len(entries), 1),
            client_id,
            refused[0],
        )


def results_folder(environment: Environment, settings: Settings) -> tuple[Path, str | None]:
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        return Path(prefix).parent, Path(f"{prefix}_stats_history.csv").name
    return Path("results") / settings.server, None


def worker_ids(runner: Any) -> list[str]:
    """The ids of a master's connected workers; none elsewhere."""
    clients = getattr(runner, "clients", None) if isinstance(runner, MasterRunner) else None
    return [str(c.id) for c in clients.all] if clients is not None else []


_collectors: weakref.WeakKeyDictionary[Environment, Collector] = weakref.WeakKeyDictionary()


def collector_of(environment: Environment) -> Collector | None:
    """The collector :func:`install` wired into ``environment`` (None before)."""
    return _collectors.get(environment)


def install(
    environment: Environment,
    settings: Settings,
    endpoint: Recording | None,
    *,
    endpoints: dict[str, Recording] | None = None,
) -> Collector:
    """Wires the collector into Locust's events for this process. ``endpoint`` records this process's
    requests (None on a master, which only merges what workers send); with several models, ``endpoints``
    record each model's, by request name."""
    use_fine_buckets(environment)
    collector = Collector(settings, endpoint, endpoints=dict(endpoints or {}))
    if settings.generative.slos:
        collector.slo = SloCount(settings.generative.slos)
    _collectors[environment] = collector
    events = environment.events
    runner = environment.runner
    take_local = collector.poll

    @events.spawning_complete.add_listener
    def _reset(user_count: int = 0, **_kw: Any) -> None:
        collector.users = max(collector.users, user_count)
        # Locust resets its own statistics here with --reset-stats (its runner's listener); ours follow,
        # in every process, so that latency.json covers the same requests as Locust's numbers.
        if environment.reset_stats:
            collector.reset_endpoints()
            collector.restart(workers=worker_ids(runner))

    if isinstance(runner, WorkerRunner):

        @events.report_to_master.add_listener
        def _report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
            if collector.endpoints:
                data[REPORT_KEY] = {name: e.take().to_bytes() for name, e in collector.endpoints.items()}
                if collector.slo is not None:
                    data[SLO_KEY] = collector.slo.take()
                # --reset-stats, or the web UI's "Reset Stats" (webui.follow_resets), may restart it at any time
                data[RESETS_KEY] = collector.resets

        wiring.install(environment, settings, poll=None, take_lag=collector.take_tap)
        return collector

    if isinstance(runner, MasterRunner):

        @events.worker_report.add_listener
        def _merge(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
            stale = False
            if RESETS_KEY in data:
                try:
                    stale = _stale(data[RESETS_KEY], collector.worker_floors.get(client_id, 0))
                    if not stale and (
                        len(collector.worker_resets) < MAX_WORKERS or client_id in collector.worker_resets
                    ):
                        collector.worker_resets[client_id] = data[RESETS_KEY]
                except ProtocolError as err:
                    log.warning("refused the report from worker %.80r: %s", client_id, err)
                    return
            merge_report(collector, client_id, data, stale=stale)

    @events.test_start.add_listener
    def _start(**_kw: Any) -> None:
        # A test started again after one stopped (the web UI's "New test"): Locust clears its statistics just
        # before this event, and ours start afresh with them.
        again, collector.stopped = collector.stopped is not None, None
        if collector.started is None or again:
            take_local()  # drop anything recorded before the test (none expected, or the last test's)
            collector.measured.clear()
            collector.take_window()
            collector.started = dt.datetime.now(dt.UTC)
            collector.read_stats_at_start()
            # Waited for here, letting other greenlets (a master's heartbeats) run: the users, or the
            # master's spawn messages, start only after this listener, so the snapshot precedes every
            # request it is subtracted from (a read still out as the first requests ran counted some of
            # them at the start, and Triton's count came out below ours).
            collector.wait_stats_at_start()

    @events.test_stop.add_listener
    def _stop(**_kw: Any) -> None:
        # the rates cover the test, not the time a web UI stays open after it (latency.json is written at quit)
        collector.stopped = dt.datetime.now(dt.UTC)

    @events.quitting.add_listener
    def _finish(**_kw: Any) -> None:
        take_local()
        if not collector.measured:
            return
        folder, history = results_folder(environment, settings)
        summary = collector.final = collector.summary(environment, history)
        json_path, csv_path = write_results(summary, folder)
        sys.stdout.write(format_summary(summary) + f"\n\nwritten: {json_path}, {csv_path}\n")
        sys.stdout.flush()

    # After _finish: Locust calls quitting's listeners in reverse, and the monitor's last read comes first.
    collector.monitor = wiring.install(
        environment, settings, poll=take_local if collector.endpoints else None, take_lag=collector.take_tap
    )

    @events.quitting.add_listener
    def _stop_users(**_kw: Any) -> None:
        # Registered last, so called first. Locust fires quitting before its runner.quit(): after -t the
        # users were stopped already, but after a Ctrl-C they still run, their open-loop streams neither
        # stopped (requests in flight not counted as unfinished, no running time) nor their last answers
        # reported. Stopped here as -t stops them, before anything is read or written.
        if isinstance(runner, LocalRunner) and runner.state in (STATE_SPAWNING, STATE_RUNNING):
            runner.stop()
        elif isinstance(runner, MasterRunner):
            # the workers told to quit, and their final reports waited for (distributed.wait_for_final_reports);
            # at once when the master has quit already, as after -t
            runner.quit()

    return collector
