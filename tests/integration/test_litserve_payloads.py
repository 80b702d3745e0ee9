"""LitServe as deployed (--litserve-payload, --litserve-output) against the real LitServe reference servers:
each payload delivers exactly the bytes a reference built here produces, Locust runs of every mode pass,
the response check follows the key it is given, and bad combinations stop the start with one line."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LITSERVE_CHECKSUM_IMAGE_KEY
from locust_inference import (
    Outcome,
    RequestSlot,
    encode_litserve_image_request,
    fill_litserve_template,
    preprocess_image,
)
from locust_inference.backends import Target, prepare
from locust_inference.options import LitServeSettings, Settings
from PIL import Image
from support.own_model import answers_in_turn, image_set
from support.runs import COUNTED, COUNTED_GUARD, IMAGE, assert_clean_failure, clean_env, run_locust

from servers.launch import RunningServer
from servers.models import checksum_words

FILE = IMAGE.read_bytes()
FILE_SHA256 = hashlib.sha256(FILE).hexdigest()
B64 = base64.b64encode(FILE).decode()


def prepared(server: RunningServer, *, server_kind: str = "litserve", model: str = "m", **kw: object) -> Target:
    return prepare(Settings(server=server_kind, model=model, host=server.url, image=IMAGE, keep_body=True, **kw))


def send(target: Target) -> Outcome:
    slot = RequestSlot()
    slot.submit(target.endpoint)
    outcome = slot.wait(timeout=60)
    assert outcome is not None, "no outcome within 60 s"
    assert outcome.exception is None, outcome.exception
    return outcome


def answer(target: Target) -> dict:
    body = send(target).body
    assert body is not None
    return json.loads(body)


def tensor_words() -> list[int]:
    """The checksum of the tensor our preprocessing makes of the image (bit-identical to Pillow's)."""
    return checksum_words(preprocess_image(IMAGE))


def first_words(response: dict) -> list[int]:
    return [int(v) for v in response["output"][0][:16]]


# --------------------------------------------------------------------------------------------------------
# the bodies, byte for byte (no server)
# --------------------------------------------------------------------------------------------------------
def test_image_base64_body_is_the_file_base64d_under_the_key() -> None:
    reference = json.dumps({"my key": B64}, separators=(",", ":")).encode()
    assert encode_litserve_image_request("my key", FILE) == reference


def test_template_is_the_users_json_with_the_placeholders_filled() -> None:
    template = (
        '{\n  "model": "r50",\n  "inputs": [{"data": "data:image/jpeg;base64,{{image_base64}}"}],\n  "x": 1.50\n}\n'
    )
    reference = template.replace("{{image_base64}}", B64).encode()
    assert fill_litserve_template(template.encode(), FILE) == reference

    tensor = preprocess_image(IMAGE)[np.newaxis]
    filled = fill_litserve_template(b'{"input": "{{tensor}}", "id": 3}', FILE, tensor)
    parsed = json.loads(filled)
    assert filled.endswith(b', "id": 3}') and parsed["id"] == 3
    np.testing.assert_array_equal(np.asarray(parsed["input"], dtype=np.float32), tensor)


# --------------------------------------------------------------------------------------------------------
# each mode delivers exactly those bytes to the real LitServe
# --------------------------------------------------------------------------------------------------------
def test_image_base64_arrives_exactly(litserve_image_checksum: RunningServer) -> None:
    target = prepared(
        litserve_image_checksum, litserve=LitServeSettings(payload="image-base64", key=LITSERVE_CHECKSUM_IMAGE_KEY)
    )
    assert target.endpoint.body_length == len(encode_litserve_image_request(LITSERVE_CHECKSUM_IMAGE_KEY, FILE))
    assert ("Content-Type", "application/json") in target.request_headers
    response = answer(target)
    assert response["sha256"] == FILE_SHA256
    assert response["request"] == {LITSERVE_CHECKSUM_IMAGE_KEY: FILE_SHA256}


def test_the_same_image_feeds_triton_and_litserve(
    triton: RunningServer, litserve_image_checksum: RunningServer
) -> None:
    """Triton's checksum model gets the tensor we preprocess; the LitServe API decodes the JPEG itself with
    Pillow: both hash the same float32 tensor."""
    triton_target = prepared(triton, server_kind="triton", model="checksum", triton_format="json")
    triton_words = [int(v) for v in answer(triton_target)["outputs"][0]["data"][:16]]
    litserve_target = prepared(
        litserve_image_checksum, litserve=LitServeSettings(payload="image-base64", key=LITSERVE_CHECKSUM_IMAGE_KEY)
    )
    assert triton_words == tensor_words()
    assert first_words(answer(litserve_target)) == triton_words


def png_of_the_photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.open(IMAGE).convert("RGB").resize((300, 200)).save(path)
    return path


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_image_bytes_arrive_exactly(litserve_bytes_checksum: RunningServer, tmp_path: Path, kind: str) -> None:
    image = IMAGE if kind == "jpeg" else png_of_the_photo(tmp_path)
    target = prepare(
        Settings(
            server="litserve",
            model="m",
            host=litserve_bytes_checksum.url,
            image=image,
            keep_body=True,
            litserve=LitServeSettings(payload="image-bytes"),
        )
    )
    assert ("Content-Type", f"image/{kind}") in target.request_headers
    response = answer(target)
    assert response["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert first_words(response) == checksum_words(preprocess_image(image))


def test_an_image_set_rotates_through_litserve_in_order_in_every_payload(
    litserve_bytes_checksum: RunningServer, litserve_checksum: RunningServer, tmp_path: Path
) -> None:
    """The set of Triton's tests (JPEG, PNG, WebP of different sizes): request k carries image k mod 3, as
    the file itself (its sha256 as received, and the tensor LitServe's Pillow makes of it) or as our tensor
    (its checksum as received), each with its own Content-Type."""
    files = image_set(tmp_path / "set")
    order = [0, 1, 2, 0, 1]
    as_files = prepare(
        Settings(
            server="litserve",
            model="m",
            host=litserve_bytes_checksum.url,
            image=tmp_path / "set",
            keep_body=True,
            litserve=LitServeSettings(payload="image-bytes"),
        )
    )
    assert as_files.inputs == tuple(str(f) for f in files)
    got = answers_in_turn(as_files, len(order))
    assert [r["sha256"] for r in got] == [hashlib.sha256(files[i].read_bytes()).hexdigest() for i in order]
    expected = [checksum_words(preprocess_image(f)) for f in files]
    assert len({tuple(w) for w in expected}) == 3  # three different tensors: the order is visible
    assert [first_words(r) for r in got] == [expected[i] for i in order]
    as_tensors = prepare(
        Settings(server="litserve", model="m", host=litserve_checksum.url, image=tmp_path / "set", keep_body=True)
    )
    assert [first_words(r) for r in answers_in_turn(as_tensors, len(order))] == [expected[i] for i in order]


def test_template_with_the_image_arrives_exactly(litserve_image_checksum: RunningServer, tmp_path: Path) -> None:
    key = LITSERVE_CHECKSUM_IMAGE_KEY
    template = tmp_path / "request.json"
    template.write_text(f'{{"meta": {{"id": 7, "tags": ["a", "b"]}}, "{key}": "{{{{image_base64}}}}", "n": 1.5}}')
    target = prepared(litserve_image_checksum, litserve=LitServeSettings(payload="template", template=template))
    reference = template.read_text().replace("{{image_base64}}", B64)
    assert target.endpoint.body_length == len(reference)
    response = answer(target)
    assert response["request"] == {**json.loads(reference), key: FILE_SHA256}
    assert response["sha256"] == FILE_SHA256


def test_template_with_the_tensor_arrives_exactly(litserve_checksum: RunningServer, tmp_path: Path) -> None:
    template = tmp_path / "request.json"
    template.write_text('{"input": "{{tensor}}"}')
    target = prepared(litserve_checksum, litserve=LitServeSettings(payload="template", template=template))
    assert first_words(answer(target)) == tensor_words()


# --------------------------------------------------------------------------------------------------------
# Locust runs of every mode against the real LitServe: no failures
# --------------------------------------------------------------------------------------------------------
def locust_run(tmp_path: Path, server: RunningServer, *args: str):
    run = run_locust(
        tmp_path,
        "--host",
        server.url,
        "--expect-top1",
        "auto",
        *args,
        "HighUser",
        env=clean_env(SERVER="litserve", MODEL_NAME="tiny_onnx", STOP_AFTER="10"),
        locustfile=COUNTED,
        run_time=COUNTED_GUARD,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def assert_no_failures(run) -> None:
    stats = run.stats("litserve/tiny_onnx")
    assert int(stats["Request Count"]) > 0
    assert int(stats["Failure Count"]) == 0, run.failures()


def test_locust_image_base64(litserve_image_tiny: RunningServer, tmp_path: Path) -> None:
    assert_no_failures(locust_run(tmp_path, litserve_image_tiny, "--litserve-payload", "image-base64"))


def test_locust_image_bytes(litserve_bytes_tiny: RunningServer, tmp_path: Path) -> None:
    assert_no_failures(locust_run(tmp_path, litserve_bytes_tiny, "--litserve-payload", "image-bytes"))


def test_locust_template(litserve_image_tiny: RunningServer, tmp_path: Path) -> None:
    template = tmp_path / "request.json"
    template.write_text('{"image": "{{image_base64}}", "client": "locust"}')
    run = locust_run(
        tmp_path, litserve_image_tiny, "--litserve-payload", "template", "--litserve-template", str(template)
    )
    assert_no_failures(run)


def test_locust_tensor_with_the_output_key_named(litserve_tiny: RunningServer, tmp_path: Path) -> None:
    assert_no_failures(
        locust_run(tmp_path, litserve_tiny, "--litserve-payload", "tensor", "--litserve-output", "output")
    )


# --------------------------------------------------------------------------------------------------------
# the response check follows --litserve-output
# --------------------------------------------------------------------------------------------------------
def test_a_missing_output_key_fails_each_request_with_the_reason(
    litserve_image_tiny: RunningServer, tmp_path: Path
) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        litserve_image_tiny.url,
        "--litserve-payload",
        "image-base64",
        "--litserve-output",
        "label",
        "HighUser",
        env=clean_env(SERVER="litserve", MODEL_NAME="tiny_onnx", STOP_AFTER="5"),
        locustfile=COUNTED,
        run_time=COUNTED_GUARD,
    )
    assert run.returncode == 1, run.stderr[-3000:]  # Locust's exit status when requests failed
    stats = run.stats("litserve/tiny_onnx")
    assert int(stats["Request Count"]) > 0
    assert stats["Failure Count"] == stats["Request Count"]
    [failure] = run.failures()
    assert 'response has no "label" field (it has ["output"]' in failure["Error"], failure


def test_a_label_key_and_status_only_pass(litserve_image_checksum: RunningServer, tmp_path: Path) -> None:
    """``sha256`` holds a string (a label); ``none`` checks the status alone."""
    for output in ("sha256", "none"):
        target = prepared(
            litserve_image_checksum,
            litserve=LitServeSettings(
                payload="image-base64",
                key=LITSERVE_CHECKSUM_IMAGE_KEY,
                output=None if output == "none" else output,
            ),
        )
        assert send(target).status == 200
    missing = prepared(
        litserve_image_checksum,
        litserve=LitServeSettings(payload="image-base64", key=LITSERVE_CHECKSUM_IMAGE_KEY, output="class"),
    )
    slot = RequestSlot()
    slot.submit(missing.endpoint)
    outcome = slot.wait(timeout=60)
    assert outcome is not None and outcome.status == 200
    assert 'response has no "class" field' in str(outcome.exception)


# --------------------------------------------------------------------------------------------------------
# bad options: one line, exit status 2, before any server is contacted
# --------------------------------------------------------------------------------------------------------
def test_bad_litserve_options(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"image": "{{image_base64}}"}')
    no_placeholder = tmp_path / "plain.json"
    no_placeholder.write_text('{"image": "x"}')
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"image": "{{image_base64}}",}')
    typo = tmp_path / "typo.json"
    typo.write_text('{"image": "{{image_b64}}"}')
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    missing = tmp_path / "missing.json"
    for args, message in (
        (["--litserve-payload", "template"], "--litserve-payload template needs --litserve-template FILE"),
        (
            ["--litserve-payload", "image-base64", "--litserve-template", str(good)],
            "--litserve-template is sent with --litserve-payload template, not image-base64",
        ),
        (["--litserve-key", "photo"], "--litserve-key names the image's key with --litserve-payload image-base64"),
        (
            ["--litserve-payload", "template", "--litserve-template", str(no_placeholder)],
            f'--litserve-template {no_placeholder} has no placeholder: put "{{{{image_base64}}}}"',
        ),
        (
            ["--litserve-payload", "template", "--litserve-template", str(not_json)],
            f"--litserve-template {not_json} is not valid JSON: key must be a string at line 1 column 30",
        ),
        (
            ["--litserve-payload", "template", "--litserve-template", str(typo)],
            "unknown placeholder {{image_b64}}: use {{image_base64}} or {{tensor}}",
        ),
        (
            ["--litserve-payload", "template", "--litserve-template", str(missing)],
            f"--litserve-template {missing}: cannot be read (No such file or directory)",
        ),
        (["--litserve-payload", "image-bytes", "--image", str(corrupt)], f"cannot read image {corrupt}"),
        (["--litserve-payload", "image-base64", "--image", str(tmp_path / "no.jpg")], "no.jpg does not exist"),
    ):
        run = run_locust(tmp_path, *args, env=clean_env(SERVER="litserve", MODEL_NAME="m"))
        assert_clean_failure(run, message)


def test_litserve_options_with_triton(tmp_path: Path) -> None:
    run = run_locust(tmp_path, "--litserve-output", "label", env=clean_env(SERVER="triton", MODEL_NAME="m"))
    assert_clean_failure(run, "--litserve-output applies to --server litserve, not triton")
