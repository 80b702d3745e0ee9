"""Preprocessing per image: ``locust_inference.preprocess_image`` against the Pillow + numpy pipeline
that equals torchvision's ``Resize(256)`` (bilinear, on the PIL image) + ``CenterCrop(224)`` +
``ToTensor()`` + ``Normalize(mean, std)``.

Run as ``python -m bench.preprocess {ours|pillow} IMAGE --duration S``; prints one JSON line:
``{"images": n, "seconds": s, "images_s": r, "p50_ms": m}`` (p50 = median time per image, file read
and decode included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["MEAN", "STD", "main", "make_large_jpeg", "pillow_preprocess", "time_per_image"]

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def pillow_preprocess(path: str | Path, resize: int = 256, crop: int = 224) -> np.ndarray:
    """torchvision's transform chain with Pillow and numpy: a (3, crop, crop) float32 array."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    # Resize(int): the shorter side becomes `resize`, the longer one int(resize * long / short).
    size = (resize, int(resize * height / width)) if width <= height else (int(resize * width / height), resize)
    image = image.resize(size, Image.Resampling.BILINEAR)
    width, height = image.size
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - MEAN) / STD
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def make_large_jpeg(source: str | Path, target: str | Path, size: tuple[int, int] = (4000, 3000)) -> Path:
    """A camera-sized JPEG (4000x3000, quality 90, 4:2:0) made from ``source``, with mild fixed-seed
    noise so that it compresses like a photograph rather than like a smooth upscale."""
    with Image.open(source) as image:
        big = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(big, dtype=np.int16)
    noise = np.random.default_rng(0).normal(0.0, 3.0, pixels.shape).astype(np.int16)
    noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")
    target = Path(target)
    noisy.save(target, "JPEG", quality=90, subsampling="4:2:0")
    return target


def time_per_image(function: Callable[[str], np.ndarray], path: str, duration: float) -> dict[str, float | int]:
    """Calls ``function(path)`` back to back for ``duration`` seconds (at least 3 times)."""
    times: list[float] = []
    start = time.perf_counter()
    now = start
    while now < start + duration or len(times) < 3:
        t0 = time.perf_counter()
        function(path)
        now = time.perf_counter()
        times.append((now - t0) * 1000.0)
    elapsed = now - start
    return {
        "images": len(times),
        "seconds": elapsed,
        "images_s": len(times) / elapsed,
        "p50_ms": statistics.median(times),
        "mean_ms": statistics.fmean(times),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["ours", "pillow"])
    parser.add_argument("image")
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.which == "ours":
        from locust_inference import preprocess_image

        function: Callable[[str], np.ndarray] = preprocess_image
    else:
        function = pillow_preprocess
    print(json.dumps(time_per_image(function, args.image, args.duration)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
