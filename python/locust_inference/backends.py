"""Turns :class:`~locust_inference.options.Settings` into a ready :class:`Target`: Triton's model
metadata is discovered, every input (each image of the set, or each entry of ``--input-data``) is
prepared and its request encoded once, and the server is checked to be reachable, so a bad
configuration fails once, at start, with one clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locust_inference import generative, image_inputs, input_data, input_memory
from locust_inference._native import (
    CertificateError,
    ConfigError,
    Endpoint,
    ProtocolError,
    RedirectError,
    RequestError,
    encode_litserve_image_request,
    encode_litserve_request,
    encode_triton_grpc_inputs,
    encode_triton_inputs,
    fill_litserve_template,
    grpc_model_metadata,
    grpc_model_ready,
    http_request,
    litserve_template_placeholders,
    parse_model_metadata,
)
from locust_inference.input_options import InputSettings
from locust_inference.options import Settings

__all__ = ["Target", "prepare"]

HEADER_LENGTH = "Inference-Header-Content-Length"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"  # the RPC's path, after the host
GRPC_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"  # decoupled models (--stream)
GRPC_NOT_FOUND = 5  # the gRPC status code
_IMAGENET_INPUT = {"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}  # what LitServe is sent
_IMAGENET_ITEM_BYTES = 3 * 224 * 224 * 4
# on (default): http:// bodies are sent with sendfile from a sealed memfd; off: copied on every send
ZERO_COPY_ENV = "LOCUST_INFERENCE_ZERO_COPY"
IO_THREADS_ENV = "LOCUST_INFERENCE_IO_THREADS"
MAX_IO_THREADS = 64


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
    # what each body carries, for logs and tests: the image files, or the input data's entries
    inputs: tuple[str, ...] = ()

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
    except RedirectError as err:
        raise ConfigError(f"{err}; point --host at the {what} server itself") from None
    except RequestError as err:
        raise ConfigError(f"cannot reach {what} at {settings.host}: {err} (is it running? check --host)") from None


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def grpc_check_ready(settings: Settings) -> None:
    """The model is ready, asked over gRPC (ModelReady): a wrong --host or model is one line at start."""
    code, message, ready = _grpc_start_call(grpc_model_ready, settings)
    if code != 0 and (code == GRPC_NOT_FOUND or "unknown model" in message.lower()):
        raise ConfigError(
            f"Triton at {settings.host} (gRPC) has no model {settings.model!r} (check --model-name / MODEL_NAME)"
        )
    if code != 0 or not ready:
        said = f": status {code}: {message}" if code != 0 else ""
        raise ConfigError(f"model {settings.model!r} at {settings.host} (gRPC) is not ready{said}")


def _grpc_start_call(call: Any, settings: Settings) -> tuple[int, str, Any]:
    """One of the native gRPC calls made at start (``grpc_model_metadata``...), its failures as one line."""
    try:
        result: tuple[int, str, Any] = call(
            settings.host,
            settings.model,
            headers=list(settings.headers),
            timeout=min(settings.request_timeout, 10.0),
            insecure=settings.insecure,
            ca_file=settings.ca_file,
        )
    except CertificateError as err:
        raise ConfigError(str(err)) from None
    except ProtocolError as err:
        raise ConfigError(f"Triton's gRPC endpoint at {settings.host}: {err}") from None
    except RequestError as err:
        raise ConfigError(
            f"cannot reach Triton's gRPC endpoint at {settings.host}: {err} (is it running? check --host and "
            "--protocol)"
        ) from None
    return result


def _grpc_metadata(settings: Settings) -> dict[str, Any]:
    """The model's metadata read over gRPC (ModelMetadata), once it says it is ready (ModelReady)."""
    code, message, meta = _grpc_start_call(grpc_model_metadata, settings)
    if code != 0 and (code == GRPC_NOT_FOUND or "unknown model" in message.lower()):
        raise ConfigError(
            f"Triton at {settings.host} (gRPC) has no model {settings.model!r} (check --model-name / MODEL_NAME)"
        )
    if code != 0:
        raise ConfigError(f"Triton at {settings.host} (gRPC) answered ModelMetadata with status {code}: {message}")
    grpc_check_ready(settings)
    result: dict[str, Any] = meta
    return result


