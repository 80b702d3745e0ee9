"""Shared pytest fixtures: real Triton and LitServe servers on 127.0.0.1, started once per session.

The servers run in their own process groups via :mod:`servers.launch`, which always tears them down
(also when a test fails or the run is interrupted).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

# onnxruntime >= 1.29 telemetry writes a session file, $TMPDIR/.ses, in every process that uses it (this
# one and, inheriting the environment, the servers and Locust runs). Opting out must precede its import.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from support.certs import self_signed  # noqa: E402
from support.faults import FaultServer  # noqa: E402

from servers.launch import (  # noqa: E402
    RunningServer,
    free_port,
    litserve_llm_server,
    litserve_server,
    triton_server,
)

TRITON_TEST_MODELS = (
    "tiny_onnx",
    "checksum",
    "sleep_20ms",
    "resnet50_onnx",
    "echo_uint8_nhwc",
    "echo_fp16",
    "echo_640",
    "echo_two_inputs",
    "echo_untouched",
    "echo_counted",
)
# The synthetic generator's settings on both servers (servers/generator.py): tests check against them.
GENERATOR_PREFILL_MS = 50
GENERATOR_TOKEN_MS = 10
GENERATOR_MAX_TOKENS = 64
# The key the image-base64 checksum server reads: not the default, so tests prove --litserve-key is used.
LITSERVE_CHECKSUM_IMAGE_KEY = "photo"


TESTS = Path(__file__).resolve().parent
T = TypeVar("T")
# The session's servers, stopping: each takes seconds (SIGTERM, then waiting for its process group), so they
# stop side by side, in threads, and pytest_sessionfinish waits for them all.
_STOPPING: list[threading.Thread] = []
# The session's servers that run, by fixture name, each with what starts its stop.
_RUNNING: dict[str, Callable[[], None]] = {}
# The fixtures that are servers of the session (server_fixture), and the test after which none is used.
_SERVER_FIXTURES: set[str] = set()
_LAST_SERVER_USER: list[pytest.Item] = []


def server_fixture(function: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
    """A session fixture whose body runs :func:`session_server`: it stops once the session's last test that
    uses a server of the session is done (see pytest_runtest_teardown)."""
    _SERVER_FIXTURES.add(function.__name__)
    return pytest.fixture(scope="session")(function)


def session_server(request: pytest.FixtureRequest, server: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """A server fixture's body: ``server`` entered for the session, left in a thread of its own when no test
    needs it any more (or at the session's end)."""
    stack = contextlib.ExitStack()
    value = stack.enter_context(server)

    def stop() -> None:
        if _RUNNING.pop(request.fixturename, None) is not None:
            stopping = threading.Thread(target=stack.close, name=f"stop-{request.fixturename}")
            stopping.start()
            _STOPPING.append(stopping)

    _RUNNING[request.fixturename] = stop
    try:
        yield value
    finally:
        stop()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Finds the last test of the last module that uses a server fixture: after it, the session's servers stop
    while the tests that need none of them run (tests/system starts its own, tests/unit needs none), instead
    of idling beside them and stopping at the end. The end of a module: its module fixtures may ask for a
    server by name (``request.getfixturevalue``), which a test in a later module would find stopped."""
    users = [i for i, item in enumerate(session.items) if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if users:
        module = session.items[users[-1]].path
        last = max(i for i, item in enumerate(session.items) if item.path == module)
        _LAST_SERVER_USER[:] = [session.items[last]]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """After the last test that uses a server (and its module fixtures' teardown), the servers stop."""
    try:
        return (yield)
    finally:
        if item in _LAST_SERVER_USER:
            for stop in list(_RUNNING.values()):
                stop()


def pytest_sessionfinish() -> None:
    for stopping in _STOPPING:
        stopping.join()


# The tier of a test is the directory it is in; its marker follows (`pytest -m unit` = `pytest tests/unit`).
TIERS = ("unit", "integration", "system", "bench")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test with its tier, the first directory under tests/. A test file outside the tiers is a
    usage error: a reader (and ``make test-fast``) finds a test's cost from where it is."""
    for item in items:
        tier = item.path.resolve().relative_to(TESTS).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``root`` (network or PID namespaces) fails without root: a skip would read as a pass."""
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.fail("this test needs root (it is marked root): run it as root, e.g. in the CI container", pytrace=False)


@server_fixture
def triton(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """Triton (PyTriton) serving tiny_onnx, checksum, sleep_20ms, resnet50_onnx and the echo-checksum models.

    No retry: a failed start is a failure (see servers.triton.load_instances_in_turn).
    """
    yield from session_server(request, triton_server(models=TRITON_TEST_MODELS))


@pytest.fixture(scope="session")
def own_triton_grpc_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Path]]:
    """The gRPC endpoint of ``own_triton``, which speaks TLS with a self-signed certificate for 127.0.0.1: its
    URL and the certificate's files (see support.certs.self_signed)."""
    cert = self_signed(tmp_path_factory.mktemp("grpc-tls"), "127.0.0.1", "IP:127.0.0.1")
    return f"https://127.0.0.1:{free_port()}", cert


@server_fixture
def own_triton(
    request: pytest.FixtureRequest, own_triton_grpc_tls: tuple[str, dict[str, Path]]
) -> Iterator[RunningServer]:
    """A second Triton (tiny_onnx) for the tests that stop it (SIGSTOP) and continue it: a stall is not for the
    session's ``triton`` to share with every other test. Each such test continues it before it ends, so they
    share this one instead of starting a Triton each.

    Its gRPC endpoint speaks TLS (``own_triton_grpc_tls``), for test_grpc's TLS tests: no stall test uses gRPC,
    and one Triton start fewer."""
    url, cert = own_triton_grpc_tls
    tls = [
        "--grpc-port",
        url.rsplit(":", 1)[1],
        "--grpc-tls-cert",
        str(cert["cert"]),
        "--grpc-tls-key",
        str(cert["key"]),
    ]
    yield from session_server(request, triton_server(models=("tiny_onnx",), extra_args=tls))


@server_fixture
def litserve_checksum(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """LitServe serving the checksum model at POST /predict."""
    yield from session_server(request, litserve_server(model="checksum"))


@server_fixture
def litserve_tiny(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """LitServe serving tiny_onnx at POST /predict."""
    yield from session_server(request, litserve_server(model="tiny_onnx"))


@server_fixture
def litserve_image_checksum(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """LitServe taking {"photo": "<base64 image>"}: answers the checksum of its Pillow-preprocessed tensor and
    the sha256 of the decoded bytes (see servers.litserve_app)."""
    yield from session_server(
        request, litserve_server(model="checksum", payload="image-base64", image_key=LITSERVE_CHECKSUM_IMAGE_KEY)
    )


@server_fixture
def litserve_image_tiny(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """LitServe taking {"image": "<base64 image>"}, decoding it with Pillow and running tiny_onnx."""
    yield from session_server(request, litserve_server(model="tiny_onnx", payload="image-base64"))


@server_fixture
def litserve_bytes_checksum(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """LitServe taking the image file as the body: answers as litserve_image_checksum."""
    yield from session_server(request, litserve_server(model="checksum", payload="image-bytes"))


@server_fixture
def litserve_bytes_tiny(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """LitServe taking the image file as the body, decoding it with Pillow and running tiny_onnx."""
    yield from session_server(request, litserve_server(model="tiny_onnx", payload="image-bytes"))


@pytest.fixture()
def fault_server() -> Iterator[FaultServer]:
    """The fault-injection server of ``tests/support/faults.py`` on a free loopback port, for one test."""
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    """A requests session that ignores proxy settings from the environment (loopback traffic only)."""
    session = requests.Session()
    session.trust_env = False
    try:
        yield session
    finally:
        session.close()


@dataclass
class GeneratorServer:
    """A server of the synthetic generator and the file where it logs each request's own timing."""

    server: RunningServer
    timing_log: Path

    @property
    def url(self) -> str:
        return self.server.url

    def mark(self) -> int:
        """Where the timing log ends now: pass it to :meth:`timings` to read only what came after."""
        return self.timing_log.stat().st_size if self.timing_log.exists() else 0

    def timings(self, since: int = 0, where: str = "generator") -> list[dict[str, Any]]:
        """Each request's timing logged after ``since``, as measured ``where``: ``generator`` (by the generator
        itself, servers.generator) or ``http`` (where the answer leaves LitServe's HTTP server,
        servers.litserve_llm.HttpTimingLog)."""
        with self.timing_log.open("rb") as file:
            file.seek(since)
            records = [json.loads(line) for line in file.read().splitlines() if line.strip()]
        return [r for r in records if r["where"] == where]


def generator_args(timing_log: Path, **overrides: Any) -> list[str]:
    """The generator's command-line options (prefill 50 ms, 10 ms a token, at most 64 tokens, unless overridden)."""
    settings = {
        "prefill-ms": GENERATOR_PREFILL_MS,
        "token-ms": GENERATOR_TOKEN_MS,
        "max-tokens": GENERATOR_MAX_TOKENS,
        "timing-log": timing_log,
        **{k.replace("_", "-"): v for k, v in overrides.items()},
    }
    return [arg for key, value in settings.items() for arg in (f"--{key}", str(value))]


@server_fixture
def litserve_llm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeneratorServer]:
    """LitServe's OpenAISpec (async) serving the synthetic generator at POST /v1/chat/completions."""
    log = tmp_path_factory.mktemp("litserve-llm") / "timing.jsonl"
    for server in session_server(request, litserve_llm_server(extra_args=generator_args(log))):
        yield GeneratorServer(server, log)


@server_fixture
def triton_llm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeneratorServer]:
    """Triton (PyTriton) serving the synthetic generator as the decoupled model synthetic_llm
    (POST /v2/models/synthetic_llm/generate_stream), and the decoupled ``pulse`` (N responses at set
    intervals) for the gRPC stream tests; both log their own timing (read it after a :meth:`~GeneratorServer.mark`).
    And ``tiny_gpt``, the small real model (servers/tiny_gpt.py), which logs none."""
    log = tmp_path_factory.mktemp("triton-llm") / "timing.jsonl"
    models = ["synthetic_llm", "pulse", "tiny_gpt"]  # tiny_gpt: test_tiny_gpt's (capped at --max-tokens too)
    for server in session_server(request, triton_server(models=models, extra_args=generator_args(log))):
        yield GeneratorServer(server, log)
