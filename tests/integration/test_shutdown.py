"""distributed.sh stops exactly what it started: on SIGTERM, when a worker dies, and never anything
else (an unrelated Locust process keeps running)."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.runs import LOCUST, REPO_ROOT, clean_env

from servers import children

UNRELATED = """
from locust import User, constant, task


class Idle(User):
    wait_time = constant(1)

    @task
    def nothing(self):
        pass
"""


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except FileNotFoundError:  # the task ended meanwhile (distributed.sh's short-lived children)
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture()
def unrelated_locust(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Somebody else's Locust run on the same machine."""
    locustfile = tmp_path / "other_locustfile.py"
    locustfile.write_text(UNRELATED)
    with children.running(
        [LOCUST, "-f", str(locustfile), "--headless", "-u", "1", "-t", "120s"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        yield proc


_STARTED: list[subprocess.Popen[str]] = []  # the distributed.sh runs start_distributed started in this test


@pytest.fixture(autouse=True)
def _stop_what_started() -> Iterator[None]:
    """Whatever a test's distributed.sh left running, pass or fail, is killed as the test ends (its whole
    process group), and the script reaped: a run left over goes on for its 5 minutes, and its requests reach
    the session's Triton in later tests' counts."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        with contextlib.suppress(ProcessLookupError):  # nothing left of the group: the usual end
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def cmdline(pid: int) -> str:
    """The command line of ``pid``; empty once it has ended (distributed.sh's own short-lived children)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except FileNotFoundError:
        return ""


def start_distributed(triton, tmp_path: Path, workers: int = 2) -> tuple[subprocess.Popen[str], set[int]]:
    """distributed.sh in a session (and process group) of its own: its master and workers are in that group."""
    conf = tmp_path / "long.conf"
    conf.write_text(
        f"locustfile = locustfile.py\nclass-name = LowUser\nusers = {workers}\nspawn-rate = {workers}\n"
        f"run-time = 5m\nexpect-workers = {workers}\n"
    )
    proc = subprocess.Popen(
        ["./distributed.sh", str(conf), "tiny_onnx", "triton"],
        cwd=REPO_ROOT,
        env=clean_env(HOST=triton.url, RESULTS_DIR=str(tmp_path / "results")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _STARTED.append(proc)
    stats = tmp_path / "results" / "long_stats.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not requests_sent(stats):  # the workers are connected and sending
        time.sleep(0.2)
    return proc, descendants(proc.pid)


def requests_sent(stats_csv: Path) -> bool:
    """Whether Locust's stats CSV (rewritten every second by the master) counts a request yet."""
    try:
        rows = list(csv.DictReader(stats_csv.read_text().splitlines()))
    except OSError:
        return False
    return any(row["Name"] == "Aggregated" and int(row["Request Count"]) > 0 for row in rows)


def test_sigterm_stops_master_and_workers_and_nothing_else(triton, tmp_path: Path, unrelated_locust) -> None:
    proc, started = start_distributed(triton, tmp_path)
    assert len(started) >= 3, started
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in started | {proc.pid}:
            os.kill(pid, signal.SIGKILL)
        raise
    took = time.monotonic() - t0
    sys.stderr.write(f"distributed.sh stopped {len(started)} processes in {took:.2f} s\n")
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted, stopping master and workers" in err
    leftovers = [pid for pid in started if alive(pid)]
    assert leftovers == [], f"orphans: {leftovers}"
    assert unrelated_locust.poll() is None, "an unrelated Locust process was stopped"


def test_a_worker_that_dies_fails_the_run(triton, tmp_path: Path) -> None:
    proc, started = start_distributed(triton, tmp_path)
    workers = [pid for pid in started if "--worker" in cmdline(pid)]
    assert workers, started
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err[-2000:]
    assert f"worker {workers[0]} exited with status 137; stopping the run" in err
    assert [pid for pid in started if alive(pid)] == []
