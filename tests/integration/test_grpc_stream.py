"""Decoupled models over Triton's gRPC ``ModelStreamInfer`` (``--protocol grpc --stream``, and ``--api generate
--protocol grpc``), against a real Triton: the reference model ``pulse`` (servers/triton.py: N responses at a
set interval) and the synthetic generator ``synthetic_llm``. Measured times are compared with the models' own
measurement of the same requests (their timing log, ``--timing-log``), with the tolerances the generative
tests use (test_generative.py): time to first response between the model's own and 10 ms above it (the hops
from Triton's front through the Python backend that the model cannot time), inter-response p50 within 0.5 ms
of the model's gaps; never a wall-clock bound.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import GENERATOR_PREFILL_MS, GeneratorServer
from locust_inference._native import (
    ConfigError,
    Endpoint,
    RequestSlot,
    encode_triton_grpc_inputs,
    grpc_model_statistics,
    http_request,
)
from locust_inference.options import resolve
from support.runs import assert_clean_failure, clean_env, run_locust
from test_generative import ITL_TOLERANCE_MS, TTFT_OVERHEAD_MS
from test_locust_e2e import TIMELINE_LOCUSTFILE, most_in_flight

from servers.launch import triton_server

STREAM_RPC = "/inference.GRPCInferenceService/ModelStreamInfer"


@pytest.fixture()
def triton_stream(triton_llm: GeneratorServer) -> GeneratorServer:
    """The session's Triton serving ``pulse`` and ``synthetic_llm``, both logging their own timing."""
    return triton_llm


def grpc_url(server: Any) -> str:
    return f"http://127.0.0.1:{server.grpc_port}"


def pulse_request(count: int, interval_ms: int, size: int = 4, fail_at: int = -1) -> bytes:
    values = {"COUNT": count, "INTERVAL_MS": interval_ms, "SIZE": size, "FAIL_AT": fail_at}
    inputs = [(name, "INT32", [1], np.array([v], dtype="<i4").tobytes()) for name, v in values.items()]
    return encode_triton_grpc_inputs("pulse", inputs, [], stream=True)


def pulse(server: Any, *args: int, **options: Any) -> Endpoint:
    return Endpoint(f"{grpc_url(server)}{STREAM_RPC}", pulse_request(*args), protocol="grpc-stream", **options)


def one(endpoint: Endpoint) -> Any:
    slot = RequestSlot()
    slot.submit(endpoint)
    outcome = slot.wait(60)
    assert outcome is not None
    return outcome


def served(server: Any) -> int:
    """Triton's count of the pulse requests it completed (ModelStatistics over gRPC)."""
    code, message, stats = grpc_model_statistics(grpc_url(server), "pulse")
    assert code == 0, message
    count: int = stats["inference_stats"]["success"]["count"] + stats["inference_stats"]["fail"]["count"]
    return count


def pulse_run(
    tmp_path: Path,
    gen: GeneratorServer,
    count: int,
    interval_ms: int,
    users: int,
    *args: str,
    user: str = "HighUser",
    **more: Any,
) -> Any:
    """A Locust run of ``users`` ``user``s over ``--protocol grpc --stream`` asking pulse for ``count``
    responses ``interval_ms`` apart (``--input-data``), with ``args``; ``more``: ``locustfile`` and environment
    variables."""
    data = tmp_path / "pulse.json"
    data.write_text(
        json.dumps({"data": [{"COUNT": [count], "INTERVAL_MS": [interval_ms], "SIZE": [16], "FAIL_AT": [-1]}]})
    )
    locustfile = more.pop("locustfile", None)
    return run_locust(
        tmp_path,
        "--host",
        grpc_url(gen.server),
        "--protocol",
        "grpc",
        "--stream",
        "--input-data",
        str(data),
        *args,
        user,
        env=clean_env(SERVER="triton", MODEL_NAME="pulse", **more),
        users=users,
        run_time="3s",
        **({"locustfile": locustfile} if locustfile else {}),
    )


