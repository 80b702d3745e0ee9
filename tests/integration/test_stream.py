"""Stream (open-loop load, the native part) against the real reference Triton.

Bounds follow from the schedule and the server, never from how fast this machine is: sleep_20ms takes
at least 20 ms per request, so with one request in flight it serves at most 50 of 100 requests/s.
"""

from __future__ import annotations

import time

import pytest
from locust_inference import Completion, Endpoint, Stream
from support.endpoints import triton_endpoint


def run(stream: Stream, seconds: float) -> list[Completion]:
    """Takes and records (reports) the stream's completions for `seconds`: what a user does."""
    done: list[Completion] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        taken = stream.wait(timeout=left)
        for completion in taken:
            stream.record(completion)
        done += taken
    return done


@pytest.fixture(scope="module")
def tiny(triton) -> Endpoint:
    tiny = triton_endpoint(triton.url, "tiny_onnx")
    warm = Stream(tiny, 100.0, max_in_flight=16)  # connections in the pool, the model warm
    run(warm, 0.3)
    warm.stop()
    return tiny


@pytest.fixture(scope="module")
def sleep_20ms(triton) -> Endpoint:
    return triton_endpoint(triton.url, "sleep_20ms")


def test_requests_leave_at_exactly_k_over_rate(tiny: Endpoint) -> None:
    stream = Stream(tiny, 100.0, max_in_flight=1, overload="queue")
    done = run(stream, 2.0)
    stream.stop()
    # one in flight, queued when late: the k-th answer is of the request intended for k/100 s
    assert [round(c.intended * 1e6) for c in done] == [k * 10_000 for k in range(len(done))]


def test_a_sustainable_rate_drops_nothing(tiny: Endpoint) -> None:
    stream = Stream(tiny, 50.0, max_in_flight=16)
    done = run(stream, 2.0)
    unfinished = stream.stop()
    counts = stream.counts()
    assert (counts["dropped"], all(c.outcome.ok for c in done), counts["scheduled"]) == (
        0,
        True,
        len(done) + unfinished,
    ), counts


def test_the_stream_runs_while_python_holds_the_gil(tiny: Endpoint) -> None:
    stream = Stream(tiny, 100.0, max_in_flight=16)
    run(stream, 0.2)
    before = stream.counts()["completed"]
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # pure Python: no other thread of this process gets the GIL meanwhile
        pass
    answered = stream.counts()["completed"] - before
    stream.stop()
    # the schedule, the sends and the completions never need the GIL: about 50 answers in 0.5 s
    assert answered >= 10, answered


def test_every_completion_is_reported_with_its_lag(tiny: Endpoint) -> None:
    stream = Stream(tiny, 200.0, max_in_flight=4)
    done = run(stream, 1.0)
    stream.stop()
    # response time = lag + service time, and the lag histogram saw every request sent
    assert all(abs(c.response_time - (c.lag + c.service_time)) < 1e-6 for c in done)
    assert stream.lag().count == stream.counts()["sent"] >= len(done)


def test_drop_counts_the_shortfall(sleep_20ms: Endpoint) -> None:
    stream = Stream(sleep_20ms, 100.0, max_in_flight=1, overload="drop")
    run(stream, 2.0)
    stream.stop()
    c = stream.counts()
    # each request takes >= 20 ms, so the tick 10 ms after each send finds the slot taken
    assert c["sent"] + c["dropped"] == c["scheduled"] and c["dropped"] >= c["sent"] - 1, c


def test_queue_sends_every_request_late_and_later(sleep_20ms: Endpoint) -> None:
    stream = Stream(sleep_20ms, 100.0, max_in_flight=1, overload="queue")
    done = run(stream, 2.0)
    stream.stop()
    # nothing dropped, in order: request k is meant for 10k ms but cannot leave before 20k ms (each
    # answer takes >= 20 ms), so its response time from the intended send grows by >= 10 ms a request
    assert [round(c.intended * 1000) for c in done] == [10 * k for k in range(len(done))]
    assert all(c.response_time >= 10 * k + 20 for k, c in enumerate(done)), [c.response_time for c in done]


def test_stop_accounts_for_every_scheduled_request(sleep_20ms: Endpoint) -> None:
    stream = Stream(sleep_20ms, 100.0, max_in_flight=1, overload="queue")
    done = run(stream, 1.0)
    unfinished = stream.stop()
    c = stream.counts()
    # queued and in flight at the stop: unfinished; a second stop counts nothing more
    assert (c["scheduled"], c["dropped"], stream.stop()) == (len(done) + unfinished, 0, 0), (c, unfinished)


def test_stopped_stream_sends_nothing_more(tiny: Endpoint) -> None:
    stream = Stream(tiny, 500.0)
    run(stream, 0.3)
    stream.stop()
    before = stream.counts()
    time.sleep(0.2)
    assert (stream.counts(), stream.take()) == (before, [])


def test_poisson_arrivals_are_reproducible_from_the_seed(tiny: Endpoint) -> None:
    streams = [Stream(tiny, 100.0, arrival="poisson", seed=s, max_in_flight=1, overload="queue") for s in (3, 3, 4)]
    time.sleep(1.0)  # completions wait in each stream's inbox; one in flight and queue: in order
    times = [[c.intended for c in s.take()] for s in streams]
    for s in streams:
        s.stop()
    n = min(len(t) for t in times)
    assert times[0][:n] == times[1][:n] != times[2][:n] and n > 20, times


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0}, "rate must be a positive number"),
        ({"rate": float("nan")}, "rate must be a positive number"),
        ({"max_in_flight": 0}, "max_in_flight must be at least 1"),
        ({"arrival": "burst"}, "arrival must be 'constant' or 'poisson'"),
        ({"overload": "block"}, "overload must be 'drop' or 'queue'"),
    ],
)
def test_bad_arguments_raise_value_error(tiny: Endpoint, kwargs: dict, message: str) -> None:
    rate = kwargs.pop("rate", 10.0)
    with pytest.raises(ValueError, match=message):
        Stream(tiny, rate, **kwargs)
