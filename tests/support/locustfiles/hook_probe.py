"""The product's users, with Locust's hooks that locust-inference replaces as a future Locust might have
them ($BREAK_HOOK, see ``BREAKS``), and a report of which response-time bucketing Locust used during the
run and after its ``quit`` event.

Writes ``{"during": "<module>.<function>", "after": "<module>.<function>"}`` to $HOOK_REPORT at ``quit``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import locust
import locust.runners
import locust.stats
from locust import events
from locust.user.task import TaskSet

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))


def _sleep_with_a_new_signature(self: Any, seconds: float, reason: str) -> None:
    raise AssertionError("never called: the run stops at start")


def _stop_without_force(self: Any) -> None:
    raise AssertionError("never called: the run stops at start")


def _stop_that_kills(self: Any, force: bool = False) -> None:
    raise AssertionError("never called: the run stops at start")


def _stop_that_never_kills(self: Any, force: bool = False) -> None:
    from locust.user.task import LOCUST_STATE_STOPPING

    self._state = LOCUST_STATE_STOPPING
    raise AssertionError("never called: the run stops at start")


def _close_files_with_a_reason(self: Any, reason: str) -> None:
    raise AssertionError("never called: the run stops at start")


def _quit_with_a_reason(self: Any, reason: str) -> None:
    raise AssertionError("never called: the run stops at start")


def _quit_without_telling_the_workers(self: Any) -> None:
    raise AssertionError("never called: the run stops at start")


BREAKS = {
    "bucket_removed": lambda: delattr(locust.stats, "bucket_response_time"),
    "bucket_unused": lambda: setattr(locust.stats.StatsEntry, "_log_response_time", lambda self, rt: None),
    "sleep_removed": lambda: delattr(TaskSet, "_sleep"),
    "sleep_changed": lambda: setattr(TaskSet, "_sleep", _sleep_with_a_new_signature),
    "stop_changed": lambda: setattr(locust.User, "stop", _stop_without_force),
    "stop_state_unused": lambda: setattr(locust.User, "stop", _stop_that_kills),
    "stop_wait_unused": lambda: setattr(locust.User, "stop", _stop_that_never_kills),
    "waiting_removed": lambda: delattr(importlib.import_module("locust.user.task"), "LOCUST_STATE_WAITING"),
    "csv_close_changed": lambda: setattr(locust.stats.StatsCSVFileWriter, "close_files", _close_files_with_a_reason),
    "csv_rows_removed": lambda: delattr(locust.stats.StatsCSV, "_requests_data_rows"),
    "csv_loop_changed": lambda: setattr(locust.stats.StatsCSVFileWriter, "stats_writer", _close_files_with_a_reason),
    "quit_changed": lambda: setattr(locust.runners.MasterRunner, "quit", _quit_with_a_reason),
    "quit_silent": lambda: setattr(locust.runners.MasterRunner, "quit", _quit_without_telling_the_workers),
}
if os.environ.get("BREAK_HOOK"):
    BREAKS[os.environ["BREAK_HOOK"]]()

from locustfile import HighUser, LowUser  # noqa: E402

__all__ = ["HighUser", "LowUser"]

report: dict[str, str] = {}


def _bucketing() -> str:
    function = locust.stats.bucket_response_time
    return f"{function.__module__}.{function.__name__}"


@events.test_stop.add_listener
def _during(**_kwargs: Any) -> None:
    report["during"] = _bucketing()


@events.init.add_listener
def _after_locust_inference(environment: Any, **_kwargs: Any) -> None:
    # Registered from init, after locust-inference's own init listener: this quit listener runs after its.
    @environment.events.quit.add_listener
    def _after(**_kw: Any) -> None:
        report["after"] = _bucketing()
        Path(os.environ["HOOK_REPORT"]).write_text(json.dumps(report))
