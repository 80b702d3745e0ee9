"""The synthetic prompts against the real LitServe generator: the input tokens it counts are those asked for."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import generator_args
from locust_inference import synthetic_prompts
from support.runs import clean_env, run_locust
from support.tokenizers import make_all
from tokenizers import Tokenizer

from servers.launch import litserve_llm_server


@pytest.fixture(scope="module")
def tokenizers_made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Tokenizer]]:
    return make_all(tmp_path_factory.mktemp("tokenizers"))


def test_litserve_reports_the_input_tokens_asked_for(
    tokenizers_made: dict[str, tuple[Path, Tokenizer]], tmp_path: Path
) -> None:
    """The real LitServe generator counts each prompt with the same tokenizer file (its --tokenizer) and
    sends that count as usage.prompt_tokens: every request's count is its prompt's drawn length."""
    path, _ = tokenizers_made["bpe"]
    log = tmp_path / "timing.jsonl"
    targets = synthetic_prompts.lengths(6, 40, 12, 5)
    assert len(set(targets)) > 1
    with litserve_llm_server(extra_args=[*generator_args(log, max_tokens=4), "--tokenizer", str(path)]) as server:
        run = run_locust(
            tmp_path,
            *("--host", server.url, "--api", "chat", "--max-tokens", "4", "--tokenizer", str(path)),
            *("--input-tokens", "40", "--input-tokens-stddev", "12", "--synthetic-prompts", "6", "--seed", "5"),
            "HighUser",
            env=clean_env(SERVER="litserve", MODEL_NAME="synthetic_llm"),
        )
    assert run.returncode == 0, run.stderr[-3000:]
    reported = [r["prompt_tokens"] for r in map(json.loads, log.read_text().splitlines()) if r["where"] == "generator"]
    assert len(reported) >= len(targets), reported
    assert set(reported) == set(targets), (Counter(reported), targets)
    tokens = json.loads((run.csv_prefix.parent / "latency.json").read_text())["requests"]["litserve/synthetic_llm"]
    inputs = tokens["tokens"]["input_tokens"]
    assert (inputs["min"], inputs["max"]) == (min(targets), max(targets)), inputs
