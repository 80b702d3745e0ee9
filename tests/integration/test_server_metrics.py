"""The server's own metrics over a run (docs/metrics.md): Triton's Prometheus endpoint read by the run, its
windows checked against Triton's statistics endpoint over the same run; a missing or hostile endpoint;
a local server process; the load generator's CPU and the saturation warning."""

from __future__ import annotations

import csv
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from locust_inference.report import build_report
from locust_inference.telemetry import monitor as monitor_module
from locust_inference.telemetry.health import CpuSampler, HealthError, decode_report
from locust_inference.telemetry.monitor import MetricsSettings, Monitor, Read, format_summary, read_once
from locust_inference.telemetry.prometheus import MetricsError, Scrape, parse
from locust_inference.telemetry.windows import window
from support.faults import FaultServer
from support.report_page import figures
from support.runs import (
    LOCUST,
    REPO_ROOT,
    Run,
    assert_clean_failure,
    clean_env,
    latency_json,
    run_distributed,
    run_locust,
    run_on,
)
from test_hostile_reports import FORGED_ID, send_forged_report, start_forged_worker, wait_for

from servers import children
from servers.launch import free_port

WARNING = "cannot read the server's metrics at"


def metrics_url(triton: Any) -> str:
    assert triton.metrics_port is not None
    return f"http://127.0.0.1:{triton.metrics_port}/metrics"


def metrics_run(triton: Any, tmp_path: Path, *args: str, **run: Any) -> Run:
    """A run of HighUser on tiny_onnx that reads Triton's metrics every 0.5 s; ``args``: more options."""
    return run_on(triton, tmp_path, "--metrics-url", metrics_url(triton), "--metrics-interval", "0.5", *args, **run)


def test_windows_add_up_to_tritons_statistics_over_the_same_run(triton, tmp_path: Path) -> None:
    # --stop-timeout: the user stops after its request in flight: none is out at the last reads
    run = metrics_run(triton, tmp_path, "--stop-timeout", "10", run_time="4s")
    assert run.returncode == 0, run.stderr[-2000:]
    assert WARNING not in run.stderr, run.stderr[-2000:]
    result = latency_json(tmp_path)
    entry, stats, metrics = result["requests"]["triton/tiny_onnx"], result["server_stats"], result["server_metrics"]
    assert metrics["source"] == metrics_url(triton) and metrics["failed_reads"] == 0 and metrics["note"] is None
    windows = metrics["windows"]
    assert len(windows) >= 4  # 4 s at 0.5 s, and the last read at the end
    mine = [w["models"]["tiny_onnx"] for w in windows]
    # The first read precedes the first request and the last follows the last, as the statistics' two reads:
    # the windows' counts (from the metrics endpoint) add up to the statistics endpoint's, exactly.
    assert sum(m["inference_count"] for m in mine) == stats["inference_count"]
    assert sum(m["success"] for m in mine) == entry["count"] == result["locust"]["requests"]  # batch size 1
    assert entry["failures"] == 0
    assert sum(m["execution_count"] for m in mine) == stats["execution_count"]
    assert sum(m["failure"] for m in mine) == 0
    assert metrics["totals"]["models"]["tiny_onnx"]["success"] == entry["count"]
    for w, m in zip(windows, mine, strict=True):
        assert abs(m["success_per_s"] * w["duration_s"] - m["success"]) < 1e-3  # duration_s is rounded to 1 µs
        assert m["pending"] is not None and m["pending"] >= 0
    # Per-request means: Triton adds each request's µs to the counter and its ns to the statistics, so the
    # success-weighted mean over the windows is the statistics' mean within 1 µs.
    busy = [m for m in mine if m["success"]]
    for phase in ("queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"):
        weighted = sum(m[phase] * m["success"] for m in busy) / sum(m["success"] for m in busy)
        assert abs(weighted - stats[phase]) <= 0.001, (phase, weighted, stats[phase])
    # No GPU here: Triton's CPU gauges are there, and no GPU ones.
    assert all(w["gpus"] == {} for w in windows)
    cpu = windows[-1]["cpu"]
    assert cpu["memory_total_bytes"] > 0 and 0 < cpu["memory_used_bytes"] <= cpu["memory_total_bytes"]
    assert 0.0 <= cpu["utilization_pct"] <= 100.0
    assert metrics["totals"]["cpu_memory_used_peak_bytes"] > 0
    # The load generator's own CPU, sampled over the run
    health = result["client_health"]
    assert health["threshold_pct"] == 90.0 and isinstance(health["saturated"], list)
    assert len(health["processes"]["local"]) >= 4
    assert "Server metrics (http://127.0.0.1:" in run.stdout and "Load generator, peak CPU" in run.stdout
    assert "WARNING: load generator saturated" not in run.stdout  # one user of a tiny model: far from it

    # compare.html draws them on the throughput chart's time axis
    charts = figures(build_report([tmp_path], tmp_path / "out")[0].read_text())
    with open(f"{run.csv_prefix}_stats_history.csv", newline="") as f:
        first = min(float(row["Timestamp"]) for row in csv.DictReader(f) if row["Name"] == "Aggregated")
    zero = min(first, datetime.fromisoformat(result["started"]).timestamp())
    throughput = charts["throughput-over-time"]["data"][0]
    assert throughput["x"][0] == first - zero
    cpu_line = {t["name"]: t for t in charts["server-utilization"]["data"]}["triton server CPU"]
    assert cpu_line["x"] == [w["t"] - zero for w in windows]
    assert cpu_line["y"] == [(w["cpu"] or {}).get("utilization_pct") for w in windows]
    infer = {t["name"]: t for t in charts["server-time"]["data"]}["triton compute infer"]
    assert infer["y"] == [m["compute_infer_ms"] for m in mine]
    local = {t["name"]: t for t in charts["client-cpu"]["data"]}["triton local"]
    assert local["y"] == [s["python_cpu_pct"] for s in health["processes"]["local"]]
    assert "server-power" not in charts  # no GPU: no power to draw

    # a saturated load generator is a visible warning in the report
    result["client_health"]["saturated"] = ["local"]
    result["client_health"]["peak_python_cpu_pct"] = {"local": 97.0}
    (tmp_path / "latency.json").write_text(json.dumps(result))
    page = build_report([tmp_path], tmp_path / "out")[0].read_text()
    assert '<p class="warning" role="alert">triton: the load generator was saturated' in page
    assert "local (peak 97%)" in page


