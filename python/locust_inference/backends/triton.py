"""Triton (KServe v2, over HTTP or gRPC) as a :class:`~locust_inference.backends.common.Target`, in one
pass: the model's metadata read, the inputs planned from it and the options (images through an
:class:`~locust_inference.image_inputs.ImagePlan`, or ``--input-data``), their memory checked, each
request's body encoded once, and the endpoint made with the checks the metadata implies."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from locust_inference import image_inputs, input_data, input_memory
from locust_inference._native import (
    ConfigError,
    RequestError,
    encode_triton_grpc_inputs,
    encode_triton_inputs,
    grpc_model_metadata,
    grpc_model_ready,
    http_request,
    parse_model_metadata,
)
from locust_inference.backends.common import Body, Target, checksum, get, make_target, start_call
from locust_inference.image_inputs import ImagePlan
from locust_inference.options import Settings

__all__ = ["prepare"]

HEADER_LENGTH = "Inference-Header-Content-Length"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"  # the RPC's path, after the host
GRPC_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"  # decoupled models (--stream)
GRPC_NOT_FOUND = 5  # the gRPC status code


def prepare(settings: Settings, files: list[Path] | None) -> Target:
    """The target for ``settings``: ``files`` are the images sent (None: ``--input-data``)."""
    grpc = settings.protocol == "grpc"
    binary = settings.triton_format == "binary"
    meta = _grpc_metadata(settings) if grpc else _http_metadata(settings)  # 1. what the model takes
    names, expected_outputs = _outputs(settings, meta)
    if files is None:  # 2-4. input data checks its memory as it reads and makes the entries
        seed = settings.seed if settings.seed is not None else random.SystemRandom().getrandbits(32)
        requests = input_data.requests(meta["inputs"], settings.inputs, settings.batch_size, seed, binary=binary)
        labels = tuple(f"{settings.inputs.input_data}[{k}]" for k in range(len(requests)))
    else:
        plan = image_inputs.plan(_image_input(settings, meta), settings.inputs, settings.batch_size)  # 2. plan
        _check_image_memory(settings, plan, files, binary=binary)  # 3. memory, once
        requests, labels = _image_requests(settings, plan, files), tuple(str(f) for f in files)  # 4. tensors
    fp16 = next((name for name, dt, _, _ in requests[0] if dt == "FP16"), None)
    if fp16 is not None and not binary:
        raise ConfigError(f"input {fp16!r} is FP16, which Triton does not take in JSON: use --triton-format binary")
    tensor_bytes = sum(len(data) for *_, data in requests[0])
    input_checksum = checksum(b"".join(data for *_, data in requests[0]))
    if grpc:  # 5. the bodies, and the target: one ModelInferRequest per input, its tensors as raw contents
        stream = settings.grpc.stream  # a decoupled model: its responses counted as chunks
        messages: list[Body] = [
            (encode_triton_grpc_inputs(settings.model, r, names, stream=stream), []) for r in requests
        ]
        return make_target(
            settings,
            f"{settings.host}{GRPC_STREAM_INFER if stream else GRPC_INFER}",
            messages,
            list(settings.headers),
            json_header_bytes=None,
            tensor_bytes=tensor_bytes,
            input_checksum=input_checksum,
            inputs=labels,
            protocol="grpc-stream" if stream else "grpc",
            outputs=expected_outputs,
            grpc_connections=settings.grpc.connections,
            grpc_compression=settings.grpc.compression,
        )
    bodies = []  # the memory they take with the requests was checked before either was made
    for request in requests:
        payload, header_length = encode_triton_inputs(request, names, binary=binary)
        bodies.append((payload, [(HEADER_LENGTH, str(header_length))] if header_length is not None else []))
    headers = [("Content-Type", "application/octet-stream" if binary else "application/json"), *settings.headers]
    first_header = bodies[0][1][0][1] if binary else None
    return make_target(
        settings,
        f"{settings.host}/v2/models/{settings.model}/infer",
        bodies,
        headers,
        json_header_bytes=int(first_header) if first_header is not None else len(bodies[0][0]),
        tensor_bytes=tensor_bytes,
        input_checksum=input_checksum,
        inputs=labels,
        protocol="triton",
        outputs=expected_outputs,
    )


def _outputs(settings: Settings, meta: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, list[int]]]]:
    """The outputs asked for (``--output-name``, or all) and what each must be: name, datatype, shape."""
    outputs = {o["name"]: o for o in meta["outputs"]}
    names = list(settings.output_names) or [o["name"] for o in meta["outputs"]]
    missing = [n for n in names if n not in outputs]
    if missing:
        raise ConfigError(f"model {settings.model!r} has no output {missing}; it has {sorted(outputs)}")
    expected = [
        (n, outputs[n]["datatype"], [settings.batch_size if d == -1 else d for d in outputs[n]["shape"]]) for n in names
    ]
    return names, expected


# ---- the model's metadata ---------------------------------------------------------------------------------


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


def _http_metadata(settings: Settings) -> dict[str, Any]:
    meta_url = f"{settings.host}/v2/models/{settings.model}"
    status, body = get(settings, meta_url, "Triton")
    if status == 404 or (status == 400 and b"unknown model" in body.lower()):
        raise ConfigError(
            f"Triton at {settings.host} has no model {settings.model!r}{_available_models(settings)}"
            " (check --model-name / MODEL_NAME)"
        )
    if status != 200:
        raise ConfigError(f"GET {meta_url} answered HTTP {status}: {body[:200].decode(errors='replace')}")
    result: dict[str, Any] = parse_model_metadata(body)
    return result


def _grpc_start_call(call: Any, settings: Settings) -> tuple[int, str, Any]:
    """One of the native gRPC calls made at start (``grpc_model_metadata``...), its failures as one line."""
    with start_call(settings, "Triton's gRPC endpoint", check="--host and --protocol"):
        result: tuple[int, str, Any] = call(
            settings.host,
            settings.model,
            headers=list(settings.headers),
            timeout=min(settings.request_timeout, 10.0),
            insecure=settings.insecure,
            ca_file=settings.ca_file,
        )
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


# ---- images -----------------------------------------------------------------------------------------------


def _image_input(settings: Settings, meta: dict[str, Any]) -> dict[str, Any]:
    """The input the images go to: ``--input-name``, or the model's only one."""
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