def test_every_response_is_counted_and_triton_counts_every_request_once(triton_stream: GeneratorServer) -> None:
    """N responses each, exactly, and Triton saw each request once (its statistics count requests: the
    Python backend reports no per-response statistics)."""
    before = served(triton_stream.server)
    endpoint = pulse(triton_stream.server, 7, 5)
    outcomes = [one(endpoint) for _ in range(3)]
    for outcome in outcomes:
        assert outcome.ok, outcome
        assert (outcome.chunks, outcome.output_tokens, outcome.token_source) == (7, 7, "chunks")
        assert len(outcome.itl) == 6
        assert outcome.ttft is not None and outcome.ttft <= outcome.response_time
    assert served(triton_stream.server) - before == 3


def test_a_locust_run_times_each_response_as_the_model_sent_it(triton_stream: GeneratorServer, tmp_path: Path) -> None:
    """--protocol grpc --stream: time to first response and between responses as the model measured them,
    Locust's response time (the final response) at least N intervals, the count exact."""
    count, interval_ms = 8, 10
    mark = triton_stream.mark()
    run = pulse_run(tmp_path, triton_stream, count, interval_ms, users=2)
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("triton/pulse")
    assert int(stats["Failure Count"]) == 0, run.failures()
    entry = json.loads((tmp_path / "latency.json").read_text())["requests"]["triton/pulse"]
    tokens = entry["tokens"]
    assert tokens["token_requests"] == entry["count"] > 0
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == count
    assert tokens["output_tokens_total"] == count * entry["count"]
    timings = triton_stream.timings(mark, "pulse")
    assert timings and all(t["count"] == count for t in timings)
    first = statistics.median(t["first_s"] * 1000 for t in timings)
    ttft = tokens["ttft_ms"]
    assert ttft["p50"] >= interval_ms
    assert first * 0.999 <= ttft["p50"] <= first + TTFT_OVERHEAD_MS["triton"], (ttft, first)
    gaps = statistics.median(g * 1000 for t in timings for g in t["gaps_s"])
    assert abs(tokens["itl_ms"]["p50"] - gaps) <= ITL_TOLERANCE_MS, (tokens["itl_ms"], gaps)
    assert entry["latency_ms"]["min"] >= count * interval_ms  # the final response: after the last one


def test_an_open_loop_stream_accounts_for_every_request_and_response(
    triton_stream: GeneratorServer, tmp_path: Path
) -> None:
    """LowUser open loop (--rate) over --protocol grpc --stream: 50 requests/s offered with one in flight at
    most, each request answered over at least 4 x 10 ms, so about every other one is dropped. Every scheduled
    request ends once (sent or dropped; a sent one completed or unfinished at the stop), every completed one
    carries the model's 4 responses, and Triton's own count lies between the completed and the sent."""
    count, interval_ms = 4, 10
    run = pulse_run(
        tmp_path, triton_stream, count, interval_ms, 1, "--rate", "50", "--max-in-flight", "1", user="LowUser"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stats("triton/pulse")["Failure Count"]) == 0, run.failures()
    document = json.loads((tmp_path / "latency.json").read_text())
    entry = document["requests"]["triton/pulse"]
    ol = entry["open_loop"]
    assert (ol["offered_rate_per_s"], ol["streams"], ol["carried"], ol["pending"]) == (50.0, 1, 0, 0), ol
    assert ol["scheduled"] == ol["sent"] + ol["dropped"] == ol["completed"] + ol["dropped"] + ol["unfinished"], ol
    assert ol["sent"] == ol["completed"] + ol["unfinished"], ol
    # a frame due while the one request is out (at least 40 ms, 2 frames at 20 ms) is dropped
    assert ol["completed"] > 0 and ol["dropped"] >= ol["sent"] - 1, ol
    assert entry["count"] == ol["completed"], (entry["count"], ol)
    tokens = entry["tokens"]
    assert tokens["token_requests"] == entry["count"], tokens
    assert tokens["output_tokens_total"] == count * entry["count"], tokens
    assert tokens["output_tokens_failed"] == 0, tokens
    server_stats = document["server_stats"]  # Triton's ModelStatistics over the run
    assert ol["completed"] <= server_stats["inference_count"] <= ol["sent"], (ol, server_stats)
    # Triton's per-response statistics are shown when it reports them: the reference Triton's Python backend
    # reports none (test_triton_s_statistics_read_over_grpc_are_those_of_http)
    assert not any("response" in key for key in server_stats), server_stats


