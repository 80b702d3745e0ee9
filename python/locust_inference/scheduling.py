"""Python's thread gives way to the I/O thread: ``SCHED_BATCH`` for the thread that runs the users.

Every completion wakes Python's thread (the I/O thread writes the user's eventfd). Under the default
policy the woken thread preempts the I/O thread at once when they share a core, so the two swap on every
request: the I/O thread is switched out in the middle of its work and Python handles one completion per
wake-up. ``SCHED_BATCH`` only removes that wake-up preemption (the thread keeps its share of the CPU): the
I/O thread finishes what is ready, then Python takes several completions in one turn. The I/O thread keeps
the default policy, so its own wake-ups (a response arriving, an open-loop send falling due) still preempt
Python at once: send times and timestamps stay as prompt as before. Measured in ``bench/RESULTS.md``
(pinned, 10 users): about a fifth more requests per second for a sixth less CPU per request.

``LOCUST_INFERENCE_PYTHON_SCHED=normal`` keeps the default policy.
"""

from __future__ import annotations

import logging
import os

from locust_inference._native import ConfigError

__all__ = ["ENV", "give_way_to_io_thread"]

ENV = "LOCUST_INFERENCE_PYTHON_SCHED"
log = logging.getLogger("locust_inference")


def give_way_to_io_thread() -> bool:
    """Sets the calling thread's policy to ``SCHED_BATCH`` unless ``$LOCUST_INFERENCE_PYTHON_SCHED`` is
    ``normal``; returns whether it did. Raises ConfigError on any other value of the variable."""
    choice = os.environ.get(ENV, "batch").strip().lower()
    if choice not in ("batch", "normal"):
        raise ConfigError(f"{ENV} must be batch or normal, not {choice!r}")
    batch = getattr(os, "SCHED_BATCH", None)
    if choice == "normal" or batch is None:  # not Linux: nothing to change
        return False
    try:
        os.sched_setscheduler(0, batch, os.sched_param(0))  # 0: the calling thread
    except OSError as err:  # e.g. a seccomp profile that refuses it: run as before, and say so
        log.warning("locust-inference: could not set SCHED_BATCH on Python's thread (%s); running without", err)
        return False
    return True
