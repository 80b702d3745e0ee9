"""HighUser, and what each user's slot still held as the user stopped: ``$PROBE_OUT`` gets one JSON line
per user, ``{"ahead", "in_flight", "reported"}``, written in ``on_stop`` before the slot is cleared.
With ``PROBE_HOLD=1`` each user, having reported its first answer, stays in that task until Locust asks
it to stop: the follow-up sent when that answer arrived is then out (or answered) before the stop."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import gevent
from locust.user.task import LOCUST_STATE_STOPPING

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import locustfile  # noqa: E402

__all__ = ["ProbedHighUser"]

HOLD = os.environ.get("PROBE_HOLD") == "1"


class ProbedHighUser(locustfile.HighUser):
    reported = 0

    def _fire(self, *args: Any) -> None:
        super()._fire(*args)
        self.reported += 1
        if HOLD and self.reported == 1:
            while self._state != LOCUST_STATE_STOPPING:
                gevent.sleep(0.05)

    def on_stop(self) -> None:
        state = {"ahead": self._slot.ahead, "in_flight": self._slot.in_flight, "reported": self.reported}
        with Path(os.environ["PROBE_OUT"]).open("a") as out:
            out.write(json.dumps(state) + "\n")
        super().on_stop()
