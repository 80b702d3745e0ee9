"""Added to every Locust run of the benchmark (``-f user_file,bench/locustfiles/latency.py``): keeps each
successful request's ``response_time`` (float ms, unrounded, unlike Locust's CSV) from the moment spawning
completes, like ``--reset-stats``, and writes their count and median to ``BENCH_LATENCY_OUT`` at quit,
with the crossings per request between Python's thread and our I/O thread over the same window (hand-offs
to it and signals back, counted in Rust; absent for clients that are not ours). CPU per request is measured
from outside the process for every client alike (:mod:`bench.cpu`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

from locust import events

_times: list[float] = []
_all_requests = [0]
_crossings_at_start: list[tuple[int, int]] = []
_crossings_per_request: dict[str, float] = {}  # set at test stop


def _crossings() -> tuple[int, int] | None:
    """Ours only: ``None`` when the user file did not load locust-inference's native module."""
    native = sys.modules.get("locust_inference._native")
    return None if native is None else native.thread_crossings()


@events.request.add_listener
def _record(response_time: float, exception: BaseException | None = None, **_kwargs: Any) -> None:
    _all_requests[0] += 1
    if exception is None:
        _times.append(response_time)


@events.spawning_complete.add_listener
def _reset(**_kwargs: Any) -> None:
    _times.clear()
    _all_requests[0] = 0
    _crossings_at_start.clear()
    if (now := _crossings()) is not None:
        _crossings_at_start.append(now)


@events.test_stop.add_listener
def _stop(**_kwargs: Any) -> None:
    if _crossings_at_start and not _crossings_per_request and (end := _crossings()) is not None:
        n = max(_all_requests[0], 1)
        start = _crossings_at_start[0]
        _crossings_per_request["to_io"] = (end[0] - start[0]) / n
        _crossings_per_request["to_python"] = (end[1] - start[1]) / n


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
                    "to_io_per_request": _crossings_per_request.get("to_io"),
                    "to_python_per_request": _crossings_per_request.get("to_python"),
                },
                f,
            )
