"""The seed harness's way of sending requests, replicated as a single-threaded loop: one
``requests.Session`` (keep-alive), and per request everything the seed did in Python.

* Triton: build the KServe v2 JSON header dict, ``json.dumps`` it, ``tensor.tobytes()``, concatenate, and
  POST with ``Inference-Header-Content-Length``.
* LitServe: ``json.dumps({"input": tensor.tolist()})`` and POST; read ``response.json()["output"]``.

Run as ``python -m bench.seed_clients {triton|litserve} URL TENSOR.npy --duration S``; prints one JSON line:
``{"requests": n, "failures": n, "seconds": s, "req_s": r, "p50_ms": m}``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import requests

from bench.loop import Sender, run_loop

__all__ = ["litserve_sender", "main", "triton_sender"]


def triton_sender(session: requests.Session, url: str, tensor: np.ndarray, input_name: str, output: str) -> Sender:
    """One seed-style Triton request per call; True when the server answered 200."""

    def send() -> bool:
        raw = tensor.tobytes()
        header = {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(tensor.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": True}}],
        }
        header_bytes = json.dumps(header).encode()
        body = header_bytes + raw
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header_bytes)),
        }
        response = session.post(url, data=body, headers=headers)
        return response.status_code == 200

    return send


def litserve_sender(session: requests.Session, url: str, tensor: np.ndarray) -> Sender:
    """One seed-style LitServe request per call; True when the answer is 200 with an ``output``."""

    def send() -> bool:
        payload = json.dumps({"input": tensor.tolist()})
        response = session.post(url, data=payload, headers={"Content-Type": "application/json"})
        return response.status_code == 200 and "output" in response.json()

    return send


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=["triton", "litserve"])
    parser.add_argument("url")
    parser.add_argument("tensor", help=".npy file: the preprocessed batch (1, 3, 224, 224) float32")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--input-name", default="x")
    parser.add_argument("--output-name", default="x.45")
    args = parser.parse_args(argv)
    tensor = np.load(args.tensor)
    session = requests.Session()
    session.trust_env = False  # never route 127.0.0.1 through a proxy from the environment
    if args.protocol == "triton":
        send = triton_sender(session, args.url, tensor, args.input_name, args.output_name)
    else:
        send = litserve_sender(session, args.url, tensor)
    print(json.dumps(run_loop(send, args.duration)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
