"""The arithmetic of a sweep, apart from Locust: when windows agree (stability, as perf_analyzer judges
it), and the highest throughput a server sustained within a latency SLO (goodput)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from locust_inference.options import next_model
from locust_inference.sweep.plan import Limit

__all__ = ["Window", "goodput", "split_users", "stable"]


@dataclass(frozen=True)
class Window:
    """One measurement window of a step."""

    successes: int
    failures: int
    seconds: float
    p99_ms: float | None  # None without successful requests

    @property
    def throughput(self) -> float:
        return self.successes / self.seconds


def _agree(values: Sequence[float], tolerance: float) -> bool:
    mean = sum(values) / len(values)
    return mean > 0 and all(abs(v - mean) <= tolerance * mean for v in values)


def stable(windows: Sequence[Window], count: int, tolerance: float) -> bool:
    """The last ``count`` windows agree: each one's throughput and p99 within ``tolerance`` of their mean."""
    if len(windows) < count:
        return False
    last = windows[-count:]
    if any(w.p99_ms is None or w.successes == 0 for w in last):
        return False
    return _agree([w.throughput for w in last], tolerance) and _agree([w.p99_ms or 0.0 for w in last], tolerance)


def goodput(steps: Sequence[dict[str, Any]], slo: Limit) -> dict[str, Any]:
    """The highest throughput within the SLO: at a step, or interpolated linearly (in latency) between the
    last step within it and the first step past it. ``steps`` carry ``achieved_per_s`` and ``latency_ms``."""
    result: dict[str, Any] = {"slo": str(slo), "percentile": slo.key, "slo_ms": slo.ms}
    points = [(s["achieved_per_s"], s["latency_ms"].get(slo.key)) for s in steps]
    within = [i for i, (_, lat) in enumerate(points) if lat is not None and lat <= slo.ms]
    if not within:
        return {**result, "rate_per_s": None, "how": "the SLO was missed at every step"}
    best = max(within, key=lambda i: points[i][0])
    rate, latency = points[best]
    after = best + 1
    if after < len(points) and points[after][1] is not None and points[after][1] > slo.ms:
        next_rate, next_latency = points[after]
        if next_rate > rate:
            share = (slo.ms - latency) / (next_latency - latency)
            return {
                **result,
                "rate_per_s": rate + share * (next_rate - rate),
                "how": f"interpolated between steps {best + 1} and {after + 1}",
            }
    how = f"at step {best + 1}" + (" (the SLO held at every step)" if len(within) == len(points) else "")
    return {**result, "rate_per_s": rate, "how": how}


def split_users(users: int, weights: Sequence[int]) -> list[int]:
    """How many of a process's ``users`` are bound to each model of ``weights``: the first ``users`` of the
    weighted turn (:func:`locust_inference.options.next_model`), as the users of a sweep only grow."""
    # the turn gives each model exactly its weight in every round of sum(weights) users, and goes on alike
    rounds, rest = divmod(users, sum(weights))
    bound = [0] * len(weights)
    for _ in range(rest):
        bound[next_model(bound, weights)] += 1
    return [rounds * w + b for w, b in zip(weights, bound, strict=True)]
