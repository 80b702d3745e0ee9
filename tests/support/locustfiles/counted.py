"""The product's users, in a run that ends once ``$STOP_AFTER`` requests were reported (whatever their outcome)
rather than at a time: a test that needs that many requests gets them however slowly a loaded machine runs
it. Give ``-t`` as well, long: only a guard against a run that never gets there.

The run ends as ``-t`` ends a headless run (``runner.quit()``): the users stop, latency.json is written,
the exit status is Locust's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

import locustfile  # noqa: E402

__all__ = ["HighUser", "LowUser"]

STOP_AFTER = int(os.environ["STOP_AFTER"])


@events.init.add_listener
def _count(environment: Environment, **_kw: Any) -> None:
    reported = [0]

    @environment.events.request.add_listener
    def _one_more(**_kw: Any) -> None:
        reported[0] += 1
        if reported[0] == STOP_AFTER and environment.runner is not None:
            # in a greenlet of its own: quitting stops the users, the one reporting this request among them
            gevent.spawn(environment.runner.quit)


class HighUser(locustfile.HighUser):
    pass


class LowUser(locustfile.LowUser):
    pass
