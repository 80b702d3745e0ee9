"""LowUser with a request listener that stops the user in the middle of a batch of answers.

The listener (registered at import: before Locust's own, which the runner adds later) counts every request
event. At the 10th it waits (yielding) until two answers or more wait in that user's stream, so its next
take is a batch of several; at that user's first event with answers of its batch still to report, it
raises ``$LISTENER_STOP`` (``StopUser`` or ``StopTest``), once in the process. ``$LISTENER_OUT`` gets, as the run quits,
``{"fired": events, "raised": 1, "left_in_batch": answers of that batch not reported yet}``.
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

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import locustfile  # noqa: E402

__all__ = ["ListenedUser"]

STOP = {"StopUser": StopUser, "StopTest": StopTest}[os.environ["LISTENER_STOP"]]
probe: dict[str, Any] = {"fired": 0, "raised": 0, "left_in_batch": 0, "batched": False}
reporting: list[ListenedUser] = []  # the user whose answer is being reported


class ListenedUser(locustfile.LowUser):
    def _fire(self, *args: Any) -> None:
        reporting[:] = [self]
        super()._fire(*args)


@events.request.add_listener
def _listen(**_kw: Any) -> None:
    probe["fired"] += 1
    (user,) = reporting
    stream = user._stream
    if probe["fired"] == 10 and not probe["batched"]:
        for _ in range(1000):  # bounded: sleep_20ms answers a request in 20 ms
            c = stream.counts()
            if c["completed"] - c["delivered"] >= 2:
                break
            gevent.sleep(0.01)
        probe["batched"] = user
        return
    if probe["batched"] is user and not probe["raised"] and user._batch:
        probe["raised"] = 1
        probe["left_in_batch"] = len(user._batch)
        raise STOP()


@events.quitting.add_listener
def _write(**_kw: Any) -> None:
    out = {k: v for k, v in probe.items() if k != "batched"}
    Path(os.environ["LISTENER_OUT"]).write_text(json.dumps(out))
