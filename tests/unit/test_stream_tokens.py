"""Token streaming through the native API, against a hand-written SSE server (over http:// and https://,
the two transports): only for exact timings (events a known pause apart) and a cut stream, which real
servers do not produce on cue. The reference LLM servers are tested end to end elsewhere."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from locust_inference._native import (
    Completion,
    CountHistogram,
    Endpoint,
    Measurements,
    ProtocolError,
    RequestSlot,
    Stream,
)
from support.certs import self_signed

PAUSE_S = 0.02
USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


def answer(conn: socket.socket, path: str) -> None:
    """Three content events PAUSE_S apart, then usage and [DONE] (path /ok), or the connection closed
    after two (path /cut)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for i, text in enumerate(("Hel", "lo", "!")):
        if path == "/cut" and i == 2:
            return
        time.sleep(PAUSE_S)
        conn.sendall(chunk(event(text)))
    conn.sendall(chunk(b"data: " + json.dumps({"choices": [], "usage": USAGE}).encode() + b"\n\ndata: [DONE]\n\n"))
    conn.sendall(b"0\r\n\r\n")


def serve_connection(conn: socket.socket) -> None:
    # a client that stops (an open-loop stream abandons its request in flight) closes mid-answer
    with conn, contextlib.suppress(OSError):
        reader = conn.makefile("rb")
        while True:
            request_line = reader.readline()
            if not request_line:
                return
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            reader.read(length)
            path = request_line.split()[1].decode()
            answer(conn, path)
            if path == "/cut":
                return


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return self_signed(tmp_path_factory.mktemp("pki"), "127.0.0.1", "IP:127.0.0.1")


@pytest.fixture(scope="module", params=["http", "https"])
def sse_server(request: pytest.FixtureRequest, cert: dict[str, Path]) -> Iterator[SseServer]:
    tls = None
    if request.param == "https":
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert["cert"], cert["key"])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def handshake_and_serve(conn: socket.socket) -> None:
        if tls is not None:
            try:
                conn = tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
        serve_connection(conn)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=handshake_and_serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield SseServer(f"{request.param}://127.0.0.1:{port}", cert["cert"] if tls is not None else None)
    listener.close()


@dataclass(frozen=True)
class SseServer:
    url: str
    ca_file: Path | None  # what its endpoints trust over https

    def endpoint(self, path: str) -> Endpoint:
        return Endpoint(
            f"{self.url}{path}", b'{"stream": true}', protocol="openai", stream=True, timeout=30.0, ca_file=self.ca_file
        )


def test_tokens_are_timed_as_they_arrive_and_recorded(sse_server: SseServer) -> None:
    ep = sse_server.endpoint("/ok")
    slot = RequestSlot()
    slot.submit(ep)
    outcome = slot.wait(timeout=30)
    assert outcome is not None and outcome.ok, outcome
    assert (outcome.output_tokens, outcome.input_tokens, outcome.token_source, outcome.chunks) == (5, 7, "usage", 3)
    assert outcome.ttft is not None and outcome.tpot is not None
    # the server wrote chunk i after i + 1 pauses: only these bounds hold whatever the machine's load
    assert outcome.ttft >= PAUSE_S * 1000
    assert len(outcome.itl) == 2
    last = outcome.ttft + sum(outcome.itl)
    assert last >= 3 * PAUSE_S * 1000
    assert outcome.tpot == pytest.approx(sum(outcome.itl) / 4, abs=1e-3)  # 5 tokens by usage: 4 steps
    ep.record(outcome)
    m = Measurements.from_bytes(ep.take().to_bytes())  # as the master gets it
    assert (m.ttft.count, m.itl.count, m.tpot.count) == (1, 2, 1)
    assert m.ttft.percentile(100) == pytest.approx(outcome.ttft, rel=1e-3)
    assert m.itl.percentile(100) == pytest.approx(max(outcome.itl), rel=1e-3, abs=1e-3)
    assert (m.output_tokens.count, m.output_tokens.total, m.input_tokens.total) == (1, 5, 7)
    assert m.tokens == {
        "output_tokens_total": 5,
        "output_tokens_failed": 0,
        "token_requests": 1,
        "approximate_requests": 0,
        "no_token_requests": 0,
        "usage_disagreements": 0,
    }


def test_a_cut_stream_fails_with_its_tokens_counted(sse_server: SseServer) -> None:
    ep = sse_server.endpoint("/cut")
    slot = RequestSlot()
    slot.submit(ep)
    outcome = slot.wait(timeout=30)
    assert outcome is not None and not outcome.ok
    assert outcome.error_kind == "transport", outcome.error_detail
    assert (outcome.output_tokens, outcome.token_source, outcome.chunks) == (2, "chunks", 2)
    ep.record(outcome, success=False)
    m = ep.take()
    assert (m.total.count, m.ttft.count, m.output_tokens.count) == (0, 0, 0)
    assert m.tokens["output_tokens_failed"] == 2 and m.tokens["output_tokens_total"] == 0


def test_an_open_loop_ttft_counts_from_the_intended_send(sse_server: SseServer) -> None:
    # one in flight, due every 10 ms, each answer taking 3 pauses: the second request waits in the queue
    # for the first, so it leaves late and its TTFT from the intended send holds that lag
    ep = sse_server.endpoint("/ok")
    stream = Stream(ep, 100.0, max_in_flight=1, overload="queue")
    try:
        completions: list[Completion] = []
        while len(completions) < 2:
            completions += stream.wait(timeout=30)
        for c in completions:
            stream.record(c)
    finally:
        stream.stop()
    late = completions[1]
    assert late.outcome.ok and late.ttft is not None and late.outcome.ttft is not None
    assert late.lag >= 3 * PAUSE_S * 1000 - 10  # sent when the first was answered, due 10 ms after it
    assert late.ttft == pytest.approx(late.lag + late.outcome.ttft, abs=1e-3)
    m = ep.take()
    assert m.ttft.count == len(completions)
    assert m.ttft.percentile(100) == pytest.approx(max(c.ttft or 0 for c in completions), rel=1e-3)


def test_a_count_histogram_holds_counts_as_they_are() -> None:
    h = CountHistogram()
    for value in (0, 1, 5, 5, 2047):
        h.record(value)
    assert (h.count, h.total, h.percentile(50)) == (5, 2058, 5)
    assert (h.summary()["min"], h.summary()["max"]) == (0.0, 2047.0)
    assert h.summary()["mean"] == pytest.approx(2058 / 5)
    back = CountHistogram.from_bytes(h.to_bytes())
    assert back == h
    back.add(h)
    assert (back.count, back.total) == (10, 4116)
    assert CountHistogram().summary() == {}
    with pytest.raises(ProtocolError, match="not a serialised latency histogram"):
        CountHistogram.from_bytes(b"nope")


def test_stream_needs_a_generative_protocol() -> None:
    needs = "stream=True needs protocol 'openai', 'triton-generate', 'grpc-generate' or 'grpc-stream', not \"none\""
    with pytest.raises(ValueError, match=f"^{re.escape(needs)}$"):
        Endpoint("http://127.0.0.1:1/v1/chat/completions", b"{}", stream=True)
    unknown = "'openai', 'triton-generate' or 'none', not \"vllm\""
    with pytest.raises(ValueError, match=f"{re.escape(unknown)}$"):
        Endpoint("http://127.0.0.1:1/v1/chat/completions", b"{}", protocol="vllm")
    assert Endpoint("http://127.0.0.1:1/generate", b"{}", protocol="triton-generate").body_count == 1
