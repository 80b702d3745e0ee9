"""Triton's per-response statistics (``response_stats``, for decoupled models) in ``server_stats``: the
statistics entry in the shape Triton's HTTP statistics JSON and our gRPC ModelStatistics reading both give
(``response_stats`` keyed by the response's index), read twice and reported as the run's difference.

The reference Triton (PyTriton's, 2.51) reports no per-response statistics: its Python backend does not call
Triton's response-statistics API, so ``response_stats`` is empty for ``pulse`` (test_grpc_stream.py checks
that both readings say so). These entries are written as Triton documents the fields."""

from __future__ import annotations

from typing import Any

import pytest
from locust_inference.server_stats import _stats, breakdown


def duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def entry(requests: int, per_request: int, responses: dict[str, Any] | None) -> dict[str, Any]:
    """A statistics entry after ``requests`` requests, each ``per_request`` ns in every phase."""
    phases = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
    inference = {p: duration(0 if p == "fail" else requests, requests * per_request) for p in phases}
    out: dict[str, Any] = {"inference_count": requests, "execution_count": requests, "inference_stats": inference}
    if responses is not None:
        out["response_stats"] = responses
    return out


def responses(requests: int, count: int, *, cancelled: int = 0) -> dict[str, Any]:
    """``count`` responses to each of ``requests`` requests (index i: compute_infer 1000 + i ns, compute_output
    100 ns), then Triton's empty final response, and ``cancelled`` cancellations at the last index."""
    out: dict[str, Any] = {
        str(i): {
            "compute_infer": duration(requests, requests * (1000 + i)),
            "compute_output": duration(requests, requests * 100),
            "success": duration(requests, requests * 5000),
            "fail": duration(0, 0),
            "empty_response": duration(0, 0),
            "cancel": duration(0, 0),
        }
        for i in range(count)
    }
    out[str(count)] = {
        "compute_infer": duration(0, 0),
        "compute_output": duration(0, 0),
        "success": duration(0, 0),
        "fail": duration(0, 0),
        "empty_response": duration(requests, requests * 10),
        "cancel": duration(cancelled, cancelled * 10),
    }
    return out


def test_the_responses_triton_counted_over_the_run_are_reported_as_it_names_them() -> None:
    start = _stats(entry(3, 1000, responses(3, 4)), "m")
    end = _stats(entry(10, 1000, responses(10, 4, cancelled=2)), "m")
    result = breakdown(start, end, client_mean_ms=1.0)
    assert result is not None
    assert (result["inference_count"], result["responses"]) == (7, 28)  # 4 responses to each of 7 requests
    assert (result["empty_responses"], result["cancelled_responses"], result["failed_responses"]) == (7, 2, 0)
    # indexes 0..3 at 1000..1003 ns: the mean per response over the run
    assert result["response_compute_infer_ms"] == pytest.approx(1001.5e-6)
    assert result["response_compute_output_ms"] == pytest.approx(100e-6)


@pytest.mark.parametrize("reported", [None, {}])
def test_without_per_response_statistics_no_response_keys_appear(reported: dict[str, Any] | None) -> None:
    """A model that is not decoupled, or a backend that reports none: the breakdown names no responses."""
    result = breakdown(
        _stats(entry(3, 1000, reported), "m"), _stats(entry(10, 1000, reported), "m"), client_mean_ms=1.0
    )
    assert result is not None
    assert result["inference_count"] == 7
    assert not any("response" in key for key in result)


def test_statistics_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(TypeError):
        _stats(entry(1, 1, ["0"]), "m")  # type: ignore[arg-type]
