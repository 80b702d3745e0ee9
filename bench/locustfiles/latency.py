"""Added to every Locust run of the benchmark (``-f user_file,bench/locustfiles/latency.py``): keeps each
successful request's ``response_time`` (float ms, unrounded, unlike Locust's CSV) from the moment spawning
completes, like ``--reset-stats``, and writes their count and median to ``BENCH_LATENCY_OUT`` at quit.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any

from locust import events

_times: list[float] = []


@events.request.add_listener
def _record(response_time: float, exception: BaseException | None = None, **_kwargs: Any) -> None:
    if exception is None:
        _times.append(response_time)


@events.spawning_complete.add_listener
def _reset(**_kwargs: Any) -> None:
    _times.clear()


@events.quitting.add_listener
def _write(**_kwargs: Any) -> None:
    out = os.environ.get("BENCH_LATENCY_OUT")
    if out:
        median = statistics.median(_times) if _times else None
        with open(out, "w") as f:
            json.dump({"count": len(_times), "p50_ms": median}, f)
