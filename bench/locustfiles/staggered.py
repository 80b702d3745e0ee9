"""The scale benchmark's user (``bench/llm_scale.py``): ``HighUser`` whose first request waits a random
time, uniform in [0, ``BENCH_STAGGER_S``), after it starts. Locust starts the users of each second in one
batch (``floor(spawn rate)`` at once), so streams of equal length started together would stay in step for
the whole run; independent users' streams do not.

At quit it writes the wall-clock time (``time.time()``, one per line) of every successful request to
``BENCH_ENDS_OUT``, so that the benchmark can count what Locust received in the same window of time as
the server's log.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import gevent
from locust import constant, events
from locust_inference.users import InferenceUser

STAGGER_S = float(os.environ.get("BENCH_STAGGER_S", "0"))
_ends: list[float] = []


class StaggeredUser(InferenceUser):
    """``HighUser`` (the next request as soon as the previous one returns), started at a random offset."""

    wait_time = constant(0)
    back_to_back = True

    def on_start(self) -> None:
        super().on_start()
        gevent.sleep(random.uniform(0.0, STAGGER_S))


@events.request.add_listener
def _record(exception: BaseException | None = None, **_kwargs: Any) -> None:
    if exception is None:
        _ends.append(time.time())


@events.quitting.add_listener
def _write(**_kwargs: Any) -> None:
    out = os.environ.get("BENCH_ENDS_OUT")
    if out:
        with open(out, "w") as f:
            f.write("".join(f"{t:.6f}\n" for t in _ends))
