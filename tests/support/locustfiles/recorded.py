"""The product's users, and two records per process in $RECORD_DIR for the multi-host tests:

* ``<pid>.messages``: every Locust message this process received (from its master, or its workers), the
  bytes as they arrived, each prefixed with its length (4 bytes, big-endian);
* ``<pid>.histograms.json`` (workers): the latency histograms this worker took for its reports to the
  master, merged: ``{"client_id", "total", "ttfb"}`` (base64 of ``LatencyHistogram.to_bytes``) and
  ``resent``; ``streams``, the open-loop counters of the reports taken since the worker's last reset (all
  of them a master keeps); ``after_stop``, whether the last report was taken once the worker's users had
  stopped (it holds all they did). Rewritten after every report, so it holds what was sent even when the
  worker is killed.

For a test that finds a process stuck: SIGUSR1 writes every thread's stack to ``<pid>.threads`` (from C, so
even with gevent's loop blocked in native code), SIGUSR2 every greenlet's to ``<pid>.greenlets`` (from the
loop: no file means the loop is not running).
"""

from __future__ import annotations

import base64
import faulthandler
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import gevent
import gevent.util
from locust.rpc import protocol
from locust.runners import STATE_STOPPED, WorkerRunner

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

from locust_inference import Measurements, latency  # noqa: E402

import locustfile  # noqa: E402

__all__ = ["HighUser", "LowUser"]

RECORD_DIR = Path(os.environ["RECORD_DIR"])
RECORD_DIR.mkdir(parents=True, exist_ok=True)
_messages = (RECORD_DIR / f"{os.getpid()}.messages").open("ab", buffering=0)
_threads = (RECORD_DIR / f"{os.getpid()}.threads").open("w")
faulthandler.register(signal.SIGUSR1, file=_threads, all_threads=True)


def _dump_greenlets() -> None:
    (RECORD_DIR / f"{os.getpid()}.greenlets").write_text("\n".join(gevent.util.format_run_info()))


gevent.signal_handler(signal.SIGUSR2, _dump_greenlets)
_unserialize = protocol.Message.unserialize.__func__  # type: ignore[attr-defined]


def _recording_unserialize(cls: type, data: bytes) -> Any:
    _messages.write(len(data).to_bytes(4, "big") + data)
    return _unserialize(cls, data)


protocol.Message.unserialize = classmethod(_recording_unserialize)  # type: ignore[method-assign,assignment]

_install = latency.install


def _recording_install(environment: Any, settings: Any, endpoint: Any) -> Any:
    if endpoint is not None and isinstance(environment.runner, WorkerRunner):
        endpoint = _Recorder(environment.runner, endpoint)
    return _install(environment, settings, endpoint)


latency.install = _recording_install


class _Recorder:
    """Passes on what the endpoint's ``take`` returns and keeps a merged copy on disk."""

    def __init__(self, runner: WorkerRunner, endpoint: Any) -> None:
        self.runner, self.client_id, self.endpoint = runner, runner.client_id, endpoint
        self.taken = Measurements()
        self.since_reset = Measurements()
        self.path = RECORD_DIR / f"{os.getpid()}.histograms.json"

    def reset(self) -> None:
        self.endpoint.reset()
        self.since_reset = Measurements()

    def take(self) -> Any:
        after_stop = self.runner.state == STATE_STOPPED  # read first: the users stopped before this take
        taken = self.endpoint.take()
        self.taken.add(taken)
        self.since_reset.add(taken)
        record = {
            "client_id": self.client_id,
            "total": base64.b64encode(self.taken.total.to_bytes()).decode(),
            "ttfb": base64.b64encode(self.taken.ttfb.to_bytes()).decode(),
            "resent": self.taken.resent,
            "streams": self.since_reset.streams,
            "after_stop": after_stop,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.path)
        return taken


class HighUser(locustfile.HighUser):
    pass


class LowUser(locustfile.LowUser):
    pass
