"""A master's results hold every worker's final report, however long after ``quit`` it comes.

At the end a master sends each worker ``quit``; the worker stops its users and only then sends its final
report (what they did since its previous one, up to 3 s of requests), then its own ``quit``. Locust's master
waited a fixed 0.5 s for those reports before it stopped listening: on a loaded machine a worker took longer,
and its last seconds were missing from latency.json while the server had answered them (the multi-host open
loop test saw Triton count 1002 requests, the master 742 sent).

The sequence replayed: a real Locust master (its own ZMQ socket, with locust-inference's collector and its
quit) and a worker speaking Locust's protocol by hand, so that its final report leaves LATE_S after the
master's ``quit``, later than Locust's 0.5 s. In a subprocess: importing Locust monkey-patches the process
(gevent).
"""

from __future__ import annotations

import json
import subprocess
import sys

from support.runs import IMAGE, clean_env

LATE_S = 2.0  # how long after the master's quit the worker's final report leaves (Locust waited 0.5 s)
REQUESTS = 37  # in the final report

SCRIPT = """\
import json, sys, time

import gevent
from locust import User, __version__, task
from locust.env import Environment
from locust.rpc import Message, zmqrpc
from locust.stats import RequestStats

from locust_inference import LatencyHistogram, Measurements, distributed
from locust_inference.latency import REPORT_KEY, RESETS_KEY, install
from locust_inference.options import Settings
from servers.launch import free_port

late_s, requests, image = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
NAME = "triton/m"
WORKER = "worker-host_" + "0" * 32


class Idle(User):
    @task
    def nothing(self):
        pass


port = free_port()
env = Environment(user_classes=[Idle], stop_timeout=0)
env.create_master_runner("127.0.0.1", port)
collector = install(env, Settings(server="triton", model="m", host="http://127.0.0.1:9", image=image), None)
distributed.wait_for_final_reports(env)

worker = zmqrpc.Client("127.0.0.1", port, WORKER)
worker.send(Message("client_ready", __version__, WORKER))
end = time.monotonic() + 30  # a guard against a hang, not a measurement
while WORKER not in env.runner.clients and time.monotonic() < end:
    gevent.sleep(0.01)
assert WORKER in env.runner.clients, "the master never saw the worker"


def final_report():
    # what a worker's report holds: Locust's statistics and locust-inference's measurements
    stats, total = RequestStats(), LatencyHistogram()
    for _ in range(requests):
        stats.log_request("infer", NAME, 5.0, 100)
        total.record(5.0)
    measured = Measurements.from_histograms(total, total, total, LatencyHistogram())
    return {
        "stats": stats.serialize_stats(),
        "stats_total": stats.total.get_stripped_report(),
        "errors": stats.serialize_errors(),
        "user_classes_count": {},
        "user_count": 0,
        REPORT_KEY: {NAME: measured.to_bytes()},
        RESETS_KEY: 0,
    }


timeline = {}


def run_worker():
    while (msg := worker.recv()).type != "quit":
        pass
    timeline["quit_received"] = time.monotonic()
    gevent.sleep(late_s)  # its users take this long to stop
    worker.send(Message("stats", final_report(), WORKER))
    worker.send(Message("quit", None, WORKER))
    timeline["report_sent"] = time.monotonic()


worker_greenlet = gevent.spawn(run_worker)
timeline["quit_called"] = time.monotonic()
env.runner.quit()  # as the --run-time limit does
timeline["quit_returned"] = time.monotonic()
worker_greenlet.join(timeout=30)
env.runner.quit()  # as the process's exit does: returns at once
measured = collector.measured.get(NAME)
print(json.dumps({
    "locust": env.stats.total.num_requests,
    "latency": measured.total.count if measured else 0,
    "worker_left": WORKER in env.runner.clients,
    "report_sent_before_quit_returned": timeline.get("report_sent", float("inf")) <= timeline["quit_returned"],
}))
worker.close()
"""


def test_a_final_report_sent_well_after_quit_is_in_the_results() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(LATE_S), str(REQUESTS), str(IMAGE)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["report_sent_before_quit_returned"] is True, result  # the quit waited for the worker
    assert result["worker_left"] is False, result  # its quit message arrived
    assert result["locust"] == REQUESTS, result  # Locust's statistics have the final report
    assert result["latency"] == REQUESTS, result  # and so do locust-inference's (latency.json)
