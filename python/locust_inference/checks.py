"""Pass/fail conditions on a run's merged results (``--check``), for CI: evaluated where ``latency.json`` is
written (the master, or the only process) as the run ends; each breached condition is one line with the
measured value, and the process exits with :data:`BREACHED_EXIT_CODE`. ``--junit PATH`` writes the
verdicts as a JUnit XML report.

A condition is ``[NAME:]METRIC OP VALUE[UNIT]``, e.g. ``p99<=100ms``, ``fail_ratio<=1%``, ``rps>=50``,
``dropped==0`` or ``triton/resnet50_onnx:p50<200ms``. Without ``NAME:`` it must hold for every request name
of the run. Latencies are in ms unless a unit says otherwise (``us``, ``ms``, ``s``); ratios take ``1%`` or
``0.01`` (a bare number of 1 or more is refused: ``fail_ratio<=1`` may mean 1% or 100%). A run that
measured no request breaches every condition: a gate that saw nothing does not pass.
"""

from __future__ import annotations

import math
import operator
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust_inference._native import ConfigError
from locust_inference.results_schema import HISTOGRAMS

__all__ = [
    "BREACHED_EXIT_CODE",
    "Check",
    "Verdict",
    "add_arguments",
    "evaluate",
    "install",
    "parse",
    "report",
    "write_junit",
]

# Distinct from Locust's own codes: 1 (errors in the run) and 2 (our bad-configuration exit).
BREACHED_EXIT_CODE = 3

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_PERCENTILES = ("p50", "p90", "p95", "p99", "p99.9", "p99.99")
_STATS = (*_PERCENTILES, "mean", "min", "max")
# Latency metrics: (prefix in the condition, the latency.json histogram they are read from).
_HISTOGRAMS = tuple(zip(("", "ttfb_", "service_"), HISTOGRAMS, strict=True))
LATENCY_METRICS = {f"{prefix}{stat}": (key, stat) for prefix, key in _HISTOGRAMS for stat in _STATS}
LAG_METRICS = {f"lag_{stat}": stat for stat in ("p50", "p99", "max")}
COUNT_METRICS = ("requests", "failures", "resent", "dropped", "unfinished", "abandoned")
METRICS = (*LATENCY_METRICS, *LAG_METRICS, *COUNT_METRICS, "fail_ratio", "rps")
_TIME_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}
_CONDITION = re.compile(
    r"^(?:(?P<name>.+):)?(?P<metric>[a-z_][a-z_0-9.]*)\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?P<value>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>us|µs|ms|s|%)?$"
)


@dataclass(frozen=True)
class Check:
    text: str  # as the user wrote it
    name: str | None  # a request name, or None: every request name of the run
    metric: str
    op: str
    threshold: float  # ms for latencies, a fraction for fail_ratio, per second for rps, else a count

    def holds(self, measured: float) -> bool:
        return _OPS[self.op](measured, self.threshold)


@dataclass(frozen=True)
class Verdict:
    check: Check
    name: str | None  # the request name it was evaluated for (None: no request was measured)
    measured: float | None
    passed: bool

    def line(self) -> str:
        where = f" for {self.name}" if self.name else ""
        if self.measured is None:
            return f"check breached{where}: {self.check.text}: no request was measured"
        state = "held" if self.passed else "breached"
        return f"check {state}{where}: {self.check.text}: measured {_format(self.check.metric, self.measured)}"


def add_arguments(group: Any) -> None:
    group.add_argument(
        "--check",
        action="append",
        default=None,
        env_var="LOCUST_CHECK",
        metavar="CONDITION",
        help="A pass/fail condition on the merged results, e.g. p99<=100ms, fail_ratio<=1%%, rps>=50, "
        "dropped==0, or NAME:p50<200ms for one request name; repeatable. A breached condition makes the "
        f"process exit with status {BREACHED_EXIT_CODE}",
    )
    group.add_argument(
        "--junit",
        env_var="LOCUST_JUNIT",
        default=None,
        metavar="PATH",
        help="Write the --check verdicts as a JUnit XML report to PATH",
    )


def parse(texts: Sequence[str] | None) -> list[Check]:
    """The conditions of ``--check``; raises :class:`ConfigError` (one line) naming a malformed one."""
    checks = []
    for text in texts or ():
        match = _CONDITION.match(text.strip())
        if match is None:
            raise ConfigError(f"--check {text!r} is not a condition such as p99<=100ms, fail_ratio<=1% or NAME:rps>=50")
        metric, unit, value = match["metric"], match["unit"], float(match["value"])
        if metric not in METRICS:
            raise ConfigError(f"--check {text!r}: unknown metric {metric!r}; one of {', '.join(METRICS)}")
        if metric in LATENCY_METRICS or metric in LAG_METRICS:
            if unit == "%":
                raise ConfigError(f"--check {text!r}: {metric} is a time: give ms, s or us, not %")
            value *= _TIME_UNITS[unit or "ms"]
        elif metric == "fail_ratio":
            if unit not in (None, "%") or (unit is None and value >= 1):
                raise ConfigError(
                    f"--check {text!r}: fail_ratio takes a fraction such as 0.01 or a percentage such as 1%"
                )
            value = value / 100 if unit == "%" else value
            if value > 1:
                raise ConfigError(f"--check {text!r}: fail_ratio is at most 100% (1.0)")
        elif unit is not None:
            raise ConfigError(f"--check {text!r}: {metric} takes a plain number, without {unit}")
        if not math.isfinite(value):
            raise ConfigError(f"--check {text!r}: the value is not a finite number")
        checks.append(Check(text.strip(), match["name"], metric, match["op"], value))
    return checks


