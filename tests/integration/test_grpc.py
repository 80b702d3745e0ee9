"""Triton over gRPC (``--protocol grpc``), against the real Triton's gRPC endpoint: the bytes Triton receives
are those the HTTP path sends, for every datatype, layout and batch the echo-checksum models take; a Locust
run works with every measurement; faults are clean failures; users are as concurrent as over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from locust_inference import decode_triton_grpc_response
from locust_inference._native import (
    ConfigError,
    Endpoint,
    RequestSlot,
    Stream,
    encode_triton_grpc_inputs,
    grpc_model_metadata,
)
from locust_inference.backends import Target, prepare
from locust_inference.options import resolve
from support.own_model import answers, image_set, imagenet, settings, stretched, words
from support.runs import COUNTED, COUNTED_GUARD, assert_clean_failure, grpc_run, grpc_url
from test_locust_e2e import TIMELINE_LOCUSTFILE, most_in_flight
from test_own_model import _two_inputs_file

from servers.launch import RunningServer, free_port, triton_server
from servers.models import checksum_words as float32_checksum


def grpc_answers(target: Target, count: int) -> list[tuple[int, list[list[int]]]]:
    """Sends ``count`` requests one after the other as one user; each answer's (input index, checksum words
    of every batch item), decoded from the ModelInferResponse."""
    slot = RequestSlot()
    out = []
    for _ in range(count):
        slot.submit(target.endpoint)
        outcome = slot.wait(60)
        assert outcome is not None and outcome.ok, outcome
        rows = decode_triton_grpc_response(outcome.body)["CHECKSUM"]
        out.append((outcome.input_index, [[int(v) for v in row[:16]] for row in rows]))
    return out


def over_both(triton, model: str, count: int, **options) -> tuple[list, list]:
    """The answers of ``count`` requests over gRPC and over HTTP, the same options on both."""
    target = prepare(settings(grpc_url(triton), model, protocol="grpc", **options))
    assert target.url == f"{grpc_url(triton)}/inference.GRPCInferenceService/ModelInfer"
    http = prepare(settings(triton.url, model, **options))
    return grpc_answers(target, count), [(i, [w]) for i, w in answers(http, count)]


def test_uint8_nhwc_images_arrive_as_over_http(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    grpc, http = over_both(triton, "echo_uint8_nhwc", 4, image=str(tmp_path / "set"))
    expected = [words(stretched(f, 224, 224)) for f in files]
    assert grpc == http == [(i, [expected[i]]) for i in [0, 1, 2, 0]]


def test_fp16_images_arrive_as_over_http(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    grpc, http = over_both(triton, "echo_fp16", 3, image=str(tmp_path / "set"))
    assert grpc == http == [(i, [words(imagenet(f).astype("<f2"))]) for i, f in enumerate(files)]


def test_fp32_batches_arrive_as_over_http(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    target = prepare(settings(grpc_url(triton), "checksum", protocol="grpc", image=str(tmp_path / "set"), batch_size=2))
    per_image = [float32_checksum(imagenet(f)) for f in files]
    assert grpc_answers(target, 3) == [
        (0, [per_image[0], per_image[1]]),
        (1, [per_image[1], per_image[2]]),
        (2, [per_image[2], per_image[0]]),
    ]


def test_two_inputs_arrive_as_written(triton, tmp_path: Path) -> None:
    a, b = _two_inputs_file(tmp_path / "data.json")
    grpc, http = over_both(triton, "echo_two_inputs", 3, input_data=str(tmp_path / "data.json"))
    expected = [words(a[0], b[0]), words(a[1], b[1])]
    assert grpc == http == [(0, [expected[0]]), (1, [expected[1]]), (0, [expected[0]])]


def test_an_open_loop_stream_walks_the_set_in_send_order(triton, tmp_path: Path) -> None:
    """The open loop's Stream sends over gRPC as over HTTP (test_own_model): one out at a time, the rest
    queued, so answers come back in send order and carry the set's images in turn."""
    files = image_set(tmp_path / "set")
    target = prepare(settings(grpc_url(triton), "echo_uint8_nhwc", protocol="grpc", image=str(tmp_path / "set")))
    stream = Stream(target.endpoint, 50.0, max_in_flight=1, overload="queue")
    completions = []
    while len(completions) < 7:
        completions += stream.wait(10)
    stream.stop()
    assert [c.intended for c in completions] == sorted(c.intended for c in completions)
    expected = [words(stretched(f, 224, 224)) for f in files]
    got = [
        (c.outcome.input_index, [int(v) for v in decode_triton_grpc_response(c.outcome.body)["CHECKSUM"][0][:16]])
        for c in completions[:7]
    ]
    assert got == [(i, expected[i]) for i in [0, 1, 2, 0, 1, 2, 0]]


