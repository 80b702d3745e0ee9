"""preprocess_image against the torchvision-on-Pillow reference, built here with Pillow + numpy."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from locust_inference import ImageError, LocustInferenceError, preprocess_image
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def reference(path: Path, size: int = 256, crop: int = 224) -> np.ndarray:
    """torchvision's Resize(size) + CenterCrop(crop) + ToTensor() + Normalize() on a PIL image."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    tensor = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return (tensor - MEAN) / STD


def photo() -> Image.Image:
    return Image.open(REPO_ROOT / "data" / "img1.jpg").convert("RGB")


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# name -> (how to write it, tolerance from the spec: 0.05 for lossy JPEG decoding, 0.02 otherwise)
CASES = {
    "reference.jpg": (lambda p: None, 0.05),
    "baseline.jpg": (lambda p: photo().save(p, quality=90), 0.05),
    "progressive.jpg": (lambda p: photo().save(p, quality=85, progressive=True), 0.05),
    "noise_444.jpg": (lambda p: noise(517, 333).save(p, quality=95, subsampling=0), 0.05),
    "grayscale.jpg": (lambda p: photo().convert("L").save(p), 0.05),
    "cmyk.jpg": (lambda p: photo().convert("CMYK").save(p), 0.05),
    "very_large.jpg": (lambda p: photo().resize((4000, 3000)).save(p, quality=90), 0.05),
    # taller than twice its width: Pillow 13 resizes vertically first
    "tall.jpg": (lambda p: photo().resize((300, 1000)).save(p, quality=90), 0.05),
    "subsampling_422.jpg": (lambda p: noise(777, 533, 6).save(p, quality=90, subsampling=1), 0.05),
    "restart_markers.jpg": (lambda p: photo().save(p, quality=90, restart_marker_rows=1), 0.05),
    "photo.png": (lambda p: photo().save(p), 0.02),
    "rgba.png": (lambda p: photo().convert("RGBA").save(p), 0.02),
    "grayscale.png": (lambda p: photo().convert("L").save(p), 0.02),
    "palette.png": (lambda p: photo().convert("P").save(p), 0.02),
    "tiny.png": (lambda p: noise(13, 17, 1).save(p), 0.02),
    "one_pixel.png": (lambda p: noise(1, 1, 2).save(p), 0.02),
    "odd_wide.png": (lambda p: noise(1001, 257, 3).save(p), 0.02),
    "odd_tall.png": (lambda p: noise(227, 999, 4).save(p), 0.02),
    "very_tall.png": (lambda p: noise(257, 2000, 7).save(p), 0.02),
    "short_side_256.png": (lambda p: noise(256, 301, 5).save(p), 0.02),
    "lossless.webp": (lambda p: photo().save(p, lossless=True), 0.02),
    "lossy.webp": (lambda p: photo().save(p, quality=80), 0.05),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for name, (write, _) in CASES.items():
        path = REPO_ROOT / "data" / "img1.jpg" if name == "reference.jpg" else folder / name
        write(path)
        paths[name] = path
    return paths


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torchvision_on_pillow(images: dict[str, Path], name: str) -> None:
    ours = preprocess_image(images[name])
    ref = reference(images[name])
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224) and ours.flags.c_contiguous
    assert np.abs(ours - ref).max() <= CASES[name][1]


@pytest.mark.parametrize("name", list(CASES))
def test_is_bit_identical_to_pillow(images: dict[str, Path], name: str) -> None:
    """Stronger than the spec: JPEG goes through libjpeg-turbo's own code with Pillow's settings and
    the resampler reproduces Pillow's fixed-point arithmetic, so every value is identical."""
    np.testing.assert_array_equal(preprocess_image(images[name]), reference(images[name]))


def test_custom_sizes_and_normalisation(images: dict[str, Path]) -> None:
    path = images["odd_wide.png"]
    ours = preprocess_image(path, resize=128, crop=100, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    img = Image.open(path).convert("RGB").resize((498, 128), Image.BILINEAR)
    top, left = int(round((128 - 100) / 2.0)), int(round((498 - 100) / 2.0))
    arr = np.asarray(img.crop((left, top, left + 100, top + 100)), dtype=np.float32).transpose(2, 0, 1) / 255
    expected = (arr - np.float32(0.5)) / np.array([0.5, 0.25, 1.0], dtype=np.float32).reshape(3, 1, 1)
    np.testing.assert_array_equal(ours, expected)


def test_rejects_impossible_parameters(images: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        preprocess_image(images["photo.png"], resize=200, crop=224)
    with pytest.raises(ValueError, match="std"):
        preprocess_image(images["photo.png"], std=(0.0, 1.0, 1.0))


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims a huge image (its pixel data is missing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


BAD_FILES = {
    "missing.jpg": (None, "No such file"),
    "empty.jpg": (b"", "empty"),
    "text.jpg": (b"this is not an image at all", "not a recognised image format"),
    "truncated.jpg": ("truncate-jpeg", "truncated"),
    "truncated.png": ("truncate-png", "PNG decoding failed"),
    "bomb.png": (png_claiming(30000, 30000), "decompression bomb"),
    "corrupt.jpg": ("corrupt-jpeg", "JPEG decoding failed"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_raise_image_error_naming_file_and_reason(tmp_path: Path, name: str) -> None:
    content, reason = BAD_FILES[name]
    path = tmp_path / name
    source = (REPO_ROOT / "data" / "img1.jpg").read_bytes()
    if content == "truncate-jpeg":
        path.write_bytes(source[: len(source) // 2])
    elif content == "truncate-png":
        photo().save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "corrupt-jpeg":
        sos = source.index(b"\xff\xda")
        path.write_bytes(source[: sos - 200] + b"\x00" * 200 + source[sos:])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        preprocess_image(path)
    assert isinstance(info.value, LocustInferenceError)
    assert str(path) in str(info.value) and reason in str(info.value), str(info.value)


def test_directory_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=str(tmp_path)):
        preprocess_image(tmp_path)