def install(environment: Any, checks: Sequence[Check], junit: str | None) -> None:
    """Evaluates ``checks`` where ``latency.json`` is written, as the run ends. Call it before
    :func:`latency.install`: Locust fires ``quitting`` in reverse order, so this runs after the summary.
    (Locust is imported here only: parsing and evaluating conditions need none of it.)"""
    from locust.runners import WorkerRunner

    from locust_inference import latency

    if not checks or isinstance(environment.runner, WorkerRunner):
        return

    @environment.events.quitting.add_listener
    def _gate(**_kw: Any) -> None:
        collector = latency.collector_of(environment)
        verdicts = evaluate(checks, collector.final if collector is not None else None)
        if junit:
            write_junit(verdicts, Path(junit))
        if not report(verdicts):
            environment.process_exit_code = BREACHED_EXIT_CODE


def measure(metric: str, entry: dict[str, Any]) -> float:
    """``metric`` of one request name's entry in ``latency.json``."""
    if metric in LATENCY_METRICS:
        key, stat = LATENCY_METRICS[metric]
        return float(entry[key].get(stat, math.nan))
    open_loop = entry.get("open_loop") or {}  # a closed loop drops nothing, leaves nothing unsent, lags not
    if metric in LAG_METRICS:
        return float((open_loop.get("lag_ms") or {}).get(LAG_METRICS[metric], 0.0))
    failures = int(entry.get("failures") or 0)
    total = entry["count"] + failures
    values = {
        "requests": total,
        "failures": failures,
        "resent": entry.get("resent", 0),
        "dropped": open_loop.get("dropped", 0),
        "unfinished": open_loop.get("unfinished", 0),
        "abandoned": entry.get("abandoned", 0),
        "fail_ratio": failures / total if total else 0.0,
        "rps": entry["requests_per_s"],
    }
    return float(values[metric])  # parse() admits only METRICS


def evaluate(checks: Sequence[Check], summary: Mapping[str, Any] | None) -> list[Verdict]:
    """Every check against ``summary`` (``latency.json``'s content; None when nothing was measured)."""
    requests: dict[str, Any] = (summary or {}).get("requests") or {}
    verdicts = []
    for check in checks:
        names = [check.name] if check.name else sorted(requests)
        if not names:
            verdicts.append(Verdict(check, None, None, False))
        for name in names:
            entry = requests.get(name)
            if entry is None or entry["count"] + int(entry.get("failures") or 0) == 0:
                verdicts.append(Verdict(check, name, None, False))
                continue
            measured = measure(check.metric, entry)
            verdicts.append(Verdict(check, name, measured, not math.isnan(measured) and check.holds(measured)))
    return verdicts


def report(verdicts: Sequence[Verdict]) -> bool:
    """Writes one line per breached condition to stderr; True when every condition held."""
    breached = [v for v in verdicts if not v.passed]
    for verdict in breached:
        sys.stderr.write(f"locust-inference: {verdict.line()}\n")
    if verdicts:
        sys.stdout.write(f"checks: {len(verdicts) - len(breached)} of {len(verdicts)} held\n")
    sys.stderr.flush()
    sys.stdout.flush()
    return not breached


def write_junit(verdicts: Sequence[Verdict], path: Path) -> None:
    """The verdicts as JUnit XML: one test case per condition and request name."""
    failures = sum(not v.passed for v in verdicts)
    suites = ET.Element("testsuites", tests=str(len(verdicts)), failures=str(failures))
    suite = ET.SubElement(
        suites, "testsuite", name="locust-inference checks", tests=str(len(verdicts)), failures=str(failures)
    )
    for verdict in verdicts:
        case = ET.SubElement(suite, "testcase", classname=verdict.name or "run", name=verdict.check.text)
        if not verdict.passed:
            ET.SubElement(case, "failure", message=verdict.line(), type="breached").text = verdict.line()
        else:
            ET.SubElement(case, "system-out").text = verdict.line()
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _format(metric: str, value: float) -> str:
    if metric in LATENCY_METRICS or metric in LAG_METRICS:
        return f"{value:.3f} ms"
    if metric == "fail_ratio":
        return f"{value * 100:.2f}%"
    if metric == "rps":
        return f"{value:.2f}/s"
    return f"{value:g}"