def test_a_missing_endpoint_is_one_warning_and_the_run_goes_on(triton, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"  # nothing listens there
    run = run_on(triton, tmp_path, "--metrics-url", url, "--metrics-interval", "0.2", stop_after=10)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count(WARNING) == 1, run.stderr[-3000:]
    result = latency_json(tmp_path)
    metrics = result["server_metrics"]
    # at least the reads at the start and at the end, each refused; one warning for all
    assert metrics["windows"] == [] and metrics["failed_reads"] >= 2 and metrics["note"].startswith(url)
    assert result["requests"]["triton/tiny_onnx"]["count"] > 0
    assert f"Server metrics: {url}: " in run.stdout


@pytest.mark.parametrize("fault", ["garbage", "huge", "many_samples"])
def test_a_hostile_endpoint_is_one_warning_and_the_run_goes_on(
    triton, fault_server: FaultServer, tmp_path: Path, fault: str
) -> None:
    url = f"{fault_server.url}/metrics/{fault}"
    run = run_on(triton, tmp_path, "--metrics-url", url, "--metrics-interval", "0.5", stop_after=10)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.stderr.count(WARNING) == 1, run.stderr[-3000:]
    assert latency_json(tmp_path)["server_metrics"]["windows"] == []


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("garbage", "none of Triton's metrics"),
        ("not_prometheus", "not the Prometheus text format"),
        ("huge", "larger than the limit of 4194304 bytes"),  # the native read stops at the limit
        ("long_line", "line 1 is 10030 characters long, over 4096"),
        ("many_samples", "more than 20000 samples"),
        ("none_of_ours", "none of Triton's metrics"),
    ],
)
def test_each_hostile_page_is_refused_with_its_reason(fault_server: FaultServer, fault: str, reason: str) -> None:
    read = read_once(f"{fault_server.url}/metrics/{fault}", 10.0, None)
    assert read.scrape is None and read.error is not None
    assert reason in read.error, read.error


