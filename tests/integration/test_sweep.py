"""Load sweeps (sweepfile.py) end to end against the real reference Triton: concurrency and rate steps,
stability, Triton's own counts per step, the stop at a latency limit, a step made unstable on purpose,
and two workers. sleep_20ms takes at least 20 ms a request (8 instances, batching), which bounds what the
numbers can be without depending on this machine's speed."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from locust_inference.report import build_report, format_ms, load_run
from locust_inference.report.page import sweep_curves
from locust_inference.report.tables import sweep_model_rows
from locust_inference.sweep.analysis import Window, stable
from support.runs import QuickSweep, clean_env, distributed, run_sweep, start_sweep

from servers import children
from servers.launch import RunningServer, free_port

QUICK = QuickSweep()


def sweep(tmp_path: Path, url: str, *args: str, status: int = 0) -> tuple[dict[str, Any], str]:
    """Runs sweepfile.py with QUICK windows and ``args``; Locust's exit ``status`` (1: some request failed)."""
    run = run_sweep(
        tmp_path,
        "--host",
        url,
        *args,
        env=clean_env(SERVER="triton", MODEL_NAME="sleep_20ms"),
        timeout=240,
        run_time="200s",
    )
    assert run.returncode == status, run.stderr[-3000:]
    return json.loads((tmp_path / "sweep.json").read_text()), run.stdout


def agrees_with_triton(row: dict[str, Any]) -> None:
    """Triton's statistics read at the step's window boundaries count the requests Locust counted in those
    seconds, give or take the requests in flight at each boundary (at most ``users`` at each of the two)
    and those finishing while the statistics are read (2%)."""
    server = row["server"]
    assert server is not None, row
    assert abs(server["inference_count"] - row["requests"]) <= 2 * row["users"] + 0.02 * row["requests"], row
    assert server["compute_infer_ms"] >= 20, row  # each request's batch slept 20 ms
    # The client's time includes the server's. The two means cover the step's windows but not quite the same
    # requests (the histograms hold what was reported in them, up to a report interval later): 5% apart.
    assert row["latency_ms"]["mean"] >= 0.95 * server["server_total_ms"], row


def recomputed_stability(row: dict[str, Any], windows: int, tolerance: float = 0.1) -> bool:
    seconds = float(QUICK.window)
    ws = [
        Window(round(t * seconds), 0, seconds, p99)
        for t, p99 in zip(row["window_throughputs"], row["window_p99_ms"], strict=True)
    ]
    return stable(ws, windows, tolerance)


def test_concurrency_sweep(triton, tmp_path: Path) -> None:
    metrics = f"http://127.0.0.1:{triton.metrics_port}/metrics"
    doc, stdout = sweep(
        tmp_path, triton.url, "--sweep-concurrency", "1,4", "--slo", "p99=200ms", "--metrics-url", metrics
    )
    rows = doc["steps"]
    assert [r["load"] for r in rows] == [1, 4] and [r["users"] for r in rows] == [1, 4]
    assert doc["mode"] == "concurrency" and doc["stopped"] is None
    for row in rows:
        assert row["failures"] == 0 and row["dropped"] is None and row["offered_rate_per_s"] is None
        assert 2 <= row["windows"] <= 5 and row["stable"] == recomputed_stability(row, 2), row
        assert row["windows"] == 5 or row["stable"], row  # a step ends stable or out of windows
        agrees_with_triton(row)
        # the step's seconds of Triton's metrics: CPU gauges (no GPU here), the load generator's CPU
        figures = row["server_metrics"]
        assert figures["windows"] >= 2 * 3 - 1 and figures["gpu_utilization_pct"] is None, figures
        assert 0 <= figures["cpu_utilization_pct"] <= 100 and figures["cpu_memory_used_peak_bytes"] > 0, figures
        assert figures["client_python_cpu_peak_pct"] > 0 and figures["models"]["sleep_20ms"]["success"] > 0, figures
    assert "server CPU utilisation per step (%): 1: " in stdout
    assert rows[0]["achieved_per_s"] <= 1000 / 20  # one user, each request >= 20 ms
    good = doc["goodput"]
    assert good["slo"] == "p99 <= 200 ms" and good["percentile"] == "p99"
    within = [r["achieved_per_s"] for r in rows if r["latency_ms"]["p99"] <= 200]
    assert good["rate_per_s"] >= max(within), (good, rows)
    assert f"Goodput at p99 <= 200 ms: {good['rate_per_s']:.1f} req/s" in stdout
    with (tmp_path / "sweep.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(int(r["step"]), float(r["achieved_per_s"])) for r in table] == [
        (r["step"], round(r["achieved_per_s"], 3)) for r in rows
    ]
    assert [float(r["cpu_utilization_pct"]) for r in table] == [
        r["server_metrics"]["cpu_utilization_pct"] for r in rows
    ]
    # compare.html's sweep table shows them, a column each
    page = build_report([tmp_path], tmp_path / "out")[0].read_text()
    assert '<th scope="col">server CPU %</th>' in page and '<th scope="col">load generator CPU peak %</th>' in page
    for row in rows:
        assert f"<td>{format_ms(row['server_metrics']['cpu_utilization_pct'])}</td>" in page


