"""Image files the tests make: large to decode, or many of them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from support.runs import IMAGE


def flat_png(path: Path, side: int) -> Path:
    """A one-colour PNG: a few KB of file, ``side`` x ``side`` pixels to decode."""
    Image.new("RGB", (side, side), (90, 120, 150)).save(path)
    return path


def copies(folder: Path, count: int) -> Path:
    """``count`` copies of the test JPEG in a new folder."""
    folder.mkdir()
    for k in range(count):
        (folder / f"{k:02d}.jpg").write_bytes(IMAGE.read_bytes())
    return folder
