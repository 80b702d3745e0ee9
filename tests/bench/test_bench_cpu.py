"""bench/cpu.py: the steady window it divides over, on made-up samples, and what it reads from a real
process (this one) while it does known work."""

from __future__ import annotations

import os
import resource
import time

from bench.cpu import SETTLE_S, Sample, Sampler, Thread, cost, read_process


def sample(at: float, cpu: float, served: int, wakes: int = 0) -> Sample:
    threads = {1: Thread(wakes, main=True), 2: Thread(wakes, io=True)}
    return Sample(at=at, cpu_s=cpu, io_cpu_s=cpu / 2, threads=threads, served=served)


def test_the_window_starts_after_settling_and_ends_at_the_last_rise() -> None:
    samples = [
        sample(0.0, 1.0, 0),  # start-up: CPU spent, nothing served
        sample(0.5, 2.0, 0),
        sample(1.0, 2.1, 10),  # the server first saw requests here
        sample(1.5, 2.2, 20),
        sample(1.0 + SETTLE_S, 2.3, 30, wakes=5),  # the window starts here
        sample(3.0, 2.4, 40),
        sample(3.5, 2.5, 130, wakes=50),  # the window ends here: the server still counted after it
        sample(4.0, 2.6, 131),
        sample(4.5, 3.9, 131),  # shutting down: CPU spent, nothing served
    ]
    got = cost(samples, has_io_threads=True)
    assert got is not None
    assert got.requests == 130 - 30
    assert abs(got.seconds - (3.5 - 1.0 - SETTLE_S)) < 1e-9
    assert abs(got.cpu_us - 0.2 / 100 * 1e6) < 1e-6
    assert got.io_cpu_us is not None and abs(got.io_cpu_us - 0.1 / 100 * 1e6) < 1e-6
    assert abs(got.wakes - 2 * 45 / 100) < 1e-9 and abs(got.main_wakes - 45 / 100) < 1e-9


def test_no_window_without_steady_requests() -> None:
    assert cost([sample(0.0, 1.0, 0), sample(1.0, 2.0, 0)], has_io_threads=False) is None
    assert cost([sample(0.0, 1.0, 0), sample(0.25, 1.1, 5), sample(0.5, 1.2, 5)], has_io_threads=False) is None
    assert cost([], has_io_threads=False) is None


def test_a_client_without_io_threads_reports_none_for_them() -> None:
    samples = [sample(t / 4, t, 10 * t) for t in range(12)]
    got = cost(samples, has_io_threads=False)
    assert got is not None and got.io_cpu_us is None and got.io_wakes is None


def test_wake_ups_count_threads_that_start_inside_the_window_and_never_go_below_zero() -> None:
    """Thread 3 ends inside the window (its switches go with it), thread 4 starts inside it."""
    start = {1: Thread(100, main=True), 2: Thread(50, io=True), 3: Thread(1000)}
    end = {1: Thread(130, main=True), 2: Thread(90, io=True), 4: Thread(7)}
    samples = [Sample(t / 4, t, t / 2, start, 10 * t) for t in range(8)]
    samples += [Sample(2 + t / 4, 8 + t, 4 + t / 2, end, 80 + 10 * t) for t in range(4)]
    got = cost(samples, has_io_threads=True)
    assert got is not None
    window = got.requests
    assert got.wakes * window == 30 + 40 + 7
    assert got.main_wakes * window == 30
    assert got.io_wakes is not None and got.io_wakes * window == 40


def _own_switches() -> int:
    """The kernel's count of this thread's voluntary switches, read the other way: getrusage."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def _read_bracketed() -> tuple[tuple[float, float, dict[int, Thread]], int]:
    """read_process of this process, with the main thread's switches checked against getrusage
    read just before and just after (reading /proc may itself block once)."""
    low = _own_switches()
    got = read_process(os.getpid())
    high = _own_switches()
    assert got is not None
    switches = got[2][os.getpid()].switches
    assert low <= switches <= high
    return got, switches


def test_reads_this_processs_cpu_and_wake_ups() -> None:
    before, switches_before = _read_bracketed()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # 0.3 s of CPU
        pass
    for _ in range(20):
        # Blocks the main thread: a voluntary switch, unless the thread is preempted between arming
        # the timer and sleeping (then the switch counts as involuntary), so the test compares with
        # the kernel's own count rather than with 20.
        time.sleep(0.001)
    after, switches_after = _read_bracketed()
    assert after[0] - before[0] >= 0.25  # clock ticks are 10 ms
    main = os.getpid()
    assert after[2][main].main and not after[2][main].io
    assert switches_after > switches_before
    assert read_process(2**22 + 1) is None  # no such process


def test_the_sampler_follows_a_process_and_its_server_count() -> None:
    counter = iter(range(10**6))
    sampler = Sampler(lambda: next(counter))
    sampler.start(os.getpid())
    deadline = time.monotonic() + 60  # however busy the machine: the bound is a count, not a time
    while len(sampler.samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    sampler.stop()
    assert len(sampler.samples) >= 3
    assert [s.served for s in sampler.samples] == list(range(len(sampler.samples)))
