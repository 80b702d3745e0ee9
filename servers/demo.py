"""``make demo``: start the reference Triton and LitServe, run the seed's low-load scenario against each, compare.

Both servers serve ``resnet50_onnx`` on 127.0.0.1. Each run is ``./distributed.sh configs/low.conf resnet50_onnx
<server>`` with ``HOST``, ``RUN_TIME`` and ``RESULTS_DIR=results/<server>`` set; its output is condensed on screen
and kept whole in ``results/<server>/low.log``. The summary table takes the counts from Locust's ``low_stats.csv``
and the percentiles from the run's ``latency.json`` (microsecond histograms; Locust's CSV when that is missing).
Finally ``results/compare.html`` and ``compare.md`` are written, as ``make compare`` does.

``DEMO_RUN_TIME`` (default ``30s``; Locust syntax: ``10s``, ``2m``, ``1m30s``) sets each run's duration and
``DEMO_RESULTS`` the results folder (default ``results``).
Exit status: 0 when both runs completed requests without failures, 1 otherwise, 2 on bad usage, 130 when
interrupted. Servers are stopped on every path, SIGTERM included.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from locust_inference import results_schema
from locust_inference.results_schema import LATENCY_CSV, LATENCY_FILE

from servers import children
from servers.launch import REPO_ROOT, RunningServer, litserve_server, triton_server

MODEL = "resnet50_onnx"
CONFIG = "configs/low.conf"
SCENARIO = "low"  # distributed.sh names its outputs after the config file
SERVERS = ("triton", "litserve")
RUN_TIME_ENV = "DEMO_RUN_TIME"
DEFAULT_RUN_TIME = "30s"
HEARTBEAT_S = 15.0
PROGRESS_EVERY_S = 5.0
STOP_CHILD_TIMEOUT_S = 20.0
# Measured on a 2-core VM, model cached: servers start in ~5 s and stop in ~1 s; each run takes ~3 s over its run time.
STARTUP_ESTIMATE_S = 8
RUN_OVERHEAD_ESTIMATE_S = 3

_RUN_TIME = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# The "Aggregated" row of Locust's periodic console table:
#   Aggregated  <reqs>  <fails>(<pct>%) | <avg> <min> <max> <med> | <req/s> <failures/s>
_AGGREGATED = re.compile(
    r"^\s+Aggregated\s+(?P<reqs>\d+)\s+(?P<fails>\d+)\([\d.]+%\)\s*\|\s*(?P<avg>\d+)\s+\d+\s+\d+\s+(?P<med>\d+)"
)
# Locust's log line: "[2025-01-01 12:00:00,123] host/INFO/locust.main: message"
_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d (?P<time>\d\d:\d\d:\d\d),\d+\] [^/]*/(?P<level>[A-Z]+)/(?P<name>[^:]+): ")
_TABLE_LINE = re.compile(r"^(Type\s|-{4,}\||infer\s|\s{8,}Aggregated\s|Response time percentiles)")


def results_root() -> Path:
    """Where results go: ``results`` in the repository, or ``DEMO_RESULTS`` (the tests use a temporary folder)."""
    return Path(os.environ.get("DEMO_RESULTS", "results"))


class DemoError(RuntimeError):
    """Bad usage (for example an invalid ``DEMO_RUN_TIME``)."""


@dataclass(frozen=True)
class Measured:
    """One run's numbers from ``latency.json``: latency from the intended send time, service time from the
    actual send, and the open-loop rates (None for a closed loop)."""

    latency_ms: dict[str, float]
    service_ms: dict[str, float]
    offered_per_s: float | None
    achieved_per_s: float | None
    dropped: int | None


@dataclass
class RunResult:
    """What one load-test run produced."""

    server: str
    url: str
    exit_status: int
    wall_s: float
    results: Path
    stats: dict[str, str] | None = None
    measured: Measured | None = None  # from latency.json
    server_side: str | None = None  # from latency.json: Triton's own statistics over the run, one line
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def say(text: str = "") -> None:
    print(text, flush=True)


def parse_run_time(text: str) -> int:
    """Seconds in a Locust run time: ``30``, ``30s``, ``2m``, ``1h30m``; raises :class:`DemoError`."""
    text = text.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        match = _RUN_TIME.match(text)
        if not text or not match:
            raise DemoError(f"{RUN_TIME_ENV}={text!r} is not a run time such as 30s, 2m or 1m30s")
        hours, minutes, secs = (int(g or 0) for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds < 1:
        raise DemoError(f"{RUN_TIME_ENV} must be at least 1 s, got {text!r}")
    return seconds


def read_config(path: Path) -> dict[str, str]:
    """``key = value`` pairs of a Locust config file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.split("#", 1)[0].partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # The first SIGINT/SIGTERM unwinds the `with` blocks; repeated ones must not abort that cleanup.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def heartbeat(what: str, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Prints ``still waiting for <what>`` every ``every`` s until the block exits."""
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            say(f"    … still waiting for {what} ({time.monotonic() - started:.0f} s)")

    thread = threading.Thread(target=beat, name="demo-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class Condenser:
    """Shows the interesting part of distributed.sh's output: its own lines, Locust's log lines (time, level,
    message) and, instead of the stats tables printed every 2 s, a one-line progress report every few seconds.
    """

    def __init__(self, server: str, out: TextIO) -> None:
        self.server = server
        self.out = out
        self.started = time.monotonic()
        self.last_progress = 0.0
        self.last_line = ""

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if (match := _AGGREGATED.match(line)) is not None:
            now = time.monotonic()
            if match["reqs"] != "0" and now - self.last_progress >= PROGRESS_EVERY_S:
                self.last_progress = now
                self._emit(
                    f"  {self.server} so far: {match['reqs']} requests, {match['fails']} failures, "
                    f"median {match['med']} ms  ({now - self.started:.0f} s)"
                )
            return
        if not line.strip() or _TABLE_LINE.match(line):
            return
        if (match := _LOG_LINE.match(line)) is not None:
            level = "" if match["level"] == "INFO" else f"{match['level']} "
            self._emit(f"  {match['time']} {level}{line[match.end() :]}")
            return
        self._emit(f"  {line}")

    def _emit(self, text: str) -> None:
        if text != self.last_line:  # master and worker log some lines twice ("Starting Locust ...")
            print(text, file=self.out, flush=True)
        self.last_line = text


def _stop_child(proc: subprocess.Popen[str]) -> None:
    """SIGTERM distributed.sh (it stops its master and workers), then SIGKILL what is left of its group."""
    children.stop(proc, signal.SIGTERM, STOP_CHILD_TIMEOUT_S)


def locust_command() -> str | None:
    """The ``locust`` beside this interpreter, so the demo uses the environment it runs in."""
    candidate = Path(sys.executable).parent / "locust"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def metrics_env(running: RunningServer) -> dict[str, str]:
    """Where the run reads the server's own metrics (docs/metrics.md): Triton's endpoint on the port it was given,
    LitServe's process (it has no endpoint; the demo runs it here)."""
    kind = running.kind.lower()  # servers.launch names it "Triton" or "LitServe"
    if kind == "triton" and running.metrics_port is not None:
        return {"LOCUST_METRICS_URL": f"http://{running.host}:{running.metrics_port}/metrics"}
    if kind == "litserve":
        return {"LOCUST_SERVER_PID": str(running.pid)}
    return {}


def run_scenario(server: str, url: str, run_time: str, extra_env: dict[str, str] | None = None) -> RunResult:
    """Runs ``./distributed.sh configs/low.conf resnet50_onnx <server>`` against ``url`` and checks its results."""
    results = results_root() / server
    (REPO_ROOT / results).mkdir(parents=True, exist_ok=True)
    stats_path = REPO_ROOT / results / f"{SCENARIO}_stats.csv"
    latency_path = REPO_ROOT / results / LATENCY_FILE
    for stale in (stats_path, latency_path, REPO_ROOT / results / LATENCY_CSV):
        stale.unlink(missing_ok=True)  # never report a previous run's numbers
    log_path = REPO_ROOT / results / f"{SCENARIO}.log"
    env = {**os.environ, "HOST": url, "RUN_TIME": run_time, "RESULTS_DIR": str(results), "PYTHONUNBUFFERED": "1"}
    env.update(extra_env or {})
    env.pop("WEB_UI", None)  # always headless
    if "LOCUST" not in env and (locust := locust_command()) is not None:
        env["LOCUST"] = locust
    cmd = ["./distributed.sh", CONFIG, MODEL, server]
    say(f"==> {server}: HOST={url} RUN_TIME={run_time} RESULTS_DIR={results} {' '.join(cmd)}")
    condenser = Condenser(server, sys.stdout)
    started = time.monotonic()
    with open(log_path, "w") as log:
        # Own session: Ctrl-C reaches only this process, which stops distributed.sh in one orderly way.
        proc = children.start(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                condenser.feed(line)
            status = proc.wait()
        finally:
            _stop_child(proc)
    result = RunResult(server, url, status, time.monotonic() - started, results)
    log_name = f"{results}/{SCENARIO}.log"
    say(f"==> {server}: finished in {result.wall_s:.0f} s (exit status {status}; full output in {log_name})")
    _check(result, stats_path)
    result.measured = read_measured(latency_path, f"{server}/{MODEL}")
    result.server_side = read_server_side(latency_path)
    return result


def read_measured(path: Path, name: str) -> Measured | None:
    """Request ``name``'s numbers in a ``latency.json`` (``RequestEntry`` in locust_inference.results_schema),
    or None when absent or unreadable."""
    try:
        entry = results_schema.read(path)["requests"][name]
        ol = entry.get("open_loop")
        return Measured(
            latency_ms={key: float(entry["latency_ms"][key]) for key in ("p50", "p95", "p99")},
            service_ms={key: float(entry["service_ms"][key]) for key in ("p50", "p99")},
            offered_per_s=float(ol["offered_rate_per_s"]) if ol else None,
            achieved_per_s=float(ol["achieved_per_s"]) if ol and ol["achieved_per_s"] is not None else None,
            dropped=int(ol["dropped"]) if ol else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check(result: RunResult, stats_path: Path) -> None:
    """Records in ``result.problems`` everything that makes the run a failure."""
    if result.exit_status != 0:
        result.problems.append(f"distributed.sh exited with status {result.exit_status}")
    try:
        with open(stats_path, newline="") as fh:
            rows = [row for row in csv.DictReader(fh) if row.get("Name") == "Aggregated"]
        result.stats = rows[-1] if rows else None
    except OSError:
        result.stats = None
    if result.stats is None:
        result.problems.append(f"no 'Aggregated' row in {result.results}/{stats_path.name}")
    else:
        requests = int(result.stats["Request Count"])
        failures = int(result.stats["Failure Count"])
        if requests == 0:
            result.problems.append("no request completed")
        if failures:
            result.problems.append(
                f"{failures} of {requests} requests failed (see {result.results}/{SCENARIO}_failures.csv)"
            )
    if result.problems:
        problems = "; ".join(result.problems)
        say(f"==> {result.server} run FAILED: {problems} (full output in {result.results}/{SCENARIO}.log)")


def read_server_side(path: Path) -> str | None:
    """Triton's statistics over the run (``server_stats`` in ``latency.json``) as two lines, or None."""
    try:
        stats = results_schema.read(path)["server_stats"]
        phases = ", ".join(
            f"{key.removesuffix('_ms')} {float(stats[key]):.1f}"
            for key in ("queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms")
        )
        total, batch = float(stats["server_total_ms"]), float(stats["avg_batch_size"])
        text = f"{phases}\n  total {total:.1f}; average batch {batch:.2f}"
        if stats.get("client_minus_server_ms") is not None:
            overhead = float(stats["client_minus_server_ms"])
            text += f"; client mean - server total = {overhead:.2f} ms (network + client)"
        return text
    except (OSError, ValueError, KeyError, TypeError):
        return None


HEADER = (
    "server",
    "requests",
    "offered/s",
    "achieved/s",
    "dropped",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "service p50",
    "service p99",
    "failures",
)


def _row(r: RunResult) -> tuple[str, ...]:
    s, m = r.stats, r.measured
    if s is None or m is None:
        return (r.server, *("-" for _ in HEADER[1:]))
    # a closed loop offers no rate of its own: what it achieved is Locust's request rate
    achieved = m.achieved_per_s if m.achieved_per_s is not None else float(s["Requests/s"])
    return (
        r.server,
        s["Request Count"],
        "-" if m.offered_per_s is None else f"{m.offered_per_s:.1f}",
        f"{achieved:.1f}",
        "-" if m.dropped is None else str(m.dropped),
        *(f"{m.latency_ms[k]:.1f}" for k in ("p50", "p95", "p99")),
        *(f"{m.service_ms[k]:.1f}" for k in ("p50", "p99")),
        s["Failure Count"],
    )


def summary(results: list[RunResult]) -> str:
    """The side-by-side comparison table."""
    rows = [HEADER, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def plan(run_time: str, seconds: int) -> None:
    conf = read_config(REPO_ROOT / CONFIG)
    users = conf.get("users", "?")
    workers = conf.get("expect-workers", "1")
    user_class = conf.get("class-name", "LowUser")
    total = STARTUP_ESTIMATE_S + len(SERVERS) * (seconds + RUN_OVERHEAD_ESTIMATE_S)
    say("locust-inference demo: the same load against Triton and LitServe, same model, same machine")
    say(f"  scenario  seed's low load, {CONFIG}: {user_class}, {users} user, 30 frames/s, open loop, {workers} worker")
    say(f"  model     {MODEL} (ResNet-50, random weights with a fixed seed) on ONNX Runtime, CPU, in both servers")
    own = conf.get("run-time", "?")
    say(f"  run time  {run_time} per server ({RUN_TIME_ENV} to change; the config's own run-time is {own})")
    say(f"  duration  about {_duration(total)}: start both servers, then run against one after the other")
    say(f"  results   {results_root()}/<server>/{SCENARIO}_stats.csv, {SCENARIO}.html, {SCENARIO}.log")
    say()


def compare_report(results: list[RunResult]) -> None:
    """Writes results/compare.html and compare.md (what ``make compare`` does); a failure is only reported."""
    try:
        from locust_inference.report import ReportError, build_report
    except ImportError as err:
        say(f"(no side-by-side report: {err})")
        return
    try:
        html_path, md_path = build_report([REPO_ROOT / r.results for r in results], REPO_ROOT / results_root())
    except (ReportError, OSError) as err:
        say(f"(no side-by-side report: {err})")
        return
    html_name, md_name = (
        path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path for path in (html_path, md_path)
    )
    say(f"Side-by-side report (latency distributions, throughput over time): {html_name}, {md_name}")


def start_servers(stack: contextlib.ExitStack) -> dict[str, RunningServer]:
    say("==> starting the reference servers on 127.0.0.1 (Triton first, then LitServe)")
    with heartbeat("Triton (PyTriton starts tritonserver and loads the model)"):
        triton = stack.enter_context(triton_server(models=[MODEL]))
    with heartbeat("LitServe"):
        litserve = stack.enter_context(litserve_server(model=MODEL))
    say()
    return {"triton": triton, "litserve": litserve}


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    run_time = os.environ.get(RUN_TIME_ENV, DEFAULT_RUN_TIME).strip() or DEFAULT_RUN_TIME
    try:
        seconds = parse_run_time(run_time)
    except DemoError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    plan(run_time, seconds)
    started = time.monotonic()
    results: list[RunResult] = []
    try:
        with contextlib.ExitStack() as stack:
            servers = start_servers(stack)
            for name in SERVERS:
                results.append(run_scenario(name, servers[name].url, run_time, metrics_env(servers[name])))
                say()
            say("==> stopping the servers")
    except KeyboardInterrupt:
        print("\ndemo: interrupted; the servers and load generators were stopped", file=sys.stderr)
        return 130
    say()
    say(f"{MODEL}, {CONFIG} ({run_time} per server), {os.cpu_count()} CPU cores shared by servers and Locust:")
    say()
    say(summary(results))
    for r in results:
        if r.server_side is not None:
            say(f"{r.server}, server side, per inference (ms): {r.server_side}")
    say()
    say("LowUser is an open-loop 30 fps camera: a frame is due every 33 ms whatever the answers, up to 4 in")
    say("flight; a frame due while 4 are out is dropped, never sent. offered/s is what the camera asked for,")
    say("achieved/s what was answered: below offered (or any dropped), the server did not keep up.")
    say("p50-p99: from each frame's intended send time to its last response byte (what the camera waits);")
    say("service: from its actual send. Timed in Rust, successful requests, from latency.json; the request")
    say("and failure counts are Locust's (low_stats.csv).")
    say()
    say("Locust's HTML reports: " + ", ".join(f"{r.results}/{SCENARIO}.html" for r in results))
    compare_report(results)
    say(f"Done in {time.monotonic() - started:.0f} s.")
    failed = [r for r in results if not r.ok]
    if failed:
        for r in failed:
            print(f"demo: the {r.server} run failed: {'; '.join(r.problems)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
