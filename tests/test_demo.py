"""`make demo` end to end, shortened: both real servers, both runs, the table and the report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from report_page import figures
from support import REPO_ROOT, clean_env

pytestmark = pytest.mark.server  # the demo starts both servers


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
    assert "server    requests  req/s  p50 ms  p95 ms  p99 ms  dropped  failures" in out
    for server in ("triton", "litserve"):
        row = next(line for line in out.splitlines() if line.startswith(f"{server} "))
        assert int(row.split()[1]) > 0 and row.split()[-1] == "0", row
        assert (tmp_path / server / "low.html").exists() and (tmp_path / server / "latency.json").exists()
    html = (tmp_path / "compare.html").read_text()
    assert "triton" in html and "litserve" in html
    charts = figures(html)
    assert list(charts) == ["latency-distribution", "throughput-over-time", "latency-over-time"]
    assert [trace["name"] for trace in charts["latency-distribution"]["data"]] == ["triton", "litserve"]
    assert "stopped Triton" in proc.stderr + out and "stopped LitServe" in proc.stderr + out
