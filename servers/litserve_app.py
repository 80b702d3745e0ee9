"""Serve one test model with Lightning AI LitServe at ``POST /predict`` on 127.0.0.1.

Request ``{"input": <nested list [1,3,224,224]>}`` (``[N,3,224,224]`` and ``[3,224,224]`` also accepted)
-> response ``{"output": <nested list [N,1000]>}``; readiness at ``GET /health``. With ``--model checksum``
the output row holds the sha256 words of the float32 array the server parsed (see
:func:`servers.models.checksum_words`), which proves the JSON round trip is exact.

Usage (foreground until SIGTERM/SIGINT)::

    python -m servers.litserve_app --model tiny_onnx --port 8001 [--threads 2] [--max-batch-size 1]

Prefer :func:`servers.launch.litserve_server`, which runs this module in its own process group.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from types import FrameType
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException

from servers.launch import exit_with_launcher
from servers.models import DEFAULT_THREADS, INPUT_SHAPE, MODELS, Predictor, load_predictor

HOST = "127.0.0.1"
# sleep_20ms sleeps once per batch: server-side batching lets concurrent requests overlap, as in Triton.
DEFAULT_MAX_BATCH = {"sleep_20ms": 64}
DEFAULT_BATCH_TIMEOUT_S = 0.001
UVICORN_GRACEFUL_TIMEOUT_S = 3


@dataclass
class _Batch:
    """Concatenated inputs of several requests and each request's item count."""

    data: np.ndarray
    sizes: list[int]


class ModelAPI(ls.LitAPI):
    """LitAPI running one model from :mod:`servers.models` on ``[N,3,224,224]`` float32 inputs."""

    def __init__(
        self,
        model: str,
        threads: int = DEFAULT_THREADS,
        max_batch_size: int = 1,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT_S,
    ) -> None:
        timeout = batch_timeout if max_batch_size > 1 else 0.0
        super().__init__(max_batch_size=max_batch_size, batch_timeout=timeout)
        self.model_name = model
        self.threads = threads
        self._predict: Predictor | None = None

    def setup(self, device: str) -> None:
        # Runs in the (spawned) inference worker, so the ONNX session lives there.
        self._predict = load_predictor(self.model_name, self.threads)

    # LitServe builds the FastAPI endpoint from decode_request's `request` annotation and
    # encode_response's return annotation: leave both unannotated (plain JSON via starlette Request).
    def decode_request(self, request, **kwargs: Any) -> np.ndarray:
        if not isinstance(request, dict) or "input" not in request:
            raise HTTPException(status_code=400, detail='expected a JSON object {"input": [[[[...]]]]}')
        try:
            array = np.asarray(request["input"], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise HTTPException(status_code=400, detail=f"input is not a numeric array: {exc}") from exc
        if array.shape == INPUT_SHAPE:
            array = array[np.newaxis]
        if array.ndim != 4 or array.shape[1:] != INPUT_SHAPE or array.shape[0] < 1:
            shape = list(array.shape)
            raise HTTPException(status_code=400, detail=f"input shape {shape}, expected [N,3,224,224]")
        return array

    def batch(self, inputs: list[np.ndarray]) -> _Batch:
        return _Batch(np.concatenate(inputs), [len(x) for x in inputs])

    def predict(self, x: np.ndarray | _Batch, **kwargs: Any) -> np.ndarray | _Batch:
        assert self._predict is not None, "setup() was not called"
        if isinstance(x, _Batch):
            return _Batch(self._predict(x.data), x.sizes)
        return self._predict(x)

    def unbatch(self, output: _Batch) -> list[np.ndarray]:
        bounds = np.cumsum([0, *output.sizes])
        return [output.data[start:end] for start, end in itertools.pairwise(bounds)]

    def encode_response(self, output: np.ndarray, **kwargs: Any):
        return {"output": np.asarray(output, dtype=np.float32).tolist()}


def build_server(model: str, threads: int = DEFAULT_THREADS, max_batch: int | None = None) -> ls.LitServer:
    """A LitServer with one CPU inference worker serving ``model`` at ``/predict``."""
    if max_batch is None:
        max_batch = DEFAULT_MAX_BATCH.get(model, 1)
    with warnings.catch_warnings():  # batch()/unbatch() are overridden but only used when batching
        warnings.filterwarnings("ignore", message=".*both batch and unbatch methods implemented.*")
        api = ModelAPI(model, threads=threads, max_batch_size=max_batch)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=60)
    server.uvicorn_graceful_timeout = UVICORN_GRACEFUL_TIMEOUT_S  # default 30 s stalls shutdown
    return server


def _install_signal_handlers() -> None:
    """SIGTERM/SIGINT -> KeyboardInterrupt in this process, so LitServe shuts its workers down gracefully.

    Forked API-server processes inherit the handler until uvicorn installs its own; there the signal
    falls back to its default action.
    """
    main_pid = os.getpid()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        # One graceful shutdown is enough: ignore repeated signals while LitServe stops its workers.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve one test model with LitServe on 127.0.0.1.")
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="server-side batching (default: 64 for sleep_20ms, else 1)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    _install_signal_handlers()
    exit_with_launcher()
    server = build_server(args.model, args.threads, args.max_batch_size)
    print(f"LitServe serving {args.model} at http://{HOST}:{args.port}/predict", file=sys.stderr, flush=True)
    level = args.log_level  # "info" adds a uvicorn access-log line per request
    server.run(host=HOST, port=args.port, num_api_servers=1, log_level=level, generate_client_file=False)


if __name__ == "__main__":
    main()
