"""The master's reads of Triton's statistics (at the test's start, and again at --reset-stats) leave Locust's
greenlet loop running: a server that accepts the connection and never answers must not hold the loop for
the read's 10 s timeout, or a master stops reading its workers' heartbeats and counts them missing.

A real Triton cannot be made to keep silent on cue; the server here accepts the connection, takes the
request and answers nothing (it runs in an OS thread of the Locust process, on the sockets and threads
gevent left unpatched). A probe greenlet counts its turns while the server holds that connection, and
lets the server close it after PROBE_RUNS turns. While the read blocks the loop, the probe gets no turn;
the read then ends only with its own timeout, and the probe has counted none. In a subprocess: importing
Locust monkey-patches the process (gevent).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.runs import IMAGE, clean_env

PROBE_RUNS = 5

SCRIPT = """\
import json, socket, sys, time

import gevent
from gevent import monkey
from locust import User, task
from locust.env import Environment

from locust_inference.latency import install
from locust_inference.options import Settings

listener, image, probe_runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
RealSocket = monkey.get_original("socket", "socket")
start_thread = monkey.get_original("_thread", "start_new_thread")

silent = RealSocket()
silent.bind(("127.0.0.1", 0))
silent.listen()
server = {"held": False, "accepted": 0, "release": False, "client_gave_up": False, "done": False, "error": None}


def serve():  # one connection: take the request, answer nothing, until released or the client gives up
    try:
        conn, _ = silent.accept()
        server["accepted"] += 1
        conn.settimeout(0.01)
        server["held"] = True
        while not server["release"]:
            try:
                if conn.recv(65536) == b"":
                    server["client_gave_up"] = True
                    break
            except TimeoutError:
                pass
        if not server["client_gave_up"]:  # released: had the client closed its end before that?
            conn.setblocking(False)
            try:
                server["client_gave_up"] = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                pass
        server["held"] = False
        conn.close()
    except Exception as error:
        server["error"] = repr(error)
    finally:
        server["done"] = True


start_thread(serve, ())
probe = {"runs_while_held": 0}


def count_turns():
    while probe["runs_while_held"] < probe_runs:
        gevent.sleep(0.005)
        if server["held"]:
            probe["runs_while_held"] += 1
    server["release"] = True


class Idle(User):
    @task
    def nothing(self):
        pass


free = RealSocket()
free.bind(("127.0.0.1", 0))
master_port = free.getsockname()[1]
free.close()
env = Environment(user_classes=[Idle])
env.create_master_runner("127.0.0.1", master_port)
settings = Settings(server="triton", model="m", host=f"http://127.0.0.1:{silent.getsockname()[1]}", image=image)
collector = install(env, settings, None)
gevent.spawn(count_turns)
gevent.sleep(0)  # the probe is waiting for its first turn
if listener == "test_start":
    env.events.test_start.fire(environment=env)
else:  # a --reset-stats run once all users are spawned
    env.reset_stats = True
    env.events.spawning_complete.fire(user_count=1)
# Users (or a master's spawn messages) start once the listener returns: the snapshot was taken by then.
read_ended_with_listener = collector.stats_at_start is not None and collector.stats_at_start.ready()
end = time.monotonic() + 60  # a guard against a hang, not a measurement
while not server["done"] and time.monotonic() < end:
    gevent.sleep(0.01)
read = collector.stats_at_start
print(json.dumps({
    **probe, **server, "read_started": read is not None, "read_result": repr(read.get() if read else "no read"),
    "read_ended_with_listener": read_ended_with_listener,
}))
env.runner.quit()
"""


@pytest.mark.parametrize("listener", ["test_start", "reset_stats"])
def test_a_silent_statistics_server_does_not_hold_the_master_loop(listener: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, listener, str(IMAGE), str(PROBE_RUNS)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["done"] and result["error"] is None, result
    assert result["accepted"] == 1, result  # the read did reach the silent server
    assert result["runs_while_held"] == PROBE_RUNS, result  # the loop ran while the read waited
    assert result["client_gave_up"] is False, result  # the read still waited when the probe released the server
    assert result["read_result"] == "None", result  # closed without an answer: no statistics
    assert result["read_ended_with_listener"] is True, result  # before any request it is subtracted from
