"""LowUser with a request listener that stops the user in the middle of a batch of answers.

The listener (registered at import: before Locust's own, which the runner adds later) counts every request
event. At the 10th it waits (yielding) until two answers or more wait in that user's stream, so its next
take is a batch of several; at that user's first event with answers of its batch still to report, it
raises ``$LISTENER_STOP`` (``StopUser`` or ``StopTest``), once in the process. With ``LISTENER_STOP=judge``
the user's check of that answer (``_judge``, before it is recorded) raises a ``RuntimeError`` instead, which
Locust logs and the user survives. ``$LISTENER_OUT`` gets, as the run quits, ``{"fired": events,
"raised": 1, "left_in_batch": answers of that batch not reported yet, "unreported_at_stop": answers each
stopped user took and never reported, summed}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.exception import StopTest, StopUser

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

import locustfile  # noqa: E402

__all__ = ["ListenedUser"]

MODE = os.environ["LISTENER_STOP"]
STOP = {"StopUser": StopUser, "StopTest": StopTest, "judge": RuntimeError}[MODE]
probe: dict[str, Any] = {"fired": 0, "raised": 0, "left_in_batch": 0, "unreported_at_stop": 0, "batched": None}
reporting: list[ListenedUser] = []  # the user whose answer is being reported


def stop_here(user: ListenedUser) -> None:
    """Raises STOP once: in the batched user, while answers of its batch wait to be reported."""
    if probe["batched"] is user and not probe["raised"] and user._batch:
        probe["raised"] = 1
        probe["left_in_batch"] = len(user._batch)
        raise STOP("stopped by listener_stops.py")


class ListenedUser(locustfile.LowUser):
    def _fire(self, *args: Any) -> None:
        reporting[:] = [self]
        super()._fire(*args)

    def _judge(self, outcome: Any) -> Exception | None:
        if MODE == "judge":
            stop_here(self)
        return super()._judge(outcome)

    def on_stop(self) -> None:
        if self._stream is not None:
            c = self._stream.counts()
            probe["unreported_at_stop"] += c["delivered"] - c["reported"]
        super().on_stop()


@events.request.add_listener
def _listen(**_kw: Any) -> None:
    probe["fired"] += 1
    (user,) = reporting
    stream = user._stream
    if probe["fired"] == 10 and probe["batched"] is None:
        for _ in range(1000):  # bounded: sleep_20ms answers a request in 20 ms
            c = stream.counts()
            if c["completed"] - c["delivered"] >= 2:
                break
            gevent.sleep(0.01)
        probe["batched"] = user
        return
    if MODE != "judge":
        stop_here(user)


@events.quitting.add_listener
def _write(**_kw: Any) -> None:
    out = {k: v for k, v in probe.items() if k != "batched"}
    Path(os.environ["LISTENER_OUT"]).write_text(json.dumps(out))