def test_rate_sweep_offers_each_step_with_streams_of_the_common_rate(triton, tmp_path: Path) -> None:
    doc, _ = sweep(tmp_path, triton.url, "--sweep-rate", "20,60")
    rows = doc["steps"]
    assert doc["plan"]["stream_rate"] == 20
    assert [(r["offered_rate_per_s"], r["users"]) for r in rows] == [(20, 1), (60, 3)]
    for row in rows:
        # well within sleep_20ms's capacity: every frame sent, answered in its window
        assert row["dropped"] == 0 and row["failures"] == 0, row
        assert abs(row["achieved_per_s"] - row["offered_rate_per_s"]) <= 0.05 * row["offered_rate_per_s"], row
        agrees_with_triton(row)


def test_the_sweep_stops_at_the_latency_limit(triton, tmp_path: Path) -> None:
    doc, stdout = sweep(tmp_path, triton.url, "--sweep-concurrency", "1,2,4", "--sweep-stop-latency", "p50=5ms")
    (row,) = doc["steps"]  # a request takes >= 20 ms: step 1 is past the limit
    assert doc["stopped"] == f"stopped at step 1: p50 {row['latency_ms']['p50']:.1f} ms is past the limit p50 <= 5 ms"
    assert doc["stopped"] in stdout


def test_a_step_with_a_stall_is_reported_unstable(own_triton: RunningServer, tmp_path: Path) -> None:
    # Three 3 s windows that must all agree; tritonserver is stopped for 1 s in the second one (it alone: its
    # Python stubs run on, so Triton's 1 s health check does not find them dead).
    args = ("--headless", "--sweep-concurrency", "2", "-t", "120s")
    err_path = tmp_path / "stderr"
    (server,) = children.group_members(own_triton.pid, "tritonserver")
    with err_path.open("w") as err:
        three = QuickSweep(stable_windows=3, max_windows=3)
        proc = start_sweep(tmp_path, own_triton.url, "tiny_onnx", *args, err=err, sweep=three)
        try:
            deadline = time.monotonic() + 60
            while "locust-inference sweep: step 1," not in err_path.read_text():
                assert time.monotonic() < deadline and proc.poll() is None, err_path.read_text()[-3000:]
                time.sleep(0.05)
            # warm-up 1 s, the first window from the next whole second, then into the second window
            time.sleep(1 + 1 + 3 + 1)
            os.kill(server, signal.SIGSTOP)
            time.sleep(1.0)
            os.kill(server, signal.SIGCONT)
            assert proc.wait(timeout=90) == 0, err_path.read_text()[-3000:]
        finally:
            os.kill(server, signal.SIGCONT)
            children.stop(proc)
    (row,) = json.loads((tmp_path / "sweep.json").read_text())["steps"]
    assert (row["windows"], row["stable"]) == (3, False), row
    assert row["stable"] == recomputed_stability(row, 3)


