"""A synthetic text generator with known timing, served by :mod:`servers.litserve_llm` (OpenAI chat) and by
:mod:`servers.triton` (the decoupled ``synthetic_llm`` model behind ``generate_stream``).

It answers a prompt with ``n`` tokens, ``"tok0 tok1 ... tok{n-1} "`` (one token per chunk), ``n`` being the
request's ``max_tokens`` capped at ``--max-tokens`` (that cap when the request names none). The first token
comes ``prefill_s`` after the request reached the generator, each further one ``per_token_s`` after the one
before. Deadlines are absolute (token i at ``first + i * per_token_s``), so a late wake-up delays one token,
never the rest: the mean gap stays the set time whatever the loop's timer resolution.

At most ``slots`` requests generate at once (the others wait for a slot, their prefill starting when they
get one), so a test can overload the server on purpose. With ``timing_log`` set, each finished request
appends one JSON line (``"where": "generator"``): its token count, ``first_token_s`` (from arrival to the
first token's emission, queueing for a slot included) and ``gaps_s`` (between emissions): the server's own
measurement, which tests compare the client's against.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

DEFAULT_PREFILL_S = 0.05
DEFAULT_PER_TOKEN_S = 0.01
DEFAULT_MAX_TOKENS = 64
DEFAULT_SLOTS = 64
MAX_TOKENS_CAP = 4096  # a request cannot keep the server busy for longer than this many tokens


def token(index: int) -> str:
    """The text of token ``index``: deterministic, one whitespace-separated word."""
    return f"tok{index} "


def prompt_tokens(text: str, tokenizer: object = None) -> int:
    """The prompt's token count: by ``tokenizer`` (a Hugging Face ``tokenizers.Tokenizer``, no special
    tokens added: the count the client makes with the same file) when given, else as this generator
    defines tokens, whitespace-separated words."""
    if tokenizer is not None:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]
    return len(text.split())


def load_tokenizer(path: str | None) -> object:
    """``--tokenizer``'s file as a ``tokenizers.Tokenizer`` (None without one)."""
    if not path:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


@dataclass
class Generator:
    """The generator's settings and its slot semaphore (one per event loop: create it inside the loop's
    process, never share it across processes)."""

    prefill_s: float = DEFAULT_PREFILL_S
    per_token_s: float = DEFAULT_PER_TOKEN_S
    max_tokens: int = DEFAULT_MAX_TOKENS
    slots: int = DEFAULT_SLOTS
    timing_log: str | None = None
    tokenizer: str | None = None  # counts prompts' tokens (usage.prompt_tokens); None: whitespace words
    _slots: asyncio.Semaphore | None = field(default=None, repr=False)

    def length(self, requested: object) -> int:
        """How many tokens to generate for a request asking for ``requested`` (None, or not a positive int:
        the cap)."""
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            return self.max_tokens
        return min(requested, self.max_tokens)

    async def tokens(self, count: int, prompt_tokens: int | None = None) -> AsyncIterator[str]:
        """Yield ``count`` tokens on the set schedule (see the module docstring), then log the timing (and
        ``prompt_tokens``, the prompt's count the server reports, when given)."""
        arrived = time.perf_counter()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.slots)
        async with self._slots:
            first = time.perf_counter() + self.prefill_s
            emitted: list[float] = []
            for index in range(count):
                await _sleep_until(first + index * self.per_token_s)
                emitted.append(time.perf_counter())
                yield token(index)
        self._log(count, arrived, emitted, prompt_tokens)

    def _log(self, count: int, arrived: float, emitted: list[float], prompt_tokens: int | None = None) -> None:
        if not self.timing_log or not emitted:
            return
        record = {
            "where": "generator",
            "tokens": count,
            "first_token_s": emitted[0] - arrived,
            "gaps_s": [b - a for a, b in itertools.pairwise(emitted)],
        }
        if prompt_tokens is not None:
            record["prompt_tokens"] = prompt_tokens
        append_record(self.timing_log, record)


def append_record(path: str, record: dict[str, object]) -> None:
    """Appends ``record`` to the timing log as one JSON line. One write per line with O_APPEND: lines from
    concurrent requests (or processes) never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


async def _sleep_until(deadline: float) -> None:
    """Sleep until ``time.perf_counter()`` reaches ``deadline``. The loop's timer wakes up to about 1 ms late;
    no busy-wait for the rest (the machine is shared): the absolute deadlines keep the mean gap exact."""
    left = deadline - time.perf_counter()
    while left > 0:
        await asyncio.sleep(left)
        left = deadline - time.perf_counter()


def add_arguments(parser: object) -> None:
    """The generator's command-line options (``--prefill-ms``, ``--token-ms``, ``--max-tokens``, ``--slots``,
    ``--timing-log``) on an argparse parser."""
    add = parser.add_argument  # type: ignore[attr-defined]
    add("--prefill-ms", type=float, default=DEFAULT_PREFILL_S * 1000, help="time to the first token")
    add("--token-ms", type=float, default=DEFAULT_PER_TOKEN_S * 1000, help="time between tokens")
    add("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help=f"output length cap (<= {MAX_TOKENS_CAP})")
    add("--slots", type=int, default=DEFAULT_SLOTS, help="requests generating at once (the rest wait)")
    add("--timing-log", default=None, help="append each request's own timing here (JSON lines)")
    add("--tokenizer", default=None, help="a tokenizer.json counting the prompts' tokens (default: words)")


def from_arguments(args: object) -> Generator:
    """A :class:`Generator` from the options of :func:`add_arguments` (checked: ValueError when out of range)."""
    prefill_ms: float = args.prefill_ms  # type: ignore[attr-defined]
    token_ms: float = args.token_ms  # type: ignore[attr-defined]
    max_tokens: int = args.max_tokens  # type: ignore[attr-defined]
    slots: int = args.slots  # type: ignore[attr-defined]
    if not (0 <= prefill_ms <= 60_000 and 0 <= token_ms <= 60_000):
        raise ValueError("--prefill-ms and --token-ms must be within 0-60000")
    if not 1 <= max_tokens <= MAX_TOKENS_CAP or not 1 <= slots <= 10_000:
        raise ValueError(f"--max-tokens must be within 1-{MAX_TOKENS_CAP}, --slots within 1-10000")
    tokenizer = getattr(args, "tokenizer", None)
    return Generator(prefill_ms / 1000, token_ms / 1000, max_tokens, slots, args.timing_log, tokenizer)  # type: ignore[attr-defined]
