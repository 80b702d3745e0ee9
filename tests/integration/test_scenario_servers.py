"""A scenario file (``--scenario FILE``) against the real reference servers: Triton and LitServe in one run,
each entry with its own user class, users, rate, request name, histograms and server statistics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from support.runs import LOCUST, REPO_ROOT, assert_clean_failure, clean_env, run_locust

from servers import children
from servers.launch import free_port

TRITON_NAME, LITSERVE_NAME = "triton/sleep_20ms", "litserve/tiny_onnx"


def entry(server: str, host: str, model: str, user: str, **keys: Any) -> str:
    lines = [f'server = "{server}"', f'host = "{host}"', f'model = "{model}"', f'user = "{user}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return "[[entry]]\n" + "\n".join(lines) + "\n\n"


def test_a_triton_entry_and_a_litserve_open_loop_entry_in_one_run(triton, litserve_tiny, tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(
        entry("triton", triton.url, "sleep_20ms", "HighUser", users=1)
        + entry("litserve", litserve_tiny.url, "tiny_onnx", "LowUser", users=2, rate=5)
    )
    run = run_locust(
        tmp_path,
        "--scenario",
        str(path),
        "--stop-timeout",
        "10",  # each HighUser reports its request in flight: Triton's count at the end is exactly ours
        env=clean_env(),
        users=3,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # Locust's own spawning made the split: one class per entry, with its fixed number of users
    spawned = f'All users spawned: {{"HighUser[{TRITON_NAME}]": 1, "LowUser[{LITSERVE_NAME}]": 2}} (3 total users)'
    assert spawned in run.stderr, run.stderr[-3000:]
    result = json.loads((tmp_path / "latency.json").read_text())
    assert sorted(result["requests"]) == [LITSERVE_NAME, TRITON_NAME]
    for name in (TRITON_NAME, LITSERVE_NAME):
        mine, row = result["requests"][name], run.stats(name)
        assert mine["failures"] == 0 and int(row["Failure Count"]) == 0, run.failures()
        assert mine["count"] == int(row["Request Count"]) > 0, name
    assert result["requests"][TRITON_NAME]["count"] + result["requests"][LITSERVE_NAME]["count"] == int(
        run.stats()["Request Count"]
    )
    # the open-loop entry: its own 2 streams, offered its rate times its users; the closed-loop one has none
    offered = result["requests"][LITSERVE_NAME]["open_loop"]
    assert (offered["streams"], offered["offered_rate_per_s"]) == (2, 2 * 5.0)
    assert result["requests"][TRITON_NAME]["open_loop"] is None
    # Triton's statistics of the Triton entry's model count exactly what that entry sent; LitServe has none
    triton_stats = result["requests"][TRITON_NAME]["server_stats"]
    assert triton_stats["inference_count"] == result["requests"][TRITON_NAME]["count"], triton_stats
    assert result["requests"][LITSERVE_NAME]["server_stats"] is None
    with (tmp_path / "latency.csv").open() as f:
        assert {line.split(",")[0] for line in f.read().splitlines()[1:]} == {TRITON_NAME, LITSERVE_NAME}
    assert f"Triton server side, {TRITON_NAME}, per inference (ms): queue" in run.stdout
    assert f"Open loop, {LITSERVE_NAME}: offered 10 req/s (2 streams)" in run.stdout


def test_weights_split_the_users_of_all_workers(triton, tmp_path: Path) -> None:
    """Two workers of two users each: Locust's dispatcher splits the four users 3 and 1 over both workers,
    which --model-weights (each worker binding its own two users, one a model) cannot."""
    path = tmp_path / "scenario.toml"
    path.write_text(
        entry("triton", triton.url, "sleep_20ms", "LowUser", weight=3, rate=10)
        + entry("triton", triton.url, "tiny_onnx", "LowUser", weight=1, rate=10)
    )
    port = free_port()
    common = ["-f", str(REPO_ROOT / "locustfile.py"), "--scenario", str(path), "--metrics-url", "none"]
    master_cmd = [
        LOCUST, *common, "--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
        "--expect-workers", "2", "-u", "4", "-r", "4", "-t", "3s", "--csv", str(tmp_path / "run"),
    ]  # fmt: skip
    worker_cmd = [LOCUST, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    logs = [tmp_path / f"{role}.log" for role in ("master", "worker1", "worker2")]
    procs = []
    try:
        for cmd, log in zip([master_cmd, worker_cmd, worker_cmd], logs, strict=True):
            with log.open("w") as out:
                procs.append(children.start(cmd, cwd=REPO_ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT))
        assert procs[0].wait(timeout=120) == 0, logs[0].read_text()[-3000:]
    finally:
        for proc in procs:
            children.kill(proc)
    result = json.loads((tmp_path / "latency.json").read_text())
    requests = result["requests"]
    names = ("triton/sleep_20ms", "triton/tiny_onnx")
    assert [requests[name]["open_loop"]["streams"] for name in names] == [3, 1]
    assert [requests[name]["open_loop"]["offered_rate_per_s"] for name in names] == [30.0, 10.0]
    assert sum(entry["count"] for entry in requests.values()) == result["locust"]["requests"] > 0


def test_a_missing_model_in_an_entry_stops_the_run(triton, tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(
        entry("triton", triton.url, "tiny_onnx", "HighUser") + entry("triton", triton.url, "resnet51", "HighUser")
    )
    run = run_locust(tmp_path, "--scenario", str(path), env=clean_env(), users=2)
    assert_clean_failure(run, f"--scenario {path}: entry 2 (triton/resnet51): Triton at {triton.url} has no model")


def test_an_entry_its_weight_leaves_without_a_user_is_said(triton, tmp_path: Path) -> None:
    """Locust's dispatcher gives 2 users at weights 100 and 1 both to the first entry; the run says so."""
    path = tmp_path / "scenario.toml"
    path.write_text(
        entry("triton", triton.url, "tiny_onnx", "HighUser", weight=100)
        + entry("triton", triton.url, "sleep_20ms", "HighUser", weight=1)
    )
    run = run_locust(tmp_path, "--scenario", str(path), "--metrics-url", "none", env=clean_env(), users=2)
    assert run.returncode == 0, run.stderr[-3000:]
    warned = [line for line in run.stderr.splitlines() if "--scenario: no user runs" in line]
    assert len(warned) == 1, run.stderr[-3000:]
    assert warned[0].endswith("--scenario: no user runs HighUser[triton/sleep_20ms]; raise -u or their weight")
    requests = json.loads((tmp_path / "latency.json").read_text())["requests"]
    assert requests["triton/sleep_20ms"]["count"] == 0 < requests["triton/tiny_onnx"]["count"]