def tiny_onnx(triton) -> tuple[str, str, list[int], str, list[int]]:
    """tiny_onnx's input name, datatype and shape (batch 1), and its output's name and shape."""
    return tiny_onnx_at(grpc_url(triton))


def tiny_onnx_at(url: str, headers: list[tuple[str, str]] | None = None) -> tuple[str, str, list[int], str, list[int]]:
    code, _, meta = grpc_model_metadata(url, "tiny_onnx", headers=headers or [])
    assert code == 0 and meta is not None
    (inp,), (out,) = meta["inputs"], meta["outputs"]
    return inp["name"], inp["datatype"], [1, *inp["shape"][1:]], out["name"], [1, *out["shape"][1:]]


def endpoint(triton, model: str = "tiny_onnx", output_shape: list[int] | None = None, **options) -> Endpoint:
    """An endpoint sending tiny_onnx's input (zeros) to ``model``, expecting tiny_onnx's output."""
    return endpoint_at(grpc_url(triton), model, output_shape, **options)


def endpoint_at(url: str, model: str = "tiny_onnx", output_shape: list[int] | None = None, **options) -> Endpoint:
    name, datatype, shape, output, out_shape = tiny_onnx_at(url)
    tensor = np.zeros(shape, "<f4").tobytes()
    return Endpoint(
        f"{url}/inference.GRPCInferenceService/ModelInfer",
        encode_triton_grpc_inputs(model, [(name, datatype, shape, tensor)], [output]),
        protocol="grpc",
        outputs=[(output, "FP32", output_shape or out_shape)],
        **options,
    )


def one(endpoint: Endpoint):
    slot = RequestSlot()
    slot.submit(endpoint)
    outcome = slot.wait(60)
    assert outcome is not None
    return outcome


def test_a_request_the_server_refuses_names_the_code_and_triton_s_message(triton) -> None:
    outcome = one(endpoint(triton, "no_such_model"))
    assert outcome.error_kind == "grpc-status"
    assert str(outcome.exception) == (
        f"gRPC NOT_FOUND (5) from {grpc_url(triton)}/inference.GRPCInferenceService/ModelInfer: "
        "Request for unknown model: 'no_such_model' is not found"
    )
    assert one(endpoint(triton)).ok  # the same request to a model that exists


def test_a_response_over_the_limit_is_a_failure(triton) -> None:
    # tiny_onnx answers 1000 FP32 values: over 4000 bytes of message
    outcome = one(endpoint(triton, max_response_bytes=4000))
    assert outcome.error_kind == "too-large", outcome
    assert "larger than the limit of 4000 bytes" in str(outcome.exception)
    assert one(endpoint(triton, max_response_bytes=8000)).ok


def test_a_deadline_passed_is_a_timeout(triton) -> None:
    """The request timeout is the call's deadline, sent as grpc-timeout: whether Triton's DEADLINE_EXCEEDED or the
    client's own timer ends the call first, it is the one timeout failure, named as gRPC names it."""
    url = f"{grpc_url(triton)}/inference.GRPCInferenceService/ModelInfer"
    outcome = one(endpoint(triton, "sleep_20ms", timeout=0.005))  # its start-up calls made within 60 s
    assert outcome.error_kind == "timeout", outcome
    assert str(outcome.exception) == f"no complete response from {url} within 0.005 s (gRPC DEADLINE_EXCEEDED)"


