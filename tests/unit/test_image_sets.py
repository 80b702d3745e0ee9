"""preprocess_images on many files: order kept, progress on stderr for large sets, the first bad file
(in order) named, without a server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from locust_inference import ImageError
from locust_inference._native import preprocess_images
from PIL import Image


def _files(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.png"
        Image.new("RGB", (5 + i % 7, 4 + i % 3), (i % 256, (3 * i) % 256, (7 * i) % 256)).save(path)
        paths.append(path)
    return paths


def _stretch(path: Path) -> bytes:
    return np.asarray(Image.open(path).convert("RGB").resize((4, 4), Image.BILINEAR), dtype=np.uint8).tobytes()


def test_a_large_set_keeps_its_order_and_reports_progress(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    files = _files(tmp_path, 250)
    out = preprocess_images(
        files, fit="stretch", width=4, height=4, layout="nhwc", datatype="UINT8", scale=1.0, progress=True
    )
    assert out == [_stretch(f) for f in files]
    lines = capfd.readouterr().err.splitlines()
    assert lines == [f"locust-inference: preprocessed {n}/250 images" for n in range(25, 251, 25)]


def test_a_small_set_is_quiet(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    preprocess_images(_files(tmp_path, 3), fit="stretch", width=4, height=4, progress=True)
    assert capfd.readouterr().err == ""


def test_the_first_bad_file_in_order_is_named(tmp_path: Path) -> None:
    files = _files(tmp_path, 40)
    for n in (11, 30):
        files[n].write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageError, match=str(files[11])):
        preprocess_images(files, fit="letterbox", width=8, height=8, threads=4)
