"""The product's users, with Locust's console stats printer held up once, so that a Ctrl-C is handled while that
printer's greenlet runs: its first print after spawning completes writes SLOW_PRINT_MARK to stderr, then keeps
Python's thread busy in Python code until the file $SLOW_PRINT_UNTIL exists (the test creates it once it has
sent the Ctrl-C; at most CAP_S). Locust's printer catches KeyboardInterrupt and ends quietly
(``locust.stats.stats_printer``), as its stats history and CSV writer do: a real print takes a millisecond
in two seconds, so a Ctrl-C only rarely lands there, and this makes it land there every time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import locust.stats
from locust import events

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

from locustfile import HighUser  # noqa: E402

__all__ = ["HighUser"]

SLOW_PRINT_MARK = "slow_console_stats: printing"
CAP_S = 60.0
_print_stats = locust.stats.print_stats
_state = {"spawned": False, "held": False}


@events.spawning_complete.add_listener
def _spawned(**_kw: Any) -> None:
    _state["spawned"] = True


def _held_print_stats(stats: Any, current: bool = True) -> None:
    if _state["spawned"] and not _state["held"]:
        _state["held"] = True
        sys.stderr.write(SLOW_PRINT_MARK + "\n")
        sys.stderr.flush()
        until = Path(os.environ["SLOW_PRINT_UNTIL"])
        cap = time.monotonic() + CAP_S
        while not until.exists() and time.monotonic() < cap:  # Python code: the place a Ctrl-C is handled
            pass
        for _ in range(100_000):  # and a little longer, once the signal is surely there
            pass
    _print_stats(stats, current)


# the printer looks the function up in its module each time (locust.stats.stats_printer)
locust.stats.print_stats = _held_print_stats
