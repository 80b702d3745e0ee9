"""End-to-end: the real locustfile, run headless by Locust, against the real reference servers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.runs import COUNTED, COUNTED_GUARD, REPO_ROOT, clean_env, run_locust

CHECKSUM_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "checksum_check.py"
TIMELINE_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "timeline.py"
SCHED_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "sched_probe.py"


@pytest.mark.parametrize("triton_format", ["binary", "json"])
def test_triton_receives_exactly_the_preprocessed_tensor(triton, tmp_path: Path, triton_format: str) -> None:
    report = tmp_path / "checksums.json"
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--keep-body",
        "--triton-format",
        triton_format,
        "HighUser",
        locustfile=CHECKSUM_LOCUSTFILE,
        env=clean_env(SERVER="triton", MODEL_NAME="checksum", CHECKSUM_REPORT=str(report)),
        users=2,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("triton/checksum")
    assert int(stats["Request Count"]) > 0
    assert int(stats["Failure Count"]) == 0, run.failures()
    counts = json.loads(report.read_text())
    assert counts["mismatch"] == 0 and counts["unchecked"] == 0
    # Locust writes its CSV once a second, so the last partial second may be missing from it
    assert counts["match"] >= int(stats["Request Count"])


def test_litserve_receives_exactly_the_preprocessed_tensor(litserve_checksum, tmp_path: Path) -> None:
    report = tmp_path / "checksums.json"
    run = run_locust(
        tmp_path,
        "--host",
        litserve_checksum.url,
        "--keep-body",
        "LowUser",
        locustfile=CHECKSUM_LOCUSTFILE,
        env=clean_env(INFERENCE_SERVER="litserve", MODEL_NAME="checksum", CHECKSUM_REPORT=str(report)),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("litserve/checksum")
    assert int(stats["Request Count"]) > 0
    assert int(stats["Failure Count"]) == 0, run.failures()
    counts = json.loads(report.read_text())
    assert counts["mismatch"] == 0 and counts["unchecked"] == 0
    assert counts["match"] >= int(stats["Request Count"])


def test_closed_loop_low_user_paces_at_30_per_second_with_options_from_a_config_file(triton, tmp_path: Path) -> None:
    """The seed's LowUser (--closed-loop): constant_pacing(1/30). The open-loop stream is tested in
    test_open_loop.py."""
    conf = tmp_path / "t.conf"
    conf.write_text(
        f"locustfile = locustfile.py\nclass-name = LowUser\nhost = {triton.url}\n"
        "server = triton\nmodel-name = tiny_onnx\nrequest-timeout = 30\nclosed-loop = true\n"
    )
    report = tmp_path / "timeline.json"
    run = run_locust(
        tmp_path,
        "--config",
        str(conf),
        locustfile=TIMELINE_LOCUSTFILE,
        env=clean_env(TIMELINE_REPORT=str(report)),
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "LowUser" in run.stderr
    starts = sorted(start for start, _ in json.loads(report.read_text())["intervals"])
    assert len(starts) > 2, starts
    # constant_pacing(1/30): a request starts at most every 1/30 s, however fast the server answers (a
    # slow one only makes it fewer). Two periods of slack: the first wait also makes up for the time
    # between the user's start and its first request.
    assert len(starts) - 1 <= 30 * (starts[-1] - starts[0]) + 2, (len(starts), starts[-1] - starts[0])


def test_resnet50_on_both_servers(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "HighUser",
        env=clean_env(LOCUST_SERVER="triton", LOCUST_MODEL_NAME="resnet50_onnx", STOP_AFTER="5"),
        locustfile=COUNTED,
        run_time=COUNTED_GUARD,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("triton/resnet50_onnx")
    assert int(stats["Request Count"]) > 0 and int(stats["Failure Count"]) == 0


def most_in_flight(intervals: list[list[float]]) -> int:
    """The largest number of ``[start, end]`` intervals that overlap at one moment (touching ones do not)."""
    steps = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    in_flight = most = 0
    for _, step in steps:  # at equal times an end (-1) sorts before a start (+1)
        in_flight += step
        most = max(most, in_flight)
    return most


def test_ten_users_in_one_process_have_ten_requests_in_flight_at_once(triton, tmp_path: Path) -> None:
    """gevent-safety: a user waits for its answer in gevent's hub, so the other users send meanwhile.
    The sleep_20ms model holds each request 20 ms; timed on the client, ten users have ten requests in
    flight at the same moment (a wait that blocked the process would give one), however fast the
    machine and the server are."""
    report = tmp_path / "timeline.json"
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "HighUser",
        locustfile=TIMELINE_LOCUSTFILE,
        env=clean_env(SERVER="triton", MODEL_NAME="sleep_20ms", TIMELINE_REPORT=str(report)),
        users=10,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    intervals = json.loads(report.read_text())["intervals"]
    assert most_in_flight(intervals) == 10, f"{len(intervals)} requests"


def test_python_thread_gives_way_to_the_io_thread_unless_told_not_to(triton, tmp_path: Path) -> None:
    """Python's thread runs SCHED_BATCH (no wake-up preemption of the I/O thread, which keeps the default
    policy), and at nice +10 once an open-loop stream runs (LowUser), so the stream's sends win the core;
    LOCUST_INFERENCE_PYTHON_SCHED=normal keeps the defaults; anything else is a clear error."""
    policies = {}
    for user, choice in (("HighUser", ""), ("LowUser", ""), ("LowUser", "normal")):
        report = tmp_path / f"sched-{user}-{choice or 'default'}.json"
        extra = {"LOCUST_INFERENCE_PYTHON_SCHED": choice} if choice else {}
        run = run_locust(
            tmp_path,
            "--host",
            triton.url,
            user,
            locustfile=SCHED_LOCUSTFILE,
            env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", SCHED_REPORT=str(report), **extra),
            users=2,
            run_time="2s",
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert int(run.stats("triton/tiny_onnx")["Request Count"]) > 0
        policies[user, choice] = json.loads(report.read_text())
    assert policies["HighUser", ""] == {"python": os.SCHED_BATCH, "nice": 0, "io": [os.SCHED_OTHER]}
    assert policies["LowUser", ""] == {"python": os.SCHED_BATCH, "nice": 10, "io": [os.SCHED_OTHER]}
    assert policies["LowUser", "normal"] == {"python": os.SCHED_OTHER, "nice": 0, "io": [os.SCHED_OTHER]}
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "HighUser",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", LOCUST_INFERENCE_PYTHON_SCHED="fifo"),
    )
    assert run.returncode == 2
    assert "LOCUST_INFERENCE_PYTHON_SCHED must be batch or normal, not 'fifo'" in run.stderr


def test_debug_requests_logs_each_request_without_secrets(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--header",
        "X-Api-Key: hunter2",
        "LowUser",
        env=clean_env(
            SERVER="triton",
            MODEL_NAME="tiny_onnx",
            DEBUG_REQUESTS="true",
            INFERENCE_AUTH_TOKEN="s3cr3t-token",
            STOP_AFTER="10",
        ),
        locustfile=COUNTED,
        run_time=COUNTED_GUARD,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if "locust_inference.debug" in line]
    requests = json.loads((tmp_path / "latency.json").read_text())["locust"]["requests"]  # Locust's exact count
    assert len(lines) == requests > 0  # one line per request
    first = lines[0]
    for needle in (
        f"{triton.url}/v2/models/tiny_onnx/infer",
        "Inference-Header-Content-Length",
        "json_header_bytes=",
        "tensor_bytes=602112",
        "status=200",
        "inference-header-content-length",
        "length=",
        "<redacted>",
    ):
        assert needle in first, (needle, first)
    assert "s3cr3t-token" not in run.stderr and "hunter2" not in run.stderr


def test_debug_is_off_by_default(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "LowUser",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", STOP_AFTER="5"),
        locustfile=COUNTED,
        run_time=COUNTED_GUARD,
    )
    assert run.returncode == 0
    assert "locust_inference.debug" not in run.stderr


SWITCHES_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "greenlet_switches.py"


def count_switches(triton, tmp_path: Path, user_class: str, users: int, run_time: str) -> dict[str, int]:
    """Runs ``user_class`` from the switch-counting locustfile against tiny_onnx; returns its report."""
    report = tmp_path / "switches.json"
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        user_class,
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", SWITCH_REPORT=str(report)),
        locustfile=SWITCHES_LOCUSTFILE,
        run_time=run_time,
        users=users,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    counts = json.loads(report.read_text())
    print(counts)
    return counts


def test_a_zero_wait_after_a_request_does_not_go_through_the_hub_again(triton, tmp_path: Path) -> None:
    """Each request already yields to the hub while it waits, so HighUser's zero wait is skipped: one
    switch into the user per request (the answer), not two (the answer, then ``gevent.sleep(0)``), plus
    one when the user starts and at most one when it stops."""
    counts = count_switches(triton, tmp_path, "HighUser", users=1, run_time="3s")
    assert counts["requests"] > 2, counts  # else one switch per request could not be told from two
    assert counts["switches"] - counts["requests"] <= 2, counts


def test_a_user_whose_task_never_yields_still_lets_the_others_run(triton, tmp_path: Path) -> None:
    """A zero wait after a task that sent nothing still yields: two such users alternate and the run
    ends on time (were the wait skipped, the first would never give the hub back and the run would
    never end)."""
    counts = count_switches(triton, tmp_path, "Spinner", users=2, run_time="2s")
    assert len(counts["spins"]) == 2, counts  # each user spun
    assert counts["switches"] >= sum(counts["spins"].values()), counts  # and came back from the hub for each spin
