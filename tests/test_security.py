"""HTTPS verifies certificates by default; --ca-file trusts a private CA; --insecure opts out loudly;
extra headers and the bearer token are sent but never shown."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import FaultServer
from support import clean_env, run_locust


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA and a certificate for 127.0.0.1 signed by it."""
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=locust-inference test CA",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.pem"),
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(d / "server.key"),
        "-out",
        str(d / "server.csr"),
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(d / "server.csr"),
        "-CA",
        str(d / "ca.pem"),
        "-CAkey",
        str(d / "ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(d / "ext.cnf"),
        "-out",
        str(d / "server.pem"),
    )
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


@pytest.fixture()
def https_server(pki: dict[str, Path]) -> Iterator[FaultServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["cert"], pki["key"])
    server = FaultServer(tls=ctx).start()
    yield server
    server.stop()


def test_unknown_certificate_authority_is_refused_by_default(https_server: FaultServer, tmp_path: Path) -> None:
    run = run_locust(tmp_path, "--host", https_server.url, env=clean_env(SERVER="triton", MODEL_NAME="ok"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"cannot reach Triton at {https_server.url}" in run.stderr
    assert "invalid peer certificate: UnknownIssuer" in run.stderr
    assert https_server.requests == 0


def test_ca_file_makes_the_private_ca_trusted(https_server: FaultServer, pki, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        https_server.url,
        "--ca-file",
        str(pki["ca"]),
        "LowUser",
        run_time="2s",
        env=clean_env(SERVER="triton", MODEL_NAME="ok"),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stats()["Request Count"]) > 0 and int(run.stats()["Failure Count"]) == 0
    assert "verification is disabled" not in run.stderr


def test_insecure_skips_verification_with_a_warning(https_server: FaultServer, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        https_server.url,
        "--insecure",
        "LowUser",
        run_time="2s",
        env=clean_env(SERVER="triton", MODEL_NAME="ok"),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "TLS certificate verification is disabled (--insecure)" in run.stderr
    assert int(run.stats()["Failure Count"]) == 0


def test_headers_and_token_are_sent_but_never_printed(fault_server, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        fault_server.url,
        "--header",
        "X-Api-Key: k-123",
        "--header",
        "X-Team: team-ml-789",
        "LowUser",
        run_time="2s",
        env=clean_env(SERVER="triton", MODEL_NAME="status401", INFERENCE_AUTH_TOKEN="tok-456", DEBUG_REQUESTS="true"),
    )
    received = {k.lower(): v for k, v in fault_server.last_headers.items()}
    assert received["authorization"] == "Bearer tok-456"
    assert received["x-api-key"] == "k-123" and received["x-team"] == "team-ml-789"
    everything = run.stdout + run.stderr + "".join(p.read_text() for p in tmp_path.glob("*.csv"))
    for secret in ("tok-456", "k-123", "team-ml-789"):
        assert secret not in everything
    assert "('X-Team', '<redacted>')" in run.stderr and "('Authorization', '<redacted>')" in run.stderr
