"""Configuration errors only a real server reveals (a model it does not have, an image its model cannot
take) stop the start in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.runs import assert_clean_failure, clean_env, run_locust


def test_model_the_server_does_not_have(triton, tmp_path: Path) -> None:
    run = run_locust(tmp_path, "--host", triton.url, env=clean_env(SERVER="triton", MODEL_NAME="resnet51"))
    assert_clean_failure(run, "has no model 'resnet51'", "MODEL_NAME")


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "does not exist"), (b"", "the file is empty"), (b"GIF89a not really", "cannot read image")],
    ids=["missing", "empty", "corrupt"],
)
def test_bad_image(triton, tmp_path: Path, content: bytes | None, reason: str) -> None:
    image = tmp_path / "img.jpg"
    if content is not None:
        image.write_bytes(content)
    run = run_locust(
        tmp_path, "--host", triton.url, "--image", str(image), env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx")
    )
    assert_clean_failure(run, str(image), reason)
