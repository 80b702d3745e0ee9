"""--check conditions judged on real runs against the reference Triton (exit 0 or 3), also by a master."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from locust_inference.checks import BREACHED_EXIT_CODE
from support.runs import COUNTED, COUNTED_GUARD, assert_clean_failure, clean_env, run_distributed, run_locust

NAME = "triton/sleep_20ms"


def test_conditions_that_hold_exit_0_and_breached_ones_exit_3_with_the_measured_value(triton, tmp_path: Path) -> None:
    # each run ends after 10 requests (locustfiles/counted.py): enough for every condition, on any machine
    env = clean_env(SERVER="triton", MODEL_NAME="sleep_20ms", STOP_AFTER="10")
    junit = tmp_path / "checks.xml"
    held = run_locust(
        tmp_path, "--host", triton.url, "--class-name", "HighUser", "--check", "p50<=1s", "--check",
        "fail_ratio<=1%", "--check", "rps>=1", "--check", "dropped==0", "--junit", str(junit), env=env,
        locustfile=COUNTED, run_time=COUNTED_GUARD,
    )  # fmt: skip
    assert held.returncode == 0, held.stderr[-3000:]
    assert "checks: 4 of 4 held" in held.stdout
    assert "check breached" not in held.stderr
    cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert [(c.get("classname"), c.get("name"), c.find("failure")) for c in cases] == [
        (NAME, text, None) for text in ("p50<=1s", "fail_ratio<=1%", "rps>=1", "dropped==0")
    ]

    breached = run_locust(
        tmp_path, "--host", triton.url, "--class-name", "HighUser", "--check", "p50<=5ms", "--check", "p50<=1s",
        "--junit", str(junit), env=env, locustfile=COUNTED, run_time=COUNTED_GUARD,
    )  # fmt: skip
    assert breached.returncode == BREACHED_EXIT_CODE, breached.stderr[-3000:]
    p50 = json.loads((tmp_path / "latency.json").read_text())["requests"][NAME]["latency_ms"]["p50"]
    assert p50 > 20  # the model sleeps 20 ms
    lines = [line for line in breached.stderr.splitlines() if line.startswith("locust-inference: check")]
    assert lines == [f"locust-inference: check breached for {NAME}: p50<=5ms: measured {p50:.3f} ms"]
    assert "checks: 1 of 2 held" in breached.stdout
    failed = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["p50<=5ms"]
    assert ET.parse(junit).getroot().get("failures") == "1"


def test_a_malformed_condition_stops_the_start_in_one_line(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path, "--host", triton.url, "--check", "p99<=fast", env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx")
    )
    assert_clean_failure(run, "--check 'p99<=fast' is not a condition")


def test_the_master_judges_the_merged_results_from_the_config_file(triton, tmp_path: Path) -> None:
    proc, results = run_distributed(
        tmp_path, triton.url, model="sleep_20ms", users=2, run_time="3s", extra="check = [p50<=5ms, rps>=1]\n"
    )
    assert proc.returncode == BREACHED_EXIT_CODE, (proc.stdout[-2000:], proc.stderr[-3000:])
    summary = json.loads((results / "latency.json").read_text())
    p50 = summary["requests"][NAME]["latency_ms"]["p50"]
    output = proc.stdout + proc.stderr
    assert f"locust-inference: check breached for {NAME}: p50<=5ms: measured {p50:.3f} ms" in output
    assert output.count("check breached") == 1  # the workers judge nothing