def test_bad_options_stop_the_start_in_one_line(tmp_path: Path) -> None:
    env = clean_env(SERVER="triton", MODEL_NAME="tiny_onnx")
    host = f"http://127.0.0.1:{free_port()}"  # refused at start, before anything contacts it
    for args, needle in (
        (("--metrics-interval", "0"), "--metrics-interval must be between"),
        (("--metrics-interval", "soon"), "--metrics-interval must be a number"),
        (("--metrics-url", "http://user:secret@127.0.0.1:8002/metrics"), "must not carry a user or password"),
        (("--metrics-url", "ftp://127.0.0.1/metrics"), "must start with http://"),
        (("--server-pid", "-3"), "--server-pid must be a process id"),
        (("--server-pid", "2147483646"), "no such process"),
    ):
        run = run_locust(tmp_path, "--host", host, *args, "HighUser", run_time="2s", env=env)
        assert_clean_failure(run, needle)
        assert "secret" not in run.stderr


def test_litserve_without_a_pid_says_no_server_metrics_once(litserve_tiny, tmp_path: Path) -> None:
    run = run_on(litserve_tiny, tmp_path, stop_after=5)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count("no server metrics") == 1, run.stderr[-2000:]
    metrics = latency_json(tmp_path)["server_metrics"]
    assert metrics["source"] is None and metrics["windows"] == [] and metrics["note"].startswith("no server metrics")