def test_a_wrong_output_is_a_failure_naming_it(triton) -> None:
    *_, output, out_shape = tiny_onnx(triton)
    wrong = [1, out_shape[1] - 1]
    outcome = one(endpoint(triton, output_shape=wrong))
    assert outcome.error_kind == "protocol"
    assert str(outcome.exception) == f'output "{output}" has shape {out_shape}, expected {wrong}'


def test_a_missing_model_stops_the_start_in_one_line(triton, tmp_path: Path) -> None:
    run = grpc_run(triton, tmp_path, "resnet51")
    assert_clean_failure(run, f"Triton at {grpc_url(triton)} (gRPC) has no model 'resnet51'", "MODEL_NAME")


def test_an_unreachable_endpoint_stops_the_start_in_one_line(tmp_path: Path) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    run = grpc_run(host, tmp_path, "m")
    assert_clean_failure(run, f"cannot reach Triton's gRPC endpoint at {host}", "cannot connect")


def test_a_locust_run_over_grpc_measures_as_over_http(triton, tmp_path: Path) -> None:
    """DEBUG_REQUESTS logs every request with the user's headers redacted; latency.json says gRPC and has
    Triton's own statistics, read over gRPC's ModelStatistics; --expect-top1 checks the answers."""
    run = grpc_run(
        triton,
        tmp_path,
        "tiny_onnx",
        "--header",
        "X-Api-Key: hunter2",
        "--expect-top1",
        "auto",
        user="LowUser",
        env={"DEBUG_REQUESTS": "true", "INFERENCE_AUTH_TOKEN": "s3cr3t-token", "STOP_AFTER": "10"},
        locustfile=COUNTED,
        run_time=COUNTED_GUARD,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("triton/tiny_onnx")
    assert int(stats["Request Count"]) > 0
    assert int(stats["Failure Count"]) == 0, run.failures()
    document = json.loads((tmp_path / "latency.json").read_text())
    assert document["protocol"] == "grpc"
    assert document["host"] == grpc_url(triton)
    requests = document["locust"]["requests"]
    assert document["requests"]["triton/tiny_onnx"]["count"] == requests > 0
    assert document["server_stats"]["inference_count"] >= requests
    lines = [line for line in run.stderr.splitlines() if "locust_inference.debug" in line]
    assert len(lines) == requests
    for needle in (f"{grpc_url(triton)}/inference.GRPCInferenceService/ModelInfer", "status=200", "<redacted>"):
        assert needle in lines[0], (needle, lines[0])
    assert "s3cr3t-token" not in run.stderr and "hunter2" not in run.stderr


def test_ten_users_in_one_process_have_ten_requests_in_flight_at_once(triton, tmp_path: Path) -> None:
    """As over HTTP (test_locust_e2e): ten users sharing one HTTP/2 connection each have their request out
    on the sleep_20ms model at the same moment, timed on the client."""
    report = tmp_path / "timeline.json"
    run = grpc_run(
        triton,
        tmp_path,
        "sleep_20ms",
        "--grpc-connections",
        "1",
        locustfile=TIMELINE_LOCUSTFILE,
        env={"TIMELINE_REPORT": str(report)},
        users=10,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    intervals = json.loads(report.read_text())["intervals"]
    assert most_in_flight(intervals) == 10, f"{len(intervals)} requests"


@pytest.mark.parametrize(
    ("options", "host", "error"),
    [
        ({"server": "litserve"}, None, "--protocol grpc applies to --server triton, not litserve"),
        (
            {"triton_format": "json"},
            None,
            "--triton-format json applies to --protocol http: gRPC sends tensors as raw bytes",
        ),
        ({"grpc_connections": "0"}, None, "--grpc-connections must be a whole number from 1 to 64, not '0'"),
        ({"protocol": "grcp"}, None, "--protocol must be http or grpc, not 'grcp'"),
    ],
)
def test_options_that_cannot_work_over_grpc_are_refused(options: dict, host: str | None, error: str) -> None:
    namespace = SimpleNamespace(**{"server": "triton", "model_name": "m", "protocol": "grpc", **options})
    with pytest.raises(ConfigError) as raised:
        resolve(namespace, host, environ={})
    assert str(raised.value) == error


def test_the_endpoint_bounds_its_connections() -> None:
    url = "http://127.0.0.1:8001/inference.GRPCInferenceService/ModelInfer"
    for connections in (0, 65, 2**40):
        with pytest.raises(ValueError, match=f"grpc_connections must be from 1 to 64, not {connections}"):
            Endpoint(url, b"", protocol="grpc", grpc_connections=connections)
    assert Endpoint(url, b"", protocol="grpc", grpc_connections=64).body_count == 1


def test_grpc_defaults_to_triton_s_grpc_port() -> None:
    resolved = resolve(SimpleNamespace(server="triton", model_name="m", protocol="grpc"), None, environ={})
    assert (resolved.host, resolved.protocol, resolved.grpc.connections) == ("http://127.0.0.1:8001", "grpc", 4)
    assert resolve(SimpleNamespace(server="triton", model_name="m"), None, environ={}).protocol == "http"


@pytest.fixture()
def triton_tls(
    own_triton: RunningServer, own_triton_grpc_tls: tuple[str, dict[str, Path]]
) -> tuple[str, dict[str, Path]]:
    """The session's second Triton (tiny_onnx), whose gRPC endpoint speaks TLS with a self-signed certificate
    for 127.0.0.1; its gRPC URL and the certificate's files."""
    return own_triton_grpc_tls


def test_tls_with_the_certificate_trusted_or_unchecked(triton_tls) -> None:
    url, cert = triton_tls
    for options in ({"ca_file": str(cert["cert"])}, {"insecure": True}):
        target = prepare(settings(url, "tiny_onnx", protocol="grpc", **options))
        assert one(target.endpoint).ok, options


def test_tls_with_a_certificate_not_trusted_stops_the_start_saying_so(triton_tls) -> None:
    url, _ = triton_tls
    with pytest.raises(ConfigError) as raised:
        prepare(settings(url, "tiny_onnx", protocol="grpc"))
    assert str(raised.value).startswith(
        f"TLS certificate of {url}/inference.GRPCInferenceService/ModelMetadata not accepted: "
    ), raised.value
    assert "pass --ca-file" in str(raised.value)


def test_headers_go_as_metadata_that_triton_checks(tmp_path: Path) -> None:
    """Triton's restricted inference API (TRITON_INFERENCE_TOKEN in servers/triton.py) answers only calls
    whose metadata carries the token (over gRPC under the name Triton gives it there): --header reaches
    Triton as metadata, and its refusal is a failure naming the code and Triton's words."""
    port = free_port()
    with triton_server(
        models=["tiny_onnx"], extra_args=["--grpc-port", str(port)], env={"TRITON_INFERENCE_TOKEN": "t0k"}
    ):
        url = f"http://127.0.0.1:{port}"
        target = prepare(
            settings(url, "tiny_onnx", protocol="grpc", header=["triton-grpc-protocol-triton-access-token: t0k"])
        )
        assert one(target.endpoint).ok
        refused = one(endpoint_at(url))
    assert refused.error_kind == "grpc-status"
    assert str(refused.exception) == (
        f"gRPC UNAVAILABLE (14) from {url}/inference.GRPCInferenceService/ModelInfer: "
        "This protocol is restricted, expecting header 'triton-grpc-protocol-triton-access-token'"
    )


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_arrive_as_over_http(triton, tmp_path: Path, algorithm: str) -> None:
    """--grpc-compression-algorithm: Triton decompresses each message into the bytes HTTP sends."""
    target = prepare(settings(grpc_url(triton), "checksum", protocol="grpc", grpc_compression_algorithm=algorithm))
    http = prepare(settings(triton.url, "checksum"))
    assert grpc_answers(target, 3) == [(i, [w]) for i, w in answers(http, 3)]


def test_compression_applies_to_grpc_only() -> None:
    options = SimpleNamespace(server="triton", model_name="m", grpc_compression_algorithm="gzip")
    with pytest.raises(ConfigError, match=r"^--grpc-compression-algorithm applies to --protocol grpc$"):
        resolve(options, None, environ={})
    options.protocol, options.grpc_compression_algorithm = "grpc", "zstd"
    with pytest.raises(ConfigError, match="must be none, gzip, deflate, not 'zstd'"):
        resolve(options, None, environ={})
