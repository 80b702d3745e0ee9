"""Our client without Locust: one :class:`~locust_inference.RequestSlot` sending the prepared
:class:`~locust_inference.Endpoint` back to back, with the latency of each request timed in Rust
(``Outcome.response_time``, float ms). This gives the 1-user p50 at microsecond resolution; Locust's CSV
rounds it to whole milliseconds.

Run as ``python -m bench.direct URL BODY_FILE HEADER_LENGTH --duration S``; prints one JSON line like
:mod:`bench.seed_clients`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from locust_inference import Endpoint, RequestSlot

from bench.loop import run_loop

__all__ = ["main", "run"]


def run(url: str, body: bytes, header_length: int, output: tuple[str, str, list[int]], duration: float) -> dict:
    """Sends ``body`` to ``url`` for ``duration`` seconds, one request at a time."""
    endpoint = Endpoint(
        url,
        body,
        headers=[
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", str(header_length)),
        ],
        protocol="triton",
        outputs=[output],
    )
    slot = RequestSlot()

    def send() -> bool | float:
        slot.submit(endpoint)
        outcome = slot.wait()
        return outcome.response_time if outcome is not None and outcome.ok else False

    return run_loop(send, duration)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body", type=Path)
    parser.add_argument("header_length", type=int)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--output-name", default="x.45")
    parser.add_argument("--output-shape", default="1,2")
    args = parser.parse_args(argv)
    shape = [int(d) for d in args.output_shape.split(",")]
    result = run(args.url, args.body.read_bytes(), args.header_length, (args.output_name, "FP32", shape), args.duration)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