def test_triton_s_statistics_read_over_grpc_are_those_of_http(triton_stream: GeneratorServer) -> None:
    """ModelStatistics over gRPC gives pulse's entry as Triton's HTTP statistics do, per-response statistics
    (``response_stats``) included: empty, as PyTriton's Triton (2.51) has its Python backend report none."""
    assert one(pulse(triton_stream.server, 3, 1)).ok
    code, message, over_grpc = grpc_model_statistics(grpc_url(triton_stream.server), "pulse")
    assert code == 0, message
    status, body = http_request("GET", f"{triton_stream.url}/v2/models/pulse/stats")
    assert status == 200, body
    over_http = json.loads(body)["model_stats"][0]
    assert over_grpc["response_stats"] == over_http["response_stats"] == {}
    for key in ("inference_count", "execution_count"):
        assert over_grpc[key] == over_http[key] > 0, key
    for phase, duration in over_grpc["inference_stats"].items():
        assert duration == over_http["inference_stats"][phase], phase


def generate_run(tmp_path: Path, host: str, *args: str) -> dict[str, Any]:
    run = run_locust(
        tmp_path,
        "--host",
        host,
        "--api",
        "generate",
        "--max-tokens",
        "16",
        *args,
        "HighUser",
        env=clean_env(SERVER="triton", MODEL_NAME="synthetic_llm"),
        users=2,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stats("triton/synthetic_llm")["Failure Count"]) == 0, run.failures()
    entry: dict[str, Any] = json.loads((run.csv_prefix.parent / "latency.json").read_text())["requests"][
        "triton/synthetic_llm"
    ]
    return entry


def test_generate_over_grpc_gives_the_token_metrics_of_generate_stream(
    triton_stream: GeneratorServer, tmp_path: Path
) -> None:
    """The same prompts and --max-tokens over HTTP generate_stream and over gRPC: the same exact counts, both
    counted by chunks (approximate), and over gRPC the generator's own times within the same tolerances."""
    http = generate_run(tmp_path / "http", triton_stream.url)
    mark = triton_stream.mark()
    grpc = generate_run(tmp_path / "grpc", grpc_url(triton_stream.server), "--protocol", "grpc")
    timings = triton_stream.timings(mark)
    for entry in (http, grpc):
        tokens = entry["tokens"]
        assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == 16
        assert tokens["token_requests"] == tokens["approximate_requests"] == entry["count"] > 0
        assert tokens["approximate"] is True
    ttft, itl = grpc["tokens"]["ttft_ms"], grpc["tokens"]["itl_ms"]
    first = statistics.median(t["first_token_s"] * 1000 for t in timings)
    assert ttft["p50"] >= GENERATOR_PREFILL_MS
    assert first * 0.999 <= ttft["p50"] <= first + TTFT_OVERHEAD_MS["triton"], (ttft, first)
    gaps = statistics.median(g * 1000 for t in timings for g in t["gaps_s"])
    assert abs(itl["p50"] - gaps) <= ITL_TOLERANCE_MS, (itl, gaps)


def test_six_users_in_one_process_have_six_streams_in_flight(triton_stream: GeneratorServer, tmp_path: Path) -> None:
    report = tmp_path / "timeline.json"
    run = pulse_run(
        tmp_path, triton_stream, 5, 20, users=6, locustfile=TIMELINE_LOCUSTFILE, TIMELINE_REPORT=str(report)
    )
    assert run.returncode == 0, run.stderr[-3000:]
    intervals = json.loads(report.read_text())["intervals"]
    assert most_in_flight(intervals) == 6, f"{len(intervals)} requests"


def test_an_error_inside_the_stream_fails_with_its_reason_counting_what_came(triton_stream: GeneratorServer) -> None:
    outcome = one(pulse(triton_stream.server, 5, 5, 4, 2))
    assert outcome.error_kind == "stream", outcome
    # PyTriton sends the model's traceback, cut in the reason so that failures group
    assert "failed: the server sent an error: Traceback (most recent call last)" in str(outcome.exception)
    assert (outcome.chunks, outcome.output_tokens) == (2, 2)


