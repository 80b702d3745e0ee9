"""The server's metrics over a run, read by the master (or the one local process), and the load
generator's health from every process.

Once per ``--metrics-interval`` the :class:`Monitor` reads the metrics endpoint (Triton's Prometheus page,
by default its host on port 8002) and, with ``--server-pid``, a local server process's CPU and memory. The
read runs in gevent's thread pool (the native request and /proc reads block; the hub never waits on them),
one at a time: an interval whose read is still out is skipped. The first read is made at test start before
any request, the last at the end after the users stopped, so the windows cover the run exactly, as Triton's
statistics read at the same two moments do. An endpoint that is missing or unreadable costs one warning
line; the run goes on.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.lock

from locust_inference._native import ConfigError, LocustInferenceError, Measurements, http_request
from locust_inference.options import Settings
from locust_inference.results_schema import ClientHealth, ServerMetrics
from locust_inference.telemetry.health import CpuSampler, Health, saturation_warning
from locust_inference.telemetry.prometheus import MAX_BODY_BYTES, MetricsError, Scrape, parse
from locust_inference.telemetry.windows import Window, summarize, window

__all__ = ["MetricsSettings", "Monitor", "Read", "add_arguments", "format_summary", "read_once", "resolve"]

log = logging.getLogger("locust_inference")
TRITON_METRICS_PORT = 8002
DEFAULT_INTERVAL_S = 1.0
INTERVAL_RANGE = (0.1, 3600.0)
MAX_URL = 2048
MAX_WINDOWS = 86_400  # a day at one a second; later windows are not kept (said once)
NO_SERVER_METRICS = "no server metrics"


@dataclass(frozen=True)
class MetricsSettings:
    url: str | None  # None: no endpoint to read
    interval_s: float = DEFAULT_INTERVAL_S
    server_pid: int | None = None
    why_none: str | None = None  # why there is nothing to read, when there is not


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("locust-inference server metrics")
    group.add_argument(
        "--metrics-url",
        env_var="LOCUST_METRICS_URL",
        default=None,
        help="Prometheus metrics endpoint the master reads over the run (default with --server triton: the "
        f"host on port {TRITON_METRICS_PORT}, /metrics); none: do not read one",
    )
    group.add_argument(
        "--metrics-interval",
        env_var="LOCUST_METRICS_INTERVAL",
        default=DEFAULT_INTERVAL_S,
        help="Seconds between reads of the server's metrics and of each process's CPU "
        f"(default {DEFAULT_INTERVAL_S:g})",
    )
    group.add_argument(
        "--server-pid",
        env_var="LOCUST_SERVER_PID",
        default=None,
        help="PID of a server on this machine (e.g. LitServe, which has no metrics endpoint) whose CPU and "
        "memory the master records over the run",
    )


def _check_url(url: str) -> str:
    if len(url) > MAX_URL or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ConfigError(
            f"--metrics-url must be a URL of at most {MAX_URL} characters, without spaces or control characters"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--metrics-url {url[:200]!r} must start with http:// or https:// and name a host")
    if "@" in parts.netloc:
        raise ConfigError("--metrics-url must not carry a user or password (user:password@)")
    try:
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError:
        raise ConfigError(f"--metrics-url {url[:200]!r} has a port that is not a number") from None
    return url


def default_url(host: str) -> str:
    """Triton's metrics endpoint beside ``host``: plain HTTP on port 8002, as Triton serves it."""
    hostname = urlsplit(host).hostname or "127.0.0.1"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    return f"http://{hostname}:{TRITON_METRICS_PORT}/metrics"


