"""What a client process costs per request, measured from outside it the same way for every client
(wrk, perf_analyzer, Locust's users, ours, the seed's scripts).

While the client runs, a thread samples every :data:`INTERVAL_S` its CPU time (user + system, all threads,
from ``/proc/PID/stat``), its threads' voluntary context switches (each one a wake-up after blocking) and
the server's count of answered requests. The window used starts :data:`SETTLE_S` after the server first
sees requests (start-up, imports and connecting excluded) and ends at the last sample before the client's
requests stop, so every client is measured over its steady state and divided by what the server counted.

Wake-ups are counted per thread: a thread's switches over the window are its count at the window's end
less its count at the start (or all of them, when it started inside the window). A thread that ended
inside the window takes its switches with it (``/proc`` forgets them), so a client whose threads come and
go shows a floor, never a negative count.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cost", "Sample", "Sampler", "Thread", "cost", "read_process"]

INTERVAL_S = 0.25
SETTLE_S = 1.0
TICK = os.sysconf("SC_CLK_TCK")
IO_THREAD_PREFIX = "locust-inferenc"  # our I/O threads' names, as /proc shows them (15 characters)


@dataclass(frozen=True)
class Thread:
    """One thread's voluntary context switches so far, and whether it is the main thread or one of ours."""

    switches: int
    main: bool = False
    io: bool = False


@dataclass(frozen=True)
class Sample:
    """One reading: seconds since the start, the client's CPU seconds (all threads, and our I/O threads),
    each live thread's wake-ups by thread id, and the server's answered requests."""

    at: float
    cpu_s: float
    io_cpu_s: float
    threads: Mapping[int, Thread]
    served: int


@dataclass(frozen=True)
class Cost:
    """Per request over the steady window: CPU µs (process, of it our I/O threads') and wake-ups."""

    requests: int
    seconds: float
    cpu_us: float
    io_cpu_us: float | None
    wakes: float
    main_wakes: float
    io_wakes: float | None


def _thread(task: Path) -> tuple[str, float, int]:
    """A thread's name, CPU seconds and voluntary context switches."""
    name = (task / "comm").read_text().strip()
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    switches = 0
    for line in (task / "status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            switches = int(line.split()[1])
    return name, cpu, switches


def read_process(pid: int) -> tuple[float, float, dict[int, Thread]] | None:
    """(CPU s, I/O threads' CPU s, each live thread's wake-ups by id) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        io_cpu = 0.0
        threads: dict[int, Thread] = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                name, task_cpu, switches = _thread(task)
            except (OSError, IndexError, ValueError):
                continue  # a thread that just ended
            io = name.startswith(IO_THREAD_PREFIX)
            if io:
                io_cpu += task_cpu
            threads[int(task.name)] = Thread(switches, main=task.name == str(pid), io=io)
    except (OSError, IndexError, ValueError):
        return None
    return cpu, io_cpu, threads


def wakes_between(a: Mapping[int, Thread], b: Mapping[int, Thread]) -> tuple[int, int, int]:
    """(all, main thread's, I/O threads') wake-ups from ``a`` to ``b`` of the threads alive at ``b``."""
    total = main = io = 0
    for tid, thread in b.items():
        before = a.get(tid)
        n = thread.switches - (before.switches if before is not None else 0)
        total += n
        main += n if thread.main else 0
        io += n if thread.io else 0
    return total, main, io


class SamplerThread:
    """Runs :meth:`_run` on a process (or process group) in a daemon thread from :meth:`start` until
    :meth:`stop`; ``_run`` samples until ``_done`` is set."""

    _done: threading.Event
    _thread: threading.Thread | None = None

    def start(self, pid: int) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pid,), name=f"bench-{type(self).__name__}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()

    def _run(self, pid: int) -> None:
        raise NotImplementedError


class Sampler(SamplerThread):
    """Samples a client process and the server until :meth:`stop`; :meth:`cost` gives the result."""

    def __init__(self, served: Callable[[], int]) -> None:
        self._served = served
        self.samples: list[Sample] = []

    def _run(self, pid: int) -> None:
        start = time.monotonic()
        while not self._done.is_set():
            process = read_process(pid)
            try:
                served = self._served()
            except OSError:
                served = None
            if process is None or served is None:
                if process is None and self.samples:
                    return  # the client exited
            else:
                self.samples.append(Sample(time.monotonic() - start, *process, served))
            self._done.wait(INTERVAL_S)

    def cost(self, has_io_threads: bool) -> Cost | None:
        return cost(self.samples, has_io_threads)


def cost(samples: list[Sample], has_io_threads: bool) -> Cost | None:
    """Per request from :data:`SETTLE_S` after the server's count first rises to the last sample after which
    it still rose (the client was still sending); ``None`` when that window holds no requests."""
    rising = [i for i in range(len(samples) - 1) if samples[i + 1].served > samples[i].served]
    if not rising:
        return None
    first_seen = samples[rising[0] + 1].at
    begin = next((i for i in rising if samples[i].at >= first_seen + SETTLE_S), None)
    end = rising[-1]
    if begin is None or end <= begin:
        return None
    a, b = samples[begin], samples[end]
    requests = b.served - a.served
    if requests <= 0:
        return None
    wakes, main_wakes, io_wakes = wakes_between(a.threads, b.threads)
    return Cost(
        requests=requests,
        seconds=b.at - a.at,
        cpu_us=(b.cpu_s - a.cpu_s) / requests * 1e6,
        io_cpu_us=(b.io_cpu_s - a.io_cpu_s) / requests * 1e6 if has_io_threads else None,
        wakes=wakes / requests,
        main_wakes=main_wakes / requests,
        io_wakes=io_wakes / requests if has_io_threads else None,
    )
