"""The parts of Locust this package replaces, checked before a run starts.

Five of them, none promised by Locust to stay as they are:

* ``locust.stats.bucket_response_time(response_time)``, which ``StatsEntry`` calls by its module-level
  name to round each response time for Locust's percentiles: :mod:`locust_inference.latency` replaces it
  for a run (0.1 ms buckets below 100 ms) and puts Locust's back when the run ends.
* ``TaskSet._sleep(self, seconds)``, through which ``TaskSet.wait`` sleeps, on the ``_taskset_instance``
  that ``User.run`` creates: :class:`locust_inference.users.InferenceUser` replaces it on its own task
  set to skip the zero wait right after a request.
* ``User.stop(self, force=False)``, which the runner calls to stop a user and which, unless forced, sets
  ``_state`` to ``LOCUST_STATE_STOPPING`` for ``TaskSet.run`` to stop the user after its task:
  :class:`locust_inference.users.InferenceUser` extends it, and reads ``_state``, to send no follow-up
  once asked to stop; it sets ``_state`` to ``LOCUST_STATE_WAITING`` while its first request waits out
  ``--stagger``, so that a stop then ends it at once, as during a wait.
* ``StatsCSVFileWriter.close_files(self)``, which Locust calls as it exits. Its ``--csv`` files are
  rewritten once a second by a loop, and not again at the end: requests answered in the last second
  (those a ``--stop-timeout`` waited for among them) were missing from ``_stats.csv`` while the
  summary and ``latency.json`` counted them. :func:`install_final_csv` makes ``close_files`` write the
  final rows first, with the writer's own row functions, and stop the loop (``stats_writer(self)``,
  wrapped to note its greenlet), which Locust leaves running after the files are closed.
* ``MasterRunner.quit(self)``, which stops the run without telling the workers, sends each worker ``quit``
  (``server.send_to_client``), waits a fixed 0.5 s for their final reports and kills the runner's
  greenlets (its listener among them): :func:`locust_inference.distributed.wait_for_final_reports` does
  the same on a master's runner, waiting for every worker to have quit instead. It relies on a worker's
  ``quit`` message removing it from ``MasterRunner.clients`` (``client_listener``), and on the worker
  sending its final report before that message.

A Locust release that removes or changes one of them stops the run at start with one line naming it
(:class:`LocustHookError`, a :class:`ConfigError`), rather than measuring differently without a word.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from typing import Any

import gevent
import locust
import locust.stats
from locust import User
from locust.runners import MasterRunner
from locust.user.task import TaskSet

from locust_inference._native import ConfigError

__all__ = [
    "BUCKET_HOOK",
    "CSV_HOOK",
    "QUIT_HOOK",
    "SLEEP_HOOK",
    "STOP_HOOK",
    "LocustHookError",
    "check",
    "check_bucket",
    "check_csv",
    "check_quit",
    "check_sleep",
    "check_stop",
    "failure",
    "install_final_csv",
    "supported_locust",
]

BUCKET_HOOK = "locust.stats.bucket_response_time"
SLEEP_HOOK = "locust.user.task.TaskSet._sleep"
STOP_HOOK = "locust.User.stop"
CSV_HOOK = "locust.stats.StatsCSVFileWriter.close_files"
QUIT_HOOK = "locust.runners.MasterRunner.quit"
# What the final write uses of the writer: (file handle, csv writer, header columns) per rewritten file.
_CSV_FILES = (
    ("requests_csv_filehandle", "requests_csv_writer", "requests_csv_columns", "_requests_data_rows"),
    ("failures_csv_filehandle", "failures_csv_writer", "failures_columns", "_failures_data_rows"),
    ("exceptions_csv_filehandle", "exceptions_csv_writer", "exceptions_columns", "_exceptions_data_rows"),
)


class LocustHookError(ConfigError):
    """The installed Locust lacks, or has changed, a part of it that locust-inference replaces."""


def supported_locust() -> str:
    """The Locust versions this package declares it supports, e.g. ``locust>=2.43.4,<2.48``."""
    try:
        requirements = importlib.metadata.requires("locust-inference") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    for requirement in requirements:
        if requirement.replace(" ", "").startswith("locust") and ";" not in requirement:
            return requirement.replace(" ", "")
    return "the range in pyproject.toml"


def failure(hook: str, problem: str) -> LocustHookError:
    """The one-line error for ``hook``: Locust's version, what is wrong, the versions supported."""
    return LocustHookError(
        f"Locust {locust.__version__}: {hook} {problem}; locust-inference replaces it and supports {supported_locust()}"
    )


