"""distributed.sh's roles across hosts: each "host" a Linux network namespace with its own address on a
bridge (tests/support/netns.py): the reference Triton in one, the master (ROLE=master) in another, and two worker
hosts (ROLE=worker, WORKERS=2) with a hostname each. Needs root; without network namespaces these tests
fail, they are not skipped.

The Triton here only serves inference to requests carrying ``triton-access-token: <TOKEN>`` (Triton's
restricted API): the master is given the token as a header too, each worker host has its own (one in
LOCUST_HEADER, one in a file, --header-file). Every process records the Locust messages it receives and
each worker the histograms it reports (tests/support/locustfiles/recorded.py).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import msgpack
import pytest
from locust_inference import LatencyHistogram
from support.netns import Network, network, pids_in
from support.runs import REPO_ROOT, clean_env

from servers import children
from servers.launch import RunningServer, in_netns, triton_server

pytestmark = pytest.mark.root  # network namespaces

TOKEN = f"mh-{secrets.token_hex(16)}"  # random: it can only have come from this test
ACCESS_HEADER = "triton-access-token"
MODEL = "tiny_onnx"
NAME = f"triton/{MODEL}"
MASTER_PORT = "5557"
LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "recorded.py"
HOSTNAMES = {"master": "master-host", "worker1": "worker-host-1", "worker2": "worker-host-2"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def hosts() -> Iterator[Network]:
    with network(["server", "master", "worker1", "worker2"]) as net:
        yield net


@pytest.fixture(scope="module")
def netns_triton(hosts: Network) -> Iterator[RunningServer]:
    with triton_server(
        models=[MODEL],
        http_address=hosts.addresses["server"],
        netns=hosts.namespaces["server"],
        env={"TRITON_INFERENCE_TOKEN": TOKEN},
    ) as server:
        yield server


@dataclass(frozen=True)
class Counts:
    success: int
    inferences: int


def triton_counts(server: RunningServer) -> Counts:
    """Triton's own cumulative counters for the model, read inside the server's namespace."""

    def get() -> dict[str, Any]:
        with _OPENER.open(f"{server.url}/v2/models/{MODEL}/stats", timeout=10) as resp:
            return json.loads(resp.read())

    stats = in_netns(server.netns or "", get)["model_stats"][0]
    return Counts(int(stats["inference_stats"]["success"]["count"]), int(stats["inference_count"]))


@dataclass
class Cluster:
    master: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]
    results: Path
    records: Path
    namespaces: dict[str, str]

    def log(self, host: str) -> str:
        return self.logs[host].read_text(errors="replace")

    def events(self, host: str) -> str:
        """The end of the host's log without Locust's stats tables, which fill it every 2 s."""
        table = ("Type ", "----", "infer ", "         Aggregated ")
        lines = [line for line in self.log(host).splitlines() if line.strip() and not line.startswith(table)]
        return "\n".join(lines)[-4000:]

    def wait(self, host: str, timeout: float) -> int:
        proc = self.master if host == "master" else self.workers[host]
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{host} still running after {timeout} s\n{self.events(host)}\n{self.stacks(host)}"
            ) from None

    def stacks(self, host: str) -> str:
        """The stacks of the host's Locust processes, threads and greenlets (written by recorded.py on signal)."""
        locusts = [pid for pid in pids_in(self.namespaces[host]) if _is_locust(pid)]
        for pid in locusts:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
                os.kill(pid, signal.SIGUSR2)
        time.sleep(2)
        found = []
        for pid in locusts:
            for kind in ("threads", "greenlets"):
                path = self.records / f"{pid}.{kind}"
                found.append(f"--- {pid} {kind}:\n{path.read_text()[-20000:] if path.exists() else '(none written)'}")
        return "\n".join(found)


