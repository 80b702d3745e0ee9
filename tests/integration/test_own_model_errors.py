"""Own-model inputs that cannot work stop the run at start: one line naming what is wrong and which
option would help, exit status 2, nothing sent (a corrupt image in a set is named; the server saw no
request)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.own_model import image_set, stretched, words
from support.runs import COUNTED, COUNTED_GUARD, assert_clean_failure, clean_env, run_locust, triton_successes


def test_a_corrupt_image_in_the_set_stops_the_start_with_its_name(triton, http, tmp_path: Path) -> None:
    image_set(tmp_path / "set")
    bad = tmp_path / "set" / "b_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    before = triton_successes(http, triton.url, "echo_untouched")
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--image",
        str(tmp_path / "set"),
        env=clean_env(SERVER="triton", MODEL_NAME="echo_untouched"),
    )
    assert_clean_failure(run, str(bad), "--image")
    assert triton_successes(http, triton.url, "echo_untouched") == before


@pytest.mark.parametrize(
    ("model", "args", "needles"),
    [
        ("echo_two_inputs", [], ["has inputs ['INPUT_A', 'INPUT_B']", "--input-data random"]),
        ("echo_two_inputs", ["--input-name", "INPUT_A"], ["[-1, 4]", "an image input is", "--input-data random"]),
        ("echo_two_inputs", ["--input-data", "random"], ["'INPUT_B' has shape [-1, -1]", "--shape INPUT_B:"]),
        ("echo_two_inputs", ["--input-data", "zero", "--shape", "INPUT_B:2,2"], ["--shape INPUT_B:2,2 does not fit"]),
        ("echo_uint8_nhwc", ["--layout", "nchw"], ["--layout nchw puts 224 channels"]),
        ("echo_640", ["--max-input-memory", "1MiB"], ["over --max-input-memory 1 MiB"]),
        ("echo_640", ["--preprocess", "letterbox", "--resize", "700"], ["--resize applies to --preprocess imagenet"]),
        ("echo_fp16", ["--crop", "200"], ["--crop 200x200 does not match the model's 224x224"]),
        ("echo_fp16", ["--triton-format", "json"], ["input 'IMAGE' is FP16", "--triton-format binary"]),
    ],
    ids=[
        "two-inputs",
        "not-an-image",
        "variable-dim",
        "shape-mismatch",
        "layout",
        "memory",
        "resize",
        "crop",
        "fp16-json",
    ],
)
def test_inputs_the_model_cannot_take(triton, tmp_path: Path, model: str, args: list[str], needles: list[str]) -> None:
    run = run_locust(tmp_path, "--host", triton.url, *args, env=clean_env(SERVER="triton", MODEL_NAME=model))
    assert_clean_failure(run, *needles)


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ('{"data": [{"INPUT_A": [1, 2, 3, 4],', ["not valid JSON", "line 1 column"]),
        ('{"data": [{"INPUT_A": [1, 2, 3], "INPUT_B": [1]}]}', ["data[0].INPUT_A: 3 values, shape [4] needs 4"]),
        ('{"data": [{"INPUT_A": [1, 2, 3, 4]}]}', ["data[0] has no input 'INPUT_B'"]),
        ('{"data": [{"INPUT_A": {"b64": "AAAA"}, "INPUT_B": [1]}]}', ["b64 holds 3 bytes", "needs 16"]),
        ('{"data": [{"INPUT_A": [1, 2, 3, 4], "INPUT_B": [1], "C": [0]}]}', ["has 'C', which the model does not take"]),
    ],
    ids=["malformed", "count", "missing-input", "b64-size", "unknown-input"],
)
def test_bad_input_data_files_say_where(triton, tmp_path: Path, content: str, needles: list[str]) -> None:
    data = tmp_path / "data.json"
    data.write_text(content)
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--input-data",
        str(data),
        env=clean_env(SERVER="triton", MODEL_NAME="echo_two_inputs"),
    )
    assert_clean_failure(run, f"--input-data {data}", *needles)


def test_bad_input_option_values(tmp_path: Path) -> None:
    for args, message in (
        (["--preprocess", "yolo"], "--preprocess must be imagenet, letterbox, resize or none, not 'yolo'"),
        (["--layout", "chw"], "--layout must be nchw or nhwc"),
        (["--dtype", "bf16"], "--dtype must be fp32, fp16, uint8 or int8"),
        (["--mean", "0.5,x,1"], "--mean must be three numbers"),
        (["--std", "1,0,1"], "--std must not be zero"),
        (["--crop", "0"], "--crop must be a whole number of pixels from 1 to 16384"),
        (["--shape", "INPUT_B"], "--shape 'INPUT_B' is not of the form NAME:d1,d2"),
        (["--max-input-memory", "lots"], "--max-input-memory must be a size"),
        (["--input-data", "nope.json"], "--input-data must be random, zero or a JSON file; nope.json does not exist"),
        (["--image", "no/such/dir/*.jpg"], "--image no/such/dir/*.jpg: the pattern matches no files"),
    ):
        run = run_locust(tmp_path, *args, env=clean_env(SERVER="triton", MODEL_NAME="m"))
        assert_clean_failure(run, message)


def test_expect_top1_auto_learns_each_image_of_a_set(triton, tmp_path: Path) -> None:
    """Each image has its own top-1 (its checksum's largest word): learned per image, no request fails
    (one expectation for the whole run would fail two images of three)."""
    files = image_set(tmp_path / "set")
    assert len({int(np.argmax(words(stretched(f, 224, 224)))) for f in files}) == 3
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--image",
        str(tmp_path / "set"),
        "--expect-top1",
        "auto",
        env=clean_env(SERVER="triton", MODEL_NAME="echo_uint8_nhwc", LOCUST_CLASS_NAME="HighUser", STOP_AFTER="9"),
        locustfile=COUNTED,
        run_time=COUNTED_GUARD,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    row = run.stats("triton/echo_uint8_nhwc")
    assert int(row["Request Count"]) >= 3 and int(row["Failure Count"]) == 0, row
    assert json.dumps(run.failures()) == "[]"
