"""Whole Locust runs against misbehaving servers, stopping mid-request, and distributed.sh."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.faults import ENSEMBLE_STEPS, SILENT_AT_END, FaultServer
from support.runs import LOCUST, REPO_ROOT, WITH_CTRL_C, clean_env, latency_json, processes, run_distributed, run_locust

from servers import children
from servers.launch import free_port


def test_failures_are_reported_with_their_reason_and_the_run_goes_on(fault_server, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        fault_server.url,
        "HighUser",
        users=3,
        run_time="2s",
        env=clean_env(SERVER="triton", MODEL_NAME="status500"),
    )
    assert run.returncode == 1, run.stderr[-2000:]  # Locust's exit code when requests failed
    assert "Traceback" not in run.stderr and "panicked" not in run.stderr
    stats = run.stats("triton/status500")
    assert int(stats["Request Count"]) > 3  # more than one per user: each went on after its first failure
    assert stats["Request Count"] == stats["Failure Count"]
    (failure,) = run.failures()
    assert failure["Method"] == "infer" and failure["Name"] == "triton/status500"
    url = f"{fault_server.url}/v2/models/status500/infer"
    assert f'HTTP 500 from {url}: {{"error":"injected failure # for status#"}}' in failure["Error"]


def test_server_that_dies_and_comes_back(tmp_path: Path) -> None:
    port = free_port()
    first = FaultServer(port).start()
    second: list[FaultServer] = []

    def outage() -> None:
        deadline = time.monotonic() + 60
        while first.requests < 20 and time.monotonic() < deadline:  # the run is under way
            time.sleep(0.05)
        first.stop()
        time.sleep(2)
        second.append(FaultServer(port).start())

    t = threading.Thread(target=outage)
    t.start()
    try:
        run = run_locust(
            tmp_path, "--host", first.url, "LowUser", run_time="7s", env=clean_env(SERVER="triton", MODEL_NAME="ok")
        )
    finally:
        t.join()
        for s in second:
            s.stop()
    assert run.returncode == 1, run.stderr[-2000:]
    assert second and second[0].requests > 0, "requests did not resume after the server came back"
    assert first.requests >= 20
    messages = " ".join(f["Error"] for f in run.failures())
    assert "cannot connect to" in messages and "refused" in messages.lower()
    stats = run.stats("triton/ok")
    # successes after the restart are counted (Locust's CSV may miss the last second, so no exact total)
    assert int(stats["Request Count"]) - int(stats["Failure Count"]) > first.requests


def test_run_time_end_does_not_wait_for_requests_in_flight(tmp_path: Path) -> None:
    """Every user is waiting on a 60 s response when the run time ends: Locust must still stop."""
    server = FaultServer(slow_seconds=60).start()
    try:
        run = run_locust(
            tmp_path,
            "--host",
            server.url,
            "HighUser",
            "--request-timeout",
            "120",
            users=5,
            run_time="2s",
            timeout=40,
            env=clean_env(SERVER="triton", MODEL_NAME="slow"),
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert server.requests == 5


def ctrl_c_when_in_flight(cmd: list[str], requests: int, *, group: bool = False) -> tuple[int, str]:
    """Runs ``cmd`` (Ctrl-C at its default) against a FaultServer whose requests take 60 s; once ``requests`` of
    them are in flight, sends SIGINT to the process (to its process group when ``group``, as a terminal does).
    Returns its exit status and output; fails the test when it still runs 120 s after the signal."""
    server = FaultServer(slow_seconds=60).start()
    try:
        with children.running(
            [*WITH_CTRL_C, *cmd, "--host", server.url, "HighUser"],
            cwd=REPO_ROOT,
            env=clean_env(SERVER="triton", MODEL_NAME="slow"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            deadline = time.monotonic() + 60
            while server.requests < requests and time.monotonic() < deadline:
                time.sleep(0.1)
            assert server.requests == requests
            if group:
                os.killpg(proc.pid, signal.SIGINT)  # its own group (children.running)
            else:
                proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"still running 120 s after its SIGINT; its log ends:\n{err[-4000:]}")
    finally:
        server.stop()
    return proc.returncode, out + err


def test_ctrl_c_stops_a_run_with_requests_in_flight(tmp_path: Path) -> None:
    # -t far beyond the wait: a run that ignored the Ctrl-C would still be running when the wait ends
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "-u", "5", "-r", "5", "-t", "600s"]
    code, log = ctrl_c_when_in_flight(cmd, 5)
    assert "Traceback" not in log, log[-2000:]
    # no request completed, so none failed: requests cancelled by the stop are not reported
    assert code == 0, log[-2000:]


def test_ctrl_c_to_the_process_group_stops_a_run_of_processes_quietly(tmp_path: Path) -> None:
    """--processes 2, Ctrl-C at a terminal: the signal reaches the group, Locust's parent (the master) and the
    two forked workers at once. Python's own handler raised KeyboardInterrupt in whatever greenlet of a worker
    ran then, and gevent printed each as a bare "KeyboardInterrupt" line; the run must end with exit 0, no
    traceback and no such line."""
    users = 4
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", *processes(2), "-u", str(users), "-r", str(users)]
    code, log = ctrl_c_when_in_flight([*cmd, "-t", "600s"], users, group=True)
    assert "Traceback" not in log, log[-3000:]
    assert [line for line in log.splitlines() if line.strip() == "KeyboardInterrupt"] == [], log[-3000:]
    assert code == 0, log[-3000:]


SLOW_PRINT_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "slow_console_stats.py"
SLOW_PRINT_MARK = "slow_console_stats: printing"  # the locustfile's (importing it would import Locust here)


def test_ctrl_c_handled_while_locusts_stats_printer_runs_stops_the_run(tmp_path: Path) -> None:
    """Locust's console stats printer catches KeyboardInterrupt and ends quietly (as its stats history, its CSV
    writer and the greenlet spawning users do): a Ctrl-C handled while it ran was lost, and the run went on to
    its run time. The locustfile holds the printer up until the Ctrl-C is sent, so it is handled there."""
    server = FaultServer(slow_seconds=60).start()
    until = tmp_path / "sent"
    cmd = [LOCUST, "-f", str(SLOW_PRINT_LOCUSTFILE), "--headless", "-u", "5", "-r", "5", "-t", "600s"]
    lines: list[str] = []
    marked = threading.Event()

    def read(stream: Any) -> None:
        for line in stream:
            lines.append(line)
            if line.strip() == SLOW_PRINT_MARK:
                marked.set()

    try:
        with children.running(
            [*WITH_CTRL_C, *cmd, "--host", server.url, "HighUser"],
            cwd=REPO_ROOT,
            env=clean_env(SERVER="triton", MODEL_NAME="slow", SLOW_PRINT_UNTIL=str(until)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            reader = threading.Thread(target=read, args=(proc.stderr,), daemon=True)
            reader.start()
            assert marked.wait(60), "".join(lines)[-4000:]
            proc.send_signal(signal.SIGINT)
            until.touch()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                reader.join(10)
                pytest.fail(f"still running 120 s after its SIGINT; its log ends:\n{''.join(lines)[-4000:]}")
            reader.join(10)
    finally:
        server.stop()
    err = "".join(lines)
    assert "Traceback" not in err, err[-2000:]
    assert "Shutting down (exit code 0)" in err, err[-2000:]  # Locust's own shutdown, after the Ctrl-C
    assert proc.returncode == 0, err[-2000:]


def test_a_server_silent_as_the_run_ends_delays_the_quit_by_the_statistics_budget_at_most(tmp_path: Path) -> None:
    """Triton's statistics are read again as the process quits (after -t or a Ctrl-C). Here the 64 composing
    models of an ensemble answer their statistics at the start and never at the end: with a timeout per request,
    the quit waited 640 s; one read now gives up after its budget, with one warning line, and the results say
    which composing models have no statistics."""
    server = FaultServer().start()
    try:
        run = run_locust(
            tmp_path,
            "--host",
            server.url,
            "--metrics-url",
            "none",
            "HighUser",
            run_time="2s",
            timeout=120,  # the guard: far below the 640 s of one timeout per composing model
            env=clean_env(SERVER="triton", MODEL_NAME=SILENT_AT_END),
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    warning = f"ensemble '{SILENT_AT_END}': composing models' statistics not read: the statistics took over 10 s"
    assert warning in run.stderr, run.stderr[-2000:]
    composing = latency_json(tmp_path)["server_stats"]["composing"]
    assert composing == {f"{SILENT_AT_END}__step{i}": None for i in range(ENSEMBLE_STEPS)}
    assert server.stats_reads[f"{SILENT_AT_END}__step0"] == 2  # read at the start, and held at the end
    assert f"{SILENT_AT_END}__step1" in server.stats_reads  # every step answered at the start
    assert server.stats_reads[f"{SILENT_AT_END}__step1"] == 1  # not asked again once the budget was spent


def test_distributed_script_fails_when_workers_cannot_start(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: workers exit at start
    proc, _ = run_distributed(tmp_path, url, run_time="30s")
    assert proc.returncode != 0
    assert f"cannot reach Triton at {url}" in proc.stderr
    assert "exited with status 2" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage: ./distributed.sh <config> <model_name> [server]"),
        (["configs/low.conf"], "usage: ./distributed.sh <config> <model_name> [server]"),
        (["configs/nope.conf", "m", "triton"], "distributed.sh: config file configs/nope.conf does not exist"),
        (["configs/low.conf", "m", "tgi"], "distributed.sh: unknown server 'tgi': choose triton or litserve"),
    ],
)
def test_distributed_script_usage(args: list[str], message: str) -> None:
    proc = subprocess.run(
        ["./distributed.sh", *args], cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2, args
    assert proc.stderr.splitlines()[0] == message, proc.stderr
