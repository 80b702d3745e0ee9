"""Two scrapes into one window of server metrics, and windows into a step's or a run's figures: no I/O.

Counters become per-window counts and rates, duration counters (µs, summed over requests) per-request means
in ms over the window, summaries (``_sum`` / ``_count``) per-window means; gauges are read at the window's
end. A counter that went down (the server restarted) gives the window no counts for that model, said in
``reset``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from locust_inference.telemetry.prometheus import Sample, Scrape

__all__ = ["PHASES", "Window", "summarize", "window"]

Window = dict[str, Any]  # one entry of latency.json's server_metrics.windows (see results_schema)

MAX_MODELS = 32  # models kept per window: a server with hundreds would make latency.json grow without use
MAX_GPUS = 16
# (name in the window, Triton's duration counter, Triton's summary)
PHASES = (
    ("request_ms", "nv_inference_request_duration_us", "nv_inference_request_summary_us"),
    ("queue_ms", "nv_inference_queue_duration_us", "nv_inference_queue_summary_us"),
    ("compute_input_ms", "nv_inference_compute_input_duration_us", "nv_inference_compute_input_summary_us"),
    ("compute_infer_ms", "nv_inference_compute_infer_duration_us", "nv_inference_compute_infer_summary_us"),
    ("compute_output_ms", "nv_inference_compute_output_duration_us", "nv_inference_compute_output_summary_us"),
)
COUNTS = (
    ("success", "nv_inference_request_success"),
    ("failure", "nv_inference_request_failure"),
    ("inference_count", "nv_inference_count"),
    ("execution_count", "nv_inference_exec_count"),
)
GPU_GAUGES = (
    ("utilization_pct", "nv_gpu_utilization", 100.0),
    ("memory_used_bytes", "nv_gpu_memory_used_bytes", 1.0),
    ("memory_total_bytes", "nv_gpu_memory_total_bytes", 1.0),
    ("power_w", "nv_gpu_power_usage", 1.0),
    ("power_limit_w", "nv_gpu_power_limit", 1.0),
)
CPU_GAUGES = (
    ("utilization_pct", "nv_cpu_utilization", 100.0),
    ("memory_used_bytes", "nv_cpu_memory_used_bytes", 1.0),
    ("memory_total_bytes", "nv_cpu_memory_total_bytes", 1.0),
)


def _by_model(samples: Iterable[Sample]) -> dict[str, dict[str, float]]:
    """Each model's values by sample name, summed over versions and failure reasons."""
    models: dict[str, dict[str, float]] = {}
    for s in samples:
        model = s.label("model")
        if model is None:
            continue
        values = models.setdefault(model, {})
        values[s.name] = values.get(s.name, 0.0) + s.value
    return models


def _model_window(a: dict[str, float], b: dict[str, float], seconds: float) -> dict[str, Any]:
    def delta(name: str) -> float | None:
        return b[name] - a[name] if name in a and name in b else None

    deltas = {key: delta(name) for key, name in COUNTS}
    if any(d is not None and d < 0 for d in deltas.values()):
        return {"reset": True, "pending": b.get("nv_inference_pending_request_count")}
    counts = {key: None if d is None else round(d) for key, d in deltas.items()}
    entry: dict[str, Any] = {**counts}
    for key, _ in COUNTS:
        n = counts[key]
        entry[f"{key.removesuffix('_count')}_per_s"] = None if n is None or seconds <= 0 else n / seconds
    successes = counts["success"]
    for key, counter, summary in PHASES:
        total = delta(counter)
        if total is not None:
            entry[key] = total / successes / 1000.0 if successes and total >= 0 else None
            continue
        s_sum, s_count = delta(f"{summary}_sum"), delta(f"{summary}_count")
        entry[key] = s_sum / s_count / 1000.0 if s_sum is not None and s_count and s_sum >= 0 and s_count > 0 else None
    inferences, executions = counts["inference_count"], counts["execution_count"]
    entry["avg_batch_size"] = inferences / executions if inferences is not None and executions else None
    entry["pending"] = b.get("nv_inference_pending_request_count")
    return entry


def _gauges(samples: Iterable[Sample], table: Sequence[tuple[str, str, float]]) -> dict[str, float]:
    by_name = {name: (key, scale) for key, name, scale in table}
    values: dict[str, float] = {}
    for s in samples:
        if s.name in by_name:
            key, scale = by_name[s.name]
            values[key] = s.value * scale
    return values


def window(a: Scrape, b: Scrape, first_models: Sequence[str] = ()) -> Window:
    """The window from scrape ``a`` to scrape ``b``; ``first_models`` are kept before others when a server
    reports more than :data:`MAX_MODELS`."""
    seconds = b.monotonic - a.monotonic
    before, after = _by_model(a.samples), _by_model(b.samples)
    names = sorted(after, key=lambda m: (m not in first_models, m))[:MAX_MODELS]
    gpus: dict[str, dict[str, float]] = {}
    for s in b.samples:
        if s.name.startswith("nv_gpu_"):
            gpu = s.label("gpu_uuid") or s.label("gpu") or "gpu"
            if gpu in gpus or len(gpus) < MAX_GPUS:
                gpus.setdefault(gpu, {}).update(_gauges([s], GPU_GAUGES))
    cpu = _gauges((s for s in b.samples if s.name.startswith("nv_cpu_")), CPU_GAUGES)
    return {
        "t": round(b.wall, 3),
        "duration_s": round(seconds, 6),
        "models": {m: _model_window(before.get(m, {}), after[m], seconds) for m in names},
        "gpus": gpus,
        "cpu": cpu or None,
    }


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _peak(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return max(kept) if kept else None


def summarize(windows: Sequence[Window], start: float | None = None, end: float | None = None) -> dict[str, Any]:
    """The windows that end in (``start``, ``end``] (unix seconds; all when None) as one set of figures, as
    ``perf_analyzer --collect-metrics`` reports a step: the mean GPU utilisation and power (over windows and
    GPUs), the peak GPU memory, the same for the CPU, and each model's counts over them."""
    chosen = [w for w in windows if (start is None or w["t"] > start) and (end is None or w["t"] <= end)]
    gpu_values = [g for w in chosen for g in (w.get("gpus") or {}).values()]
    cpu_values = [w["cpu"] for w in chosen if w.get("cpu")]
    process = [w["server_process"] for w in chosen if w.get("server_process")]
    seconds = sum(w["duration_s"] for w in chosen)
    models: dict[str, dict[str, Any]] = {}
    for w in chosen:
        for name, m in (w.get("models") or {}).items():
            total = models.setdefault(name, {key: 0 for key, _ in COUNTS})
            for key, _ in COUNTS:
                if isinstance(m.get(key), int) and total[key] is not None:
                    total[key] += m[key]
            if m.get("reset"):
                total["reset"] = True
    for total in models.values():
        total["success_per_s"] = total["success"] / seconds if seconds > 0 else None
    return {
        "windows": len(chosen),
        "seconds": seconds,
        "gpu_utilization_pct": _mean(g.get("utilization_pct") for g in gpu_values),
        "gpu_power_w": _mean(g.get("power_w") for g in gpu_values),
        "gpu_memory_used_peak_bytes": _peak(g.get("memory_used_bytes") for g in gpu_values),
        "cpu_utilization_pct": _mean(c.get("utilization_pct") for c in cpu_values),
        "cpu_memory_used_peak_bytes": _peak(c.get("memory_used_bytes") for c in cpu_values),
        "server_process_cpu_pct": _mean(p.get("cpu_pct") for p in process),
        "server_process_rss_peak_bytes": _peak(p.get("rss_bytes") for p in process),
        "models": models,
    }