def _http_metadata(settings: Settings) -> dict[str, Any]:
    meta_url = f"{settings.host}/v2/models/{settings.model}"
    status, body = _get(settings, meta_url, "Triton")
    if status == 404 or (status == 400 and b"unknown model" in body.lower()):
        raise ConfigError(
            f"Triton at {settings.host} has no model {settings.model!r}{_available_models(settings)}"
            " (check --model-name / MODEL_NAME)"
        )
    if status != 200:
        raise ConfigError(f"GET {meta_url} answered HTTP {status}: {body[:200].decode(errors='replace')}")
    result: dict[str, Any] = parse_model_metadata(body)
    return result


def _prepare_triton(settings: Settings) -> Target:
    grpc = settings.protocol == "grpc"
    meta = _grpc_metadata(settings) if grpc else _http_metadata(settings)

    outputs = {o["name"]: o for o in meta["outputs"]}
    names = list(settings.output_names) or [o["name"] for o in meta["outputs"]]
    missing = [n for n in names if n not in outputs]
    if missing:
        raise ConfigError(f"model {settings.model!r} has no output {missing}; it has {sorted(outputs)}")
    binary = settings.triton_format == "binary"
    if settings.inputs.input_data is not None:
        seed = settings.seed if settings.seed is not None else random.SystemRandom().getrandbits(32)
        requests = input_data.requests(meta["inputs"], settings.inputs, settings.batch_size, seed, binary=binary)
        labels = tuple(f"{settings.inputs.input_data}[{k}]" for k in range(len(requests)))
    else:
        requests, labels = _image_requests(settings, meta, binary=binary)
    fp16 = next((name for name, dt, _, _ in requests[0] if dt == "FP16"), None)
    if fp16 is not None and not binary:
        raise ConfigError(f"input {fp16!r} is FP16, which Triton does not take in JSON: use --triton-format binary")
    tensor_bytes = sum(len(data) for *_, data in requests[0])
    expected_outputs = [
        (n, outputs[n]["datatype"], [settings.batch_size if d == -1 else d for d in outputs[n]["shape"]]) for n in names
    ]
    checksum = _checksum(b"".join(data for *_, data in requests[0]))
    if grpc:  # one ModelInferRequest per input, its tensors as raw contents
        stream = settings.grpc_stream  # a decoupled model: its responses counted as chunks
        messages: list[tuple[bytes, list[tuple[str, str]]]] = [
            (encode_triton_grpc_inputs(settings.model, r, names, stream=stream), []) for r in requests
        ]
        return _target(
            settings,
            f"{settings.host}{GRPC_STREAM_INFER if stream else GRPC_INFER}",
            messages,
            list(settings.headers),
            json_header_bytes=None,
            tensor_bytes=tensor_bytes,
            input_checksum=checksum,
            inputs=labels,
            protocol="grpc-stream" if stream else "grpc",
            outputs=expected_outputs,
            grpc_connections=settings.grpc_connections,
            grpc_compression=settings.grpc_compression,
        )
    bodies = []  # the memory they take with the requests was checked before either was made
    for request in requests:
        payload, header_length = encode_triton_inputs(request, names, binary=binary)
        bodies.append((payload, [(HEADER_LENGTH, str(header_length))] if header_length is not None else []))
    headers = [("Content-Type", "application/octet-stream" if binary else "application/json"), *settings.headers]
    first_header = bodies[0][1][0][1] if binary else None
    return _target(
        settings,
        f"{settings.host}/v2/models/{settings.model}/infer",
        bodies,
        headers,
        json_header_bytes=int(first_header) if first_header is not None else len(bodies[0][0]),
        tensor_bytes=tensor_bytes,
        input_checksum=checksum,
        inputs=labels,
        protocol="triton",
        outputs=expected_outputs,
    )


def _image_input(settings: Settings, meta: dict[str, Any]) -> dict[str, Any]:
    specs: list[dict[str, Any]] = meta["inputs"]
    inputs = {i["name"]: i for i in specs}
    if settings.input_name:
        if settings.input_name not in inputs:
            raise ConfigError(f"model {settings.model!r} has no input {settings.input_name!r}; it has {sorted(inputs)}")
        return inputs[settings.input_name]
    if len(specs) == 1:
        return specs[0]
    raise ConfigError(
        f"model {settings.model!r} has inputs {sorted(inputs)}: send images to one with --input-name, "
        "or give them all with --input-data random|zero|FILE.json"
    )


