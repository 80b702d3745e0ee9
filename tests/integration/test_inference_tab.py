"""The web UI's "Inference" tab (locust_inference.webui): live while the test runs, latency.json's numbers at
its end, in headless Chromium against a real Locust run on the real Triton; and no secret in its route."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from locust_inference.tab import COLUMNS, ROUTE, TAB_KEY, rows
from support.runs import LOCUST, REPO_ROOT, clean_env
from support.web_ui import get, poll, post, quit_cleanly, started

from servers import children
from servers.launch import free_port

SECRET = "s3cret-tab-token"


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI is set, so this is an error): apt-get install -y chromium")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


class _Tables(HTMLParser):
    """Every <table>'s header cells and rows of cells, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list[Any]]] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append({"head": [], "rows": []})
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            table = self.tables[-1]
            if self._in_head:
                table["head"] = self._row
            else:
                table["rows"].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def shown(value: Any) -> str:
    """A cell's value as the page prints a JSON number (JavaScript's shortest form) or string."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def tab(port: int, tmp_path: Path) -> list[list[str]]:
    """The Inference tab's table as headless Chromium renders it: the page polls /stats/requests itself."""
    proc = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            # virtual time: the page's scripts and its first polls run before the DOM is dumped
            "--virtual-time-budget=8000",
            "--dump-dom",
            f"http://127.0.0.1:{port}/?tab={TAB_KEY}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parser = _Tables()
    parser.feed(proc.stdout)
    titles = [c["title"] for c in COLUMNS]
    found = [t for t in parser.tables if t["head"] == titles]
    assert len(found) == 1, (parser.tables[:3], proc.stdout[-3000:])
    return found[0]["rows"]


