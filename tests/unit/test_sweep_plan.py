"""A sweep's arithmetic, without a server: steps, limits, stability and goodput; and bad sweep options
end the start with one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from locust_inference import ConfigError
from locust_inference.options import next_model
from locust_inference.sweep.analysis import Window, goodput, split_users, stable
from locust_inference.sweep.plan import Limit, parse_fraction, parse_limit, parse_steps
from support.runs import REPO_ROOT, assert_clean_failure, clean_env, run_locust


def test_steps_are_lists_or_inclusive_ranges() -> None:
    assert parse_steps("1,2,4,8", "x", whole=True) == (1, 2, 4, 8)
    assert parse_steps("5:60:5", "x", whole=False) == tuple(float(5 * i) for i in range(1, 13))
    assert parse_steps("0.5:1.5:0.5", "x", whole=False) == (0.5, 1.0, 1.5)
    assert parse_steps("10:25:10", "x", whole=False) == (10.0, 20.0)  # stop included only when on a step


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("4,2", "steps must increase"),
        ("2,2", "steps must increase"),
        ("1,x", "'x' is not a number"),
        ("0,1", "must be a positive number"),
        ("60:5:5", "stop is below start"),
        ("5:60", "a range is start:stop:step"),
        ("1.5,2", "users are whole numbers"),
    ],
)
def test_bad_steps_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_steps(text, "--sweep-concurrency", whole=True)


@pytest.mark.parametrize(
    ("text", "value"),
    [("10%", 0.1), ("0.1", 0.1), (" 5 % ", 0.05), ("0.5%", 0.005), ("99.9%", 0.999), (".25", 0.25)],
)
def test_a_fraction_is_read_as_a_percentage_or_a_fraction(text: str, value: float) -> None:
    assert parse_fraction(text, "--sweep-tolerance") == pytest.approx(value)


FORMS = "--sweep-tolerance takes a fraction such as 0.1 or a percentage such as 10%, not "


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10", FORMS + "'10'"),  # 10% or ten times: not guessed at
        ("1", FORMS + "'1'"),  # 1% or 100%
        ("ten", FORMS + "'ten'"),
        ("nan", FORMS + "'nan'"),
        ("%", FORMS + "'%'"),
        ("150%", "--sweep-tolerance '150%' must be above 0% and below 100%"),
        ("100%", "--sweep-tolerance '100%' must be above 0% and below 100%"),
        ("0%", "--sweep-tolerance '0%' must be above 0% and below 100%"),
        ("0", "--sweep-tolerance '0' must be above 0% and below 100%"),
        ("-5%", "--sweep-tolerance '-5%' must be above 0% and below 100%"),
        ("inf%", "--sweep-tolerance 'inf%' must be above 0% and below 100%"),
    ],
)
def test_a_fraction_that_is_none_says_which_forms_are_read(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_fraction(text, "--sweep-tolerance")
    assert str(refused.value) == message


def test_limits() -> None:
    assert parse_limit("p99=100ms", "--slo") == Limit(99.0, 100.0)
    assert parse_limit("p99.9 = 0.5s", "--slo") == Limit(99.9, 500.0)
    assert parse_limit("p50=20", "--slo") == Limit(50.0, 20.0)
    assert parse_limit("p99.9=1s", "--slo").key == "p99.9"
    for bad in ("100ms", "p99", "p100=1ms", "p0=1ms", "p99=-1ms", "99=1ms"):
        with pytest.raises(ConfigError, match="--slo"):
            parse_limit(bad, "--slo")


def w(throughput: float, p99: float | None, seconds: float = 5.0) -> Window:
    return Window(round(throughput * seconds), 0, seconds, p99)


def test_stable_when_the_last_windows_agree_within_the_tolerance() -> None:
    assert stable([w(50, 80), w(100, 20), w(104, 21), w(97, 20.5)], 3, 0.1)
    assert not stable([w(100, 20), w(104, 21)], 3, 0.1)  # too few windows
    assert not stable([w(100, 20), w(130, 21), w(100, 20)], 3, 0.1)  # throughput disagrees
    assert not stable([w(100, 20), w(100, 28), w(100, 20)], 3, 0.1)  # p99 disagrees
    assert not stable([w(0, None), w(0, None), w(0, None)], 3, 0.1)  # nothing answered is not stable
    assert stable([w(100, 20), w(100, 28), w(100, 20)], 3, 0.25)


def steps(*points: tuple[float, float]) -> list[dict]:
    return [{"achieved_per_s": rate, "latency_ms": {"p99": p99}} for rate, p99 in points]


def test_a_steps_users_are_split_over_the_models_as_the_weighted_turn_binds_them() -> None:
    for weights in ((3, 1), (1, 1), (5, 2, 7), (1, 9), (1000, 1)):
        bound = [0] * len(weights)
        for users in range(1, min(3 * sum(weights), 200) + 1):
            bound[next_model(bound, weights)] += 1
            assert split_users(users, weights) == bound, (weights, users)
    # whole rounds of the weights' sum, then the turn: as binding them one by one, without the loop
    assert split_users(100_000, (3, 1)) == [75_000, 25_000]
    assert split_users(100_001, (3, 1)) == [75_001, 25_000]
    assert split_users(0, (3, 1)) == [0, 0]


def test_goodput_interpolates_between_the_last_step_within_the_slo_and_the_next() -> None:
    good = goodput(steps((10, 20), (20, 40), (30, 140)), Limit(99, 90))
    # 90 ms is half way from 40 to 140 ms: half way from 20 to 30 req/s
    assert good["rate_per_s"] == pytest.approx(25.0) and good["how"] == "interpolated between steps 2 and 3"
    assert goodput(steps((10, 20), (20, 40)), Limit(99, 90)) | {"slo": None} == {
        "slo": None,
        "percentile": "p99",
        "slo_ms": 90,
        "rate_per_s": 20,
        "how": "at step 2 (the SLO held at every step)",
    }
    assert goodput(steps((10, 200), (20, 400)), Limit(99, 90))["rate_per_s"] is None
    # past saturation the throughput falls: the best step within the SLO stands, nothing is extrapolated
    assert goodput(steps((10, 20), (30, 40), (25, 140)), Limit(99, 90))["rate_per_s"] == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "a sweep needs one of --sweep-concurrency"),
        (["--sweep-concurrency", "1,2", "--sweep-rate", "5:10:5"], "a sweep needs one of"),
        (["--sweep-concurrency", ""], "--sweep-concurrency is empty"),
        (["--sweep-concurrency", "4,2,8"], "steps must increase"),
        (["--sweep-rate", "5:60:5", "--rate", "10"], "not a multiple of each stream's 10 req/s"),
        (["--sweep-rate", "1:2000:1"], "needs 2000 streams"),
        (["--sweep-concurrency", "1,2", "--slo", "100ms"], "--slo '100ms': give a percentile and a latency"),
        (["--sweep-concurrency", "1,2", "--sweep-window", "2"], "shorter than Locust's worker report interval"),
        (["--sweep-concurrency", "1,2", "--sweep-stable-windows", "1"], "must be at least 2"),
        (["--sweep-concurrency", "1,2", "--sweep-stop-errors", "150%"], "must be above 0% and below 100%"),
        (
            ["--sweep-concurrency", "1,2", "--sweep-tolerance", "10"],
            "--sweep-tolerance takes a fraction such as 0.1 or a percentage such as 10%, not '10'",
        ),
    ],
)
def test_bad_sweep_options_end_the_start_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        "http://127.0.0.1:9",  # nothing is sent: the options are refused first
        *args,
        locustfile=REPO_ROOT / "sweepfile.py",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx"),
    )
    assert_clean_failure(run, message)


_SUM_OF_PARTS = """
from types import SimpleNamespace

