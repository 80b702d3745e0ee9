"""Triton's server-side statistics (the KServe statistics extension), read at test start and end and
reported as a difference, the way perf_analyzer does: counts, average batch size, and the average
queue / compute-input / compute-infer / compute-output time per inference. For a decoupled model whose
backend reports them, Triton's per-response statistics (``response_stats``) too: the responses it counted
and the time per response."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import gevent

from locust_inference._native import LocustInferenceError, grpc_model_statistics, http_request
from locust_inference.options import Settings

__all__ = ["ServerStats", "StatsRead", "breakdown", "read_stats"]

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
# the phases of Triton's per-response statistics (its InferResponseStatistics), each summed over the responses'
# indexes; the count of success is the responses Triton sent with data, empty_response the final flags sent alone
RESPONSE_PHASES = ("compute_infer", "compute_output", "success", "fail", "empty_response", "cancel")


@dataclass(frozen=True)
class ServerStats:
    """Cumulative counters of one model, as Triton reports them."""

    inference_count: int
    execution_count: int
    success_count: int
    ns: dict[str, int]
    # RESPONSE_PHASES' counts and ns summed over the response indexes; empty when Triton reports none (a
    # model that is not decoupled, or a backend that does not report them, as the Python backend of Triton 2.51)
    response_counts: dict[str, int] = field(default_factory=dict)
    response_ns: dict[str, int] = field(default_factory=dict)


def read_stats(settings: Settings) -> ServerStats | None:
    """GET /v2/models/{model}/stats (over gRPC: ModelStatistics); None when the server does not offer it (e.g.
    LitServe)."""
    if settings.server != "triton" or settings.models:  # several models: each read on its own (latency.py)
        return None
    if settings.protocol == "grpc":
        return _read_grpc_stats(settings)
    try:
        status, body = http_request(
            "GET",
            f"{settings.host}/v2/models/{settings.model}/stats",
            headers=list(settings.headers),
            timeout=10.0,
            insecure=settings.insecure,
            ca_file=settings.ca_file,
        )
        if status != 200:
            return None
        return _stats(json.loads(body)["model_stats"][0])
    except (LocustInferenceError, ValueError, KeyError, IndexError, TypeError):
        return None


def _read_grpc_stats(settings: Settings) -> ServerStats | None:
    """The same statistics from Triton's gRPC ModelStatistics, which the native call gives in the HTTP shape."""
    try:
        code, _, stats = grpc_model_statistics(
            settings.host,
            settings.model,
            headers=list(settings.headers),
            timeout=10.0,
            insecure=settings.insecure,
            ca_file=settings.ca_file,
        )
        return _stats(stats) if code == 0 and stats is not None else None
    except (LocustInferenceError, ValueError, KeyError, TypeError):
        return None


def _stats(stats: dict[str, Any]) -> ServerStats:
    """One model's entry of the statistics (``model_stats[0]``)."""
    inference = stats["inference_stats"]
    responses = stats.get("response_stats") or {}
    if not isinstance(responses, dict):
        raise TypeError("response_stats is not an object")
    per_index = list(responses.values())
    return ServerStats(
        inference_count=int(stats.get("inference_count", 0)),
        execution_count=int(stats.get("execution_count", 0)),
        success_count=int(inference["success"]["count"]),
        ns={phase: int(inference[phase]["ns"]) for phase in PHASES},
        response_counts={p: sum(int(r.get(p, {}).get("count", 0)) for r in per_index) for p in RESPONSE_PHASES}
        if per_index
        else {},
        response_ns={p: sum(int(r.get(p, {}).get("ns", 0)) for r in per_index) for p in RESPONSE_PHASES}
        if per_index
        else {},
    )


class StatsRead:
    """One :func:`read_stats` running in gevent's threadpool (the native request releases the GIL while it
    waits), started at once; :meth:`get` waits for it, letting other greenlets run. A read made in an event
    listener would hold Locust's loop for up to its 10 s timeout when the server is slow or silent: on a
    master, the heartbeats of healthy workers would go unread meanwhile, and the workers be counted missing."""

    def __init__(self, settings: Settings) -> None:
        reads = settings.server == "triton" and not settings.models
        self._result = gevent.get_hub().threadpool.spawn(read_stats, settings) if reads else None

    def get(self) -> ServerStats | None:
        return None if self._result is None else self._result.get()

    def ready(self) -> bool:
        """Whether the read has ended (with statistics or without)."""
        return self._result is None or self._result.ready()


def breakdown(
    start: ServerStats | None, end: ServerStats | None, client_mean_ms: float | None
) -> dict[str, float | None] | None:
    """The difference between two snapshots, per inference, in ms; None without both snapshots."""
    if start is None or end is None:
        return None
    inferences = end.inference_count - start.inference_count
    executions = end.execution_count - start.execution_count
    successes = end.success_count - start.success_count
    if inferences <= 0 or successes <= 0:
        return None
    per_phase = {f"{phase}_ms": (end.ns[phase] - start.ns[phase]) / successes / 1e6 for phase in PHASES}
    server_total = sum(per_phase.values())
    result: dict[str, float | None] = {
        "inference_count": inferences,
        "execution_count": executions,
        "avg_batch_size": inferences / executions if executions else None,
        **per_phase,
        "server_total_ms": server_total,
        "client_mean_ms": client_mean_ms,
        "client_minus_server_ms": client_mean_ms - server_total if client_mean_ms is not None else None,
    }
    if end.response_counts:
        result.update(_responses(start, end))
    return result


def _responses(start: ServerStats, end: ServerStats) -> dict[str, float | None]:
    """Triton's per-response statistics over the run, named as Triton names them: the responses it sent with
    data (``responses``), the final flags it sent alone, the failed and the cancelled ones, and the mean time to
    compute a response and to extract its outputs."""

    def count(phase: str) -> int:
        return end.response_counts.get(phase, 0) - start.response_counts.get(phase, 0)

    def per_response_ms(phase: str) -> float | None:
        n = count(phase)
        return (end.response_ns.get(phase, 0) - start.response_ns.get(phase, 0)) / n / 1e6 if n > 0 else None

    return {
        "responses": count("success"),
        "failed_responses": count("fail"),
        "empty_responses": count("empty_response"),
        "cancelled_responses": count("cancel"),
        "response_compute_infer_ms": per_response_ms("compute_infer"),
        "response_compute_output_ms": per_response_ms("compute_output"),
    }