def test_the_inference_tab_is_live_and_ends_equal_to_latency_json(triton, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [LOCUST, "-f", "locustfile.py", "--host", triton.url, "LowUser", "--rate", "50", "-u", "2", "-r", "2"]
    cmd += ["-t", "4s", "--autostart", "--web-host", "127.0.0.1", "--web-port", str(port)]
    cmd += ["--csv", str(tmp_path / "run"), "--header", f"Authorization: Bearer {SECRET}"]
    live_counts: list[int] = []  # the tab's count of successful requests, as the page polls it while running
    state = None
    with started(tmp_path, cmd, env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx")) as (proc,):
        for look in poll(proc, base):
            state, counts = look.state, look.tab_counts
            if state == "running" and counts:
                live_counts.append(counts[0])
            if state == "stopped":
                break
        assert state == "stopped", (tmp_path / "err").read_text()[-3000:]
        route = get(f"{base}{ROUTE}")
        shown_rows = tab(port, tmp_path)
        after = get(f"{base}{ROUTE}")
        quit_cleanly(proc, tmp_path)  # the UI would stay up: quitting writes latency.json
    written = json.loads((tmp_path / "latency.json").read_text())
    # live: the tab's count grew while the test ran
    assert len(set(live_counts)) >= 2 and live_counts == sorted(live_counts), live_counts
    # the route served latency.json's document, frozen once the test stopped
    assert route == written and after == written, (route, written)
    # every number of the document is in the tab, as latency.json has it (to the µs)
    keys = [c["key"] for c in COLUMNS]
    # (the page sorts a table by its "name" column, keeping the order of rows of the same name)
    expected = [[shown(r.get(k)) for k in keys] for r in sorted(rows(written), key=lambda r: r["name"])]
    assert shown_rows == expected
    # and the ones the tab is for are there: percentiles, the open loop's counters, Triton's breakdown
    by_measure = {(row[0], row[2]): row for row in shown_rows}
    (entry,) = written["requests"].values()
    for measure in ("latency_ms", "ttfb_ms", "service_ms"):
        row = by_measure[("requests", measure)]
        assert row[keys.index("p50")] == shown(entry[measure]["p50"]) != ""
        assert row[keys.index("p999")] == shown(entry[measure]["p99.9"]) != ""
    for counter in ("scheduled", "sent", "completed", "dropped", "unfinished", "achieved_per_s"):
        assert by_measure[("open_loop", counter)][keys.index("value")] == shown(round(entry["open_loop"][counter], 3))
    assert by_measure[("open_loop", "lag_ms")][keys.index("p99")] == shown(entry["open_loop"]["lag_ms"]["p99"])
    assert written["server_stats"] is not None and written["server_stats"]["inference_count"] > 0
    assert by_measure[("server_stats", "compute_infer_ms")][keys.index("value")] == shown(
        round(written["server_stats"]["compute_infer_ms"], 3)
    )
    assert SECRET not in json.dumps(route)


ROUTE_SCRIPT = """\
import json, sys, time

import gevent
from locust import events
from locust.argument_parser import parse_options
from locust.env import Environment

import locustfile  # the repository's: its user classes, and locust_inference's listeners

args = sys.argv[1:]
options = parse_options(args)
environment = Environment(
    user_classes=[locustfile.LowUser], host=options.host, parsed_options=options, events=events
)
runner = environment.create_local_runner()
web_ui = environment.create_web_ui("127.0.0.1", 0, delayed_start=True)
events.init.fire(environment=environment, runner=runner, web_ui=web_ui)
runner.start(1, spawn_rate=1)
while runner.stats.total.num_requests < 20:
    gevent.sleep(0.05)
client = web_ui.app.test_client()
live = client.get("/locust-inference/latency.json")
stats = client.get("/stats/requests")
while runner.stats.total.num_requests < 60:  # more requests than Triton had answered at the first reads
    gevent.sleep(0.05)
runner.stop()
stopped = client.get("/locust-inference/latency.json")
second = int(time.time())
while int(time.time()) == second:  # latency.json's times are to the second: the reset comes in the next
    gevent.sleep(0.05)
client.post("/stats/reset")  # the web UI's Reset Stats, after the test stopped
reset = client.get("/locust-inference/latency.json")
print(json.dumps({
    "live": [live.status_code, live.get_data(as_text=True)],
    "stats": [stats.status_code, stats.get_data(as_text=True)],
    "stopped": [stopped.status_code, stopped.get_data(as_text=True)],
    "reset": [reset.status_code, reset.get_data(as_text=True)],
}))
"""


def test_the_route_shows_measurements_and_no_secret(triton, tmp_path: Path) -> None:
    """Flask's test client on Locust's own web UI app, in a process of its own (importing Locust patches it)."""
    script = tmp_path / "route.py"
    script.write_text(ROUTE_SCRIPT)
    args = ["--host", triton.url, "--header", f"Authorization: Bearer {SECRET}"]
    args += ["--rate", "50", "--csv", str(tmp_path / "run")]
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=REPO_ROOT,
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    for what, (status, body) in answers.items():
        assert status == 200, (what, body[:500])
        assert SECRET not in body, (what, body[:3000])
    live = json.loads(answers["live"][1])
    (entry,) = live["requests"].values()
    assert entry["count"] > 0 and entry["latency_ms"]["p50"] > 0
    assert live["host"] == triton.url.rstrip("/")
    (ours,) = [s for s in json.loads(answers["stats"][1])["extended_stats"] if s["key"] == TAB_KEY]
    name = next(iter(live["requests"]))
    (count,) = [r for r in ours["data"] if (r["section"], r["name"], r["measure"]) == ("requests", name, "count")]
    assert count["value"] >= entry["count"]  # asked after the route: as many requests or more
    stopped = json.loads(answers["stopped"][1])
    # read from Triton after the stop: every request the run counted had been answered (and counted) there
    (at_stop,) = stopped["requests"].values()
    assert at_stop["count"] >= 60 and stopped["server_stats"]["inference_count"] >= at_stop["count"], stopped
    # reset after the stop: nothing measured, over a test that ends where it restarted
    reset = json.loads(answers["reset"][1])
    (after_reset,) = reset["requests"].values()
    assert after_reset["count"] == 0 and reset["ended"] == reset["started"] > stopped["ended"], reset


def test_on_a_master_the_tab_shows_the_workers_merged_numbers(triton, tmp_path: Path) -> None:
    """A master with its web UI (under a --web-base-path) and two workers: the tab's rows (as /stats/requests
    gives them to the page) are the merge of the workers' reports, live, and at the end latency.json's."""
    web, master_port = free_port(), free_port()
    common = ["-f", str(RECORDED_LOCUSTFILE), "--host", triton.url, "LowUser", "--rate", "40"]
    common += ["--header", f"Authorization: Bearer {SECRET}"]
    master = [LOCUST, *common, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)]
    # workers report every 3 s (Locust's WORKER_REPORT_INTERVAL); 9 s holds at least two reports while the
    # state is "running" whatever their phase, so the live count is seen to grow (4 s held only one at times)
    master += ["--expect-workers", "2", "-u", "4", "-r", "4", "-t", "9s", "--autostart"]
    master += ["--web-host", "127.0.0.1", "--web-port", str(web), "--web-base-path", "/ui"]
    master += ["--csv", str(tmp_path / "run")]
    base = f"http://127.0.0.1:{web}/ui"
    worker = [LOCUST, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]
    records = tmp_path / "records"
    env = clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", RECORD_DIR=str(records))
    live_counts: list[int] = []
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        procs = [children.start(master, cwd=REPO_ROOT, env=env, stdout=out, stderr=err)]
        procs += [children.start(worker, cwd=REPO_ROOT, env=env, stdout=out, stderr=err) for _ in range(2)]
        try:
            deadline = time.monotonic() + 120
            final: dict[str, Any] | None = None
            while procs[0].poll() is None and time.monotonic() < deadline:
                time.sleep(0.3)
                try:
                    stats = get(f"{base}/stats/requests")
                    route = get(f"{base}{ROUTE}")
                except OSError:
                    continue
                (ours,) = [s["data"] for s in stats.get("extended_stats", []) if s["key"] == TAB_KEY]
                counts = [r["value"] for r in ours if r["section"] == "requests" and r["measure"] == "count"]
                if stats["state"] == "running" and counts:
                    live_counts.append(counts[0])
                (entry,) = route["requests"].values() or [None]
                # the workers stop their users, then report them at their next report, each at its own phase:
                # once the master holds every worker's last report, nothing changes until it quits
                if stats["state"] == "stopped" and holds_every_last_report(entry, records, workers=2):
                    final = {"route": route, "rows": ours}
                    break
            assert final is not None, (tmp_path / "err").read_text()[-3000:]
            again = get(f"{base}{ROUTE}")
            procs[0].send_signal(signal.SIGTERM)
            assert procs[0].wait(timeout=60) == 0, (tmp_path / "err").read_text()[-3000:]
        finally:
            for proc in procs:
                children.stop(proc)
    written = json.loads((tmp_path / "latency.json").read_text())
    assert len(set(live_counts)) >= 2 and live_counts == sorted(live_counts), live_counts
    assert final["route"] == written and again == written, (final["route"], written)
    assert final["rows"] == rows(written)
    (entry,) = written["requests"].values()
    assert entry["open_loop"]["streams"] == 4 and entry["open_loop"]["pending"] == 0, entry["open_loop"]
    assert written["server_stats"] is not None and written["server_stats"]["inference_count"] >= entry["count"] > 0
    assert SECRET not in json.dumps(final)


def test_the_rows_render_any_section_the_document_gains() -> None:
    """Sections other parts add (token streaming, server metrics) appear without a change to the tab: a
    summary of percentiles as one row, a number as a row, a time series as its latest window."""
    document = {
        "version": 1,
        "server": "triton",
        "duration_s": 2.5,
        "requests": {
            "a/m": {
                "count": 3,
                "failures": None,
                "latency_ms": {"p50": 1.0, "p99.9": 2.0},
                "distribution": [[50.0, 1.0]],
                "tokens": {"ttft_ms": {"p99": 7.25}, "tokens_per_s": 12.34567},
            }
        },
        "server_metrics": {"windows": [{"gpu_util": 0.1}, {"gpu_util": 0.5}], "scrapes": 4},
    }
    assert rows(document) == [
        {"section": "run", "name": "", "measure": "duration_s", "value": 2.5},
        {"section": "requests", "name": "a/m", "measure": "count", "value": 3},
        {"section": "requests", "name": "a/m", "measure": "failures", "value": "n/a"},
        {"section": "requests", "name": "a/m", "measure": "latency_ms", "p50": 1.0, "p999": 2.0},
        {"section": "tokens", "name": "a/m", "measure": "ttft_ms", "p99": 7.25},
        {"section": "tokens", "name": "a/m", "measure": "tokens_per_s", "value": 12.346},
        {"section": "server_metrics", "name": "", "measure": "windows.latest.gpu_util", "value": 0.5},
        {"section": "server_metrics", "name": "", "measure": "scrapes", "value": 4},
    ]


def test_the_web_ui_reset_restarts_the_tab_and_latency_json_with_locusts_statistics(triton, tmp_path: Path) -> None:
    """The web UI's "Reset Stats" restarts Locust's statistics; the tab and latency.json restart with them, so
    latency.json counts the requests Locust counts, and the open loop's counters keep their identity."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [LOCUST, "-f", "locustfile.py", "--host", triton.url, "LowUser", "--rate", "50", "-u", "2", "-r", "2"]
    cmd += ["-t", "5s", "--autostart", "--web-host", "127.0.0.1", "--web-port", str(port)]
    cmd += ["--csv", str(tmp_path / "run")]
    before: int | None = None  # the tab's count when the reset was asked for
    after: list[int] = []  # and while the test ran on
    state = None
    with started(tmp_path, cmd, env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx")) as (proc,):
        for look in poll(proc, base):
            state, counts = look.state, look.tab_counts
            if state == "stopped":
                break
            if state != "running" or not counts:
                continue
            if before is None and counts[0] >= 60:
                before = counts[0]
                post(f"{base}/stats/reset")
            elif before is not None:
                after.append(counts[0])
        assert state == "stopped", (tmp_path / "err").read_text()[-3000:]
        quit_cleanly(proc, tmp_path)
    written = json.loads((tmp_path / "latency.json").read_text())
    (entry,) = written["requests"].values()
    assert before is not None and after and after[0] < before, (before, after)
    assert entry["count"] + entry["failures"] == written["locust"]["requests"], (entry["count"], written["locust"])
    ol = entry["open_loop"]
    assert ol["pending"] == 0 and ol["scheduled"] > 0, ol
    assert ol["carried"] + ol["scheduled"] == ol["dropped"] + ol["completed"] + ol["unfinished"], ol


RECORDED_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "recorded.py"
OPEN_LOOP_COUNTERS = ("carried", "scheduled", "dropped", "completed", "unfinished")


def holds_every_last_report(entry: dict[str, Any] | None, records: Path, workers: int) -> bool:
    """Whether the master's ``entry`` holds the report each of the ``workers`` took once its users had stopped
    (recorded.py's records in ``records``): its open-loop counters are the sums of what they sent since their
    reset. The workers stop their users, then send them at their next report (every 3 s, each worker at its own
    phase): the master's state is "stopped" before any of them arrived, and the first one can arrive seconds
    before the last."""
    sent = [json.loads(p.read_text()) for p in records.glob("*.histograms.json")]
    if entry is None or entry["open_loop"] is None or len(sent) != workers or not all(r["after_stop"] for r in sent):
        return False
    return all(entry["open_loop"][k] == sum(r["streams"][k] for r in sent) for k in OPEN_LOOP_COUNTERS)


def test_a_masters_reset_restarts_its_workers_measurements_too(triton, tmp_path: Path) -> None:
    """The web UI's "Reset Stats" on a master: the merged numbers restart, and the open loop's counters keep
    their identity (each worker restarts its own, carrying the requests pending at its restart)."""
    web, master_port = free_port(), free_port()
    base = f"http://127.0.0.1:{web}"
    common = ["-f", str(RECORDED_LOCUSTFILE), "--host", triton.url, "LowUser", "--rate", "40"]
    master = [LOCUST, *common, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)]
    master += ["--expect-workers", "2", "-u", "4", "-r", "4", "-t", "6s", "--autostart"]
    master += ["--web-host", "127.0.0.1", "--web-port", str(web), "--csv", str(tmp_path / "run")]
    worker = [LOCUST, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]
    records = tmp_path / "records"
    env = clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", RECORD_DIR=str(records))
    before: int | None = None
    after: list[int] = []
    last: Any = None  # the web UI's state and the route's entry, as last seen
    settled = False
    with started(tmp_path, master, worker, worker, env=env) as procs:
        for look in poll(procs[0], base, document=True):
            entry = look.entry
            if look.state == "running" and entry:
                if before is None and entry["count"] >= 60:
                    before = entry["count"]
                    post(f"{base}/stats/reset")
                elif before is not None:
                    after.append(entry["count"])
            last = (look.state, entry)
            # stream_seconds: the streams stopped; and not before every worker's last report is in
            if look.state == "stopped" and entry and entry["open_loop"]["stream_seconds"] > 0:
                settled = holds_every_last_report(entry, records, workers=2)
                if settled:
                    break
        assert settled, (last, (tmp_path / "err").read_text()[-2000:])
        quit_cleanly(procs[0], tmp_path)
    written = json.loads((tmp_path / "latency.json").read_text())
    (entry,) = written["requests"].values()
    assert before is not None and after and after[0] < before, (before, after)
    ol = entry["open_loop"]
    assert ol["streams"] == 4 and ol["pending"] == 0 and ol["scheduled"] > 0, ol
    assert ol["carried"] + ol["scheduled"] == ol["dropped"] + ol["completed"] + ol["unfinished"], ol


LATE_WORKER_SCRIPT = """\
import json, sys
from pathlib import Path

sys.path.insert(0, str(Path(sys.argv[2])))
from support.reset_race_probe import IMAGE, runner_shell  # Locust's own Environments and events, no sockets
from support.endpoints import triton_endpoint
from locust.runners import MasterRunner, WorkerRunner
from locust_inference import RequestSlot, latency
from locust_inference.options import Settings

url = sys.argv[1]
settings = Settings(server="triton", model="tiny_onnx", host=url, image=IMAGE)
master_env = runner_shell(MasterRunner)
master = latency.install(master_env, settings, None)
master_env.events.test_start.fire(environment=master_env)
workers = {}
for worker in ("a", "b"):
    env, endpoint = runner_shell(WorkerRunner), triton_endpoint(url, "tiny_onnx")
    workers[worker] = (latency.install(env, settings, endpoint), env, endpoint)


def send(worker, n):
    slot = RequestSlot()
    for _ in range(n):
        slot.submit(workers[worker][2])
        workers[worker][2].record(slot.wait(30))


def report(worker):
    data = {}
    workers[worker][1].events.report_to_master.fire(client_id=worker, data=data)
    return data


def deliver(worker, data):
    master_env.events.worker_report.fire(client_id=worker, data=data)


send("a", 3)
deliver("a", report("a"))  # heard from before the reset
send("a", 4)
late = report("a")  # taken before a's own restart
master.restart(workers=["a"])  # the web UI's Reset Stats on the master, a connected
deliver("a", late)  # from before the reset: dropped
send("b", 5)
deliver("b", report("b"))  # b joined after the reset and never restarts: kept
workers["a"][2].reset()
workers["a"][0].restart()  # a restarts (the master's message)
send("a", 6)
deliver("a", report("a"))  # kept
print(json.dumps({"count": master.measured[settings.name].total.count}))
"""


def test_a_worker_that_joins_after_a_reset_is_counted(triton, tmp_path: Path) -> None:
    """After a master's reset, a report a connected worker took before its own restart is dropped, and the
    reports of a worker that joined after the reset (which never restarts) are kept."""
    script = tmp_path / "late_worker.py"
    script.write_text(LATE_WORKER_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), triton.url, str(REPO_ROOT / "tests")],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"count": 5 + 6}


def test_a_new_test_from_the_web_ui_starts_the_numbers_afresh(triton, tmp_path: Path) -> None:
    """The web UI starts a second test after the first stopped: Locust clears its statistics, and the tab and
    latency.json start afresh with them (latency.json counts the requests Locust counts)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [LOCUST, "-f", "locustfile.py", "--host", triton.url, "LowUser", "--rate", "50", "-u", "2", "-r", "2"]
    cmd += ["-t", "3s", "--autostart", "--web-host", "127.0.0.1", "--web-port", str(port)]
    cmd += ["--csv", str(tmp_path / "run")]
    first: int | None = None  # the count at the end of the first test
    second: list[int] = []  # the counts while the second runs
    at_stop = (-1, -2)  # the tab's requests and Locust's, when the second test has stopped
    state = None
    with started(tmp_path, cmd, env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx")) as (proc,):
        for look in poll(proc, base, document=True):
            assert look.document is not None
            state, counts = look.state, [e["count"] for e in look.document["requests"].values()]
            if state == "stopped" and first is None:
                first = counts[0]
                form = urllib.parse.urlencode({"user_count": 2, "spawn_rate": 2, "host": triton.url, "run_time": "3s"})
                request = urllib.request.Request(f"{base}/swarm", data=form.encode())
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert json.loads(response.read())["success"], "the web UI did not start the test"
            elif first is not None and state == "running" and counts:
                second.append(counts[0])
            elif first is not None and state == "stopped" and second:
                # stopped: nothing changes now; the tab's numbers must be the second test's alone, as
                # Locust's (which it clears for a new test), not the sum of both tests
                (tab_entry,) = look.document["requests"].values()
                (total,) = [row for row in look.stats["stats"] if row["name"] == "Aggregated"]
                at_stop = (tab_entry["count"] + tab_entry["failures"], total["num_requests"])
                break
        assert state == "stopped" and second, (state, second, (tmp_path / "err").read_text()[-2000:])
        quit_cleanly(proc, tmp_path)
    written = json.loads((tmp_path / "latency.json").read_text())
    (entry,) = written["requests"].values()
    # a comparison of second[0] with first is no proof: a slow first test and a late first poll of the second
    # made the second's first count the larger once; the counts at the stop are exact
    assert first is not None and first > 0 and at_stop[0] == at_stop[1] > 0, (first, at_stop)
    assert entry["count"] + entry["failures"] == written["locust"]["requests"], (entry["count"], written["locust"])
    ol = entry["open_loop"]
    assert ol["streams"] == 2 and ol["pending"] == 0, ol
    assert ol["carried"] + ol["scheduled"] == ol["dropped"] + ol["completed"] + ol["unfinished"], ol


def test_with_two_models_the_tab_shows_each_models_triton_breakdown(triton, tmp_path: Path) -> None:
    """--model-name a,b: the tab reads each model's statistics (the run's own are none then) and shows each
    model's server-side breakdown under its request name, as latency.json has it at the end."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    names = ("triton/sleep_20ms", "triton/tiny_onnx")
    cmd = [LOCUST, "-f", "locustfile.py", "--host", triton.url, "HighUser", "-u", "2", "-r", "2", "-t", "4s"]
    cmd += ["--model-name", "sleep_20ms,tiny_onnx", "--autostart", "--web-host", "127.0.0.1", "--web-port", str(port)]
    cmd += ["--csv", str(tmp_path / "run")]
    live: list[dict[str, Any]] = []  # the tab's rows of each model's breakdown, as the page polls them while running
    state = None
    with started(tmp_path, cmd, env=clean_env(SERVER="triton")) as (proc,):
        for look in poll(proc, base):
            state = look.state
            counts = {
                r["name"]: r["value"]
                for r in look.rows
                if (r["section"], r["measure"]) == ("server_stats", "inference_count")
            }
            if state == "running" and counts:
                live.append(counts)
            if state == "stopped":
                break
        assert state == "stopped", (tmp_path / "err").read_text()[-3000:]
        route = get(f"{base}{ROUTE}")
        shown_rows = tab(port, tmp_path)
        quit_cleanly(proc, tmp_path)  # the UI would stay up: quitting writes latency.json
    written = json.loads((tmp_path / "latency.json").read_text())
    # live: each model's breakdown was there while the test ran (the background reads of Triton's statistics)
    assert any(set(counts) == set(names) for counts in live), live
    assert route == written, (route, written)
    keys = [c["key"] for c in COLUMNS]
    expected = [[shown(r.get(k)) for k in keys] for r in sorted(rows(written), key=lambda r: r["name"])]
    assert shown_rows == expected
    by_row = {(row[0], row[1], row[2]): row for row in shown_rows}
    for name in names:
        entry = written["requests"][name]
        server = entry["server_stats"]
        # Triton counted every request of this model we counted (and those the stop abandoned in flight)
        assert server is not None and server["inference_count"] >= entry["count"] > 0, (name, entry)
        for measure in ("inference_count", "queue_ms", "compute_infer_ms"):
            row = by_row[("server_stats", name, measure)]
            assert row[keys.index("value")] == shown(round(server[measure], 3)), (name, measure, row)
