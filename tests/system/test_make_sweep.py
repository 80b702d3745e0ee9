"""`make sweep` end to end, shortened: both real servers deployed alike, the same sweep against each, the
goodput of each printed, and the comparison page with both curves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.runs import REPO_ROOT, QuickSweep, clean_env


def test_make_sweep_sweeps_both_servers_alike_and_compares_them(tmp_path: Path) -> None:
    env = clean_env(
        SWEEP_MODEL="tiny_onnx",
        SWEEP_CONCURRENCY="1,2",
        SWEEP_SLO="p99=500ms",
        SWEEP_BATCH="8",
        SWEEP_RESULTS=str(tmp_path),
        **QuickSweep(max_windows=4).env("SWEEP_"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "servers.sweep"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    docs = {s: json.loads((tmp_path / s / "sweep.json").read_text()) for s in ("triton", "litserve")}
    deployed = "one model instance on CPU, onnxruntime 2 threads, server-side batching of up to 8 requests"
    for server, doc in docs.items():
        assert doc["deployment"].startswith(deployed) and doc["deployment"] == docs["triton"]["deployment"]
        assert [r["users"] for r in doc["steps"]] == [1, 2] and doc["stopped"] is None, doc
        assert all(r["failures"] == 0 for r in doc["steps"]), doc
        good = doc["goodput"]
        rate = "none" if good["rate_per_s"] is None else f"{good['rate_per_s']:.1f} req/s"
        shown = f"{rate}, {good['how']}"
        assert f"{server}: goodput at p99 <= 500 ms: {shown}" in proc.stdout
    # Triton's batching is the one asked for: its batch size never exceeds 8
    assert all(r["server"]["avg_batch_size"] <= 8 for r in docs["triton"]["steps"])
    # each server's own metrics per step: Triton's endpoint (CPU gauges, no GPU here), LitServe's process
    assert all(r["server_metrics"]["cpu_utilization_pct"] is not None for r in docs["triton"]["steps"])
    assert all(r["server_metrics"]["server_process_cpu_pct"] > 0 for r in docs["litserve"]["steps"])
    md = (tmp_path / "compare.md").read_text()
    assert "## Load sweep" in md and md.count(f"Deployment: {docs['triton']['deployment']}.") == 2
    assert "sweep-latency-throughput" in (tmp_path / "compare.html").read_text()
