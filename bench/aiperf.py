"""NVIDIA AIPerf (PyPI ``aiperf``) as a benchmark client of the generative rows (:mod:`bench.llm`).

AIPerf is installed by :func:`ensure` into its own virtual environment, :data:`VENV` (about 1.2 GB, a minute
or two the first time, reused afterwards): its dependencies must not touch the project's. It is run offline:
``--tokenizer builtin`` would download an encoding, so it is handed the local tokenizer folder the bench makes
(a ``tokenizer.json`` with a ``tokenizer_config.json`` naming ``PreTrainedTokenizerFast``), with the Hugging
Face offline variables unset (set, they make AIPerf refuse a plain folder as a repo id).

:func:`parse` reads its ``profile_export_aiperf.json``: hostile input like any file, size checked before it
is read, every value checked for type and range.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_EXPORT_BYTES", "VENV", "VERSION", "Export", "Unavailable", "ensure", "parse"]

VERSION = "0.13.0"
VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "locust-inference" / f"aiperf-{VERSION}"
MAX_EXPORT_BYTES = 64 << 20  # the export of a bench run is tens of kB; a file past this is not AIPerf's
INSTALL_TIMEOUT_S = 1200


class Unavailable(RuntimeError):
    """AIPerf cannot be installed or run here; the message is one line saying why."""


def binary() -> Path:
    return VENV / "bin" / "aiperf"


def ensure() -> Path:
    """The ``aiperf`` command, installed into :data:`VENV` with pip when it is not there yet."""
    if binary().exists():
        return binary()
    python = VENV / "bin" / "python"
    log = VENV.with_name(VENV.name + "-install.log")
    VENV.parent.mkdir(parents=True, exist_ok=True)
    print(f"==> installing AIPerf {VERSION} into {VENV} (its own environment, ~1.2 GB, a minute or two)", flush=True)
    for cmd in (
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--progress-bar", "off", f"aiperf=={VERSION}"],
    ):
        try:
            with log.open("a") as out:
                done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"installing AIPerf failed: {exc}") from None
        if done.returncode != 0:
            tail = (log.read_text(errors="replace").strip().splitlines() or ["?"])[-1][:200]
            raise Unavailable(f"installing AIPerf failed ({tail}); log: {log}")
    if not binary().exists():
        raise Unavailable(f"pip installed aiperf=={VERSION} but {binary()} is missing; log: {log}")
    return binary()


@dataclass(frozen=True)
class Export:
    """What the bench takes from AIPerf's export: milliseconds and tokens per second."""

    ttft_p50_ms: float
    itl_p50_ms: float
    output_token_throughput: float  # output tokens per second over the run
    requests: int
    output_tokens_p50: float | None
    input_tokens_p50: float | None


def _metric(data: dict[str, Any], name: str, stat: str, unit: str | None, required: bool = True) -> float | None:
    """``data[name][stat]`` checked: a finite number >= 0, in ``unit`` when the export names one."""
    entry = data.get(name)
    if entry is None and not required:
        return None
    if not isinstance(entry, dict):
        raise ValueError(f"profile_export_aiperf.json has no {name!r} object")
    if unit is not None and entry.get("unit") not in (None, unit):
        raise ValueError(f"profile_export_aiperf.json: {name} is in {str(entry.get('unit'))[:20]!r}, not {unit}")
    value = entry.get(stat)
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"profile_export_aiperf.json: {name}.{stat} is not a number >= 0")
    return float(value)


def parse(path: Path) -> Export:
    """AIPerf's ``profile_export_aiperf.json``; ValueError (one line) when it is too large, not JSON, or
    lacks a metric or has one that is not a number >= 0 (or in another unit than expected)."""
    size = path.stat().st_size
    if size > MAX_EXPORT_BYTES:
        raise ValueError(f"profile_export_aiperf.json is {size:,} bytes, more than {MAX_EXPORT_BYTES:,}")
    with path.open("rb") as file:
        raw = file.read(MAX_EXPORT_BYTES + 1)
    if len(raw) > MAX_EXPORT_BYTES:
        raise ValueError("profile_export_aiperf.json grew past its limit while it was read")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("profile_export_aiperf.json is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("profile_export_aiperf.json is not a JSON object")
    ttft = _metric(data, "time_to_first_token", "p50", "ms")
    itl = _metric(data, "inter_token_latency", "p50", "ms")
    throughput = _metric(data, "output_token_throughput", "avg", "tokens/sec")
    count = _metric(data, "request_count", "avg", None)
    assert ttft is not None and itl is not None and throughput is not None and count is not None
    if count != int(count):
        raise ValueError("profile_export_aiperf.json: request_count is not a whole number")
    return Export(
        ttft_p50_ms=ttft,
        itl_p50_ms=itl,
        output_token_throughput=throughput,
        requests=int(count),
        output_tokens_p50=_metric(data, "output_sequence_length", "p50", "tokens", required=False),
        input_tokens_p50=_metric(data, "input_sequence_length", "p50", "tokens", required=False),
    )
