"""LitServe as a :class:`~locust_inference.backends.common.Target`, in one pass: the payload planned from
the options (``--litserve-payload``, its template and the placeholders it holds), the memory of the bodies
checked before any image is read, every image preprocessed (ImageNet, as the seed) and each body encoded
once, then the server asked whether it listens and the endpoint made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locust_inference import defaults, image_inputs, input_memory
from locust_inference._native import (
    ConfigError,
    encode_litserve_image_request,
    encode_litserve_request,
    fill_litserve_template,
    litserve_template_placeholders,
)
from locust_inference.backends.common import Body, Target, checksum, file_size, get, make_target, read
from locust_inference.input_options import InputSettings
from locust_inference.options import Settings

__all__ = ["image_content_type", "prepare"]

_IMAGENET_INPUT = {"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}  # what LitServe is sent
_IMAGENET_ITEM_BYTES = 3 * 224 * 224 * 4
_JSON_TYPE = [("Content-Type", "application/json")]

Tensor = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True)
class _Payload:
    """What each body is made of: the payload kind, and for ``template`` the file's bytes and whether it
    carries the tensor (``{{tensor}}``) beside the image."""

    kind: str
    template: bytes | None = None
    uses_tensor: bool = False


def prepare(settings: Settings, files: list[Path]) -> Target:
    """The target for ``settings``, sending the images ``files``."""
    payload = _plan(settings)  # 1. what the bodies carry
    _check_memory(settings, payload, files)  # 2. memory, once: before any image is read or decoded
    bodies, input_checksum = _bodies(settings, payload, files)  # 3. the bodies; bad input fails alone
    get(settings, f"{settings.host}/health", "LitServe")  # 4. any answer will do: it is listening
    output = settings.litserve.output
    return make_target(
        settings,
        f"{settings.host}/predict",
        bodies,
        list(settings.headers),
        json_header_bytes=None,
        tensor_bytes=_IMAGENET_ITEM_BYTES * settings.batch_size,
        input_checksum=input_checksum,
        inputs=tuple(str(f) for f in files) if len(files) > 1 else (),
        # with none, the status alone is checked: the key is the endpoint's own default, unused
        protocol="none" if output is None else "litserve",
        output_key=defaults.LITSERVE_OUTPUT if output is None else output,
    )


def _plan(settings: Settings) -> _Payload:
    kind = settings.litserve.payload
    if kind != "template":
        return _Payload(kind)
    path = settings.litserve.template
    assert path is not None, "options.resolve requires a template file"
    # read whole before the estimate, which depends on its placeholders: bounded by its size first
    input_memory.check(file_size(path), settings.inputs.max_memory, "--litserve-template")
    template = read(path, "--litserve-template")
    try:
        placeholders = litserve_template_placeholders(template)
    except ValueError as err:
        raise ConfigError(f"--litserve-template {path} {err}") from None
    return _Payload(kind, template, "{{tensor}}" in placeholders)


def _check_memory(settings: Settings, payload: _Payload, files: list[Path]) -> None:
    """Refuses bodies that would not fit in --max-input-memory with everything they are made from: the
    tensors (every file is preprocessed, whatever the payload), the files read, the batches stacked and
    the bodies encoded, their copies in Rust and in the sealed memfd."""
    count, batch, item = len(files), settings.batch_size, _IMAGENET_ITEM_BYTES
    tensors = count * item
    tensor_json = item // 4 * batch * input_memory.JSON_ELEMENT_BYTES["FP32"]  # one batch as a nested list
    sizes = [file_size(f) for f in files]
    base64 = [(size + 2) // 3 * 4 for size in sizes]
    if payload.kind == "tensor":
        encode = input_memory.encoding(tensors, count * tensor_json, tensor_json, 2 * batch * item + tensor_json)
    elif payload.kind == "image-bytes":  # the files are the bodies
        encode = input_memory.encoding(tensors, sum(sizes), min(sizes), 0)
    else:
        assert payload.template is not None or payload.kind == "image-base64"
        extra = len(settings.litserve.key) + 16 if payload.template is None else len(payload.template)
        bodies = [extra + b + (tensor_json if payload.uses_tensor else 0) for b in base64]
        transient = max(bodies) + (2 * batch * item if payload.uses_tensor else 0)
        encode = input_memory.encoding(tensors + sum(sizes), sum(bodies), min(bodies), transient)
    need = max(tensors + input_memory.image_decoding(files), encode)
    input_memory.check(need, settings.inputs.max_memory, f"{count} images")


def _tensors(settings: Settings, files: list[Path]) -> list[Tensor]:
    """Each file's [3, 224, 224] tensor (the seed's ImageNet preprocessing), preprocessed in parallel in
    Rust; every file is decoded, so one that is no image stops the start with its name."""
    plan = image_inputs.plan(_IMAGENET_INPUT, InputSettings(), settings.batch_size)
    return [np.frombuffer(t, dtype="<f4").reshape(3, 224, 224) for t in image_inputs.preprocess(files, plan)]


def _batch(images: list[Tensor], k: int, batch: int) -> Tensor:
    """Request k's [batch, 3, 224, 224] tensor: images k .. k + batch - 1 (wrapping), as for Triton."""
    return np.stack([images[(k + j) % len(images)] for j in range(batch)])


def _bodies(settings: Settings, payload: _Payload, files: list[Path]) -> tuple[list[Body], str]:
    """Each request body, with its own headers (the Content-Type of an image sent as the body), and the
    checksum logs show for the first: of the tensor, or of the image file when the body carries the file."""
    tensors = _tensors(settings, files)
    batch = settings.batch_size
    if payload.kind == "tensor":
        bodies = [(encode_litserve_request(_batch(tensors, k, batch)), _JSON_TYPE) for k in range(len(files))]
        return bodies, checksum(_batch(tensors, 0, batch).tobytes())
    images = [read(f, "--image") for f in files]
    if payload.kind == "image-base64":
        key = settings.litserve.key
        return [(encode_litserve_image_request(key, i), _JSON_TYPE) for i in images], checksum(images[0])
    if payload.kind == "image-bytes":
        return [(i, [("Content-Type", image_content_type(i))]) for i in images], checksum(images[0])
    assert payload.template is not None
    try:
        bodies = [
            (
                fill_litserve_template(
                    payload.template, image, _batch(tensors, k, batch) if payload.uses_tensor else None
                ),
                _JSON_TYPE,
            )
            for k, image in enumerate(images)
        ]
    except ValueError as err:
        raise ConfigError(f"--litserve-template {settings.litserve.template} {err}") from None
    return bodies, checksum(_batch(tensors, 0, batch).tobytes() if payload.uses_tensor else images[0])


# Content-Type of an image body, from the file's leading bytes (the formats preprocess_image decodes).
_IMAGE_TYPES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def image_content_type(data: bytes) -> str:
    """The media type of an encoded image (``application/octet-stream`` when not recognised)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _IMAGE_TYPES if data.startswith(magic)), "application/octet-stream")
