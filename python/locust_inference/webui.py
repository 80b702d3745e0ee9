"""The "Inference" tab of Locust's web UI: ``latency.json``'s numbers while the test runs.

Locust's web UI (2.4x) takes extra tabs as tables: ``template_args["extended_tabs"]`` names the tab,
``template_args["extended_tables"]`` its columns, and the page fills it from ``extended_stats`` in the
``/stats/requests`` answer it polls every 2 s. So the tab is live without a page or script of ours, and on
a master it shows what the master merged from its workers' reports.

* One schema. The numbers are :meth:`~locust_inference.latency.Collector.summary` now, the function that
  writes ``latency.json`` (after the run, the written document itself). The tab shows each number of the
  document as a row, generically: a histogram's summary as one row of percentiles, any other number as a
  row of its own, so sections added to the document appear without a change here.
  ``/locust-inference/latency.json`` serves the whole document.
* Measurements only. The document holds no header, option value or body (the host cannot carry a user or
  password: refused at start); Locust's own pages are the place for the options.
* Not waiting on the server while the test runs. Triton's statistics are read in gevent's threadpool at
  most every :data:`READ_EVERY_S` while someone watches, and a request is answered with the latest read
  done. Once the test stopped, one read made after the stop is waited for (other greenlets run
  meanwhile), and the numbers stay as they are from then on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from locust_inference import latency
from locust_inference.options import Settings
from locust_inference.results_schema import LatencyDocument
from locust_inference.server_stats import EnsembleSteps, ModelsRead, ServerStats, StatsRead
from locust_inference.tab import COLUMNS, ROUTE, TAB_KEY, rows

__all__ = ["document", "follow_resets", "install"]

log = logging.getLogger("locust_inference")
STATS_ENDPOINT = "locust.request_stats"  # Locust's /stats/requests, which its page polls
RESET_MESSAGE = "locust_inference_reset"  # a master's to its workers: the web UI's "Reset Stats"
READ_EVERY_S = 2.0  # Triton's statistics, read again at most this often while the tab is watched


class _Reads:
    """One read of Triton's statistics: the run's model's, or (several models) each model's in one budget."""

    def __init__(self, settings: Settings, ensembles: EnsembleSteps) -> None:
        self._run = StatsRead(settings, ensembles)  # reads nothing with several models
        self._models = ModelsRead(settings.per_model() if settings.models else (), ensembles)

    def ready(self) -> bool:
        return self._run.ready() and self._models.ready()

    def get(self) -> tuple[ServerStats | None, dict[str, ServerStats | None]]:
        return self._run.get(), self._models.get()


class _LiveStats:
    """Triton's statistics, read in the background while the test runs: at most one read out, the latest
    done kept. Once the test stopped, one read made after the stop (waited for, letting other greenlets
    run), then no more: the numbers the tab shows at the end are the ones latency.json gets at quit."""

    def __init__(self, collector: latency.Collector) -> None:
        self.collector = collector
        self._pending: _Reads | None = None
        self._pending_at = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._started = -float("inf")  # time.monotonic() of the pending read's start
        self._latest: tuple[ServerStats | None, dict[str, ServerStats | None]] = (None, {})
        self._latest_at = dt.datetime.min.replace(tzinfo=dt.UTC)  # when the latest read done was started

    def _start(self) -> _Reads:
        self._pending = _Reads(self.collector.settings, self.collector.ensembles)
        self._pending_at, self._started = dt.datetime.now(dt.UTC), time.monotonic()
        return self._pending

    def latest(self) -> tuple[Callable[[], ServerStats | None], dict[str, ServerStats | None]]:
        """The latest read done: the run's model's (as ``Collector.summary``'s ``stats_at_end``), and each
        model's by request name (its ``model_stats_at_end``)."""
        stopped = self.collector.stopped
        pending = self._pending
        if stopped is not None:
            if self._latest_at < stopped:
                read = pending if pending is not None and self._pending_at >= stopped else self._start()
                self._latest, self._latest_at, self._pending = read.get(), self._pending_at, None
        else:
            if pending is not None and pending.ready():
                self._latest, self._latest_at, self._pending = pending.get(), self._pending_at, None
            if self._pending is None and time.monotonic() - self._started >= READ_EVERY_S:
                self._start()
        latest, by_model = self._latest
        return lambda: latest, by_model


_live: weakref.WeakKeyDictionary[Environment, _LiveStats] = weakref.WeakKeyDictionary()


def document(environment: Environment) -> LatencyDocument | None:
    """What ``latency.json`` holds now (once written, what it holds); None before locust-inference's start."""
    collector = latency.collector_of(environment)
    if collector is None:
        return None
    summary = collector.final
    if summary is None:
        collector.poll()  # this process's requests since the last take (none on a master)
        live = _live.get(environment)
        if live is None or live.collector is not collector:
            live = _live[environment] = _LiveStats(collector)
        _, history = latency.results_folder(environment, collector.settings)
        stats_at_end, model_stats_at_end = live.latest()
        summary = collector.summary(environment, history, stats_at_end, model_stats_at_end)
    return summary


def _restart(environment: Environment, *, wait: bool) -> None:
    """What ``--reset-stats`` does in this process (latency.install): the endpoint's measurements and the
    collector's restart, the open-loop requests pending now carried."""
    collector = latency.collector_of(environment)
    if collector is None:
        return
    collector.reset_endpoints()
    collector.restart(wait=wait, workers=latency.worker_ids(environment.runner))
    if collector.stopped is not None:  # reset after the test stopped: it ends where it restarts
        collector.stopped = collector.started


def follow_resets(environment: Environment) -> None:
    """The web UI's "Reset Stats" restarts Locust's statistics (``events.reset_stats``, on the master or the
    local process): the collector restarts with them, and a master tells its workers to restart theirs, as
    at ``--reset-stats``; the workers' reports carry their count of restarts, and the master drops a report
    taken before the worker restarted."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        # in a greenlet of its own: the restart reads Triton's statistics, the worker's message loop goes on
        runner.register_message(RESET_MESSAGE, lambda **_kw: _restart(environment, wait=True), concurrent=True)
        return

    @environment.events.reset_stats.add_listener
    def _reset(**_kw: Any) -> None:
        # Locust resets its statistics when this returns: no wait here, or the requests answered meanwhile would
        # be counted here and not by Locust. And first: a worker's report sent after its own restart must not
        # reach a master that has not restarted.
        _restart(environment, wait=False)
        if isinstance(runner, MasterRunner):
            runner.send_message(RESET_MESSAGE)


def install(environment: Environment) -> None:
    """Adds the tab and the route to ``environment``'s web UI, if it has one (a master or a local run), and
    follows its "Reset Stats" in every process."""
    follow_resets(environment)
    web_ui = environment.web_ui
    app = web_ui.app if web_ui is not None else None
    if web_ui is None or app is None:
        return
    if STATS_ENDPOINT not in app.view_functions:  # a Locust whose page polls something else: say so
        log.warning("locust-inference: Locust's web UI has no %s: the Inference tab is off", STATS_ENDPOINT)
        return
    args = web_ui.template_args
    args.setdefault("extended_tabs", []).append({"title": "Inference", "key": TAB_KEY})
    args.setdefault("extended_tables", []).append({"key": TAB_KEY, "structure": COLUMNS})
    args.setdefault("extended_csv_files", []).append({"href": f".{ROUTE}", "title": "Download latency.json (so far)"})
    prefix = getattr(environment.parsed_options, "web_base_path", None) or None
    blueprint = Blueprint("locust_inference", __name__, url_prefix=prefix)
    warned: list[str] = []

    def current() -> LatencyDocument | None:
        try:
            return document(environment)
        except Exception as err:  # the tab must never break Locust's own page, which shares the request
            if not warned:
                warned.append(str(err))
                log.warning("locust-inference: the web UI's Inference tab has no numbers: %s", err, exc_info=True)
            return None

    @blueprint.route(ROUTE)
    @web_ui.auth_required_if_enabled
    def latency_json() -> Response:
        summary = current()
        if summary is None:
            return Response('{"error": "no measurements yet"}\n', status=404, mimetype="application/json")
        return Response(json.dumps(summary, indent=2) + "\n", mimetype="application/json")

    app.register_blueprint(blueprint)

    @app.after_request
    def _extend(response: Response) -> Response:
        if request.endpoint != STATS_ENDPOINT or response.status_code != 200 or not response.is_json:
            return response
        summary = current()
        payload = response.get_json()
        if summary is None or not isinstance(payload, dict):
            return response
        # Locust may answer from its cache (the same response again), and a locustfile may add its own tabs
        others = [
            s for s in payload.get("extended_stats") or [] if not (isinstance(s, dict) and s.get("key") == TAB_KEY)
        ]
        payload["extended_stats"] = [*others, {"key": TAB_KEY, "data": rows(summary)}]
        response.set_data(json.dumps(payload))
        return response
