"""Python's thread gives way to the I/O thread: ``SCHED_BATCH`` for the thread that runs the users.

Every completion wakes Python's thread (the I/O thread writes the user's eventfd). Under the default
policy the woken thread preempts the I/O thread at once when they share a core, so the two swap on every
request: the I/O thread is switched out in the middle of its work and Python handles one completion per
wake-up. ``SCHED_BATCH`` only removes that wake-up preemption (the thread keeps its share of the CPU): the
I/O thread finishes what is ready, then Python takes several completions in one turn. The I/O thread keeps
the default policy, so its own wake-ups (a response arriving, an open-loop send falling due) still preempt
Python at once: send times and timestamps stay as prompt as before. What it changes is measured by
``make bench`` (the rows with ``LOCUST_INFERENCE_PYTHON_SCHED=normal`` in ``bench/RESULTS.md``).

An open-loop stream needs more: its sends are due on the I/O thread at fixed times, and under contention
a thread that has had more than its fair share of the core (as the I/O thread has, sending most of the
bytes) waits for the other's time slice to end, milliseconds late. So once a stream starts, Python's thread
also takes a lower weight (nice +10 for that thread only; raising nice needs no privilege), and the I/O
thread's wake-ups win. Closed-loop users are left at nice 0: there the I/O thread preempting Python on every
completion brings back the swapping described above (renicing Python's thread to +10 during a pinned run
of 10 closed-loop users cost about a third of their rate, in a check by hand).

``LOCUST_INFERENCE_PYTHON_SCHED=normal`` keeps the default policy and nice value.
"""

from __future__ import annotations

import logging
import os
import threading

from locust_inference._native import ConfigError

__all__ = ["ENV", "STREAM_NICE", "give_way_to_io_thread", "put_streams_first"]

ENV = "LOCUST_INFERENCE_PYTHON_SCHED"
STREAM_NICE = 10
log = logging.getLogger("locust_inference")


def _wanted() -> bool:
    choice = os.environ.get(ENV, "batch").strip().lower()
    if choice not in ("batch", "normal"):
        raise ConfigError(f"{ENV} must be batch or normal, not {choice!r}")
    return choice == "batch"


def give_way_to_io_thread() -> bool:
    """Sets the calling thread's policy to ``SCHED_BATCH`` unless ``$LOCUST_INFERENCE_PYTHON_SCHED`` is
    ``normal``; returns whether it did. Raises ConfigError on any other value of the variable."""
    batch = getattr(os, "SCHED_BATCH", None)
    if not _wanted() or batch is None:  # not Linux: nothing to change
        return False
    try:
        os.sched_setscheduler(0, batch, os.sched_param(0))  # 0: the calling thread
    except OSError as err:  # e.g. a seccomp profile that refuses it: run as before, and say so
        log.warning("locust-inference: could not set SCHED_BATCH on Python's thread (%s); running without", err)
        return False
    return True


def put_streams_first() -> bool:
    """Raises the calling thread's nice value to :data:`STREAM_NICE` (never lowers it) unless
    ``$LOCUST_INFERENCE_PYTHON_SCHED`` is ``normal``; returns whether the thread now runs at that weight or
    lower. Called from the thread that runs the users when an open-loop stream starts."""
    if not _wanted():
        return False
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < STREAM_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, STREAM_NICE)  # this thread only, on Linux
    except OSError as err:
        log.warning("locust-inference: could not lower the weight of Python's thread (%s); streams may lag", err)
        return False
    return True