def _image_requests(
    settings: Settings, meta: dict[str, Any], *, binary: bool
) -> tuple[list[input_data.Request], tuple[str, ...]]:
    """One request per image of the set: request k carries images k .. k + batch - 1 (wrapping)."""
    plan = image_inputs.plan(_image_input(settings, meta), settings.inputs, settings.batch_size)
    files = image_inputs.image_files(settings.image)
    batch = settings.batch_size
    count, request_bytes = len(files), batch * plan.item_bytes
    body = input_memory.triton_body_bytes(
        [(plan.datatype, batch * plan.width * plan.height * 3, request_bytes)], binary=binary
    )
    all_tensors, all_requests = count * plan.item_bytes, count * request_bytes
    need = max(
        all_tensors + input_memory.image_decoding(files),  # preprocessing: every tensor, images being decoded
        all_tensors + all_requests,  # the batches joined from the tensors
        # the bodies encoded from the requests (the tensors are gone), one at a time copied to Rust
        input_memory.encoding(all_requests, count * body, body, request_bytes + body),
    )
    input_memory.check(need, settings.inputs.max_memory, f"{count} images")
    tensors = image_inputs.preprocess(files, plan)
    shape = [batch, *plan.item_shape]
    requests = [
        [(plan.input_name, plan.datatype, shape, b"".join(tensors[(k + j) % len(tensors)] for j in range(batch)))]
        for k in range(len(tensors))
    ]
    return requests, tuple(str(f) for f in files)


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


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reading it says why


