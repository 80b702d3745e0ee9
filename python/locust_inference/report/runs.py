"""Loading runs: ``latency.json``, the Locust stats history CSV it names, and the server's own statistics.

Each run folder (normally ``results/triton`` and ``results/litserve``) holds the ``latency.json`` written
at the end of a load test, and optionally Locust's per-second ``*_stats_history.csv`` and the
``sweep.json`` of a load sweep (read by :mod:`.sweeps`).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from locust_inference import results_schema

from .sweeps import Sweep, SweepError, load_sweep

# The file's schema is results_schema's; it is read here value by value, each checked: the file is input.
LATENCY_FILE = results_schema.LATENCY_FILE
SUPPORTED_VERSION = results_schema.VERSION

# Okabe-Ito: distinct for the common kinds of colour blindness, and on white and in print.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

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
class Tokens:
    """A generative run's token measures (``requests.<name>.tokens`` of latency.json)."""

    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]
    tpot_ms: dict[str, float]
    output_tokens: dict[str, float]
    output_tokens_per_s: float | None
    output_tokens_per_s_per_user: float | None
    approximate: bool
    goodput_per_s: float | None  # with --token-slo


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
    tokens: Tokens | None = None
    server_stats: dict[str, float] | None = None  # several models in a run: this name's model's statistics
    composing: dict[str, dict[str, float] | None] = field(default_factory=dict)  # its model's, an ensemble's


@dataclass(frozen=True)
class HistoryPoint:
    """One ``Aggregated`` row of Locust's stats history; ``None`` where Locust wrote ``N/A``."""

    t: float
    users: int | None
    requests_per_s: float | None
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class MetricsPoint:
    """One window of ``server_metrics`` in ``latency.json``, reduced to what the charts draw; None: not there."""

    t: float  # unix seconds, the window's end
    gpu_utilization_pct: dict[str, float]  # per GPU
    gpu_power_w: dict[str, float]
    gpu_memory_used_bytes: dict[str, float]
    cpu_utilization_pct: float | None
    cpu_memory_used_bytes: float | None
    process_cpu_pct: float | None  # a local server process's (--server-pid)
    process_rss_bytes: float | None
    success_per_s: float | None  # the run's model
    queue_ms: float | None
    compute_infer_ms: float | None
    pending: float | None


@dataclass
class ClientHealth:
    """``client_health``: each load-generator process's CPU over time, the send lag, the saturated ones."""

    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # process -> (t, Python thread %)
    lag: list[tuple[float, float | None]] = field(default_factory=list)  # (t, p99 ms)
    saturated: list[str] = field(default_factory=list)
    peaks: dict[str, float] = field(default_factory=dict)
    threshold_pct: float = 90.0


MAX_SERIES = 64  # lines per chart and run: a file naming thousands of GPUs or workers would draw for ever


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
    # an ensemble's composing models, each one's breakdown (None: not reported), from server_stats.composing
    composing: dict[str, dict[str, float] | None] = field(default_factory=dict)
    protocol: str = "http"  # how Triton was reached: http or grpc (files without it: http)
    history_note: str = ""
    sweep: Sweep | None = None
    metrics: list[MetricsPoint] = field(default_factory=list)
    metrics_note: str | None = None
    health: ClientHealth = field(default_factory=ClientHealth)
    label: str = ""
    color: str = PALETTE[0]


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


def _tokens(value: Any) -> Tokens | None:
    if not isinstance(value, dict):
        return None
    slo = value.get("slo")
    return Tokens(
        ttft_ms=_numbers(value.get("ttft_ms")),
        itl_ms=_numbers(value.get("itl_ms")),
        tpot_ms=_numbers(value.get("tpot_ms")),
        output_tokens=_numbers(value.get("output_tokens")),
        output_tokens_per_s=_number(value.get("output_tokens_per_s")),
        output_tokens_per_s_per_user=_number(value.get("output_tokens_per_s_per_user")),
        approximate=value.get("approximate") is True,
        goodput_per_s=_number(slo.get("goodput_per_s")) if isinstance(slo, dict) else None,
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
                tokens=_tokens(entry.get("tokens")),
                server_stats=_numbers(entry["server_stats"]) if isinstance(entry.get("server_stats"), dict) else None,
                composing=_composing(entry.get("server_stats")),
            )
        )
    return stats


def _composing(server_stats: Any) -> dict[str, dict[str, float] | None]:
    """``server_stats.composing``: each composing model's numbers, None where it has none (at most MAX_SERIES
    models: a file naming thousands would make a table without end)."""
    composing = server_stats.get("composing") if isinstance(server_stats, dict) else None
    if not isinstance(composing, dict):
        return {}
    return {
        str(name)[:200]: _numbers(own) if isinstance(own, dict) else None
        for name, own in list(composing.items())[:MAX_SERIES]
    }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _per_gpu(gpus: Any, key: str) -> dict[str, float]:
    if not isinstance(gpus, dict):
        return {}
    values = {}
    for gpu, g in list(gpus.items())[:MAX_SERIES]:
        if isinstance(g, dict) and (n := _number(g.get(key))) is not None:
            values[str(gpu)[:80]] = n
    return values


