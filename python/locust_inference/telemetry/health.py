"""The load generator's own health: each process's CPU, sampled on Python's thread, and whether one was
saturated (its numbers are then suspect: requests waited for Python, not for the server).

Python's thread runs every greenlet (the users, Locust's reporting): it cannot use more than one core, so
it is the one judged against :data:`SATURATED_PCT` of a core. The process's CPU (all threads: the I/O
runtime's too) is recorded beside it. A worker sends its samples with its reports as ages (seconds before
the report), which the master places on its own clock: the two machines' clocks need not agree.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from locust_inference.results_schema import ClientHealth

__all__ = ["REPORT_KEY", "SATURATED_PCT", "CpuSampler", "Health", "HealthError", "decode_report"]

SATURATED_PCT = 90.0  # of one core
REPORT_KEY = "locust_inference_health"  # a worker report's entry: [[age_s, python_pct, process_pct], ...]
MAX_REPORT_SAMPLES = 120  # a worker reports every 3 s; more than this in one report is not a worker's
MAX_PROCESSES = 1024  # processes the master keeps samples of
MAX_SAMPLES = 86_400  # per process: a day at one a second
MAX_AGE_S = 3600.0
MAX_PCT = 100.0 * 4096  # a process's CPU, in % of one core: bounded by its cores


class HealthError(ValueError):
    """A worker's health entry that is not one; the message says why."""


@dataclass
class CpuSampler:
    """CPU use since the previous sample, in % of one core; call :meth:`sample` on Python's thread. The
    clocks are parameters so a test can feed readings in."""

    wall: Callable[[], float] = time.time
    clock: Callable[[], float] = time.monotonic
    thread_cpu: Callable[[], float] = time.thread_time
    # the same clock as thread_time (CLOCK_PROCESS_CPUTIME_ID, ns): os.times() counts 10 ms ticks, and a
    # process then read below its own Python thread
    process_cpu: Callable[[], float] = time.process_time
    _last: tuple[float, float, float] | None = None

    def sample(self) -> tuple[float, float, float] | None:
        """(wall time, Python's thread %, the process's %) since the last call; None on the first call."""
        now = (self.clock(), self.thread_cpu(), self.process_cpu())
        last, self._last = self._last, now
        if last is None or now[0] <= last[0]:
            return None
        seconds = now[0] - last[0]
        return self.wall(), 100.0 * (now[1] - last[1]) / seconds, 100.0 * (now[2] - last[2]) / seconds


def decode_report(entry: Any, received: float) -> list[tuple[float, float, float]]:
    """A worker's ``[[age_s, python_pct, process_pct], ...]`` as (wall time on this clock, python %,
    process %); raises :class:`HealthError` for anything else."""
    if not isinstance(entry, list) or len(entry) > MAX_REPORT_SAMPLES:
        raise HealthError(f"not a list of at most {MAX_REPORT_SAMPLES} samples")
    samples = []
    for item in entry:
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise HealthError("a sample is not [age_s, python_pct, process_pct]")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in item):
            raise HealthError("a sample holds something other than finite numbers")
        age, python, process = (float(v) for v in item)
        if not (0.0 <= age <= MAX_AGE_S and 0.0 <= python <= MAX_PCT and 0.0 <= process <= MAX_PCT):
            raise HealthError(f"a sample is out of range ({age:.6g} s, {python:.6g} %, {process:.6g} %)")
        samples.append((received - age, python, process))
    return samples


@dataclass
class Health:
    """Every process's CPU samples (on the master, or the one local process) and the send lag over time."""

    processes: dict[str, deque[tuple[float, float, float]]] = field(default_factory=dict)
    lag: list[dict[str, Any]] = field(default_factory=list)
    threshold_pct: float = SATURATED_PCT

    def add(self, process: str, samples: list[tuple[float, float, float]]) -> bool:
        """Adds ``samples`` of ``process``; False (nothing added) when that would be one process too many."""
        kept = self.processes.get(process)
        if kept is None:
            if len(self.processes) >= MAX_PROCESSES:
                return False
            kept = self.processes[process] = deque(maxlen=MAX_SAMPLES)
        kept.extend(samples)
        return True

    def peaks(self, start: float | None, end: float | None) -> dict[str, float]:
        """Each process's highest Python-thread CPU % among its samples in [``start``, ``end``]."""
        peaks = {}
        for process, samples in self.processes.items():
            inside = [p for t, p, _ in samples if (start is None or t >= start) and (end is None or t <= end)]
            if inside:
                peaks[process] = max(inside)
        return peaks

    def saturated(self, start: float | None, end: float | None) -> list[str]:
        """The processes whose Python thread reached the threshold within [``start``, ``end``]."""
        return sorted(p for p, peak in self.peaks(start, end).items() if peak >= self.threshold_pct)

    def document(self, start: float | None, end: float | None) -> ClientHealth:
        peaks = self.peaks(start, end)
        return {
            "threshold_pct": self.threshold_pct,
            "processes": {
                process: [
                    {"t": round(t, 3), "python_cpu_pct": round(p, 2), "process_cpu_pct": round(q, 2)}
                    for t, p, q in samples
                    if (start is None or t >= start) and (end is None or t <= end)
                ]
                for process, samples in sorted(self.processes.items())
            },
            "peak_python_cpu_pct": {k: round(v, 2) for k, v in sorted(peaks.items())},
            "saturated": self.saturated(start, end),
            # all of them, unlike the CPU samples: a window holds the send lags of the reports that arrived by its
            # time, and the workers' last reports (requests sent before the stop) arrive after it
            "lag": list(self.lag),
        }


def saturation_warning(saturated: list[str], peaks: dict[str, float], threshold: float = SATURATED_PCT) -> str:
    """The line that says which load-generator processes were saturated."""
    which = ", ".join(f"{p} (peak {peaks.get(p, 0):.0f}%)" for p in saturated[:8])
    more = f" and {len(saturated) - 8} more" if len(saturated) > 8 else ""
    return (
        f"WARNING: load generator saturated: Python's thread used >= {threshold:.0f}% of a core in {which}{more} "
        "during the measured window; its latencies and rates are suspect (add workers or lower the load)"
    )
