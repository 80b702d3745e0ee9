"""A sweep as a Locust load shape: each step sets the users (closed-loop concurrency, or open-loop streams
offering a rate), warms up, then is measured in windows until the last few agree or the windows run out.

It runs where Locust runs shapes (the local process, or the master) and measures what the whole run did:
* requests and failures per window from Locust's own per-second counts (workers send them per second,
  so a window holds exactly its seconds wherever the requests were made);
* latencies from our µs histograms as they arrive (taken from this process, or in workers' reports);
  windows are evaluated a report interval after they end, so the histograms hold the same period;
* Triton's statistics read at the window boundaries, in gevent's thread pool (the read blocks);
* the server's metrics (GPU, CPU, a local server process) and the load generator's CPU from the monitor
  (:mod:`locust_inference.telemetry`), over the windows that end within the step's measured seconds.

Importing this module adds the sweep's options to Locust's and checks them at init: a locustfile that
imports it before :mod:`locust_inference.users` has bad sweep options refused before anything contacts
the server.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
from locust import LoadTestShape, events
from locust.env import Environment
from locust.runners import STATE_RUNNING, WORKER_REPORT_INTERVAL, MasterRunner

from locust_inference import latency
from locust_inference._native import ConfigError, Measurements
from locust_inference.server_stats import ServerStats, breakdown, read_stats
from locust_inference.sweep import plan as plan_module
from locust_inference.sweep import results
from locust_inference.sweep.analysis import Window, goodput, split_users, stable
from locust_inference.sweep.plan import SweepPlan

__all__ = ["SweepShape"]

log = logging.getLogger("locust_inference")
SUMMARY_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "p99.9", "max")


@dataclass
class _Step:
    index: int
    load: float
    users: int
    warm_until: float
    t0: int | None = None  # first second measured
    windows: list[Window] = field(default_factory=list)
    measured: list[Measurements] = field(default_factory=list)
    slo: list[tuple[int, int]] = field(default_factory=list)  # each window's (met, judged) with --token-slo
    # several models: each window's measurements and counts by request name
    named: list[dict[str, Measurements]] = field(default_factory=list)
    model_windows: list[dict[str, Window]] = field(default_factory=list)


class SweepRun:
    """The state of one sweep; :meth:`tick` is the shape's tick."""

    def __init__(self, environment: Environment, plan: SweepPlan, user_classes: dict[str, type]) -> None:
        collector = latency.collector_of(environment)
        if collector is None:
            raise ConfigError("a sweep needs locust-inference's users: import them in the locustfile")
        self.environment, self.plan, self.collector = environment, plan, collector
        self.user_class = user_classes[plan.mode]
        # --scenario: each step's users are shared by the entries' classes (Locust's dispatcher: fixed, then weight)
        self.classes = list(environment.user_classes) if collector.settings.scenario else [self.user_class]
        self.generative = collector.settings.generative.generative  # steps then carry token measures
        distributed = isinstance(environment.runner, MasterRunner)
        self.lag = WORKER_REPORT_INTERVAL + 1.0 if distributed else 1.0
        self.rows: list[dict[str, Any]] = []
        self.stopped: str | None = None
        self.step: _Step | None = None
        self.done = False
        settings = collector.settings
        # several models (--model-name a,b): each step also gets a row per model; stability is the total's
        self.models = settings.per_model() if settings.models else []
        if self.models:
            collector.track_names()
        self.stats_targets = [s for s in (self.models or [settings]) if s.server == "triton"]
        # Triton's statistics at each window boundary, by request name
        self.server_stats: dict[int, dict[str, ServerStats | None]] = {}
        self.readers: list[gevent.Greenlet] = []  # the current step's pending reads of Triton's statistics

    # --- Locust's side -------------------------------------------------------------------------------

    def tick(self, now: float) -> tuple[int, float, list[type]] | None:
        if self.done:
            return None
        if self.step is None:
            return self._begin(0, now)
        step = self.step
        if step.t0 is None:
            spawned = self.environment.runner is not None and self.environment.runner.state == STATE_RUNNING
            if spawned and now >= step.warm_until:
                self._start_windows(step, now)
        elif now >= step.t0 + (len(step.windows) + 1) * self.plan.window_s + self.lag:
            self._close_window(step)
            if stable(step.windows, self.plan.stable_windows, self.plan.tolerance) or (
                len(step.windows) >= self.plan.max_windows
            ):
                return self._finish(step, now)
        return self._current()

    def _current(self) -> tuple[int, float, list[type]]:
        assert self.step is not None
        return self.step.users, float(max(self.step.users, 1)), self.classes

    def _begin(self, index: int, now: float) -> tuple[int, float, list[type]]:
        load = self.plan.steps[index]
        self.step = _Step(index, load, self.plan.users(load), warm_until=now + self.plan.warmup_s)
        log.info("locust-inference sweep: step %d, %s", index + 1, self._describe(load))
        return self._current()

    def _describe(self, load: float) -> str:
        if self.plan.mode == "concurrency":
            return f"{load:g} users"
        return f"{load:g} req/s offered by {self.plan.users(load)} streams of {self.plan.stream_rate:g} req/s"

    # --- windows -------------------------------------------------------------------------------------

    def _start_windows(self, step: _Step, now: float) -> None:
        step.t0 = math.floor(now) + 1
        self.collector.poll()
        self.collector.take_window()  # the warm-up's latencies
        if self.collector.slo is not None:
            self.collector.slo.take_window()  # and its judgements
        for k in range(self.plan.max_windows + 1):
            self._read_server_stats_at(step.t0 + k * self.plan.window_s, now)

    def _read_server_stats_at(self, when: int, now: float) -> None:
        targets = self.stats_targets
        if not targets:
            return

        def read() -> None:
            pool = gevent.get_hub().threadpool
            reads = {s.name: pool.spawn(read_stats, s, self.collector.ensembles) for s in targets}  # all at once
            self.server_stats[when] = {name: r.get() for name, r in reads.items()}

        self.readers.append(gevent.spawn_later(max(when - now, 0.0), read))

    def _close_window(self, step: _Step) -> None:
        assert step.t0 is not None
        self.collector.poll()
        measured, named = self.collector.take_window_by_name()
        start = step.t0 + len(step.windows) * self.plan.window_s
        seconds = range(start, start + self.plan.window_s)
        total = self._window(self.environment.stats.total, measured, seconds)
        if self.models:
            # only the last stable_windows make a row: a model's histograms (~2 MiB) are not kept past them
            step.named = [*step.named, named][-self.plan.stable_windows :]
            entries = self.environment.stats.entries
            parts = {
                s.name: self._window(entries.get((s.name, "infer")), named.get(s.name), seconds) for s in self.models
            }
            step.model_windows.append(parts)
            # The step's counts are its models' parts: Locust reads the clock apart for its total and for the
            # name's entry, so a request logged across a second's boundary falls in different seconds of each.
            successes = sum(w.successes for w in parts.values())
            total = Window(successes, sum(w.failures for w in parts.values()), total.seconds, total.p99_ms)
        step.windows.append(total)
        step.measured.append(measured)
        if self.collector.slo is not None:
            step.slo.append(self.collector.slo.take_window())

    def _window(self, entry: Any, measured: Measurements | None, seconds: range) -> Window:
        """A window of Locust's per-second counts (of all requests, or of one name's ``entry``) and histograms."""
        requests = sum(entry.num_reqs_per_sec.get(s, 0) for s in seconds) if entry is not None else 0
        failures = sum(entry.num_fail_per_sec.get(s, 0) for s in seconds) if entry is not None else 0
        hist = measured.total if measured is not None else None
        p99 = hist.percentile(99) if hist is not None and hist.count else None
        return Window(requests - failures, failures, float(self.plan.window_s), p99)

    def _finish(self, step: _Step, now: float) -> tuple[int, float, list[type]] | None:
        row = self._row(step)
        gevent.killall(self.readers, block=False)  # boundaries the step did not reach
        self.readers.clear()
        self.rows.append(row)
        log.info("locust-inference sweep: step %d done: %s", step.index + 1, results.describe_row(row))
        self.stopped = self._stop_reason(row)
        if self.stopped or step.index + 1 == len(self.plan.steps):
            self.finish()
            return None
        return self._begin(step.index + 1, now)

    def _row(self, step: _Step) -> dict[str, Any]:
        assert step.t0 is not None
        n = min(self.plan.stable_windows, len(step.windows))
        windows, merged = step.windows[-n:], Measurements()
        for m in step.measured[-n:]:
            merged.add(m)
        seconds = sum(w.seconds for w in windows)
        successes, failures = sum(w.successes for w in windows), sum(w.failures for w in windows)
        first = step.t0 + (len(step.windows) - n) * self.plan.window_s
        last = step.t0 + len(step.windows) * self.plan.window_s
        summary = merged.total.summary()
        server = None  # several models: each model's, in its row
        if not self.models:
            name = self.collector.settings.name
            at_first, at_last = self.server_stats.get(first) or {}, self.server_stats.get(last) or {}
            server = breakdown(at_first.get(name), at_last.get(name), summary.get("mean"))
        return {
            "step": step.index + 1,
            "load": step.load,
            "users": step.users,
            "offered_rate_per_s": step.load if self.plan.mode == "rate" else None,
            "achieved_per_s": successes / seconds,
            "requests": successes + failures,
            "failures": failures,
            "dropped": int(merged.streams["dropped"]) if self.plan.mode == "rate" else None,
            "latency_ms": {k: summary[k] for k in SUMMARY_KEYS if k in summary},
            "service_ms": {k: v for k, v in merged.service.summary().items() if k in SUMMARY_KEYS},
            "windows": len(step.windows),
            "stable": stable(step.windows, self.plan.stable_windows, self.plan.tolerance),
            "measured_s": seconds,
            "window_throughputs": [w.throughput for w in step.windows],
            "window_p99_ms": [w.p99_ms for w in step.windows],
            "server": server,
            "tokens": self._tokens(merged, seconds, step.slo[-n:]) if self.generative else None,
            # Triton's GPU/CPU gauges, a local server's process and the load generator's CPU over the same
            # seconds, as perf_analyzer --collect-metrics reports a step (None without the monitor)
            "server_metrics": self.collector.monitor.step(first, last) if self.collector.monitor else None,
            "models": self._model_rows(step, n, first, last) if self.models else None,
        }

    def _model_rows(self, step: _Step, n: int, first: int, last: int) -> dict[str, dict[str, Any]]:
        """Each model's part of a step, by request name, over the same windows as the step's total: Locust's
        counts of that name, its histograms and Triton's statistics of that model."""
        users = self._users_per_model(step.users)
        at_first, at_last = self.server_stats.get(first) or {}, self.server_stats.get(last) or {}
        rows: dict[str, dict[str, Any]] = {}
        for i, s in enumerate(self.models):
            windows = [w[s.name] for w in step.model_windows[-n:]]
            merged = Measurements()
            for named in step.named[-n:]:
                if s.name in named:
                    merged.add(named[s.name])
            seconds = sum(w.seconds for w in windows)
            successes, failures = sum(w.successes for w in windows), sum(w.failures for w in windows)
            summary = merged.total.summary()
            latency_ms = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
            slo = self.plan.slo
            rows[s.name] = {
                "model": s.model,
                "users": users[i],
                "offered_rate_per_s": users[i] * self.plan.stream_rate if self.plan.stream_rate else None,
                "achieved_per_s": successes / seconds,
                "requests": successes + failures,
                "failures": failures,
                "dropped": int(merged.streams["dropped"]) if self.plan.mode == "rate" else None,
                "latency_ms": latency_ms,
                "service_ms": {k: v for k, v in merged.service.summary().items() if k in SUMMARY_KEYS},
                "window_throughputs": [w[s.name].throughput for w in step.model_windows],
                "window_p99_ms": [w[s.name].p99_ms for w in step.model_windows],
                # whether this model's step met --slo (None without it, or without a successful request)
                "within_slo": None if slo is None or slo.key not in latency_ms else latency_ms[slo.key] <= slo.ms,
                "server": breakdown(at_first.get(s.name), at_last.get(s.name), summary.get("mean")),
            }
        return rows

    def _users_per_model(self, users: int) -> list[int]:
        """The step's users bound to each model: each process binds its own users in the weighted turn
        (options.next_model), so on a master the sum of each worker's split of its users."""
        runner = self.environment.runner
        if self.collector.settings.scenario:  # Locust's dispatcher split them, by the entries' classes
            target = getattr(runner, "target_user_classes_count", None) or {}
            by_entry = {getattr(c, "scenario_entry", None): target.get(c.__name__, 0) for c in self.classes}
            return [by_entry.get(i, 0) for i in range(len(self.models))]
        weights = self.collector.settings.weights
        counts = [w.user_count for w in runner.clients.values()] if isinstance(runner, MasterRunner) else [users]
        total = [0] * len(weights)
        for count in counts:
            for i, k in enumerate(split_users(count, weights)):
                total[i] += k
        return total

    def _tokens(self, merged: Measurements, seconds: float, slo: list[tuple[int, int]]) -> dict[str, Any]:
        """A generative step's token measures over its measured windows: TTFT, ITL and TPOT, output tokens per
        second and, with --token-slo, the goodput (requests that met every objective, per second)."""
        counts = merged.tokens
        met, judged = sum(m for m, _ in slo), sum(j for _, j in slo)
        keys = SUMMARY_KEYS
        return {
            "ttft_ms": {k: v for k, v in merged.ttft.summary().items() if k in keys},
            "itl_ms": {k: v for k, v in merged.itl.summary().items() if k in keys},
            "tpot_ms": {k: v for k, v in merged.tpot.summary().items() if k in keys},
            "output_tokens_per_s": counts["output_tokens_total"] / seconds,
            "approximate": counts["approximate_requests"] > 0,
            "slo_met": met if self.collector.slo is not None else None,
            "slo_judged": judged if self.collector.slo is not None else None,
            "goodput_per_s": met / seconds if self.collector.slo is not None else None,
        }

    def _stop_reason(self, row: dict[str, Any]) -> str | None:
        limit = self.plan.stop_latency
        if limit is not None:
            value = row["latency_ms"].get(limit.key)
            if value is not None and value > limit.ms:
                return f"stopped at step {row['step']}: {limit.key} {value:.1f} ms is past the limit {limit}"
        if self.plan.stop_error_rate is not None and row["requests"]:
            rate = row["failures"] / row["requests"]
            if rate > self.plan.stop_error_rate:
                return (
                    f"stopped at step {row['step']}: {rate:.1%} of requests failed,"
                    f" past the limit {self.plan.stop_error_rate:.1%}"
                )
        return None

    def finish(self) -> None:
        """Writes the sweep's results (once); a sweep cut short says at which step."""
        if self.done:
            return
        self.done = True
        if self.stopped is None and len(self.rows) < len(self.plan.steps):
            self.stopped = f"interrupted during step {len(self.rows) + 1}: the run ended before it was measured"
        good = goodput(self.rows, self.plan.slo) if self.plan.slo is not None and self.rows else None
        model_goodput = None
        if self.models and self.plan.slo is not None and self.rows:  # each model's curve against the SLO
            model_goodput = {
                s.name: goodput([row["models"][s.name] for row in self.rows], self.plan.slo) for s in self.models
            }
        settings = self.collector.settings
        doc = results.document(
            settings,
            plan=self.plan,
            rows=self.rows,
            stopped=self.stopped,
            goodput=good,
            ended=time.time(),
            deployment=getattr(self.environment.parsed_options, "deployment", None),
            model_goodput=model_goodput,
        )
        folder, _ = latency.results_folder(self.environment, settings)
        json_path, csv_path = results.write(doc, folder)
        sys.stdout.write(results.format_summary(doc) + f"\nwritten: {json_path}, {csv_path}\n")
        sys.stdout.flush()


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    plan_module.add_arguments(parser)


