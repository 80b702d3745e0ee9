"""--check and --junit: conditions on the merged results, evaluated where latency.json is written.

Unit tests of the conditions' grammar and evaluation, then runs against the reference Triton: the
`sleep_20ms` model (a 20 ms inference) against conditions that hold and ones that are breached, the
JUnit report, a bad condition at start, and a master with two workers reading its conditions from the
config file."""

from __future__ import annotations

import pytest
from locust_inference._native import ConfigError
from locust_inference.checks import Check, evaluate, parse


def entry(**overrides: object) -> dict:
    base = {
        "count": 98,
        "failures": 2,
        "resent": 0,
        "requests_per_s": 49.0,
        "latency_ms": {"p50": 20.5, "p99": 24.0, "mean": 20.9, "min": 20.1, "max": 30.0},
        "ttfb_ms": {"p50": 20.4},
        "service_ms": {"p50": 20.5},
        "open_loop": None,
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p99<=100ms", Check("p99<=100ms", None, "p99", "<=", 100.0)),
        ("p99 <= 0.1s", Check("p99 <= 0.1s", None, "p99", "<=", 100.0)),
        ("p99.9<1500us", Check("p99.9<1500us", None, "p99.9", "<", 1.5)),
        ("ttfb_p50<5", Check("ttfb_p50<5", None, "ttfb_p50", "<", 5.0)),
        ("fail_ratio<=1%", Check("fail_ratio<=1%", None, "fail_ratio", "<=", 0.01)),
        ("fail_ratio<=0.01", Check("fail_ratio<=0.01", None, "fail_ratio", "<=", 0.01)),
        ("fail_ratio<100%", Check("fail_ratio<100%", None, "fail_ratio", "<", 1.0)),
        ("rps>=50", Check("rps>=50", None, "rps", ">=", 50.0)),
        ("dropped==0", Check("dropped==0", None, "dropped", "==", 0.0)),
        ("triton/m:p50>2ms", Check("triton/m:p50>2ms", "triton/m", "p50", ">", 2.0)),
    ],
)
def test_conditions_read_as_written(text: str, expected: Check) -> None:
    assert parse([text]) == [expected]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("p99", "is not a condition such as"),
        ("p99=<100ms", "is not a condition such as"),
        ("p98<=100ms", "unknown metric 'p98'"),
        ("p99<=10%", "p99 is a time"),
        ("fail_ratio<=5ms", "fail_ratio takes a fraction such as 0.01 or a percentage such as 1%"),
        ("fail_ratio<=10", "fail_ratio takes a fraction such as 0.01 or a percentage such as 1%"),
        ("fail_ratio<=1", "fail_ratio takes a fraction such as 0.01 or a percentage such as 1%"),
        ("fail_ratio<=150%", "at most 100%"),
        ("rps>=50ms", "rps takes a plain number, without ms"),
        ("p99<=1e999", "not a finite number"),
    ],
)
def test_a_malformed_condition_is_refused_naming_it(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"--check {text!r}") as refused:
        parse([text])
    assert says in str(refused.value)


def test_each_condition_is_judged_for_each_request_name_or_the_one_it_names() -> None:
    summary = {"requests": {"a": entry(), "b": entry(latency_ms={"p99": 200.0})}}
    verdicts = evaluate(parse(["p99<=100ms", "b:fail_ratio<=1%", "requests==100", "rps>49"]), summary)
    assert [(v.check.text, v.name, v.measured, v.passed) for v in verdicts] == [
        ("p99<=100ms", "a", 24.0, True),
        ("p99<=100ms", "b", 200.0, False),
        ("b:fail_ratio<=1%", "b", 0.02, False),
        ("requests==100", "a", 100.0, True),
        ("requests==100", "b", 100.0, True),
        ("rps>49", "a", 49.0, False),
        ("rps>49", "b", 49.0, False),
    ]
    assert verdicts[2].line() == "check breached for b: b:fail_ratio<=1%: measured 2.00%"


def test_nothing_measured_breaches_every_condition() -> None:
    checks = parse(["p99<=100ms", "x:rps>=1"])
    verdicts = evaluate(checks, None) + evaluate(checks, {"requests": {"x": entry(count=0, failures=0)}})
    assert [(v.name, v.passed) for v in verdicts] == [(None, False), ("x", False), ("x", False), ("x", False)]
    assert verdicts[0].line() == "check breached: p99<=100ms: no request was measured"


def test_open_loop_counts_are_read_from_the_streams() -> None:
    summary = {"requests": {"a": entry(open_loop={"dropped": 3, "unfinished": 1, "lag_ms": {"p99": 0.4}})}}
    verdicts = evaluate(parse(["dropped==0", "unfinished<=1", "lag_p99<1ms"]), summary)
    assert [(v.measured, v.passed) for v in verdicts] == [(3.0, False), (1.0, True), (0.4, True)]


def test_a_closed_loops_abandoned_requests_are_a_count() -> None:
    summary = {"requests": {"a": entry(abandoned=4), "b": entry()}}  # b: latency.json from before the count
    verdicts = evaluate(parse(["abandoned==0"]), summary)
    assert [(v.name, v.measured, v.passed) for v in verdicts] == [("a", 4.0, False), ("b", 0.0, True)]
