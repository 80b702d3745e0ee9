"""perf_analyzer's input data for any model, images or not: ``--input-data random`` or ``zero``
(one tensor per model input, shaped by the metadata and ``--shape``) or a JSON file in
perf_analyzer's format::

    {"data": [{"INPUT0": [1, 2, 3, 4], "INPUT1": {"content": [...], "shape": [2, 2]}},
              {"INPUT0": {"b64": "AAAA...", "shape": [4]}, "INPUT1": [...]}]}

Each entry of ``"data"`` gives every input of one batch item (values flattened or nested, row-major;
``b64`` is the raw little-endian bytes); a request of batch B carries B consecutive entries, and
requests rotate through the entries. Shapes exclude the batch dimension, as in perf_analyzer.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from locust_inference import input_memory
from locust_inference._native import ConfigError
from locust_inference.input_options import InputSettings

__all__ = ["NUMPY_TYPES", "Request", "requests"]

NUMPY_TYPES = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}

# One request: each input as (name, datatype, shape, little-endian bytes).
Request = list[tuple[str, str, list[int], bytes]]


class _Input:
    """A model input: its datatype and the shape of one batch item (``None`` where still unknown)."""

    def __init__(self, spec: dict[str, Any], settings: InputSettings, batch_size: int) -> None:
        self.name: str = spec["name"]
        self.datatype: str = spec["datatype"]
        shape = list(spec["shape"])
        if self.datatype not in NUMPY_TYPES:
            raise ConfigError(f"input {self.name!r} is {self.datatype}, which --input-data cannot generate or read")
        self.dtype = np.dtype(NUMPY_TYPES[self.datatype])
        self.batched = bool(shape) and shape[0] == -1
        if not self.batched and batch_size != 1:
            raise ConfigError(f"input {self.name!r} has shape {shape}, with no batch dimension: use --batch-size 1")
        item = shape[1:] if self.batched else shape
        given = dict(settings.shapes).get(self.name)
        if given is not None:
            fits = len(given) == len(item) and all(d in (-1, g) for d, g in zip(item, given, strict=True))
            if not fits:
                raise ConfigError(f"--shape {self.name}:{','.join(map(str, given))} does not fit the model's {shape}")
            item = list(given)
        self.model_shape = shape
        self.item: list[int] | None = None if -1 in item else item

    def fixed_item(self) -> list[int]:
        if self.item is None:
            raise ConfigError(
                f"input {self.name!r} has shape {self.model_shape} with a variable dimension: "
                f"pass --shape {self.name}:d1,d2,... (without the batch dimension)"
            )
        return self.item


def _generated(inputs: list[_Input], kind: str, seed: int) -> list[dict[str, tuple[list[int], bytes]]]:
    rng = np.random.default_rng(seed)
    entry = {}
    for i in inputs:
        shape = i.fixed_item()
        if kind == "zero":
            array = np.zeros(shape, dtype=i.dtype)
        elif i.dtype.kind == "f":
            array = rng.random(shape).astype(i.dtype)
        elif i.dtype.kind == "b":
            array = rng.integers(0, 2, shape).astype(i.dtype)
        else:
            info = np.iinfo(i.dtype)
            array = rng.integers(max(info.min, -128), min(info.max, 255), shape, endpoint=True).astype(i.dtype)
        entry[i.name] = (shape, array.tobytes())
    return [entry]


def _load(path: Path, limit: int) -> list[Any]:
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ConfigError(f"--input-data {path}: cannot be read ({type(err).__name__})") from None
    # parsed, a number of two characters becomes a Python object of 32 bytes: checked before reading
    input_memory.check(size * input_memory.JSON_DOCUMENT_FACTOR, limit, f"--input-data {path} ({size} bytes)")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--input-data {path}: cannot be read ({type(err).__name__})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"--input-data {path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list) or not data:
        raise ConfigError(f'--input-data {path}: expected {{"data": [...]}} with at least one entry')
    if any(isinstance(entry, list) for entry in data):
        raise ConfigError(f"--input-data {path}: several streams (lists of entries in data) are not supported")
    return data


def _value(where: str, i: _Input, value: Any) -> tuple[list[int], bytes]:
    shape = None
    if isinstance(value, dict):
        shape = value.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ConfigError(f"{where}: shape must be a list of whole dimensions, not {shape!r}")
        if "b64" in value:
            try:
                raw = base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ConfigError(f"{where}: b64 is not valid base64") from None
            shape = shape if shape is not None else i.fixed_item()
            need = math.prod(shape) * i.dtype.itemsize
            if len(raw) != need:
                raise ConfigError(f"{where}: b64 holds {len(raw)} bytes, shape {shape} of {i.datatype} needs {need}")
            return shape, raw
        if "content" not in value:
            raise ConfigError(f"{where}: expected a list of values, or an object with content or b64")
        value = value["content"]
    try:
        array = np.asarray(value, dtype=i.dtype)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{where}: not a list of {i.datatype} values ({err})") from None
    shape = shape if shape is not None else (i.item if i.item is not None else list(array.shape))
    if array.size != math.prod(shape):
        raise ConfigError(f"{where}: {array.size} values, shape {shape} needs {math.prod(shape)}")
    return list(shape), np.ascontiguousarray(array).tobytes()


def _entries(path: Path, inputs: list[_Input], limit: int) -> list[dict[str, tuple[list[int], bytes]]]:
    entries = []
    names = {i.name for i in inputs}
    for n, raw in enumerate(_load(path, limit)):
        where = f"--input-data {path}: data[{n}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} is not an object of inputs")
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(f"{where} has {unknown[0]!r}, which the model does not take (it takes {sorted(names)})")
        entry = {}
        for i in inputs:
            if i.name not in raw:
                raise ConfigError(f"{where} has no input {i.name!r}")
            entry[i.name] = _value(f"{where}.{i.name}", i, raw[i.name])
        entries.append(entry)
    return entries


def _check_generated(inputs: list[_Input], batch_size: int, limit: int, binary: bool) -> None:
    """Refuses, before anything is generated, an entry and its requests that would not fit in ``limit``:
    each input made as 64-bit values, converted and copied to bytes, then ``batch_size`` copies joined into
    the request, encoded into its body and copied to Rust while it is."""
    shapes = [(i, math.prod(i.fixed_item())) for i in inputs]
    entry = sum(i.dtype.itemsize * n for i, n in shapes)
    making = max((8 + 2 * i.dtype.itemsize) * n for i, n in shapes)
    request = batch_size * entry
    body = input_memory.triton_body_bytes(
        [(i.datatype, batch_size * n, batch_size * i.dtype.itemsize * n) for i, n in shapes], binary=binary
    )
    need = max(entry + making, entry + request, input_memory.encoding(request, body, body, request + body))
    input_memory.check(need, limit, f"--input-data with batch {batch_size}")


def _check_requests(
    entries: list[dict[str, tuple[list[int], bytes]]],
    inputs: list[_Input],
    batch_size: int,
    *,
    limit: int,
    binary: bool,
    what: str,
) -> None:
    """Refuses, before they are joined, requests of ``entries`` that would not fit in ``limit``: each entry
    is carried by ``batch_size`` requests, whose bodies are encoded (each request copied to Rust while it
    is) and copied into the sealed memfd."""
    held = sum(len(data) for entry in entries for _, data in entry.values())
    requests = batch_size * held
    largest = batch_size * max(sum(len(data) for _, data in entry.values()) for entry in entries)
    itemsize = {i.name: i.dtype.itemsize for i in inputs}
    per_input = [
        (i.datatype, batch_size * sum(len(e[i.name][1]) for e in entries) // itemsize[i.name], 0) for i in inputs
    ]
    bodies = input_memory.triton_body_bytes(per_input, binary=False) if not binary else requests
    bodies += len(entries) * input_memory.TRITON_HEADER_BYTES
    # the largest body: its tensors, or their JSON text (at most 6 bytes a byte: "false," of a BOOL)
    largest_body = input_memory.TRITON_HEADER_BYTES + largest * (1 if binary else 6)
    smallest = min(bodies // len(entries), largest_body)
    need = max(held + requests, input_memory.encoding(requests, bodies, smallest, largest + largest_body))
    input_memory.check(need, limit, what)


def requests(
    specs: list[dict[str, Any]], settings: InputSettings, batch_size: int, seed: int, *, binary: bool = True
) -> list[Request]:
    """The requests to rotate through: request k carries entries k .. k + batch - 1 (wrapping). What they
    will take in memory, with their bodies (binary or JSON), is checked against ``settings.max_memory``
    before it is allocated."""
    inputs = [_Input(spec, settings, batch_size) for spec in specs]
    known = {i.name for i in inputs}
    for name, _ in settings.shapes:
        if name not in known:
            raise ConfigError(f"--shape {name}: the model has no such input (it has {sorted(known)})")
    source = settings.input_data or "random"
    if source in ("random", "zero"):
        _check_generated(inputs, batch_size, settings.max_memory, binary)
        entries = _generated(inputs, source, seed)
    else:
        entries = _entries(Path(source), inputs, settings.max_memory)
    what = f"{len(entries)} requests of batch {batch_size}"
    _check_requests(entries, inputs, batch_size, limit=settings.max_memory, binary=binary, what=what)
    out = []
    for k in range(len(entries)):
        request: Request = []
        for i in inputs:
            items = [entries[(k + j) % len(entries)][i.name] for j in range(batch_size)]
            shape = items[0][0]
            if any(s != shape for s, _ in items):
                raise ConfigError(f"input {i.name!r}: entries of one batch have different shapes, {shape} and others")
            full = [batch_size, *shape] if i.batched else shape
            request.append((i.name, i.datatype, full, b"".join(b for _, b in items)))
        out.append(request)
    return out
