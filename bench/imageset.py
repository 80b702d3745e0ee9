"""Preprocessing an image set: ours (``locust_inference.image_inputs.preprocess``: every image decoded and
preprocessed once, in parallel in Rust, as ``--image DIR`` does at start) against Pillow + numpy one image
after another (the pipeline of :mod:`bench.preprocess`), on the same directory of JPEGs of varied sizes
made from ``data/img1.jpg``.

Run as ``python -m bench.imageset {ours|pillow} --count N [--duration S]``; prints one JSON line:
``{"images": n, "seconds": s, "images_s": r, "mean_ms": m, "bytes_per_image": b}`` where ``mean_ms`` is the
mean time per image over the whole set and ``bytes_per_image`` how much the process's memory grew per
image kept (ours: the tensors themselves; a 224x224 FP32 image is 602,112 bytes).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.preprocess import pillow_preprocess

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "data" / "img1.jpg"
SEED = 20261129


def make_set(count: int) -> Path:
    """``count`` JPEGs, 300 to 1,200 pixels a side, cropped and resized from img1.jpg (made once per count)."""
    folder = Path(tempfile.gettempdir()) / f"locust-inference-imageset-{count}-{SEED}"
    if len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    with Image.open(SOURCE) as opened:
        source = opened.convert("RGB")
    width, height = source.size
    for i in range(count):
        left, top = rng.randrange(0, width // 4), rng.randrange(0, height // 4)
        box = (left, top, left + width * 3 // 4, top + height * 3 // 4)
        size = (rng.randrange(300, 1201), rng.randrange(300, 1201))
        source.crop(box).resize(size, Image.Resampling.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def ours(files: list[Path]) -> list[bytes]:
    from locust_inference import image_inputs
    from locust_inference.input_options import InputSettings

    spec = {"name": "x", "datatype": "FP32", "shape": [-1, 3, 224, 224]}
    return image_inputs.preprocess(files, image_inputs.plan(spec, InputSettings(), 1))


def pillow(files: list[Path]) -> list[bytes]:
    return [pillow_preprocess(f).tobytes() for f in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("ours", "pillow"))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=0.0, help="ignored: the whole set is one measurement")
    args = parser.parse_args(argv)
    files = sorted(make_set(args.count).glob("*.jpg"))
    run = ours if args.which == "ours" else pillow
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    tensors = run(files)
    seconds = time.perf_counter() - start
    grown = rss_bytes() - before
    assert len(tensors) == len(files) and all(len(t) == 3 * 224 * 224 * 4 for t in tensors)
    json.dump(
        {
            "images": len(files),
            "seconds": seconds,
            "images_s": len(files) / seconds,
            "mean_ms": seconds / len(files) * 1000,
            "bytes_per_image": grown / len(files),
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
