"""Hostile answers at the transport: redirects are failures that name where they point and are never
followed (over http:// and https:// alike, for load requests and the start-up reads), a Content-Length
far beyond what arrives sizes no buffer, out-of-range values are refused where they enter the native
core, and the I/O runtime's threads take no process-directed signal."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from locust_inference import Endpoint, RequestSlot, Stream, http_request
from locust_inference._native import RedirectError
from support.certs import self_signed
from support.faults import FaultServer
from support.runs import assert_clean_failure, clean_env, run_locust

SECRET = "k-123-redirect"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests += 1
        self.server.answer(self)

    do_GET = do_POST = _answer


class HostileServer(ThreadingHTTPServer):
    """Answers every request with ``answer(handler)``, over TLS when given a context."""

    daemon_threads = True

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None], tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.answer = answer
        self.requests = 0

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client gives up on cut connections: expected


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return self_signed(tmp_path_factory.mktemp("pki"), "127.0.0.1", "IP:127.0.0.1")


def tls_context(cert: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert["cert"], cert["key"])
    return ctx


@pytest.fixture()
def serve(cert: dict[str, Path]) -> Iterator[Callable[..., HostileServer]]:
    """Starts hostile servers (``https=True``: over TLS, with ``cert``) and stops them after the test."""
    started: list[HostileServer] = []

    def start(answer: Callable[[BaseHTTPRequestHandler], None], *, https: bool) -> HostileServer:
        server = HostileServer(answer, tls_context(cert) if https else None)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def other_host() -> Iterator[FaultServer]:
    """The host a redirect points at: a working server (it would answer), which must see no connection."""
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()


def redirect(status: int, location: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_redirect_is_a_failure_naming_status_and_location_and_is_not_followed(
    scheme: str, serve, other_host: FaultServer, cert
) -> None:
    location = f"{other_host.url}/v2/models/ok/infer"
    server = serve(redirect(307, location), https=scheme == "https")
    url = f"{server.url}/v2/models/ok/infer"
    endpoint = Endpoint(url, b"tensor bytes", headers=[("X-Api-Key", SECRET)], protocol="none", ca_file=cert["cert"])
    slot = RequestSlot()
    slot.submit(endpoint)
    outcome = slot.wait(timeout=60)
    assert outcome is not None, "no outcome within 60 s"
    assert other_host.connections_opened == 0, "the redirect was followed to another host"
    assert server.requests == 1
    assert (outcome.ok, outcome.status, outcome.error_kind) == (False, 307, "redirect")
    assert str(outcome.exception) == (
        f"HTTP 307 from {url}: redirect to {location} not followed (requests go only to the URL given)"
    )


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_start_up_reads_never_follow_a_redirect(scheme: str, serve, other_host: FaultServer, cert) -> None:
    """http_request serves the metadata and statistics reads: a 3xx raises, naming the status and Location."""
    location = f"{other_host.url}/v2/models/ok/stats"
    server = serve(redirect(302, location), https=scheme == "https")
    url = f"{server.url}/v2/models/ok/stats"
    with pytest.raises(RedirectError) as raised:
        http_request("GET", url, headers=[("X-Api-Key", SECRET)], ca_file=cert["cert"])
    assert other_host.connections_opened == 0, "the redirect was followed to another host"
    assert str(raised.value) == (
        f"HTTP 302 from {url}: redirect to {location} not followed (requests go only to the URL given)"
    )


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_redirected_metadata_read_stops_the_run_at_start(
    scheme: str, serve, other_host: FaultServer, cert, tmp_path: Path
) -> None:
    location = f"{other_host.url}/v2/models/ok"
    server = serve(redirect(307, location), https=scheme == "https")
    run = run_locust(
        tmp_path,
        "--host",
        server.url,
        "--ca-file",
        str(cert["cert"]),
        "--header",
        f"X-Api-Key: {SECRET}",
        run_time="2s",
        env=clean_env(SERVER="triton", MODEL_NAME="ok"),
    )
    assert other_host.connections_opened == 0, "the redirect was followed to another host"
    assert_clean_failure(run, f"HTTP 307 from {server.url}/v2/models/ok: redirect to {location} not followed", "--host")
    assert SECRET not in run.stderr + run.stdout


def huge_content_length(h: BaseHTTPRequestHandler) -> None:
    """Announces 1 TiB, sends 1 KiB and closes."""
    h.send_response(200)
    h.send_header("Content-Length", str(1 << 40))
    h.end_headers()
    h.wfile.write(b"x" * 1024)
    h.wfile.flush()
    h.close_connection = True


# Run in a child whose address space is capped at 16 GiB: a buffer sized from the header (1 TiB) cannot
# be allocated there whatever the machine's overcommit setting, and the allocation failure aborts.
CHILD = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
    from locust_inference import Endpoint, RequestSlot
    endpoint = Endpoint(sys.argv[1], b"x", protocol="none", max_response_bytes=1 << 41, ca_file=sys.argv[2])
    slot = RequestSlot()
    slot.submit(endpoint)
    outcome = slot.wait(timeout=60)
    print(outcome.error_kind if outcome is not None else "no outcome")
    print(outcome.exception if outcome is not None else "")
    """
)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_huge_content_length_sizes_no_buffer_and_fails_as_cut_short(scheme: str, serve, cert) -> None:
    server = serve(huge_content_length, https=scheme == "https")
    url = f"{server.url}/infer"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(cert["cert"])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.returncode == 0, child.stderr[-2000:]
    kind, message = child.stdout.splitlines()
    assert kind == "transport", child.stdout
    assert message.startswith(f"request to {url} failed: response cut short, before the {1 << 40} bytes it announced:")


def test_max_in_flight_beyond_what_a_semaphore_holds_is_refused(serve) -> None:
    server = serve(redirect(307, "http://127.0.0.1:9/"), https=False)
    endpoint = Endpoint(f"{server.url}/infer", b"x", protocol="none")
    with pytest.raises(
        ValueError, match=r"^max_in_flight must be at most 2305843009213693951, got 2305843009213693952$"
    ):
        Stream(endpoint, 1.0, max_in_flight=2305843009213693952)
    assert server.requests == 0


def _blocked(status: str) -> set[int]:
    mask = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_the_io_threads_block_process_directed_signals(serve) -> None:
    server = serve(redirect(307, "http://127.0.0.1:9/"), https=False)
    with pytest.raises(RedirectError):
        http_request("GET", f"{server.url}/v2/models/ok/stats")  # the runtime runs by now
    tasks = Path("/proc/self/task")

    def read(path: Path) -> str | None:
        """A thread's file, or None when the thread ended since it was listed (other threads come and go)."""
        try:
            return path.read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None

    io_threads = {
        task: status
        for task in tasks.iterdir()
        if (read(task / "comm") or "").strip().startswith("locust-inferen")
        and (status := read(task / "status")) is not None
    }
    assert io_threads, "no I/O thread found"
    for task, status in io_threads.items():
        blocked = _blocked(status)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGCHLD):
            assert sig in blocked, f"thread {task.name} takes {sig.name}"
        assert signal.SIGSEGV not in blocked
    main = _blocked((tasks / str(os.getpid()) / "status").read_text())
    assert signal.SIGINT not in main, "Python's own thread must still take Ctrl-C"
