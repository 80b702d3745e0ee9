"""A real Triton ensemble (``ensemble_checksum``: ``ensemble_prep`` then ``ensemble_hash``, see
servers/echo_models.py) loaded by the reference server's normal start: its answers are the chain's, and a
run's ``latency.json`` has the ensemble's breakdown with each composing model's own under ``composing``, over
HTTP and over gRPC, in the summary and in make compare's breakdown table.

The session's Triton serves it (tests/conftest.py): the composing models are addressed by no other test, so
their counts over a run are the ensemble's, which is ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from locust_inference.backends import prepare
from locust_inference.report import format_ms, load_run
from locust_inference.report.tables import breakdown_rows
from support.own_model import answers, settings, stretched
from support.runs import IMAGE, clean_env, run_locust

from servers.echo_models import ENSEMBLES
from servers.launch import RunningServer
from servers.models import checksum_words

ENSEMBLE = "ensemble_checksum"
COMPOSING = list(ENSEMBLES[ENSEMBLE].composing)  # ["ensemble_prep", "ensemble_hash"], in step order
COMPUTE = ("compute_input_ms", "compute_infer_ms", "compute_output_ms")
PHASES = ("queue_ms", *COMPUTE)


@pytest.fixture()
def triton_ensemble(triton: RunningServer) -> RunningServer:
    """The session's Triton, which serves the ensemble (``--models ...,ensemble_checksum``)."""
    assert ENSEMBLE in triton.models
    return triton


def test_the_ensemble_chains_its_composing_models(triton_ensemble, http) -> None:
    config = http.get(f"{triton_ensemble.url}/v2/models/{ENSEMBLE}/config", timeout=10).json()
    assert config["platform"] == "ensemble"
    assert [s["model_name"] for s in config["ensemble_scheduling"]["step"]] == COMPOSING
    target = prepare(settings(triton_ensemble.url, ENSEMBLE, image=str(IMAGE)))
    (_, got), *_ = answers(target, 1)
    # prep's CHW float32 copy of the image, then hash's checksum of those bytes: the chain's answer
    chw = stretched(IMAGE, 224, 224).transpose(2, 0, 1).astype(np.float32)
    assert got == checksum_words(chw)


def run_ensemble(server: RunningServer, tmp_path: Path, *protocol: str) -> tuple[Any, dict[str, Any]]:
    host = f"http://127.0.0.1:{server.grpc_port}" if protocol else server.url
    run = run_locust(
        tmp_path,
        "--host",
        host,
        *protocol,
        "--image",
        str(IMAGE),
        "--stop-timeout",
        "10",  # each user reports its request in flight: Triton's count at the end is exactly ours
        "HighUser",
        env=clean_env(SERVER="triton", MODEL_NAME=ENSEMBLE),
        users=2,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    document: dict[str, Any] = json.loads((tmp_path / "latency.json").read_text())
    return run, document


def check_composing(run: Any, document: dict[str, Any]) -> dict[str, Any]:
    """What holds of the ensemble's breakdown and its composing models' over any run; the breakdown."""
    name = f"triton/{ENSEMBLE}"
    entry = document["requests"][name]
    assert entry["failures"] == 0, run.failures()
    ours = entry["count"]
    assert ours == int(run.stats(name)["Request Count"]) > 0
    stats = document["server_stats"]
    assert stats["inference_count"] == ours  # batch size 1: one inference per request
    composing = stats["composing"]
    assert list(composing) == COMPOSING
    for model, own in composing.items():
        assert own["inference_count"] == ours, (model, own)  # every request went through every step
        assert 0 < own["execution_count"] <= ours  # Triton may batch them
        assert all(own[phase] >= 0 for phase in PHASES) and own["compute_infer_ms"] > 0, own
        # a step's time is part of the ensemble request's: queue + compute within Triton's request time
        assert own["server_total_ms"] == pytest.approx(sum(own[phase] for phase in PHASES), rel=1e-12)
        assert own["server_total_ms"] <= stats["request_ms"], (model, own, stats)
        assert "client_mean_ms" not in own  # the client sees only the ensemble
    # Triton's ensemble entry adds up its steps' compute (its queue is its own scheduler's): with the same
    # count of successes each, the means add up as the sums do
    for phase in COMPUTE:
        assert stats[phase] == pytest.approx(sum(own[phase] for own in composing.values()), rel=1e-9), phase
    # the summary: one line per composing model under the ensemble's
    lines = run.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Triton server side, per inference (ms): "))
    assert [line.split(":")[0] for line in lines[at + 1 : at + 3]] == [f"  composing model {m}" for m in COMPOSING]
    assert f"queue {composing[COMPOSING[0]]['queue_ms']:.3f}," in lines[at + 1]
    return stats


def test_a_run_has_each_composing_models_breakdown(triton_ensemble, tmp_path: Path) -> None:
    run, document = run_ensemble(triton_ensemble, tmp_path)
    stats = check_composing(run, document)
    # make compare: a row per composing model under the run's, with that model's numbers
    compared = load_run(tmp_path)
    compared.label = "run"
    _, rows = breakdown_rows([compared])
    assert [row[0] for row in rows] == ["run", *(f"run \u203a composing {m}" for m in COMPOSING)]
    for row, model in zip(rows[1:], COMPOSING, strict=True):
        assert row[2] == format_ms(stats["composing"][model]["queue_ms"])


def test_over_grpc_the_composing_models_are_read_with_model_config(triton_ensemble, tmp_path: Path) -> None:
    run, document = run_ensemble(triton_ensemble, tmp_path, "--protocol", "grpc")
    assert document["protocol"] == "grpc"
    check_composing(run, document)


def test_with_several_models_the_ensembles_entry_has_its_composing_models(triton_ensemble, tmp_path: Path) -> None:
    """The ensemble and one of its own composing models as two models of one run: each request name has its
    model's statistics, and the composing model's count under the ensemble is all it served, the ensemble's
    requests and the ones sent to it directly."""
    hashed = COMPOSING[1]
    run = run_locust(
        tmp_path,
        "--host",
        triton_ensemble.url,
        "--model-name",
        f"{ENSEMBLE},{hashed}",
        "--image",
        str(IMAGE),
        "--stop-timeout",
        "10",
        "HighUser",
        env=clean_env(SERVER="triton"),
        users=2,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads((tmp_path / "latency.json").read_text())
    assert document["server_stats"] is None  # each model's own, below
    ensemble, direct = (document["requests"][f"triton/{name}"] for name in (ENSEMBLE, hashed))
    assert ensemble["count"] > 0 and direct["count"] > 0, run.failures()
    assert ensemble["server_stats"]["inference_count"] == ensemble["count"]
    assert "composing" not in direct["server_stats"]  # not an ensemble
    composing = ensemble["server_stats"]["composing"]
    assert composing[COMPOSING[0]]["inference_count"] == ensemble["count"]
    # the same model's count, read for the ensemble and for itself: the ensemble's requests and its own
    assert composing[hashed]["inference_count"] == ensemble["count"] + direct["count"]
    assert direct["server_stats"]["inference_count"] == ensemble["count"] + direct["count"]
    lines = run.stdout.splitlines()
    at = lines.index(next(line for line in lines if line.startswith(f"Triton server side, triton/{ENSEMBLE}, ")))
    assert [line.split(":")[0] for line in lines[at + 1 : at + 3]] == [f"  composing model {m}" for m in COMPOSING]
