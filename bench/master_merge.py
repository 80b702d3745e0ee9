"""What one Locust master spends on each worker report, and how many workers it carries.

    python -m bench.master_merge [--samples 26400] [--reports 20] [--reps 2000] [--repeats 5] [--quick]

A real MasterRunner and a real WorkerRunner run in this process (loopback, a free port), both with
``locust_inference.latency.install`` as a run installs it. Each worker report is built the way a worker
builds it: requests are logged into the worker's Locust statistics (with our 0.1 ms buckets), its endpoint
hands ``take()`` a ``Measurements`` holding histograms of the same latencies, and the worker's own
``report_to_master`` listeners (Locust's and ours) fill the report, which is serialised as Locust sends it
(``Message("stats", ...)``, msgpack). The master's side is then replayed many times: decoding the message,
our ``worker_report`` listener (``Measurements.from_bytes`` + merge), Locust's own listeners (its stats
merge), and all of it together as the runner does on receipt. CPU time is ``time.process_time`` over many
reports, in repeats. Writes its section of bench/RESULTS.md (kept there by ``make bench``).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import locust
import numpy as np
from locust import User, constant, task
from locust.env import Environment
from locust.rpc import Message
from locust.runners import WORKER_REPORT_INTERVAL, MasterRunner, WorkerRunner
from locust_inference import LatencyHistogram, Measurements, latency
from locust_inference.options import Settings

from bench import sections

__all__ = ["SECTION", "Result", "main", "measure"]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SECTION = "bench.master_merge"  # its markers in RESULTS.md (bench/sections.py)
CORE_SHARE = 0.5  # the budget: our merge under half of the master's core
GOAL_WORKERS = 1000
# One worker process sends about 8,800 requests/s at most (bench/RESULTS.md, HighUser, 10 users): the
# largest report a worker sends holds 3 s of that.
DEFAULT_SAMPLES = 26_400
SETTINGS = Settings(server="triton", model="resnet50_onnx", host="http://127.0.0.1:9", image=REPO / "data" / "img1.jpg")


class _Idle(User):
    """A user class for the runners; the benchmark starts no user."""

    wait_time = constant(1)

    @task
    def idle(self) -> None:
        pass


class _Replay:
    """The worker's endpoint: ``take()`` returns the Measurements prepared for the next report."""

    def __init__(self) -> None:
        self.next = Measurements()

    def take(self) -> Measurements:
        taken, self.next = self.next, Measurements()
        return taken

    def reset(self) -> None:
        self.next = Measurements()


@dataclass
class Profile:
    name: str
    open_loop: bool


PROFILES = (
    Profile("closed loop (HighUser): total, TTFB, service", open_loop=False),
    Profile("open loop (LowUser-style streams): total, TTFB, service and lag", open_loop=True),
)


def latencies(rng: np.random.Generator, n: int, open_loop: bool) -> dict[str, np.ndarray]:
    """ms per request: lognormal around 5 ms with 1% slow ones up to 2 s, TTFB a bit earlier; in an open
    loop each request also left a little late (lag, around 50 µs) and service excludes that."""
    total = rng.lognormal(mean=np.log(5.0), sigma=0.6, size=n)
    slow = rng.random(n) < 0.01
    total[slow] = rng.uniform(50.0, 2000.0, size=int(slow.sum()))
    ttfb = total * rng.uniform(0.85, 0.99, size=n)
    lag = rng.lognormal(mean=np.log(0.05), sigma=1.0, size=n) if open_loop else np.zeros(0)
    service = total - lag if open_loop else total
    return {"total": total, "ttfb": ttfb, "service": service, "lag": lag}


def histogram(values: np.ndarray) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values.tolist():
        h.record(v)
    return h


@dataclass
class Rig:
    master_env: Environment
    worker_env: Environment
    master: MasterRunner
    worker: WorkerRunner
    endpoint: _Replay
    collector: latency.Collector

    def stop(self) -> None:
        self.worker.quit()
        self.master.quit()
        gevent.sleep(0.1)


