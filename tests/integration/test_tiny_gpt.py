"""The small real language model (servers/tiny_gpt.py) on both servers: the same prompt gives the same text
on each, and a Locust run counts exactly the tokens asked for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import GENERATOR_MAX_TOKENS, GeneratorServer
from support.runs import clean_env, run_locust

from servers.launch import RunningServer, litserve_llm_server
from servers.tiny_gpt import VOCAB, TinyGpt, output_length

PROMPT = "Explain in a few sentences how a load balancer decides where to send a request."


def test_the_model_is_deterministic_and_writes_its_vocabulary() -> None:
    model = TinyGpt(threads=1)
    first, again = "".join(model.steps(PROMPT, 24)), "".join(model.steps(PROMPT, 24))
    assert first == again and len(first) == 24 and set(first) <= set(VOCAB)
    assert "".join(model.steps("Another prompt", 24)) != first
    assert output_length("x" * 2000, 10_000) == 512  # the prompt keeps its last 512 characters of 1024


@pytest.fixture(scope="module")
def servers(triton_llm: GeneratorServer) -> Iterator[dict[str, RunningServer]]:
    """A LitServe of its own (it serves one model), and the session's Triton of generators, which serves
    tiny_gpt capped at the generator's --max-tokens: the same cap on both."""
    assert "tiny_gpt" in triton_llm.server.models
    cap = str(GENERATOR_MAX_TOKENS)
    with litserve_llm_server(extra_args=["--model", "tiny_gpt", "--max-tokens", cap]) as litserve:
        yield {"litserve": litserve, "triton": triton_llm.server}


def test_both_servers_answer_the_same_text(servers: dict[str, RunningServer]) -> None:
    session = requests.Session()
    session.trust_env = False
    chat = {"model": "tiny_gpt", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}
    answer = session.post(f"{servers['litserve'].url}/v1/chat/completions", json=chat, timeout=60).json()
    text = "".join(
        json.loads(line[len("data: ") :])["text_output"]
        for line in session.post(
            f"{servers['triton'].url}/v2/models/tiny_gpt/generate_stream",
            json={"text_input": PROMPT, "max_tokens": 16},
            timeout=60,
        ).text.splitlines()
        if line.startswith("data: ")
    )
    assert answer["choices"][0]["message"]["content"] == text == "".join(TinyGpt(threads=1).steps(PROMPT, 16))
    assert answer["usage"] == {"prompt_tokens": len(PROMPT), "completion_tokens": 16, "total_tokens": len(PROMPT) + 16}


@pytest.mark.parametrize(("server", "api"), [("litserve", "chat"), ("triton", "generate")])
def test_a_locust_run_counts_the_tokens_asked_for(
    servers: dict[str, RunningServer], tmp_path: Path, server: str, api: str
) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        servers[server].url,
        "--api",
        api,
        "--max-tokens",
        "20",
        "HighUser",
        env=clean_env(SERVER=server, MODEL_NAME="tiny_gpt"),
        users=2,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    entry = json.loads((run.csv_prefix.parent / "latency.json").read_text())["requests"][f"{server}/tiny_gpt"]
    tokens = entry["tokens"]
    assert tokens["token_requests"] == entry["count"] > 0
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == 20
    assert tokens["ttft_ms"]["p50"] > 0 and tokens["itl_ms"]["p50"] > 0