@contextlib.contextmanager
def cluster(
    hosts: Network,
    server: RunningServer,
    tmp_path: Path,
    *,
    class_name: str,
    users: int,
    run_time: str,
    extra: str = "",
) -> Iterator[Cluster]:
    """Master on host "master", two workers on each worker host; everything it started is stopped at exit."""
    conf = tmp_path / "multihost.conf"
    conf.write_text(
        f"locustfile = {LOCUSTFILE}\nclass-name = {class_name}\nusers = {users}\nspawn-rate = {users}\n"
        f"run-time = {run_time}\nexpect-workers = 4\nstop-timeout = 10\nmaster-bind-host = 127.0.0.1\n{extra}"
    )
    header_file = tmp_path / "worker2-headers"
    header_file.write_text(f"# this host's own copy of the token\n{ACCESS_HEADER}: {TOKEN}\n")
    records, results = tmp_path / "records", tmp_path / "results"
    base = clean_env(HOST=server.url, RECORD_DIR=str(records), MASTER_PORT=MASTER_PORT)
    env = {
        "master": {
            **base,
            "ROLE": "master",
            "MASTER_BIND": hosts.addresses["master"],
            "RESULTS_DIR": str(results),
            "LOCUST_HEADER": f"{ACCESS_HEADER}: {TOKEN}",
        },
        "worker1": {**base, "ROLE": "worker", "MASTER_HOST": hosts.addresses["master"], "WORKERS": "2"},
        "worker2": {**base, "ROLE": "worker", "MASTER_HOST": hosts.addresses["master"], "WORKERS": "2"},
    }
    env["worker1"]["LOCUST_HEADER"] = f"{ACCESS_HEADER}: {TOKEN}"
    env["worker2"]["LOCUST_HEADER_FILE"] = str(header_file)
    logs = {host: tmp_path / f"{host}.log" for host in env}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files: list[TextIO] = []
    try:
        for host, host_env in env.items():  # the master first; workers wait for its port (MASTER_WAIT) anyway
            log = logs[host].open("w")
            files.append(log)
            cmd = hosts.exec(host, "./distributed.sh", str(conf), MODEL, "triton", hostname=HOSTNAMES[host])
            procs[host] = children.start(cmd, cwd=REPO_ROOT, env=host_env, stdout=log, stderr=subprocess.STDOUT)
        workers = {h: p for h, p in procs.items() if h != "master"}
        yield Cluster(procs["master"], workers, logs, results, records, hosts.namespaces)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                children.kill(proc)
        for log in files:
            log.close()


def _is_locust(pid: int) -> bool:
    """Whether ``pid`` runs Locust (``python .../locust ...``), not a shell that a signal would end."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"/locust") for arg in argv[:2])


def merged_worker_histograms(records: Path) -> tuple[dict[str, LatencyHistogram], LatencyHistogram, LatencyHistogram]:
    """Per worker id, its total-latency histogram; and every worker's total and TTFB merged offline."""
    per_worker, total, ttfb = {}, LatencyHistogram(), LatencyHistogram()
    for path in sorted(records.glob("*.histograms.json")):
        record = json.loads(path.read_text())
        mine = LatencyHistogram.from_bytes(base64.b64decode(record["total"]))
        per_worker[record["client_id"]] = mine
        total.add(mine)
        ttfb.add(LatencyHistogram.from_bytes(base64.b64decode(record["ttfb"])))
    return per_worker, total, ttfb


def received_messages(path: Path) -> list[bytes]:
    data, messages = path.read_bytes(), []
    while data:
        size = int.from_bytes(data[:4], "big")
        messages.append(data[4 : 4 + size])
        data = data[4 + size :]
    return messages


def host_of(client_id: str) -> str:
    return client_id.rsplit("_", 1)[0]


