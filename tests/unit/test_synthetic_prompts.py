"""Synthetic prompts (``--input-tokens MEAN``, ``--input-tokens-stddev SD``, ``--synthetic-prompts N``): each
prompt exactly its drawn length by the ``--tokenizer``, reproducible from ``--seed``; bad values one line,
exit 2. (The real LitServe generator's count: integration/test_synthetic_prompts_servers.py.)

The counts are checked with the Python ``tokenizers`` package: another binding of the same library than the
native count the prompts were made with, and the one the server counts with.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest
from locust_inference import generative_options, synthetic_prompts
from locust_inference._native import ConfigError
from support.runs import assert_clean_failure, clean_env, run_locust
from support.tokenizers import count, make_all
from tokenizers import Tokenizer


@pytest.fixture(scope="module")
def tokenizers_made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Tokenizer]]:
    made = make_all(tmp_path_factory.mktemp("tokenizers"))
    bpe_tok = made["bpe"][1]
    # what makes the tests able to fail: a word's count apart is not its count in a prompt
    apart = sum(count(bpe_tok, f" {w}") for w in synthetic_prompts.WORDS)
    assert apart != count(bpe_tok, "".join(f" {w}" for w in synthetic_prompts.WORDS))
    assert any(count(bpe_tok, f" {w}") > 1 for w in synthetic_prompts.WORDS)
    return made


@pytest.mark.parametrize("name", ["bpe", "chars", "wordpiece"])
def test_each_prompt_is_exactly_its_length_by_the_tokenizer(
    tokenizers_made: dict[str, tuple[Path, Tokenizer]], name: str
) -> None:
    path, tok = tokenizers_made[name]
    draw = random.Random(26)
    for _ in range(12):  # proptest-like: random means, spreads, counts and seeds
        mean, seed = draw.randint(1, 300), draw.randint(0, 2**31)
        stddev = draw.choice([0, draw.uniform(0, mean)])
        targets = synthetic_prompts.lengths(draw.randint(1, 20), mean, stddev, seed)
        prompts = synthetic_prompts.make(targets, seed, tokenizer=path)
        assert [count(tok, p) for p in prompts] == targets, (mean, stddev, seed)
        assert all(p == p.strip() and p for p in prompts)


def test_lengths_follow_the_mean_and_spread_and_the_seed() -> None:
    assert synthetic_prompts.lengths(5, 40, 0, 1) == [40] * 5
    drawn = synthetic_prompts.lengths(2000, 200, 30, 7)
    assert drawn == synthetic_prompts.lengths(2000, 200, 30, 7)
    assert drawn != synthetic_prompts.lengths(2000, 200, 30, 8)
    mean = sum(drawn) / len(drawn)
    spread = (sum((x - mean) ** 2 for x in drawn) / len(drawn)) ** 0.5
    # 2000 draws: the sample mean's own spread is 30/sqrt(2000) = 0.7
    assert abs(mean - 200) < 4 and 25 < spread < 35, (mean, spread)
    # a spread as wide as the mean: never below one token
    assert min(synthetic_prompts.lengths(2000, 3, 3, 1)) == 1


def test_the_same_seed_makes_the_same_prompts(tokenizers_made: dict[str, tuple[Path, Tokenizer]]) -> None:
    path, _ = tokenizers_made["bpe"]
    targets = synthetic_prompts.lengths(10, 50, 10, 3)
    once = synthetic_prompts.make(targets, 3, tokenizer=path)
    assert once == synthetic_prompts.make(targets, 3, tokenizer=path)
    assert once != synthetic_prompts.make(targets, 4, tokenizer=path)
    assert len(set(once)) == len(once)


def test_a_tokenizer_that_cannot_reach_the_length_is_one_line() -> None:
    # every text counts 2 tokens more than it should: no prompt reaches its length
    with pytest.raises(ConfigError, match=r"^--tokenizer cannot make a prompt of exactly 5 tokens"):
        synthetic_prompts.make([5], 0, counter=lambda texts: [len(t.split()) * 2 + 2 for t in texts])
    with pytest.raises(ConfigError, match=r"counts no token in plain English words"):
        synthetic_prompts.make([5], 0, counter=lambda texts: [0 for _ in texts])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_tokens": "0"}, "--input-tokens must be a whole number from 1 to 1,000,000, not '0'"),
        ({"input_tokens": "12.5"}, "--input-tokens must be a whole number"),
        ({"input_tokens": "99999999"}, "--input-tokens must be a whole number"),
        ({"input_tokens": "10", "input_tokens_stddev": "11"}, "--input-tokens-stddev must be a number from 0 to"),
        ({"input_tokens": "10", "input_tokens_stddev": "-1"}, "--input-tokens-stddev must be a number from 0 to"),
        ({"input_tokens": "10", "input_tokens_stddev": "nan"}, "--input-tokens-stddev must be a number from 0 to"),
        ({"input_tokens": "10", "synthetic_prompts": "0"}, "--synthetic-prompts must be a whole number"),
        ({"input_tokens": "1000000", "synthetic_prompts": "100"}, "would make more than 20,000,000 tokens"),
        ({"input_tokens_stddev": "3"}, "--input-tokens-stddev shapes synthetic prompts: add --input-tokens"),
        ({"synthetic_prompts": "3"}, "--synthetic-prompts shapes synthetic prompts: add --input-tokens"),
        ({"input_tokens": "10", "tokenizer": None}, "--input-tokens counts tokens with --tokenizer"),
        ({"input_tokens": "10", "prompts": "p.jsonl"}, "give it or --prompts, not both"),
        ({"api": "infer", "tokenizer": None, "input_tokens": "10"}, "--input-tokens applies to generative models"),
    ],
)
def test_bad_synthetic_options_are_refused(options: dict[str, str | None], message: str) -> None:
    given = {"api": "chat", "tokenizer": "t.json", **options}
    with pytest.raises(ConfigError) as err:
        generative_options.resolve(argparse.Namespace(**given))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_good_synthetic_options() -> None:
    given = argparse.Namespace(api="chat", tokenizer="t.json", input_tokens="64", input_tokens_stddev="8.5")
    settings = generative_options.resolve(given)
    assert (settings.input_tokens, settings.synthetic_prompts) == ((64, 8.5), 100)


def test_a_bad_value_stops_locust_with_one_line_and_exit_2(tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        *("--host", "http://127.0.0.1:9", "--api", "chat", "--tokenizer", "t.json", "--input-tokens", "-3"),
        env=clean_env(SERVER="litserve", MODEL_NAME="m"),
    )
    assert_clean_failure(run, "--input-tokens must be a whole number from 1 to 1,000,000, not '-3'")
