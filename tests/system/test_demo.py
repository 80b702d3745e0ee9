"""`make demo` end to end, shortened: both real servers, both runs, the table and the report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from support.report_page import figures
from support.runs import REPO_ROOT, clean_env


def test_demo_runs_both_servers_and_writes_the_comparison(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "servers.demo"],
        cwd=REPO_ROOT,
        env=clean_env(DEMO_RUN_TIME="4s", DEMO_RESULTS=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("server "))
    assert re.split(r"\s{2,}", header.strip()) == [
        "server",
        "requests",
        "offered/s",
        "achieved/s",
        "dropped",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "service p50",
        "service p99",
        "failures",
    ]
    for server in ("triton", "litserve"):
        row = next(line for line in out.splitlines() if line.startswith(f"{server} ")).split()
        entry = json.loads((tmp_path / server / "latency.json").read_text())["requests"][f"{server}/resnet50_onnx"]
        ol = entry["open_loop"]
        # LowUser: one 30 fps stream per user, the table shows latency.json's numbers as they are
        assert row[2:5] == [f"{ol['offered_rate_per_s']:.1f}", f"{ol['achieved_per_s']:.1f}", str(ol["dropped"])]
        assert ol["offered_rate_per_s"] == 30.0 * ol["streams"]
        assert row[5:8] == [f"{entry['latency_ms'][k]:.1f}" for k in ("p50", "p95", "p99")]
        assert row[8:10] == [f"{entry['service_ms'][k]:.1f}" for k in ("p50", "p99")]
        assert int(row[1]) > 0 and row[-1] == "0", row
        assert (tmp_path / server / "low.html").exists()
    html = (tmp_path / "compare.html").read_text()
    assert "triton" in html and "litserve" in html
    charts = figures(html)
    assert list(charts) == [
        "latency-distribution",
        "throughput-over-time",
        "latency-over-time",
        # the servers' own metrics (Triton's endpoint, LitServe's process) and the load generator's health
        "server-utilization",
        "server-time",
        "server-memory",
        "client-cpu",
        "client-lag",
    ]
    assert [trace["name"] for trace in charts["latency-distribution"]["data"]] == ["triton", "litserve"]
    utilization = [trace["name"] for trace in charts["server-utilization"]["data"]]
    assert utilization == ["triton server CPU", "litserve server process CPU"]
    assert "stopped Triton" in proc.stderr + out and "stopped LitServe" in proc.stderr + out