def resolve(options: Any, server: str, host: str, local: bool) -> MetricsSettings:
    """The metrics options of a run against ``server`` at ``host``, validated; ``local`` (a master or a
    single process) also checks the PID names a process here. Resolved apart from :class:`Settings`: the
    role of the process is known only to Locust's runner. Raises ConfigError."""
    raw_interval = getattr(options, "metrics_interval", None)
    try:
        interval = float(DEFAULT_INTERVAL_S if raw_interval is None else raw_interval)
    except (TypeError, ValueError):
        raise ConfigError(f"--metrics-interval must be a number of seconds, not {str(raw_interval)[:40]!r}") from None
    low, high = INTERVAL_RANGE
    if not (math.isfinite(interval) and low <= interval <= high):
        raise ConfigError(f"--metrics-interval must be between {low:g} and {high:g} seconds, not {interval:g}")
    raw_pid = getattr(options, "server_pid", None)
    pid = None
    if raw_pid not in (None, ""):
        text = str(raw_pid).strip()
        if not re.fullmatch(r"[0-9]{1,10}", text) or not 0 < int(text) < 2**31:
            raise ConfigError(f"--server-pid must be a process id, not {text[:40]!r}")
        pid = int(text)
        if local:
            _check_pid(pid)
    raw_url = getattr(options, "metrics_url", None)
    if raw_url is not None and str(raw_url).strip().lower() == "none":
        return MetricsSettings(None, interval, pid, "--metrics-url none")
    if raw_url:
        return MetricsSettings(_check_url(str(raw_url).strip()), interval, pid)
    if server == "triton":
        return MetricsSettings(default_url(host), interval, pid)
    why = f"{server} has no metrics endpoint (--metrics-url to name one)"
    return MetricsSettings(None, interval, pid, why)


def _check_pid(pid: int) -> None:
    import psutil

    try:
        psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        raise ConfigError(f"--server-pid {pid}: no such process on this machine") from None
    except psutil.AccessDenied:
        raise ConfigError(f"--server-pid {pid}: not allowed to read that process's CPU and memory") from None


@dataclass
class Read:
    """What one read brought: a scrape or why not, and the server process's figures."""

    scrape: Scrape | None = None
    error: str | None = None
    process: dict[str, float] | None = None
    process_error: str | None = None


