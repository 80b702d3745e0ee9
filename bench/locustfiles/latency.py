"""Added to every Locust run of the benchmark (``-f user_file,bench/locustfiles/latency.py``): keeps each
successful request's ``response_time`` (float ms, unrounded, unlike Locust's CSV) from the moment spawning
completes, like ``--reset-stats``, and writes their count and median to ``BENCH_LATENCY_OUT`` at quit,
with the CPU time per request over the same window: the whole process's (user + system) and our I/O
threads' (``locust-inference-io``, from ``/proc/self/task``).
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from locust import events

_times: list[float] = []
_all_requests = [0]
_cpu_at_start: dict[str, float] = {}  # CPU seconds when spawning completed
_cpu_per_request: dict[str, float] = {}  # CPU µs per request over the measured window, set at test stop
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu() -> dict[str, float]:
    """Seconds of CPU: the process (user + system) and its I/O threads."""
    io = 0.0
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip().startswith("locust-inferenc"):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                io += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    t = os.times()
    return {"process": t.user + t.system, "io": io}


@events.request.add_listener
def _record(response_time: float, exception: BaseException | None = None, **_kwargs: Any) -> None:
    _all_requests[0] += 1
    if exception is None:
        _times.append(response_time)


@events.spawning_complete.add_listener
def _reset(**_kwargs: Any) -> None:
    _times.clear()
    _all_requests[0] = 0
    _cpu_at_start.update(_cpu())


@events.test_stop.add_listener
def _stop(**_kwargs: Any) -> None:
    if _cpu_at_start and not _cpu_per_request:
        end = _cpu()
        n = max(_all_requests[0], 1)
        for key in ("process", "io"):
            _cpu_per_request[key] = (end[key] - _cpu_at_start[key]) / n * 1e6


@events.quitting.add_listener
def _write(**_kwargs: Any) -> None:
    out = os.environ.get("BENCH_LATENCY_OUT")
    if out:
        median = statistics.median(_times) if _times else None
        with open(out, "w") as f:
            json.dump(
                {
                    "count": len(_times),
                    "p50_ms": median,
                    "cpu_us": _cpu_per_request.get("process"),
                    "io_cpu_us": _cpu_per_request.get("io"),
                },
                f,
            )
