"""Several models (--model-name a,b,c, or a scenario's entries): the statistics latency.json subtracts from are
read as the run starts and as the process quits (a Ctrl-C too), model after model, and a server that takes the
requests and answers none must not hold the start or the quit for a budget per model (64 of them: over 10
minutes). Each whole read takes READ_BUDGET_S for all the models; those not read by then are None, named in one
warning line.

No server, and the test's clock: a real Triton cannot be made to go silent on cue, so the native request is
replaced by answers and hangs, and each hang moves the clock on by the timeout the request was given. In a
subprocess: importing Locust (for the Collector's Environment) monkey-patches the process (gevent).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from support.runs import clean_env

SCRIPT = """\
import json, logging, os, sys
from types import SimpleNamespace

from locust.env import Environment

from locust_inference import server_stats
from locust_inference._native import Measurements, RequestTimeoutError
from locust_inference.latency import Collector
from locust_inference.options import resolve

HOST = "http://127.0.0.1:9"  # never reached: http_request is replaced
SLOW_S = 4.0  # how late 'a' answers at the end


def entry(name, count):
    phases = {p: {"count": count, "ns": 1_000_000} for p in ("success", "fail", *server_stats.PHASES)}
    body = {"name": name, "version": "1", "inference_count": count, "execution_count": count}
    return json.dumps({"model_stats": [body | {"inference_stats": phases}]}).encode()


now = [0.0]
# at the start, all answer at once (none an ensemble: no configuration) but those silent at the start
table = {f"/v2/models/{m}/stats": (200, entry(m, 10)) for m in "abc" if m not in os.environ["SILENT_AT_START"]}
table |= {f"/v2/models/{m}/config": (404, b"{}") for m in "abc"}


def http_request(method, url, *, timeout, **_kw):
    assert method == "GET" and url.startswith(HOST) and timeout > 0, (url, timeout)
    answer = table.get(url.removeprefix(HOST))
    if answer is None:  # no answer: the request waits out its whole timeout
        now[0] += timeout
        raise RequestTimeoutError(f"no answer from {url} within {timeout} s")
    if url.endswith("/a/stats") and now[0] > 0:
        now[0] += SLOW_S
    return answer


warnings = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("locust_inference").addHandler(handler)
server_stats.http_request = http_request
server_stats.time = SimpleNamespace(monotonic=lambda: now[0])

run = resolve(SimpleNamespace(server="triton", model_name="a,b,c"), HOST, environ={})
collector = Collector(run, measured={m.name: Measurements() for m in run.per_model()})
collector.read_stats_at_start()
collector.wait_stats_at_start()
start_clock, start_warnings = now[0], list(warnings)
now[0] = 1.0  # the run; then the server goes silent as the process quits, but for 'a', SLOW_S late
table = {"/v2/models/a/stats": (200, entry("a", 30)), "/v2/models/a/config": (404, b"{}")}
summary = collector.summary(Environment(), None)
stats = {name: r["server_stats"] and r["server_stats"]["inference_count"] for name, r in summary["requests"].items()}
result = {"budget": server_stats.READ_BUDGET_S, "start_clock": start_clock, "quit_s": now[0] - 1.0}
result |= {"start_warnings": start_warnings}
print(json.dumps(result | {"stats": stats, "warnings": warnings}))
"""


def run(silent_at_start: str) -> dict[str, Any]:
    env = clean_env(SILENT_AT_START=silent_at_start)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_read_at_quit_takes_one_budget_for_all_the_models() -> None:
    """'a' answers 4 s late, 'b' never does, and 'c' is not read: the budget is spent by then."""
    result = run("")
    budget = result["budget"]  # READ_BUDGET_S, from the subprocess: importing it here would import Locust
    assert result["start_clock"] == 0.0, result  # at the start every model answered at once
    assert result["quit_s"] <= budget, result  # 24 s with a budget of its own for each model
    assert result["stats"] == {"triton/a": 20, "triton/b": None, "triton/c": None}, result
    assert result["warnings"] == [
        "locust-inference: statistics of 'triton/b', 'triton/c' not read: "
        f"the statistics took over {budget:g} s (a slow or silent server)"
    ], result


def test_the_read_at_start_takes_one_budget_for_all_the_models() -> None:
    """'b' and 'c' are silent as the run starts: the start waits one budget for them all, not one each (the
    reads ran side by side in the threadpool, each with a budget of its own, and the clock reached 20 s)."""
    result = run("bc")
    budget = result["budget"]
    assert result["start_clock"] == budget, result  # 'b' waited the whole budget out; 'c' was not asked
    assert result["start_warnings"] == [
        "locust-inference: statistics of 'triton/b', 'triton/c' not read: "
        f"the statistics took over {budget:g} s (a slow or silent server)"
    ], result
