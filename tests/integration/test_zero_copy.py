"""Bodies go out with sendfile from a sealed memfd (the default for http://) and arrive at the real servers
byte for byte, exactly as when they are copied on every send (LOCUST_INFERENCE_ZERO_COPY=off); which way an
endpoint sends is visible, and a bad value of the variable stops the start with one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from locust_inference import Endpoint, preprocess_image
from locust_inference.backends import IO_THREADS_ENV, ZERO_COPY_ENV, prepare
from locust_inference.options import LitServeSettings, Settings
from support.own_model import answers, answers_in_turn, image_set, settings
from support.runs import assert_clean_failure, clean_env, run_locust

from servers.launch import RunningServer
from servers.models import checksum_words

ORDER = [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("zero_copy", ["on", "off"])
def test_an_image_set_arrives_byte_for_byte_either_way(
    triton: RunningServer,
    litserve_bytes_checksum: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    zero_copy: str,
) -> None:
    """Triton's checksum model sees each tensor of the set (binary bodies of 602 KB, far more than the 32 KiB
    that may wait unsent), LitServe the sha256 of each file, in the users' order."""
    monkeypatch.setenv(ZERO_COPY_ENV, zero_copy)
    folder = tmp_path / "set"
    files = image_set(folder)
    tensors = prepare(settings(triton.url, "checksum", image=str(folder)))  # binary, as on the command line
    as_files = prepare(
        Settings(
            server="litserve",
            model="m",
            host=litserve_bytes_checksum.url,
            image=folder,
            keep_body=True,
            litserve=LitServeSettings(payload="image-bytes"),
        )
    )
    assert tensors.endpoint.zero_copy is (zero_copy == "on")
    assert as_files.endpoint.zero_copy is (zero_copy == "on")
    expected = [checksum_words(preprocess_image(f)) for f in files]
    assert len({tuple(w) for w in expected}) == 3
    assert answers(tensors, len(ORDER)) == [(i, expected[i]) for i in ORDER]
    sha = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert [r["sha256"] for r in answers_in_turn(as_files, len(ORDER))] == [sha[i] for i in ORDER]


def test_which_way_an_endpoint_sends_is_visible() -> None:
    """Sealed: http:// bodies of up to 1 MiB each, 256 MiB in all. Copied: when asked, over https://, with
    nothing to send, a body over 1 MiB, or when a second copy of the bodies would be too large."""
    url = "http://127.0.0.1:9/infer"
    assert Endpoint(url, b"tensor").zero_copy is True
    assert Endpoint(url, [(b"a", []), (b"b" * 100_000, [])]).zero_copy is True
    assert Endpoint(url, b"tensor", zero_copy=False).zero_copy is False
    assert Endpoint("https://127.0.0.1:9/infer", b"tensor").zero_copy is False
    assert Endpoint(url, b"", method="GET").zero_copy is False
    assert Endpoint(url, bytes((1 << 20) + 1)).zero_copy is False
    assert Endpoint(url, bytes(1 << 20)).zero_copy is True
    mib = bytes(1 << 20)
    assert Endpoint(url, [(mib, [])] * 257).zero_copy is False
    assert Endpoint(url, [(mib, [])] * 256).zero_copy is True


def test_a_bad_value_stops_the_start(triton: RunningServer, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "HighUser",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", **{ZERO_COPY_ENV: "maybe"}),
    )
    assert_clean_failure(run, f"{ZERO_COPY_ENV} must be on or off, not 'maybe'")


@pytest.mark.parametrize("threads", ["two", "0", "65", "-1", "1.5"])
def test_a_bad_io_thread_count_stops_the_start(triton: RunningServer, tmp_path: Path, threads: str) -> None:
    """The runtime would take 1 thread instead, without a word."""
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "HighUser",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", **{IO_THREADS_ENV: threads}),
    )
    assert_clean_failure(run, f"{IO_THREADS_ENV} must be a whole number from 1 to 64, not {threads!r}")
