"""Hostile option values and inputs stop the start with one line, exit status 2, before anything is spent:
absurd numbers are refused with their accepted range (never a panic, a traceback or a hang), inputs that
would not fit in --max-input-memory are refused before their memory is allocated, and credentials are
never taken from a URL nor echoed from a malformed header."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from locust_inference import ConfigError, Endpoint, http_request
from locust_inference.input_data import requests as input_data_requests
from locust_inference.input_options import InputSettings
from support.images import copies, flat_png
from support.runs import REPO_ROOT, assert_clean_failure, clean_env, run_locust

from servers.launch import free_port

NOWHERE = "http://127.0.0.1:9"  # nothing listens: every case below is refused before a request is sent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--request-timeout", "inf"], "--request-timeout must be a number from 0.001 to 86,400 seconds, not 'inf'"),
        (["--request-timeout", "nan"], "--request-timeout must be a number from 0.001 to 86,400 seconds"),
        (["--request-timeout", "1e-300"], "--request-timeout must be a number from 0.001 to 86,400 seconds"),
        (["--batch-size", "99999999999999999999"], "--batch-size must be a whole number from 1 to 1,000,000"),
        (["--batch-size", "-3"], "--batch-size must be a whole number from 1 to 1,000,000"),
        (["--max-response-bytes", "1" + "0" * 25], "--max-response-bytes must be a whole number from 1 to"),
        (["--rate", "nan"], "--rate must be a number from 0.001 to 1,000,000 requests per second"),
        (["--rate", "1e300"], "--rate must be a number from 0.001 to 1,000,000 requests per second"),
        (["--rate", "1e-300"], "--rate must be a number from 0.001 to 1,000,000 requests per second"),
        (["--max-in-flight", str(2**61)], "--max-in-flight must be a whole number from 1 to 100,000"),
        (["--stagger", "-1"], "--stagger must be a number from 0 to 3,600 seconds, not '-1'"),
        (["--stagger", "nan"], "--stagger must be a number from 0 to 3,600 seconds, not 'nan'"),
        (["--stagger", "1e9"], "--stagger must be a number from 0 to 3,600 seconds, not '1e9'"),
        (["--seed", str(2**64)], "--seed must be a whole number from 0 to 18,446,744,073,709,551,615"),
        (["--expect-top1", "9" * 30], "--expect-top1 must be a whole number from 0 to 2,147,483,647"),
        (["--expect-top1", "\N{SUPERSCRIPT TWO}"], "--expect-top1 must be 'auto' or a class index"),
        (["--resize", "999999999"], "--resize must be a whole number of pixels from 1 to 16384"),
        (["--crop", "224x99999"], "--crop must be a whole number of pixels from 1 to 16384"),
        (["--max-input-memory", "99999999999999999999GiB"], "--max-input-memory must be a size from 1MiB to 1TiB"),
        (["--max-input-memory", "0"], "--max-input-memory must be a size from 1MiB to 1TiB"),
        (["--shape", "INPUT_B:99999999999"], "--shape 'INPUT_B:99999999999' is not of the form NAME:d1,d2"),
        (["--mean", "1e999"], "--mean must be three finite numbers"),
    ],
)
def test_absurd_numbers_are_refused_with_their_range(tmp_path: Path, args: list[str], message: str) -> None:
    run = run_locust(tmp_path, "--host", NOWHERE, *args, run_time="1s", env=clean_env(SERVER="triton", MODEL_NAME="m"))
    assert_clean_failure(run, message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep-concurrency", "1:1000000000000:1"], "--sweep-concurrency '1:1000000000000:1': more than"),
        (["--sweep-concurrency", "1,2,99999999"], "steps must be from 1 to 100,000 users"),
        (["--sweep-rate", "0.0001,0.0002"], "steps must be from 0.001 to 1,000,000 req/s"),
        (["--sweep-concurrency", "1,2", "--sweep-window", "99999999999"], "--sweep-window must be a whole number"),
        (["--sweep-concurrency", "1,2", "--sweep-warmup", "nan"], "--sweep-warmup must be a whole number"),
        (["--sweep-concurrency", "1,2", "--sweep-max-windows", str(10**12)], "--sweep-max-windows must be a whole"),
        (["--sweep-concurrency", "1,2", "--slo", "p99=" + "9" * 400], "the latency must be positive, at most a day"),
    ],
)
def test_absurd_sweep_numbers_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        NOWHERE,
        *args,
        locustfile=REPO_ROOT / "sweepfile.py",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx"),
    )
    assert_clean_failure(run, message)


# Credentials


def test_credentials_in_the_host_are_refused_without_showing_them(tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        f"http://user:secret@127.0.0.1:{free_port()}",
        run_time="1s",
        env=clean_env(SERVER="triton", MODEL_NAME="m"),
    )
    assert_clean_failure(run, "--host must not carry a user or password", "INFERENCE_AUTH_TOKEN")
    assert "secret" not in run.stderr + run.stdout


@pytest.mark.parametrize("header", ["X-Api-Key secretvalue", "X-Api-Key secretvalue: x"], ids=["no-colon", "name"])
def test_a_malformed_header_is_refused_without_its_value(tmp_path: Path, header: str) -> None:
    run = run_locust(
        tmp_path, "--host", NOWHERE, "--header", header, run_time="1s", env=clean_env(SERVER="triton", MODEL_NAME="m")
    )
    assert_clean_failure(run, "--header", "not shown: it may hold a secret")
    assert "secretvalue" not in run.stderr + run.stdout


def test_the_python_api_refuses_credentials_in_urls() -> None:
    url = f"http://u:secret@127.0.0.1:{free_port()}/v2"
    with pytest.raises(ValueError, match="carries a user or password") as endpoint:
        Endpoint(url, b"x")
    with pytest.raises(ValueError, match="carries a user or password") as request:
        http_request("GET", url)
    assert "secret" not in str(endpoint.value) + str(request.value)


# --max-input-memory: refused before the memory is spent


def _peak_while(call: Callable[[], object]) -> tuple[ConfigError | None, int]:
    """What ``call()`` raised (None if nothing) and the peak of Python's (and numpy's) allocations meanwhile."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except ConfigError as err:
        raised = err
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return raised, peak


