"""What a sweep does, from its options: the steps (concurrency or offered rate), how each step is measured
until stable, when the sweep stops early, and the latency SLO its goodput is judged by."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from locust_inference import defaults
from locust_inference._native import ConfigError
from locust_inference.options import bounded, plain, shown

__all__ = ["Limit", "SweepPlan", "add_arguments", "parse_fraction", "parse_limit", "parse_steps", "resolve"]

MAX_STREAMS = 1000  # rate steps: open-loop users at the largest step
MAX_STEPS = 10_000
MAX_USERS = 100_000  # concurrency steps
MIN_RATE, MAX_RATE = 0.001, 1_000_000.0  # rate steps, req/s: rates are matched in thousandths
MAX_WINDOW_S = 3600
MAX_WINDOWS = 1000
MAX_LATENCY_MS = 86_400_000.0  # a day, as --request-timeout


@dataclass(frozen=True)
class Limit:
    """A latency bound on a percentile, e.g. p99 <= 100 ms."""

    percentile: float
    ms: float

    @property
    def key(self) -> str:
        """The summary key of the percentile (``p99``, ``p99.9``)."""
        return f"p{self.percentile:g}"

    def __str__(self) -> str:
        return f"{self.key} <= {self.ms:g} ms"


@dataclass(frozen=True)
class SweepPlan:
    mode: str  # "concurrency" (closed-loop users) or "rate" (open-loop streams, req/s)
    steps: tuple[float, ...]
    stream_rate: float | None  # rate mode: requests per second of each open-loop user
    window_s: int
    warmup_s: int
    stable_windows: int
    tolerance: float  # relative: 0.1 = every window within 10% of their mean
    max_windows: int
    slo: Limit | None
    stop_latency: Limit | None
    stop_error_rate: float | None  # a fraction

    def users(self, step: float) -> int:
        """Locust users at a step: the concurrency, or the number of streams that offer the rate."""
        if self.mode == "concurrency":
            return int(step)
        assert self.stream_rate is not None
        return round(step / self.stream_rate)


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("locust-inference sweep (sweepfile.py, make sweep)")
    group.add_argument(
        "--sweep-concurrency", env_var="LOCUST_SWEEP_CONCURRENCY", default=None, help="Steps of users, e.g. 1,2,4,8"
    )
    group.add_argument(
        "--sweep-rate",
        env_var="LOCUST_SWEEP_RATE",
        default=None,
        help="Steps of offered req/s: start:stop:step (e.g. 5:60:5) or a list (10,20,40)",
    )
    group.add_argument(
        "--sweep-window", env_var="LOCUST_SWEEP_WINDOW", default=defaults.SWEEP_WINDOW_S, help="Window (s)"
    )
    group.add_argument(
        "--sweep-warmup", env_var="LOCUST_SWEEP_WARMUP", default=defaults.SWEEP_WARMUP_S, help="Warm-up (s)"
    )
    group.add_argument(
        "--sweep-stable-windows",
        env_var="LOCUST_SWEEP_STABLE_WINDOWS",
        default=defaults.SWEEP_STABLE_WINDOWS,
        help="Windows to agree",
    )
    group.add_argument(
        "--sweep-tolerance",
        env_var="LOCUST_SWEEP_TOLERANCE",
        default=defaults.SWEEP_TOLERANCE,
        help="How closely the windows agree on throughput and p99: a percentage such as 10%% or a fraction such "
        f"as 0.1 (default {defaults.SWEEP_TOLERANCE.replace('%', '%%')})",
    )
    group.add_argument(
        "--sweep-max-windows",
        env_var="LOCUST_SWEEP_MAX_WINDOWS",
        default=defaults.SWEEP_MAX_WINDOWS,
        help="Windows per step at most",
    )
    group.add_argument(
        "--deployment",
        env_var="LOCUST_DEPLOYMENT",
        default=None,
        help="How the server is deployed (batching, threads...), recorded in sweep.json and the report",
    )
    group.add_argument("--slo", env_var="LOCUST_SLO", default=None, help="Latency SLO for goodput, e.g. p99=100ms")
    group.add_argument(
        "--sweep-stop-latency", env_var="LOCUST_SWEEP_STOP_LATENCY", default=None, help="Stop past e.g. p99=500ms"
    )
    group.add_argument(
        "--sweep-stop-errors",
        env_var="LOCUST_SWEEP_STOP_ERRORS",
        default=None,
        help="Stop past an error rate: a percentage such as 5%% or a fraction such as 0.05",
    )


_NUMBER = r"\d+(?:\.\d+)?"


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what}: {shown(text)} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what}: {shown(text)} must be a positive number")
    return value


def parse_steps(text: str, what: str, *, whole: bool) -> tuple[float, ...]:
    """``a,b,c`` or ``start:stop:step`` (stop included): positive and strictly increasing."""
    text = text.strip()
    if not text:
        raise ConfigError(f"{what} is empty: give steps such as 1,2,4,8 or 5:60:5")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ConfigError(f"{what} {shown(text)}: a range is start:stop:step, e.g. 5:60:5")
        start, stop, step = (_number(p, what) for p in parts)
        if stop < start:
            raise ConfigError(f"{what} {shown(text)}: stop is below start")
        span = (stop - start) / step  # inf when a huge range meets a tiny step
        if not span < MAX_STEPS:  # counted before the steps are made: 1:1e9:1 would fill the memory
            raise ConfigError(f"{what} {shown(text)}: more than {MAX_STEPS} steps")
        count = math.floor(span + 1e-9) + 1
        steps = tuple(round(start + i * step, 9) for i in range(count))
    else:
        parts = text.split(",")
        if len(parts) > MAX_STEPS:
            raise ConfigError(f"{what}: {len(parts)} steps, at most {MAX_STEPS}")
        steps = tuple(_number(p.strip(), what) for p in parts)
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ConfigError(f"{what} {shown(text)}: steps must increase")
    if whole and any(s != int(s) for s in steps):
        raise ConfigError(f"{what} {shown(text)}: users are whole numbers")
    low, high, unit = (1, MAX_USERS, " users") if whole else (MIN_RATE, MAX_RATE, " req/s")
    if steps[0] < low or steps[-1] > high:
        raise ConfigError(f"{what} {shown(text)}: steps must be from {plain(low)} to {plain(high)}{unit}")
    return steps


def parse_limit(text: str, what: str) -> Limit:
    """``p99=100ms``, ``p99.9=0.5s``, ``p50=20`` (ms)."""
    m = re.fullmatch(rf"\s*p({_NUMBER})\s*=\s*({_NUMBER})\s*(ms|s)?\s*", text)
    if not m:
        raise ConfigError(f"{what} {shown(text)}: give a percentile and a latency, e.g. p99=100ms")
    percentile, value, unit = float(m.group(1)), float(m.group(2)), m.group(3) or "ms"
    if not 0 < percentile < 100:
        raise ConfigError(f"{what} {shown(text)}: the percentile must be between 0 and 100, e.g. p99")
    ms = value * (1000 if unit == "s" else 1)
    if not 0 < ms <= MAX_LATENCY_MS:  # also inf, from a few hundred digits
        raise ConfigError(f"{what} {shown(text)}: the latency must be positive, at most a day")
    return Limit(percentile, ms)


def parse_fraction(text: str, what: str) -> float:
    """``10%`` or ``0.1``, above 0 and below 1. A bare number of 1 or more is refused, not guessed at: ``10``
    may mean 10% or ten times, and ``1`` 1% or 100%."""
    t = text.strip()
    percent = t.endswith("%")
    try:
        value = float(t.removesuffix("%").strip())
    except ValueError:
        value = math.nan
    if math.isnan(value) or (not percent and value >= 1):
        raise ConfigError(f"{what} takes a fraction such as 0.1 or a percentage such as 10%, not {shown(text)}")
    value = value / 100 if percent else value
    if not 0 < value < 1:  # also inf
        raise ConfigError(f"{what} {shown(text)} must be above 0% and below 100%")
    return value


def _stream_rate(steps: tuple[float, ...], given: float | None) -> float:
    """The rate of each open-loop user: ``--rate``, or the largest rate (in 1/1000 req/s) dividing every step."""
    if given is None:
        thousandths = [Fraction(round(s * 1000)) for s in steps]
        given = float(math.gcd(*(int(t) for t in thousandths))) / 1000
    for s in steps:
        if abs(s / given - round(s / given)) > 1e-6:
            raise ConfigError(f"--sweep-rate step {s:g} is not a multiple of each stream's {given:g} req/s (--rate)")
    if max(steps) / given > MAX_STREAMS:
        raise ConfigError(
            f"--sweep-rate {max(steps):g} req/s needs {max(steps) / given:.0f} streams of {given:g} req/s"
            f" (at most {MAX_STREAMS}): choose steps with a larger common divisor, or a larger --rate"
        )
    return given


def resolve(options: Any) -> SweepPlan:
    """The plan from Locust's parsed options; :class:`ConfigError` (one line) for anything invalid."""
    from locust.runners import WORKER_REPORT_INTERVAL

    concurrency, rate = options.sweep_concurrency, options.sweep_rate
    if (concurrency is None) == (rate is None):
        raise ConfigError("a sweep needs one of --sweep-concurrency (e.g. 1,2,4,8) or --sweep-rate (e.g. 5:60:5)")
    if concurrency is not None:
        mode, steps, stream_rate = "concurrency", parse_steps(concurrency, "--sweep-concurrency", whole=True), None
    else:
        mode, steps = "rate", parse_steps(rate, "--sweep-rate", whole=False)
        given = getattr(options, "rate", None)
        stream_rate = _stream_rate(steps, _number(str(given), "--rate") if given is not None else None)
    window = bounded(options.sweep_window, "--sweep-window", 1, MAX_WINDOW_S, whole=True, unit=" seconds")
    if window < WORKER_REPORT_INTERVAL:
        raise ConfigError(
            f"--sweep-window {window} s is shorter than Locust's worker report interval"
            f" ({WORKER_REPORT_INTERVAL:g} s): a window would hold no report"
        )
    warmup = bounded(options.sweep_warmup, "--sweep-warmup", 0, MAX_WINDOW_S, whole=True, unit=" seconds")
    stable = bounded(options.sweep_stable_windows, "--sweep-stable-windows", 0, MAX_WINDOWS, whole=True)
    if stable < 2:
        raise ConfigError("--sweep-stable-windows must be at least 2: stability is windows agreeing")
    max_windows = bounded(options.sweep_max_windows, "--sweep-max-windows", 0, MAX_WINDOWS, whole=True)
    if max_windows < stable:
        raise ConfigError("--sweep-max-windows must be at least --sweep-stable-windows")
    errors = options.sweep_stop_errors
    return SweepPlan(
        mode=mode,
        steps=steps,
        stream_rate=stream_rate,
        window_s=window,
        warmup_s=warmup,
        stable_windows=stable,
        tolerance=parse_fraction(str(options.sweep_tolerance), "--sweep-tolerance"),
        max_windows=max_windows,
        slo=parse_limit(options.slo, "--slo") if options.slo else None,
        stop_latency=parse_limit(options.sweep_stop_latency, "--sweep-stop-latency")
        if options.sweep_stop_latency
        else None,
        stop_error_rate=parse_fraction(errors, "--sweep-stop-errors") if errors else None,
    )
