"""The native endpoint and request slot against the real Triton and LitServe: answers, errors, timeouts,
concurrency, fork."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
from locust_inference import (
    Endpoint,
    RequestError,
    RequestSlot,
    RequestTimeoutError,
    encode_litserve_request,
    encode_triton_request,
)
from locust_inference._native import thread_crossings
from support.endpoints import TENSOR, send, triton_endpoint


def test_latency_is_recorded_only_for_reported_successes(triton) -> None:
    ok_endpoint = triton_endpoint(triton.url, "tiny_onnx")
    ok = send(ok_endpoint)
    failed = send(triton_endpoint(triton.url, "no_such_model"))
    assert ok.ok and not failed.ok and failed.status == 404
    assert ok_endpoint.take().total.count == 0  # nothing until the user reports it
    ok_endpoint.record(ok)
    ok_endpoint.record(failed)  # a failure has no latency to record
    ok_endpoint.record(ok, success=False)  # nor has a success that a check in Python failed
    taken = ok_endpoint.take()
    total = taken.total
    assert (total.count, taken.ttfb.count, taken.service.count, taken.resent) == (1, 1, 1, 0)
    assert abs(total.percentile(50) - ok.response_time) <= ok.response_time / 500 + 0.001
    assert ok_endpoint.take().total.count == 0  # taken


def test_each_request_crosses_to_the_io_thread_and_back_once(triton) -> None:
    endpoint, slot = triton_endpoint(triton.url, "tiny_onnx"), RequestSlot()
    assert send(endpoint, slot).ok  # connected
    to_io, to_python = thread_crossings()
    for _ in range(5):
        assert send(endpoint, slot).ok
    assert thread_crossings() == (to_io + 5, to_python + 5)


def test_success_against_real_triton(triton) -> None:
    outcome = send(triton_endpoint(triton.url, "tiny_onnx"))
    assert outcome.ok and outcome.exception is None and outcome.status == 200
    assert 0 < outcome.ttfb <= outcome.response_time
    assert outcome.response_length > 4000
    assert outcome.top1 is not None and 0 <= outcome.top1 < 1000


def test_success_against_real_litserve(litserve_tiny) -> None:
    ep = Endpoint(f"{litserve_tiny.url}/predict", encode_litserve_request(TENSOR), protocol="litserve")
    outcome = send(ep)
    assert outcome.ok, outcome
    assert outcome.status == 200 and outcome.top1 is not None


def test_real_triton_rejects_a_wrong_shape_with_its_message(triton) -> None:
    small = np.zeros((1, 3, 8, 8), dtype=np.float32)
    body, hl = encode_triton_request(small, "input__0", ["output__0"])
    ep = Endpoint(
        f"{triton.url}/v2/models/tiny_onnx/infer",
        body,
        headers=[("Inference-Header-Content-Length", str(hl))],
        protocol="triton",
    )
    outcome = send(ep)
    assert not outcome.ok and outcome.status == 400 and outcome.error_kind == "status"
    assert isinstance(outcome.exception, RequestError)
    assert str(outcome.exception).startswith(f"HTTP 400 from {triton.url}/v2/models/tiny_onnx/infer: ")
    assert "shape" in str(outcome.exception)


def test_timeout_against_real_model(triton) -> None:
    outcome = send(triton_endpoint(triton.url, "sleep_20ms", timeout=0.005))
    assert isinstance(outcome.exception, RequestTimeoutError)
    assert "within 0.005 s" in str(outcome.exception)
    assert outcome.response_time >= 5.0


def test_slot_is_reusable_and_cancel_discards_the_request(triton) -> None:
    slot = RequestSlot()
    slow = triton_endpoint(triton.url, "sleep_20ms")
    slot.submit(slow)
    assert slot.in_flight
    slot.cancel()
    assert not slot.in_flight and slot.wait(timeout=0.2) is None
    assert send(triton_endpoint(triton.url, "tiny_onnx"), slot).ok


def test_many_slots_share_one_endpoint_concurrently(triton) -> None:
    ep = triton_endpoint(triton.url, "tiny_onnx")
    results: list[bool] = []

    def user() -> None:
        slot = RequestSlot()
        results.extend(send(ep, slot).ok for _ in range(20))

    threads = [threading.Thread(target=user) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 160


def test_works_in_a_forked_child(triton) -> None:
    """Locust's --processes forks after the runtime may exist: the child must rebuild it."""
    ep = triton_endpoint(triton.url, "tiny_onnx")
    assert send(ep).ok  # the parent's runtime and pool now exist
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ok = send(ep).ok and send(ep).ok
            os.write(write, b"ok" if ok else b"failed")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 16) == b"ok" and status == 0
    assert send(ep).ok  # and the parent still works


def test_a_forked_child_dropping_an_endpoint_leaves_the_parents_connections_alone(triton) -> None:
    """The child shares the parent's sockets and epoll instance: closing its copies of the pooled
    connections would unregister the parent's, whose next response would then never be seen."""
    ep = triton_endpoint(triton.url, "tiny_onnx", timeout=5)
    assert send(ep).ok  # one pooled keep-alive connection now
    pid = os.fork()
    if pid == 0:  # child
        try:
            del ep
            gc.collect()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    outcome = send(ep)
    assert outcome.ok, outcome
