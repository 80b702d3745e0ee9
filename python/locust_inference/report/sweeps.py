"""Loading a load sweep: ``sweep.json``, written by ``make sweep`` beside a server's ``latency.json``.

A sweep is steps of concurrency (closed-loop users) or of offered request rate (open-loop streams), each
measured until stable; per step the achieved rate, latency percentiles, failures, drops, the number of
windows, whether it was stable and (Triton) the server's own breakdown; then the goodput at a latency SLO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust_inference.results_schema import read_versioned_json

SWEEP_FILE = "sweep.json"
SUPPORTED_VERSION = 1
MODES = ("concurrency", "rate")


class SweepError(ValueError):
    """A ``sweep.json`` that cannot be read; the message names the file and says why (one line)."""


@dataclass(frozen=True)
class SweepStep:
    """One step of a sweep: its load, what it achieved, its latencies (ms) and, for Triton, the server's view."""

    step: int
    load: float  # users (concurrency) or offered requests/s (rate)
    users: int | None
    offered_per_s: float | None  # None in concurrency steps
    achieved_per_s: float
    requests: int | None
    failures: int | None
    dropped: int | None  # None in concurrency steps
    latency_ms: dict[str, float]
    windows: int | None
    stable: bool
    server: dict[str, float] | None  # Triton's breakdown of this step alone; None for LitServe
    metrics: dict[str, float] | None = None  # the server's metrics and the load generator's CPU (docs/metrics.md)
    # several models: each model's part of the step, by request name (its load, windows and stability the step's)
    models: dict[str, SweepStep] | None = None


@dataclass(frozen=True)
class Goodput:
    """The highest throughput within the SLO; ``rate_per_s`` is ``None`` when no step met it."""

    slo: str
    percentile: str
    slo_ms: float
    rate_per_s: float | None
    how: str

    @property
    def interpolated(self) -> bool:
        return self.how.startswith("interpolated")


@dataclass(frozen=True)
class SweepPlan:
    """The settings the sweep ran with, as ``sweep.json`` records them (enough to run it again)."""

    steps: list[float]
    stream_rate: float | None
    window_s: float | None
    warmup_s: float | None
    stable_windows: int | None
    tolerance: float | None
    max_windows: int | None
    slo: str | None
    stop_latency: str | None
    stop_error_rate: float | None


@dataclass(frozen=True)
class Sweep:
    file: Path  # as the report names it
    server: str
    model: str
    mode: str  # "concurrency" or "rate"
    plan: SweepPlan
    steps: list[SweepStep]
    stopped: str | None
    goodput: Goodput | None
    deployment: str | None = None  # how the server was deployed, as the sweep was told
    model_goodput: dict[str, Goodput] | None = None  # several models: each one's goodput, by request name

    @property
    def has_server_stats(self) -> bool:
        return any(s.server is not None for s in self.steps)

    @property
    def model_names(self) -> list[str]:
        """Several models: their request names, in the order of the steps' rows; none with one model."""
        names: dict[str, None] = {}
        for s in self.steps:
            names.update(dict.fromkeys(s.models or {}))
        return list(names)

    def model_steps(self, name: str) -> list[SweepStep]:
        """One model's part of each step that has it."""
        return [s.models[name] for s in self.steps if s.models and name in s.models]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): n for k, v in value.items() if (n := _number(v)) is not None}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _step(raw: Any, i: int, where: Path) -> SweepStep:
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: steps[{i}] is not an object")
    achieved = _number(raw.get("achieved_per_s"))
    load = _number(raw.get("load"))
    latency = _numbers(raw.get("latency_ms"))
    for name, value in (("achieved_per_s", achieved), ("load", load), ("latency_ms", latency or None)):
        if value is None:
            raise SweepError(f"{where}: steps[{i}] has no {name}")
    stable = raw.get("stable")
    if not isinstance(stable, bool):
        raise SweepError(f"{where}: steps[{i}] does not say whether it was stable")
    assert achieved is not None and load is not None
    server = raw.get("server")
    models = raw.get("models")
    if models is not None and not isinstance(models, dict):
        raise SweepError(f"{where}: steps[{i}].models is not an object")
    shared = {k: raw.get(k) for k in ("step", "load", "windows", "stable")}
    return SweepStep(
        step=_count(raw.get("step")) or i + 1,
        load=load,
        users=_count(raw.get("users")),
        offered_per_s=_number(raw.get("offered_rate_per_s")),
        achieved_per_s=achieved,
        requests=_count(raw.get("requests")),
        failures=_count(raw.get("failures")),
        dropped=_count(raw.get("dropped")),
        latency_ms=latency,
        windows=_count(raw.get("windows")),
        stable=stable,
        server=_numbers(server) if isinstance(server, dict) else None,
        metrics=_numbers(metrics) if isinstance(metrics := raw.get("server_metrics"), dict) else None,
        models={
            str(name): _step({**row, **shared} if isinstance(row, dict) else row, i, where)
            for name, row in models.items()
        }
        if models
        else None,
    )