def _parameters(function: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []


def _uses(function: Any, name: str) -> bool:
    """Whether ``function``'s own code refers to the global or attribute ``name``."""
    return name in getattr(getattr(function, "__code__", None), "co_names", ())


def check_bucket() -> None:
    """Raises :class:`LocustHookError` unless ``locust.stats.bucket_response_time`` is as replaced here."""
    bucket = getattr(locust.stats, "bucket_response_time", None)
    if bucket is None:
        raise failure(BUCKET_HOOK, "does not exist")
    if not callable(bucket) or len(_parameters(bucket)) != 1:
        raise failure(BUCKET_HOOK, "is no longer a function of one response time")
    entry = getattr(locust.stats, "StatsEntry", object)
    if not any(_uses(method, "bucket_response_time") for method in vars(entry).values()):
        raise failure(BUCKET_HOOK, "is no longer what StatsEntry rounds response times with")


def check_sleep() -> None:
    """Raises :class:`LocustHookError` unless ``TaskSet._sleep`` is as replaced here."""
    sleep = getattr(TaskSet, "_sleep", None)
    if sleep is None:
        raise failure(SLEEP_HOOK, "does not exist")
    if not callable(sleep) or _parameters(sleep) != ["self", "seconds"]:
        raise failure(SLEEP_HOOK, "is no longer a method taking (self, seconds)")
    if not _uses(getattr(TaskSet, "wait", None), "_sleep"):
        raise failure(SLEEP_HOOK, "is no longer what TaskSet.wait sleeps with")
    if not _uses(getattr(User, "run", None), "_taskset_instance"):
        raise failure(SLEEP_HOOK, "is no longer reached through User._taskset_instance")


def check_stop() -> None:
    """Raises :class:`LocustHookError` unless ``User.stop`` is as extended here."""
    states = importlib.import_module("locust.user.task")
    for state in ("LOCUST_STATE_STOPPING", "LOCUST_STATE_WAITING", "LOCUST_STATE_RUNNING"):
        if getattr(states, state, None) is None:
            raise failure(STOP_HOOK, f"has no {state} in locust.user.task to set a user's _state with")
    stop = getattr(User, "stop", None)
    if not callable(stop) or _parameters(stop) != ["self", "force"]:
        raise failure(STOP_HOOK, "is no longer a method taking (self, force)")
    if not (_uses(stop, "_state") and _uses(stop, "LOCUST_STATE_STOPPING")):
        raise failure(STOP_HOOK, "no longer asks a running user to stop after its task (_state)")
    if not _uses(stop, "LOCUST_STATE_WAITING"):
        raise failure(STOP_HOOK, "no longer ends a waiting user at once (LOCUST_STATE_WAITING)")
    if not _uses(getattr(TaskSet, "run", None), "LOCUST_STATE_STOPPING"):
        raise failure(STOP_HOOK, "is no longer what TaskSet.run stops a user after its task for")


def check_csv() -> None:
    """Raises :class:`LocustHookError` unless ``StatsCSVFileWriter`` writes its files as extended here."""
    writer = getattr(locust.stats, "StatsCSVFileWriter", None)
    if writer is None:
        raise failure(CSV_HOOK, "does not exist")
    close = getattr(writer, "close_files", None)
    if not callable(close) or _parameters(close) != ["self"]:
        raise failure(CSV_HOOK, "is no longer a method taking (self)")
    init, loop = getattr(writer, "__init__", None), getattr(writer, "stats_writer", None)
    if not callable(loop) or _parameters(loop) != ["self"]:
        raise failure(CSV_HOOK, "has no stats_writer(self) loop to stop before the files close")
    for handle, csv_writer, columns, rows in _CSV_FILES:
        if not (_uses(init, handle) and _uses(init, csv_writer) and _uses(loop, rows)):
            raise failure(CSV_HOOK, f"no longer writes {handle} with {rows}")
        if not callable(getattr(writer, rows, None)):
            raise failure(CSV_HOOK, f"has no {rows} to write {handle} with")
        if not _uses(loop, columns):
            raise failure(CSV_HOOK, f"no longer heads {handle} with {columns}")


def check_quit() -> None:
    """Raises :class:`LocustHookError` unless ``MasterRunner.quit`` is as replaced here."""
    quit = getattr(MasterRunner, "quit", None)
    if not callable(quit) or _parameters(quit) != ["self"]:
        raise failure(QUIT_HOOK, "is no longer a method taking (self)")
    if not (_uses(quit, "send_to_client") and _uses(quit, "greenlet")):
        raise failure(QUIT_HOOK, "no longer sends each worker quit and then kills the runner's greenlets")
    stop = getattr(MasterRunner, "stop", None)
    if not callable(stop) or "send_stop_to_client" not in _parameters(stop):
        raise failure(QUIT_HOOK, "can no longer stop the run without telling the workers (send_stop_to_client)")
    if not _uses(getattr(MasterRunner, "client_listener", None), "clients"):
        raise failure(QUIT_HOOK, "no longer learns from the workers' messages which of them have quit")


def _write_final_rows(writer: Any) -> None:
    """Rewrites each file the way the writer's loop does, with the statistics as they are now."""
    for handle_name, writer_name, columns, rows in _CSV_FILES:
        handle, csv_writer = getattr(writer, handle_name), getattr(writer, writer_name)
        if handle.closed:
            continue
        handle.seek(0)
        csv_writer.writerow(getattr(writer, columns))
        getattr(writer, rows)(csv_writer)
        handle.truncate()


def install_final_csv() -> None:
    """Makes ``StatsCSVFileWriter.close_files`` stop the writer's loop, then write the final rows before it
    closes the files (once).

    Locust closes the files as it shuts down but leaves the loop's greenlet running, and a master of
    ``--processes`` then waits for its workers to exit (an ``atexit`` handler that yields): the loop's next
    pass, a second later, failed on the closed files with a traceback. The loop notes its greenlet as it
    starts, for ``close_files`` to stop it."""
    check_csv()
    writer = locust.stats.StatsCSVFileWriter
    original = writer.close_files
    if getattr(original, "_writes_final_rows", False):
        return
    loop = writer.stats_writer

    def stats_writer(self: Any) -> None:
        self._loop_greenlet = gevent.getcurrent()
        loop(self)

    def close_files(self: Any) -> None:
        running = getattr(self, "_loop_greenlet", None)
        if running is not None and running is not gevent.getcurrent():
            running.kill(block=True)  # between two passes: it only ever yields in its sleep
        try:
            _write_final_rows(self)
        finally:
            original(self)

    close_files._writes_final_rows = True  # type: ignore[attr-defined]
    writer.stats_writer = stats_writer  # type: ignore[method-assign]
    writer.close_files = close_files  # type: ignore[method-assign]


def check() -> None:
    """Every check: raises :class:`LocustHookError` naming the first hook that is not as expected."""
    check_bucket()
    check_sleep()
    check_stop()
    check_csv()
    check_quit()
