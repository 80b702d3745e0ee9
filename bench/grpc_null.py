"""The null gRPC inference server: one nginx worker speaking cleartext HTTP/2 (h2c, as Triton serves gRPC by
default) that answers Triton's gRPC calls with fixed, valid messages without running anything, like the
null HTTP server of :mod:`bench.nginx`. Every ``ModelInfer`` request body is read in full (the echo
module's ``echo_read_request_body``); the answer is a fixed ``ModelInferResponse`` (output ``x.45`` FP32
[1,2] in ``raw_output_contents``), ``content-type: application/grpc`` and a ``grpc-status: 0`` trailer
(``add_trailer``).

    POST /inference.GRPCInferenceService/ModelMetadata   model m: input x FP32 [-1,3,224,224], output x.45
    POST /inference.GRPCInferenceService/ModelReady      ready
    POST /inference.GRPCInferenceService/ModelInfer      the fixed response
    POST /inference.GRPCInferenceService/ModelStatistics no model statistics (an empty message)
    GET  /status  (a second, HTTP/1.1 port)              nginx's stub_status: requests of both ports

The messages are encoded here (:func:`message`, protobuf's wire format, field numbers of
``proto/grpc_service.proto``) and written into nginx's configuration as quoted strings: nginx takes a
string's bytes as they are, except a quote, a backslash and ``$``, which the messages are checked not to
contain.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.nginx import (
    FAST_MODEL,
    HOST,
    INPUT_NAME,
    OUTPUT_NAME,
    OUTPUT_SHAPE,
    START_TIMEOUT_S,
    NullServer,
    _ready,
    _stop,
    config,
    free_port,
)
from servers import children

__all__ = [
    "SERVICE",
    "SMALL_INPUT",
    "SMALL_MODEL",
    "NullGrpcServer",
    "grpc_frame",
    "infer_response",
    "message",
    "null_grpc_server",
]

SERVICE = "/inference.GRPCInferenceService"
OUTPUT_VALUES = (0.1, 0.9)

Field = tuple[int, "bytes | str | int | list[int] | Message"]


@dataclass(frozen=True)
class Message:
    """A protobuf message: its fields in order, each (field number, value). A ``str``/``bytes``/``Message``
    is length-delimited, an ``int`` a varint, a ``list[int]`` packed varints (``repeated int64``)."""

    fields: list[Field]


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # a negative int64 is its two's complement, ten bytes
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def message(msg: Message) -> bytes:
    """The wire format of ``msg``."""
    out = bytearray()
    for number, value in msg.fields:
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
            continue
        if isinstance(value, Message):
            payload = message(value)
        elif isinstance(value, list):
            payload = b"".join(_varint(v) for v in value)
        else:
            payload = value.encode() if isinstance(value, str) else value
        out += _varint(number << 3 | 2) + _varint(len(payload)) + payload
    return bytes(out)


def grpc_frame(payload: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length, the message."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def _tensor(name: str, shape: list[int]) -> Message:
    return Message([(1, name), (2, "FP32"), (3, shape)])


IMAGE_INPUT = (-1, 3, 224, 224)  # the null HTTP server's model
SMALL_MODEL, SMALL_INPUT = "small", (-1, 16)  # a 64-byte tensor: the server's cost per request is small


def metadata_response(model: str = FAST_MODEL, input_shape: tuple[int, ...] = IMAGE_INPUT) -> bytes:
    """``ModelMetadataResponse``: input ``x`` FP32 of ``input_shape``, output ``x.45`` FP32 [-1,2]."""
    return message(
        Message(
            [
                (1, model),
                (2, "1"),
                (3, "null"),
                (4, _tensor(INPUT_NAME, list(input_shape))),
                (5, _tensor(OUTPUT_NAME, [-1, OUTPUT_SHAPE[1]])),
            ]
        )
    )


def infer_response(model: str = FAST_MODEL) -> bytes:
    """``ModelInferResponse``: output ``x.45`` FP32 [1,2] = (0.1, 0.9), in ``raw_output_contents``."""
    raw = struct.pack(f"<{len(OUTPUT_VALUES)}f", *OUTPUT_VALUES)
    return message(Message([(1, model), (2, "1"), (5, _tensor(OUTPUT_NAME, list(OUTPUT_SHAPE))), (6, raw)]))


def _quote(data: bytes) -> str:
    """``data`` as an nginx single-quoted string (latin-1 maps each byte to one character; the config file is
    written in latin-1 too, so nginx reads the bytes back as they are)."""
    bad = set(data) & {ord("'"), ord("\\"), ord("$")}
    assert not bad, f"nginx cannot take bytes {sorted(bad)} in a quoted string"
    return "'" + data.decode("latin-1") + "'"


def render_config(
    port: int, status_port: int, workdir: Path, model: str = FAST_MODEL, input_shape: tuple[int, ...] = IMAGE_INPUT
) -> str:
    """nginx: one worker, h2c on ``port``, stub_status over HTTP/1.1 on ``status_port``. One model: gRPC's
    paths do not name it (it is inside the request message, which nginx does not read)."""
    answers = {
        "ModelMetadata": metadata_response(model, input_shape),
        "ModelReady": message(Message([(1, 1)])),
        "ModelStatistics": b"",
    }
    locations = [
        f"location = {SERVICE}/{rpc} {{ return 200 {_quote(grpc_frame(body))}; }}" for rpc, body in answers.items()
    ]
    locations.append(
        f"location = {SERVICE}/ModelInfer {{ echo_read_request_body; "
        f"echo -n {_quote(grpc_frame(infer_response(model)))}; }}"
    )
    body = "\n        ".join(locations)
    servers = f"""    server {{
        listen {HOST}:{port} http2 backlog=1024;
        add_trailer grpc-status 0 always;
        {body}
    }}
    server {{
        listen {HOST}:{status_port};
        location = /health {{ return 200 'ok'; }}
        location = /status {{ stub_status; }}
    }}"""
    return config(workdir, "application/grpc", servers, "\n    http2_max_concurrent_streams 1024;")


@dataclass(frozen=True)
class NullGrpcServer:
    """A running null gRPC server: its gRPC URL (h2c), the process group to pin and its request count."""

    url: str
    pid: int
    error_log: Path
    status: NullServer = field(repr=False)

    def served(self) -> int:
        """Requests nginx has received over gRPC (and HTTP/1.1, less the polls of ``/status``)."""
        return self.status.served()


@contextlib.contextmanager
def null_grpc_server(
    nginx: str = "nginx", model: str = FAST_MODEL, input_shape: tuple[int, ...] = IMAGE_INPUT
) -> Iterator[NullGrpcServer]:
    """Runs nginx in its own process group until the block exits, then stops it (always)."""
    workdir = Path(tempfile.mkdtemp(prefix="li-bench-grpc-"))
    workdir.chmod(0o755)  # the worker may run as nobody
    port, status_port = free_port(), free_port()
    while status_port == port:
        status_port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_bytes(render_config(port, status_port, workdir, model, input_shape).encode("latin-1"))
    status_url = f"http://{HOST}:{status_port}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        args = ["-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
        test = subprocess.run([nginx, "-t", "-q", *args], capture_output=True, text=True, check=False)
        if test.returncode != 0:
            raise RuntimeError(f"nginx rejected its configuration {conf}:\n{test.stderr}")
        with open(workdir / "stderr.log", "wb") as log:
            proc = children.start([nginx, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(f"{status_url}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                error_log = workdir / "error.log"
                text = error_log.read_text(errors="replace") if error_log.exists() else ""
                raise RuntimeError(f"nginx did not start on {status_url}:\n{text[-2000:]}")
            time.sleep(0.05)
        status = NullServer(url=status_url, pid=proc.pid, error_log=workdir / "error.log")
        yield NullGrpcServer(f"http://{HOST}:{port}", proc.pid, workdir / "error.log", status)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
