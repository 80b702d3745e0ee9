"""The product's users, plus ``Spinner`` (an inference user whose only task sends nothing) and a count
of the greenlet switches into anything but gevent's hub while the test runs.

Writes ``{"switches": n, "requests": r, "spins": s}`` to $SWITCH_REPORT at the end of the test.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import gevent
import greenlet
from locust import constant, events

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from locust_inference.users import InferenceUser  # noqa: E402

from locustfile import HighUser  # noqa: E402

__all__ = ["HighUser", "Spinner"]

counts = {"switches": 0, "spins": 0}


class Spinner(InferenceUser):
    """No wait, and its task sends nothing and never yields: only Locust's zero wait lets other
    greenlets run."""

    wait_time = constant(0)

    def send(self) -> Any:
        counts["spins"] += 1


@events.test_start.add_listener
def _count_switches(**_kwargs: Any) -> None:
    hub = gevent.get_hub()

    def trace(event: str, args: tuple[Any, Any]) -> None:
        if event == "switch" and args[1] is not hub:
            counts["switches"] += 1

    greenlet.settrace(trace)


@events.test_stop.add_listener
def _report(environment: Any, **_kwargs: Any) -> None:
    greenlet.settrace(None)
    report = {**counts, "requests": environment.stats.total.num_requests}
    Path(os.environ["SWITCH_REPORT"]).write_text(json.dumps(report))