def _check_litserve_memory(settings: Settings, files: list[Path], template: bytes | None) -> None:
    """Refuses, before any image is read or decoded, bodies that would not fit in --max-input-memory with
    everything they are made from: the tensors (every file is preprocessed, whatever the payload), the
    files read, the batches stacked and the bodies encoded, their copies in Rust and in the sealed memfd."""
    count, batch, item = len(files), settings.batch_size, _IMAGENET_ITEM_BYTES
    tensors = count * item
    tensor_json = item // 4 * batch * input_memory.JSON_ELEMENT_BYTES["FP32"]  # one batch as a nested list
    sizes = [_file_size(f) for f in files]
    base64 = [(size + 2) // 3 * 4 for size in sizes]
    payload = settings.litserve_payload
    if payload == "tensor":
        encode = input_memory.encoding(tensors, count * tensor_json, tensor_json, 2 * batch * item + tensor_json)
    elif payload == "image-bytes":  # the files are the bodies
        encode = input_memory.encoding(tensors, sum(sizes), min(sizes), 0)
    else:
        assert template is not None or payload == "image-base64"
        extra = len(settings.litserve_key) + 16 if template is None else len(template)
        uses_tensor = template is not None and "{{tensor}}" in _placeholders(settings, template)
        bodies = [extra + b + (tensor_json if uses_tensor else 0) for b in base64]
        transient = max(bodies) + (2 * batch * item if uses_tensor else 0)
        encode = input_memory.encoding(tensors + sum(sizes), sum(bodies), min(bodies), transient)
    need = max(tensors + input_memory.image_decoding(files), encode)
    input_memory.check(need, settings.inputs.max_memory, f"{count} images")


def _placeholders(settings: Settings, template: bytes) -> list[str]:
    try:
        return litserve_template_placeholders(template)
    except ValueError as err:
        raise ConfigError(f"--litserve-template {settings.litserve_template} {err}") from None


def _litserve_images(settings: Settings, files: list[Path]) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """Each file's [3, 224, 224] tensor (the seed's ImageNet preprocessing), preprocessed in parallel in
    Rust; every file is decoded, so one that is no image stops the start with its name."""
    plan = image_inputs.plan(_IMAGENET_INPUT, InputSettings(), settings.batch_size)
    return [np.frombuffer(t, dtype="<f4").reshape(3, 224, 224) for t in image_inputs.preprocess(files, plan)]


def _batch(
    images: list[np.ndarray[Any, np.dtype[np.float32]]], k: int, batch: int
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Request k's [batch, 3, 224, 224] tensor: images k .. k + batch - 1 (wrapping), as for Triton."""
    return np.stack([images[(k + j) % len(images)] for j in range(batch)])


def _litserve_bodies(settings: Settings, files: list[Path]) -> tuple[list[tuple[bytes, list[tuple[str, str]]]], str]:
    """Each request body, with its own headers (the Content-Type of an image sent as the body), and the
    checksum logs show for the first: of the tensor, or of the image file when the body carries the file."""
    payload = settings.litserve_payload
    template = None
    if payload == "template":
        assert settings.litserve_template is not None, "options.resolve requires a template file"
        # read whole before the estimate, which depends on its placeholders: bounded by its size first
        input_memory.check(_file_size(settings.litserve_template), settings.inputs.max_memory, "--litserve-template")
        template = _read(settings.litserve_template, "--litserve-template")
    _check_litserve_memory(settings, files, template)
    tensors = _litserve_images(settings, files)  # before the server: bad input fails alone
    batch = settings.batch_size
    json_type = [("Content-Type", "application/json")]
    if payload == "tensor":
        bodies = [(encode_litserve_request(_batch(tensors, k, batch)), json_type) for k in range(len(files))]
        return bodies, _checksum(_batch(tensors, 0, batch).tobytes())
    images = [_read(f, "--image") for f in files]
    if payload == "image-base64":
        key = settings.litserve_key
        return [(encode_litserve_image_request(key, i), json_type) for i in images], _checksum(images[0])
    if payload == "image-bytes":
        return [(i, [("Content-Type", image_content_type(i))]) for i in images], _checksum(images[0])
    assert template is not None
    template_path = settings.litserve_template
    try:
        uses_tensor = "{{tensor}}" in litserve_template_placeholders(template)
        bodies = [
            (fill_litserve_template(template, image, _batch(tensors, k, batch) if uses_tensor else None), json_type)
            for k, image in enumerate(images)
        ]
    except ValueError as err:
        raise ConfigError(f"--litserve-template {template_path} {err}") from None
    return bodies, _checksum(_batch(tensors, 0, batch).tobytes() if uses_tensor else images[0])


def _prepare_litserve(settings: Settings) -> Target:
    files = image_inputs.image_files(settings.image)
    bodies, checksum = _litserve_bodies(settings, files)
    _get(settings, f"{settings.host}/health", "LitServe")  # any answer will do: it is listening
    url = f"{settings.host}/predict"
    output = settings.litserve_output
    check: dict[str, Any] = {"protocol": "none"} if output is None else {"protocol": "litserve", "output_key": output}
    return _target(
        settings,
        url,
        bodies,
        list(settings.headers),
        json_header_bytes=None,
        tensor_bytes=_IMAGENET_ITEM_BYTES * settings.batch_size,
        input_checksum=checksum,
        inputs=tuple(str(f) for f in files) if len(files) > 1 else (),
        **check,
    )


def _target(
    settings: Settings,
    url: str,
    payload: bytes | list[tuple[bytes, list[tuple[str, str]]]],
    headers: list[tuple[str, str]],
    *,
    json_header_bytes: int | None,
    tensor_bytes: int,
    input_checksum: str,
    inputs: tuple[str, ...] = (),
    **check: Any,
) -> Target:
    """The shared endpoint for requests encoded once (one body, or several each with its own headers);
    ``check`` says how responses are validated."""
    zero_copy = os.environ.get(ZERO_COPY_ENV, "on").strip().lower()
    if zero_copy not in ("on", "off"):
        raise ConfigError(f"{ZERO_COPY_ENV} must be on or off, not {zero_copy!r}")
    endpoint = Endpoint(
        url,
        payload,
        headers=headers,
        shuffle=settings.inputs.shuffle,
        timeout=settings.request_timeout,
        max_response_bytes=settings.max_response_bytes,
        insecure=settings.insecure,
        ca_file=settings.ca_file,
        keep_headers=settings.debug or settings.keep_body,
        keep_body=settings.keep_body,
        zero_copy=zero_copy == "on",
        **check,
    )
    return Target(
        settings=settings,
        endpoint=endpoint,
        url=url,
        request_headers=tuple(headers) + (tuple(payload[0][1]) if isinstance(payload, list) else ()),
        json_header_bytes=json_header_bytes,
        tensor_bytes=tensor_bytes,
        input_checksum=input_checksum,
        inputs=inputs,
    )


def check_io_threads() -> None:
    """``LOCUST_INFERENCE_IO_THREADS`` is read by the I/O runtime when it starts (the first native
    request); a value it cannot use would silently be 1 there, so it is refused here first."""
    value = os.environ.get(IO_THREADS_ENV)
    if value is None:
        return
    text = value.strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_IO_THREADS):
        raise ConfigError(f"{IO_THREADS_ENV} must be a whole number from 1 to {MAX_IO_THREADS}, not {value[:40]!r}")


def prepare(settings: Settings) -> Target:
    """Prepares the target, or raises :class:`ConfigError` saying what is wrong."""
    check_io_threads()  # before anything starts the I/O runtime
    if settings.generative.generative:  # prompts, not tensors: no model metadata, no images
        return generative.prepare(settings)
    if settings.inputs.input_data is None:
        image_inputs.image_files(settings.image)  # a missing image is said before any server is asked
    elif settings.server != "triton":
        raise ConfigError("--input-data applies to Triton models; LitServe is sent images (--image)")
    if settings.server == "triton":
        return _prepare_triton(settings)
    return _prepare_litserve(settings)
