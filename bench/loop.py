"""The timing loop shared by the single-threaded clients (:mod:`bench.seed_clients`, :mod:`bench.direct`):
one request after another for a fixed time, summarised as one JSON-ready dict."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["Sender", "run_loop"]

# One request per call: False for a failure; True for a success the loop times (Python's clock around the
# call); a float for a success that timed itself (milliseconds).
Sender = Callable[[], bool | float]


def run_loop(send: Sender, duration: float) -> dict[str, float | int | None]:
    """Calls ``send`` back to back for ``duration`` seconds; counts and times every call."""
    times: list[float] = []
    failures = 0
    start = time.perf_counter()
    deadline = start + duration
    now = start
    while now < deadline:
        t0 = time.perf_counter()
        result = send()
        now = time.perf_counter()
        if result is False:
            failures += 1
        else:
            times.append((now - t0) * 1000.0 if result is True else float(result))
    elapsed = now - start
    return {
        "requests": len(times),
        "failures": failures,
        "seconds": elapsed,
        "req_s": len(times) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": statistics.median(times) if times else None,
        "mean_ms": statistics.fmean(times) if times else None,
    }