@events.init.add_listener
def _check(environment: Environment, **_kwargs: Any) -> None:
    if environment.parsed_options is not None:
        try:
            plan_module.resolve(environment.parsed_options)
        except ConfigError as err:
            log.error("locust-inference: %s", err)
            sys.stderr.write(f"locust-inference: {err}\n")
            raise SystemExit(2) from None


class SweepShape(LoadTestShape):
    """Steps of concurrency or offered rate (see ``--sweep-*``), each measured until stable."""

    abstract = True
    user_classes: dict[str, type] = {}  # noqa: RUF012 (set by the subclass: {"concurrency": ..., "rate": ...})

    def __init__(self) -> None:
        super().__init__()
        self._run: SweepRun | None = None

    @staticmethod
    def scenario_first_users(options: Any) -> int:
        """A --scenario's users at the first step (the plugin checks they can start every entry); only
        concurrency steps: each entry's rate is its own."""
        plan = plan_module.resolve(options)
        if plan.mode != "concurrency":
            raise ConfigError("--scenario sweeps --sweep-concurrency steps: each entry offers its own rate ('rate')")
        return plan.users(plan.steps[0])

    def tick(self) -> tuple[int, float, list[type]] | None:
        if self._run is None:
            assert self.runner is not None
            environment = self.runner.environment
            sweep = SweepRun(environment, plan_module.resolve(environment.parsed_options), self.user_classes)
            environment.events.quitting.add_listener(lambda **_kw: sweep.finish())
            self._run = sweep
        return self._run.tick(time.time())
