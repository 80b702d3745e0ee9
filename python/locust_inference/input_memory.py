"""What preparing the inputs will hold in memory at its peak, estimated before any of it is allocated and
checked against ``--max-input-memory``: a start that would not fit is refused in one line rather than
ending in an out-of-memory kill or a numpy traceback.

The estimates count every copy that lives at the same time: the tensors (images preprocessed, entries of
``--input-data``), the requests joined from them (a batch of B carries B tensors), the encoded bodies, the
Rust copies made while one body is encoded, the sealed memfd the bodies are copied into to be sent with
``sendfile``, and the decoder's working memory on each preprocessing thread.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from locust_inference._native import ConfigError, image_sizes

__all__ = [
    "JSON_DOCUMENT_FACTOR",
    "check",
    "encoding",
    "image_decoding",
    "sealed",
    "triton_body_bytes",
]

# The sealed memfd of zero-copy sends takes http:// bodies of up to 1 MiB each, 256 MiB in all
# (src/transport/zero_copy.rs: MAX_SEALED_BODY, MAX_SEALED_BYTES).
SEALED_MAX_BODY = 1 << 20
SEALED_MAX_TOTAL = 256 << 20
# Triton's JSON header of a binary request: names, datatypes and shapes
TRITON_HEADER_BYTES = 4096
# The longest JSON text of one element of each datatype, with its comma (an upper bound, so that a JSON
# request fits whatever the values)
JSON_ELEMENT_BYTES = {
    "BOOL": 6,
    "UINT8": 4,
    "INT8": 5,
    "UINT16": 6,
    "INT16": 7,
    "UINT32": 11,
    "INT32": 12,
    "UINT64": 21,
    "INT64": 21,
    "FP16": 12,
    "FP32": 16,
    "FP64": 25,
}
# json.loads of a perf_analyzer file: every number becomes a Python object (a float is 24 bytes, plus the
# 8-byte pointer of its list) from as few as 2 characters of text ("1,"), and the text itself is held
JSON_DOCUMENT_FACTOR = 17
# Working memory of one preprocessing thread per pixel of the image it decodes: a JPEG is decoded row by
# row, but a progressive one keeps its coefficients (up to 6 bytes a pixel) and the resampler keeps up to
# 4 bytes a pixel of rows; other formats are decoded whole (the bytes of a pixel their header says, e.g. 8
# for 16-bit RGBA), converted to 8-bit RGB (3) and resampled (4).
JPEG_BYTES_PER_PIXEL = 10
CONVERTED_BYTES_PER_PIXEL = 3 + 4
MAX_PIXELS = 2 * 89_478_485  # larger images are refused by the decoder (src/image/resample.rs)


def triton_body_bytes(tensors: list[tuple[str, int, int]], *, binary: bool) -> int:
    """The size of one Triton request body carrying ``tensors`` as (datatype, elements, bytes)."""
    if binary:
        return TRITON_HEADER_BYTES + sum(size for _, _, size in tensors)
    return TRITON_HEADER_BYTES + sum(elements * JSON_ELEMENT_BYTES.get(dt, 25) for dt, elements, _ in tensors)


def sealed(bodies: int, smallest: int) -> int:
    """At most what the sealed memfd copies of bodies of ``bodies`` bytes in all, the smallest of
    ``smallest`` bytes: none when every body is too large for it."""
    return min(bodies, SEALED_MAX_TOTAL) if smallest <= SEALED_MAX_BODY else 0


def encoding(held: int, bodies: int, smallest: int, transient: int) -> int:
    """The peak while bodies of ``bodies`` bytes in all (the smallest of ``smallest``) are encoded and the
    endpoint made from them, with ``held`` bytes alive meanwhile (what the bodies are encoded from) and
    ``transient`` bytes made while one body is encoded: that, or the sealed copy, on top of the bodies."""
    return held + bodies + max(transient, sealed(bodies, smallest))


def image_decoding(files: list[Path]) -> int:
    """The decoders' working memory while ``files`` are preprocessed: the largest images, one a thread,
    decoded at once (each image's pixels from its header; the file itself is read whole)."""
    working = []
    for path, size in zip(files, image_sizes([str(f) for f in files]), strict=True):
        try:
            file_bytes = path.stat().st_size
        except OSError:
            file_bytes = 0  # preprocessing names the file and why
        if size is None:  # not an image: refused by the decoder before it allocates
            working.append(file_bytes)
            continue
        width, height, decoded = size
        pixels = width * height if width * height <= MAX_PIXELS else 0  # larger: refused, with its own line
        per_pixel = decoded + CONVERTED_BYTES_PER_PIXEL if decoded else JPEG_BYTES_PER_PIXEL
        working.append(file_bytes + pixels * per_pixel)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = min(cpus, len(working))  # preprocess_images: a thread per core it may run on
    return sum(sorted(working, reverse=True)[:threads])


def check(need: int, limit: int, what: str) -> None:
    """Refuses, in one line, inputs whose preparation would hold more than ``limit`` bytes at once."""
    if need > limit:
        raise ConfigError(
            f"{what} need about {_mib(need)} at once (tensors, request bodies and their copies), over "
            f"--max-input-memory {_mib(limit)}: use fewer inputs or a smaller batch, or raise --max-input-memory"
        )


def _mib(n: float) -> str:
    return f"{math.ceil(n / 2**20)} MiB"
