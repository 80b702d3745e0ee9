"""A Ctrl-C ends a run as its run time does: the users are stopped (on a master, its workers' final reports
waited for) before the results are written, so an open loop's counters add up and its rates cover the time
its streams ran. Against real Triton."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from support.runs import LOCUST, REPO_ROOT, WITH_CTRL_C, clean_env, processes, triton_successes

from servers import children

MODEL = "sleep_20ms"  # slow enough that requests are in flight when the Ctrl-C comes
ANSWERED = 100  # requests Triton answered before the Ctrl-C


def ctrl_c_after_answers(triton: Any, http: Any, tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """Runs 4 LowUser users of --rate 40 (with ``args``) until Triton answered ANSWERED of their requests, then
    sends SIGINT to Locust's process (its master with --processes) alone, as `kill -INT` would. Returns its
    output and the open-loop counters of latency.json."""
    before = triton_successes(http, triton.url, MODEL)
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", *args, "-u", "4", "-r", "4", "-t", "600s"]
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
        while triton_successes(http, triton.url, MODEL) - before < ANSWERED and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    results = json.loads((tmp_path / "latency.json").read_text())
    entry = results["requests"][f"triton/{MODEL}"]
    ol = entry["open_loop"]
    assert entry["count"] == ol["completed"] == results["locust"]["requests"] >= ANSWERED, ol
    # every request scheduled ended once, its stream stopped: none pending
    assert ol["pending"] == 0 and ol["scheduled"] == ol["dropped"] + ol["completed"] + ol["unfinished"], ol
    # each stream's running time counted as it stopped: without it, no rate could be given
    assert ol["streams"] == 4 and ol["stream_seconds"] > 0 and ol["achieved_per_s"] is not None, ol
    return out, ol


def test_ctrl_c_stops_open_loop_streams_before_the_results_are_written(triton: Any, http: Any, tmp_path: Path) -> None:
    out, _ = ctrl_c_after_answers(triton, http, tmp_path)
    assert "achieved n/a" not in out


def test_ctrl_c_to_a_master_waits_for_its_workers_final_reports(triton: Any, http: Any, tmp_path: Path) -> None:
    # --processes 2: the master wrote its results at once, before its workers' last reports (none at all
    # in this run: no latency.json)
    ctrl_c_after_answers(triton, http, tmp_path, *processes(2))
