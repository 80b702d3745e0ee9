"""The prepared Triton request the native-client tests send: one random tensor, the tiny models' output."""

from __future__ import annotations

from typing import Any

import numpy as np
from locust_inference import Endpoint, RequestSlot, encode_triton_request

__all__ = ["TENSOR", "send", "triton_endpoint"]

TENSOR = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)


def triton_endpoint(url: str, model: str, **kwargs: Any) -> Endpoint:
    body, hl = encode_triton_request(TENSOR, "input__0", ["output__0"])
    return Endpoint(
        f"{url}/v2/models/{model}/infer",
        body,
        headers=[("Inference-Header-Content-Length", str(hl))],
        protocol="triton",
        outputs=[("output__0", "FP32", [1, 1000])],
        **kwargs,
    )


def send(endpoint: Endpoint, slot: RequestSlot | None = None):
    """Sends once through ``slot`` (a new one if none) and returns the outcome."""
    slot = slot or RequestSlot()
    slot.submit(endpoint)
    outcome = slot.wait(timeout=60)
    assert outcome is not None, "no outcome within 60 s"
    return outcome
