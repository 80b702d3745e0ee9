"""Locust's CSV files against the real Triton end with every request the summary counts."""

from __future__ import annotations

import json
from pathlib import Path

from support.runs import clean_env, run_locust


def test_the_csv_files_end_with_every_request_the_summary_counts(triton, tmp_path: Path) -> None:
    """Locust rewrites its --csv files once a second and not at exit: a LowUser run (30 requests/s) ends
    a fraction of a second after its last rewrite. With the final write, _stats.csv and _failures.csv
    count what latency.json and the summary count."""
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--class-name",
        "LowUser",
        run_time="3s",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "latency.json").read_text())
    entry = result["requests"]["triton/tiny_onnx"]
    assert entry["count"] > 0
    assert int(run.stats("triton/tiny_onnx")["Request Count"]) == entry["count"] + entry["failures"]
    assert int(run.stats()["Request Count"]) == result["locust"]["requests"]
