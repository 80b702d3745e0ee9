"""Helpers for the own-model tests: settings resolved as from the command line, a prepared target
driven in-process with each answer's checksum words, and the reference pipelines in Pillow + numpy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from locust_inference import decode_triton_response
from locust_inference._native import RequestSlot
from locust_inference.backends import Target, prepare
from locust_inference.options import resolve
from PIL import Image

from servers.echo_models import checksum_words

REPO_ROOT = Path(__file__).resolve().parents[2]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def settings(url: str, model: str, **options: Any):
    """Settings as ``--host url --model-name model --keep-body`` plus ``options`` (dashes as underscores)."""
    namespace = SimpleNamespace(server="triton", model_name=model, keep_body=True, **options)
    return resolve(namespace, url, environ={})


def answers(target: Target, count: int, seed: int | None = None) -> list[tuple[int, list[int]]]:
    """Sends ``count`` requests one after the other as one user; each answer's (input index, checksum
    words of its first batch item)."""
    return [(index, rows[0]) for index, rows in batch_answers(target, count, seed)]


def answers_in_turn(target: Target, count: int) -> list[dict]:
    """Sends ``count`` requests one after the other as one user; each answer's JSON body."""
    slot = RequestSlot()
    got = []
    for _ in range(count):
        slot.submit(target.endpoint)
        outcome = slot.wait(timeout=60)
        assert outcome is not None and outcome.exception is None, outcome
        assert outcome.body is not None
        got.append(json.loads(outcome.body))
    return got


def first_words(outcome) -> list[int]:
    """The checksum words of an echo model's answer for its first batch item."""
    length = dict(outcome.headers)["inference-header-content-length"]
    return [int(v) for v in decode_triton_response(outcome.body, int(length))["CHECKSUM"][0]]


def batch_answers(target: Target, count: int, seed: int | None = None) -> list[tuple[int, list[list[int]]]]:
    """Like :func:`answers`, with the checksum words of every batch item."""
    slot = RequestSlot(seed=seed)
    out = []
    for _ in range(count):
        slot.submit(target.endpoint)
        outcome = slot.wait(60)
        assert outcome is not None and outcome.ok, outcome
        headers = dict(outcome.headers or [])
        length = headers.get("inference-header-content-length")
        outputs = decode_triton_response(outcome.body, int(length) if length is not None else None)
        rows = [[int(v) for v in row[:16]] for row in outputs["CHECKSUM"]]
        out.append((outcome.input_index, rows))
    return out


def run(url: str, model: str, count: int, **options: Any) -> tuple[Target, list[tuple[int, list[int]]]]:
    target = prepare(settings(url, model, **options))
    return target, answers(target, count)


def words(*arrays: np.ndarray) -> list[int]:
    """What an echo model answers for one batch item made of ``arrays`` (in input order)."""
    return checksum_words(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))


def rgb(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def imagenet(path: Path, crop: int = 224) -> np.ndarray:
    """torchvision's Resize(256) + CenterCrop(224) + ToTensor() + Normalize() on Pillow."""
    img = rgb(path)
    w, h = img.size
    size = int(crop * 256 / 224)
    short, long = (w, h) if w <= h else (h, w)
    new = (size, int(size * long / short)) if w <= h else (int(size * long / short), size)
    if new != (w, h):
        img = img.resize(new, Image.BILINEAR)
    top, left = int(round((new[1] - crop) / 2.0)), int(round((new[0] - crop) / 2.0))
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32).transpose(2, 0, 1)
    return (arr / np.float32(255.0) - MEAN) / STD


def stretched(path: Path, width: int, height: int) -> np.ndarray:
    """Pillow's bilinear resize to width x height, as HWC uint8."""
    img = rgb(path)
    if img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def letterboxed(path: Path, side: int) -> np.ndarray:
    """YOLO's letterbox on Pillow: fit inside side x side keeping the aspect ratio, centred on 114 grey,
    CHW float32 / 255."""
    img = rgb(path)
    w, h = img.size
    r = min(side / w, side / h)
    new = (min(side, max(1, math.floor(w * r + 0.5))), min(side, max(1, math.floor(h * r + 0.5))))
    if new != (w, h):
        img = img.resize(new, Image.BILINEAR)
    canvas = Image.new("RGB", (side, side), (114, 114, 114))
    canvas.paste(img, ((side - new[0]) // 2, (side - new[1]) // 2))
    return np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)


def image_set(folder: Path) -> list[Path]:
    """Three images of different sizes and formats (JPEG, PNG, WebP), named so their order is known."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = rgb(REPO_ROOT / "data" / "img1.jpg")
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (150, 410, 3), dtype=np.uint8))
    paths = [folder / "a_photo.jpg", folder / "b_noise.png", folder / "c_tall.webp"]
    photo.resize((500, 375)).save(paths[0], quality=90)
    noise.save(paths[1])
    photo.resize((240, 700)).save(paths[2], quality=80)
    return paths
