"""Failures group by status and a normalised reason: an error page that carries a request id, a
counter or a timestamp makes one Locust failure entry, not one per request. The raw page is only in
the DEBUG_REQUESTS log.

The fault server stands in for the server here: Triton and LitServe answer a bad request with the
same text every time (Triton names a request id only when the request carries one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from support.runs import clean_env, run_locust

MODEL = "status500_request_id"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _run(fault_server, tmp_path: Path, model: str = MODEL, **env: str):
    run = run_locust(
        tmp_path,
        "--host",
        fault_server.url,
        "HighUser",
        users=2,
        run_time="2s",
        env=clean_env(SERVER="triton", MODEL_NAME=model, **env),
    )
    assert run.returncode == 1, run.stderr[-2000:]  # Locust's exit code when requests failed
    assert "Traceback" not in run.stderr and "panicked" not in run.stderr, run.stderr[-2000:]
    stats = run.stats(f"triton/{model}")
    requests = int(stats["Request Count"])
    assert requests > 2 and int(stats["Failure Count"]) == requests, stats
    # every answer the server gave was a different page
    assert len(set(fault_server.request_ids)) == len(fault_server.request_ids) >= requests
    return run, requests


def _locust_count(tmp_path: Path) -> int:
    """Locust's exact request count at the end (the CSV's rows may be a last snapshot before it)."""
    return json.loads((tmp_path / "latency.json").read_text())["locust"]["requests"]


def test_error_pages_differing_in_ids_are_one_failure_entry(fault_server, tmp_path: Path) -> None:
    run, requests = _run(fault_server, tmp_path)
    failures = run.failures()
    assert len(failures) == 1, [f["Error"] for f in failures[:5]]
    (failure,) = failures
    assert int(failure["Occurrences"]) == requests
    url = f"{fault_server.url}/v2/models/{MODEL}/infer"
    assert (
        f'HTTP 500 from {url}: {{"error": "injected failure", "request_id": "#", "seq": #, "time": "#-#-#:#:#.#"}}'
        in failure["Error"]
    ), failure["Error"]
    assert not UUID.search(run.stderr) and "locust_inference.debug" not in run.stderr


def test_debug_requests_logs_each_raw_error_page(fault_server, tmp_path: Path) -> None:
    run, _ = _run(fault_server, tmp_path, DEBUG_REQUESTS="true")
    assert len(run.failures()) == 1
    requests = _locust_count(tmp_path)
    lines = [line for line in run.stderr.splitlines() if "locust_inference.debug" in line]
    logged = [UUID.search(line) for line in lines]
    assert len(lines) == requests and all(logged), lines[:3]
    ids = [m.group(0) for m in logged if m]
    assert len(set(ids)) == requests and set(ids) <= set(fault_server.request_ids)
    assert all(f'"request_id": "{i}"' in line for i, line in zip(ids, lines, strict=True))


def test_error_pages_no_rule_normalises_stay_a_bounded_number_of_entries(fault_server, tmp_path: Path) -> None:
    """A random word of letters reads as prose: each page is its own reason, up to 64 in a process,
    and the rest share one entry."""
    run, requests = _run(fault_server, tmp_path, model="status500_random_word")
    assert requests > 64
    failures = run.failures()
    assert len(failures) == 65, len(failures)
    assert sum(int(f["Occurrences"]) for f in failures) == requests
    (other,) = [f for f in failures if "different error bodies" in f["Error"]]
    assert int(other["Occurrences"]) == requests - 64
