"""Certificates for the TLS tests, made with the openssl command line as a user would."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def self_signed(folder: Path, name: str, san: str) -> dict[str, Path]:
    """A self-signed certificate made the common way: ``openssl req -x509`` (a CA certificate)."""
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return {"ca": cert, "cert": cert, "key": key}
