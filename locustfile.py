"""Load test for inference servers: pick the server with --server/SERVER (triton | litserve) and the
model with --model-name/MODEL_NAME. See README.md."""

from __future__ import annotations

from locust import constant
from locust_inference.users import InferenceUser, OpenLoopUser


class LowUser(OpenLoopUser):
    """A 30 fps camera: a frame leaves every 1/30 s whatever the answers, up to 4 in flight; a frame
    due while 4 are out is dropped and counted. --closed-loop runs the seed's loop instead: the next
    request only after the previous one returned, at most every 1/30 s (constant_pacing)."""

    rate = 30.0
    overload = "drop"


class HighUser(InferenceUser):
    """Maximum throughput: the next request leaves as soon as the previous one returns."""

    wait_time = constant(0)
    back_to_back = True