def start_rig() -> Rig:
    master_env = Environment(user_classes=[_Idle])
    master = master_env.create_master_runner("127.0.0.1", 0)
    collector = latency.install(master_env, SETTINGS, None)
    worker_env = Environment(user_classes=[_Idle])
    worker = worker_env.create_worker_runner("127.0.0.1", master.server.port)
    endpoint = _Replay()
    latency.install(worker_env, SETTINGS, endpoint)
    for _ in range(100):  # the worker's client_ready reaches the master's greenlet
        if worker.client_id in master.clients:
            break
        gevent.sleep(0.05)
    if worker.client_id not in master.clients:
        raise RuntimeError("the worker did not join the master")
    return Rig(master_env, worker_env, master, worker, endpoint, collector)


def build_report(rig: Rig, rng: np.random.Generator, samples: int, open_loop: bool) -> bytes:
    """One worker report on the wire, built by the worker's own listeners."""
    values = latencies(rng, samples, open_loop)
    for ms in values["total"].tolist():
        rig.worker_env.stats.log_request("infer", SETTINGS.name, ms, 1024)
    rig.endpoint.next = Measurements.from_histograms(
        *(histogram(values[k]) for k in ("total", "ttfb", "service", "lag"))
    )
    data: dict[str, Any] = {}
    rig.worker_env.events.report_to_master.fire(client_id=rig.worker.client_id, data=data)
    if latency.REPORT_KEY not in data or not data["stats"]:
        raise RuntimeError("the worker's listeners did not fill the report")
    return Message("stats", data, rig.worker.client_id).serialize()


@dataclass
class Result:
    profile: str
    samples: int
    wire_bytes: list[int]
    ours_bytes: list[int]
    # per repeat: CPU µs per report
    decode_us: list[float] = field(default_factory=list)
    ours_us: list[float] = field(default_factory=list)
    ours_kernel: list[float] = field(default_factory=list)  # share of ours_us spent in the kernel (system time)
    locust_us: list[float] = field(default_factory=list)
    total_us: list[float] = field(default_factory=list)
    merged_requests: int = 0  # what the master's collector counted (checks that the merge ran)
    merged_locust_requests: int = 0
    replayed: int = 0


def _cpu_us_per_call(calls: list[Callable[[], object]], kernel: list[float] | None = None) -> float:
    """CPU µs per call (user + system time of this process); the system time's share goes to ``kernel``."""
    gc.collect()
    before, start = os.times(), time.process_time_ns()
    for call in calls:
        call()
    spent, after = time.process_time_ns() - start, os.times()
    if kernel is not None:
        user, system = after.user - before.user, after.system - before.system
        kernel.append(system / (user + system) if user + system > 0 else 0.0)
    return spent / 1000 / len(calls)


def measure(*, samples: int, reports: int, reps: int, repeats: int, open_loop: bool, seed: int = 1) -> Result:
    rig = start_rig()
    try:
        rng = np.random.default_rng(seed)
        wires = [build_report(rig, rng, samples, open_loop) for _ in range(reports)]
        decoded = [Message.unserialize(w) for w in wires]
        handlers = rig.master_env.events.worker_report._handlers
        ours = [h for h in handlers if h.__module__ == latency.__name__]
        theirs = [h for h in handlers if h not in ours]
        if len(ours) != 1 or not theirs:
            raise RuntimeError(f"expected our one worker_report listener beside Locust's: {handlers}")
        client_id = rig.worker.client_id
        fire = rig.master_env.events.worker_report.fire
        result = Result(
            profile="",
            samples=samples,
            wire_bytes=[len(w) for w in wires],
            ours_bytes=[len(m.data[latency.REPORT_KEY][SETTINGS.name]) for m in decoded],
        )
        picks = [i % reports for i in range(reps)]
        (our_listener,) = ours

        def received(wire: bytes) -> Callable[[], None]:
            def run() -> None:  # what MasterRunner.client_listener does with a "stats" message
                msg = Message.unserialize(wire)
                fire(client_id=msg.node_id, data=msg.data)

            return run

        for _ in range(repeats):
            result.decode_us.append(_cpu_us_per_call([lambda w=wires[i]: Message.unserialize(w) for i in picks]))
            result.ours_us.append(
                _cpu_us_per_call(
                    [lambda d=decoded[i].data: our_listener(client_id=client_id, data=d) for i in picks],
                    result.ours_kernel,
                )
            )
            result.locust_us.append(
                _cpu_us_per_call(
                    [
                        lambda d=decoded[i].data: [h(client_id=client_id, data=d) for h in theirs]  # type: ignore[func-returns-value]
                        for i in picks
                    ]
                )
            )
            result.total_us.append(_cpu_us_per_call([received(wires[i]) for i in picks]))
        result.replayed = 2 * repeats * reps  # each listener ran alone, then again with the others
        result.merged_requests = rig.collector.measured[SETTINGS.name].total.count
        entry = rig.master_env.stats.entries[(SETTINGS.name, "infer")]
        result.merged_locust_requests = entry.num_requests
        return result
    finally:
        rig.stop()


