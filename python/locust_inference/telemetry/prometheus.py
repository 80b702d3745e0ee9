"""One scrape of Triton's Prometheus metrics endpoint: the body read within a size limit, the lines of the
metrics this package uses kept, those parsed by ``prometheus_client``'s text parser, within a sample limit.

The body is untrusted: over :data:`MAX_BODY_BYTES` the read fails (the native request stops reading), lines
of other metrics are dropped before parsing (a server's full page costs nothing to skip), a line over
:data:`MAX_LINE` characters or more than :data:`MAX_SAMPLES` kept samples refuse the scrape, and values
that are not finite are dropped. Every failure is a :class:`MetricsError` with a one-line reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["MAX_BODY_BYTES", "MetricsError", "Sample", "Scrape", "parse", "wanted"]

MAX_BODY_BYTES = 4 * 2**20  # Triton's page is tens of kB for a few models
MAX_LINE = 4096  # Triton's lines are a few hundred characters
MAX_SAMPLES = 20_000  # kept samples (the metrics below, per model, version, GPU ...)

# Triton's metric names (docs/user_guide/metrics.md in triton-inference-server/server).
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)
# Summaries (Triton's --metrics-config summary_latencies=true): their _sum and _count give window means.
SUMMARIES = (
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
)
GAUGES = (
    "nv_inference_pending_request_count",
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
)
_KEPT_SAMPLES = frozenset([*COUNTERS, *GAUGES, *(f"{s}_sum" for s in SUMMARIES), *(f"{s}_count" for s in SUMMARIES)])
_KEPT_FAMILIES = frozenset([*COUNTERS, *GAUGES, *SUMMARIES])


class MetricsError(ValueError):
    """A scrape that cannot be used; the message says why in one line."""


Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str) -> str | None:
        return next((v for k, v in self.labels if k == key), None)


@dataclass(frozen=True)
class Scrape:
    """The kept samples of one read, and when it was taken (``time.time()`` and ``time.monotonic()``)."""

    wall: float
    monotonic: float
    samples: tuple[Sample, ...]


def wanted(line: str) -> bool:
    """Whether ``line`` belongs to a metric this package uses (a sample, or its ``# TYPE`` / ``# HELP``)."""
    if line.startswith("#"):
        parts = line.split(None, 3)
        return len(parts) >= 3 and parts[1] in ("TYPE", "HELP") and parts[2] in _KEPT_FAMILIES
    end = len(line)
    for stop in ("{", " ", "\t"):
        at = line.find(stop, 0, end)
        if at >= 0:
            end = at
    return line[:end] in _KEPT_SAMPLES


def parse(body: bytes, wall: float, monotonic: float) -> Scrape:
    """The kept samples of a metrics page; raises :class:`MetricsError`."""
    if len(body) > MAX_BODY_BYTES:
        raise MetricsError(f"the page is {len(body)} bytes, over the {MAX_BODY_BYTES} kept")
    text = body.decode("utf-8", errors="replace")
    kept: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE:
            raise MetricsError(f"line {number} is {len(line)} characters long, over {MAX_LINE}")
        if wanted(line.strip()):
            kept.append(line.strip())
    if len(kept) > MAX_SAMPLES * 2:  # each sample with at most its HELP and TYPE lines, in practice far fewer
        raise MetricsError(f"more than {MAX_SAMPLES} samples of the metrics used")
    samples: list[Sample] = []
    try:
        for family in text_string_to_metric_families("\n".join(kept) + "\n"):
            for s in family.samples:
                # the parser names a counter's samples <family>_total, as OpenMetrics does; Triton's have no suffix
                name = family.name if family.type == "counter" and s.name == f"{family.name}_total" else s.name
                if name not in _KEPT_SAMPLES or not math.isfinite(s.value):
                    continue
                if len(samples) >= MAX_SAMPLES:
                    raise MetricsError(f"more than {MAX_SAMPLES} samples of the metrics used")
                samples.append(Sample(name, tuple(sorted(s.labels.items())), float(s.value)))
    except MetricsError:
        raise
    except (ValueError, TypeError, IndexError, KeyError) as err:  # the parser's ways of refusing a page
        raise MetricsError(f"not the Prometheus text format ({str(err)[:80]})") from None
    if not samples:
        raise MetricsError("none of Triton's metrics (nv_inference_*, nv_gpu_*, nv_cpu_*) on the page")
    return Scrape(wall, monotonic, tuple(samples))
