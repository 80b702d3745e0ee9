"""The product's users, each request timed on the client: when ``send`` was called and when it returned
(``time.perf_counter``, seconds), for the requests that completed. HighUser's request may have left
before ``send`` was called (its I/O thread sends back to back), so each interval lies within the time
its request was in flight and its greenlet waited in the hub: overlapping intervals are overlapping
requests, and a wait that blocked the process could not overlap any.

Writes ``{"intervals": [[start, end], ...]}`` to $TIMELINE_REPORT at exit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from locust import events

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

import locustfile  # noqa: E402

__all__ = ["HighUser", "LowUser"]

intervals: list[tuple[float, float]] = []


class Timed:
    def send(self) -> Any:
        start = time.perf_counter()
        outcome = super().send()  # type: ignore[misc]
        intervals.append((start, time.perf_counter()))
        return outcome


class HighUser(Timed, locustfile.HighUser):
    pass


class LowUser(Timed, locustfile.LowUser):
    pass


@events.quitting.add_listener
def _report(**_kwargs: Any) -> None:
    Path(os.environ["TIMELINE_REPORT"]).write_text(json.dumps({"intervals": intervals}))
