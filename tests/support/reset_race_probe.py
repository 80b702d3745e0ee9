"""A master's and a worker's locust-inference collectors, in one process, through a reset in the order a
distributed run can take: the master resets (``--reset-stats``) and then tells the workers, so a report a
worker sent before its own reset may arrive after the master's. Prints the master's open-loop view as JSON.

Usage: ``python tests/support/reset_race_probe.py <triton url>`` (Triton serving sleep_20ms). The Environments and
their events are Locust's own; their runners are not started (no sockets): ``latency.install`` only looks at
their class. The worker's endpoint and streams are real, against the real Triton: one runs throughout, the other
starts just before the report that arrives late (a user spawned as the master resets).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import locust  # noqa: F401  # before anything that uses ssl: Locust monkey-patches the standard library
from locust.env import Environment
from locust.event import Events
from locust.runners import MasterRunner, WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the support package
from locust_inference import Stream, latency
from locust_inference.options import Settings

from support.endpoints import triton_endpoint

IMAGE = Path(__file__).resolve().parents[2] / "data" / "img1.jpg"


def runner_shell(runner_class: type) -> Environment:
    environment = Environment(events=Events(), reset_stats=True)
    runner = runner_class.__new__(runner_class)
    runner.greenlet = None  # what Runner.__del__ looks at
    environment.runner = runner
    return environment


def report_for(stream: Stream, batches: int) -> None:
    for _ in range(batches):
        for completion in stream.wait(timeout=5.0):
            stream.record(completion)


def main(url: str) -> None:
    settings = Settings(server="triton", model="sleep_20ms", host=url, image=IMAGE)
    endpoint = triton_endpoint(url, "sleep_20ms")
    worker_env, master_env = runner_shell(WorkerRunner), runner_shell(MasterRunner)
    latency.install(worker_env, settings, endpoint)
    master = latency.install(master_env, settings, None)
    master_env.events.test_start.fire(environment=master_env)

    def report() -> dict[str, Any]:
        data: dict[str, Any] = {}
        worker_env.events.report_to_master.fire(client_id="worker", data=data)
        return data

    def deliver(data: dict[str, Any]) -> None:
        master_env.events.worker_report.fire(client_id="worker", data=data)

    stream = Stream(endpoint, 100.0, max_in_flight=1, overload="queue")
    report_for(stream, 10)
    deliver(report())
    late_user = Stream(endpoint, 10.0, max_in_flight=1, overload="drop")  # the last user spawned: only `late` has it
    report_for(stream, 5)
    late = report()  # sent as the master resets
    master_env.events.spawning_complete.fire(user_count=2)  # the master resets, then tells the workers
    deliver(late)  # arrives after the master's reset: requests from before it, and a stream that runs on
    worker_env.events.spawning_complete.fire(user_count=2)
    report_for(stream, 10)
    deliver(report())
    stream.stop()
    late_user.stop()  # its answers never taken: unfinished
    deliver(report())
    print(json.dumps(master.open_loop(settings.name)))


if __name__ == "__main__":
    main(sys.argv[1])