def test_generated_input_data_is_refused_before_it_is_generated() -> None:
    # a batch of 16 entries of 4 MB: 64 MB of request, 8 MiB allowed
    specs = [{"name": "INPUT_B", "datatype": "INT32", "shape": [-1, -1]}]
    settings = InputSettings(input_data="random", shapes=(("INPUT_B", (1_000_000,)),), max_memory=8 << 20)
    raised, peak = _peak_while(lambda: input_data_requests(specs, settings, 16, seed=1))
    assert raised is not None and "over --max-input-memory 8 MiB" in str(raised), raised
    assert peak < 1 << 20, peak  # nothing of the 64 MB was made


def test_an_input_data_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    data = tmp_path / "data.json"  # 4 MB of text: about 64 MB once parsed, 8 MiB allowed
    data.write_text('{"data": [{"INPUT_B": [' + ",".join(["7"] * 2_000_000) + "]}]}")
    specs = [{"name": "INPUT_B", "datatype": "INT32", "shape": [-1, -1]}]
    settings = InputSettings(input_data=str(data), max_memory=8 << 20)
    raised, peak = _peak_while(lambda: input_data_requests(specs, settings, 1, seed=1))
    assert raised is not None and f"--input-data {data}" in str(raised), raised
    assert peak < 1 << 20, peak  # the file was not even read


def test_input_data_batches_are_refused_before_they_are_joined(tmp_path: Path) -> None:
    data = tmp_path / "data.json"  # 200 entries of 4 KiB: 800 KiB, but 80 MiB as requests of batch 100, 32 MiB allowed
    entry = '{"INPUT_B": {"b64": "' + "A" * 5462 + '==", "shape": [1024]}}'
    data.write_text('{"data": [' + ",".join([entry] * 200) + "]}")
    specs = [{"name": "INPUT_B", "datatype": "INT32", "shape": [-1, -1]}]
    settings = InputSettings(input_data=str(data), max_memory=32 << 20)
    raised, peak = _peak_while(lambda: input_data_requests(specs, settings, 100, seed=1))
    assert raised is not None and "200 requests of batch 100 need about" in str(raised), raised
    assert peak < 8 << 20, peak  # the parsed file and its entries, none of the 80 MiB of requests


@pytest.mark.parametrize(
    ("payload", "limit", "needle"),
    [
        # 10 tensors (5.7 MiB) and 10 JSON bodies of up to 2.3 MiB each
        ("tensor", "24MiB", "10 images need about"),
        # one 4000x4000 PNG decoded whole
        ("image-base64", "64MiB", "1 images need about"),
    ],
)
def test_litserve_payloads_count_every_copy(tmp_path: Path, payload: str, limit: str, needle: str) -> None:
    images = copies(tmp_path / "set", 10) if payload == "tensor" else flat_png(tmp_path / "large.png", 4000)
    run = run_locust(
        tmp_path,
        "--host",
        NOWHERE,  # the bodies are made before the server is asked: the refusal comes first
        "--image",
        str(images),
        "--litserve-payload",
        payload,
        "--max-input-memory",
        limit,
        run_time="1s",
        env=clean_env(SERVER="litserve", MODEL_NAME="m"),
    )
    assert_clean_failure(run, needle, f"over --max-input-memory {limit.removesuffix('MiB')} MiB")


def test_a_token_with_a_control_character_is_refused_without_showing_it(tmp_path: Path) -> None:
    env = clean_env(SERVER="triton", MODEL_NAME="m", INFERENCE_AUTH_TOKEN="tok\x01secretvalue")
    run = run_locust(tmp_path, "--host", NOWHERE, run_time="1s", env=env)
    assert_clean_failure(run, "INFERENCE_AUTH_TOKEN: the value holds a control character")
    assert "secretvalue" not in run.stderr + run.stdout
