"""Turns :class:`~locust_inference.options.Settings` into a ready :class:`Target`: the image is
preprocessed and the request encoded once, Triton's model metadata is discovered, and the server is
checked to be reachable, so a bad configuration fails once, at start, with one clear message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locust_inference._native import (
    CertificateError,
    ConfigError,
    Endpoint,
    ImageError,
    RequestError,
    encode_litserve_image_request,
    encode_litserve_request,
    encode_triton_request,
    fill_litserve_template,
    http_request,
    litserve_template_placeholders,
    parse_model_metadata,
    preprocess_image,
)
from locust_inference.options import Settings

__all__ = ["Target", "prepare"]

SUPPORTED_INPUT_TYPES = {"FP32": np.float32, "FP16": np.float16}


@dataclass(frozen=True)
class Target:
    """A prepared load-test target: the shared endpoint plus what reports and debug logs show."""

    settings: Settings
    endpoint: Endpoint
    url: str
    request_headers: tuple[tuple[str, str], ...]
    json_header_bytes: int | None
    tensor_bytes: int
    input_checksum: str

    @property
    def name(self) -> str:
        return self.settings.name


def _get(settings: Settings, url: str, what: str) -> tuple[int, bytes]:
    try:
        return http_request(
            "GET",
            url,
            headers=list(settings.headers),
            timeout=min(settings.request_timeout, 10.0),
            insecure=settings.insecure,
            ca_file=settings.ca_file,
        )
    except CertificateError as err:
        raise ConfigError(str(err)) from None
    except RequestError as err:
        raise ConfigError(f"cannot reach {what} at {settings.host}: {err} (is it running? check --host)") from None


def _image_tensor(settings: Settings) -> np.ndarray:
    try:
        image = preprocess_image(settings.image)
    except ImageError as err:
        raise ConfigError(f"{err} (--image)") from None
    return np.repeat(image[np.newaxis], settings.batch_size, axis=0)


def _checksum(tensor: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tensor, dtype="<f4").tobytes()).hexdigest()


def _available_models(settings: Settings) -> str:
    try:
        status, body = http_request(
            "POST",
            f"{settings.host}/v2/repository/index",
            timeout=5.0,
            headers=list(settings.headers),
            insecure=settings.insecure,
            ca_file=settings.ca_file,
        )
        names = sorted({m["name"] for m in json.loads(body)}) if status == 200 else []
    except (RequestError, ValueError, KeyError, TypeError):
        names = []
    return f" (it serves: {', '.join(names)})" if names else ""


def _prepare_triton(settings: Settings) -> Target:
    meta_url = f"{settings.host}/v2/models/{settings.model}"
    status, body = _get(settings, meta_url, "Triton")
    if status == 404 or (status == 400 and b"unknown model" in body.lower()):
        raise ConfigError(
            f"Triton at {settings.host} has no model {settings.model!r}{_available_models(settings)}"
            " (check --model-name / MODEL_NAME)"
        )
    if status != 200:
        raise ConfigError(f"GET {meta_url} answered HTTP {status}: {body[:200].decode(errors='replace')}")
    meta = parse_model_metadata(body)

    inputs = {i["name"]: i for i in meta["inputs"]}
    if settings.input_name:
        if settings.input_name not in inputs:
            raise ConfigError(f"model {settings.model!r} has no input {settings.input_name!r}; it has {sorted(inputs)}")
        spec = inputs[settings.input_name]
    elif len(meta["inputs"]) == 1:
        spec = meta["inputs"][0]
    else:
        raise ConfigError(f"model {settings.model!r} has inputs {sorted(inputs)}: choose one with --input-name")
    dtype = SUPPORTED_INPUT_TYPES.get(spec["datatype"])
    if dtype is None:
        raise ConfigError(f"input {spec['name']!r} is {spec['datatype']}; images can be sent as FP32 or FP16 only")

    tensor = _image_tensor(settings)
    model_shape = list(spec["shape"])
    expected = [settings.batch_size if d == -1 else d for d in model_shape]
    if expected != list(tensor.shape):
        if len(model_shape) == 3 and model_shape == list(tensor.shape[1:]):
            raise ConfigError(
                f"model {settings.model!r} has no batch dimension (input shape {model_shape}); "
                "serve it with max_batch_size > 0"
            )
        raise ConfigError(
            f"model {settings.model!r} input {spec['name']!r} has shape {model_shape}, "
            f"the preprocessed image batch is {list(tensor.shape)}"
        )
    tensor = tensor.astype(dtype)

    outputs = {o["name"]: o for o in meta["outputs"]}
    names = list(settings.output_names) or [o["name"] for o in meta["outputs"]]
    missing = [n for n in names if n not in outputs]
    if missing:
        raise ConfigError(f"model {settings.model!r} has no output {missing}; it has {sorted(outputs)}")
    binary = settings.triton_format == "binary"
    payload, header_length = encode_triton_request(tensor, spec["name"], names, binary=binary)
    headers = [("Content-Type", "application/octet-stream" if binary else "application/json")]
    if header_length is not None:
        headers.append(("Inference-Header-Content-Length", str(header_length)))
    headers.extend(settings.headers)
    expected_outputs = [
        (n, outputs[n]["datatype"], [settings.batch_size if d == -1 else d for d in outputs[n]["shape"]]) for n in names
    ]
    return _target(
        settings,
        tensor,
        f"{settings.host}/v2/models/{settings.model}/infer",
        payload,
        headers,
        json_header_bytes=header_length if binary else len(payload),
        protocol="triton",
        outputs=expected_outputs,
    )


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


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot be read ({err.strerror or type(err).__name__})") from None


def _litserve_body(settings: Settings) -> tuple[bytes, str, np.ndarray, bytes | None]:
    """The body, its Content-Type, the tensor and, when the body carries the image file rather than
    the tensor, the file's bytes. The image is always decoded: a file that is no image stops the start."""
    tensor = _image_tensor(settings)
    payload = settings.litserve_payload
    if payload == "tensor":
        return encode_litserve_request(tensor), "application/json", tensor, None
    image = _read(settings.image, "--image")
    if payload == "image-base64":
        return encode_litserve_image_request(settings.litserve_key, image), "application/json", tensor, image
    if payload == "image-bytes":
        return image, image_content_type(image), tensor, image
    assert settings.litserve_template is not None, "options.resolve requires a template file"
    template_path = settings.litserve_template
    template = _read(template_path, "--litserve-template")
    try:
        uses_tensor = "{{tensor}}" in litserve_template_placeholders(template)
        body = fill_litserve_template(template, image, tensor if uses_tensor else None)
    except ValueError as err:
        raise ConfigError(f"--litserve-template {template_path} {err}") from None
    return body, "application/json", tensor, None if uses_tensor else image


