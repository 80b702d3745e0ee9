"""Generative requests: the prompts (``--prompts``, or a small built-in set) become one prepared body each
(the engine rotates over them), for OpenAI chat or completions or for Triton's generate extension, and
the endpoint reads the answer as tokens (streamed over Server-Sent Events, or whole).

The prompts file is hostile input: its size is checked before it is read (against ``--max-input-memory``
and :data:`defaults.MAX_PROMPTS_BYTES`), and a bad line or entry stops the start with one line naming it.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locust_inference import defaults
from locust_inference._native import ConfigError, ProtocolError
from locust_inference.generative_options import TokenSlo

if TYPE_CHECKING:
    from locust_inference.options import Settings

__all__ = ["BUILTIN_PROMPTS", "Prompt", "SloCount", "bodies", "load_prompts", "url"]

# A prompt: its text (completions, generate) or chat messages ({"role": ..., "content": ...} each)
Prompt = str | list[dict[str, str]]

BUILTIN_PROMPTS: tuple[str, ...] = (
    "Explain in a few sentences how a load balancer decides where to send a request.",
    "Write a short poem about the sea at night.",
    "What are the main differences between a process and a thread?",
    "Summarise the plot of a detective story in which the butler did not do it.",
    "List five things to check before deploying a web service to production.",
    "Describe the water cycle to a ten-year-old.",
    "Why does a cache improve performance, and when can it make things worse?",
    "Translate into French: the train leaves at seven and arrives at noon.",
)
# What one prompt may cost in memory beyond its bytes in the file: the decoded text, the parsed object
# and the encoded body (a message's text is written into the JSON body once more, escaped).
MEMORY_PER_FILE_BYTE = 6
ROLES = ("system", "user", "assistant", "tool", "developer")
SHAREGPT_HUMAN = ("human", "user")


def _where(path: Path, line: int | None = None, entry: int | None = None) -> str:
    if line is not None:
        return f"--prompts {path}: line {line}"
    if entry is not None:
        return f"--prompts {path}: entry {entry}"
    return f"--prompts {path}"


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where}: \'messages\' must be a non-empty list of {{"role", "content"}} objects')
    messages = []
    for number, message in enumerate(value, 1):
        if not isinstance(message, dict):
            raise ConfigError(f"{where}: message {number} is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ConfigError(f"{where}: message {number} has role {str(role)[:20]!r}, not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ConfigError(f"{where}: message {number}'s content must be a string")
        messages.append({"role": role, "content": content})
    return messages


def _jsonl(path: Path, text: str) -> list[Prompt]:
    prompts: list[Prompt] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = _where(path, line=number)
        try:
            item = json.loads(line)
        except ValueError as err:
            raise ConfigError(f"{where} is not JSON ({err})") from None
        except RecursionError:  # Python's parser recurses once per nesting level
            raise ConfigError(f"{where} is nested too deeply") from None
        if not isinstance(item, dict):
            raise ConfigError(f"{where} is not a JSON object with 'prompt' or 'messages'")
        if "prompt" in item and "messages" in item:
            raise ConfigError(f"{where} has both 'prompt' and 'messages': give one")
        if "prompt" in item:
            if not isinstance(item["prompt"], str) or not item["prompt"]:
                raise ConfigError(f"{where}: 'prompt' must be a non-empty string")
            prompts.append(item["prompt"])
        elif "messages" in item:
            prompts.append(_messages(item["messages"], where))
        else:
            raise ConfigError(f"{where} has neither 'prompt' nor 'messages'")
    return prompts


def _sharegpt(path: Path, text: str) -> list[Prompt]:
    """Each conversation's first human turn, as one user message (what vLLM's and GuideLLM's ShareGPT
    readers send); a conversation without one is an error, not silently skipped."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"{_where(path)} is not JSON ({err}); JSONL files need one object a line") from None
    except RecursionError:  # Python's parser recurses once per nesting level
        raise ConfigError(f"{_where(path)} is nested too deeply") from None
    if not isinstance(data, list):
        raise ConfigError(f'{_where(path)}: a ShareGPT file is a JSON list of {{"conversations": [...]}}')
    prompts: list[Prompt] = []
    for number, entry in enumerate(data, 1):
        where = _where(path, entry=number)
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list):
            raise ConfigError(f"{where} has no 'conversations' list")
        first = next((t for t in turns if isinstance(t, dict) and t.get("from") in SHAREGPT_HUMAN), None)
        if first is None:
            raise ConfigError(f'{where} has no human turn ({{"from": "human", "value": ...}})')
        if not isinstance(first.get("value"), str) or not first["value"]:
            raise ConfigError(f"{where}: the human turn's 'value' must be a non-empty string")
        prompts.append([{"role": "user", "content": first["value"]}])
    return prompts