def test_a_response_over_the_limit_is_a_failure(triton_stream: GeneratorServer) -> None:
    outcome = one(pulse(triton_stream.server, 3, 5, 10_000, max_response_bytes=5_000))
    assert outcome.error_kind == "too-large", outcome
    assert outcome.chunks == 0
    assert one(pulse(triton_stream.server, 3, 5, 10_000, max_response_bytes=20_000)).ok


def test_a_deadline_passed_mid_stream_is_a_timeout_and_the_request_went_once(triton_stream: GeneratorServer) -> None:
    """--timeout 0.1 s on 10 responses 20 ms apart: a timeout with the responses before it counted, and
    Triton saw the request once."""
    before = served(triton_stream.server)
    outcome = one(pulse(triton_stream.server, 10, 20, timeout=0.1))
    assert outcome.error_kind == "timeout", outcome
    assert 1 <= outcome.chunks < 10  # how many came in 0.1 s depends on the machine: not none, not all
    assert not outcome.resent
    # the same request again, in full: sent after the abandoned one, it ends after it (the same schedule)
    assert one(pulse(triton_stream.server, 10, 20)).ok
    assert served(triton_stream.server) - before == 2


@pytest.mark.parametrize("count", [40])
def test_a_server_gone_mid_stream_is_a_transport_failure(tmp_path: Path, count: int) -> None:
    """Triton killed while it streams: the request fails (not resent) with the responses before counted."""
    with triton_server(models=["pulse"], log_path=tmp_path / "triton.log") as server:
        endpoint = pulse(server, count, 25)
        slot = RequestSlot()
        slot.submit(endpoint)
        killed = threading.Event()

        def kill() -> None:  # the whole process group: tritonserver and its model stubs
            os.killpg(server.pid, signal.SIGKILL)
            killed.set()

        timer = threading.Timer(0.4, kill)  # 16 of 40 responses sent by then, give or take
        timer.start()
        outcome = slot.wait(60)
        timer.join()
    assert killed.is_set()
    assert outcome is not None and outcome.error_kind == "transport", outcome
    assert not outcome.resent
    assert 1 <= outcome.chunks < count  # how many came before the kill depends on the machine


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"api": "chat"}, "--api chat is OpenAI's HTTP API: --protocol grpc takes --api infer or generate"),
        (
            {"api": "generate", "no_stream": True},
            "--no-stream with --protocol grpc: a decoupled model answers over ModelStreamInfer only "
            "(use --protocol http for /generate)",
        ),
        (
            {"stream": True, "expect_top1": "auto"},
            "--expect-top1 checks one answer: --stream counts a decoupled model's responses",
        ),
        (
            {"stream": True, "protocol": "http"},
            "--stream applies to generative models: add --api chat, completions or generate",
        ),
    ],
)
def test_options_that_make_no_sense_with_the_stream_are_refused(options: dict[str, Any], error: str) -> None:
    namespace = SimpleNamespace(**{"server": "triton", "model_name": "m", "protocol": "grpc", **options})
    with pytest.raises(ConfigError) as raised:
        resolve(namespace, None, environ={})
    assert str(raised.value) == error


def test_the_stream_options_choose_the_rpc() -> None:
    resolved = resolve(SimpleNamespace(server="triton", model_name="m", protocol="grpc", stream=True), None, environ={})
    assert (resolved.grpc.stream, resolved.generative.generative) == (True, False)
    plain = resolve(SimpleNamespace(server="triton", model_name="m", protocol="grpc"), None, environ={})
    assert plain.grpc.stream is False


def test_a_generate_body_gRPC_cannot_carry_stops_the_start(tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        "http://127.0.0.1:1",
        "--protocol",
        "grpc",
        "--api",
        "generate",
        "--sampling",
        'stop=["x"]',
        "HighUser",
        env=clean_env(SERVER="triton", MODEL_NAME="synthetic_llm"),
    )
    assert_clean_failure(run, '"stop" is not a boolean, number or string')


def test_the_protocol_and_the_rpc_must_agree() -> None:
    host = "http://127.0.0.1:8001/inference.GRPCInferenceService"
    for protocol, rpc in (("grpc", "ModelStreamInfer"), ("grpc-stream", "ModelInfer"), ("grpc-generate", "ModelInfer")):
        with pytest.raises(ValueError, match=f'protocol "{protocol}" does not read the answers of'):
            Endpoint(f"{host}/{rpc}", b"", protocol=protocol)
