"""An ensemble's statistics as read from Triton: its configuration's steps name the composing models, each
one's entry is read on its own, and what a server answers for them is untrusted. A composing model whose
entry is missing, malformed or another model's is None in the breakdown with one warning line, never a
crash; a configuration whose steps are not model names names no composing model for them.

No server: Triton cannot be made to answer a malformed entry, so the native request is replaced by the
answers a hostile server would give, and the parser is what is tested."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from locust_inference import server_stats
from locust_inference._native import RequestTimeoutError
from locust_inference.options import resolve
from locust_inference.server_stats import EnsembleSteps, ServerStats, breakdown, ensemble_steps, read_stats

HOST = "http://127.0.0.1:9"  # never reached: http_request is replaced


def entry(name: str, count: int, ns: int = 1_000_000, **changes: Any) -> dict[str, Any]:
    """A statistics entry as Triton writes it: ``count`` successes, each phase ``ns`` in all."""
    phases = {p: {"count": count, "ns": ns} for p in ("success", "fail", "queue", "compute_input")}
    phases |= {p: {"count": count, "ns": ns} for p in ("compute_infer", "compute_output")}
    return {"name": name, "version": "1", "inference_count": count, "execution_count": count} | {
        "inference_stats": phases,
        **changes,
    }


def config(*steps: Any) -> dict[str, Any]:
    return {"name": "ens", "platform": "ensemble", "ensemble_scheduling": {"step": list(steps)}}


def step(name: Any, version: Any = -1) -> dict[str, Any]:
    return {"model_name": name, "model_version": version, "input_map": {}, "output_map": {}}


class Answers(dict[str, tuple[int, bytes]]):
    """URL path -> (status, body) the replaced http_request answers (404 for any other), and the paths asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []


@pytest.fixture()
def answers(monkeypatch: pytest.MonkeyPatch) -> Answers:
    table = Answers()

    def http_request(method: str, url: str, **_kw: Any) -> tuple[int, bytes]:
        assert method == "GET" and url.startswith(HOST), url
        table.asked.append(url.removeprefix(HOST))
        return table.get(url.removeprefix(HOST), (404, b'{"error":"unknown model"}'))

    monkeypatch.setattr(server_stats, "http_request", http_request)
    monkeypatch.setattr(server_stats, "_warned", set())
    return table


def settings(model: str = "ens"):
    return resolve(SimpleNamespace(server="triton", model_name=model), HOST, environ={})


def stats_body(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"model_stats": list(entries)}).encode()


def test_each_composing_model_is_read_and_a_bad_entry_is_none_with_one_warning(answers, caplog) -> None:
    answers["/v2/models/ens/stats"] = (200, stats_body(entry("ens", 10)))
    steps = [step("good"), step("missing"), step("malformed"), step("other"), step("garbage"), step("pinned", "2")]
    answers["/v2/models/ens/config"] = (200, json.dumps(config(*steps)).encode())
    answers["/v2/models/good/stats"] = (200, stats_body(entry("good", 10)))
    # missing: 404, the default
    answers["/v2/models/malformed/stats"] = (200, stats_body(entry("malformed", 10, inference_stats={"success": 7})))
    answers["/v2/models/other/stats"] = (200, stats_body(entry("someone_else", 10)))
    answers["/v2/models/garbage/stats"] = (200, b"\xff{not json")
    answers["/v2/models/pinned/versions/2/stats"] = (200, stats_body(entry("pinned", 10)))
    with caplog.at_level(logging.WARNING, logger="locust_inference"):
        run = EnsembleSteps()
        read = read_stats(settings(), run)
        read_stats(settings(), run)  # read again (the web UI does, every 2 s): no second warning
    assert read is not None and read.inference_count == 10
    assert read.composing is not None
    assert list(read.composing) == ["good", "missing", "malformed", "other", "garbage", "pinned"]
    assert read.composing["good"] == ServerStats(10, 10, 10, dict.fromkeys(server_stats.PHASES, 1_000_000), 1_000_000)
    assert read.composing["pinned"] is not None  # its version's own statistics
    assert [name for name, s in read.composing.items() if s is None] == ["missing", "malformed", "other", "garbage"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"locust-inference: no statistics for {name!r}, a composing model of ensemble 'ens'"
        for name in ("missing", "malformed", "other", "garbage")
    ]


HANG = (0, b"")  # an answer that never comes: the request waits out its whole timeout


