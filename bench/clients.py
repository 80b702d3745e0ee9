"""How each benchmark client is run and what is read from it: wrk, headless Locust (ours, HttpUser,
FastHttpUser) and this package's own JSON-printing scripts, each in its own process group, optionally
pinned to one core (:mod:`bench.pinning`), with its CPU and wake-ups per request sampled from outside
(:mod:`bench.cpu`).
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from locust_inference import results_schema
from locust_inference.results_schema import LATENCY_FILE

from bench import nginx
from bench.cpu import Sampler, SamplerThread
from bench.pinning import client_prefix
from servers import children
from servers.children import clean_env

__all__ = [
    "Client",
    "Result",
    "Setup",
    "h2load_client",
    "json_client",
    "locust_client",
    "parse_h2load",
    "parse_wrk",
    "run_process",
    "wrk_client",
]

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SUBPROCESS_GRACE_S = 90.0


@dataclass
class Result:
    """One client's measurement in one repeat. ``rate`` is requests/s (images/s for preprocessing)."""

    rate: float | None = None
    p50_ms: float | None = None
    csv_p50_ms: float | None = None  # Locust's CSV "50%" column (whole ms)
    mean_ms: float | None = None
    busy: float | None = None  # rate x mean latency / concurrency (Little's law): 1.0 = never idle
    # Per request over the steady window, sampled from outside (bench.cpu), for every client on a server:
    cpu_us: float | None = None  # CPU (user + system) of the client process, µs
    io_cpu_us: float | None = None  # of that, our I/O threads' (ours only)
    wakes: float | None = None  # voluntary context switches, all threads
    main_wakes: float | None = None  # of those, the main thread's
    io_wakes: float | None = None  # of those, our I/O threads' (ours only)
    # Ours only, counted in Rust (bench/locustfiles/latency.py): hand-offs to the I/O thread and signals back
    to_io: float | None = None
    to_python: float | None = None
    # Open-loop users only, from latency.json's ``open_loop`` (all users together):
    offered_rate: float | None = None  # users x --rate, req/s
    achieved_rate: float | None = None  # completed per second of stream
    dropped: int | None = None  # due while --max-in-flight were out: never sent
    unfinished: int | None = None  # in flight when the run stopped
    lag_p99_ms: float | None = None  # actual - intended send time, p99
    service_p99_ms: float | None = None  # from the actual send to the response, p99 (the server's share)
    bytes_per_image: float | None = None  # image sets: the process's memory growth per preprocessed image
    failures: int = 0
    error: str | None = None

    def with_concurrency(self, concurrency: int) -> Result:
        """Sets :attr:`busy`, the share of the time each user (connection) has a request in flight."""
        if self.rate is not None and self.mean_ms is not None:
            self.busy = self.rate * self.mean_ms / 1000.0 / concurrency
        return self


@dataclass
class Client:
    """A measured client: a stable key, a label for the table and how to run it for ``duration`` s."""

    key: str
    group: str
    label: str
    run: Callable[[int], Result]
    unit: str = "req/s"
    results: list[Result] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        """The median of ``attr`` over the repeats that produced it."""
        values = [getattr(r, attr) for r in self.results if getattr(r, attr) is not None and r.error is None]
        return statistics.median(values) if values else None


_children: set[subprocess.Popen[bytes]] = set()


