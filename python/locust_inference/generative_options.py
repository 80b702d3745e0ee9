"""Options for generative models (``--api``, ``--stream``/``--no-stream``, ``--prompts``, ``--max-tokens``,
``--ignore-eos``, ``--sampling``), resolved into :class:`GenerativeSettings`. The requests themselves are
prepared in :mod:`generative`; docs/generative.md says what each option sends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust_inference import defaults
from locust_inference._native import ConfigError

__all__ = ["APIS", "SLO_MEASURES", "GenerativeSettings", "TokenSlo", "add_arguments", "resolve"]

APIS = defaults.APIS
MAX_TOKENS = 1_000_000
MAX_SAMPLING_BYTES = 64 * 1024  # one --sampling option's value, as written
SLO_MEASURES = ("ttft", "tpot", "latency")
MAX_SLO_MS = 86_400_000.0  # a day
_NUMBER = r"[0-9]{1,12}(?:\.[0-9]{1,6})?"
_SLO = re.compile(rf"\s*({'|'.join(SLO_MEASURES)})_p({_NUMBER})\s*=\s*({_NUMBER})\s*(ms|s)?\s*")
_SAMPLING_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
# What the body already carries: set by other options, never by --sampling
DEFAULT_SYNTHETIC_PROMPTS = 100
_OWN_KEYS = {
    "model": "--model-name",
    "messages": "--prompts",
    "prompt": "--prompts",
    "text_input": "--prompts",
    "stream": "--stream/--no-stream",
    "stream_options": "--stream",
    "max_tokens": "--max-tokens",
    "ignore_eos": "--ignore-eos",
    "min_tokens": "--ignore-eos",
}


@dataclass(frozen=True)
class TokenSlo:
    """One service-level objective of a request: ``measure`` (ttft, tpot or latency) within ``ms``, which
    ``percentile`` % of requests should meet (DistServe's attainment goal)."""

    measure: str
    percentile: float
    ms: float

    @property
    def key(self) -> str:
        """As written: ``ttft_p99``."""
        return f"{self.measure}_p{self.percentile:g}"

    def __str__(self) -> str:
        return f"{self.key} <= {self.ms:g} ms"


@dataclass(frozen=True)
class GenerativeSettings:
    """What the user asked generative requests to be; ``api == "infer"`` means: not generative."""

    api: str = defaults.API
    stream: bool = defaults.STREAM
    prompts: Path | None = None
    # (lowest, highest) output tokens asked for: each prompt's body gets one, drawn uniformly (with --seed);
    # None: not sent
    max_tokens: tuple[int, int] | None = defaults.MAX_TOKENS
    ignore_eos: bool = False
    sampling: tuple[tuple[str, Any], ...] = ()
    slos: tuple[TokenSlo, ...] = ()
    # a Hugging Face tokenizer.json counting the generated text's tokens (read by the native endpoint)
    tokenizer: Path | None = None
    # synthetic prompts (--input-tokens): (mean, standard deviation) of their length in tokens, and how many
    input_tokens: tuple[int, float] | None = None
    synthetic_prompts: int = DEFAULT_SYNTHETIC_PROMPTS

    @property
    def generative(self) -> bool:
        return self.api != "infer"


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("locust-inference generative models (--api chat, completions or generate)")
    group.add_argument(
        "--api",
        env_var="LOCUST_API",
        default=None,
        help="What requests are: infer (tensors or images, the default), chat (OpenAI POST /v1/chat/completions), "
        "completions (OpenAI POST /v1/completions) or generate (Triton POST /v2/models/MODEL/generate_stream, "
        "or /generate with --no-stream)",
    )
    group.add_argument(
        "--stream",
        env_var="LOCUST_STREAM",
        action="store_true",
        default=False,
        help="Stream tokens (Server-Sent Events): the default with --api chat, completions or generate; with "
        "--protocol grpc and --api infer, a decoupled Triton model's responses over ModelStreamInfer",
    )
    group.add_argument(
        "--no-stream",
        env_var="LOCUST_NO_STREAM",
        action="store_true",
        default=False,
        help="Ask for the whole answer at once (no time to first token then)",
    )
    group.add_argument(
        "--prompts",
        env_var="LOCUST_PROMPTS",
        default=None,
        help="Prompts sent, one body each, rotated: JSONL with a 'prompt' or 'messages' per line, or a ShareGPT "
        "JSON file (its conversations' first human turns); default: a small built-in set",
    )
    group.add_argument(
        "--max-tokens",
        env_var="LOCUST_MAX_TOKENS",
        default=None,
        help="Output tokens asked for (max_tokens): N, or LOW-HIGH for each prompt its own, drawn uniformly "
        "(reproducible with --seed); default: not sent, the server's own limit",
    )
    group.add_argument(
        "--ignore-eos",
        env_var="LOCUST_IGNORE_EOS",
        action="store_true",
        default=False,
        help="Ask the server to generate --max-tokens whatever the model says (ignore_eos, and min_tokens)",
    )
    group.add_argument(
        "--token-slo",
        env_var="LOCUST_TOKEN_SLO",
        action="append",
        default=None,
        help="A request's objective, e.g. ttft_p99=500ms (repeatable; ttft, tpot or latency): goodput counts the "
        "requests that met every one (the sweep's --slo is a latency percentile of the whole run)",
    )
    group.add_argument(
        "--sampling",
        env_var="LOCUST_SAMPLING",
        action="append",
        default=None,
        help="key=value added to each body (repeatable), the value read as JSON: --sampling temperature=0.7",
    )
    group.add_argument(
        "--tokenizer",
        env_var="LOCUST_TOKENIZER",
        default=None,
        help="A Hugging Face tokenizer.json (a local file, nothing downloaded): output tokens counted exactly "
        "from the generated text, and checked against the server's usage when it sends one",
    )
    _add_synthetic_arguments(group)


def _add_synthetic_arguments(group: Any) -> None:
    group.add_argument(
        "--input-tokens",
        env_var="LOCUST_INPUT_TOKENS",
        default=None,
        help="Send synthetic prompts of this many input tokens on average, counted by --tokenizer (needed), "
        "instead of --prompts; reproducible with --seed",
    )
    group.add_argument(
        "--input-tokens-stddev",
        env_var="LOCUST_INPUT_TOKENS_STDDEV",
        default=None,
        help="The synthetic prompts' spread: each one's length drawn from a normal law (default 0: all alike)",
    )
    group.add_argument(
        "--synthetic-prompts",
        env_var="LOCUST_SYNTHETIC_PROMPTS",
        default=None,
        help=f"How many synthetic prompts are made at start (default {DEFAULT_SYNTHETIC_PROMPTS})",
    )


def _synthetic(options: Any) -> tuple[tuple[int, float] | None, int]:
    """(mean, stddev) of --input-tokens and --synthetic-prompts, checked; (None, default) without them."""
    from locust_inference.synthetic_prompts import MAX_INPUT_TOKENS, MAX_PROMPTS, MAX_TOTAL_TOKENS

    mean_given = getattr(options, "input_tokens", None)
    stddev_given = getattr(options, "input_tokens_stddev", None)
    count_given = getattr(options, "synthetic_prompts", None)
    if mean_given is None:
        for name, value in (("--input-tokens-stddev", stddev_given), ("--synthetic-prompts", count_given)):
            if value is not None:
                raise ConfigError(f"{name} shapes synthetic prompts: add --input-tokens MEAN")
        return None, DEFAULT_SYNTHETIC_PROMPTS
    text = str(mean_given).strip()
    if not re.fullmatch(r"[0-9]{1,7}", text) or not 1 <= int(text) <= MAX_INPUT_TOKENS:
        raise ConfigError(f"--input-tokens must be a whole number from 1 to {MAX_INPUT_TOKENS:,}, not {_shown(text)}")
    mean = int(text)
    stddev = 0.0
    if stddev_given is not None:
        text = str(stddev_given).strip()
        if not re.fullmatch(_NUMBER, text) or float(text) > mean:
            raise ConfigError(
                f"--input-tokens-stddev must be a number from 0 to --input-tokens ({mean}), not {_shown(text)}"
            )
        stddev = float(text)
    count = DEFAULT_SYNTHETIC_PROMPTS
    if count_given is not None:
        text = str(count_given).strip()
        if not re.fullmatch(r"[0-9]{1,7}", text) or not 1 <= int(text) <= MAX_PROMPTS:
            raise ConfigError(
                f"--synthetic-prompts must be a whole number from 1 to {MAX_PROMPTS:,}, not {_shown(text)}"
            )
        count = int(text)
    if count * (mean + 4 * stddev) > MAX_TOTAL_TOKENS:
        raise ConfigError(
            f"--synthetic-prompts {count} of --input-tokens {mean} (stddev {stddev:g}) would make more than "
            f"{MAX_TOTAL_TOKENS:,} tokens: fewer or shorter prompts"
        )
    return (mean, stddev), count


def _slos(given: list[str]) -> tuple[TokenSlo, ...]:
    slos: dict[str, TokenSlo] = {}
    for item in given:
        m = _SLO.fullmatch(str(item))
        if not m:
            raise ConfigError(f"--token-slo takes ttft_p99=500ms, tpot_p90=50ms or latency_p99=2s, not {_shown(item)}")
        percentile, value = float(m.group(2)), float(m.group(3)) * (1000 if m.group(4) == "s" else 1)
        if not 0 < percentile < 100 or not 0 < value <= MAX_SLO_MS:
            raise ConfigError(f"--token-slo {_shown(item)}: the percentile must be within 0-100, the time within a day")
        if m.group(1) in slos:
            raise ConfigError(f"--token-slo gives {m.group(1)} twice")
        slos[m.group(1)] = TokenSlo(m.group(1), percentile, value)
    return tuple(slos.values())


def _max_tokens(given: Any) -> tuple[int, int] | None:
    if given is None:
        return None
    text = str(given).strip()
    m = re.fullmatch(r"([0-9]{1,9})(?:\s*-\s*([0-9]{1,9}))?", text)
    low, high = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
    if not m or not 1 <= low <= high <= MAX_TOKENS:
        raise ConfigError(
            f"--max-tokens must be a whole number, or LOW-HIGH, from 1 to {MAX_TOKENS:,}, not {_shown(text)}"
        )
    return low, high


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _sampling(given: list[str]) -> tuple[tuple[str, Any], ...]:
    pairs: dict[str, Any] = {}
    for item in given:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not _SAMPLING_KEY.fullmatch(key):
            raise ConfigError(f"--sampling must be key=value, the key of letters, digits, _ . or -, not {_shown(item)}")
        if key in _OWN_KEYS:
            raise ConfigError(f"--sampling {key}=... is set by {_OWN_KEYS[key]}, not --sampling")
        if key in pairs:
            raise ConfigError(f"--sampling {key} is given twice")
        if len(text) > MAX_SAMPLING_BYTES:
            raise ConfigError(f"--sampling {key}: the value is longer than {MAX_SAMPLING_BYTES} characters")
        try:
            pairs[key] = json.loads(text)
        except RecursionError:  # Python's parser recurses once per nesting level
            raise ConfigError(f"--sampling {key}: the value is nested too deeply") from None
        except ValueError:
            raise ConfigError(
                f'--sampling {key}: the value must be JSON (0.7, true, "text", [1, 2]), not {_shown(text)}'
            ) from None
    return tuple(pairs.items())


def resolve(options: Any, protocol: str = defaults.PROTOCOL) -> GenerativeSettings:
    """:class:`GenerativeSettings` from Locust's parsed options; a ConfigError (one line) when they make no
    sense together. A generative option without ``--api`` is refused: it would silently do nothing, except
    ``--stream`` with ``--protocol grpc`` (a decoupled tensor model, read in :mod:`locust_inference.options`)."""
    api = str(getattr(options, "api", None) or defaults.API).strip().lower()
    if api not in APIS:
        raise ConfigError(f"--api must be one of {', '.join(APIS)}, not {_shown(api)}")
    stream, no_stream = bool(getattr(options, "stream", False)), bool(getattr(options, "no_stream", False))
    if stream and no_stream:
        raise ConfigError("--stream and --no-stream contradict each other: give one")
    prompts = getattr(options, "prompts", None) or None
    max_tokens = _max_tokens(getattr(options, "max_tokens", None))
    ignore_eos = bool(getattr(options, "ignore_eos", False))
    sampling = _sampling(getattr(options, "sampling", None) or [])
    slos = _slos(getattr(options, "token_slo", None) or [])
    tokenizer = getattr(options, "tokenizer", None) or None
    input_tokens, synthetic_prompts = _synthetic(options)
    if api == "infer":
        given = [
            name
            for name, value in (
                ("--stream", stream and protocol != "grpc"),
                ("--no-stream", no_stream),
                ("--prompts", prompts),
                ("--max-tokens", max_tokens is not None),
                ("--ignore-eos", ignore_eos),
                ("--sampling", sampling),
                ("--token-slo", slos),
                ("--tokenizer", tokenizer),
                ("--input-tokens", input_tokens),
            )
            if value
        ]
        if given:
            raise ConfigError(f"{given[0]} applies to generative models: add --api chat, completions or generate")
    if input_tokens is not None and prompts:
        raise ConfigError("--input-tokens makes synthetic prompts: give it or --prompts, not both")
    if input_tokens is not None and not tokenizer:
        raise ConfigError("--input-tokens counts tokens with --tokenizer tokenizer.json: add it")
    if protocol == "grpc" and api in ("chat", "completions"):
        raise ConfigError(f"--api {api} is OpenAI's HTTP API: --protocol grpc takes --api infer or generate")
    if protocol == "grpc" and api == "generate" and no_stream:
        raise ConfigError(
            "--no-stream with --protocol grpc: a decoupled model answers over ModelStreamInfer only "
            "(use --protocol http for /generate)"
        )
    if ignore_eos and max_tokens is None:
        raise ConfigError("--ignore-eos needs --max-tokens N (the length to generate)")
    return GenerativeSettings(
        api=api,
        stream=not no_stream,
        prompts=Path(str(prompts)).expanduser() if prompts else None,
        max_tokens=max_tokens,
        ignore_eos=ignore_eos,
        sampling=sampling,
        slos=slos,
        tokenizer=Path(str(tokenizer)).expanduser() if tokenizer else None,
        input_tokens=input_tokens,
        synthetic_prompts=synthetic_prompts,
    )
