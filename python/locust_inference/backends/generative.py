"""Generative models as a :class:`~locust_inference.backends.common.Target`: the prompts
(:mod:`locust_inference.generative`) encoded once each, the endpoint made to read the answers as tokens,
then the server asked whether it answers."""

from __future__ import annotations

from locust_inference import defaults, generative
from locust_inference._native import ConfigError, encode_triton_grpc_generate
from locust_inference.backends import triton
from locust_inference.backends.common import Body, Target, checksum, get, make_target
from locust_inference.input_options import InputSettings
from locust_inference.options import Settings

__all__ = ["prepare"]


def _check_ready(settings: Settings) -> None:
    """The server answers, so a wrong --host or model stops the start in one line: for generate, Triton's
    model is ready; OpenAI servers share no readiness path (LitServe has ``/health``, Triton's frontend
    ``/health/ready``), so any answer to ``/health`` will do."""
    if settings.protocol == "grpc":
        triton.grpc_check_ready(settings)
        return
    if settings.generative.api == "generate":
        status, _body = get(settings, f"{settings.host}/v2/models/{settings.model}/ready", "Triton")
        if status != 200:
            raise ConfigError(f"Triton at {settings.host} has no ready model {settings.model!r} (HTTP {status})")
        return
    get(settings, f"{settings.host}/health", "the OpenAI-compatible")


def _refuse_tensor_options(settings: Settings) -> None:
    """Options that shape tensor or image requests mean nothing for prompts: refused rather than ignored."""
    inputs = settings.inputs
    given = [
        name
        for name, value in (
            ("--input-data", inputs.input_data is not None),
            ("--expect-top1", settings.expect_top1 is not None),
            ("--batch-size", settings.batch_size != defaults.BATCH_SIZE),
            ("--input-name", settings.input_name is not None),
            ("--output-name", bool(settings.output_names)),
            ("--triton-format", settings.triton_format != defaults.TRITON_FORMAT),
            ("--litserve-payload", settings.litserve.payload != defaults.LITSERVE_PAYLOAD),
            (
                "--preprocess, --resize, --crop, --mean, --std, --layout, --dtype or --shape",
                InputSettings(shuffle=inputs.shuffle, max_memory=inputs.max_memory) != inputs,
            ),
        )
        if value
    ]
    if given:
        api = settings.generative.api
        raise ConfigError(f"{given[0]} applies to tensor requests (--api infer); --api {api} sends prompts (--prompts)")


def prepare(settings: Settings) -> Target:
    """The target for ``--api chat|completions|generate``, or a ConfigError saying what is wrong."""
    g = settings.generative
    _refuse_tensor_options(settings)
    if g.api == "generate" and settings.server != "triton":
        raise ConfigError("--api generate is Triton's generate extension: use --server triton")
    prompts: list[generative.Prompt] = list(generative.BUILTIN_PROMPTS)
    if g.prompts is not None:
        prompts = generative.load_prompts(g.prompts, settings.inputs.max_memory)
    if g.input_tokens is not None:
        prompts = list(_synthetic(settings))
    encoded = generative.bodies(settings, prompts)
    payload: list[Body] = [(b, [("Content-Type", "application/json")]) for b in encoded]
    url, protocol = generative.url(settings), "triton-generate" if g.api == "generate" else "openai"
    if settings.protocol == "grpc":  # the same prompt and parameters as a ModelStreamInfer request
        try:
            payload = [(encode_triton_grpc_generate(settings.model, b), []) for b in encoded]
        except ValueError as err:
            raise ConfigError(f"--api generate --protocol grpc: {err}") from None
        url, protocol = f"{settings.host}{triton.GRPC_STREAM_INFER}", "grpc-generate"
    # the endpoint first: it loads --tokenizer, a bad file said before any server is asked
    target = make_target(
        settings,
        url,
        payload,
        list(settings.headers),
        json_header_bytes=None,
        tensor_bytes=0,
        input_checksum=checksum(encoded[0]),
        inputs=(),
        protocol=protocol,
        stream=g.stream,
        tokenizer=g.tokenizer,
        # passed whatever the protocol: an HTTP endpoint opens no gRPC connection, and resolve() leaves the
        # compression "none" unless --protocol grpc (the endpoint refuses any other for HTTP)
        grpc_connections=settings.grpc.connections,
        grpc_compression=settings.grpc.compression,
    )
    _check_ready(settings)
    return target


def _synthetic(settings: Settings) -> list[str]:
    """``--input-tokens``: the synthetic prompts, each of its drawn length by the ``--tokenizer``."""
    from locust_inference import synthetic_prompts

    g = settings.generative
    assert g.input_tokens is not None and g.tokenizer is not None  # resolve() made sure
    mean, stddev = g.input_tokens
    targets = synthetic_prompts.lengths(g.synthetic_prompts, mean, stddev, settings.seed)
    # the text and the bodies: a few bytes a token, each prompt twice (text and body) and once escaped
    if sum(targets) * 8 * generative.MEMORY_PER_FILE_BYTE > settings.inputs.max_memory:
        raise ConfigError(
            f"--input-tokens: {sum(targets):,} tokens of synthetic prompts may take more than --max-input-memory"
        )
    return synthetic_prompts.make(targets, settings.seed, tokenizer=g.tokenizer)
