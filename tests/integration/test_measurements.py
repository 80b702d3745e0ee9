"""µs latency histograms (merging across workers), the Triton server-side breakdown, response
validation with --expect-top1, and the results files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from locust_inference import LatencyHistogram, Measurements, ProtocolError
from support.runs import REPO_ROOT, latency_json, run_distributed, run_on


def test_merged_worker_histograms_equal_one_histogram_of_all_samples() -> None:
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=3.0, sigma=0.6, size=20_000)  # ms, around 20 ms with a long tail
    worker_a, worker_b, everything = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, ms in enumerate(samples):
        (worker_a if i % 3 else worker_b).record(float(ms))
        everything.record(float(ms))
    # the wire path: each worker serialises, the master deserialises and merges
    master = LatencyHistogram()
    for worker in (worker_a, worker_b):
        master.add(LatencyHistogram.from_bytes(worker.to_bytes()))
    assert master == everything
    assert master.count == everything.count == 20_000
    assert master.summary() == everything.summary()
    # and 3 significant digits: the p99 is within 0.1% of the exact sample percentile
    exact = float(np.percentile(samples, 99, method="inverted_cdf"))
    assert abs(master.percentile(99) - exact) <= exact * 1e-3 + 1e-3


def test_measurements_cross_the_wire_whole_and_refuse_other_bytes() -> None:
    empty = Measurements()
    back = Measurements.from_bytes(empty.to_bytes())
    assert back == empty and back.total.count == 0 and back.streams["streams"] == 0
    assert back.streams == dict.fromkeys(
        ("carried", "scheduled", "sent", "dropped", "completed", "unfinished", "streams", "rate", "stream_seconds"), 0
    )
    merged = Measurements()
    merged.add(back)
    merged.add(Measurements.from_bytes(empty.to_bytes()))
    assert merged == empty
    blob = empty.to_bytes()
    for garbage, reason in (
        (b"", "wrong header"),
        (b"LIM\x01" + blob[4:], "wrong header"),  # an earlier version's (no carried counter)
        (b"LIM\x02" + blob[4:], "wrong header"),  # an earlier version's (no token measures)
        (b"LIM\x04" + blob[4:], "wrong header"),  # the previous version's (no abandoned count)
        (LatencyHistogram().to_bytes(), "wrong header"),
        (blob[:-1], "truncated"),
        (blob + b"\0", "trailing bytes"),
    ):
        with pytest.raises(ProtocolError, match=f"^not a locust-inference measurement: {reason}"):
            Measurements.from_bytes(garbage)


def test_summary_and_distribution() -> None:
    h = LatencyHistogram()
    for ms in (1.0, 2.0, 3.0, 4.0, 100.0):
        h.record(ms)
    s = h.summary()
    assert s["min"] == 1.0 and abs(s["max"] - 100.0) < 0.1 and abs(s["p50"] - 3.0) < 0.01
    assert s["p50"] <= s["p90"] <= s["p99"] <= s["p99.9"] <= s["p99.99"] <= s["max"]
    points = h.distribution()
    assert points[0][0] == 0.0 and points[-1][0] == 100.0
    assert LatencyHistogram().summary() == {}


def test_triton_run_writes_microsecond_latencies_and_server_breakdown(triton, tmp_path: Path) -> None:
    # 40 requests, counted rather than timed: 3 s on a loaded machine once made none
    run = run_on(triton, tmp_path, users=2, stop_after=40)
    assert run.returncode == 0, run.stderr[-2000:]
    result = latency_json(tmp_path)
    entry = result["requests"]["triton/tiny_onnx"]
    assert entry["count"] > 0 and entry["failures"] == 0
    assert entry["count"] == result["locust"]["requests"]  # every request Locust counted, and no other
    assert entry["resent"] == 0  # keep-alive to Triton: no connection closed under a request
    resent_line = "Resent (sent again on a new connection: the pooled one was closed before any byte went out): "
    assert resent_line + "triton/tiny_onnx 0" in run.stdout
    lat = entry["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert entry["ttfb_ms"]["p50"] <= lat["p50"]
    assert lat["p50"] != round(lat["p50"])  # sub-millisecond resolution
    stats = result["server_stats"]
    assert stats["inference_count"] >= entry["count"]  # the server saw at least our requests
    assert stats["avg_batch_size"] >= 1.0
    assert stats["compute_infer_ms"] > 0 and stats["server_total_ms"] < lat["mean"]
    assert abs(stats["client_minus_server_ms"] - (lat["mean"] - stats["server_total_ms"])) < 1e-9
    assert "Latency (µs histograms" in run.stdout and "Triton server side" in run.stdout
    csv_lines = (tmp_path / "latency.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,measure,count,min_ms,mean_ms,p50_ms")
    assert csv_lines[1].startswith("triton/tiny_onnx,latency,") and csv_lines[2].startswith("triton/tiny_onnx,ttfb,")


def test_litserve_run_has_no_server_breakdown(litserve_tiny, tmp_path: Path) -> None:
    run = run_on(litserve_tiny, tmp_path, stop_after=20)  # counted: 2 s on a loaded machine once made none
    assert run.returncode == 0, run.stderr[-2000:]
    result = latency_json(tmp_path)
    assert result["server_stats"] is None
    assert result["requests"]["litserve/tiny_onnx"]["count"] == result["locust"]["requests"] > 0


def test_expect_top1_auto_accepts_a_deterministic_model(triton, tmp_path: Path) -> None:
    run = run_on(triton, tmp_path, "--expect-top1", "auto", stop_after=10)
    assert run.returncode == 0, run.stderr[-2000:]
    # the first answer sets the expected class; every later one is checked against it
    assert int(run.stats()["Failure Count"]) == 0 and int(run.stats()["Request Count"]) > 1


def test_expect_top1_mismatch_is_a_failure_with_the_reason(triton, tmp_path: Path) -> None:
    from locust_inference import Endpoint, RequestSlot, encode_triton_request, preprocess_image

    body, hl = encode_triton_request(preprocess_image(REPO_ROOT / "data" / "img1.jpg")[None], "input__0", [])
    ep = Endpoint(
        f"{triton.url}/v2/models/tiny_onnx/infer",
        body,
        headers=[("Inference-Header-Content-Length", str(hl))],
        protocol="triton",
        outputs=[("output__0", "FP32", [1, 1000])],
    )
    slot = RequestSlot()
    slot.submit(ep)
    actual = slot.wait(30).top1
    wrong = (actual + 1) % 1000
    run = run_on(triton, tmp_path, "--expect-top1", str(wrong), user="LowUser", stop_after=10)
    assert run.returncode == 1
    assert run.stats()["Failure Count"] == run.stats()["Request Count"]
    (failure,) = run.failures()
    assert f"top-1 class is {actual}, expected {wrong} (--expect-top1)" in failure["Error"]


def test_reset_stats_resets_our_measurements_with_locusts(triton, tmp_path: Path) -> None:
    # 3 users spawned at 2/s: requests made while spawning are in neither Locust's numbers nor ours
    for user_class in ("HighUser", "LowUser"):
        run = run_on(triton, tmp_path / user_class, "--reset-stats", "-r", "2", user=user_class, users=3, run_time="3s")
        assert run.returncode == 0, run.stderr[-2000:]
        result = latency_json(tmp_path / user_class)
        entry = result["requests"]["triton/tiny_onnx"]
        assert entry["count"] == result["locust"]["requests"] - result["locust"]["failures"] > 0, user_class
        if user_class == "LowUser":
            ol = entry["open_loop"]
            assert ol["streams"] == 3 and ol["offered_rate_per_s"] == 90  # the streams outlive the reset
            assert ol["completed"] == result["locust"]["requests"]
            # every stream ran about 2 s after the reset, not the 2.5 s or 3 s since it started
            assert ol["stream_seconds"] < 3 * 2.5


def test_distributed_run_merges_workers(triton, tmp_path: Path) -> None:
    proc, results = run_distributed(tmp_path, triton.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = latency_json(results)
    entry = result["requests"]["triton/tiny_onnx"]
    # the master's merge holds exactly the requests the workers reported to Locust
    assert entry["count"] == result["locust"]["requests"] - result["locust"]["failures"] > 0
    assert entry["resent"] == 0  # merged from the workers' reports
    assert result["server_stats"]["inference_count"] >= entry["count"]
