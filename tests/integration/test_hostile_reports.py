"""A master trusts nothing in a worker's report: a forged latency entry (a histogram header claiming a 4 GiB
payload, a non-bytes value, a non-dict entry) is refused with one line naming the worker, and the run and
the other workers' measurements go on."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from locust_inference import LatencyHistogram, Measurements
from support.runs import LOCUST, REPO_ROOT, clean_env

from servers import children
from servers.launch import free_port

NAME = "triton/tiny_onnx"
FORGED_ID = "forged_worker_7f3a"
MASTER_MEMORY_LIMIT = 3 << 30  # address space: a 4 GiB allocation fails, as under a container's limit

# A worker as Locust's own runner speaks to the master (locust.rpc: zmq DEALER, msgpack Messages): once told
# to go (a line on stdin), it says it is ready, waits for the ack, sends one stats report holding our entry
# (argv[3], JSON with hex blobs, under argv[4]: latency.REPORT_KEY) and Locust's own parts empty, then quits.
# Started ahead (Python and Locust take seconds to start on a loaded machine), it reaches the master at once
# when told to, while the run (some seconds) is still on.
FORGED_WORKER = """
import json, sys
import locust
from locust.rpc import Message, zmqrpc
from locust.stats import RequestStats

port, client_id, entry = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
entry = {name: bytes.fromhex(blob) if isinstance(blob, str) else blob for name, blob in entry.items()}
sys.stdin.readline()
client = zmqrpc.Client("127.0.0.1", port, client_id)
client.send(Message("client_ready", locust.__version__, client_id))
ack = client.recv()
assert ack.type == "ack", ack
stats = RequestStats()
report = {
    "stats": [],
    "stats_total": stats.total.get_stripped_report(),
    "errors": {},
    "user_classes_count": {},
    "user_count": 0,
    sys.argv[4]: entry,
}
client.send(Message("stats", report, client_id))
client.send(Message("quit", None, client_id))
client.close(linger=5000)
print("sent")
"""


# HdrHistogram's V2 encoding starts with this cookie, then the payload's length (big-endian u32).
V2_COOKIE = bytes.fromhex("1c849313")


def forged_4gib_blob() -> bytes:
    """A worker's empty Measurements whose first histogram's V2 header claims a payload of 2^32 - 1 bytes."""
    blob = bytearray(Measurements().to_bytes())
    first = blob.index(V2_COOKIE)  # after the magic, the counters and the histogram's u32 length
    blob[first + 4 : first + 8] = (2**32 - 1).to_bytes(4, "big")
    return bytes(blob)


MAGIC = Measurements().to_bytes()[:4]  # the wire format's marker and version, alone: too short


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MASTER_MEMORY_LIMIT, MASTER_MEMORY_LIMIT))


def start_forged_worker(port: int, entry: str, key: str) -> subprocess.Popen[str]:
    """FORGED_WORKER, started and waiting to be told to go (:func:`send_forged_report`)."""
    return subprocess.Popen(
        [sys.executable, "-c", FORGED_WORKER, str(port), FORGED_ID, entry, key],
        cwd=REPO_ROOT, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def send_forged_report(forged: subprocess.Popen[str]) -> None:
    """Tells the forged worker to go, and waits until it has sent its report and quit."""
    out, err = forged.communicate("go\n", timeout=60)
    assert forged.returncode == 0 and out == "sent\n", err[-2000:]


def wait_for(path: Path, needle: str, proc: subprocess.Popen[Any], timeout: float = 120) -> None:
    """Until ``needle`` is in the file ``path`` (a hang guard, not a measurement)."""
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {needle!r}:\n{path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} within {timeout} s:\n{path.read_text()[-3000:]}")
        time.sleep(0.2)


def test_a_forged_report_is_refused_in_one_line_and_the_run_merges_the_real_worker(triton, tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(SERVER="triton", MODEL_NAME="tiny_onnx")
    # no metrics endpoint: its "connection refused" would be one more line with "refused" in the log
    common = ["-f", str(REPO_ROOT / "locustfile.py"), "--host", triton.url, "--metrics-url", "none", "HighUser"]
    master_log, worker_log = tmp_path / "master.log", tmp_path / "worker.log"
    prefix = tmp_path / "run"
    with master_log.open("w") as mlog, worker_log.open("w") as wlog:
        master = children.start(
            [LOCUST, *common, "--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
             str(port), "--expect-workers", "1", "-u", "2", "-r", "2", "-t", "8s", "--csv", str(prefix)],
            cwd=REPO_ROOT, env=env, stdout=mlog, stderr=subprocess.STDOUT, preexec_fn=limit_memory,
        )  # fmt: skip
        worker = children.start(
            [LOCUST, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=wlog, stderr=subprocess.STDOUT,
        )  # fmt: skip
        entry = json.dumps({NAME: forged_4gib_blob().hex(), "second": 17})
        forged = start_forged_worker(port, entry, "locust_inference")
        try:
            # a report of the real worker is merged first: the master prints Locust's table with its requests
            wait_for(master_log, f"infer    {NAME}", master)
            send_forged_report(forged)
            master.wait(timeout=120)
            # before waiting for the worker, which outlives a master that died
            assert master.returncode == 0, f"master exited {master.returncode}:\n{master_log.read_text()[-3000:]}"
            worker.wait(timeout=60)
        finally:
            forged.kill()
            forged.wait()
            children.kill(master)
            children.kill(worker)
    log = master_log.read_text()
    assert "Traceback" not in log and "Uncaught exception" not in log, log[-3000:]
    refused = [line for line in log.splitlines() if "refused" in line]
    assert len(refused) == 1, log[-3000:]
    assert f"from worker '{FORGED_ID}'" in refused[0], refused[0]
    assert "refused 2 of the 2 latency entries" in refused[0], refused[0]
    assert "its header claims 4294967295 payload bytes, 1 are there" in refused[0], refused[0]
    # The real worker's reports, before and after the forged one, are all merged, and nothing of the forged.
    result = json.loads((tmp_path / "latency.json").read_text())
    assert list(result["requests"]) == [NAME]
    assert result["requests"][NAME]["failures"] == 0
    assert result["requests"][NAME]["count"] == result["locust"]["requests"] > 0


def good_blob(*latencies_ms: float, resent: int = 1) -> bytes:
    total = LatencyHistogram()
    for ms in latencies_ms:
        total.record(ms)
    return Measurements.from_histograms(total, total, total, LatencyHistogram(), resent=resent).to_bytes()


# Runs the master's listener on reports (stdin: a Python literal, [(client_id, our entry), ...]) and prints
# the lines it logged and what the collector holds. In a subprocess: importing Locust monkey-patches the process.
MERGE = """
import ast, json, logging, sys
from locust_inference.latency import REPORT_KEY, Collector, merge_report

