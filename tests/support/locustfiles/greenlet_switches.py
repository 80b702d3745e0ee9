"""The product's users, plus ``Spinner`` (an inference user whose only task sends nothing) and a count
of the greenlet switches into the users' greenlets while the test runs (Locust's own greenlets, which
wake on timers, are not counted: what is left does not depend on how fast the machine is).

Writes ``{"switches": n, "requests": r, "spins": {"<user id>": s, ...}}`` to $SWITCH_REPORT at the end of
the test.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import greenlet
from locust import constant, events

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

from locust_inference.users import InferenceUser  # noqa: E402

from locustfile import HighUser  # noqa: E402

__all__ = ["HighUser", "Spinner"]

counts = {"switches": 0}
spins: dict[str, int] = {}


class Spinner(InferenceUser):
    """No wait, and its task sends nothing and never yields: only Locust's zero wait lets other
    greenlets run."""

    wait_time = constant(0)

    def send(self) -> Any:
        spins[str(id(self))] = spins.get(str(id(self)), 0) + 1


@events.test_start.add_listener
def _count_switches(environment: Any, **_kwargs: Any) -> None:
    users = environment.runner.user_greenlets

    def trace(event: str, args: tuple[Any, Any]) -> None:
        if event == "switch" and args[1] in users:
            counts["switches"] += 1

    greenlet.settrace(trace)


@events.test_stop.add_listener
def _report(environment: Any, **_kwargs: Any) -> None:
    greenlet.settrace(None)
    report = {"switches": counts["switches"], "requests": environment.stats.total.num_requests, "spins": spins}
    Path(os.environ["SWITCH_REPORT"]).write_text(json.dumps(report))