def _plan(raw: Any) -> SweepPlan:
    plan = raw if isinstance(raw, dict) else {}
    steps = plan.get("steps")
    return SweepPlan(
        steps=[n for v in steps if (n := _number(v)) is not None] if isinstance(steps, list) else [],
        stream_rate=_number(plan.get("stream_rate")),
        window_s=_number(plan.get("window_s")),
        warmup_s=_number(plan.get("warmup_s")),
        stable_windows=_count(plan.get("stable_windows")),
        tolerance=_number(plan.get("tolerance")),
        max_windows=_count(plan.get("max_windows")),
        slo=_text(plan.get("slo")),
        stop_latency=_text(plan.get("stop_latency")),
        stop_error_rate=_number(plan.get("stop_error_rate")),
    )


def _goodput(raw: Any, where: Path) -> Goodput | None:
    if raw is None:
        return None
    slo_ms = _number(raw.get("slo_ms")) if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or slo_ms is None:
        raise SweepError(f"{where}: goodput is not an object with slo_ms")
    return Goodput(
        slo=_text(raw.get("slo")) or f"{raw.get('percentile')} <= {slo_ms:g} ms",
        percentile=str(raw.get("percentile") or ""),
        slo_ms=slo_ms,
        rate_per_s=_number(raw.get("rate_per_s")),
        how=str(raw.get("how") or ""),
    )


def load_sweep(folder: Path, shown: Path) -> Sweep | None:
    """``folder/sweep.json``, or ``None`` when there is none; raises :class:`SweepError` when it is malformed.
    ``shown`` is how the report names the folder."""
    path = folder / SWEEP_FILE
    if not path.is_file():
        return None
    data = read_versioned_json(path, SUPPORTED_VERSION, "run the sweep again", SweepError)
    mode = data.get("mode")
    if mode not in MODES:
        raise SweepError(f"{path} has mode {mode!r}; a sweep's mode is concurrency or rate")
    steps = data.get("steps")
    if not isinstance(steps, list):
        raise SweepError(f"{path} has no steps list")
    server = _text(data.get("server"))
    if server is None:
        raise SweepError(f'{path} does not say which server it measured ("server" is missing)')
    stopped = data.get("stopped")
    return Sweep(
        file=shown / SWEEP_FILE,
        server=server,
        model=str(data.get("model") or ""),
        mode=mode,
        plan=_plan(data.get("plan")),
        steps=[_step(raw, i, path) for i, raw in enumerate(steps)],
        stopped=stopped if isinstance(stopped, str) and stopped else None,
        goodput=_goodput(data.get("goodput"), path),
        deployment=data["deployment"] if isinstance(data.get("deployment"), str) else None,
        model_goodput=_model_goodput(data.get("model_goodput"), path),
    )


def _model_goodput(raw: Any, where: Path) -> dict[str, Goodput] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: model_goodput is not an object")
    return {str(name): good for name, value in raw.items() if (good := _goodput(value, where)) is not None}
