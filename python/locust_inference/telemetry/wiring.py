"""The server-metrics monitor wired into Locust's events: the master (or the one local process) reads, a
worker samples its CPU and sends it with its reports. Importing this module adds the options to Locust's
parser and checks them at init."""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from locust_inference._native import ConfigError, Measurements
from locust_inference.options import Settings
from locust_inference.telemetry import health as health_module
from locust_inference.telemetry.health import CpuSampler, HealthError, decode_report
from locust_inference.telemetry.monitor import (
    MetricsSettings,
    Monitor,
    ProcessReader,
    add_arguments,
    read_once,
    resolve,
)

__all__ = ["install"]

log = logging.getLogger("locust_inference")


def install(
    environment: Environment,
    settings: Settings,
    *,
    poll: Callable[[], None] | None,
    take_lag: Callable[[], Measurements],
) -> Monitor | None:
    """Wires the reads into Locust's events; a worker only samples its CPU and sends it with its reports.
    Returns the master's (or local process's) monitor. Raises ConfigError for bad options. Install it after
    the collector's listeners: Locust calls ``quitting``'s in reverse, and the last read must precede the
    results written there."""
    runner = environment.runner
    local = not isinstance(runner, WorkerRunner)
    metrics = resolve(environment.parsed_options, settings.server, settings.host, local)
    events_ = environment.events
    if not local:
        _install_worker(environment, metrics)
        return None
    process = ProcessReader(metrics.server_pid) if metrics.server_pid is not None else None
    timeout = min(10.0, max(1.0, 2 * metrics.interval_s))
    monitor = Monitor(
        metrics,
        settings.model,
        reader=lambda: read_once(metrics.url, timeout, process, settings),
        take_lag=take_lag,
        poll=poll,
        process_name="master" if isinstance(runner, MasterRunner) else "local",
    )
    if isinstance(runner, MasterRunner):
        warned: set[str] = set()

        @events_.worker_report.add_listener
        def _health(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
            if not isinstance(data, dict) or health_module.REPORT_KEY not in data:
                return
            who = str(client_id)[:80]
            try:
                samples = decode_report(data[health_module.REPORT_KEY], time.time())
            except HealthError as err:
                if who not in warned:
                    warned.add(who)
                    log.warning("refused the health samples from worker %.80r: %s", who, err)
                return
            if not monitor.health.add(who, samples) and who not in warned:
                warned.add(who)
                log.warning("refused the health samples from worker %.80r: too many workers", who)

    @events_.test_start.add_listener
    def _start(**_kw: Any) -> None:
        if monitor._loop is None:
            monitor.start()

    @events_.spawning_complete.add_listener
    def _reset(**_kw: Any) -> None:
        if environment.reset_stats and monitor._loop is not None:
            monitor.restart()  # as the collector restarts: the windows cover what latency.json does

    # The last read as the test stops: a web UI keeps the process up after it, and what the tab shows then
    # must be what latency.json gets at quit. At quit too, for a run that quits without a stop.
    @events_.test_stop.add_listener
    @events_.quitting.add_listener
    def _stop(**_kw: Any) -> None:
        if monitor._loop is not None:
            monitor.finish()

    return monitor


def _install_worker(environment: Environment, metrics: MetricsSettings) -> None:
    """A worker samples its CPU every interval and sends the samples with its next report."""
    sampler = CpuSampler()
    pending: deque[tuple[float, float, float]] = deque(maxlen=health_module.MAX_REPORT_SAMPLES)

    def sample() -> None:
        sampler.sample()
        while True:
            gevent.sleep(metrics.interval_s)
            reading = sampler.sample()
            if reading is not None:
                pending.append(reading)

    loop = gevent.spawn(sample)

    @environment.events.report_to_master.add_listener
    def _report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        now = time.time()
        data[health_module.REPORT_KEY] = [[max(0.0, now - t), p, q] for t, p, q in pending]
        pending.clear()

    @environment.events.quitting.add_listener
    def _stop(**_kw: Any) -> None:
        loop.kill(block=False)


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    add_arguments(parser)


@events.init.add_listener
def _check(environment: Environment, **_kwargs: Any) -> None:
    """Bad metrics options stop the start in one line, exit status 2, before anything contacts the server
    (registered on import, before the users' own init listener)."""
    options = environment.parsed_options
    if options is None:
        return
    server = str(getattr(options, "server", None) or "triton")
    host = str(getattr(options, "host", None) or environment.host or "http://127.0.0.1")
    try:
        resolve(options, server, host, _is_local(environment))
    except ConfigError as err:
        log.error("locust-inference: %s", err)
        sys.stderr.write(f"locust-inference: {err}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None


def _is_local(environment: Environment) -> bool:
    return not isinstance(environment.runner, WorkerRunner)
