"""Triton's server-side statistics (the KServe statistics extension), read at test start and end and
reported as a difference, the way perf_analyzer does: counts, average batch size, and the average
queue / compute-input / compute-infer / compute-output time per inference.

An ensemble (``platform: "ensemble"``) has an entry of its own, and each of its composing models, named by
the steps of its configuration's ``ensemble_scheduling``, its own entry as any model: each read takes the
configuration (once per run: :class:`EnsembleSteps`) and then every composing model's entry, and the
difference gets a ``composing`` map with each one's breakdown. A composing model whose entry is missing or
malformed is ``None`` there, with one warning line (once per process and reason); the run goes on.

For a decoupled model whose backend reports them, Triton's per-response statistics (``response_stats``) too:
the responses it counted and the time per response."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import gevent

from locust_inference._native import LocustInferenceError, grpc_model_config, grpc_model_statistics, http_request
from locust_inference.options import Settings

__all__ = [
    "EnsembleSteps",
    "ModelsRead",
    "ServerStats",
    "StatsRead",
    "breakdown",
    "ensemble_steps",
    "read_models",
    "read_stats",
]

log = logging.getLogger("locust_inference")
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
MAX_COMPOSING = 64  # composing models read per ensemble: a configuration naming more is not believed
MAX_NAME = 512  # characters of a composing model's name
MAX_SHOWN = 8  # models named in the warning on those whose statistics were not read
# Seconds one read may take in all: the model's entry, an ensemble's configuration and every composing model's.
# The reads at the end run as the process quits (a Ctrl-C too): a server that accepts and never answers would
# otherwise hold the quit for a timeout per request, up to MAX_COMPOSING + 2 of them (over 10 minutes).
READ_BUDGET_S = 10.0
_OVER_BUDGET = f"the statistics took over {READ_BUDGET_S:g} s (a slow or silent server)"
_warned: set[str] = set()  # warnings given: each once per process (the statistics are read again and again)
# the phases of Triton's per-response statistics (its InferResponseStatistics), each summed over the responses'
# indexes; the count of success is the responses Triton sent with data, empty_response the final flags sent alone
RESPONSE_PHASES = ("compute_infer", "compute_output", "success", "fail", "empty_response", "cancel")


@dataclass(frozen=True)
class ServerStats:
    """Cumulative counters of one model, as Triton reports them; for an ensemble, ``composing`` holds each
    composing model's (None where its entry was missing or malformed); None for any other model."""

    inference_count: int
    execution_count: int
    success_count: int
    ns: dict[str, int]
    success_ns: int = 0  # the successful requests' time in the server, arrival to response
    composing: dict[str, ServerStats | None] | None = None
    # RESPONSE_PHASES' counts and ns summed over the response indexes; empty when Triton reports none (a
    # model that is not decoupled, or a backend that does not report them, as the Python backend of Triton 2.51)
    response_counts: dict[str, int] = field(default_factory=dict)
    response_ns: dict[str, int] = field(default_factory=dict)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("locust-inference: %s", message)


