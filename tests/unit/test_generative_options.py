"""Generative options and prompts: bodies as each API expects them, and hostile --prompts files or option
values stopping the start with one line (exit 2). No server needed: prompts are read before any is asked."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
from locust_inference import generative, generative_options
from locust_inference._native import ConfigError, ProtocolError
from locust_inference.options import Settings
from support.runs import assert_clean_failure, clean_env, run_locust

from servers.launch import free_port


def _options(**given: Any) -> argparse.Namespace:
    names = ("api", "stream", "no_stream", "prompts", "max_tokens", "ignore_eos", "sampling", "token_slo")
    return argparse.Namespace(**{name: given.get(name) for name in names})


def _settings(server: str = "litserve", **given: Any) -> Settings:
    return Settings(
        server=server,
        model="m",
        host="http://127.0.0.1:1",
        image=Path("unused"),
        generative=generative_options.resolve(_options(**given)),
    )


def test_chat_body_streams_asks_for_usage_and_passes_sampling_through() -> None:
    settings = _settings(api="chat", max_tokens="16", ignore_eos=True, sampling=["temperature=0.5", 'stop=["x"]'])
    [body] = generative.bodies(settings, ["Hello there"])
    assert json.loads(body) == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 16,
        "ignore_eos": True,
        "min_tokens": 16,
        "temperature": 0.5,
        "stop": ["x"],
    }
    assert generative.url(settings) == "http://127.0.0.1:1/v1/chat/completions"


def test_completions_without_stream_joins_messages_and_asks_for_no_usage_option() -> None:
    settings = _settings(api="completions", no_stream=True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    [body] = generative.bodies(settings, [messages])
    assert json.loads(body) == {"model": "m", "prompt": "Be brief.\nHi", "stream": False}
    assert generative.url(settings) == "http://127.0.0.1:1/v1/completions"


@pytest.mark.parametrize(("stream", "path"), [(True, "generate_stream"), (False, "generate")])
def test_triton_generate_body_and_url(stream: bool, path: str) -> None:
    settings = _settings("triton", api="generate", no_stream=not stream, max_tokens="8", sampling=["top_k=4"])
    [body] = generative.bodies(settings, ["Hi"])
    assert json.loads(body) == {"text_input": "Hi", "max_tokens": 8, "top_k": 4}
    assert generative.url(settings) == f"http://127.0.0.1:1/v2/models/m/{path}"


def test_prompts_file_formats(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a"}\n\n{"messages": [{"role": "user", "content": "b"}]}\n')
    assert generative.load_prompts(jsonl, 2**30) == ["a", [{"role": "user", "content": "b"}]]
    sharegpt = tmp_path / "s.json"
    conversations = [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}]
    sharegpt.write_text(json.dumps([{"id": "1", "conversations": conversations}]))
    assert generative.load_prompts(sharegpt, 2**30) == [[{"role": "user", "content": "q"}]]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"api": "chatt"}, "--api must be one of infer, chat, completions, generate"),
        ({"stream": True}, "--stream applies to generative models"),
        ({"api": "infer", "sampling": ["temperature=1"]}, "--sampling applies to generative models"),
        ({"api": "chat", "stream": True, "no_stream": True}, "contradict"),
        ({"api": "chat", "max_tokens": "0"}, "--max-tokens must be a whole number, or LOW-HIGH, from 1 to 1,000,000"),
        ({"api": "chat", "max_tokens": "1e3"}, "--max-tokens must be a whole number"),
        ({"api": "chat", "max_tokens": "64-16"}, "--max-tokens must be a whole number, or LOW-HIGH"),
        ({"api": "chat", "max_tokens": "1-2000000"}, "--max-tokens must be a whole number, or LOW-HIGH"),
        ({"api": "chat", "ignore_eos": True}, "--ignore-eos needs --max-tokens"),
        ({"api": "chat", "sampling": ["temperature"]}, "--sampling must be key=value"),
        ({"api": "chat", "sampling": ["temperature=hot"]}, "--sampling temperature: the value must be JSON"),
        ({"api": "chat", "sampling": ["stream=false"]}, "--sampling stream=... is set by --stream/--no-stream"),
        ({"api": "chat", "sampling": ["top_k=1", "top_k=2"]}, "--sampling top_k is given twice"),
        ({"api": "chat", "sampling": ["stop=" + "[" * 30_000 + "]" * 30_000]}, "--sampling stop: the value is nested"),
    ],
)
def test_bad_generative_options(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        generative_options.resolve(_options(**given))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


BAD_PROMPTS = [
    (b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"\n', "line 3 is not JSON"),
    (b'{"prompt": "a"}\n{"text": "b"}\n', "line 2 has neither 'prompt' nor 'messages'"),
    (b'{"prompt": 7}\n', "line 1: 'prompt' must be a non-empty string"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}\n', "line 1: message 1 has role 'wizard'"),
    (b'{"prompt": "a"}\n{"prompt": "\xff"}\n', "line 2 is not UTF-8"),
    (b"[1, 2]\n", "entry 1 has no 'conversations' list"),
    (
        b'[{"conversations": [{"from": "human", "value": "q"}]}, {"conversations": [{"from": "gpt", "value": "r"}]}]',
        "entry 2 has no human turn",
    ),
    (b"\n\n", "holds no prompts"),
    (b'{"prompt": "a"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 2 is nested too deeply"),
    (b"[" * 100_000 + b"]" * 100_000, "is nested too deeply"),
]


@pytest.mark.parametrize(
    ("content", "message"), BAD_PROMPTS, ids=[m.split()[0] + m.split()[-1] for _, m in BAD_PROMPTS]
)
def test_bad_prompts_file_stops_the_start_in_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(content)
    host = f"http://127.0.0.1:{free_port()}"  # never asked: the prompts are read first
    run = run_locust(
        tmp_path,
        "--host",
        host,
        "--api",
        "chat",
        "--prompts",
        str(prompts),
        env=clean_env(SERVER="litserve", MODEL_NAME="m"),
    )
    assert_clean_failure(run, f"--prompts {prompts}", message)


def test_prompts_file_too_large_is_refused_before_it_is_read(tmp_path: Path) -> None:
    prompts = tmp_path / "big.jsonl"
    with open(prompts, "wb") as file:  # sparse: 2 MiB that are never read
        file.truncate(2 * 1024**2)
    run = run_locust(
        tmp_path,
        "--host",
        f"http://127.0.0.1:{free_port()}",
        "--api",
        "chat",
        "--prompts",
        str(prompts),
        "--max-input-memory",
        "4MiB",
        env=clean_env(SERVER="litserve", MODEL_NAME="m"),
    )
    assert_clean_failure(run, f"--prompts {prompts} is 2,097,152 bytes, more than the 699,050 allowed")


def test_missing_prompts_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    run = run_locust(
        tmp_path,
        "--host",
        f"http://127.0.0.1:{free_port()}",
        "--api",
        "chat",
        "--prompts",
        str(missing),
        env=clean_env(SERVER="litserve", MODEL_NAME="m"),
    )
    assert_clean_failure(run, f"--prompts {missing} cannot be read (No such file or directory)")


def test_generate_needs_triton(tmp_path: Path) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        f"http://127.0.0.1:{free_port()}",
        "--api",
        "generate",
        env=clean_env(SERVER="litserve", MODEL_NAME="m"),
    )
    assert_clean_failure(run, "--api generate is Triton's generate extension: use --server triton")


def test_token_slos_are_parsed() -> None:
    settings = generative_options.resolve(_options(api="chat", token_slo=["ttft_p99=500ms", "tpot_p90 = 0.05s"]))
    assert [(s.measure, s.percentile, s.ms, s.key) for s in settings.slos] == [
        ("ttft", 99.0, 500.0, "ttft_p99"),
        ("tpot", 90.0, 50.0, "tpot_p90"),
    ]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["ttft=500ms"], "--token-slo takes ttft_p99=500ms"),
        (["itl_p99=5ms"], "--token-slo takes"),
        (["ttft_p100=5ms"], "the percentile must be within 0-100"),
        (["ttft_p99=0"], "the time within a day"),
        (["ttft_p99=5ms", "ttft_p50=9ms"], "--token-slo gives ttft twice"),
    ],
)
def test_bad_token_slos(given: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        generative_options.resolve(_options(api="chat", token_slo=given))


def test_token_slo_needs_a_generative_api() -> None:
    with pytest.raises(ConfigError, match="--token-slo applies to generative models"):
        generative_options.resolve(_options(token_slo=["ttft_p99=1s"]))


def test_a_request_meets_the_objectives_only_when_it_succeeded_within_every_one() -> None:
    slos = generative_options.resolve(_options(api="chat", token_slo=["ttft_p99=100ms", "tpot_p99=10ms"])).slos
    count = generative.SloCount(slos)
    count.judge(True, 99.0, 9.0, 5000.0)  # met
    count.judge(True, 99.0, None, 5000.0)  # met: one token, no time per output token to miss
    count.judge(True, None, 9.0, 5000.0)  # missed: no first token (not streamed)
    count.judge(True, 101.0, 9.0, 5000.0)  # missed: TTFT
    count.judge(False, 1.0, 1.0, 5.0)  # missed: failed
    assert (count.met, count.judged) == (2, 5)
    assert count.take() == {"met": 2, "judged": 5} and (count.met, count.judged) == (0, 0)


@pytest.mark.parametrize(
    "report",
    [
        None,
        {"met": 1},
        {"met": 1, "judged": 2, "extra": 0},
        {"met": True, "judged": 2},
        {"met": 1.0, "judged": 2},
        {"met": -1, "judged": 2},
        {"met": 3, "judged": 2},
        {"met": 10**5000, "judged": 10**5000},
    ],
    ids=["none", "missing", "extra", "bool", "float", "negative", "met-above-judged", "huge"],
)
def test_a_forged_slo_report_is_refused_and_adds_nothing(report: Any) -> None:
    count = generative.SloCount(())
    count.add({"met": 1, "judged": 2})
    with pytest.raises(ProtocolError):
        count.add(report)
    assert (count.met, count.judged) == (1, 2)
    count.add({"met": 0, "judged": generative.MAX_SLO_COUNT - 2})
    with pytest.raises(ProtocolError, match="overflow"):
        count.add({"met": 0, "judged": 1})


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--expect-top1", "3"], "--expect-top1"),
        (["--batch-size", "4"], "--batch-size"),
        (["--triton-format", "json"], "--triton-format"),
        (["--input-data", "random"], "--input-data"),
        (["--preprocess", "letterbox"], "--preprocess, --resize"),
    ],
)
def test_tensor_options_are_refused_with_prompts(tmp_path: Path, args: list[str], option: str) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        f"http://127.0.0.1:{free_port()}",
        "--api",
        "generate",
        *args,
        env=clean_env(SERVER="triton", MODEL_NAME="m"),
    )
    assert_clean_failure(run, f"{option}", "applies to tensor requests (--api infer); --api generate sends prompts")


def test_a_max_tokens_range_gives_each_prompt_its_own_length_reproducibly() -> None:
    def lengths(seed: int | None) -> list[int]:
        settings = Settings(
            server="litserve",
            model="m",
            host="http://127.0.0.1:1",
            image=Path("unused"),
            seed=seed,
            generative=generative_options.resolve(_options(api="chat", max_tokens="16-64", ignore_eos=True)),
        )
        bodies = [json.loads(b) for b in generative.bodies(settings, [f"p{i}" for i in range(200)])]
        assert all(b["min_tokens"] == b["max_tokens"] for b in bodies)  # --ignore-eos: that length exactly
        return [b["max_tokens"] for b in bodies]

    drawn = lengths(7)
    assert min(drawn) == 16 and max(drawn) == 64 and len(set(drawn)) > 20
    assert lengths(7) == drawn and lengths(8) != drawn and lengths(None) == lengths(None)
