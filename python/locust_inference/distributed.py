"""The master's side of a distributed run, wherever its workers live.

* **Secrets stay home.** Locust's master puts every parsed option, ours included, in clear text into the
  ``spawn`` message it sends each worker (``MasterRunner.start``), and its port has no authentication.
  The master resolves its own settings at start (it may need the headers to read Triton's statistics),
  then blanks the options that carry secrets in its parsed options, so they are never sent. Each worker
  resolves its settings from its own command line, config file and environment at its own start, before
  any spawn message arrives: its headers are its own.
* **A worker that goes missing stops the run.** Locust marks a worker ``missing`` when its heartbeats stop
  (about 3 s) and carries on with the rest; the requests that worker made since its last report would then
  be missing from the results without a word. The master says which worker (and host) went missing in one
  line and ends the run with exit status 1, as ``distributed.sh`` does for a worker on its own machine.
  Besides Locust's mark, the master keeps its own clock of each worker's last heartbeat: a worker silent
  for :data:`SILENT_S` counts as missing too, whatever state Locust's bookkeeping shows.
* **The results wait for every worker's last report.** At the end Locust's master sends each worker
  ``quit`` and waits a fixed 0.5 s for their final reports before it stops listening; a worker is told to
  quit, stops its users, and only then sends what they did since its previous report (up to 3 s of
  requests). A worker slower than 0.5 s to get there (a loaded machine, a user finishing its request
  within ``--stop-timeout``) had its last seconds missing from the results without a word, while the
  server had answered them. The master waits instead until each worker has quit (Locust's ``quit``
  message, sent after the final report on the same connection), for at most ``--stop-timeout`` plus
  :data:`FINAL_REPORT_SLACK_S`; a worker Locust marks missing is not waited for, and one that has not
  quit by then is named in one line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import gevent
from locust.env import Environment
from locust.rpc import Message
from locust.runners import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    STATE_MISSING,
    STATE_RUNNING,
    STATE_SPAWNING,
    MasterRunner,
)

from locust_inference import hooks

__all__ = [
    "FINAL_REPORT_SLACK_S",
    "SECRET_OPTIONS",
    "keep_secrets_home",
    "stop_when_a_worker_goes_missing",
    "wait_for_final_reports",
]

log = logging.getLogger("locust_inference")
SECRET_OPTIONS = ("header", "header_file")  # dests of the options that carry or point to secrets
POLL_S = 0.5
SILENT_S = HEARTBEAT_LIVENESS * HEARTBEAT_INTERVAL + 2.0  # Locust's own limit (3 s), and 2 s of slack
# How much longer than --stop-timeout (the longest a worker's users may take to stop) the master waits for
# the workers' final reports at the end. A worker that stopped heartbeating is marked missing by Locust
# within HEARTBEAT_LIVENESS s and not waited for; this bounds the wait for one that still beats.
FINAL_REPORT_SLACK_S = 10.0
QUIT_POLL_S = 0.02


def keep_secrets_home(environment: Environment) -> None:
    """Blanks the secret-carrying options in the master's parsed options (call after resolving them)."""
    parsed = environment.parsed_options
    if parsed is None:
        return
    for name in SECRET_OPTIONS:
        if getattr(parsed, name, None):
            setattr(parsed, name, None)


def worker_host(client_id: str) -> str:
    """The host part of a Locust worker id (``<hostname>_<32 hex digits>``)."""
    host, sep, suffix = client_id.rpartition("_")
    return host if sep and len(suffix) == 32 else client_id


def missing_message(client_ids: list[str]) -> str:
    """The line naming the hosts, then the workers, that went missing."""
    hosts = sorted({worker_host(cid) for cid in client_ids})
    return (
        f"worker host{'s' if len(hosts) > 1 else ''} {', '.join(hosts)} stopped sending heartbeats "
        f"(down or unreachable; worker{'s' if len(client_ids) > 1 else ''} {', '.join(sorted(client_ids))}); "
        "stopping the run: what they did since their last report is not in the results"
    )


def stop_when_a_worker_goes_missing(environment: Environment) -> None:
    """Watches the master's workers while a test runs; the first one missing ends the run."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return

    last_heard: dict[str, float] = {}  # worker id -> time.monotonic() of its last heartbeat

    @environment.events.heartbeat_sent.add_listener
    def _heard(client_id: str, **_kw: Any) -> None:
        last_heard[client_id] = time.monotonic()

    def watch() -> None:
        while True:
            gevent.sleep(POLL_S)
            if runner.state not in (STATE_RUNNING, STATE_SPAWNING):
                continue
            now = time.monotonic()
            missing = [
                c.id
                for c in runner.clients.all
                if c.state == STATE_MISSING or now - last_heard.get(c.id, now) > SILENT_S
            ]
            if missing:
                break
        message = missing_message(missing)
        log.error("locust-inference: %s", message)
        sys.stderr.write(f"locust-inference: {message}\n")
        sys.stderr.flush()
        environment.process_exit_code = 1
        runner.quit()

    # Not in the runner's own greenlet group: runner.quit() kills that group.
    watcher = gevent.spawn(watch)

    @environment.events.quitting.add_listener
    def _stop_watching(**_kw: Any) -> None:
        if watcher is not gevent.getcurrent():
            watcher.kill(block=False)


def not_quit_message(client_ids: list[str], waited_s: float) -> str:
    """The line naming the workers whose final report did not arrive."""
    return (
        f"worker{'s' if len(client_ids) > 1 else ''} {', '.join(sorted(client_ids))} had not quit {waited_s:g} s "
        "after being told to: what they did since their last report is not in the results"
    )


def wait_for_final_reports(environment: Environment) -> None:
    """Makes the master's ``quit`` wait for each worker's final report rather than Locust's fixed 0.5 s.

    The same steps as Locust's ``MasterRunner.quit`` (checked by :func:`hooks.check_quit`): stop without
    telling the workers, send each ``quit``, then kill the runner's greenlets, its listener among them. In
    between, the listener runs on until every worker told to quit has quit or is missing, or the time is
    up. Locust calls ``quit`` again as the last worker quits, and once more as the process exits: those
    calls return at once, the first one ends the wait."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return
    hooks.check_quit()
    quitting = False

    def quit() -> None:
        nonlocal quitting
        if quitting:
            return
        quitting = True
        runner.stop(send_stop_to_client=False)
        told = [client.id for client in runner.clients.all]
        for client_id in told:
            runner.server.send_to_client(Message("quit", None, client_id))
        limit = (environment.stop_timeout or 0.0) + FINAL_REPORT_SLACK_S
        deadline = time.monotonic() + limit
        try:
            while True:
                left = [c for c in told if (node := runner.clients.get(c)) is not None and node.state != STATE_MISSING]
                if not left:
                    break
                if time.monotonic() >= deadline:
                    message = not_quit_message(left, limit)
                    log.warning("locust-inference: %s", message)
                    sys.stderr.write(f"locust-inference: {message}\n")
                    sys.stderr.flush()
                    break
                gevent.sleep(QUIT_POLL_S)
        finally:
            runner.greenlet.kill(block=True)

    runner.quit = quit  # type: ignore[method-assign]
