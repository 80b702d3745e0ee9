"""locust-inference: Locust users with a Rust core for load-testing ML inference servers.

The native core (``locust_inference._native``) preprocesses images, encodes and decodes Triton
(KServe v2, binary tensors) and LitServe (JSON) messages, and sends pooled keep-alive HTTP requests
timed in Rust. The Locust glue lives in :mod:`locust_inference.users`.
"""

from __future__ import annotations

from locust_inference._native import (
    CertificateError,
    Completion,
    ConfigError,
    CountHistogram,
    Endpoint,
    ImageError,
    LatencyHistogram,
    LocustInferenceError,
    Measurements,
    Outcome,
    ProtocolError,
    RequestError,
    RequestSlot,
    RequestTimeoutError,
    Stream,
    __version__,
    check_litserve_response,
    decode_triton_grpc_response,
    decode_triton_response,
    encode_litserve_image_request,
    encode_litserve_request,
    encode_triton_request,
    fill_litserve_template,
    http_request,
    litserve_template_placeholders,
    parse_model_metadata,
    preprocess_image,
)

__all__ = [
    "CertificateError",
    "Completion",
    "ConfigError",
    "CountHistogram",
    "Endpoint",
    "ImageError",
    "LatencyHistogram",
    "LocustInferenceError",
    "Measurements",
    "Outcome",
    "ProtocolError",
    "RequestError",
    "RequestSlot",
    "RequestTimeoutError",
    "Stream",
    "__version__",
    "check_litserve_response",
    "decode_triton_grpc_response",
    "decode_triton_response",
    "encode_litserve_image_request",
    "encode_litserve_request",
    "encode_triton_request",
    "fill_litserve_template",
    "http_request",
    "litserve_template_placeholders",
    "parse_model_metadata",
    "preprocess_image",
]
