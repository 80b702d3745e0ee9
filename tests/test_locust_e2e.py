"""End-to-end: the real locustfile, run headless by Locust, against the real reference servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import REPO_ROOT, clean_env, run_locust

CHECKSUM_LOCUSTFILE = REPO_ROOT / "tests" / "locustfiles" / "checksum_check.py"


@pytest.mark.parametrize("triton_format", ["binary", "json"])
def test_triton_receives_exactly_the_preprocessed_tensor(triton, tmp_path: Path, triton_format: str) -> None:
    report = tmp_path / "checksums.json"
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--keep-body",
        "--triton-format",
        triton_format,
        "HighUser",
        locustfile=CHECKSUM_LOCUSTFILE,
        env=clean_env(SERVER="triton", MODEL_NAME="checksum", CHECKSUM_REPORT=str(report)),
        users=2,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("triton/checksum")
    assert int(stats["Request Count"]) > 10
    assert int(stats["Failure Count"]) == 0, run.failures()
    counts = json.loads(report.read_text())
    assert counts["mismatch"] == 0 and counts["unchecked"] == 0
    # Locust writes its CSV once a second, so the last partial second may be missing from it
    assert counts["match"] >= int(stats["Request Count"])


def test_litserve_receives_exactly_the_preprocessed_tensor(litserve_checksum, tmp_path: Path) -> None:
    report = tmp_path / "checksums.json"
    run = run_locust(
        tmp_path,
        "--host",
        litserve_checksum.url,
        "--keep-body",
        "LowUser",
        locustfile=CHECKSUM_LOCUSTFILE,
        env=clean_env(INFERENCE_SERVER="litserve", MODEL_NAME="checksum", CHECKSUM_REPORT=str(report)),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("litserve/checksum")
    assert int(stats["Request Count"]) > 5
    assert int(stats["Failure Count"]) == 0, run.failures()
    counts = json.loads(report.read_text())
    assert counts["mismatch"] == 0 and counts["unchecked"] == 0
    assert counts["match"] >= int(stats["Request Count"])


def test_low_user_paces_at_30_per_second_with_options_from_a_config_file(triton, tmp_path: Path) -> None:
    conf = tmp_path / "t.conf"
    conf.write_text(
        f"locustfile = locustfile.py\nclass-name = LowUser\nhost = {triton.url}\n"
        "server = triton\nmodel-name = tiny_onnx\nrequest-timeout = 30\n"
    )
    run = run_locust(tmp_path, "--config", str(conf), env=clean_env(), run_time="5s")
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("triton/tiny_onnx")
    assert int(stats["Failure Count"]) == 0
    # 30 frames/s for ~5 s: about 150 requests, and certainly not HighUser's thousands
    assert 60 <= int(stats["Request Count"]) <= 200, stats
    assert "LowUser" in run.stderr


def test_resnet50_on_both_servers(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "HighUser",
        env=clean_env(LOCUST_SERVER="triton", LOCUST_MODEL_NAME="resnet50_onnx"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = run.stats("triton/resnet50_onnx")
    assert int(stats["Request Count"]) > 3 and int(stats["Failure Count"]) == 0


def test_ten_users_in_one_process_run_concurrently(triton, tmp_path: Path) -> None:
    """gevent-safety: the sleep_20ms model holds each request ~20 ms without using CPU, so N users
    that never block the hub reach about N times one user's rate."""

    def rate(users: int) -> float:
        run = run_locust(
            tmp_path,
            "--host",
            triton.url,
            "HighUser",
            env=clean_env(SERVER="triton", MODEL_NAME="sleep_20ms"),
            users=users,
            run_time="6s",
        )
        assert run.returncode == 0, run.stderr[-3000:]
        stats = run.stats("triton/sleep_20ms")
        assert int(stats["Failure Count"]) == 0
        return float(stats["Requests/s"])

    one, ten = rate(1), rate(10)
    print(f"sleep_20ms: 1 user {one:.1f} req/s, 10 users {ten:.1f} req/s, ratio {ten / one:.2f}")
    assert ten >= 8 * one, f"1 user: {one:.1f} req/s, 10 users: {ten:.1f} req/s"


def test_debug_requests_logs_each_request_without_secrets(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--header",
        "X-Api-Key: hunter2",
        "LowUser",
        env=clean_env(
            SERVER="triton", MODEL_NAME="tiny_onnx", DEBUG_REQUESTS="true", INFERENCE_AUTH_TOKEN="s3cr3t-token"
        ),
        run_time="2s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if "locust_inference.debug" in line]
    assert len(lines) >= 10
    first = lines[0]
    for needle in (
        f"{triton.url}/v2/models/tiny_onnx/infer",
        "Inference-Header-Content-Length",
        "json_header_bytes=",
        "tensor_bytes=602112",
        "status=200",
        "inference-header-content-length",
        "length=",
        "<redacted>",
    ):
        assert needle in first, (needle, first)
    assert "s3cr3t-token" not in run.stderr and "hunter2" not in run.stderr


def test_debug_is_off_by_default(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path, "--host", triton.url, "LowUser", env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx"), run_time="1s"
    )
    assert run.returncode == 0
    assert "locust_inference.debug" not in run.stderr


SWITCHES_LOCUSTFILE = REPO_ROOT / "tests" / "locustfiles" / "greenlet_switches.py"


def count_switches(triton, tmp_path: Path, user_class: str, users: int, run_time: str) -> dict[str, int]:
    """Runs ``user_class`` from the switch-counting locustfile against tiny_onnx; returns its report."""
    report = tmp_path / "switches.json"
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        user_class,
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx", SWITCH_REPORT=str(report)),
        locustfile=SWITCHES_LOCUSTFILE,
        run_time=run_time,
        users=users,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    counts = json.loads(report.read_text())
    print(counts)
    return counts


def test_a_zero_wait_after_a_request_does_not_go_through_the_hub_again(triton, tmp_path: Path) -> None:
    """Each request already yields to the hub while it waits, so HighUser's zero wait is skipped: one
    switch into the user per request (the answer), not two (the answer, then ``gevent.sleep(0)``)."""
    counts = count_switches(triton, tmp_path, "HighUser", users=1, run_time="3s")
    assert counts["requests"] > 100, counts
    assert counts["switches"] / counts["requests"] < 1.5, counts


def test_a_user_whose_task_never_yields_still_lets_the_others_run(triton, tmp_path: Path) -> None:
    """A zero wait after a task that sent nothing still yields: two such users alternate and the run
    ends on time (were the wait skipped, the first would never give the hub back and the run would
    never end)."""
    counts = count_switches(triton, tmp_path, "Spinner", users=2, run_time="2s")
    assert counts["spins"] > 100, counts
    assert counts["switches"] >= counts["spins"], counts
