"""Several models in one run (``--model-name a,b --model-weights 3,1``), against the real Triton: each model
its own request name, histograms and Triton statistics; users bound to models by weight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import configargparse
import pytest
from locust_inference import options
from locust_inference._native import ConfigError
from locust_inference.report import format_ms, load_run
from locust_inference.report.tables import breakdown_rows
from support.runs import assert_clean_failure, clean_env, run_distributed, run_locust

MODELS = "sleep_20ms,tiny_onnx"
NAMES = ("triton/sleep_20ms", "triton/tiny_onnx")


def load(tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((tmp_path / "latency.json").read_text())
    return result


def resolve(*args: str, server: str = "triton") -> options.Settings:
    parser = configargparse.ArgumentParser(add_help=False, default_config_files=[])
    options.add_arguments(parser)
    return options.resolve(parser.parse_args(list(args)), None, environ={"SERVER": server})


def test_closed_loop_each_model_has_its_own_numbers_and_tritons_count(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--model-name",
        MODELS,
        "--model-weights",
        "3,1",
        "--stop-timeout",
        "10",  # each user reports its request in flight: Triton's count at the end is exactly ours
        "--metrics-url",
        f"http://127.0.0.1:{triton.metrics_port}/metrics",
        "HighUser",
        env=clean_env(SERVER="triton"),
        users=4,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = load(tmp_path)
    # the server-metrics line names each model, with what the metrics endpoint counted of it: every request
    # of ours (the first read precedes the first request, the last follows the last)
    (line,) = [text for text in run.stdout.splitlines() if text.startswith("Server metrics (")]
    totals = result["server_metrics"]["totals"]["models"]
    for name, model in zip(NAMES, MODELS.split(","), strict=True):
        counted = totals[model]
        assert counted["success"] == result["requests"][name]["count"] > 0, (name, counted)
        assert f"{model}: {counted['success']} succeeded, 0 failed" in line, line
    assert sorted(result["requests"]) == list(NAMES)
    assert result["server_stats"] is None  # one model's statistics each, below
    total = 0
    for name in NAMES:
        entry, row = result["requests"][name], run.stats(name)
        assert entry["failures"] == 0 and int(row["Failure Count"]) == 0, run.failures()
        assert entry["count"] == int(row["Request Count"]) > 0
        # Triton's statistics of this model count exactly what was sent to it (batch size 1)
        assert entry["server_stats"]["inference_count"] == entry["count"], (name, entry["server_stats"])
        assert 0 < entry["server_stats"]["execution_count"] <= entry["count"]  # Triton may batch them
        assert f"Triton server side, {name}, per inference (ms): queue" in run.stdout
        total += entry["count"]
    assert total == int(run.stats()["Request Count"]) == result["locust"]["requests"]
    with (tmp_path / "latency.csv").open() as f:
        assert {line.split(",")[0] for line in f.read().splitlines()[1:]} == set(NAMES)
    # make compare: a server-side breakdown row per model, with that model's numbers
    compared = load_run(tmp_path)
    compared.label = "run"
    _, rows = breakdown_rows([compared])
    assert [row[0] for row in rows] == [f"run {name}" for name in NAMES]
    for row, name in zip(rows, NAMES, strict=True):
        assert row[2] == format_ms(result["requests"][name]["server_stats"]["queue_ms"])


def test_open_loop_users_are_bound_to_models_by_weight(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--model-name",
        MODELS,
        "--model-weights",
        "3,1",
        "--rate",
        "10",
        "LowUser",
        env=clean_env(SERVER="triton"),
        users=4,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    requests = load(tmp_path)["requests"]
    # 4 users at weights 3,1: 3 streams of 10 req/s to the first model, 1 to the second
    assert [requests[name]["open_loop"]["streams"] for name in NAMES] == [3, 1]
    assert [requests[name]["open_loop"]["offered_rate_per_s"] for name in NAMES] == pytest.approx([30, 10], rel=0.05)


def bind(weights: tuple[int, ...], users: int) -> list[int]:
    bound = [0] * len(weights)
    order = []
    for _ in range(users):
        pick = options.next_model(bound, weights)
        bound[pick] += 1
        order.append(pick)
    return order


def test_users_are_bound_in_weighted_turn() -> None:
    assert bind((3, 1), 4) == [0, 0, 1, 0]
    assert bind((3, 1, 2), 6) == [0, 2, 0, 1, 2, 0]
    for weights in ((3, 1), (1, 1), (5, 2, 7), (1, 9), (4, 4, 1)):
        order = bind(weights, 3 * sum(weights))
        for k in (1, 2, 3):  # at each multiple of the weights' sum, the split is the weights'
            assert [order[: k * sum(weights)].count(i) for i in range(len(weights))] == [k * w for w in weights]
        for n in range(1, len(order) + 1):  # within one user of the exact share at every count
            assert all(abs(order[:n].count(i) - n * w / sum(weights)) < 1 for i, w in enumerate(weights))


def test_one_model_is_as_before() -> None:
    one = resolve("--model-name", "tiny_onnx")
    assert (one.model, one.models, one.weights, one.name) == ("tiny_onnx", (), (), "triton/tiny_onnx")
    assert one.per_model() == [one]
    several = resolve("--model-name", " sleep_20ms , tiny_onnx ")
    assert (several.models, several.weights) == (("sleep_20ms", "tiny_onnx"), (1, 1))
    assert [s.name for s in several.per_model()] == list(NAMES)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--model-name", MODELS, "--model-weights", "3"], "--model-weights '3' has 1 weights for 2 models"),
        (["--model-name", MODELS, "--model-weights", "3,0"], "--model-weights must be whole numbers from 1"),
        (["--model-name", MODELS, "--model-weights", "3,-1"], "not '-1'"),
        (["--model-name", MODELS, "--model-weights", "3,x"], "not 'x'"),
        (["--model-name", "tiny_onnx", "--model-weights", "1,1"], "has 2 weights for 1 models"),
        (["--model-name", "tiny_onnx,,checksum"], "has an empty model name"),
        (["--model-name", "tiny_onnx,tiny_onnx"], "names a model twice"),
    ],
)
def test_bad_models_or_weights_are_one_line(args: list[str], line: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(*args)
    assert line in str(err.value)


def test_several_models_are_for_triton() -> None:
    with pytest.raises(ConfigError) as err:
        resolve("--model-name", MODELS, server="litserve")
    assert "apply to --server triton, not litserve" in str(err.value)


def test_bad_weights_stop_the_run_with_exit_2(tmp_path: Path) -> None:
    run = run_locust(tmp_path, "--model-name", MODELS, "--model-weights", "3,0", env=clean_env(SERVER="triton"))
    assert_clean_failure(run, "--model-weights must be whole numbers from 1 to 1,000,000, not '0'")


def test_a_missing_model_among_several_stops_the_run(triton, tmp_path: Path) -> None:
    run = run_locust(
        tmp_path, "--host", triton.url, "--model-name", "tiny_onnx,resnet51", env=clean_env(SERVER="triton")
    )
    assert_clean_failure(run, "has no model 'resnet51'")


def test_workers_merge_each_model_and_tritons_counts_match(triton, tmp_path: Path) -> None:
    """Each worker binds its own users (2 each here, at weights 1,1: one per model); the master merges each
    model's measurements and reads each model's statistics."""
    proc, results = run_distributed(
        tmp_path,
        triton.url,
        workers=2,
        users=4,
        run_time="3s",
        model=MODELS,
        extra="model-weights = 1,1\nstop-timeout = 10\n",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = load(results)
    assert sorted(result["requests"]) == list(NAMES)
    for name in NAMES:
        entry = result["requests"][name]
        assert entry["failures"] == 0 and entry["count"] > 0
        assert entry["server_stats"]["inference_count"] == entry["count"], (name, entry["server_stats"])
    assert sum(result["requests"][name]["count"] for name in NAMES) == result["locust"]["requests"]