def test_a_sweep_with_two_workers(triton, tmp_path: Path) -> None:
    # the shipped configs/sweep.conf (2 workers), its steps and windows shortened by environment variables
    proc, results = distributed(
        tmp_path,
        "configs/sweep.conf",
        "sleep_20ms",
        triton.url,
        timeout=240,
        LOCUST_SWEEP_CONCURRENCY="4",
        LOCUST_SLO="p99=200ms",
        **QUICK.env("LOCUST_SWEEP_"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((results / "sweep.json").read_text())
    rows = doc["steps"]
    assert [r["users"] for r in rows] == [4] and doc["stopped"] is None
    for row in rows:
        assert row["failures"] == 0 and row["stable"] == recomputed_stability(row, 2), row
        # the master's windows hold both workers' requests: Triton counts the same ones
        agrees_with_triton(row)


def test_the_sweep_stops_past_the_error_rate(triton, tmp_path: Path) -> None:
    # sleep_20ms answers zeros (top-1 class 0), so every answer fails --expect-top1 7: 100% of the step failed
    doc, stdout = sweep(
        tmp_path, triton.url, "--sweep-concurrency", "1,2", "--sweep-stop-errors", "5%", "--expect-top1", "7", status=1
    )
    (row,) = doc["steps"]
    assert row["failures"] == row["requests"] > 0, row
    assert doc["stopped"] == "stopped at step 1: 100.0% of requests failed, past the limit 5.0%"
    assert doc["stopped"] in stdout


def test_the_sweep_runs_from_locusts_web_ui(triton, tmp_path: Path) -> None:
    # --autostart: the web UI starts the shape as its start button does; the sweep ends the test
    port = free_port()
    args = ("--sweep-concurrency", "2", "--autostart", "--autoquit", "1", "--web-host", "127.0.0.1")
    with (tmp_path / "err").open("w") as err:
        proc = start_sweep(tmp_path, triton.url, "sleep_20ms", *args, "--web-port", str(port), err=err)
        try:
            status = proc.wait(timeout=180)
        finally:
            children.stop(proc)
    assert status == 0, (tmp_path / "err").read_text()[-3000:]
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["users"] for r in doc["steps"]] == [2] and doc["stopped"] is None


MODELS = ("sleep_20ms", "tiny_onnx")
NAMES = tuple(f"triton/{m}" for m in MODELS)
WEIGHTED = ("--model-name", ",".join(MODELS), "--model-weights", "3,1")  # both models, 3 users to 1


def test_a_sweep_with_two_models_has_each_models_part_of_each_step(triton, tmp_path: Path) -> None:
    # weights 3,1: 4 users are 3 and 1, 8 users 6 and 2 (each process binds its users in a weighted turn)
    doc, stdout = sweep(tmp_path, triton.url, "--sweep-concurrency", "4,8", *WEIGHTED, "--slo", "p99=500ms")
    rows = doc["steps"]
    assert [r["users"] for r in rows] == [4, 8] and doc["stopped"] is None
    for row, users in zip(rows, ([3, 1], [6, 2]), strict=True):
        models = row["models"]
        assert list(models) == list(NAMES), models
        assert [models[n]["users"] for n in NAMES] == users
        assert row["server"] is None  # several models: each model's breakdown is in its own row
        # the step's total is its models' parts: Locust's counts of each name over the same seconds
        assert sum(m["requests"] for m in models.values()) == row["requests"] > 0, row
        assert sum(m["failures"] for m in models.values()) == row["failures"] == 0, row
        assert sum(m["achieved_per_s"] for m in models.values()) == pytest.approx(row["achieved_per_s"], rel=1e-9)
        assert row["stable"] == recomputed_stability(row, 2), row  # stability is judged on the total
        for name, m in models.items():
            assert m["requests"] > 0 and m["latency_ms"]["p50"] > 0, (name, m)
            assert len(m["window_throughputs"]) == row["windows"], (name, m)
            assert m["within_slo"] == (m["latency_ms"]["p99"] <= 500), (name, m)
            # Triton's statistics of this model over the step's windows count what Locust counted of it, give
            # or take the requests in flight at each boundary (at most its users at each) and 2%
            server = m["server"]
            assert server is not None, (name, m)
            assert abs(server["inference_count"] - m["requests"]) <= 2 * m["users"] + 0.02 * m["requests"], (name, m)
        assert models["triton/sleep_20ms"]["server"]["compute_infer_ms"] >= 20, models  # its batches sleep 20 ms
    good = doc["model_goodput"]
    assert list(good) == list(NAMES) and all(g["slo"] == "p99 <= 500 ms" for g in good.values()), good
    for name in NAMES:
        within = [r["models"][name]["achieved_per_s"] for r in rows if r["models"][name]["within_slo"]]
        assert good[name]["rate_per_s"] is None if not within else good[name]["rate_per_s"] >= max(within), good
    assert "Per model (the step's stability is judged on its total):" in stdout
    # sweep.csv: each step's total ("all"), then each model's row
    with (tmp_path / "sweep.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(int(r["step"]), r["name"]) for r in table] == [(s, n) for s in (1, 2) for n in ("all", *NAMES)]
    for r in table:
        step = rows[int(r["step"]) - 1]
        expected = step if r["name"] == "all" else step["models"][r["name"]]
        assert (int(r["requests"]), int(r["users"])) == (expected["requests"], expected["users"]), r
    # make compare: a curve per model beside the total, and a per-model table with each model's numbers
    run = load_run(tmp_path)
    run.label = "run"
    assert [c.label for c in sweep_curves([run])] == ["run", *(f"run {n}" for n in NAMES)]
    _, model_rows = sweep_model_rows(run.sweep)
    assert [(r[0], r[1], r[2]) for r in model_rows] == [
        (str(s["step"]), n, str(s["models"][n]["users"])) for s in rows for n in NAMES
    ]
    assert [r[3] for r in model_rows] == [format_ms(s["models"][n]["achieved_per_s"]) for s in rows for n in NAMES]
    html_path, md_path = build_report([tmp_path], tmp_path / "out")
    html, md = html_path.read_text(), md_path.read_text()
    assert ", per model</h3>" in html and "Per model (" in md
    for name in NAMES:
        rate = good[name]["rate_per_s"]
        assert f"Goodput of {name} at p99 <= 500 ms: {format_ms(rate)} req/s" in md, md


def test_a_rate_sweep_with_two_models_offers_each_its_streams_share(triton, tmp_path: Path) -> None:
    # streams of 10 req/s: 40 req/s is 4 streams, 3 to the first model and 1 to the second; 80 req/s is 6 and 2
    doc, _ = sweep(tmp_path, triton.url, "--sweep-rate", "40,80", "--rate", "10", *WEIGHTED)
    rows = doc["steps"]
    assert [(r["offered_rate_per_s"], r["users"]) for r in rows] == [(40, 4), (80, 8)]
    for row, users in zip(rows, ([3, 1], [6, 2]), strict=True):
        models = row["models"]
        assert [(models[n]["users"], models[n]["offered_rate_per_s"]) for n in NAMES] == [(u, 10 * u) for u in users]
        assert sum(m["requests"] for m in models.values()) == row["requests"] > 0, row
        assert sum(m["dropped"] for m in models.values()) == row["dropped"] == 0, row
        for name, m in models.items():
            # well within each model's capacity: every request offered to it answered in its window
            assert m["failures"] == 0, (name, m)
            assert abs(m["achieved_per_s"] - m["offered_rate_per_s"]) <= 0.05 * m["offered_rate_per_s"], (name, m)
            server = m["server"]
            assert abs(server["inference_count"] - m["requests"]) <= 2 * m["users"] + 0.02 * m["requests"], (name, m)


def test_a_sweep_of_two_models_with_two_workers_splits_each_workers_users(triton, tmp_path: Path) -> None:
    # Each worker binds its own users: 4 users are 2 on each, both bound to the first model (the weighted turn
    # of 3,1 gives the second model the third user), so 4 and 0 in all; 8 users are 4 on each, 3 and 1: 6 and 2
    proc, results = distributed(
        tmp_path,
        "configs/sweep.conf",
        ",".join(MODELS),
        triton.url,
        timeout=240,
        LOCUST_MODEL_WEIGHTS="3,1",
        LOCUST_SWEEP_CONCURRENCY="4,8",
        **QUICK.env("LOCUST_SWEEP_"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = json.loads((results / "sweep.json").read_text())["steps"]
    assert [first["models"][n]["users"] for n in NAMES] == [4, 0], first["models"]
    idle = first["models"]["triton/tiny_onnx"]
    assert (idle["requests"], idle["achieved_per_s"], idle["server"]) == (0, 0, None), idle  # no user sent to it
    assert [second["models"][n]["users"] for n in NAMES] == [6, 2], second["models"]
    for row in (first, second):
        # the master's windows hold both workers' requests of each model: Triton counts the same ones
        assert sum(m["requests"] for m in row["models"].values()) == row["requests"] > 0, row
    for name, m in second["models"].items():
        assert m["failures"] == 0 and m["requests"] > 0, (name, m)
        server = m["server"]
        assert abs(server["inference_count"] - m["requests"]) <= 2 * m["users"] + 0.02 * m["requests"], (name, m)


def test_a_scenario_sweep_steps_the_entries_users_together(triton, tmp_path: Path) -> None:
    # one entry of 1 fixed user, one shared by weight: Locust's dispatcher gives each step's 4 users as 1 and 3, 8
    # as 1 and 7 (not --model-weights' turn)
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        "".join(
            f'[[entry]]\nserver = "triton"\nhost = "{triton.url}"\nmodel = "{model}"\nuser = "ConcurrencyUser"\n'
            f"{share}\n\n"
            for model, share in zip(MODELS, ("users = 1", "weight = 1"), strict=True)
        )
    )
    run = run_sweep(
        tmp_path,
        "--scenario",
        str(scenario),
        "--sweep-concurrency",
        "4,8",
        env=clean_env(),
        timeout=240,
        run_time="200s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((tmp_path / "sweep.json").read_text())["steps"]
    assert [r["users"] for r in rows] == [4, 8]
    for row, users in zip(rows, ([1, 3], [1, 7]), strict=True):
        models = row["models"]
        assert [models[n]["users"] for n in NAMES] == users, models
        assert sum(m["requests"] for m in models.values()) == row["requests"] > 0, row
        for name, m in models.items():
            assert m["failures"] == 0 and m["requests"] > 0, (name, m)
            server = m["server"]
            assert abs(server["inference_count"] - m["requests"]) <= 2 * m["users"] + 0.02 * m["requests"], (name, m)
