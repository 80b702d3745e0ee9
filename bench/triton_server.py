"""The real Triton of the benchmark's Triton rows: PyTriton's tritonserver started by
:func:`servers.launch.triton_server` (its own process group, stopped with it however the block ends), serving
one model, with the count of requests it answered taken from Triton's own statistics.

    with real_triton(workdir) as triton:
        pin_group(triton.pid, {SERVER_CPU})   # tritonserver, its Python-backend stubs, PyTriton
        triton.served()                       # model_stats[*].inference_stats.success.count
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers.launch import triton_server

__all__ = ["MODEL", "MODEL_INPUT", "RealTriton", "real_triton", "success_count"]

# The cheapest model that takes the bench's image tensor: tiny_onnx, input__0 FP32 [N,3,224,224] (global
# average pool + a 3x1000 Gemm), so every client sends a 602,112-byte tensor per request.
MODEL = "tiny_onnx"
MODEL_INPUT = "input__0"
STATS_TIMEOUT_S = 2.0

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def success_count(stats: dict[str, Any]) -> int:
    """Requests the model answered successfully, summed over its versions, from ``GET
    /v2/models/<m>/stats`` (``model_stats[*].inference_stats.success.count``); ValueError when absent."""
    try:
        return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"no model_stats[*].inference_stats.success.count in Triton's statistics: {exc!r}") from None


@dataclass(frozen=True)
class RealTriton:
    """A running Triton: its URLs (HTTP; gRPC, cleartext HTTP/2), the process group to pin, and the model's
    answered requests (over either protocol)."""

    url: str
    pid: int
    model: str
    log: Path
    grpc_url: str = "http://127.0.0.1:1"

    def served(self) -> int:
        """Triton's count of successful requests of :attr:`model` (OSError when it cannot be read)."""
        try:
            with _OPENER.open(f"{self.url}/v2/models/{self.model}/stats", timeout=STATS_TIMEOUT_S) as resp:
                return success_count(json.loads(resp.read()))
        except ValueError as exc:  # malformed: the sampler skips it like an unreachable server
            raise OSError(str(exc)) from None


@contextlib.contextmanager
def real_triton(workdir: Path, model: str = MODEL) -> Iterator[RealTriton]:
    """Triton serving ``model`` until the block ends (30-60 s to start); its log in ``workdir``."""
    log = workdir / "triton.log"
    with triton_server(models=[model], log_path=log) as srv:
        yield RealTriton(srv.url, srv.pid, model, log, f"http://{srv.host}:{srv.grpc_port}")
