"""Endpoint + RequestSlot (the native sending path) against real Triton and LitServe, and against the
fault server for what real servers can't be made to do."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import numpy as np
import pytest
from locust_inference import (
    Endpoint,
    ProtocolError,
    RequestError,
    RequestSlot,
    RequestTimeoutError,
)
from support.endpoints import send, triton_endpoint
from support.faults import FaultServer

from servers.launch import free_port


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    server = FaultServer(slow_seconds=3.0).start()
    yield server
    server.stop()


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    outcome = send(triton_endpoint(url, "m"))
    assert outcome.error_kind == "connect" and outcome.status is None
    assert isinstance(outcome.exception, RequestError)
    assert "refused" in str(outcome.exception).lower() and url in str(outcome.exception)


FAULT_EXPECTATIONS = {
    "status400": ("status", RequestError, "HTTP 400 from"),
    "status500": ("status", RequestError, 'HTTP 500 from {url}/v2/models/status500/infer: {{"error":"injected failure'),
    "status503": ("status", RequestError, "injected failure # for status#"),  # numbers normalised: failures group
    "close_mid_body": ("transport", RequestError, "request to {url}/v2/models/close_mid_body/infer failed"),
    "header_length_missing": ("protocol", ProtocolError, "not valid inference JSON"),
    "header_length_text": ("protocol", ProtocolError, '"abc" is not a non-negative integer'),
    "header_length_negative": ("protocol", ProtocolError, '"-5" is not a non-negative integer'),
    "header_length_past_end": ("protocol", ProtocolError, "past the end"),
    "truncated_output": ("protocol", ProtocolError, "binary data truncated"),
    "invalid_json": ("protocol", ProtocolError, "not valid inference JSON"),
    "wrong_datatype": ("protocol", ProtocolError, "is FP64, the model metadata says FP32"),
    "wrong_shape": ("protocol", ProtocolError, "has shape [1, 999], expected [1, 1000]"),
    "nan_output": ("protocol", ProtocolError, "NaN or infinite"),
    "huge_content_length": ("too-large", RequestError, "larger than the limit of 1048576 bytes"),
    "endless_body": ("too-large", RequestError, "larger than the limit of 1048576 bytes"),
    "not_http": ("transport", RequestError, "invalid HTTP response"),
    "slow": ("timeout", RequestTimeoutError, "no complete response from {url}/v2/models/slow/infer within 0.5 s"),
}


@pytest.mark.parametrize("fault", list(FAULT_EXPECTATIONS))
def test_each_fault_is_one_clear_failure_and_the_slot_recovers(faults: FaultServer, fault: str) -> None:
    kind, error_type, message = FAULT_EXPECTATIONS[fault]
    slot = RequestSlot()
    bad = triton_endpoint(faults.url, fault, timeout=0.5, max_response_bytes=1 << 20)
    for _ in range(2):
        outcome = send(bad, slot)
        assert not outcome.ok and outcome.error_kind == kind, outcome
        assert type(outcome.exception) is error_type
        assert message.format(url=faults.url) in str(outcome.exception), str(outcome.exception)
    assert send(triton_endpoint(faults.url, "ok"), slot).ok  # the very next good response succeeds


def test_endpoint_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not http"):
        Endpoint("ftp://127.0.0.1/x", b"")
    with pytest.raises(ValueError, match="invalid URL"):
        Endpoint("not a url", b"")
    with pytest.raises(ValueError, match="timeout"):
        Endpoint("http://127.0.0.1/x", b"", timeout=0)
    with pytest.raises(ValueError, match="protocol"):
        Endpoint("http://127.0.0.1/x", b"", protocol="soap")
    with pytest.raises(ValueError, match="header"):
        Endpoint("http://127.0.0.1/x", b"", headers=[("Bad Name", "v")])
    with pytest.raises(ValueError, match="CA file"):
        Endpoint("https://127.0.0.1/x", b"", ca_file="/nonexistent/ca.pem")


# The plain-http transport (src/transport/plain.rs): what goes on the wire, keep-alive, response framing.


@pytest.mark.parametrize("body_length", [602_112, 1000, 0])
def test_the_request_on_the_wire(faults: FaultServer, body_length: int) -> None:
    body = np.random.default_rng(body_length).bytes(body_length)
    endpoint = Endpoint(
        f"{faults.url}/v2/models/ok/infer?x=1",
        body,
        headers=[("Inference-Header-Content-Length", "0"), ("X-Trace", "abc"), ("Content-Length", "7")],
    )
    assert send(endpoint).ok
    assert faults.last_path == "/v2/models/ok/infer?x=1"
    assert faults.last_body == body
    headers = {k.lower(): v for k, v in faults.last_headers.items()}
    port = faults.url.rsplit(":", 1)[1]
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["content-length"] == str(body_length)  # ours, not the caller's
    assert headers["x-trace"] == "abc" and headers["inference-header-content-length"] == "0"


def _wait_for_fin(server_port: int, timeout: float = 10.0) -> bool:
    """Waits until no client socket to ``server_port`` is still ESTABLISHED (/proc/net/tcp state 01): each has
    received the server's FIN (CLOSE_WAIT) or is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        # the client's side: remote address 127.0.0.1:server_port (hex, little-endian address)
        if not any(r[2] == f"0100007F:{server_port:04X}" and r[3] == "01" for r in rows):
            return True
        time.sleep(0.001)
    return False