def test_a_local_servers_cpu_and_memory_with_its_pid(litserve_tiny, tmp_path: Path) -> None:
    run = run_on(
        litserve_tiny, tmp_path, "--server-pid", str(litserve_tiny.pid), "--metrics-interval", "0.5", run_time="3s"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no server metrics" not in run.stderr and WARNING not in run.stderr, run.stderr[-2000:]
    metrics = latency_json(tmp_path)["server_metrics"]
    assert metrics["server_pid"] == litserve_tiny.pid and len(metrics["windows"]) >= 4
    process = [w["server_process"] for w in metrics["windows"]]
    assert all(p["rss_bytes"] > 0 and p["cpu_pct"] >= 0 for p in process)
    assert sum(p["cpu_pct"] for p in process) > 0  # it served requests: it used some CPU
    assert metrics["totals"]["server_process_rss_peak_bytes"] == max(p["rss_bytes"] for p in process)


# --- the load generator's health, readings fed in ----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def monitor_with_cpu(python_pct: float) -> tuple[Monitor, Clock]:
    """A monitor without endpoint whose CPU readings say Python's thread used ``python_pct`` % of a core."""
    clock, cpu = Clock(), Clock()
    sampler = CpuSampler(wall=lambda: 1000.0 + clock.now, clock=clock, thread_cpu=cpu, process_cpu=cpu)
    monitor = Monitor(MetricsSettings(None, why_none="test"), "m", reader=Read, sampler=sampler)
    sampler.sample()
    for _ in range(3):
        clock.now += 1.0
        cpu.now += python_pct / 100.0
        monitor.tick()
    return monitor, clock


def test_a_saturated_process_is_named_in_the_results_and_the_summary() -> None:
    monitor, _ = monitor_with_cpu(95.0)
    server, client = monitor.document(1000.0, 1010.0)
    assert client["saturated"] == ["local"] and client["peak_python_cpu_pct"] == {"local": 95.0}
    lines = "\n".join(format_summary(server, client, "m"))
    assert "WARNING: load generator saturated" in lines and "local (peak 95%)" in lines


def test_below_the_threshold_or_outside_the_measured_window_there_is_no_warning() -> None:
    monitor, _ = monitor_with_cpu(85.0)
    server, client = monitor.document(1000.0, 1010.0)
    assert client["saturated"] == [] and "WARNING" not in "\n".join(format_summary(server, client, "m"))
    monitor, _ = monitor_with_cpu(95.0)
    _, client = monitor.document(1003.5, 1010.0)  # the samples end before the measured window starts
    assert client["saturated"] == []


def test_a_workers_health_entry_is_checked() -> None:
    assert decode_report([[0.5, 42.0, 80.0]], 100.0) == [(99.5, 42.0, 80.0)]
    for bad in (
        "x",
        [[1, 2]],
        [[1, 2, float("nan")]],
        [[-1, 2, 3]],
        [[1, 2, 1e9]],
        [[True, 2, 3]],
        [[0, 1, 1]] * 121,
    ):
        with pytest.raises(HealthError):
            decode_report(bad, 100.0)


# --- windows from two pages ----------------------------------------------------------------------------

PAGE = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="m",version="1"}} {success}
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{{model="m",reason="REJECTED",version="1"}} {failure}
nv_inference_request_failure{{model="m",reason="OTHER",version="1"}} 1
# TYPE nv_inference_count counter
nv_inference_count{{model="m",version="1"}} {success}
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{{model="m",version="1"}} {executions}
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{{model="m",version="1"}} {queue_us}
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{{model="m",version="1"}} 3
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{{gpu_uuid="GPU-1"}} 0.5
# TYPE nv_gpu_power_usage gauge
nv_gpu_power_usage{{gpu_uuid="GPU-1"}} 70.5
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{{gpu_uuid="GPU-1"}} {gpu_memory}
# TYPE other_metric counter
other_metric 5
"""


def page(t: float, **values: float) -> Scrape:
    return parse(PAGE.format(**values).encode(), 1000.0 + t, t)


def test_counters_become_rates_and_means_and_gauges_are_read_at_the_end() -> None:
    a = page(0.0, success=10, failure=2, executions=5, queue_us=1000, gpu_memory=100)
    b = page(2.0, success=30, failure=4, executions=10, queue_us=5000, gpu_memory=300)
    w = window(a, b)
    m = w["models"]["m"]
    assert (m["success"], m["failure"], m["inference_count"], m["execution_count"]) == (20, 2, 20, 5)
    assert (m["success_per_s"], m["failure_per_s"], m["avg_batch_size"]) == (10.0, 1.0, 4.0)
    assert m["queue_ms"] == 4000 / 20 / 1000 and m["compute_infer_ms"] is None and m["pending"] == 3
    assert w["gpus"] == {"GPU-1": {"utilization_pct": 50.0, "power_w": 70.5, "memory_used_bytes": 300.0}}
    assert w["cpu"] is None and w["duration_s"] == 2.0 and w["t"] == 1002.0


def test_a_counter_that_went_down_gives_no_counts() -> None:
    a = page(0.0, success=30, failure=2, executions=5, queue_us=1000, gpu_memory=100)
    b = page(1.0, success=3, failure=2, executions=1, queue_us=10, gpu_memory=100)
    assert window(a, b)["models"]["m"] == {"reset": True, "pending": 3.0}


def test_a_page_without_any_wanted_metric_is_refused() -> None:
    with pytest.raises(MetricsError, match="none of Triton's metrics"):
        parse(b"other_metric 5\n", 0.0, 0.0)


def test_the_default_endpoint_is_tritons_host_on_port_8002() -> None:
    assert monitor_module.default_url("https://triton.example:9000/base") == "http://triton.example:8002/metrics"
    assert monitor_module.default_url("http://[::1]:8000") == "http://[::1]:8002/metrics"


def test_each_workers_cpu_and_the_send_lag_reach_the_master(triton, tmp_path: Path) -> None:
    extra = f"metrics-url = {metrics_url(triton)}\nmetrics-interval = 0.5\nrate = 20\n"
    proc, results = run_distributed(
        tmp_path, triton.url, workers=2, users=2, class_name="LowUser", run_time="5s", extra=extra
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert WARNING not in proc.stderr, proc.stderr[-3000:]
    result = latency_json(results)
    health = result["client_health"]
    workers = [p for p in health["processes"] if p != "master"]
    assert len(workers) == 2 and "master" in health["processes"], list(health["processes"])
    for worker in workers:
        samples = health["processes"][worker]
        assert len(samples) >= 3 and all(0 <= s["python_cpu_pct"] <= s["process_cpu_pct"] + 1 for s in samples)
        assert health["peak_python_cpu_pct"][worker] == max(s["python_cpu_pct"] for s in samples)
    # every request the workers' streams sent has its send lag in one of the master's lag windows
    ol = result["requests"]["triton/tiny_onnx"]["open_loop"]
    assert sum(w["count"] for w in health["lag"]) == ol["sent"] > 0
    assert all(w["max_ms"] >= w["p99_ms"] >= 0 for w in health["lag"])
    assert len(result["server_metrics"]["windows"]) >= 5


def test_with_reset_stats_the_windows_start_again_with_the_statistics(triton, tmp_path: Path) -> None:
    # -r 0.5: the second user 2 s in, the reset comes then
    run = metrics_run(triton, tmp_path, "--reset-stats", "--stop-timeout", "10", "-r", "0.5", run_time="5s", users=2)
    assert run.returncode == 0, run.stderr[-2000:]
    result = latency_json(tmp_path)
    started = datetime.fromisoformat(result["started"]).timestamp()
    windows = result["server_metrics"]["windows"]
    # "started" is the reset, in whole seconds (truncated); the windows of the 2 s before it are gone
    assert len(windows) >= 4 and windows[0]["t"] - windows[0]["duration_s"] >= started, (windows[0], started)
    counted = sum(w["models"]["tiny_onnx"]["inference_count"] for w in windows)
    # The metrics' new baseline and the statistics' are read one after the other at the reset, while the
    # users run: requests that end between the two reads are counted by one and not the other (2 users, a few
    # ms each: at most a few), and none at the end (the users stop after their last request).
    assert abs(counted - result["server_stats"]["inference_count"]) <= 10, (counted, result["server_stats"])
    assert counted < result["locust"]["requests"] + 10


def test_a_forged_health_entry_is_refused_in_one_line_and_the_real_workers_kept(triton, tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(SERVER="triton", MODEL_NAME="tiny_onnx")
    common = ["-f", str(REPO_ROOT / "locustfile.py"), "--host", triton.url, "--metrics-url", metrics_url(triton)]
    common += ["--metrics-interval", "0.5", "HighUser"]
    master_log = tmp_path / "master.log"
    with master_log.open("w") as mlog, (tmp_path / "worker.log").open("w") as wlog:
        master = children.start(
            [LOCUST, *common, "--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
             str(port), "--expect-workers", "1", "-u", "1", "-r", "1", "-t", "6s", "--csv", str(tmp_path / "run")],
            cwd=REPO_ROOT, env=env, stdout=mlog, stderr=subprocess.STDOUT,
        )  # fmt: skip
        worker = children.start(
            [LOCUST, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=wlog, stderr=subprocess.STDOUT,
        )  # fmt: skip
        # a dict where a list of [age, python %, process %] belongs (the forging script sends dicts)
        forged = start_forged_worker(port, json.dumps({"age": 1, "cpu": 200}), "locust_inference_health")
        try:
            wait_for(master_log, "infer    triton/tiny_onnx", master)  # the real worker's first report is in
            send_forged_report(forged)
            master.wait(timeout=120)
            assert master.returncode == 0, master_log.read_text()[-3000:]
            worker.wait(timeout=60)
        finally:
            forged.kill()
            forged.wait()
            children.kill(master)
            children.kill(worker)
    log = master_log.read_text()
    assert "Traceback" not in log, log[-3000:]
    refused = [line for line in log.splitlines() if "refused the health samples" in line]
    assert len(refused) == 1 and f"from worker '{FORGED_ID}': not a list" in refused[0], log[-3000:]
    health = latency_json(tmp_path)["client_health"]
    assert FORGED_ID not in health["processes"] and len(health["processes"]) == 2  # the master and the worker


def test_summaries_give_window_means_where_the_duration_counters_are_off() -> None:
    summary = """# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="m",version="1"}} {n}
# TYPE nv_inference_queue_summary_us summary
nv_inference_queue_summary_us{{model="m",version="1",quantile="0.5"}} 7
nv_inference_queue_summary_us_sum{{model="m",version="1"}} {total}
nv_inference_queue_summary_us_count{{model="m",version="1"}} {n}
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.25
"""
    a = parse(summary.format(n=10, total=5000).encode(), 1000.0, 0.0)
    b = parse(summary.format(n=14, total=9000).encode(), 1001.0, 1.0)
    m = window(a, b)["models"]["m"]
    assert (m["success"], m["queue_ms"], m["compute_infer_ms"]) == (4, 4000 / 4 / 1000, None)
    assert window(a, b)["cpu"] == {"utilization_pct": 25.0}