class ProcessReader:
    """A server process's CPU (% of one core since the last read) and resident memory, with psutil."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._last: tuple[float, float] | None = None

    def read(self) -> dict[str, float]:
        import psutil

        try:
            with self._process.oneshot():
                times = self._process.cpu_times()
                # its children too: LitServe serves from worker processes
                cpu = times.user + times.system + times.children_user + times.children_system
                rss = float(self._process.memory_info().rss)
                for child in self._process.children(recursive=True):
                    try:
                        child_times = child.cpu_times()
                        cpu += child_times.user + child_times.system
                        rss += child.memory_info().rss
                    except psutil.Error:
                        continue
        except psutil.Error as err:
            raise MetricsError(f"server process {self._process.pid}: {type(err).__name__}") from None
        now = time.monotonic()
        last, self._last = self._last, (now, cpu)
        figures = {"rss_bytes": rss}
        if last is not None and now > last[0]:
            figures["cpu_pct"] = max(0.0, 100.0 * (cpu - last[1]) / (now - last[0]))
        return figures


def read_once(url: str | None, timeout: float, process: ProcessReader | None, settings: Settings | None = None) -> Read:
    """One read of the endpoint and the process; blocks (run it in the thread pool). ``settings`` gives the
    TLS options (``--ca-file``, ``--insecure``); the headers are never sent: the endpoint is not the API."""
    result = Read()
    if url is not None:
        try:
            status, body = http_request(
                "GET",
                url,
                timeout=timeout,
                max_response_bytes=MAX_BODY_BYTES,
                insecure=settings.insecure if settings else False,
                ca_file=settings.ca_file if settings else None,
            )
            if status != 200:
                raise MetricsError(f"HTTP status {status}")
            result.scrape = parse(body, time.time(), time.monotonic())
        except (MetricsError, LocustInferenceError) as err:
            result.error = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
    if process is not None:
        try:
            result.process = process.read()
        except MetricsError as err:
            result.process_error = str(err)
    return result


Reader = Callable[[], Read]


@dataclass
class Monitor:
    """The master's (or the local process's) reads over a run: windows of server metrics, and health."""

    metrics: MetricsSettings
    model: str
    reader: Reader
    sampler: CpuSampler = field(default_factory=CpuSampler)
    take_lag: Callable[[], Measurements] | None = None  # the measurements arrived since the last call
    poll: Callable[[], None] | None = None  # moves this process's measurements into the collector
    process_name: str = "local"
    health: Health = field(default_factory=Health)
    windows: deque[Window] = field(default_factory=lambda: deque(maxlen=MAX_WINDOWS))
    last: Scrape | None = None
    failed_reads: int = 0
    note: str | None = None
    warned: bool = False
    _loop: Any = None
    # One read at a time, taken in the order made: a reset's new baseline waits for the interval's read out.
    _lock: Any = field(default_factory=gevent.lock.Semaphore)
    _since: float | None = None  # the previous read of the server process alone (no endpoint)

    # --- reading ------------------------------------------------------------------------------------

    def _read_and_take(self, wait: bool) -> None:
        """One read in the thread pool, waited for (other greenlets run), and its window. Without ``wait``,
        nothing when a read is still out (an interval skipped, rather than reads queued behind a slow one)."""
        if self.metrics.url is None and self.metrics.server_pid is None:
            return
        if not self._lock.acquire(blocking=wait):
            return
        try:
            self._take(gevent.get_hub().threadpool.spawn(self.reader).get())
        finally:
            self._lock.release()

    def _take(self, result: Read) -> None:
        if result.error is not None or result.process_error is not None:
            self.failed_reads += 1
            self._warn(result.error or result.process_error or "")
        process = result.process
        if result.scrape is None:
            if process is not None and self.metrics.url is None:  # a server process's figures alone
                now = time.monotonic()
                if self._since is not None:
                    w = {"t": round(time.time(), 3), "duration_s": round(now - self._since, 6), "models": {}}
                    self._append({**w, "gpus": {}, "cpu": None, "server_process": process})
                self._since = now
            return
        if self.last is not None:
            w = window(self.last, result.scrape, (self.model,))
            if process is not None:
                w["server_process"] = process
            self._append(w)
        self.last = result.scrape

    def _append(self, w: Window) -> None:
        if len(self.windows) == self.windows.maxlen and not self.warned:
            self._warn(f"more than {MAX_WINDOWS} windows: the earliest are dropped")
        self.windows.append(w)

    def _warn(self, reason: str) -> None:
        where = self.metrics.url or f"server process {self.metrics.server_pid}"
        if self.note is None:
            self.note = f"{where}: {reason}"
        if not self.warned:
            self.warned = True
            log.warning("locust-inference: cannot read the server's metrics at %s: %s (the run goes on)", where, reason)

    def _sample_health(self) -> None:
        sample = self.sampler.sample()
        if sample is not None:
            self.health.add(self.process_name, [sample])
        self.take_lag_window()

    def take_lag_window(self) -> None:
        """Closes a window of send lags: what arrived since the last one (polled first in a local run)."""
        if self.take_lag is None:
            return
        if self.poll is not None:
            self.poll()
        lag = self.take_lag().lag
        if lag.count:
            summary = lag.summary()
            self.health.lag.append(
                {
                    "t": round(time.time(), 3),
                    "count": lag.count,
                    "p99_ms": summary.get("p99"),
                    "max_ms": summary.get("max"),
                }
            )
            del self.health.lag[:-MAX_WINDOWS]

    def tick(self) -> None:
        """One interval: this process's CPU and lag, and a read of the server's metrics."""
        self._sample_health()
        self._read_and_take(wait=False)

    # --- the run ------------------------------------------------------------------------------------

    def start(self) -> None:
        """The first read (the baseline the first window starts from), then one every interval."""
        self.sampler.sample()
        if self.take_lag is not None:
            self.take_lag()
        if self.metrics.url is None and self.metrics.server_pid is None:
            log.warning("locust-inference: %s: %s", NO_SERVER_METRICS, self.metrics.why_none)
            self.note = f"{NO_SERVER_METRICS}: {self.metrics.why_none}"
        self._read_and_take(wait=True)
        if self._loop is None:
            self._loop = gevent.spawn(self._run)

    def _run(self) -> None:
        interval = self.metrics.interval_s
        next_at = time.monotonic() + interval
        while True:
            gevent.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic())  # no burst of reads after a stall
            try:
                self.tick()
            except LocustInferenceError as err:  # the collector refused a merge (a count would overflow)
                self._warn(f"stopped: {err}")
                return

    def restart(self) -> None:
        """Forgets the windows so far (``--reset-stats``) and takes a new baseline."""
        with self._lock:  # after a read still out: its window goes too
            self.windows.clear()
            self.health.lag.clear()
            self.last = self._since = None
        self._read_and_take(wait=True)

    def finish(self) -> None:
        """Stops the reads, after a last one (the users have stopped: it closes the last window)."""
        loop, self._loop = self._loop, None
        if loop is not None and loop is not gevent.getcurrent():
            loop.kill(block=True)
        self._sample_health()
        self._read_and_take(wait=True)

    # --- results ------------------------------------------------------------------------------------

    def step(self, start: float, end: float) -> dict[str, Any]:
        """A sweep step's figures: the windows ending in (``start``, ``end``], and the load generator's peak."""
        figures = summarize(list(self.windows), start, end)
        peaks = self.health.peaks(start, end)
        figures["client_python_cpu_peak_pct"] = max(peaks.values()) if peaks else None
        figures["client_saturated"] = self.health.saturated(start, end)
        return figures

    def document(self, start: float | None, end: float | None) -> tuple[ServerMetrics, ClientHealth]:
        """``server_metrics`` and ``client_health`` of latency.json, over [``start``, ``end``]."""
        windows = list(self.windows)
        server: ServerMetrics = {
            "source": self.metrics.url,
            "server_pid": self.metrics.server_pid,
            "interval_s": self.metrics.interval_s,
            "note": self.note,
            "failed_reads": self.failed_reads,
            "windows": windows,
            "totals": summarize(windows),
        }
        return server, self.health.document(start, end)


def format_summary(server: ServerMetrics | None, client: ClientHealth | None, model: str) -> list[str]:
    """The summary's lines on the server's metrics and the load generator's health."""
    lines: list[str] = []
    if server is not None:
        totals = server.get("totals") or {}
        parts = []
        # several models (--model-name a,b, or a scenario's entries: latency.json's "model" lists them): each
        # one the server reports, named
        reported = totals.get("models") or {}
        for name in dict.fromkeys(model.split(",")):
            m = reported.get(name)
            if m:
                parts.append(
                    f"{name}: {m.get('success')} succeeded, {m.get('failure')} failed, {m.get('inference_count')} "
                    f"inferences in {m.get('execution_count')} executions"
                )
        for key, label, scale, unit in (
            ("gpu_utilization_pct", "GPU", 1.0, "%"),
            ("gpu_power_w", "GPU power", 1.0, " W"),
            ("gpu_memory_used_peak_bytes", "GPU memory peak", 2**-20, " MiB"),
            ("cpu_utilization_pct", "CPU", 1.0, "%"),
            ("cpu_memory_used_peak_bytes", "CPU memory peak", 2**-20, " MiB"),
            ("server_process_cpu_pct", "server process CPU", 1.0, "%"),
            ("server_process_rss_peak_bytes", "server process memory peak", 2**-20, " MiB"),
        ):
            if totals.get(key) is not None:
                parts.append(f"{label} {totals[key] * scale:.1f}{unit}")
        where = server.get("source") or (f"pid {server['server_pid']}" if server.get("server_pid") else None)
        head = f"Server metrics ({where}, {totals.get('windows', 0)} windows of {server.get('interval_s')} s)"
        if parts:
            lines += ["", f"{head}: " + "; ".join(parts)]
        if server.get("note"):
            lines += ["", f"Server metrics: {server['note']}" if not parts else f"  ({server['note']})"]
    if client is not None:
        peaks = client.get("peak_python_cpu_pct") or {}
        if peaks:
            lines += [
                "",
                "Load generator, peak CPU of Python's thread (% of a core): "
                + ", ".join(f"{p} {v:.0f}" for p, v in list(peaks.items())[:16]),
            ]
        if client.get("saturated"):
            lines += ["", saturation_warning(client["saturated"], peaks, client.get("threshold_pct", 90.0))]
    return lines
