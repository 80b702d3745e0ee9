"""Serve the synthetic generator of :mod:`servers.generator` (or, with ``--model tiny_gpt``, the small real
model of :mod:`servers.tiny_gpt`) with LitServe's ``OpenAISpec`` at ``POST /v1/chat/completions`` on
127.0.0.1 (streaming and not).

The API is the async form (``enable_async=True``, async ``decode_request``/``predict``/``encode_response``):
LitServe's synchronous ``OpenAISpec`` serves one request at a time, which would make the server, not the
generator's timing, what a load test measures. Each token is one chunk; the last one carries the usage
(prompt tokens: the words of the messages' text; completion tokens: the count generated), which LitServe
sends in a final chunk before ``data: [DONE]`` whatever ``stream_options`` says.

Usage (foreground until SIGTERM/SIGINT)::

    python -m servers.litserve_llm --port 8002 [--model synthetic|tiny_gpt] [--prefill-ms 50] [--token-ms 10]
        [--max-tokens 64] [--slots 64] [--timing-log FILE]

Prefer :func:`servers.launch.litserve_llm_server`, which runs this module in its own process group.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import litserve as ls
from litserve.specs.openai import OpenAISpec

from servers import generator
from servers.launch import exit_with_launcher
from servers.litserve_app import HOST, UVICORN_GRACEFUL_TIMEOUT_S, _install_signal_handlers


def _text(content: Any) -> str:
    """A message's text: a string, or the ``text`` parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class SyntheticChatAPI(ls.LitAPI):
    """OpenAI chat completions answered by a :class:`servers.generator.Generator` (created in the worker)."""

    def __init__(self, settings: generator.Generator) -> None:
        super().__init__(enable_async=True, spec=OpenAISpec(), stream=True)
        self.settings = settings
        self._generator: generator.Generator | None = None
        self._tokenizer: object = None

    def setup(self, device: str) -> None:
        # A fresh copy in the inference worker: its slot semaphore belongs to that process's event loop.
        s = self.settings
        self._generator = generator.Generator(
            s.prefill_s, s.per_token_s, s.max_tokens, s.slots, s.timing_log, s.tokenizer
        )
        self._tokenizer = generator.load_tokenizer(s.tokenizer)

    async def decode_request(self, request, **kwargs: Any) -> tuple[int, int]:
        assert self._generator is not None, "setup() was not called"
        if self._tokenizer is not None:  # the messages' text joined one a line, as the client counts a prompt
            text = "\n".join(_text(m.content) for m in request.messages)
            words = generator.prompt_tokens(text, self._tokenizer)
        else:
            words = sum(generator.prompt_tokens(_text(m.content)) for m in request.messages)
        requested = request.max_completion_tokens or request.max_tokens
        return words, self._generator.length(requested)

    async def predict(self, x: tuple[int, int], **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        assert self._generator is not None, "setup() was not called"
        prompt, count = x
        done = 0
        async for text in self._generator.tokens(count, prompt):
            done += 1
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if done == count:  # OpenAISpec puts the last item's usage into the final chunk
                usage = {"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count}
                message.update(usage)
            yield message

    async def encode_response(self, output: AsyncIterator[dict[str, Any]], **kwargs: Any) -> AsyncIterator[Any]:
        async for item in output:
            yield item


class HttpTimingLog:
    """ASGI middleware timing each streamed answer where it leaves the server: from the request reaching
    the HTTP server to each body message carrying content, logged as one JSON line (``"where": "http"``,
    ``first_token_s``, ``gaps_s``) beside the generator's own. It includes LitServe's hops between its API
    process and its worker, which the generator's timing cannot see."""

    def __init__(self, app: Any, timing_log: str) -> None:
        self.app = app
        self.timing_log = timing_log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).endswith("/completions"):
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        emitted: list[float] = []

        async def timed_send(message: Any) -> None:
            if message.get("type") == "http.response.body" and b'"content":"' in message.get("body", b""):
                emitted.append(time.perf_counter())
            await send(message)

        await self.app(scope, receive, timed_send)
        if emitted:
            generator.append_record(
                self.timing_log,
                {
                    "where": "http",
                    "tokens": len(emitted),
                    "first_token_s": emitted[0] - arrived,
                    "gaps_s": [b - a for a, b in itertools.pairwise(emitted)],
                },
            )


class TinyGptChatAPI(ls.LitAPI):
    """OpenAI chat completions answered by :class:`servers.tiny_gpt.TinyGpt` (created in the worker): the
    messages' text is the prompt, ``max_tokens`` capped at ``--max-tokens``."""

    def __init__(self, max_tokens: int, threads: int) -> None:
        super().__init__(enable_async=True, spec=OpenAISpec(), stream=True)
        self.max_tokens, self.threads = max_tokens, threads
        self._model: Any = None

    def setup(self, device: str) -> None:
        from servers.tiny_gpt import TinyGpt

        self._model = TinyGpt(threads=self.threads)

    async def decode_request(self, request, **kwargs: Any) -> tuple[str, int]:
        prompt = "\n".join(_text(m.content) for m in request.messages)
        requested = request.max_completion_tokens or request.max_tokens
        count = self.max_tokens if not requested or requested < 1 else min(requested, self.max_tokens)
        return prompt, count

    async def predict(self, x: tuple[str, int], **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        from servers.tiny_gpt import encode, output_length, stream

        prompt, requested = x
        count, prompt_tokens = output_length(prompt, requested), len(encode(prompt))
        done = 0
        async for text in stream(self._model, prompt, count):
            done += 1
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if done == count:  # OpenAISpec puts the last item's usage into the final chunk
                message.update(prompt_tokens=prompt_tokens, completion_tokens=count, total_tokens=prompt_tokens + count)
            yield message

    async def encode_response(self, output: AsyncIterator[dict[str, Any]], **kwargs: Any) -> AsyncIterator[Any]:
        async for item in output:
            yield item


def build_server(settings: generator.Generator, model: str = "synthetic", threads: int = 1) -> ls.LitServer:
    """A LitServer with one CPU worker serving the generator (or tiny_gpt) at ``/v1/chat/completions``."""
    middlewares: list[Any] = [(HttpTimingLog, {"timing_log": settings.timing_log})] if settings.timing_log else []
    api: ls.LitAPI = TinyGptChatAPI(settings.max_tokens, threads) if model == "tiny_gpt" else SyntheticChatAPI(settings)
    server = ls.LitServer(
        api,
        accelerator="cpu",
        devices=1,
        workers_per_device=1,
        timeout=120,
        middlewares=middlewares,
    )
    server.uvicorn_graceful_timeout = UVICORN_GRACEFUL_TIMEOUT_S
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the synthetic generator with LitServe's OpenAISpec.")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--model", choices=("synthetic", "tiny_gpt"), default="synthetic", help="what answers")
    parser.add_argument("--threads", type=int, default=1, help="tiny_gpt: ONNX Runtime threads per step")
    generator.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = generator.from_arguments(args)
    except ValueError as exc:
        parser.error(str(exc))
    _install_signal_handlers()
    exit_with_launcher()
    server = build_server(settings, args.model, args.threads)
    where = f"http://{HOST}:{args.port}/v1/chat/completions"
    print(f"LitServe serving {args.model} {settings} at {where}", file=sys.stderr, flush=True)
    server.run(host=HOST, port=args.port, num_api_servers=1, log_level=args.log_level, generate_client_file=False)


if __name__ == "__main__":
    main()
