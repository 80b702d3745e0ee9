"""Locust's web UI on an open-loop run: its statistics and its charts show the response time from each
request's intended send time (what latency.json calls latency), not the service time."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

from support.runs import LOCUST, REPO_ROOT, clean_env

from servers import children
from servers.launch import free_port


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_web_ui_shows_latency_from_the_intended_send_time(triton, tmp_path: Path) -> None:
    # sleep_20ms offered 100/s with one request in flight, queued: frame k waits about 10k ms before it
    # can leave, so the time from its intended send grows to seconds while its service time stays ~20 ms
    port = free_port()
    cmd = [LOCUST, "-f", "locustfile.py", "--host", triton.url, "LowUser", "--rate", "100", "--max-in-flight", "1"]
    cmd += ["--overload", "queue", "-u", "1", "-r", "1", "-t", "4s", "--autostart", "--autoquit", "3"]
    cmd += ["--web-host", "127.0.0.1", "--web-port", str(port), "--csv", str(tmp_path / "run")]
    env = clean_env(SERVER="triton", MODEL_NAME="sleep_20ms")
    charted: list[float] = []  # the chart's median line, as the page polls it while the test runs
    final: dict[str, Any] | None = None  # the statistics shown once the test stopped (before the UI quits)
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        proc = children.start(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 90
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                try:
                    stats = get(f"http://127.0.0.1:{port}/stats/requests")
                except OSError:
                    continue  # not listening yet, or quitting
                p50 = (stats.get("current_response_time_percentiles") or {}).get("response_time_percentile_0.5")
                if stats["state"] == "running" and p50:
                    charted.append(float(p50))
                if stats["state"] == "stopped":
                    final = stats
            assert proc.wait(timeout=30) == 0, (tmp_path / "err").read_text()[-3000:]
        finally:
            children.stop(proc)
    assert final is not None, "the web UI never showed the stopped test"
    entry = json.loads((tmp_path / "latency.json").read_text())["requests"]["triton/sleep_20ms"]
    (row,) = [s for s in final["stats"] if s["name"] == "triton/sleep_20ms"]
    latency, service = entry["latency_ms"], entry["service_ms"]
    assert row["num_requests"] == entry["count"] and row["num_failures"] == 0, (row, entry["count"])
    # Locust keeps two significant digits of each response time above 100 ms: its median is a sample
    # rounded to its bucket (100 ms wide between 1 and 10 s), so it lies within half a bucket of that
    # sample, and the sample is latency.json's p50 or its neighbour (here some 13 ms apart): within a bucket
    bucket = 10 ** (math.floor(math.log10(latency["p50"])) - 1)
    assert abs(row["median_response_time"] - latency["p50"]) <= bucket, (row, latency)
    assert latency["p50"] > 10 * service["p99"], (latency, service)
    assert charted and max(charted) > 10 * service["p99"], (charted, service)