def _metrics(raw: Any, model: str) -> tuple[list[MetricsPoint], str | None]:
    """``server_metrics``' windows, each value checked; the note it carries."""
    if not isinstance(raw, dict):
        return [], None
    note = raw.get("note") if isinstance(raw.get("note"), str) else None
    windows = raw.get("windows")
    points = []
    for w in windows if isinstance(windows, list) else []:
        t = _number(w.get("t")) if isinstance(w, dict) else None
        if t is None:
            continue
        assert isinstance(w, dict)
        cpu, process, m = (
            _object(w.get("cpu")),
            _object(w.get("server_process")),
            _object(_object(w.get("models")).get(model)),
        )
        points.append(
            MetricsPoint(
                t=t,
                gpu_utilization_pct=_per_gpu(w.get("gpus"), "utilization_pct"),
                gpu_power_w=_per_gpu(w.get("gpus"), "power_w"),
                gpu_memory_used_bytes=_per_gpu(w.get("gpus"), "memory_used_bytes"),
                cpu_utilization_pct=_number(cpu.get("utilization_pct")),
                cpu_memory_used_bytes=_number(cpu.get("memory_used_bytes")),
                process_cpu_pct=_number(process.get("cpu_pct")),
                process_rss_bytes=_number(process.get("rss_bytes")),
                success_per_s=_number(m.get("success_per_s")),
                queue_ms=_number(m.get("queue_ms")),
                compute_infer_ms=_number(m.get("compute_infer_ms")),
                pending=_number(m.get("pending")),
            )
        )
    points.sort(key=lambda p: p.t)
    return points, note


def _health(raw: Any) -> ClientHealth:
    health = ClientHealth()
    if not isinstance(raw, dict):
        return health
    processes = raw.get("processes")
    for name, samples in list(processes.items())[:MAX_SERIES] if isinstance(processes, dict) else []:
        if isinstance(samples, list):
            health.cpu[str(name)[:80]] = [
                (t, p)
                for s in samples
                if isinstance(s, dict)
                and (t := _number(s.get("t"))) is not None
                and (p := _number(s.get("python_cpu_pct"))) is not None
            ]
    lag = raw.get("lag")
    health.lag = [
        (t, _number(w.get("p99_ms")))
        for w in (lag if isinstance(lag, list) else [])
        if isinstance(w, dict) and (t := _number(w.get("t"))) is not None
    ]
    saturated = raw.get("saturated")
    health.saturated = [str(p)[:80] for p in saturated[:MAX_SERIES]] if isinstance(saturated, list) else []
    health.peaks = {k[:80]: v for k, v in _numbers(raw.get("peak_python_cpu_pct")).items()}
    health.threshold_pct = _number(raw.get("threshold_pct")) or 90.0
    return health


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
    data: dict[str, Any] = dict(results_schema.read(path, ReportError))
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
        protocol=str(data.get("protocol") or "http"),
        started=_timestamp(data.get("started")),
        ended=_timestamp(data.get("ended")),
        duration_s=_number(data.get("duration_s")),
        requests=_requests(data.get("requests"), path),
        server_stats=_numbers(server_stats) if isinstance(server_stats, dict) else None,
        locust=_numbers(locust) if isinstance(locust, dict) else None,
        composing=_composing(server_stats),
    )
    run.metrics, run.metrics_note = _metrics(data.get("server_metrics"), run.model)
    run.health = _health(data.get("client_health"))

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

    try:
        run.sweep = load_sweep(folder, shown)
    except SweepError as e:
        raise ReportError(str(e)) from e
    if run.sweep is not None and run.sweep.server != server:
        raise ReportError(
            f"{folder / 'sweep.json'} is a sweep of {run.sweep.server} but {path} measured {server}: "
            "keep each server's results in its own folder"
        )
    return run


def label_runs(runs: list[Run]) -> None:
    """Gives each run a unique label (its server, with "gRPC" for a run over gRPC, plus its folder when those
    repeat) and a colour."""
    servers = [f"{r.server} gRPC" if r.protocol == "grpc" else r.server for r in runs]
    for i, (run, server) in enumerate(zip(runs, servers, strict=True)):
        run.label = server if servers.count(server) == 1 else f"{server} ({run.folder})"
        run.color = PALETTE[i % len(PALETTE)]


def row_label(run: Run, stats: RequestStats) -> str:
    return run.label if len(run.requests) == 1 else f"{run.label} {stats.name}"
