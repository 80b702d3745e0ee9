"""A hand-written misbehaving server, for fault injection only: real servers don't fail on cue.

It speaks just enough of the KServe v2 HTTP protocol: ``GET /v2/models/<fault>`` answers valid
metadata for any model name, and ``POST /v2/models/<fault>/infer`` answers according to the fault
the model name selects (see ``FAULTS``). Model ``ok`` answers correctly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import ssl
import string
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

OUTPUT = "output__0"
GOOD_OUTPUT = np.linspace(-1.0, 1.0, 1000, dtype=np.float32).reshape(1, 1000)


def metadata(model: str) -> bytes:
    return json.dumps(
        {
            "name": model,
            "versions": ["1"],
            "platform": "fault",
            "inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, 1000]}],
        }
    ).encode()


def binary_response(
    model: str, data: bytes | None = None, datatype: str = "FP32", shape: list[int] | None = None
) -> tuple[bytes, int]:
    data = GOOD_OUTPUT.tobytes() if data is None else data
    header = json.dumps(
        {
            "model_name": model,
            "outputs": [
                {
                    "name": OUTPUT,
                    "datatype": datatype,
                    "shape": shape or [1, 1000],
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
        }
    ).encode()
    return header + data, len(header)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    served = False  # whether this connection has answered a request (close_when_reused)
    server: FaultServer

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)
        self.server.connections_opened += 1

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v2", "models"]:
            self._send(200, metadata(parts[2]))
        elif self.path == "/v2/health/ready":
            self._send(200, b"")
        elif len(parts) == 2 and parts[0] == "metrics" and parts[1] in METRICS_FAULTS:
            self._send(200, METRICS_FAULTS[parts[1]]())
        elif len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] in ("stats", "config"):
            self._statistics(parts[2], parts[3])
        else:
            self._send(404, b'{"error":"not found"}')

    def _statistics(self, model: str, what: str) -> None:
        """Triton's statistics and configuration, for SILENT_AT_END alone: an ensemble of ENSEMBLE_STEPS
        composing models, each of whose statistics is answered on its first read and never again (the
        connection is held until the server stops), as a server that stalls as the run ends."""
        ensemble, _, step = model.partition("__step")
        if ensemble != SILENT_AT_END:
            self._send(404, b'{"error":"no statistics"}')
            return
        if what == "config" and not step:
            steps = [{"model_name": f"{SILENT_AT_END}__step{i}", "model_version": -1} for i in range(ENSEMBLE_STEPS)]
            self._send(
                200,
                json.dumps({"name": model, "platform": "ensemble", "ensemble_scheduling": {"step": steps}}).encode(),
            )
            return
        if what != "stats":
            self._send(404, b'{"error":"no configuration"}')
            return
        with self.server.stats_lock:
            reads = self.server.stats_reads[model] = self.server.stats_reads.get(model, 0) + 1
        if step and reads > 1:
            self.server.stopping.wait()
            self.close_connection = True
            return
        count = 0 if step else self.server.requests  # the ensemble counts the inferences served so far
        phases = {p: {"count": count, "ns": 1000 * count} for p in STATS_PHASES}
        entry = {"name": model, "version": "1", "inference_count": count, "execution_count": count}
        entry["inference_stats"] = phases
        self._send(200, json.dumps({"model_stats": [entry]}).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.last_body = self.rfile.read(length)
        self.server.body_digests.append(hashlib.sha256(self.server.last_body).digest())
        self.server.last_path = self.path
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v2", "models"] or parts[3] != "infer":
            self._send(404, b'{"error":"not found"}')
            return
        self.server.requests += 1
        self.server.last_headers = dict(self.headers.items())
        fault = FAULTS.get(parts[2])
        if fault is None:
            self._send(400, f'{{"error":"unknown fault {parts[2]}"}}'.encode())
            return
        try:
            fault(self, parts[2])
        finally:
            self.server.handled()


def _ok(h: Handler, model: str) -> None:
    body, hl = binary_response(model)
    h._send(200, body, {"Inference-Header-Content-Length": str(hl)})


def _status(code: int) -> Callable[[Handler, str], None]:
    def fault(h: Handler, model: str) -> None:
        h._send(code, f'{{"error":"injected failure {code} for {model}"}}'.encode())

    return fault


def _status_with_request_id(h: Handler, model: str) -> None:
    """500 with an error page that differs in every answer, as gateways' pages do: a request id, a
    sequence number and a timestamp. The ids served are kept in ``request_ids``."""
    request_id = str(uuid.uuid4())
    h.server.request_ids.append(request_id)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
    body = {"error": "injected failure", "request_id": request_id, "seq": len(h.server.request_ids), "time": stamp}
    h._send(500, json.dumps(body).encode())


def _status_with_random_word(h: Handler, model: str) -> None:
    """500 with a random word of letters in the page: nothing tells it from prose, no rule normalises it."""
    word = "".join(random.choices(string.ascii_lowercase, k=16))
    h.server.request_ids.append(word)
    h._send(500, f'{{"error":"injected failure","token":"{word}"}}'.encode())


def _slow(h: Handler, model: str) -> None:
    time.sleep(h.server.slow_seconds)
    _ok(h, model)


def _close_mid_body(h: Handler, model: str) -> None:
    body, hl = binary_response(model)
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Inference-Header-Content-Length", str(hl))
    h.end_headers()
    h.wfile.write(body[:100])
    h.wfile.flush()
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def _header_length(value: str | None) -> Callable[[Handler, str], None]:
    def fault(h: Handler, model: str) -> None:
        body, _ = binary_response(model)
        headers = {} if value is None else {"Inference-Header-Content-Length": value.format(past=len(body) + 100)}
        h._send(200, body, headers)

    return fault


def _truncated_output(h: Handler, model: str) -> None:
    body, hl = binary_response(model)
    body = body[: len(body) - 2000]
    h._send(200, body, {"Inference-Header-Content-Length": str(hl)})


def _invalid_json(h: Handler, model: str) -> None:
    h._send(200, b'{"outputs": [ not json', {"Inference-Header-Content-Length": "22"})


def _wrong_datatype(h: Handler, model: str) -> None:
    body, hl = binary_response(model, data=GOOD_OUTPUT.astype(np.float64).tobytes(), datatype="FP64")
    h._send(200, body, {"Inference-Header-Content-Length": str(hl)})


def _wrong_shape(h: Handler, model: str) -> None:
    body, hl = binary_response(model, data=GOOD_OUTPUT[:, :999].tobytes(), shape=[1, 999])
    h._send(200, body, {"Inference-Header-Content-Length": str(hl)})


def _nan_output(h: Handler, model: str) -> None:
    data = GOOD_OUTPUT.copy()
    data[0, 7] = np.nan
    body, hl = binary_response(model, data=data.tobytes())
    h._send(200, body, {"Inference-Header-Content-Length": str(hl)})


def _huge_content_length(h: Handler, model: str) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(1 << 30))
    h.end_headers()
    h.wfile.write(b"x" * 1024)
    h.wfile.flush()
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def _endless_body(h: Handler, model: str) -> None:
    """Chunked body that never stops: only the response-size cap ends it."""
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"y" * 65536
    try:
        for _ in range(4096):  # 256 MiB at most, so a broken client cannot keep this thread forever
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass
    h.close_connection = True


def _ok_then_close(h: Handler, model: str) -> None:
    """A keep-alive response, then the connection closes, as an idle timeout would close it."""
    _ok(h, model)
    h.wfile.flush()
    h.close_connection = True


def _close_when_reused(h: Handler, model: str) -> None:
    """Answers a connection's first request; closes it when a second one arrives on it, as a server
    whose keep-alive timeout fires just as the client sends."""
    if h.served:
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)
        return
    h.served = True
    _ok(h, model)


def _chunked(h: Handler, model: str) -> None:
    """The good response in the chunked transfer coding, in uneven chunks, with a trailer."""
    body, hl = binary_response(model)
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.send_header("Inference-Header-Content-Length", str(hl))
    h.end_headers()
    for start, end in ((0, 1), (1, 1000), (1000, len(body))):
        h.wfile.write(b"%x;ext=1\r\n%s\r\n" % (end - start, body[start:end]))
    h.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")


def _interim_100(h: Handler, model: str) -> None:
    """An unasked-for 100 Continue before the real response."""
    h.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    _ok(h, model)


def _http10_until_close(h: Handler, model: str) -> None:
    """An HTTP/1.0 response without Content-Length: the body ends when the connection does."""
    body, hl = binary_response(model)
    h.wfile.write(b"HTTP/1.0 200 OK\r\nInference-Header-Content-Length: %d\r\n\r\n%s" % (hl, body))
    h.wfile.flush()
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def _trailing_garbage(h: Handler, model: str) -> None:
    """A good response, and 50 ms later (once the client has read the response) bytes nobody asked
    for, which must not be taken for the next response."""
    _ok(h, model)
    h.wfile.flush()
    time.sleep(0.05)
    h.wfile.write(b"HTTP/1.1 200 OK\r\n\r\nstray")


def _not_http(h: Handler, model: str) -> None:
    h.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    h.wfile.flush()
    h.close_connection = True


# An ensemble whose composing models' statistics answer once, then never (Handler._statistics); it infers as "ok".
SILENT_AT_END = "ensemble_silent_at_end"
ENSEMBLE_STEPS = 64  # locust_inference.server_stats.MAX_COMPOSING: the most composing models a read believes
STATS_PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")

# model name -> (behaviour, what the failure message must say)
FAULTS: dict[str, Callable[[Handler, str], None]] = {
    "ok": _ok,
    SILENT_AT_END: _ok,
    "status400": _status(400),
    "status500": _status(500),
    "status503": _status(503),
    "status401": _status(401),
    "status500_request_id": _status_with_request_id,
    "status500_random_word": _status_with_random_word,
    "slow": _slow,
    "close_mid_body": _close_mid_body,
    "header_length_missing": _header_length(None),
    "header_length_text": _header_length("abc"),
    "header_length_negative": _header_length("-5"),
    "header_length_past_end": _header_length("{past}"),
    "truncated_output": _truncated_output,
    "invalid_json": _invalid_json,
    "wrong_datatype": _wrong_datatype,
    "wrong_shape": _wrong_shape,
    "nan_output": _nan_output,
    "huge_content_length": _huge_content_length,
    "endless_body": _endless_body,
    "ok_then_close": _ok_then_close,
    "close_when_reused": _close_when_reused,
    "chunked": _chunked,
    "interim_100": _interim_100,
    "http10_until_close": _http10_until_close,
    "trailing_garbage": _trailing_garbage,
    "not_http": _not_http,
}


def _metric_lines(count: int) -> bytes:
    return b"".join(b'nv_inference_count{model="m%d",version="1"} %d\n' % (i, i) for i in range(count))


# GET /metrics/<fault>: a Prometheus metrics page a real server would not send
METRICS_FAULTS: dict[str, Callable[[], bytes]] = {
    "garbage": lambda: bytes(range(256)) * 64,
    "not_prometheus": lambda: b'nv_inference_count{model="m" 12 oops\n' * 10,
    "huge": lambda: b"# " + b"x" * (5 * 2**20) + b"\n",  # over the 4 MiB read
    "long_line": lambda: b'nv_inference_count{model="' + b"m" * 10_000 + b'"} 1\n',
    "many_samples": lambda: _metric_lines(30_000),  # 1.5 MB, over the 20 000 samples kept
    "none_of_ours": lambda: b"# TYPE other counter\nother 1\n",
}


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Real servers listen with a backlog of hundreds (uvicorn 2048); socketserver's 5 resets some of
    # a burst of new connections, as each concurrent request opens its own.
    request_queue_size = 128

    def __init__(self, port: int = 0, slow_seconds: float = 3.0, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.tls = tls is not None
        self.last_headers: dict[str, str] = {}
        self.last_body = b""
        self.last_path = ""
        self.body_digests: list[bytes] = []
        self.request_ids: list[str] = []
        self.requests = 0
        self.connections_opened = 0
        self.slow_seconds = slow_seconds
        self.connections: set[socket.socket] = set()
        self.faults_done = 0  # infer requests whose fault has written all it writes
        self.connections_closed = 0  # connections this server has closed (or seen closed) in full
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None
        self.stats_reads: dict[str, int] = {}  # GET .../stats per model name (SILENT_AT_END)
        self.stats_lock = threading.Lock()
        self.stopping = threading.Event()  # set by stop(): what a fault holds is let go

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Faults cut connections, and the client gives up on them: the OSErrors that follow are expected."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def handled(self) -> None:
        with self._done:
            self.faults_done += 1
            self._done.notify_all()

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self._done:
            self.connections_closed += 1
            self._done.notify_all()

    def wait_until_closed(self, connections: int, timeout: float = 30.0) -> bool:
        """Waits until ``connections`` connections have been closed on the server's side."""
        with self._done:
            return self._done.wait_for(lambda: self.connections_closed >= connections, timeout)

    def wait_until_done(self, requests: int, timeout: float = 30.0) -> bool:
        """Waits until ``requests`` infer requests have been answered in full, trailing bytes included."""
        with self._done:
            return self._done.wait_for(lambda: self.faults_done >= requests, timeout)

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops like a killed server: the listener closes and open connections are cut."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
