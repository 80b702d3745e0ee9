"""The open-loop identity, carried + scheduled = dropped + completed + unfinished (+ pending while streams
run), across a reset (the API, --reset-stats, workers merged by a master) and whatever a request listener
does with the batch it is reported in. Against the real reference Triton: sleep_20ms takes at least 20 ms a
request, so one request in flight serves at most 50 of 100 requests/s and a queued stream builds a backlog.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from locust_inference import Measurements, Stream
from support.endpoints import triton_endpoint
from support.runs import REPO_ROOT, clean_env, run_distributed, run_locust

LISTENER_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "listener_stops.py"
RESET_RACE_PROBE = REPO_ROOT / "tests" / "support" / "reset_race_probe.py"


def identity(c: dict[str, Any]) -> tuple[int, int]:
    """Both sides of the identity (pending is 0 once every stream stopped)."""
    return c["carried"] + c["scheduled"], c["dropped"] + c["completed"] + c["unfinished"]


def report_for(stream: Stream, batches: int) -> int:
    """Takes and records `batches` batches of completions (as OpenLoopUser does); how many it recorded."""
    recorded = 0
    for _ in range(batches):
        for completion in stream.wait(timeout=5.0):
            stream.record(completion)
            recorded += 1
    return recorded


def test_a_reset_carries_the_backlog_over(triton) -> None:
    endpoint = triton_endpoint(triton.url, "sleep_20ms")
    stream = Stream(endpoint, 100.0, max_in_flight=1, overload="queue")
    report_for(stream, 20)
    endpoint.take()  # what a report before the reset took
    report_for(stream, 5)
    endpoint.reset()
    c = stream.counts()
    backlog_at_reset = c["scheduled"] - c["dropped"] - c["reported"]  # at least; the stream runs on
    after = Measurements()
    reported_after = report_for(stream, 10)
    after.add(endpoint.take())  # a report after the reset
    reported_after += report_for(stream, 10)
    stream.stop()
    after.add(endpoint.take())  # the last report
    counts = after.streams
    # answers reported after the reset are the completed ones, and the backlog at the reset ended after it
    assert (identity(counts)[0], counts["completed"]) == (identity(counts)[1], reported_after), counts
    assert counts["carried"] >= backlog_at_reset > 0 and counts["dropped"] == 0, (counts, backlog_at_reset)


def test_a_completion_taken_and_never_recorded_is_unfinished(triton) -> None:
    endpoint = triton_endpoint(triton.url, "sleep_20ms")
    stream = Stream(endpoint, 100.0, max_in_flight=1, overload="queue")
    batch: list = []
    while len(batch) < 4:
        batch += stream.wait(timeout=5.0)
    recorded = batch[: len(batch) // 2]
    for completion in recorded:
        stream.record(completion)
    with pytest.raises(ValueError, match="already recorded"):
        stream.record(recorded[0])
    unfinished = stream.stop()
    with pytest.raises(ValueError, match="the stream stopped"):
        stream.record(batch[-1])  # counted as unfinished by the stop: never completed as well
    counts = endpoint.take().streams
    c = stream.counts()
    assert (counts["completed"], c["reported"], c["delivered"]) == (len(recorded), len(recorded), len(batch)), c
    assert identity(counts) == (c["scheduled"], c["scheduled"]) and counts["unfinished"] == unfinished, counts


def test_a_completion_of_another_stream_is_refused(triton) -> None:
    endpoint = triton_endpoint(triton.url, "sleep_20ms")
    one, other = (Stream(endpoint, 50.0, max_in_flight=1, overload="queue") for _ in range(2))
    taken: list = []
    while not taken:
        taken = one.wait(timeout=5.0)
    with pytest.raises(ValueError, match="not one of this stream's"):
        other.record(taken[0])
    one.stop()
    other.stop()
    counts = endpoint.take().streams
    assert (counts["completed"], identity(counts)[0]) == (0, identity(counts)[1]), counts


def locust_result(folder: Path, name: str = "triton/sleep_20ms") -> tuple[dict[str, Any], dict[str, Any]]:
    summary = json.loads((folder / "latency.json").read_text())
    return summary["requests"][name], summary["locust"]


def test_reset_stats_with_users_spawning_over_time_keeps_the_identity(triton, tmp_path: Path) -> None:
    # 3 queued users spawned at 1/s: the first streams hold a backlog at the reset, at 2 s
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--reset-stats",
        "-r",
        "1",
        "--rate",
        "100",
        "--max-in-flight",
        "1",
        "--overload",
        "queue",
        "LowUser",
        users=3,
        run_time="5s",
        env=clean_env(SERVER="triton", MODEL_NAME="sleep_20ms"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    entry, locust = locust_result(run.csv_prefix.parent)
    ol = entry["open_loop"]
    assert (identity(ol)[0], ol["pending"], ol["completed"]) == (identity(ol)[1], 0, locust["requests"]), ol
    assert ol["carried"] > 0 and ol["streams"] == 3, ol
    assert f"scheduled {ol['scheduled']} + carried {ol['carried']} = dropped 0 + completed" in run.stdout


def test_a_master_forgets_a_worker_report_sent_before_the_workers_reset(triton) -> None:
    probe = subprocess.run(
        [sys.executable, str(RESET_RACE_PROBE), triton.url],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0 and "Traceback" not in probe.stderr, probe.stderr[-3000:]
    ol = json.loads(probe.stdout.splitlines()[-1])
    assert (identity(ol)[0], ol["pending"]) == (identity(ol)[1], 0), ol
    # the stream only the late report saw start runs on after the reset: counted, with its rate
    assert ol["carried"] > 0 and (ol["streams"], ol["offered_rate_per_s"]) == (2, 110.0), ol


def test_reset_stats_with_two_workers_keeps_the_identity(triton, tmp_path: Path) -> None:
    extra = "rate = 100\nmax-in-flight = 1\noverload = queue\nreset-stats = true\nspawn-rate = 1\n"
    proc, results = run_distributed(
        tmp_path, triton.url, workers=2, users=4, class_name="LowUser", model="sleep_20ms", run_time="6s", extra=extra
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry, _ = locust_result(results)
    ol = entry["open_loop"]
    assert (identity(ol)[0], ol["pending"]) == (identity(ol)[1], 0), ol
    assert ol["carried"] > 0 and ol["streams"] == 4, ol


def listener_run(triton, tmp_path: Path, stop: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Two ListenedUsers (tests/support/locustfiles/listener_stops.py) queued at 100/s on sleep_20ms, one of them
    stopped by `stop` in the middle of a batch: the open-loop counters, Locust's numbers and the probe's."""
    fired = tmp_path / "fired.json"
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--rate",
        "100",
        "--max-in-flight",
        "4",
        "--overload",
        "queue",
        locustfile=LISTENER_LOCUSTFILE,
        users=2,
        run_time="6s",
        env=clean_env(SERVER="triton", MODEL_NAME="sleep_20ms", LISTENER_STOP=stop, LISTENER_OUT=str(fired)),
    )
    # Locust exits with 1 after an exception in a task, which it logs (the user goes on)
    assert run.returncode == (1 if stop == "judge" else 0), (run.returncode, run.stderr[-3000:])
    probe = json.loads(fired.read_text())
    entry, locust = locust_result(run.csv_prefix.parent)
    ol = entry["open_loop"]
    # every answer handed over was reported (its request event fired) or counted unfinished
    assert (identity(ol)[0], ol["pending"], ol["completed"]) == (identity(ol)[1], 0, probe["fired"]), (ol, probe)
    # it raised in the middle of a batch of at least 2, with the batch's rest still to report
    assert probe["raised"] == 1 and probe["left_in_batch"] >= 1, probe
    return ol, locust, probe


@pytest.mark.parametrize("stop", ["StopUser", "StopTest"])
def test_a_listener_stopping_in_a_batch_leaves_the_rest_unfinished(triton, tmp_path: Path, stop: str) -> None:
    _, locust, probe = listener_run(triton, tmp_path, stop)
    # Locust counted every event but the one its stopping listener, which runs before Locust's, cut short
    assert locust["requests"] == probe["fired"] - probe["raised"], (locust, probe)
    # the stopped user took the rest of its batch and never reported it: counted unfinished, not lost
    assert probe["unreported_at_stop"] >= probe["left_in_batch"], probe


def test_a_report_cut_short_by_an_exception_leaves_the_rest_of_the_batch_to_the_next_task(
    triton, tmp_path: Path
) -> None:
    _, locust, probe = listener_run(triton, tmp_path, "judge")
    assert locust["requests"] == probe["fired"], (locust, probe)
    # the answer whose check raised is the only one taken and never reported (counted unfinished at the
    # stop): the rest of its batch was reported by the user's next task
    assert probe["unreported_at_stop"] == probe["raised"], probe