def run_process(
    cmd: list[str], env: dict[str, str], timeout: float, log: Path, sampler: SamplerThread | None = None
) -> tuple[int, str]:
    """Runs ``cmd`` in its own process group (killed on timeout or interrupt), sampled by ``sampler`` while
    it runs; returns (code, stdout). stderr goes to ``log``.
    """
    with open(log, "wb") as err:
        proc = children.start(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    _children.add(proc)
    if sampler is not None:
        sampler.start(proc.pid)
    try:
        out, _ = children.communicate(proc, timeout)
    except subprocess.TimeoutExpired:
        return -1, ""
    finally:
        if sampler is not None:
            sampler.stop()
        if proc.poll() is None:
            children.kill(proc)
        _children.discard(proc)
    return proc.returncode, out.decode(errors="replace")


def kill_all() -> None:
    """Kills every client still running (on an interrupt)."""
    for proc in list(_children):
        children.kill(proc)


def run_main(main: Callable[[], int], name: str, stopped: str) -> NoReturn:
    """Exits with ``main()``'s status; on an interrupt kills the clients still running and says so (130)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        kill_all()
        print(f"\n{name}: interrupted; {stopped} stopped", file=sys.stderr)
        sys.exit(130)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Setup:
    """What every client needs: the server (its URL and its count of requests received), the encoded bodies,
    a scratch directory, and whether clients are pinned to one core."""

    url: str
    served: Callable[[], int]
    workdir: Path
    triton_body: Path
    header_length: int
    tensor_npy: Path
    big_image: Path
    pinned: bool = False
    grpc_body: Path | None = None  # the ModelInferRequest as a gRPC message (5-byte prefix), for h2load

    def command(self, cmd: list[str]) -> list[str]:
        """``cmd`` as this mode runs a client: on its own core when pinned."""
        return [*client_prefix(self.pinned), *cmd]

    def sampler(self) -> Sampler:
        return Sampler(self.served)


def add_cost(result: Result, sampler: Sampler, ours: bool) -> Result:
    """The client's CPU and wake-ups per request over its steady window (nothing when it had none)."""
    cost = sampler.cost(has_io_threads=ours)
    if cost is not None:
        result.cpu_us, result.io_cpu_us = cost.cpu_us, cost.io_cpu_us
        result.wakes, result.main_wakes, result.io_wakes = cost.wakes, cost.main_wakes, cost.io_wakes
    return result


def wrk_client(setup: Setup, connections: int, model: str = nginx.FAST_MODEL) -> Callable[[int], Result]:
    """``wrk -t1 -cN --latency`` posting the Triton body with a Lua script."""

    def run(duration: int) -> Result:
        env = clean_env(
            BENCH_BODY=str(setup.triton_body),
            BENCH_HEADER_LENGTH=str(setup.header_length),
            BENCH_CONTENT_TYPE="application/octet-stream",
        )
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(BENCH / "wrk_post.lua")]
        cmd.append(f"{setup.url}/v2/models/{model}/infer")
        log = setup.workdir / f"wrk-{model}-{connections}.log"
        sampler = setup.sampler()
        code, out = run_process(setup.command(cmd), env, duration + SUBPROCESS_GRACE_S, log, sampler)
        if code != 0:
            return Result(error=f"wrk exited {code}: {_tail(log)}")
        return add_cost(parse_wrk(out).with_concurrency(connections), sampler, ours=False)

    return run


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> Result:
    """Requests/sec, the 50% latency and the errors from ``wrk --latency`` output."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    mean = re.search(r"^\s+Latency\s+([\d.]+)(us|ms|s)\s", text, re.MULTILINE)
    if not rate or not p50:
        return Result(error=f"cannot parse wrk output: {text[-300:]!r}")
    failures = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        failures += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        failures += sum(int(g) for g in sock.groups())
    return Result(
        rate=float(rate.group(1)),
        p50_ms=float(p50.group(1)) * _UNITS_MS[p50.group(2)],
        mean_ms=float(mean.group(1)) * _UNITS_MS[mean.group(2)] if mean else None,
        failures=failures,
        error=f"{failures} failed requests" if failures else None,
    )


GRPC_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


def h2load_client(setup: Setup, connections: int, streams: int, tag: str = "") -> Callable[[int], Result]:
    """``h2load -t1 -cN -mM`` (nghttp2) posting :attr:`Setup.grpc_body` to gRPC's ``ModelInfer``: the same
    bytes ours sends, with gRPC's request headers. h2load does not read gRPC's trailers; the null server
    always answers ``grpc-status: 0``. ``tag`` tells its files from another server's."""

    def run(duration: int) -> Result:
        if setup.grpc_body is None:
            return Result(error="no gRPC request body")
        cmd = ["h2load", "-t1", f"-c{connections}", f"-m{streams}", "-D", str(duration), "-d", str(setup.grpc_body)]
        cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers", f"{setup.url}{GRPC_INFER_PATH}"]
        log = setup.workdir / f"h2load{tag}-{connections}-{streams}.log"
        sampler = setup.sampler()
        code, out = run_process(setup.command(cmd), clean_env(), duration + SUBPROCESS_GRACE_S, log, sampler)
        (setup.workdir / f"h2load{tag}-{connections}-{streams}.out").write_text(out)
        if code != 0:
            return Result(error=f"h2load exited {code}: {_tail(log)}")
        return add_cost(parse_h2load(out).with_concurrency(connections * streams), sampler, ours=False)

    return run


def parse_h2load(text: str) -> Result:
    """The rate (``finished in ..., N req/s``), the mean time for a request and the failures (requests done
    but not succeeded) from h2load's report; h2load prints no median."""
    rate = re.search(r"^finished in [\d.]+s, ([\d.]+) req/s", text, re.MULTILINE)
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
        r"(\d+) timeout",
        text,
        re.MULTILINE,
    )
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s", text, re.MULTILINE)
    if not rate or not counts:
        return Result(error=f"cannot parse h2load output: {text[-300:]!r}")
    done, succeeded = int(counts.group(3)), int(counts.group(4))
    if succeeded == 0:
        return Result(error=f"h2load: no request succeeded: {counts.group(0)}")
    failures = done - succeeded  # failed (a non-2xx/3xx status, a reset stream) or timed out
    return Result(
        rate=float(rate.group(1)),
        mean_ms=float(mean.group(1)) * _UNITS_MS[mean.group(2)] if mean else None,
        failures=failures,
        error=f"{failures} failed requests" if failures else None,
    )