lines = []
handler = logging.Handler()
handler.emit = lambda record: lines.append(record.getMessage())
logging.getLogger("locust_inference").addHandler(handler)
logging.getLogger("locust_inference").setLevel(logging.INFO)
collector = Collector(settings=None)  # a master's: no endpoint; add() does not use the settings
for client_id, entry in ast.literal_eval(sys.stdin.read()):
    merge_report(collector, client_id, {REPORT_KEY: entry})
print(json.dumps({
    "lines": lines,
    "count": {name: m.total.count for name, m in collector.measured.items()},
    "resent": {name: m.resent for name, m in collector.measured.items()},
    "window": [collector.window.total.count, collector.window.resent],
}))
"""


def merge(*reports: tuple[str, Any]) -> dict[str, Any]:
    # on stdin: 105 reports of nine histograms each are more than one argument may hold (128 KiB)
    proc = subprocess.run(
        [sys.executable, "-c", MERGE], input=repr(list(reports)),
        cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("not a dict", ": of type str, not a dict of measurements"),
        ([good_blob(1.0)], ": of type list, not a dict of measurements"),
        ({NAME: "text"}, f": {NAME!r}: of type str, not bytes"),
        ({NAME: None}, f": {NAME!r}: of type NoneType, not bytes"),
        ({7: good_blob(1.0)}, ": 7: the name is of type int, not str"),
        ({NAME: MAGIC}, f": {NAME!r}: not a locust-inference measurement: too short"),
        ({NAME: forged_4gib_blob()}, f": {NAME!r}: not a serialised latency histogram: its header claims 4294967295"),
    ],
)
def test_a_bad_entry_is_refused_in_one_line_and_the_rest_merged(entry: Any, reason: str) -> None:
    if isinstance(entry, dict):
        entry = {**entry, "other": good_blob(2.0, 3.0)}
    got = merge(("worker_1", entry), ("worker_2", {NAME: good_blob(4.0)}))
    assert len(got["lines"]) == 1, got["lines"]
    line = got["lines"][0]
    assert line.startswith("refused 1 of the ") and " latency entries from worker 'worker_1': " in line, line
    assert reason in line, line
    expected = {NAME: 1, "other": 2} if isinstance(entry, dict) else {NAME: 1}  # worker_2's, the rest of 1's
    assert got["count"] == expected
    assert got["window"][0] == sum(expected.values())


def test_a_merge_that_would_overflow_is_refused_and_adds_nothing() -> None:
    got = merge(("worker_1", {NAME: good_blob(resent=2**64 - 1)}), ("worker_2", {NAME: good_blob(1.0)}))
    assert got["lines"] == [
        f"refused 1 of the 1 latency entries from worker 'worker_2': {NAME!r}: merging would overflow the resent count"
    ]
    assert (got["count"], got["resent"]) == ({NAME: 0}, {NAME: 2**64 - 1})
    assert got["window"] == [0, 2**64 - 1]


def test_a_report_naming_too_many_requests_is_refused_past_the_limit() -> None:
    limit = 100  # latency.MAX_NAMES
    got = merge(("worker_1", {f"n{i}": good_blob(1.0) for i in range(limit + 5)}))
    assert len(got["count"]) == limit
    assert got["lines"] == [
        f"refused 5 of the {limit + 5} latency entries from worker 'worker_1': 'n{limit}': "
        f"more than {limit} request names"
    ]