def test_triton_refuses_inference_without_the_token(netns_triton: RunningServer) -> None:
    """The control for the header checks below: this Triton answers no request that lacks the token."""

    def post() -> int:
        request = urllib.request.Request(f"{netns_triton.url}/v2/models/{MODEL}/infer", data=b"{}", method="POST")
        try:
            with _OPENER.open(request, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    assert in_netns(netns_triton.netns or "", post) == 403


def test_two_worker_hosts_give_exact_merged_results_and_the_token_never_leaves_a_host(
    hosts: Network, netns_triton: RunningServer, tmp_path: Path
) -> None:
    before = triton_counts(netns_triton)
    with cluster(hosts, netns_triton, tmp_path, class_name="HighUser", users=8, run_time="6s") as run:
        assert run.wait("master", 180) == 0, run.events("master")
        for host in run.workers:
            assert run.wait(host, 60) == 0, run.events(host)
    after = triton_counts(netns_triton)
    result = json.loads((run.results / "latency.json").read_text())
    entry = result["requests"][NAME]

    # Every request was answered (this Triton refuses any without the token) and stop-timeout let each
    # finish: the counts merged at the master are the server's own.
    assert entry["failures"] == 0
    assert entry["count"] == after.success - before.success > 0
    assert result["locust"]["requests"] == entry["count"]
    assert result["server_stats"]["inference_count"] == after.inferences - before.inferences

    # The HDR histograms the workers reported, merged here, give the master's percentiles exactly.
    per_worker, total, ttfb = merged_worker_histograms(run.records)
    assert sorted(host_of(w) for w in per_worker) == [*[HOSTNAMES["worker1"]] * 2, *[HOSTNAMES["worker2"]] * 2]
    assert all(h.count > 0 for h in per_worker.values()), {w: h.count for w, h in per_worker.items()}
    assert total.count == entry["count"]
    assert total.summary() == entry["latency_ms"]
    assert ttfb.summary() == entry["ttfb_ms"]

    # What every process received over Locust's connections: the master's custom options reach the
    # workers (the spawn messages), its header does not; nothing anywhere carries the token.
    spawns = []
    for path in run.records.glob("*.messages"):
        for raw in received_messages(path):
            assert TOKEN.encode() not in raw, path.name
            kind, data, _node = msgpack.loads(raw, raw=False, strict_map_key=False)  # Locust's Message
            if kind == "spawn":
                spawns.append(data["parsed_options"])
    assert len(spawns) >= 4  # one per worker at least
    assert all(options["model_name"] == MODEL and options["header"] is None for options in spawns)


def test_open_loop_rates_from_two_worker_hosts_add_up(
    hosts: Network, netns_triton: RunningServer, tmp_path: Path
) -> None:
    """8 LowUser streams of 25 req/s over 4 workers on 2 hosts: the master's offered rate is 200 req/s."""
    before = triton_counts(netns_triton)
    with cluster(
        hosts, netns_triton, tmp_path, class_name="LowUser", users=8, run_time="5s", extra="rate = 25\n"
    ) as run:
        assert run.wait("master", 180) == 0, run.events("master")
        for host in run.workers:
            assert run.wait(host, 60) == 0, run.events(host)
    served = triton_counts(netns_triton).success - before.success
    entry = json.loads((run.results / "latency.json").read_text())["requests"][NAME]
    ol = entry["open_loop"]
    assert (ol["offered_rate_per_s"], ol["streams"]) == (200, 8)
    # Every request scheduled ended once, in a report that reached the master (none pending): dropped,
    # completed, or unfinished (its stream stopped first).
    assert ol["pending"] == 0 and ol["scheduled"] == ol["dropped"] + ol["completed"] + ol["unfinished"]
    # A stopping stream abandons the requests whose time came but that had not left yet: never sent.
    assert ol["sent"] + ol["dropped"] <= ol["scheduled"] <= ol["sent"] + ol["dropped"] + ol["unfinished"]
    assert ol["completed"] == entry["count"] > 0
    # A stream stops with requests still out (unfinished): Triton may have run them or not.
    assert ol["completed"] <= served <= ol["sent"]
    per_worker, total, _ = merged_worker_histograms(run.records)
    assert len(per_worker) == 4 and total.count == entry["count"]


def stats_count(stats_csv: Path) -> int:
    """Requests counted so far in the master's stats CSV (rewritten every second), 0 before it exists."""
    with contextlib.suppress(OSError, ValueError):
        for row in csv.DictReader(stats_csv.read_text().splitlines()):
            if row["Name"] == "Aggregated":
                return int(row["Request Count"])
    return 0


def test_a_worker_host_that_dies_stops_the_run_by_name_and_leaves_no_process(
    hosts: Network, netns_triton: RunningServer, tmp_path: Path
) -> None:
    with cluster(hosts, netns_triton, tmp_path, class_name="HighUser", users=8, run_time="5m") as run:
        deadline = time.monotonic() + 90
        while stats_count(run.results / "multihost_stats.csv") == 0 and time.monotonic() < deadline:
            assert run.master.poll() is None, run.events("master")
            time.sleep(0.5)
        assert stats_count(run.results / "multihost_stats.csv") > 0, run.events("master")
        started = {host: pids_in(hosts.namespaces[host]) for host in HOSTNAMES}
        assert len(started["worker2"]) >= 3, started  # distributed.sh and its two workers
        for pid in started["worker2"]:  # the host goes down: all of its processes at once
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert run.wait("master", 60) == 1, run.events("master")
        assert run.wait("worker1", 60) == 0, run.events("worker1")
    lines = [line for line in run.log("master").splitlines() if line.startswith("locust-inference: worker ")]
    assert len(lines) == 1, run.events("master")
    assert lines[0].startswith(
        f"locust-inference: worker host {HOSTNAMES['worker2']} stopped sending heartbeats (down or unreachable; "
    ), lines[0]
    assert HOSTNAMES["worker1"] not in lines[0]
    assert (run.results / "latency.json").exists()  # what arrived is still written
    leftovers = {pid for pids in started.values() for pid in pids if Path(f"/proc/{pid}").exists()}
    assert leftovers == set(), leftovers
    for host in HOSTNAMES:
        assert pids_in(hosts.namespaces[host]) == set(), host


def test_a_worker_that_cannot_reach_its_master_says_so_in_one_line(hosts: Network, tmp_path: Path) -> None:
    conf = tmp_path / "w.conf"
    conf.write_text(f"locustfile = {LOCUSTFILE}\nclass-name = HighUser\nexpect-workers = 1\n")
    nowhere = "10.77.0.99"  # on the bridge's subnet, no host has it
    env = clean_env(ROLE="worker", MASTER_HOST=nowhere, MASTER_WAIT="3", RECORD_DIR=str(tmp_path / "records"))
    cmd = hosts.exec("worker1", "./distributed.sh", str(conf), MODEL, "triton")
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        line
        for line in done.stderr.splitlines()
        if line.startswith(f"distributed.sh: cannot reach the master at {nowhere}:5557 within 3 s (")
    ]
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "start it first (ROLE=master) or fix MASTER_HOST/MASTER_PORT" in done.stderr
    assert done.stdout == ""  # no worker was started
    assert pids_in(hosts.namespaces["worker1"]) == set()