def _check_image_memory(settings: Settings, plan: ImagePlan, files: list[Path], *, binary: bool) -> None:
    """Refuses, before any image is decoded, a set whose preparation would not fit in --max-input-memory:
    at its peak, the tensors with the images being decoded, or with the batches joined from them, or the
    requests with their encoded bodies (the tensors are gone), one at a time copied to Rust."""
    batch = settings.batch_size
    count, request_bytes = len(files), batch * plan.item_bytes
    body = input_memory.triton_body_bytes(
        [(plan.datatype, batch * plan.width * plan.height * 3, request_bytes)], binary=binary
    )
    all_tensors, all_requests = count * plan.item_bytes, count * request_bytes
    need = max(
        all_tensors + input_memory.image_decoding(files),
        all_tensors + all_requests,
        input_memory.encoding(all_requests, count * body, body, request_bytes + body),
    )
    input_memory.check(need, settings.inputs.max_memory, f"{count} images")


def _image_requests(settings: Settings, plan: ImagePlan, files: list[Path]) -> list[input_data.Request]:
    """One request per image of the set: request k carries images k .. k + batch - 1 (wrapping)."""
    tensors = image_inputs.preprocess(files, plan)
    batch = settings.batch_size
    shape = [batch, *plan.item_shape]
    return [
        [(plan.input_name, plan.datatype, shape, b"".join(tensors[(k + j) % len(tensors)] for j in range(batch)))]
        for k in range(len(tensors))
    ]
