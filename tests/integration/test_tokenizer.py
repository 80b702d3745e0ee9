"""``--tokenizer tokenizer.json``: output tokens counted exactly from the generated text, by a tokenizer
trained here (byte-level BPE, Hugging Face ``tokenizers``), against the synthetic generator behind LitServe
(which sends ``usage``) and Triton's generate_stream (which does not).

The generator's text is ``"tok0 tok1 ... tok{n-1} "``, one word per chunk. Agreement between ``usage`` and
the tokenizer means: the tokenizer's count of the whole generated text equals ``usage.completion_tokens``
(the generator's word count).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import GeneratorServer
from locust_inference import generative_options
from locust_inference._native import ConfigError
from locust_inference.generative import BUILTIN_PROMPTS
from support.runs import clean_env, run_locust
from test_generative import generative_run
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from servers import generator

MAX_TOKENS = 24


def generated(n: int) -> str:
    return "".join(generator.token(i) for i in range(n))


def bpe(path: Path) -> Tokenizer:
    """A small byte-level BPE trained on other numbers than the generator's: its words split in pieces."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=270, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(f"tok{i}" for i in range(0, 2000, 7))] * 4, trainer)
    tok.save(str(path))
    return tok


def words(path: Path) -> Tokenizer:
    """One token per whitespace-separated word: the generator's own definition of a token."""
    vocab = {"[UNK]": 0, **{f"tok{i}": i + 1 for i in range(MAX_TOKENS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return tok


def count(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, int]:
    """The BPE tokenizer's file and its count of a whole answer of MAX_TOKENS words."""
    path = tmp_path / "tokenizer.json"
    tok = bpe(path)
    whole = count(tok, generated(MAX_TOKENS))
    # what makes the test able to fail: the words are not one token each, and counting each chunk apart
    # (a separate trailing " " token per chunk) would give another total than counting the whole text
    assert whole != MAX_TOKENS
    assert sum(count(tok, generator.token(i)) for i in range(MAX_TOKENS)) != whole
    return path, whole


def tokens_of(entry: dict[str, Any]) -> dict[str, Any]:
    tokens: dict[str, Any] = entry["tokens"]
    assert tokens["token_requests"] == entry["count"] > 0 and tokens["no_token_requests"] == 0
    return tokens


def test_triton_generate_stream_counts_are_the_tokenizers(
    triton_llm: GeneratorServer, tmp_path: Path, trained: tuple[Path, int]
) -> None:
    path, whole = trained
    entry, _, run = generative_run(
        tmp_path, triton_llm, "triton", "--max-tokens", str(MAX_TOKENS), "--tokenizer", str(path)
    )
    tokens = tokens_of(entry)
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == whole, tokens["output_tokens"]
    assert tokens["output_tokens_total"] == whole * tokens["token_requests"]
    # no usage from generate_stream: the tokenizer's count, exact, not approximate
    assert (tokens["approximate"], tokens["approximate_requests"], tokens["usage_disagreements"]) == (False, 0, 0)
    assert "from usage or the tokenizer" in run.stdout + run.stderr
    # input tokens: the tokenizer's count of each prompt (the built-in ones, sent as text_input)
    prompts = [count(Tokenizer.from_file(str(path)), p) for p in BUILTIN_PROMPTS]
    assert (tokens["input_tokens"]["min"], tokens["input_tokens"]["max"]) == (min(prompts), max(prompts))


def test_litserve_usage_is_checked_against_the_tokenizer(
    litserve_llm: GeneratorServer, tmp_path: Path, trained: tuple[Path, int]
) -> None:
    path, _ = trained
    entry, _, run = generative_run(
        tmp_path, litserve_llm, "litserve", "--max-tokens", str(MAX_TOKENS), "--tokenizer", str(path)
    )
    tokens = tokens_of(entry)
    # the count is usage's (the generator's words); every answer's tokenizer count differs from it
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == MAX_TOKENS
    assert tokens["usage_disagreements"] == tokens["token_requests"]
    out = run.stdout + run.stderr
    assert f"{tokens['token_requests']} requests whose usage differs from the tokenizer's count" in out
    # a tokenizer of the generator's own words agrees with usage on every answer
    agreeing = tmp_path / "words.json"
    assert count(words(agreeing), generated(MAX_TOKENS)) == MAX_TOKENS
    entry, _, _ = generative_run(
        tmp_path, litserve_llm, "litserve", "--max-tokens", str(MAX_TOKENS), "--tokenizer", str(agreeing)
    )
    tokens = tokens_of(entry)
    assert (tokens["usage_disagreements"], tokens["output_tokens_total"]) == (0, MAX_TOKENS * tokens["token_requests"])


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "No such file or directory"),
        (b"{not json", "not a tokenizer.json"),
        (json.dumps({"model": {"type": "nothing"}}).encode(), "not a tokenizer.json"),
    ],
)
def test_a_bad_tokenizer_file_is_one_line_and_exit_2(tmp_path: Path, content: bytes | None, why: str) -> None:
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_bytes(content)
    # no server: the file is refused before any request
    run = run_locust(
        tmp_path,
        "--host",
        "http://127.0.0.1:9",
        "--api",
        "chat",
        "--tokenizer",
        str(path),
        env=clean_env(SERVER="litserve", MODEL_NAME="m"),
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"locust-inference: --tokenizer {path}: ") and why in last, last


def test_tokenizer_without_a_generative_api_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^--tokenizer applies to generative models"):
        generative_options.resolve(argparse.Namespace(tokenizer="t.json"))
    settings = generative_options.resolve(argparse.Namespace(api="chat", tokenizer="~/t.json"))
    assert settings.tokenizer == Path("~/t.json").expanduser()