def load_prompts(path: Path, max_memory: int) -> list[Prompt]:
    """The prompts of a JSONL or ShareGPT file (a file whose first character is ``[``); ConfigError (one
    line, naming the line or entry) for anything else. The size is checked before anything is read."""
    try:
        size = os.stat(path).st_size
    except OSError as err:
        raise ConfigError(f"{_where(path)} cannot be read ({err.strerror or type(err).__name__})") from None
    if size > defaults.MAX_PROMPTS_BYTES or size * MEMORY_PER_FILE_BYTE > max_memory:
        limit = min(defaults.MAX_PROMPTS_BYTES, max_memory // MEMORY_PER_FILE_BYTE)
        raise ConfigError(
            f"{_where(path)} is {size:,} bytes, more than the {limit:,} allowed "
            f"(about {MEMORY_PER_FILE_BYTE}x its size in memory; --max-input-memory)"
        )
    try:
        with open(path, "rb") as file:
            data = file.read(size + 1)  # a file that grew since stat is cut here, and refused below
    except OSError as err:
        raise ConfigError(f"{_where(path)} cannot be read ({err.strerror or type(err).__name__})") from None
    if len(data) > size:
        raise ConfigError(f"{_where(path)} grew while it was read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"{_where(path, line=line)} is not UTF-8") from None
    prompts = _sharegpt(path, text) if text.lstrip().startswith("[") else _jsonl(path, text)
    if not prompts:
        raise ConfigError(f"{_where(path)} holds no prompts")
    return prompts


def _text(prompt: Prompt) -> str:
    """A prompt as one text (completions, generate): chat messages' contents, one a line."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def body(settings: Settings, prompt: Prompt, max_tokens: int | None = None) -> dict[str, Any]:
    """The JSON body asking for ``prompt``'s completion in ``max_tokens`` (see docs/generative.md)."""
    g = settings.generative
    extra: dict[str, Any] = {}
    if max_tokens is not None:
        extra["max_tokens"] = max_tokens
    if g.ignore_eos:  # vLLM, SGLang and TRT-LLM's names; servers without them ignore unknown fields
        extra["ignore_eos"] = True
        extra["min_tokens"] = max_tokens
    extra.update(g.sampling)
    if g.api == "generate":
        return {"text_input": _text(prompt), **extra}
    out: dict[str, Any] = {"model": settings.model}
    if g.api == "chat":
        out["messages"] = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    else:
        out["prompt"] = _text(prompt)
    out["stream"] = g.stream
    if g.stream:
        out["stream_options"] = {"include_usage": True}
    return {**out, **extra}


def output_lengths(settings: Settings, count: int) -> list[int | None]:
    """Each of ``count`` prompts' ``max_tokens``: ``--max-tokens N`` for all, or with ``LOW-HIGH`` one drawn
    uniformly for each (from ``--seed``, else a fixed seed: every process and run gets the same)."""
    limits = settings.generative.max_tokens
    if limits is None:
        return [None] * count
    low, high = limits
    draw = random.Random(settings.seed if settings.seed is not None else 0)
    return [low if low == high else draw.randint(low, high) for _ in range(count)]


def bodies(settings: Settings, prompts: list[Prompt]) -> list[bytes]:
    """Each prompt's body, encoded."""
    return [
        json.dumps(body(settings, p, n), ensure_ascii=False, separators=(",", ":")).encode()
        for p, n in zip(prompts, output_lengths(settings, len(prompts)), strict=True)
    ]


def url(settings: Settings) -> str:
    """Where the requests go over HTTP (over gRPC: Triton's ModelStreamInfer, backends.generative)."""
    g = settings.generative
    if g.api == "chat":
        return f"{settings.host}/v1/chat/completions"
    if g.api == "completions":
        return f"{settings.host}/v1/completions"
    return f"{settings.host}/v2/models/{settings.model}/{'generate_stream' if g.stream else 'generate'}"


MAX_SLO_COUNT = 2**53  # a worker's report beyond this is forged: no run sends that many requests


@dataclass
class SloCount:
    """Requests judged against ``--token-slo`` and those that met every objective (DistServe's goodput).

    Every reported request is judged; it meets the objectives when it succeeded and each measure is within
    its bound: its time to first token (none, as without streaming, misses), its time per output token
    (none, below 2 tokens, has nothing to miss) and its latency. A worker sends what it counted since its
    last report (:meth:`take`); the master adds it (:meth:`add`), trusting nothing in it."""

    slos: tuple[TokenSlo, ...]
    met: int = 0
    judged: int = 0
    # since the last take_window(): a sweep's windows (--reset-stats does not touch them, as Collector.window)
    window_met: int = 0
    window_judged: int = 0

    def judge(self, success: bool, ttft_ms: float | None, tpot_ms: float | None, latency_ms: float) -> None:
        values = {"ttft": ttft_ms, "tpot": tpot_ms, "latency": latency_ms}
        met = int(success and all(self._within(slo, values[slo.measure]) for slo in self.slos))
        self.judged += 1
        self.window_judged += 1
        self.met += met
        self.window_met += met

    def take_window(self) -> tuple[int, int]:
        """(met, judged) since the last call: a sweep's window."""
        window = (self.window_met, self.window_judged)
        self.window_met = self.window_judged = 0
        return window

    @staticmethod
    def _within(slo: TokenSlo, value: float | None) -> bool:
        if value is None:
            return slo.measure == "tpot"
        return value <= slo.ms

    def take(self) -> dict[str, int]:
        """The counts since the last take (a worker's report), starting afresh."""
        counts = {"met": self.met, "judged": self.judged}
        self.reset()
        return counts

    def reset(self) -> None:
        self.met = self.judged = 0

    def add(self, report: Any) -> None:
        """Adds a worker's counts; ProtocolError, adding nothing, when they are not two counts with met <=
        judged, or would pass :data:`MAX_SLO_COUNT`."""
        if not isinstance(report, dict) or set(report) != {"met", "judged"}:
            raise ProtocolError("the SLO counts are not {'met': n, 'judged': n}")
        met, judged = report["met"], report["judged"]
        if type(met) is not int or type(judged) is not int or not 0 <= met <= judged <= MAX_SLO_COUNT:
            # not shown: str() of a forged int of 5,000 digits raises
            raise ProtocolError("the SLO counts are not whole numbers with 0 <= met <= judged <= 2**53")
        if self.judged + judged > MAX_SLO_COUNT:
            raise ProtocolError("merging would overflow the SLO counts")
        self.met += met
        self.judged += judged
        self.window_met += met
        self.window_judged += judged
