"""Serve one test model with Lightning AI LitServe at ``POST /predict`` on 127.0.0.1.

``--payload`` says what a request carries, as LitServe APIs are deployed:

* ``tensor`` (default): ``{"input": <nested list [1,3,224,224]>}`` (``[N,3,224,224]`` and ``[3,224,224]``
  also accepted);
* ``image-base64``: ``{"image": "<base64 of a JPEG/PNG/... file>"}`` (the key is ``--image-key``);
* ``image-bytes``: the encoded image file itself as the body.

The image modes decode the file with Pillow and preprocess it as torchvision's ImageNet transforms do
(resize 256, centre crop 224, mean/std, CHW float32) in numpy. Every mode answers
``{"output": <nested list [N,1000]>}``; readiness at ``GET /health``. With ``--model checksum`` the output
row holds the sha256 words of the float32 array the model got (see :func:`servers.models.checksum_words`),
which proves the JSON round trip or the server-side preprocessing is exact, and the image modes add
``"sha256"``: the hex digest of the bytes received (the decoded base64, or the whole body), proving the
file arrived intact; image-base64 also echoes the JSON object received, its image replaced by that digest,
under ``"request"``.

Usage (foreground until SIGTERM/SIGINT)::

    python -m servers.litserve_app --model tiny_onnx --port 8001 [--threads 2] [--max-batch-size 1]
        [--payload tensor|image-base64|image-bytes] [--image-key image]

Prefer :func:`servers.launch.litserve_server`, which runs this module in its own process group.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import itertools
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from types import FrameType
from typing import Annotated, Any

import litserve as ls
import numpy as np
from fastapi import Depends, HTTPException, Request

from servers.launch import exit_with_launcher
from servers.models import DEFAULT_THREADS, INPUT_SHAPE, MODELS, Predictor, load_predictor

HOST = "127.0.0.1"
# sleep_20ms sleeps once per batch: server-side batching lets concurrent requests overlap, as in Triton.
DEFAULT_MAX_BATCH = {"sleep_20ms": 64}
DEFAULT_BATCH_TIMEOUT_S = 0.001
UVICORN_GRACEFUL_TIMEOUT_S = 3
PAYLOADS = ("tensor", "image-base64", "image-bytes")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


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


def imagenet_tensor(data: bytes) -> np.ndarray:
    """An encoded image -> ``[3,224,224]`` float32: torchvision's Resize(256) + CenterCrop(224) + ToTensor()
    + Normalize(ImageNet) on a Pillow image, in numpy. Raises 400 when Pillow cannot decode it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            img = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=f"not a decodable image: {exc}") from exc
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(256 * long / short)
    new_w, new_h = (256, new_long) if w <= h else (new_long, 256)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top, left = round((new_h - 224) / 2.0), round((new_w - 224) / 2.0)
    img = img.crop((left, top, left + 224, top + 224))
    tensor = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return np.ascontiguousarray((tensor - IMAGENET_MEAN) / IMAGENET_STD)


@dataclass
class _Image:
    """A received image: the bytes as they arrived, the tensor preprocessed from them and, for JSON, the
    object received with the image replaced by its sha256."""

    sha256: str
    tensor: np.ndarray
    request: dict[str, Any] | None = None


