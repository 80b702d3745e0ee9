"""HTTPS verifies certificates by default; --ca-file trusts a private CA; --insecure opts out loudly;
extra headers and the bearer token are sent but never shown."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.certs import openssl, self_signed
from support.faults import FaultServer
from support.runs import REPO_ROOT, clean_env, run_locust

COUNTED_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "counted.py"


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


@pytest.fixture(scope="module")
def self_signed_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return self_signed(tmp_path_factory.mktemp("self-signed"), "127.0.0.1", "IP:127.0.0.1")


def serve_tls(pki: dict[str, Path]) -> FaultServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["cert"], pki["key"])
    return FaultServer(tls=ctx).start()


@pytest.fixture()
def https_server(pki: dict[str, Path]) -> Iterator[FaultServer]:
    server = serve_tls(pki)
    yield server
    server.stop()


def test_unknown_certificate_authority_is_refused_by_default(https_server: FaultServer, tmp_path: Path) -> None:
    run = run_locust(tmp_path, "--host", https_server.url, env=clean_env(SERVER="triton", MODEL_NAME="ok"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    message = run.stderr.strip().splitlines()[-1]
    assert message == (
        f"locust-inference: TLS certificate of {https_server.url}/v2/models/ok not accepted: it is not signed by a "
        "certificate authority this client trusts; pass --ca-file with the certificate (or the CA that signed it) "
        "to trust it, or --insecure to skip the check"
    )
    assert https_server.requests == 0


def test_self_signed_certificate_given_with_ca_file_is_trusted(self_signed_pki, tmp_path: Path) -> None:
    server = serve_tls(self_signed_pki)
    try:
        refused = run_locust(tmp_path, "--host", server.url, env=clean_env(SERVER="triton", MODEL_NAME="ok"))
        # more than 10 requests, counted rather than timed: a loaded machine made 4, or none, in 2 s
        trusted = run_locust(
            tmp_path,
            "--host",
            server.url,
            "--ca-file",
            str(self_signed_pki["cert"]),
            "LowUser",
            "--closed-loop",
            locustfile=COUNTED_LOCUSTFILE,
            run_time="120s",
            env=clean_env(SERVER="triton", MODEL_NAME="ok", STOP_AFTER="11"),
        )
    finally:
        server.stop()
    assert refused.returncode == 2
    assert "it is a CA certificate used as the server's own (self-signed) and is not in --ca-file" in refused.stderr
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert int(trusted.stats()["Request Count"]) > 10 and int(trusted.stats()["Failure Count"]) == 0


def test_self_signed_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    other = self_signed(tmp_path, "inference.example", "DNS:inference.example")
    server = serve_tls(other)
    try:
        run = run_locust(
            tmp_path,
            "--host",
            server.url,
            "--ca-file",
            str(other["cert"]),
            env=clean_env(SERVER="triton", MODEL_NAME="ok"),
        )
    finally:
        server.stop()
    assert run.returncode == 2
    assert f"TLS certificate of {server.url}/v2/models/ok not accepted: it does not name this host;" in run.stderr
    assert server.requests == 0


def test_ca_file_makes_the_private_ca_trusted(https_server: FaultServer, pki, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        https_server.url,
        "--ca-file",
        str(pki["ca"]),
        "LowUser",
        "--closed-loop",
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
        "--closed-loop",
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
        "--closed-loop",
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