def _prepare_litserve(settings: Settings) -> Target:
    body, content_type, tensor, image = _litserve_body(settings)  # before the server: bad input fails alone
    _get(settings, f"{settings.host}/health", "LitServe")  # any answer will do: it is listening
    headers = [("Content-Type", content_type), *settings.headers]
    url = f"{settings.host}/predict"
    output = settings.litserve_output
    check: dict[str, Any] = {"protocol": "none"} if output is None else {"protocol": "litserve", "output_key": output}
    target = _target(settings, tensor, url, body, headers, json_header_bytes=None, **check)
    if image is None:
        return target
    # The body carries the file, not the tensor: logs show what was sent.
    return dataclasses.replace(target, input_checksum=hashlib.sha256(image).hexdigest())


def _target(
    settings: Settings,
    tensor: np.ndarray,
    url: str,
    payload: bytes,
    headers: list[tuple[str, str]],
    *,
    json_header_bytes: int | None,
    **check: Any,
) -> Target:
    """The shared endpoint for a request encoded once; ``check`` says how responses are validated."""
    endpoint = Endpoint(
        url,
        payload,
        headers=headers,
        timeout=settings.request_timeout,
        max_response_bytes=settings.max_response_bytes,
        insecure=settings.insecure,
        ca_file=settings.ca_file,
        keep_headers=settings.debug or settings.keep_body,
        keep_body=settings.keep_body,
        **check,
    )
    return Target(
        settings=settings,
        endpoint=endpoint,
        url=url,
        request_headers=tuple(headers),
        json_header_bytes=json_header_bytes,
        tensor_bytes=tensor.nbytes,
        input_checksum=_checksum(tensor),
    )


def prepare(settings: Settings) -> Target:
    """Prepares the target, or raises :class:`ConfigError` saying what is wrong."""
    if not settings.image.is_file():
        raise ConfigError(f"image {settings.image} does not exist (--image)")
    if settings.server == "triton":
        return _prepare_triton(settings)
    return _prepare_litserve(settings)
