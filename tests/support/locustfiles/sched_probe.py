"""The product's users, plus a probe of the scheduling policy of Python's thread and of our I/O threads
while the users run. Writes ``{"python": policy, "nice": n, "io": [policies]}`` (``os.SCHED_*`` numbers,
Python's thread's nice value) to $SCHED_REPORT when the test stops."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from locust import events

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

from locustfile import HighUser, LowUser  # noqa: E402

__all__ = ["HighUser", "LowUser"]


def _policy(task: Path) -> int:
    return int((task / "stat").read_text().rsplit(")", 1)[1].split()[38])  # field 41: policy


@events.test_stop.add_listener
def _probe(**_kwargs: Any) -> None:
    tasks = Path("/proc/self/task")
    io = [_policy(t) for t in tasks.iterdir() if (t / "comm").read_text().startswith("locust-inferenc")]
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    report = {"python": os.sched_getscheduler(0), "nice": nice, "io": io}
    Path(os.environ["SCHED_REPORT"]).write_text(json.dumps(report))
