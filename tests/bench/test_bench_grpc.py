"""The benchmark's gRPC rows, without a server: h2load's report read as a result, the null gRPC server's fixed
answers (decoded by our own gRPC response parser), perf_analyzer's gRPC command line, the goals, and where a
partial run writes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from locust_inference._native import decode_triton_grpc_response

from bench import grpc_null, sections
from bench.clients import Client, Result, parse_h2load
from bench.perf_analyzer import PerfAnalyzer, command
from bench.run import PARTIAL_SECTION
from bench.tables import ratios, render

# h2load 1.52.0 (Debian 12's nghttp2-client), -D 3 -c 1 -m 10 against the null gRPC server
H2LOAD = """\
starting benchmark...
spawning thread #0: 1 total client(s). Timing-based test with 0s of warm-up time and 3s of main duration for \
measurements.
Warm-up started for thread #0.
progress: 100% of clients started
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Application protocol: h2c
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 3.01s, 682.00 req/s, 93.26KB/s
requests: 2046 total, 2056 started, 2046 done, 2046 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 2046 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 279.77KB (286489) total, 97.90KB (100254) headers (space savings 44.94%), 77.92KB (79794) data
                     min         max         mean         sd        +/- sd
time for request:     1.51ms     36.74ms     14.64ms      6.41ms    66.37%
time for connect:       55us        55us        55us         0us   100.00%
time to 1st byte:    21.40ms     21.40ms     21.40ms         0us   100.00%
req/s           :     681.97      681.97      681.97        0.00   100.00%
"""


def test_h2loads_rate_and_mean_time_for_a_request() -> None:
    result = parse_h2load(H2LOAD)
    assert result.error is None and result.failures == 0
    assert result.rate == pytest.approx(682.0)
    assert result.mean_ms == pytest.approx(14.64)  # not the connect time nor the time to the first byte
    assert result.p50_ms is None  # h2load prints no median
    in_us = H2LOAD.replace(
        "time for request:     1.51ms     36.74ms     14.64ms", "time for request:  151us 367us 146.4us"
    )
    assert parse_h2load(in_us).mean_ms == pytest.approx(0.1464)


def test_h2load_requests_done_but_not_succeeded_are_failures() -> None:
    text = H2LOAD.replace(
        "2046 total, 2056 started, 2046 done, 2046 succeeded, 0 failed, 0 errored, 0 timeout",
        "2046 total, 2056 started, 2046 done, 2000 succeeded, 46 failed, 6 errored, 0 timeout",
    )
    result = parse_h2load(text)
    assert result.failures == 46
    assert result.error == "46 failed requests"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "connect to 127.0.0.1:1 failed: Connection refused\n",
        H2LOAD.replace("2046 done, 2046 succeeded", "2046 done, 0 succeeded"),
        H2LOAD.replace("req/s, 93.26KB/s", "rps"),
    ],
)
def test_h2load_output_without_a_rate_or_a_success_is_an_error(text: str) -> None:
    result = parse_h2load(text)
    assert result.error is not None and result.rate is None


def test_the_null_servers_answer_is_a_valid_model_infer_response() -> None:
    body = grpc_null.grpc_frame(grpc_null.infer_response())
    assert body[0] == 0 and struct.unpack(">I", body[1:5])[0] == len(body) - 5
    outputs = decode_triton_grpc_response(body[5:])
    assert list(outputs) == ["x.45"]
    np.testing.assert_array_equal(outputs["x.45"], np.array([[0.1, 0.9]], dtype=np.float32))


def test_protobuf_encoding_of_the_fixed_messages() -> None:
    assert grpc_null.message(grpc_null.Message([(1, 1)])) == b"\x08\x01"  # ModelReadyResponse{ready: true}
    shape = grpc_null.message(grpc_null.Message([(3, [-1, 300])]))
    assert shape == b"\x1a\x0c" + b"\xff" * 9 + b"\x01" + b"\xac\x02"  # packed int64: -1 takes ten bytes


def test_bytes_nginx_would_read_otherwise_are_refused() -> None:
    for bad in (b"a$b", b"a'b", b"a\\b"):
        with pytest.raises(AssertionError, match="nginx cannot take"):
            grpc_null._quote(bad)
    config = grpc_null.render_config(1, 2, Path("/w"))
    assert "listen 127.0.0.1:1 http2" in config and "add_trailer grpc-status 0 always;" in config


def test_perf_analyzer_over_grpc_names_the_grpc_endpoint_and_no_http_tensor_format() -> None:
    tool = PerfAnalyzer(Path("/cache/perf_analyzer"), Path("/cache/lib"))
    cmd = command(
        tool,
        "http://127.0.0.1:8001",
        "tiny_onnx",
        concurrency=10,
        duration=9,
        csv_path=Path("x.csv"),
        shape=None,
        protocol="grpc",
    )
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert flags["-u"] == "127.0.0.1:8001" and flags["-i"] == "grpc"
    assert flags["--concurrency-range"] == "10"
    assert "--input-tensor-format" not in cmd and "--output-tensor-format" not in cmd


@pytest.mark.parametrize(
    ("a", "b", "passing", "failing"),
    [
        ("tri_grpc10", "pa10_grpc", {"rate": 1.0, "cpu_us": 0.8}, {"rate": 0.99, "cpu_us": 0.81}),
        ("grpc10", "h2load_1x10", {"rate": 0.9}, {"rate": 0.89}),
        ("grpc10", "h2load_10x1", {"rate": 0.9}, {"rate": 0.89}),
    ],
)
def test_the_grpc_goals(a: str, b: str, passing: dict[str, float], failing: dict[str, float]) -> None:
    for attr, value in passing.items():
        (goal,) = [r for r in ratios() if r.a == (a, attr) and r.b == (b, attr) and r.goal is not None]
        assert goal.passed is not None and goal.passed(value) and not goal.passed(failing[attr])
        if b.startswith("h2load"):
            assert goal.each is not None and goal.each(0.8) and not goal.each(0.79)


def test_the_grpc_open_loop_goals_apply_to_the_message_the_null_server_can_take_at_that_rate() -> None:
    """The goals judge the 64-byte tensor's open loop, beside h2load's rate on that server and message; the
    602 KB image's open loop, which that server cannot answer 5,000 times a second, has none."""
    goals = {r.a: r for r in ratios() if r.goal is not None and r.clients() and r.clients()[0].startswith("grpc_open")}
    assert set(goals) == {("grpc_open10_small", "achieved_rate"), ("grpc_open10_small", "lag_p99_ms")}
    achieved, lag = goals[("grpc_open10_small", "achieved_rate")], goals[("grpc_open10_small", "lag_p99_ms")]
    assert achieved.passed is not None and achieved.passed(0.99) and not achieved.passed(0.989)
    assert lag.passed is not None and lag.passed(1.0) and not lag.passed(1.01)
    (headroom,) = [r for r in ratios() if r.a == ("h2load_small_1x10", "rate")]
    assert headroom.b == 5000.0 and headroom.goal is None
    assert {r.a for r in ratios() if set(r.clients()) == {"grpc_open10"}} == {
        ("grpc_open10", "achieved_rate"),
        ("grpc_open10", "lag_p99_ms"),
    }


def test_a_whole_run_drops_the_partial_runs_section_and_keeps_the_others(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    sections.write_section(results, "bench.master_merge", "## master")
    sections.write_section(results, PARTIAL_SECTION, "## partial")
    kept = sections.kept_sections(results, skip=(PARTIAL_SECTION,))
    assert "## master" in kept and "## partial" not in kept
    assert "## partial" in sections.kept_sections(results)


def test_a_comparison_with_a_client_the_run_did_not_measure_is_left_out() -> None:
    measured = Client("grpc10", "gRPC", "ours", lambda _d: Result())
    measured.results.append(Result(rate=900.0, cpu_us=230.0))
    tables, verdicts = render([measured], [], 1)
    assert "ours 10 users / h2load" not in tables  # h2load_* did not run (--only grpc10)
    assert verdicts == []
    h2load = Client("h2load_1x10", "gRPC", "h2load", lambda _d: Result())
    h2load.results.append(Result(rate=500.0, cpu_us=400.0))
    tables, verdicts = render([measured, h2load], [], 1)
    assert "| gRPC: ours 10 users / h2load 1 connection x 10 streams (req/s) | 1.80x |" in tables
    assert ("gRPC: ours 10 users / h2load 1 connection x 10 streams (req/s)", True) in verdicts