def _range(values: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))} … {fmt.format(max(values))})"


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def render(results: list[Result], args: argparse.Namespace) -> str:
    interval = WORKER_REPORT_INTERVAL
    rows = []
    for r in results:
        ours = statistics.median(r.ours_us)
        total = statistics.median(r.total_us)
        rows.append(
            f"| {r.profile} | {statistics.median(r.wire_bytes):,.0f} | {statistics.median(r.ours_bytes):,.0f} "
            f"| {_range(r.decode_us)} | {_range(r.ours_us)} | {_range(r.locust_us)} | {_range(r.total_us)} "
            f"| {CORE_SHARE * interval / (ours / 1e6):,.0f} | {interval / (total / 1e6):,.0f} |"
        )
    worst = max(results, key=lambda r: max(r.ours_us))
    worst_ours = max(worst.ours_us)
    carried = CORE_SHARE * interval / (worst_ours / 1e6)
    core_at_goal = GOAL_WORKERS * worst_ours / 1e6 / interval
    worst_total = max(max(r.total_us) for r in results)
    met = "met" if carried >= GOAL_WORKERS else "missed"
    parts = {
        "msgpack decoding": statistics.median(worst.decode_us),
        "Locust's listeners": statistics.median(worst.locust_us),
        "ours": statistics.median(worst.ours_us),
    }
    whole = sum(parts.values())
    kernel_share = statistics.median(worst.ours_kernel)
    kernel = f"- {kernel_share:.0%} of our merge's CPU (median of the repeats) is system time"
    if kernel_share >= 0.25:  # worth a reason and a remedy only when it is a large part
        kernel += (
            ": most likely page faults, as `Measurements.from_bytes` allocates four full-range histograms\n"
            "  (1 µs to 60 s, 3 significant digits) per report; merging from the encoded counts would avoid them"
        )
    kernel += ".\n"
    shares = ", ".join(f"{name} {us / whole:.0%}" for name, us in sorted(parts.items(), key=lambda p: -p[1]))
    header = (
        "| "
        + " | ".join(
            [
                "worker report",
                "bytes on the wire",
                "of which ours",
                "decode (msgpack), µs",
                "our merge, µs",
                "Locust's merge, µs",
                "whole report, µs",
                f"workers at {CORE_SHARE:g} core for our merge",
                "workers at 1 core for the whole report",
            ]
        )
        + " |"
    )
    return f"""## How many workers one master carries

Command: `{args.command}`: {args.samples:,} requests per report, {args.reports} distinct reports replayed
{args.reps:,} times per measurement, {args.repeats} repeats. {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, locust {locust.__version__},
git {_git_head()}. Written by `bench/master_merge.py`; do not edit by hand.

{header}
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

CPU µs per report: median of the repeats (range across the repeats). Workers per master = the CPU
share ÷ (CPU per report ÷ Locust's report interval, {interval:g} s).

- **Goal (issue 15): at least {GOAL_WORKERS:,} workers per master with our merge under {CORE_SHARE:g} core:
  {met}.** At the slowest repeat of the costlier profile ({worst_ours:,.0f} µs per report) our merge carries
  {carried:,.0f} workers in {CORE_SHARE:g} core; {GOAL_WORKERS:,} workers cost it {core_at_goal:.3f} core.
{kernel}- The whole report (decoding + Locust's listeners + ours, as the master runs them on receipt) is the real
  limit: at {worst_total:,.0f} µs per report (slowest repeat) one master core is full at
  {interval / (worst_total / 1e6):,.0f} workers, before Locust's heartbeats (one a second per worker), the
  web UI and the dispatching of users. Of a report's CPU ({worst.profile}, medians): {shares}.
- At {GOAL_WORKERS:,} workers the master receives about
  {GOAL_WORKERS * statistics.median(worst.wire_bytes) / interval / 1e6:,.1f} MB/s of reports.

How it was measured: a real `MasterRunner` and `WorkerRunner` in one process on loopback, each with
`locust_inference.latency.install` as a run installs it. Each report is built by the worker's own
`report_to_master` listeners after logging {args.samples:,} requests into its Locust statistics (0.1 ms
buckets, as in our runs) and handing `take()` the `Measurements` of the same latencies
(`Measurements.from_histograms`): lognormal around 5 ms (sigma 0.6) with 1% slow requests spread over
50 ms to 2 s, TTFB 85 to 99% of it; the open-loop profile adds each request's lag (lognormal around 50 µs) and
service time = latency - lag. {args.samples:,} requests is 3 s of the fastest worker process measured
(about 8,800 requests/s, the table above), so a report is as large as any worker sends. The master's side
is replayed with `time.process_time`: `Message.unserialize` (msgpack); our `worker_report` listener
(`Measurements.from_bytes` and `Collector.add`); Locust's own `worker_report` listeners (its stats merge and
the runner's user count); and all of it as `MasterRunner` does for a `stats` message. The master's
collector and Locust's statistics really merged every replayed report (counts checked after each run).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.master_merge", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="requests per worker report")
    parser.add_argument("--reports", type=int, default=20, help="distinct reports, replayed in turn (default 20)")
    parser.add_argument("--reps", type=int, default=2000, help="reports replayed per measurement (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each measurement (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small and short, results not written")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.reports, args.reps, args.repeats = 2000, 3, 100, 2
    if min(args.samples, args.reports, args.reps, args.repeats) < 1:
        parser.error("--samples, --reports, --reps and --repeats must be at least 1")
    args.command = " ".join(["python -m bench.master_merge", *(argv if argv is not None else sys.argv[1:])])
    output = args.output or (None if args.quick else BENCH / "RESULTS.md")

    results = []
    for profile in PROFILES:
        print(f"==> {profile.name}: building {args.reports} reports of {args.samples:,} requests", flush=True)
        r = measure(
            samples=args.samples,
            reports=args.reports,
            reps=args.reps,
            repeats=args.repeats,
            open_loop=profile.open_loop,
        )
        r.profile = profile.name
        expected = r.replayed * args.samples
        if r.merged_requests != expected or r.merged_locust_requests != expected:
            raise RuntimeError(
                f"the master merged {r.merged_requests} (ours) / {r.merged_locust_requests} (Locust's) requests, "
                f"not the {expected} replayed"
            )
        print(
            f"    {statistics.median(r.wire_bytes):,.0f} bytes per report ({statistics.median(r.ours_bytes):,.0f} "
            f"ours); CPU µs per report: decode {_range(r.decode_us)}, ours {_range(r.ours_us)}, "
            f"Locust's {_range(r.locust_us)}, whole {_range(r.total_us)}",
            flush=True,
        )
        results.append(r)
    section = render(results, args)
    print()
    print(section)
    if output is not None:
        sections.write_section(output, SECTION, section)
        print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
