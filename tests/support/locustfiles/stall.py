"""The product's users, plus a stall: $STALL_SECONDS after the test starts, the server's tritonserver (in
process group $STALL_PGID) is stopped (SIGSTOP) for one second, then continued. Only tritonserver: its
Python stubs run on, so Triton's health check, which gives a stub 1 s, does not find them dead. Every
reported request's response time (ms) is written as a JSON list to $STALL_REPORT at exit.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import gevent
from locust import events

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

from locustfile import HighUser, LowUser  # noqa: E402
from servers.children import group_members  # noqa: E402

__all__ = ["HighUser", "LowUser"]

times: list[float] = []


@events.request.add_listener
def _record(response_time: float, **_kwargs: Any) -> None:
    times.append(response_time)


def _stall() -> None:
    (server,) = group_members(int(os.environ["STALL_PGID"]), "tritonserver")
    gevent.sleep(float(os.environ.get("STALL_SECONDS", "1.5")))
    os.kill(server, signal.SIGSTOP)
    try:
        gevent.sleep(1.0)
    finally:
        os.kill(server, signal.SIGCONT)


@events.test_start.add_listener
def _start(**_kwargs: Any) -> None:
    gevent.spawn(_stall)


@events.quitting.add_listener
def _write(**_kwargs: Any) -> None:
    Path(os.environ["STALL_REPORT"]).write_text(json.dumps(times))
