"""distributed.sh runs a master and workers against the real Triton."""

from __future__ import annotations

from pathlib import Path

from support.runs import run_distributed


def test_distributed_script_runs_master_and_workers(triton, tmp_path: Path) -> None:
    proc, results = run_distributed(tmp_path, triton.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for needle in ("config", "tiny_onnx", "triton", "workers  2", "class    HighUser", str(results)):
        assert needle in proc.stdout, proc.stdout
    stats = (results / "quick_stats.csv").read_text()
    row = next(line for line in stats.splitlines() if line.startswith("infer,triton/tiny_onnx,"))
    requests, failures = (int(v) for v in row.split(",")[2:4])
    assert requests > 0 and failures == 0
    assert (results / "quick.html").stat().st_size > 1000
    assert "Sending spawn jobs of 4 users at 4.00 spawn rate to 2 ready workers" in proc.stderr