class EnsembleSteps:
    """The composing models of each model read so far, by (host, model, protocol): an ensemble's steps do not
    change while it is served, and the statistics are read again and again (the web UI's tab every 2 s, a
    sweep at every window edge), so its configuration is read once, not with every read. Only what a read
    that succeeded gave is kept: after a failure (a timeout, a restarting server) the next read tries again.
    One per run (its collector's), never shared between runs: a run's cache holds only its own server's."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str, str], list[tuple[str, str]] | None] = {}

    def of(self, settings: Settings, timeout: float) -> list[tuple[str, str]] | None:
        """``settings.model``'s composing models (see :func:`ensemble_steps`); None when it is no ensemble or
        its configuration cannot be read in ``timeout`` seconds. Two reads at once may both read the
        configuration: it is the same."""
        key = (settings.host, settings.model, settings.protocol)
        if key in self._known:
            return self._known[key]
        config = _read_config(settings, timeout)
        if config is _UNREAD:
            return None
        steps = self._known[key] = ensemble_steps(settings.model, config)
        return steps


def read_stats(settings: Settings, ensembles: EnsembleSteps, deadline: float | None = None) -> ServerStats | None:
    """GET /v2/models/{model}/stats (over gRPC: ModelStatistics); None when the server does not offer it (e.g.
    LitServe). For an ensemble, with its composing models' statistics (its steps found by ``ensembles``).
    Takes at most READ_BUDGET_S in all, or until ``deadline`` (time.monotonic()) when given: what is not read
    by then (the configuration, composing models) is missing, with one warning line."""
    if settings.server != "triton" or settings.models:  # several models: read_models
        return None
    if deadline is None:
        deadline = time.monotonic() + READ_BUDGET_S
    left = _left(deadline)
    own = _read_one(settings, settings.model, "", left) if left is not None else None
    if own is None:
        return None
    left = _left(deadline)
    if left is None:
        _warn_once(f"{settings.model!r}: its configuration was not read: {_OVER_BUDGET}")
        return own
    steps = ensembles.of(settings, left)
    if steps is None:
        return own
    composing: dict[str, ServerStats | None] = dict.fromkeys((name for name, _ in steps), None)
    for name, version in steps:
        left = _left(deadline)
        if left is None:  # this one and the rest stay None
            _warn_once(f"ensemble {settings.model!r}: composing models' statistics not read: {_OVER_BUDGET}")
            break
        stats = _read_one(settings, name, version, left)
        if stats is None:
            _warn_once(f"no statistics for {name!r}, a composing model of ensemble {settings.model!r}")
        composing[name] = stats
    return dataclasses.replace(own, composing=composing)


def read_models(models: Sequence[Settings], ensembles: EnsembleSteps) -> dict[str, ServerStats | None]:
    """Each model's statistics by request name (several models, or a scenario's entries), one model after
    another, in READ_BUDGET_S for them all: the read at quit must not take a budget per model (up to 64 of them,
    over 10 minutes with a silent server). A model not read by then is None, and one warning line names them."""
    deadline = time.monotonic() + READ_BUDGET_S
    read: dict[str, ServerStats | None] = {}
    missed: list[str] = []  # Triton's models whose read the budget cut short or left out
    for model in models:
        read[model.name] = read_stats(model, ensembles, deadline) if _left(deadline) is not None else None
        if read[model.name] is None and model.server == "triton" and _left(deadline) is None:
            missed.append(model.name)
    if missed:
        shown = ", ".join(repr(name[:MAX_NAME]) for name in missed[:MAX_SHOWN])
        more = f" and {len(missed) - MAX_SHOWN} more" if len(missed) > MAX_SHOWN else ""
        _warn_once(f"statistics of {shown}{more} not read: {_OVER_BUDGET}")
    return read


def _left(deadline: float) -> float | None:
    """The seconds left before ``deadline`` for one more request; None when too few are left for one."""
    left = deadline - time.monotonic()
    return left if left >= 0.01 else None


class _CallOptions(TypedDict):
    """The keywords every native read here takes: the run's headers and TLS choices, and the read's timeout."""

    headers: list[tuple[str, str]]
    timeout: float
    insecure: bool
    ca_file: Path | None


def _call_options(settings: Settings, timeout: float) -> _CallOptions:
    return {
        "headers": list(settings.headers),
        "timeout": timeout,
        "insecure": settings.insecure,
        "ca_file": settings.ca_file,
    }


def _read_one(settings: Settings, model: str, version: str, timeout: float) -> ServerStats | None:
    """One model's entry of the statistics, None when it cannot be read in ``timeout`` seconds or is malformed."""
    if settings.protocol == "grpc":
        return _read_grpc_stats(settings, model, version, timeout)
    path = urllib.parse.quote(model, safe="") + (f"/versions/{urllib.parse.quote(version, safe='')}" if version else "")
    try:
        status, body = http_request(
            "GET", f"{settings.host}/v2/models/{path}/stats", **_call_options(settings, timeout)
        )
        if status != 200:
            return None
        return _stats(json.loads(body)["model_stats"][0], model)
    except (LocustInferenceError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _read_grpc_stats(settings: Settings, model: str, version: str, timeout: float) -> ServerStats | None:
    """The same statistics from Triton's gRPC ModelStatistics, which the native call gives in the HTTP shape."""
    try:
        code, _, stats = grpc_model_statistics(
            settings.host, model, version=version, **_call_options(settings, timeout)
        )
        return _stats(stats, model) if code == 0 and stats is not None else None
    except (LocustInferenceError, ValueError, KeyError, TypeError, AttributeError):
        return None


_UNREAD = object()  # _read_config's answer when the read failed, unlike a configuration that reads as null


def _read_config(settings: Settings, timeout: float) -> Any:
    """The model's configuration (GET /v2/models/{model}/config, over gRPC ModelConfig), _UNREAD when it cannot
    be read in ``timeout`` seconds: a server without it reports no composing models, as for any model that is
    not an ensemble."""
    try:
        if settings.protocol == "grpc":
            code, _, config = grpc_model_config(settings.host, settings.model, **_call_options(settings, timeout))
            return config if code == 0 else _UNREAD
        model = urllib.parse.quote(settings.model, safe="")
        status, body = http_request(
            "GET", f"{settings.host}/v2/models/{model}/config", **_call_options(settings, timeout)
        )
        return json.loads(body) if status == 200 else _UNREAD
    except (LocustInferenceError, ValueError):
        return _UNREAD


def ensemble_steps(model: str, config: Any) -> list[tuple[str, str]] | None:
    """The composing models an ensemble's configuration names, in step order, once each: (name, version, ""
    for the latest); None when ``config`` is not an ensemble's (no ``ensemble_scheduling``). Steps that are
    not a model's name (and version), printable and at most MAX_NAME characters, are left out with a warning."""
    if not isinstance(config, dict):
        return None
    scheduling = config.get("ensemble_scheduling")
    if scheduling is None and config.get("platform") != "ensemble":
        return None
    steps = scheduling.get("step") if isinstance(scheduling, dict) else None
    if not isinstance(steps, list):
        _warn_once(f"ensemble {model!r}: its configuration lists no steps (ensemble_scheduling.step)")
        return []
    if len(steps) > MAX_COMPOSING:
        _warn_once(f"ensemble {model!r}: {len(steps)} steps, more than {MAX_COMPOSING}: composing models not read")
        return []
    out: list[tuple[str, str]] = []
    for i, step in enumerate(steps):
        name = step.get("model_name") if isinstance(step, dict) else None
        version = _version(step.get("model_version", -1)) if isinstance(step, dict) else None
        # printable: the name goes into the summary printed on a terminal
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not name.isprintable() or version is None:
            _warn_once(f"ensemble {model!r}: step {i} names no model (and version) of its own: {str(step)[:80]!r}")
            continue
        if all(name != seen for seen, _ in out):  # a model in two steps: one entry, its statistics count both
            out.append((name, version))
    return out


def _version(value: Any) -> str | None:
    """A step's model_version (-1: the latest, ""), a number or, as protobuf's JSON writes an int64, a string."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    if number == -1:
        return ""
    return str(number) if 0 <= number < 2**63 else None


def _stats(stats: dict[str, Any], model: str) -> ServerStats:
    """One model's entry of the statistics (``model_stats[0]``); ValueError when it is another model's."""
    if stats.get("name", model) != model:
        raise ValueError(f"the statistics of {model!r} are {str(stats.get('name'))[:80]!r}'s")
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
        success_ns=int(inference["success"]["ns"]),
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

    def __init__(self, settings: Settings, ensembles: EnsembleSteps) -> None:
        reads = settings.server == "triton" and not settings.models
        self._result = gevent.get_hub().threadpool.spawn(read_stats, settings, ensembles) if reads else None

    def get(self) -> ServerStats | None:
        return None if self._result is None else self._result.get()

    def ready(self) -> bool:
        """Whether the read has ended (with statistics or without)."""
        return self._result is None or self._result.ready()


class ModelsRead:
    """:func:`read_models` running in gevent's threadpool, started at once: each model's statistics (several
    models, or a scenario's entries) in one budget for them all, as at quit. A read per model, each with its
    own budget, made the start wait that budget once per thread of the pool (64 silent models: over a minute)."""

    def __init__(self, models: Sequence[Settings], ensembles: EnsembleSteps) -> None:
        self.names = frozenset(m.name for m in models)
        self._result = gevent.get_hub().threadpool.spawn(read_models, models, ensembles) if models else None

    def get(self) -> dict[str, ServerStats | None]:
        return {} if self._result is None else self._result.get()

    def ready(self) -> bool:
        """Whether the read has ended (with statistics or without)."""
        return self._result is None or self._result.ready()


def breakdown(
    start: ServerStats | None, end: ServerStats | None, client_mean_ms: float | None
) -> dict[str, Any] | None:
    """The difference between two snapshots, per inference, in ms; None without both snapshots. For an
    ensemble, ``composing`` maps each composing model to its own (no client keys: the client sees only the
    ensemble), None where it was not read at both ends or served nothing in between."""
    phases = _phases(start, end)
    if phases is None or start is None or end is None:
        return None
    server_total = phases["server_total_ms"]
    result: dict[str, Any] = {
        **phases,
        "client_mean_ms": client_mean_ms,
        "client_minus_server_ms": client_mean_ms - server_total if client_mean_ms is not None else None,
    }
    if end.composing is not None:
        before = start.composing or {}
        result["composing"] = {name: _phases(before.get(name), stats) for name, stats in end.composing.items()}
    return result


def _phases(start: ServerStats | None, end: ServerStats | None) -> dict[str, Any] | None:
    """Counts and the mean of each phase per successful inference between two snapshots of one model."""
    if start is None or end is None:
        return None
    inferences = end.inference_count - start.inference_count
    executions = end.execution_count - start.execution_count
    successes = end.success_count - start.success_count
    if inferences <= 0 or successes <= 0:
        return None
    per_phase = {f"{phase}_ms": (end.ns[phase] - start.ns[phase]) / successes / 1e6 for phase in PHASES}
    result: dict[str, Any] = {
        "inference_count": inferences,
        "execution_count": executions,
        "avg_batch_size": inferences / executions if executions else None,
        **per_phase,
        "server_total_ms": sum(per_phase.values()),
        "request_ms": (end.success_ns - start.success_ns) / successes / 1e6,
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