def locust_client(
    setup: Setup,
    user_file: str,
    users: int,
    extra: list[str],
    name: str,
    *,
    env: dict[str, str] | None = None,
    ours: bool = True,
) -> Callable[[int], Result]:
    """Headless Locust, one process: ``-u N -r N -t Ds --reset-stats --csv``; the rate and the CSV's 50%
    come from ``PREFIX_stats.csv``, the exact p50 from :mod:`bench.locustfiles.latency`."""

    def run(duration: int) -> Result:
        prefix = setup.workdir / f"locust-{name}"
        latency_out = setup.workdir / f"locust-{name}-latency.json"
        summary = prefix.parent / LATENCY_FILE  # locust-inference's, next to the --csv files
        for stale in (Path(f"{prefix}_stats.csv"), latency_out, summary):
            stale.unlink(missing_ok=True)
        child_env = clean_env(
            BENCH_BODY=str(setup.triton_body),
            BENCH_HEADER_LENGTH=str(setup.header_length),
            BENCH_LATENCY_OUT=str(latency_out),
            **(env or {}),
        )
        cmd = [sys.executable, "-m", "locust", "-f", f"{user_file},{BENCH / 'locustfiles' / 'latency.py'}"]
        cmd += ["--headless", "-u", str(users), "-r", str(users), "-t", f"{duration}s", "--host", setup.url]
        cmd += ["--csv", str(prefix), "--reset-stats", "--only-summary", "--loglevel", "WARNING", *extra]
        log = setup.workdir / f"locust-{name}.log"
        sampler = setup.sampler()
        code, _ = run_process(setup.command(cmd), child_env, duration + SUBPROCESS_GRACE_S, log, sampler)
        result = parse_locust(Path(f"{prefix}_stats.csv"), latency_out, code, log).with_concurrency(users)
        return add_cost(add_open_loop(result, summary), sampler, ours)

    return run


def add_open_loop(result: Result, summary: Path) -> Result:
    """The open-loop numbers of ``summary`` (locust-inference's latency.json, ``OpenLoop`` in
    locust_inference.results_schema), when a request name has them."""
    try:
        requests = results_schema.read(summary).get("requests") or {}
    except ValueError:  # results_schema.SchemaError: missing, not JSON, or another version
        return result
    for entry in requests.values():
        ol = entry.get("open_loop")
        if ol:
            result.offered_rate = ol.get("offered_rate_per_s")
            result.achieved_rate = ol.get("achieved_per_s")
            result.dropped = ol.get("dropped")
            result.unfinished = ol.get("unfinished")
            result.lag_p99_ms = ol.get("lag_ms", {}).get("p99")
            result.service_p99_ms = entry.get("service_ms", {}).get("p99")
            break
    return result


def parse_locust(stats_csv: Path, latency_json: Path, code: int, log: Path) -> Result:
    """The Aggregated row of Locust's stats CSV plus the exact p50 written by the latency listener."""
    if not stats_csv.exists():
        return Result(error=f"locust exited {code} without {stats_csv.name}: {_tail(log)}")
    with open(stats_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    if not rows:
        return Result(error=f"no Aggregated row in {stats_csv.name}: {_tail(log)}")
    row = rows[0]
    failures = int(row["Failure Count"])
    written = json.loads(latency_json.read_text()) if latency_json.exists() else {}
    error = None
    if failures:
        error = f"{failures} failed requests: {_tail(log, 4)}"
    elif code != 0:
        error = f"locust exited {code}: {_tail(log)}"
    return Result(
        rate=float(row["Requests/s"]),
        p50_ms=written.get("p50_ms"),
        csv_p50_ms=float(row["50%"]) if row["50%"] not in ("", "N/A") else None,
        mean_ms=float(row["Average Response Time"]),
        to_io=written.get("to_io_per_request"),
        to_python=written.get("to_python_per_request"),
        failures=failures,
        error=error,
    )


def json_client(setup: Setup, name: str, cmd: list[str], *, sends: bool = True) -> Callable[[int], Result]:
    """A client script of this package that prints one JSON line (``req_s`` or ``images_s``, ``p50_ms``).
    ``sends``: it sends requests to the server (so it is pinned and sampled); else it only computes."""

    def run(duration: int) -> Result:
        log = setup.workdir / f"{name}.log"
        sampler = setup.sampler() if sends else None
        full = [sys.executable, "-m", *cmd, "--duration", str(duration)]
        code, out = run_process(
            setup.command(full) if sends else full, clean_env(), duration + SUBPROCESS_GRACE_S, log, sampler
        )
        if code != 0 or not out.strip():
            return Result(error=f"{cmd[0]} exited {code}: {_tail(log)}")
        data = json.loads(out.strip().splitlines()[-1])
        failures = int(data.get("failures", 0))
        result = Result(
            rate=data.get("req_s", data.get("images_s")),
            p50_ms=data.get("p50_ms"),
            mean_ms=data.get("mean_ms"),
            bytes_per_image=data.get("bytes_per_image"),
            failures=failures,
            error=f"{failures} failed requests" if failures else None,
        )
        return result if sampler is None else add_cost(result, sampler, ours=False)

    return run
