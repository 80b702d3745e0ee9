"""The scale benchmark's user (``bench/llm_scale.py``): ``HighUser``, run with ``--stagger`` so that each
user's first request waits a random time after it starts. Locust starts the users of each second in one
batch, so streams of equal length started together would stay in step for the whole run; independent
users' streams do not.

At quit it writes the wall-clock time (``time.time()``, one per line) of every successful request to
``BENCH_ENDS_OUT``, so that the benchmark can count what Locust received in the same window of time as
the server's log.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from locust import events

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import locustfile

_ends: list[float] = []


class StaggeredUser(locustfile.HighUser):
    """``HighUser`` (the next request as soon as the previous one returns), under its own name."""


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
