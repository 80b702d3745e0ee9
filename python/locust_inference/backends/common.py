"""What every backend shares: the :class:`Target` it makes, the endpoint built from its bodies, the GET
that checks a server answers at start, and the process's I/O settings read from the environment."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TypedDict, Unpack

from locust_inference._native import (
    CertificateError,
    ConfigError,
    Endpoint,
    ProtocolError,
    RedirectError,
    RequestError,
    http_request,
)
from locust_inference.options import Settings

__all__ = [
    "IO_THREADS_ENV",
    "ZERO_COPY_ENV",
    "Body",
    "EndpointCheck",
    "Target",
    "check_io_threads",
    "checksum",
    "file_size",
    "get",
    "make_target",
    "read",
    "start_call",
]

# on (default): http:// bodies are sent with sendfile from a sealed memfd; off: copied on every send
ZERO_COPY_ENV = "LOCUST_INFERENCE_ZERO_COPY"
IO_THREADS_ENV = "LOCUST_INFERENCE_IO_THREADS"
MAX_IO_THREADS = 64

# One request body and the headers of its own (a LitServe image's Content-Type, Triton's header length)
Body = tuple[bytes, list[tuple[str, str]]]


@dataclass(frozen=True)
class Target:
    """A prepared load-test target: the shared endpoint plus what reports and debug logs show."""

    settings: Settings
    endpoint: Endpoint
    url: str
    request_headers: tuple[tuple[str, str], ...]
    json_header_bytes: int | None
    tensor_bytes: int
    input_checksum: str
    # what each body carries, for logs and tests: the image files, or the input data's entries
    inputs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.settings.name


@contextlib.contextmanager
def start_call(settings: Settings, what: str, check: str = "--host") -> Iterator[None]:
    """A call made at start (metadata, health, readiness): its failures as one line naming ``what`` server
    and the options to ``check``."""
    try:
        yield
    except CertificateError as err:
        raise ConfigError(str(err)) from None
    except RedirectError as err:
        raise ConfigError(f"{err}; point --host at the {what} server itself") from None
    except ProtocolError as err:
        raise ConfigError(f"{what} at {settings.host}: {err}") from None
    except RequestError as err:
        raise ConfigError(f"cannot reach {what} at {settings.host}: {err} (is it running? check {check})") from None


def get(settings: Settings, url: str, what: str) -> tuple[int, bytes]:
    """A GET made at start (metadata, health): its failures as one line naming ``what`` server."""
    with start_call(settings, what):
        return http_request(
            "GET",
            url,
            headers=list(settings.headers),
            timeout=min(settings.request_timeout, 10.0),
            insecure=settings.insecure,
            ca_file=settings.ca_file,
        )


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot be read ({err.strerror or type(err).__name__})") from None


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reading it says why


class EndpointCheck(TypedDict, total=False):
    """The keywords of ``_native.Endpoint`` that say how responses are read and checked, and over which
    protocol: named and typed, so that a misspelt or mistyped one is mypy's error, not the run's."""

    protocol: str
    outputs: list[tuple[str, str, list[int]]] | None
    output_shape: list[int] | None
    output_key: str
    stream: bool
    tokenizer: str | PathLike[str] | None
    grpc_connections: int
    grpc_compression: str


def make_target(
    settings: Settings,
    url: str,
    payload: bytes | list[Body],
    headers: list[tuple[str, str]],
    *,
    json_header_bytes: int | None,
    tensor_bytes: int,
    input_checksum: str,
    inputs: tuple[str, ...] = (),
    **check: Unpack[EndpointCheck],
) -> Target:
    """The shared endpoint for requests encoded once (one body, or several each with its own headers);
    ``check`` says how responses are validated (the keywords of ``_native.Endpoint``)."""
    zero_copy = os.environ.get(ZERO_COPY_ENV, "on").strip().lower()
    if zero_copy not in ("on", "off"):
        raise ConfigError(f"{ZERO_COPY_ENV} must be on or off, not {zero_copy!r}")
    endpoint = Endpoint(
        url,
        payload,
        headers=headers,
        shuffle=settings.inputs.shuffle,
        timeout=settings.request_timeout,
        max_response_bytes=settings.max_response_bytes,
        insecure=settings.insecure,
        ca_file=settings.ca_file,
        keep_headers=settings.debug or settings.keep_body,
        keep_body=settings.keep_body,
        zero_copy=zero_copy == "on",
        **check,
    )
    return Target(
        settings=settings,
        endpoint=endpoint,
        url=url,
        request_headers=tuple(headers) + (tuple(payload[0][1]) if isinstance(payload, list) else ()),
        json_header_bytes=json_header_bytes,
        tensor_bytes=tensor_bytes,
        input_checksum=input_checksum,
        inputs=inputs,
    )


def check_io_threads() -> None:
    """``LOCUST_INFERENCE_IO_THREADS`` is read by the I/O runtime when it starts (the first native
    request); a value it cannot use would silently be 1 there, so it is refused here first."""
    value = os.environ.get(IO_THREADS_ENV)
    if value is None:
        return
    text = value.strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_IO_THREADS):
        raise ConfigError(f"{IO_THREADS_ENV} must be a whole number from 1 to {MAX_IO_THREADS}, not {value[:40]!r}")
