"""A Ctrl-C ends a run as its run time does: the users are stopped before the results are written, so an
open loop's counters add up and its rates cover the time its streams ran. Against real Triton."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from support.runs import LOCUST, REPO_ROOT, WITH_CTRL_C, clean_env, triton_successes

from servers import children

MODEL = "sleep_20ms"  # slow enough that requests are in flight when the Ctrl-C comes


def test_ctrl_c_stops_open_loop_streams_before_the_results_are_written(triton: Any, http: Any, tmp_path: Path) -> None:
    before = triton_successes(http, triton.url, MODEL)
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "-u", "4", "-r", "4", "-t", "600s", "--host", triton.url]
    cmd += ["--csv", str(tmp_path / "run"), "--rate", "40", "--max-in-flight", "4", "LowUser"]
    with children.running(
        [*WITH_CTRL_C, *cmd],
        cwd=REPO_ROOT,
        env=clean_env(SERVER="triton", MODEL_NAME=MODEL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        deadline = time.monotonic() + 60
        while triton_successes(http, triton.url, MODEL) - before < 100 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    results = json.loads((tmp_path / "latency.json").read_text())
    entry = results["requests"][f"triton/{MODEL}"]
    ol = entry["open_loop"]
    assert entry["count"] == ol["completed"] == results["locust"]["requests"] >= 100, ol
    assert ol["pending"] == 0 and ol["scheduled"] == ol["dropped"] + ol["completed"] + ol["unfinished"], ol
    # each stream's running time counted as it stopped: without it, no rate could be given
    assert ol["streams"] == 4 and ol["stream_seconds"] > 0 and ol["achieved_per_s"] is not None, ol
    assert "achieved n/a" not in out


def test_ctrl_c_to_a_master_waits_for_its_workers_final_reports(triton: Any, http: Any, tmp_path: Path) -> None:
    """--processes 2: the Ctrl-C reaches the master alone (as `kill -INT` would). Its results were written at
    once, without the workers' last reports: their streams had not stopped, and requests showed as pending."""
    before = triton_successes(http, triton.url, MODEL)
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--processes", "2", "-u", "4", "-r", "4", "-t", "600s"]
    cmd += ["--host", triton.url, "--csv", str(tmp_path / "run"), "--rate", "40", "--max-in-flight", "4", "LowUser"]
    with children.running(
        [*WITH_CTRL_C, *cmd],
        cwd=REPO_ROOT,
        env=clean_env(SERVER="triton", MODEL_NAME=MODEL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        deadline = time.monotonic() + 90
        while triton_successes(http, triton.url, MODEL) - before < 100 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    ol = json.loads((tmp_path / "latency.json").read_text())["requests"][f"triton/{MODEL}"]["open_loop"]
    assert ol["pending"] == 0 and ol["scheduled"] == ol["dropped"] + ol["completed"] + ol["unfinished"], ol
    assert ol["streams"] == 4 and ol["stream_seconds"] > 0 and ol["completed"] >= 100, ol
