"""HighUser, and how many answers each user reported: ``$PROBE_OUT`` gets one JSON line per user,
``{"reported": n, "ahead": [...]}``, once the user stopped; ``ahead`` says, for each report, whether a
follow-up was out as it was made. With ``PROBE_HOLD=1`` each user, having reported its first answer,
stays in that task until Locust asks it to stop: the follow-up sent when that answer arrived is then out
(or answered) when the stop comes. ``PROBE_WAIT`` (seconds) replaces HighUser's zero wait."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import gevent
from locust import constant
from locust.user.task import LOCUST_STATE_STOPPING

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

import locustfile  # noqa: E402

__all__ = ["ProbedHighUser"]

HOLD = os.environ.get("PROBE_HOLD") == "1"
WAIT = float(os.environ.get("PROBE_WAIT", "0"))


class ProbedHighUser(locustfile.HighUser):
    wait_time = constant(WAIT)
    reported = 0

    def _fire(self, *args: Any) -> None:
        self.aheads = [*getattr(self, "aheads", []), self._slot.ahead]
        super()._fire(*args)
        self.reported += 1
        if HOLD and self.reported == 1:
            while self._state != LOCUST_STATE_STOPPING:
                gevent.sleep(0.05)

    def on_stop(self) -> None:
        super().on_stop()
        with Path(os.environ["PROBE_OUT"]).open("a") as out:
            out.write(json.dumps({"reported": self.reported, "ahead": getattr(self, "aheads", [])}) + "\n")