from locust_inference._native import Measurements
from locust_inference.sweep.shape import SweepRun, _Step


def entry(per_second, failures):
    return SimpleNamespace(num_reqs_per_sec=per_second, num_fail_per_sec=failures)


run = object.__new__(SweepRun)
run.plan = SimpleNamespace(window_s=2, stable_windows=3)
run.collector = SimpleNamespace(poll=lambda: None, take_window_by_name=lambda: (Measurements(), {}), slo=None)
run.models = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
run.environment = SimpleNamespace(
    stats=SimpleNamespace(
        # the total logged one of a's requests at 11.9999, a's entry at 12.0001: second 12 is outside
        total=entry({10: 7, 11: 6}, {11: 1}),
        entries={("a", "infer"): entry({10: 4, 11: 2, 12: 1}, {}), ("b", "infer"): entry({10: 3, 11: 3}, {11: 1})},
    )
)
step = _Step(index=0, load=4, users=4, warm_until=0.0, t0=10)
run._close_window(step)
parts = step.model_windows[0]
assert (parts["a"].successes, parts["b"].successes, parts["b"].failures) == (6, 5, 1), parts
(window,) = step.windows
assert (window.successes, window.failures) == (11, 1), window  # Locust's total says 12 successes
print("ok")
"""


def test_a_steps_counts_with_several_models_are_the_sum_of_its_models_parts() -> None:
    """Locust reads the clock apart for its total and for a name's entry, so a request logged across a
    second's boundary is in second 11 of one and second 12 of the other: the step's window takes its models'
    counts, and the step's total is always its models' parts added up. In a child: importing Locust
    monkey-patches the process (gevent)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SUM_OF_PARTS], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