class ImageBase64API(ModelAPI):
    """A LitAPI as image services are commonly deployed: ``{"<key>": "<base64 file>"}`` in, decoded here."""

    def __init__(self, model: str, key: str = "image", threads: int = DEFAULT_THREADS) -> None:
        super().__init__(model, threads=threads)
        self.key = key

    def decode_request(self, request, **kwargs: Any) -> _Image:  # type: ignore[override]
        if not isinstance(request, dict) or not isinstance(request.get(self.key), str):
            raise HTTPException(status_code=400, detail=f'expected a JSON object {{"{self.key}": "<base64>"}}')
        try:
            data = base64.b64decode(request[self.key], validate=True)
        except binascii.Error as exc:
            raise HTTPException(status_code=400, detail=f"{self.key} is not base64: {exc}") from exc
        image = self._image(data)
        image.request = {**request, self.key: image.sha256}
        return image

    @staticmethod
    def _image(data: bytes) -> _Image:
        return _Image(hashlib.sha256(data).hexdigest(), imagenet_tensor(data))

    def predict(self, x: Any, **kwargs: Any) -> Any:
        assert isinstance(x, _Image), "image APIs do not batch"
        return _Image(x.sha256, super().predict(x.tensor[np.newaxis]), x.request)

    def encode_response(self, output: Any, **kwargs: Any):
        response = super().encode_response(output.tensor)
        if self.model_name == "checksum":
            response["sha256"] = output.sha256
            if output.request is not None:
                response["request"] = output.request
        return response


async def _request_body(request: Request) -> bytes:
    return await request.body()


class ImageBytesAPI(ImageBase64API):
    """A LitAPI taking the encoded image file as the request body.

    LitServe 0.2 parses every body that is not a form as JSON when ``decode_request``'s ``request`` is
    unannotated; it passes the endpoint's own parameter through otherwise, so a FastAPI dependency that
    reads the body (annotation below) hands ``decode_request`` the raw bytes.
    """

    def decode_request(self, request, **kwargs: Any) -> _Image:  # type: ignore[override]
        if not isinstance(request, bytes) or not request:
            raise HTTPException(status_code=400, detail="expected the image file as the request body")
        return self._image(request)


# Set on the function itself: under `from __future__ import annotations` a written annotation would
# be a string, which LitServe would hand FastAPI unresolved.
ImageBytesAPI.decode_request.__annotations__["request"] = Annotated[bytes, Depends(_request_body)]


def build_server(
    model: str,
    threads: int = DEFAULT_THREADS,
    max_batch: int | None = None,
    payload: str = "tensor",
    image_key: str = "image",
    *,
    batch_timeout: float = DEFAULT_BATCH_TIMEOUT_S,
) -> ls.LitServer:
    """A LitServer with one CPU inference worker serving ``model`` at ``/predict``, taking ``payload``."""
    api: ls.LitAPI
    if payload == "image-base64":
        api = ImageBase64API(model, key=image_key, threads=threads)
    elif payload == "image-bytes":
        api = ImageBytesAPI(model, threads=threads)
    else:
        if max_batch is None:
            max_batch = DEFAULT_MAX_BATCH.get(model, 1)
        with warnings.catch_warnings():  # batch()/unbatch() are overridden but only used when batching
            warnings.filterwarnings("ignore", message=".*both batch and unbatch methods implemented.*")
            api = ModelAPI(model, threads=threads, max_batch_size=max_batch, batch_timeout=batch_timeout)
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
    parser.add_argument(
        "--batch-timeout",
        type=float,
        default=DEFAULT_BATCH_TIMEOUT_S,
        help=f"seconds a batch waits to fill (default {DEFAULT_BATCH_TIMEOUT_S})",
    )
    parser.add_argument("--payload", choices=PAYLOADS, default="tensor", help="what a request carries")
    parser.add_argument("--image-key", default="image", help="JSON key of the base64 image (image-base64)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.payload != "tensor" and args.max_batch_size not in (None, 1):
        parser.error("the image payloads are served one request at a time (--max-batch-size 1)")

    _install_signal_handlers()
    exit_with_launcher()
    server = build_server(
        args.model, args.threads, args.max_batch_size, args.payload, args.image_key, batch_timeout=args.batch_timeout
    )
    where = f"http://{HOST}:{args.port}/predict"
    print(f"LitServe serving {args.model} ({args.payload}) at {where}", file=sys.stderr, flush=True)
    level = args.log_level  # "info" adds a uvicorn access-log line per request
    server.run(host=HOST, port=args.port, num_api_servers=1, log_level=level, generate_client_file=False)


if __name__ == "__main__":
    main()
