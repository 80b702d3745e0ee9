"""HighUser (or LowUser), and when each user's first request left: ``$PROBE_OUT`` gets one JSON line per user once it
stopped, ``{"delay": its --stagger delay, "waited": seconds from its start to its first request (null if
it sent none), "ended": the exception that stopped it}``."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

from locust_inference._native import Outcome  # noqa: E402

import locustfile  # noqa: E402

__all__ = ["StaggerProbeLowUser", "StaggerProbeUser"]


class StaggerProbeUser(locustfile.HighUser):
    started = 0.0
    first: float | None = None

    def on_start(self) -> None:
        self.started = time.monotonic()
        super().on_start()

    def send(self) -> Outcome:
        if self.first is None:
            self.first = time.monotonic()
        return super().send()

    def on_stop(self) -> None:
        stopping = sys.exc_info()[0]
        super().on_stop()
        record = {
            "delay": self.stagger_delay(),
            "waited": None if self.first is None else self.first - self.started,
            "ended": None if stopping is None else stopping.__name__,
        }
        with Path(os.environ["PROBE_OUT"]).open("a") as out:
            out.write(json.dumps(record) + "\n")


class StaggerProbeLowUser(StaggerProbeUser, locustfile.LowUser):
    """``LowUser`` (an open loop), probed alike: ``waited`` stays null, its stream sends on its own."""