def test_a_read_takes_its_budget_at_most_when_the_composing_models_never_answer(monkeypatch, caplog) -> None:
    """A server that takes every request and answers none of the composing models': one read of the statistics
    (at test start, and at the end as the process quits, Ctrl-C included) must end within READ_BUDGET_S, with
    the composing models it did not read None and said once, not one timeout per model. The clock is the
    test's: each request that hangs moves it on by the timeout it was given."""
    steps = [step(f"m{i}") for i in range(server_stats.MAX_COMPOSING)]
    table = {
        "/v2/models/ens/stats": (200, stats_body(entry("ens", 10))),
        "/v2/models/ens/config": (200, json.dumps(config(*steps)).encode()),
    }
    now = [0.0]

    def http_request(method: str, url: str, *, timeout: float, **_kw: Any) -> tuple[int, bytes]:
        assert timeout > 0, url
        answer = table.get(url.removeprefix(HOST), HANG)
        if answer is HANG:
            now[0] += timeout
            raise RequestTimeoutError(f"no answer from {url} within {timeout} s")
        return answer

    monkeypatch.setattr(server_stats, "http_request", http_request)
    monkeypatch.setattr(server_stats, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(server_stats, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="locust_inference"):
        read = read_stats(settings(), EnsembleSteps())
    assert now[0] <= server_stats.READ_BUDGET_S  # 640 s with a timeout of its own for each composing model
    assert read is not None and read.inference_count == 10
    assert read.composing == {f"m{i}": None for i in range(server_stats.MAX_COMPOSING)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "locust-inference: no statistics for 'm0', a composing model of ensemble 'ens'",
        "locust-inference: ensemble 'ens': composing models' statistics not read: "
        f"the statistics took over {server_stats.READ_BUDGET_S:g} s (a slow or silent server)",
    ]


def test_a_model_that_is_not_an_ensemble_has_no_composing_map(answers) -> None:
    answers["/v2/models/tiny/stats"] = (200, stats_body(entry("tiny", 3)))
    answers["/v2/models/tiny/config"] = (200, json.dumps({"name": "tiny", "platform": "onnxruntime_onnx"}).encode())
    read = read_stats(settings("tiny"), EnsembleSteps())
    assert read is not None and read.composing is None
    result = breakdown(ServerStats(0, 0, 0, dict.fromkeys(server_stats.PHASES, 0)), read, None)
    assert result is not None and result["inference_count"] == 3 and "composing" not in result


def test_an_unreadable_configuration_reads_the_model_alone(answers) -> None:
    answers["/v2/models/ens/stats"] = (200, stats_body(entry("ens", 3)))
    answers["/v2/models/ens/config"] = (200, b"[1, 2")  # not JSON
    read = read_stats(settings(), EnsembleSteps())
    assert read is not None and read.composing is None and read.inference_count == 3


def test_an_ensembles_configuration_is_read_once_per_run(answers) -> None:
    answers["/v2/models/ens/stats"] = (200, stats_body(entry("ens", 3)))
    answers["/v2/models/ens/config"] = (200, json.dumps(config(step("a"), step("b"))).encode())
    answers["/v2/models/a/stats"] = (200, stats_body(entry("a", 3)))
    answers["/v2/models/b/stats"] = (200, stats_body(entry("b", 3)))
    answers["/v2/models/tiny/stats"] = (200, stats_body(entry("tiny", 3)))
    answers["/v2/models/tiny/config"] = (200, json.dumps({"name": "tiny", "platform": "onnxruntime_onnx"}).encode())
    run = EnsembleSteps()
    reads = [read_stats(settings(), run) for _ in range(3)] + [read_stats(settings("tiny"), run) for _ in range(3)]
    assert all(r is not None and r.composing is not None and list(r.composing) == ["a", "b"] for r in reads[:3])
    assert all(r is not None and r.composing is None for r in reads[3:])  # not an ensemble: known as well
    each = ["/v2/models/ens/stats", "/v2/models/a/stats", "/v2/models/b/stats"]
    assert answers.asked == [
        "/v2/models/ens/stats",
        "/v2/models/ens/config",
        *each[1:],
        *each,
        *each,
        "/v2/models/tiny/stats",
        "/v2/models/tiny/config",
        "/v2/models/tiny/stats",
        "/v2/models/tiny/stats",
    ]
    # another run (its own collector) reads it again: what one run learned is not another's
    answers.asked.clear()
    assert read_stats(settings(), EnsembleSteps()) == reads[0]
    assert answers.asked == ["/v2/models/ens/stats", "/v2/models/ens/config", *each[1:]]


@pytest.mark.parametrize("failure", [(503, b'{"error":"busy"}'), (200, b"[1, 2")], ids=["unavailable", "truncated"])
def test_a_configuration_read_that_failed_is_made_again_next_time(answers, failure) -> None:
    answers["/v2/models/ens/stats"] = (200, stats_body(entry("ens", 3)))
    answers["/v2/models/a/stats"] = (200, stats_body(entry("a", 3)))
    answers["/v2/models/ens/config"] = failure
    run = EnsembleSteps()
    first = read_stats(settings(), run)
    assert first is not None and first.composing is None  # read as a model alone this time
    answers["/v2/models/ens/config"] = (200, json.dumps(config(step("a"))).encode())
    second, third = read_stats(settings(), run), read_stats(settings(), run)
    assert second is not None and second.composing is not None and list(second.composing) == ["a"]
    assert third == second
    assert answers.asked.count("/v2/models/ens/config") == 2  # after the failure, and never after the success


@pytest.mark.parametrize(
    ("steps", "expected", "warned"),
    [
        ([step("a"), step("b")], [("a", ""), ("b", "")], 0),
        ([step("a"), step("a", -1), step("b", 3)], [("a", ""), ("b", "3")], 0),  # a model in two steps: once
        ([step("a", "7")], [("a", "7")], 0),  # protobuf's JSON writes an int64 as a string
        ([step(7), step(""), step(None), step("x" * 513), step("b")], [("b", "")], 4),
        ([step("a\nb"), step("\x1b[2J"), step("x" * 512)], [("x" * 512, "")], 2),  # printed on a terminal
        ([step("a", "latest"), step("b", True), step("c", -2), step("d", 2**63)], [], 4),
        (["a", None, 3, [], step("b")], [("b", "")], 4),  # steps that are not objects
    ],
)
def test_steps_that_name_no_model_are_left_out_with_a_warning(steps, expected, warned, monkeypatch, caplog) -> None:
    monkeypatch.setattr(server_stats, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="locust_inference"):
        assert ensemble_steps("ens", config(*steps)) == expected
    assert len([r for r in caplog.records if "names no model" in r.getMessage()]) == warned


@pytest.mark.parametrize(
    "bad",
    [
        {"platform": "ensemble"},  # an ensemble without steps
        {"platform": "ensemble", "ensemble_scheduling": "steps"},
        {"ensemble_scheduling": {"step": {"model_name": "a"}}},  # not a list
        config(*[step(f"m{i}") for i in range(server_stats.MAX_COMPOSING + 1)]),  # more steps than believed
    ],
)
def test_an_ensemble_configuration_without_usable_steps_reads_no_composing_model(bad, monkeypatch, caplog) -> None:
    monkeypatch.setattr(server_stats, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="locust_inference"):
        assert ensemble_steps("ens", bad) == []
    assert len(caplog.records) == 1 and "ensemble 'ens'" in caplog.records[0].getMessage()


@pytest.mark.parametrize("not_ensemble", [None, [], "config", {"platform": "onnxruntime_onnx"}, {"name": "m"}])
def test_other_configurations_are_no_ensemble(not_ensemble) -> None:
    assert ensemble_steps("m", not_ensemble) is None


def snapshot(count: int, ns: int, composing: dict[str, ServerStats | None] | None) -> ServerStats:
    return ServerStats(count, count, count, dict.fromkeys(server_stats.PHASES, ns), 4 * ns, composing)


def test_the_breakdown_has_each_composing_models_own_and_none_where_it_was_not_read_at_both_ends() -> None:
    start = snapshot(10, 0, {"a": snapshot(10, 0, None), "b": None, "c": snapshot(5, 0, None)})
    end = snapshot(30, 20_000_000, {"a": snapshot(30, 10_000_000, None), "b": snapshot(30, 1, None), "d": None})
    result = breakdown(start, end, 5.0)
    assert result is not None
    assert result["queue_ms"] == 1.0 and result["request_ms"] == 4.0 and result["client_mean_ms"] == 5.0
    assert result["composing"] == {
        "a": {
            "inference_count": 20,
            "execution_count": 20,
            "avg_batch_size": 1.0,
            "queue_ms": 0.5,
            "compute_input_ms": 0.5,
            "compute_infer_ms": 0.5,
            "compute_output_ms": 0.5,
            "server_total_ms": 2.0,
            "request_ms": 2.0,
        },
        "b": None,  # no entry at the start
        "d": None,  # none at the end
    }