@pytest.mark.parametrize(
    ("fault", "results", "connections"),
    [
        ("ok", ["ok", "ok", "ok"], 1),  # keep-alive: every request on one connection
        # Closed after each response, before the next request (as by an idle timeout): noticed before sending.
        ("ok_then_close", ["ok", "ok", "ok"], 3),
        # Closed as the second request arrives: the server may have run it, so it fails, never resent.
        ("close_when_reused", ["ok", "closed after the request was sent", "ok"], 2),
    ],
)
def test_keep_alive_and_connections_the_server_closes(
    faults: FaultServer, fault: str, results: list[str], connections: int
) -> None:
    endpoint, slot = triton_endpoint(faults.url, fault), RequestSlot()
    requests_before, connections_before = faults.requests, faults.connections_opened
    seen = []
    for _ in results:
        closed = faults.connections_closed
        outcome = send(endpoint, slot)
        seen.append("ok" if outcome.ok else str(outcome.exception).split(": ", 1)[1].split(",")[0])
        if fault == "ok_then_close":
            assert faults.wait_until_closed(closed + 1), "the server did not close the connection"
            # and the close reached this side's socket: on a loaded machine loopback delivers the FIN later
            # than the server's close returns, and a request sent before it arrives honestly fails
            assert _wait_for_fin(int(faults.url.rsplit(":", 1)[1])), "the server's FIN never reached the client"
    assert [r.removeprefix("connection ") for r in seen] == results
    assert faults.requests - requests_before == len(results)  # each request reached the server once
    assert faults.connections_opened - connections_before == connections


@pytest.mark.parametrize(
    ("fault", "reused"),
    [("chunked", True), ("interim_100", True), ("http10_until_close", False), ("trailing_garbage", False)],
)
def test_response_framings(faults: FaultServer, fault: str, reused: bool) -> None:
    endpoint, slot = triton_endpoint(faults.url, fault), RequestSlot()
    before = faults.connections_opened
    for _ in range(3):
        done = faults.faults_done + 1
        outcome = send(endpoint, slot)
        assert outcome.ok and outcome.top1 == 999, outcome
        # the next request leaves only once the server has sent whatever it sends after a response
        assert faults.wait_until_done(done), f"the server did not finish {fault}"
    assert faults.connections_opened - before == (1 if reused else 3)


def test_many_connections_send_exact_bodies(faults: FaultServer) -> None:
    """24 connections sending at once from the one prepared buffer: every body arrives intact."""
    body = np.random.default_rng(7).bytes(602_112)
    endpoint = Endpoint(f"{faults.url}/v2/models/ok/infer", body, headers=[("Inference-Header-Content-Length", "0")])
    slots = [RequestSlot() for _ in range(24)]
    start = len(faults.body_digests)
    for _ in range(2):
        for slot in slots:
            slot.submit(endpoint)
        for slot in slots:
            outcome = slot.wait(timeout=60)
            assert outcome is not None and outcome.status == 200, outcome
    digests = faults.body_digests[start:]
    assert len(digests) == 48 and set(digests) == {hashlib.sha256(body).digest()}
