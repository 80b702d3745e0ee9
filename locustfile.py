"""Load test for inference servers: pick the server with --server/SERVER (triton | litserve) and the
model with --model-name/MODEL_NAME. See README.md."""

from __future__ import annotations

from locust import constant, constant_pacing
from locust_inference.users import InferenceUser


class LowUser(InferenceUser):
    """A 30 fps video stream: one request every 1/30 s while latency stays under 33 ms."""

    wait_time = constant_pacing(1 / 30)


class HighUser(InferenceUser):
    """Maximum throughput: the next request leaves as soon as the previous one returns."""

    wait_time = constant(0)
