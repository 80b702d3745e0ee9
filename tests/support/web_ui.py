"""Locust runs with their web UI, as the web UI tests start, watch and end them: the processes with their
output in files, and the web UI polled as its page polls it (``/stats/requests``, with the Inference tab's
rows in it) and, when asked, locust-inference's route (``latency.json`` so far)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust_inference.tab import ROUTE, TAB_KEY

from servers import children
from support.runs import REPO_ROOT

__all__ = ["Poll", "get", "poll", "post", "quit_cleanly", "started"]

POLL_EVERY_S = 0.3
POLL_LIMIT_S = 120  # a run that never gets where a test waits for fails its test, not hangs it


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as response:
        assert response.status == 200


@dataclass(frozen=True)
class Poll:
    """One look at the web UI: Locust's ``/stats/requests`` and, when asked for, the route's document."""

    stats: dict[str, Any]
    document: dict[str, Any] | None

    @property
    def state(self) -> str:
        """Locust's runner state: "running", "stopped", ..."""
        return str(self.stats["state"])

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The Inference tab's rows, as the page gets them (there must be exactly one such tab)."""
        (ours,) = [s["data"] for s in self.stats.get("extended_stats", []) if s["key"] == TAB_KEY]
        return ours  # type: ignore[no-any-return]

    @property
    def tab_counts(self) -> list[int]:
        """The tab's counts of successful requests (a request name's row each)."""
        return [r["value"] for r in self.rows if r["section"] == "requests" and r["measure"] == "count"]

    @property
    def entry(self) -> dict[str, Any] | None:
        """The document's one request entry; None before any (or without the document)."""
        if self.document is None:
            return None
        (entry,) = self.document["requests"].values() or [None]
        return entry  # type: ignore[no-any-return]


def poll(proc: subprocess.Popen[Any], base: str, *, document: bool = False) -> Iterator[Poll]:
    """The web UI at ``base`` (``http://host:port`` and its base path) every :data:`POLL_EVERY_S` while
    ``proc`` runs, for :data:`POLL_LIMIT_S` at most; a look before it listens is skipped."""
    deadline = time.monotonic() + POLL_LIMIT_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(POLL_EVERY_S)
        try:
            stats = get(f"{base}/stats/requests")
            route = get(f"{base}{ROUTE}") if document else None
        except OSError:
            continue  # not listening yet
        yield Poll(stats, route)


@contextlib.contextmanager
def started(tmp_path: Path, *commands: list[str], env: dict[str, str]) -> Iterator[list[subprocess.Popen[Any]]]:
    """The ``commands`` (a master first, then its workers), run from the repository with their output in
    ``tmp_path``'s ``out`` and ``err``; each is stopped when the block ends, however it ends."""
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        procs = [children.start(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=err) for cmd in commands]
        try:
            yield procs
        finally:
            for proc in procs:
                children.stop(proc)


def quit_cleanly(proc: subprocess.Popen[Any], tmp_path: Path) -> None:
    """Quits the web UI's process as its user would (latency.json is written at quit): it exits with 0."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, (tmp_path / "err").read_text()[-3000:]
