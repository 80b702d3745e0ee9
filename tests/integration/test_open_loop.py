"""Open-loop users (LowUser) end to end: the real locustfile, run headless by Locust, against the real
reference Triton. Bounds follow from the schedule and the server (sleep_20ms takes at least 20 ms a
request), never from how fast this machine is.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from locust_inference import results_schema
from support.runs import REPO_ROOT, assert_clean_failure, clean_env, run_distributed, run_locust

from servers.launch import RunningServer

STALL_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "stall.py"


def open_loop_run(tmp_path: Path, url: str, model: str, *args: str, run_time: str = "5s") -> dict[str, Any]:
    """Runs LowUser with `args`; returns the request entry of latency.json (and checks the run went well)."""
    run = run_locust(
        tmp_path, "--host", url, "LowUser", *args, env=clean_env(SERVER="triton", MODEL_NAME=model), run_time=run_time
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((run.csv_prefix.parent / "latency.json").read_text())
    entry = dict(summary["requests"][f"triton/{model}"])  # a copy: the document stays as written
    entry["locust_requests"] = int(run.stats(f"triton/{model}")["Request Count"])
    entry["stdout"] = run.stdout
    entry["server_stats"] = summary["server_stats"]
    entry["document"] = summary
    return entry


@pytest.fixture(scope="module")
def sustained(triton, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """100 requests/s of tiny_onnx, which it answers in a few ms: well within its capacity."""
    return open_loop_run(
        tmp_path_factory.mktemp("sustained"), triton.url, "tiny_onnx", "--rate", "100", "--max-in-flight", "16"
    )


def keys(typed_dict: Any) -> set[str]:
    return set(typed_dict.__required_keys__ | typed_dict.__optional_keys__)


def test_latency_json_is_written_as_its_schema_says(sustained: dict[str, Any]) -> None:
    # the report, --check, the demo and the bench read these keys by the schema's names
    document = sustained["document"]
    assert set(document) == keys(results_schema.LatencyDocument) and document["version"] == results_schema.VERSION
    (entry,) = document["requests"].values()
    assert set(entry) == keys(results_schema.RequestEntry)
    assert set(entry["open_loop"]) == keys(results_schema.OpenLoop)
    assert set(document["locust"]) == keys(results_schema.LocustNumbers)
    assert {name for name, _ in results_schema.histograms(entry)} == {"latency", "ttfb", "service"}
    for _, percentiles in results_schema.histograms(entry):
        assert tuple(percentiles) == results_schema.SUMMARY_KEYS


def test_a_sustained_rate_is_achieved(sustained: dict[str, Any]) -> None:
    ol = sustained["open_loop"]
    assert ol["dropped"] == 0 and abs(ol["achieved_per_s"] - 100) <= 1, ol


def test_every_scheduled_request_is_accounted_for(sustained: dict[str, Any]) -> None:
    ol = sustained["open_loop"]
    assert ol["scheduled"] == ol["completed"] + ol["dropped"] + ol["unfinished"], ol


def test_locust_and_latency_json_count_the_same_requests(sustained: dict[str, Any]) -> None:
    # Locust writes its CSV once a second, so its count may lack the last partial second
    ol = sustained["open_loop"]
    assert sustained["count"] == ol["completed"] >= sustained["locust_requests"] > 0, (sustained["count"], ol)


def test_the_server_saw_between_what_was_answered_and_what_was_sent(sustained: dict[str, Any]) -> None:
    # Triton's own count over the run: every answered request, and at most the ones sent (a request
    # abandoned in flight at the stop may or may not have run by the time the statistics are read).
    ol, served = sustained["open_loop"], sustained["server_stats"]["inference_count"]
    assert ol["completed"] <= served <= ol["sent"], (ol, served)


def test_summary_shows_the_open_loop_numbers(sustained: dict[str, Any]) -> None:
    assert "Open loop, triton/tiny_onnx: offered 100 req/s (1 streams), achieved" in sustained["stdout"]


def test_service_time_never_exceeds_the_response_time(sustained: dict[str, Any]) -> None:
    latency, service = sustained["latency_ms"], sustained["service_ms"]
    assert all(service[k] <= latency[k] for k in ("min", "p50", "p99", "max")), (latency, service)


def test_drop_counts_the_shortfall(triton, tmp_path: Path) -> None:
    entry = open_loop_run(
        tmp_path, triton.url, "sleep_20ms", "--rate", "100", "--max-in-flight", "1", "--overload", "drop", run_time="3s"
    )
    ol = entry["open_loop"]
    # every request takes >= 20 ms, so the frame due 10 ms after each send finds the slot taken
    assert ol["sent"] + ol["dropped"] == ol["scheduled"] and ol["dropped"] >= ol["sent"] - 1, ol


def test_queue_latency_grows_with_time(triton, tmp_path: Path) -> None:
    entry = open_loop_run(
        tmp_path,
        triton.url,
        "sleep_20ms",
        "--rate",
        "100",
        "--max-in-flight",
        "1",
        "--overload",
        "queue",
        run_time="3s",
    )
    n = entry["open_loop"]["completed"]
    # request k is meant for 10k ms and cannot leave before 20k ms: its latency is >= 10k ms, so the
    # median of n requests is at least 10 ms * n/2 (over a second for 3 s of 50 answers a second)
    assert entry["latency_ms"]["p50"] >= 10 * (n // 2 - 1) and n > 50, (n, entry["latency_ms"])


def stalled_run(triton: RunningServer, tmp_path: Path, *args: str) -> list[float]:
    """LowUser (30/s) for 5 s with the server stopped for 1 s after 1.5 s; every response time (ms)."""
    report = tmp_path / "times.json"
    try:
        run = run_locust(
            tmp_path,
            "--host",
            triton.url,
            "LowUser",
            *args,
            locustfile=STALL_LOCUSTFILE,
            env=clean_env(
                SERVER="triton", MODEL_NAME="tiny_onnx", STALL_PGID=str(triton.pid), STALL_REPORT=str(report)
            ),
            run_time="5s",
        )
    finally:
        os.killpg(triton.pid, signal.SIGCONT)  # whatever happened to the run, the server runs on
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(report.read_text())


def test_a_stall_delays_every_frame_due_during_it_in_open_loop(own_triton: RunningServer, tmp_path: Path) -> None:
    times = stalled_run(own_triton, tmp_path, "--overload", "queue")
    # 30 frames are due during the 1 s stall; those due in its first half wait over 500 ms
    assert sum(t > 500 for t in times) >= 10, sorted(times)[-40:]


def test_a_stall_delays_one_request_in_closed_loop(own_triton: RunningServer, tmp_path: Path) -> None:
    times = stalled_run(own_triton, tmp_path, "--closed-loop")
    # the seed's loop: the request sent within 33 ms of the stop waits it out, nothing is sent meanwhile
    assert sum(t > 500 for t in times) == 1, sorted(times)[-10:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate must be a number from 0.001 to 1,000,000 requests per second"),
        (["--rate", "fast"], "--rate must be a number from"),
        (["--max-in-flight", "0"], "--max-in-flight must be a whole number from 1 to 100,000"),
        (["--arrival", "burst"], "--arrival must be constant or poisson"),
        (["--overload", "block"], "--overload must be drop or queue"),
        (["--seed", "-1"], "--seed must be a whole number from 0 to 18,446,744,073,709,551,615"),
    ],
)
def test_bad_open_loop_options(tmp_path: Path, args: list[str], message: str) -> None:
    run = run_locust(tmp_path, *args, env=clean_env(SERVER="triton", MODEL_NAME="m"))
    assert_clean_failure(run, message)


def test_distributed_offered_rate_is_users_times_rate_and_counts_merge(triton, tmp_path: Path) -> None:
    proc, results = run_distributed(tmp_path, triton.url, workers=2, users=4, class_name="LowUser")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((results / "latency.json").read_text())
    entry = result["requests"]["triton/tiny_onnx"]
    ol = entry["open_loop"]
    # 4 users at LowUser's 30/s across both workers; the master holds every worker's counts
    assert (ol["offered_rate_per_s"], ol["streams"], ol["scheduled"]) == (
        120.0,
        4,
        ol["completed"] + ol["dropped"] + ol["unfinished"],
    ) and ol["completed"] == result["locust"]["requests"], (ol, result["locust"])


def distributed_overload(triton: RunningServer, tmp_path: Path, overload: str) -> dict[str, Any]:
    """2 workers, one LowUser each at 100/s with one request in flight, on sleep_20ms: more than it can do."""
    extra = f"rate = 100\nmax-in-flight = 1\noverload = {overload}\n"
    proc, results = run_distributed(
        tmp_path, triton.url, workers=2, users=2, class_name="LowUser", model="sleep_20ms", run_time="3s", extra=extra
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads((results / "latency.json").read_text())["requests"]["triton/sleep_20ms"]
    assert (entry["open_loop"]["streams"], entry["open_loop"]["offered_rate_per_s"]) == (2, 200.0), entry
    return entry


def test_drop_counts_the_shortfall_with_two_workers(triton, tmp_path: Path) -> None:
    ol = distributed_overload(triton, tmp_path, "drop")["open_loop"]
    # per stream, the frame due 10 ms after each send finds the slot taken: dropped >= sent - 1 on each
    assert ol["sent"] + ol["dropped"] == ol["scheduled"] and ol["dropped"] >= ol["sent"] - 2, ol


def test_queue_latency_grows_with_time_with_two_workers(triton, tmp_path: Path) -> None:
    entry = distributed_overload(triton, tmp_path, "queue")
    ol, n = entry["open_loop"], entry["open_loop"]["completed"]
    # on each stream request k is meant for 10k ms and cannot leave before 20k ms, so at most 2m of all
    # latencies are under 10m ms: the median of n is at least 10 ms * (n/4 - 1)
    assert ol["dropped"] == 0 and n > 50, ol
    assert entry["latency_ms"]["p50"] >= 10 * (n // 4 - 1), (n, entry["latency_ms"])
