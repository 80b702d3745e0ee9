"""Baseline: Locust's own ``FastHttpUser`` posting the same pre-encoded bytes, with the same headers, to
the same URL as ``HighUser`` (``constant(0)`` wait). Configured by the benchmark through the environment:
``BENCH_BODY`` (file holding the body), ``BENCH_PATH``, ``BENCH_CONTENT_TYPE``, ``BENCH_HEADER_LENGTH``.
Also ``BENCH_CLIENT=http`` switches to ``HttpUser`` (requests), the seed's HTTP library inside Locust.
"""

from __future__ import annotations

import os
from pathlib import Path

from locust import FastHttpUser, HttpUser, constant, task

BODY = Path(os.environ["BENCH_BODY"]).read_bytes()
PATH = os.environ.get("BENCH_PATH", "/v2/models/m/infer")
HEADERS = {"Content-Type": os.environ.get("BENCH_CONTENT_TYPE", "application/octet-stream")}
if os.environ.get("BENCH_HEADER_LENGTH"):
    HEADERS["Inference-Header-Content-Length"] = os.environ["BENCH_HEADER_LENGTH"]

if os.environ.get("BENCH_CLIENT", "fasthttp") == "http":

    class PostUser(HttpUser):
        """requests-based ``HttpUser``: one POST of the prepared body per task."""

        wait_time = constant(0)

        @task
        def infer(self) -> None:
            self.client.post(PATH, data=BODY, headers=HEADERS, name="infer")

else:

    class PostUser(FastHttpUser):  # type: ignore[no-redef]
        """geventhttpclient-based ``FastHttpUser``: one POST of the prepared body per task."""

        wait_time = constant(0)

        @task
        def infer(self) -> None:
            self.client.post(PATH, data=BODY, headers=HEADERS, name="infer")  # type: ignore[arg-type]  # bytes work
