"""The benchmark's rows on the real Triton, without a server: Triton's statistics read as the count of answered
requests, perf_analyzer's report read as a result, and the command line it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.perf_analyzer import PerfAnalyzer, command, parse
from bench.tables import ratios
from bench.triton_server import success_count


def stats(*counts: int) -> dict[str, object]:
    """``GET /v2/models/<m>/stats`` as Triton answers it, one entry per version."""
    return {
        "model_stats": [
            {
                "name": "tiny_onnx",
                "version": str(v + 1),
                "last_inference": 1700000000000,
                "inference_count": 2 * n,
                "execution_count": n // 4,
                "inference_stats": {
                    "success": {"count": n, "ns": 1000 * n},
                    "fail": {"count": 7, "ns": 70},
                    "queue": {"count": n, "ns": 10 * n},
                },
                "batch_stats": [],
            }
            for v, n in enumerate(counts)
        ]
    }


def test_the_count_is_the_successful_requests_summed_over_versions() -> None:
    assert success_count(stats(2507)) == 2507  # not inference_count (batch items) nor fail
    assert success_count(stats(10, 32)) == 42
    assert success_count(stats()) == 0  # loaded, never called


@pytest.mark.parametrize("bad", [{}, {"model_stats": [{"inference_stats": {}}]}, {"model_stats": None}, []])
def test_statistics_without_the_count_are_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match=r"success\.count"):
        success_count(bad)  # type: ignore[arg-type]


PA_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
    "10,672.257,144,3572,4001,561,6190,351,0,13994,18734,21228,39285\n"
)
PA_STDOUT = """\
Request concurrency: 10
  Client:
    Request count: 2507
    Throughput: 672.257 infer/sec
    Avg latency: 14822 usec (standard deviation 6493 usec)
    p50 latency: 13994 usec
"""


def test_perf_analyzers_csv_and_report() -> None:
    result = parse(PA_CSV, PA_STDOUT)
    assert result.error is None
    assert result.rate == pytest.approx(672.257)
    assert result.p50_ms == pytest.approx(13.994)
    assert result.mean_ms == pytest.approx(14.822)
    assert parse(PA_CSV).mean_ms is None
    assert parse("").error is not None
    assert parse("Concurrency,Inferences/Second\n10,abc\n").error is not None


def test_perf_analyzer_sends_binary_tensors_at_the_given_concurrency_for_about_the_duration() -> None:
    tool = PerfAnalyzer(Path("/cache/perf_analyzer"), Path("/cache/lib"))
    cmd = command(
        tool, "http://127.0.0.1:8000", "tiny_onnx", concurrency=10, duration=9, csv_path=Path("x.csv"), shape=None
    )
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert cmd[0] == "/cache/perf_analyzer"
    assert flags["-u"] == "127.0.0.1:8000" and flags["-i"] == "http" and flags["-m"] == "tiny_onnx"
    assert flags["--concurrency-range"] == "10"
    assert flags["--input-tensor-format"] == "binary" and flags["--output-tensor-format"] == "binary"
    assert flags["--measurement-interval"] == "3000"  # 3 windows of 3 s
    assert "--shape" not in cmd


def test_the_goal_compares_cpu_per_request_of_ours_and_perf_analyzer() -> None:
    (goal,) = [r for r in ratios() if r.clients() == ["tri_ours10", "pa10"] and r.goal is not None]
    assert goal.a == ("tri_ours10", "cpu_us") and goal.b == ("pa10", "cpu_us")
    values = {("tri_ours10", "cpu_us"): 211.0, ("pa10", "cpu_us"): 257.0}
    assert goal.compute(lambda k, a: values[(k, a)]) == pytest.approx(211 / 257)
    assert goal.passed is not None and goal.passed(0.99) and not goal.passed(1.0)
