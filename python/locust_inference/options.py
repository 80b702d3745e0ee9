"""Command-line options (also settable in ``.conf`` files and as ``LOCUST_*`` variables) and their
resolution into validated :class:`Settings`.

The seed harness's environment variables keep working: ``SERVER`` (or ``INFERENCE_SERVER``),
``MODEL_NAME``, ``DEBUG_REQUESTS``; ``INFERENCE_AUTH_TOKEN`` adds a bearer token.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from locust_inference import defaults, generative_options, input_options
from locust_inference._native import ConfigError
from locust_inference.generative_options import GenerativeSettings
from locust_inference.input_options import InputSettings

__all__ = [
    "ARRIVALS",
    "DEFAULT_HOSTS",
    "LITSERVE_PAYLOADS",
    "OVERLOAD_POLICIES",
    "SERVERS",
    "GrpcSettings",
    "LitServeSettings",
    "OpenLoopSettings",
    "Settings",
    "add_arguments",
    "next_model",
    "resolve",
]

# the names this module has always offered, from the one table of defaults
SERVERS = defaults.SERVERS
DEFAULT_HOSTS = defaults.HOSTS
DEFAULT_IMAGE = defaults.IMAGE
ARRIVALS = defaults.ARRIVALS
OVERLOAD_POLICIES = defaults.OVERLOAD_POLICIES
LITSERVE_PAYLOADS = defaults.LITSERVE_PAYLOADS
TRUE_WORDS = {"1", "true", "yes", "on"}
# The accepted ranges of numeric options: wide enough for any real test, narrow enough that no value
# overflows, panics or allocates without end on the native side (e.g. tokio's semaphore takes at most
# usize::MAX >> 3 permits).
TIMEOUT_RANGE = (0.001, 86_400.0)  # seconds: a millisecond to a day
RATE_RANGE = (0.001, 1_000_000.0)  # requests per second of one user
MAX_BATCH_SIZE = 1_000_000
MAX_RESPONSE_BYTES = 2**40  # 1 TiB
MAX_IN_FLIGHT = 100_000
MAX_CLASS_INDEX = 2**31 - 1
MAX_STAGGER_S = 3600.0
MAX_GRPC_CONNECTIONS = 64


GRPC_COMPRESSIONS = ("none", "gzip", "deflate")  # --grpc-compression-algorithm, as perf_analyzer's


@dataclass(frozen=True)
class OpenLoopSettings:
    """The open-loop options; ``None``: the user class's own attribute (``OpenLoopUser.rate``...)."""

    rate: float | None = None
    arrival: str | None = None
    max_in_flight: int | None = None
    overload: str | None = None
    closed_loop: bool = False


@dataclass(frozen=True)
class LitServeSettings:
    """LitServe as deployed: what the body carries and which response key is checked (``output`` None: the
    HTTP status only)."""

    payload: str = defaults.LITSERVE_PAYLOAD
    key: str = defaults.LITSERVE_KEY
    template: Path | None = None
    output: str | None = defaults.LITSERVE_OUTPUT


@dataclass(frozen=True)
class GrpcSettings:
    """Triton over gRPC (``--protocol grpc``)."""

    connections: int = defaults.GRPC_CONNECTIONS
    compression: str = "none"  # --grpc-compression-algorithm: none, gzip or deflate
    # --stream with --api infer: a decoupled tensor model over ModelStreamInfer, each response counted as the
    # generative accounting counts a chunk (docs/grpc.md)
    stream: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything a load test needs to know about its target, validated: the core (the server, the model,
    each request and how it is reached) as fields of its own, each option group as one field."""

    server: str
    model: str
    host: str
    image: Path
    triton_format: str = defaults.TRITON_FORMAT
    protocol: str = defaults.PROTOCOL
    request_timeout: float = defaults.REQUEST_TIMEOUT_S
    input_name: str | None = None
    output_names: tuple[str, ...] = ()
    batch_size: int = defaults.BATCH_SIZE
    max_response_bytes: int = defaults.MAX_RESPONSE_BYTES
    headers: tuple[tuple[str, str], ...] = ()
    insecure: bool = False
    ca_file: Path | None = None
    debug: bool = False
    keep_body: bool = False
    class_name: str | None = None
    expect_top1: str | None = None
    stagger: float = defaults.STAGGER_S
    # of poisson arrivals, --shuffle-inputs orders, --input-data random and --max-tokens ranges
    seed: int | None = None
    inputs: InputSettings = field(default_factory=InputSettings)
    open_loop: OpenLoopSettings = field(default_factory=OpenLoopSettings)
    litserve: LitServeSettings = field(default_factory=LitServeSettings)
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    generative: GenerativeSettings = field(default_factory=GenerativeSettings)
    # Several models in one run (``--model-name a,b --model-weights 3,1``): each with its weight, and
    # ``model`` the list as given. Empty with one model, whose settings are the run's.
    models: tuple[str, ...] = ()
    weights: tuple[int, ...] = ()
    # A scenario file (--scenario, :mod:`locust_inference.scenario`): each entry's own settings, its server,
    # host, model and inputs; ``models`` and ``weights`` are set as for several models.
    scenario: tuple[Settings, ...] = ()

    @property
    def name(self) -> str:
        """The request name in Locust's statistics: ``server/model``."""
        return f"{self.server}/{self.model}"

    def per_model(self) -> list[Settings]:
        """One model's settings for each model of the run (the run's own with one model), or each scenario
        entry's."""
        if self.scenario:
            return list(self.scenario)
        if not self.models:
            return [self]
        return [replace(self, model=m, models=(), weights=()) for m in self.models]


def add_arguments(parser: Any) -> None:
    """Registers the options on Locust's parser (``events.init_command_line_parser``).

    Only the choice-like options with a default of their own get argparse ``choices=``: Locust's web UI shows
    an option with choices as a list that starts on its default, else on the first choice, as if given, so
    those whose absence means something (--server: SERVER; --arrival, --overload: the user class's own) are
    checked in :func:`resolve` instead. Either way a bad value stops the start in one line, exit status 2."""
    group = parser.add_argument_group("locust-inference")
    group.add_argument(
        "--server",
        env_var="LOCUST_SERVER",
        default=None,
        help=f"Inference server: {' or '.join(SERVERS)} (env SERVER / INFERENCE_SERVER also work)",
    )
    group.add_argument(
        "--model-name",
        env_var="LOCUST_MODEL_NAME",
        default=None,
        help="Model to load-test (env MODEL_NAME); several, comma-separated, share the users by --model-weights "
        "(docs/multi-model.md)",
    )
    group.add_argument(
        "--model-weights",
        env_var="LOCUST_MODEL_WEIGHTS",
        default=None,
        help="With several --model-name: each model's share of the users, comma-separated positive integers "
        "(default: equal shares)",
    )
    group.add_argument(
        "--image",
        env_var="LOCUST_IMAGE",
        default=DEFAULT_IMAGE,
        help="Image(s) sent: a file, a directory or a glob; requests rotate through them",
    )
    group.add_argument(
        "--triton-format",
        env_var="LOCUST_TRITON_FORMAT",
        default=defaults.TRITON_FORMAT,
        type=str.lower,
        choices=list(defaults.TRITON_FORMATS),
        help="Triton request format: binary (binary tensor extension, the default) or json",
    )
    group.add_argument(
        "--protocol",
        env_var="LOCUST_PROTOCOL",
        default=defaults.PROTOCOL,
        type=str.lower,
        choices=list(defaults.PROTOCOLS),
        help=f"How Triton is reached: http (KServe v2 over HTTP/1.1, the default) or grpc (Triton's gRPC "
        f"service; default host {defaults.GRPC_HOST})",
    )
    group.add_argument(
        "--grpc-connections",
        env_var="LOCUST_GRPC_CONNECTIONS",
        default=defaults.GRPC_CONNECTIONS,
        help=f"HTTP/2 connections the users of a process share with --protocol grpc (default "
        f"{defaults.GRPC_CONNECTIONS}; see docs/grpc.md)",
    )
    group.add_argument(
        "--grpc-compression-algorithm",
        env_var="LOCUST_GRPC_COMPRESSION_ALGORITHM",
        default="none",
        help="Compress each gRPC request message: none (the default), gzip or deflate, as perf_analyzer's "
        "--grpc-compression-algorithm (each prepared message is compressed once, at start)",
    )
    group.add_argument(
        "--request-timeout",
        env_var="LOCUST_REQUEST_TIMEOUT",
        default=defaults.REQUEST_TIMEOUT_S,
        help=f"Seconds before a request counts as failed (default {plain(defaults.REQUEST_TIMEOUT_S)})",
    )
    group.add_argument(
        "--batch-size", env_var="LOCUST_BATCH_SIZE", default=defaults.BATCH_SIZE, help="Images per request"
    )
    group.add_argument(
        "--input-name", env_var="LOCUST_INPUT_NAME", default=None, help="Triton input (default: from metadata)"
    )
    group.add_argument(
        "--output-name",
        env_var="LOCUST_OUTPUT_NAME",
        default=None,
        help="Triton outputs, comma-separated (default: all, from metadata)",
    )
    group.add_argument(
        "--max-response-bytes",
        env_var="LOCUST_MAX_RESPONSE_BYTES",
        default=defaults.MAX_RESPONSE_BYTES,
        help=f"Larger responses are failures (default {defaults.MAX_RESPONSE_BYTES // 2**20} MiB)",
    )
    group.add_argument(
        "--header",
        env_var="LOCUST_HEADER",
        action="append",
        default=None,
        help="Extra request header 'Name: value' (repeatable); values are never logged, and a master never "
        "sends them to its workers (each worker uses its own)",
    )
    group.add_argument(
        "--header-file",
        env_var="LOCUST_HEADER_FILE",
        default=None,
        help="File of extra request headers, one 'Name: value' a line (blank lines and # comments skipped), "
        "e.g. a mounted secret; read by each process on its own machine",
    )
    group.add_argument(
        "--insecure", env_var="LOCUST_INSECURE", action="store_true", default=False, help="Skip TLS verification"
    )
    group.add_argument("--ca-file", env_var="LOCUST_CA_FILE", default=None, help="PEM CA bundle to trust")
    group.add_argument(
        "--keep-body",
        env_var="LOCUST_KEEP_BODY",
        action="store_true",
        default=False,
        help="Keep each response body (Outcome.body, the 'response' of events.request) for custom checks",
    )
    group.add_argument(
        "--expect-top1",
        env_var="LOCUST_EXPECT_TOP1",
        default=None,
        help="Fail responses whose top-1 class differs: a class index, or 'auto' (the first response's)",
    )
    group.add_argument(
        "--class-name",
        env_var="LOCUST_CLASS_NAME",
        default=None,
        help="User class to run (LowUser or HighUser) when none is named on the command line",
    )
    group.add_argument(
        "--stagger",
        env_var="LOCUST_STAGGER",
        default=defaults.STAGGER_S,
        help="Spread the users' starts: each user's first request (an open-loop user's schedule) waits a "
        "random time, uniform from 0 to this many seconds, after the user starts; reproducible with --seed "
        f"(default {plain(defaults.STAGGER_S)}: at once)",
    )
    _add_open_loop_arguments(parser)
    _add_litserve_arguments(parser)
    input_options.add_arguments(parser)
    generative_options.add_arguments(parser)


def _add_litserve_arguments(parser: Any) -> None:
    group = parser.add_argument_group("locust-inference LitServe payloads (--server litserve)")
    group.add_argument(
        "--litserve-payload",
        env_var="LOCUST_LITSERVE_PAYLOAD",
        default=defaults.LITSERVE_PAYLOAD,
        type=str.lower,
        choices=list(defaults.LITSERVE_PAYLOADS),
        help='Request body: tensor ({"input": <nested list>}, the default), image-base64 (the image file '
        "base64'd under --litserve-key in a JSON object), image-bytes (the image file as the body, "
        "Content-Type from its format) or template (--litserve-template with its placeholders filled)",
    )
    group.add_argument(
        "--litserve-key",
        env_var="LOCUST_LITSERVE_KEY",
        default=None,
        help=f"JSON key of the base64 image with --litserve-payload image-base64 (default {defaults.LITSERVE_KEY})",
    )
    group.add_argument(
        "--litserve-template",
        env_var="LOCUST_LITSERVE_TEMPLATE",
        default=None,
        help='JSON file sent with --litserve-payload template: "{{image_base64}}" inside a string value '
        'becomes the image file\'s base64, a "{{tensor}}" string value the preprocessed tensor as a nested list',
    )
    group.add_argument(
        "--litserve-output",
        env_var="LOCUST_LITSERVE_OUTPUT",
        default=None,
        help="Response key checked: a numeric array (its argmax is the top-1), a class index or a label "
        f"(default {defaults.LITSERVE_OUTPUT}); none: the HTTP status only",
    )


def _resolve_litserve(options: Any, server: str, locustfile: str | None) -> LitServeSettings:
    """The LitServe payload settings; combinations that cannot mean anything are errors."""
    payload = str(getattr(options, "litserve_payload", None) or defaults.LITSERVE_PAYLOAD).lower()
    if payload not in LITSERVE_PAYLOADS:
        raise ConfigError(f"--litserve-payload must be one of {', '.join(LITSERVE_PAYLOADS)}, not {payload!r}")
    key = getattr(options, "litserve_key", None)
    template = getattr(options, "litserve_template", None) or None
    output = getattr(options, "litserve_output", None)
    given = [
        name
        for name, value in (
            ("--litserve-payload", payload != defaults.LITSERVE_PAYLOAD),
            ("--litserve-key", key is not None),
            ("--litserve-template", template),
            ("--litserve-output", output is not None),
        )
        if value
    ]
    if server != "litserve" and given:
        raise ConfigError(f"{given[0]} applies to --server litserve, not {server}")
    if payload == "template" and not template:
        raise ConfigError("--litserve-payload template needs --litserve-template FILE (the JSON to send)")
    if template and payload != "template":
        raise ConfigError(f"--litserve-template is sent with --litserve-payload template, not {payload}")
    if key is not None and payload != "image-base64":
        raise ConfigError(f"--litserve-key names the image's key with --litserve-payload image-base64, not {payload}")
    if key is not None and not str(key):
        raise ConfigError("--litserve-key must not be empty")
    if output is not None and not str(output):
        raise ConfigError("--litserve-output must be a response key, or none for the HTTP status only")
    return LitServeSettings(
        payload=payload,
        key=defaults.LITSERVE_KEY if key is None else str(key),
        template=_resolve_image(str(template), locustfile) if template else None,
        output=None if output == "none" else str(output or defaults.LITSERVE_OUTPUT),
    )


def _resolve_open_loop(options: Any) -> OpenLoopSettings:
    rate = _number(options, "rate", None, *RATE_RANGE, whole=False, unit=" requests per second")
    arrival = getattr(options, "arrival", None) or None
    if arrival is not None and arrival not in ARRIVALS:
        raise ConfigError(f"--arrival must be {' or '.join(ARRIVALS)}, not {arrival!r}")
    max_in_flight = _number(options, "max_in_flight", None, 1, MAX_IN_FLIGHT, whole=True)
    overload = getattr(options, "overload", None) or None
    if overload is not None and overload not in OVERLOAD_POLICIES:
        raise ConfigError(f"--overload must be {' or '.join(OVERLOAD_POLICIES)}, not {overload!r}")
    return OpenLoopSettings(
        rate=rate,
        arrival=arrival,
        max_in_flight=max_in_flight,
        overload=overload,
        closed_loop=bool(getattr(options, "closed_loop", False)),
    )


def _add_open_loop_arguments(parser: Any) -> None:
    group = parser.add_argument_group("locust-inference open loop (LowUser and other OpenLoopUser classes)")
    group.add_argument(
        "--rate",
        env_var="LOCUST_RATE",
        default=None,
        help="Requests per second per user, sent whatever the answers (default: the class's rate; "
        f"LowUser {plain(defaults.OPEN_LOOP_RATE)})",
    )
    group.add_argument(
        "--arrival",
        env_var="LOCUST_ARRIVAL",
        default=None,
        help=f"Spacing of requests: constant (every 1/rate s) or poisson (random, mean rate); default: the "
        f"class's ({defaults.OPEN_LOOP_ARRIVAL} for LowUser)",
    )
    group.add_argument(
        "--seed",
        env_var="LOCUST_SEED",
        default=None,
        help="Seed of poisson arrivals, of --shuffle-inputs orders and of --input-data random (default random)",
    )
    group.add_argument(
        "--max-in-flight",
        env_var="LOCUST_MAX_IN_FLIGHT",
        default=None,
        help=f"Requests one user may have in flight at once (default: the class's, {defaults.OPEN_LOOP_MAX_IN_FLIGHT} "
        "for LowUser)",
    )
    group.add_argument(
        "--overload",
        env_var="LOCUST_OVERLOAD",
        default=None,
        help="When max-in-flight are out at a request's time: drop (never sent, counted) or queue (sent in "
        "order as soon as one returns; its latency counts from its intended time); default: the class's "
        f"({defaults.OPEN_LOOP_OVERLOAD} for LowUser)",
    )
    group.add_argument(
        "--closed-loop",
        env_var="LOCUST_CLOSED_LOOP",
        action="store_true",
        default=False,
        help="LowUser as the seed ran it: the next request only after the previous one returned, "
        "paced to the rate (constant_pacing)",
    )


# RFC 9110 token characters: what a header name may be made of
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header(line: str, where: str) -> tuple[str, str]:
    """``Name: value`` from ``line``; ``where`` says which option or line it came from. The line may hold a
    secret (an API key given as ``X-Api-Key key``), so no part of it is ever shown."""
    name, sep, value = line.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise ConfigError(f"{where} is not of the form 'Name: value' (not shown: it may hold a secret)")
    if not _HEADER_NAME.fullmatch(name):
        raise ConfigError(f"{where}: the name is not a valid HTTP header name (not shown: it may hold a secret)")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise ConfigError(f"{where}: the value holds a control character (not shown: it may hold a secret)")
    return name, value


def _header_file(path: str) -> list[tuple[str, str]]:
    try:
        text = Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise ConfigError(f"--header-file {path}: cannot be read ({reason})") from None
    return [
        _header(line, f"--header-file {path}: line {number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _check_host(host: str) -> str:
    """``host`` without a trailing slash, refused when it names credentials: one transport would send
    them as Basic auth and the other drop them, and every failure message carries the URL, so the
    password would reach the failures CSV, the reports and latency.json."""
    authority = re.split(r"[/?#]", host.split("://", 1)[-1], maxsplit=1)[0]
    if "@" in authority:
        raise ConfigError(
            "--host must not carry a user or password (user:password@): send credentials with "
            "--header 'Authorization: ...' or --header-file, or a bearer token with INFERENCE_AUTH_TOKEN"
        )
    host = host.rstrip("/")
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"host {host!r} must start with http:// or https:// (--host)")
    return host


def shown(value: Any) -> str:
    """An option's value for an error line: quoted, and cut short (a value may be a whole file)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def bounded(value: Any, option: str, low: float, high: float, *, whole: bool, unit: str = "") -> Any:
    """``value`` (a string from the command line, a config file or the environment, or a default) as an
    int (``whole``) or a finite float within ``[low, high]``; anything else is a one-line ConfigError naming
    ``option`` and the accepted range. Bounded at start, so no absurd value reaches the native side, where
    it would panic (a semaphore of 2**61 permits), overflow a conversion or allocate without end."""
    text = str(value).strip()
    number: float | None = None
    if whole and re.fullmatch(r"[+-]?[0-9]{1,30}", text):  # int() also takes other scripts' digits
        number = int(text)
    elif not whole:
        with contextlib.suppress(ValueError):
            number = float(text)
    if number is None or not low <= number <= high:  # NaN compares false: refused too
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{option} must be {kind} from {plain(low)} to {plain(high)}{unit}, not {shown(value)}")
    return number


MAX_MODELS = 64  # each model is one endpoint and one request name per process, and one statistics read
MAX_MODEL_WEIGHT = 1_000_000


def _resolve_models(model: str, weights: Any, server: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``--model-name a,b`` and ``--model-weights 3,1`` into the run's models and weights; ``((), ())`` for
    one model (a name without a comma, as always)."""
    models = tuple(m.strip() for m in model.split(","))
    if len(models) > 1:
        if any(not m for m in models):
            raise ConfigError(f"--model-name {shown(model)} has an empty model name")
        if len(set(models)) != len(models):
            raise ConfigError(f"--model-name {shown(model)} names a model twice")
        if len(models) > MAX_MODELS:
            raise ConfigError(f"--model-name names {len(models)} models; at most {MAX_MODELS}")
        if server != "triton":
            raise ConfigError(f"several models (--model-name {shown(model)}) apply to --server triton, not {server}")
    if weights is None or not str(weights).strip():
        return (models, (1,) * len(models)) if len(models) > 1 else ((), ())
    parts = str(weights).split(",")
    if len(parts) != len(models):
        raise ConfigError(
            f"--model-weights {shown(weights)} has {len(parts)} weights for {len(models)} models; give one each"
        )
    for part in parts:
        if not re.fullmatch(r"\s*[0-9]+\s*", part) or not 1 <= int(part) <= MAX_MODEL_WEIGHT:
            raise ConfigError(
                f"--model-weights must be whole numbers from 1 to {MAX_MODEL_WEIGHT:,}, not {shown(part.strip())}"
            )
    if len(models) == 1:
        return (), ()  # one model, as always: its weight changes nothing
    return models, tuple(int(p) for p in parts)


def next_model(bound: Sequence[int], weights: Sequence[int]) -> int:
    """The model the next user is bound to, given the users ``bound`` to each so far: Sainte-Laguë's divisor
    method in turn, the smallest (bound + 1/2) / weight (the first on a tie). The split follows the weights
    exactly at each multiple of their sum and stays within one user of them between (weights 3,1: users 1-4
    go to a, a, b, a), the same in every run, with no randomness to seed."""
    return min(range(len(weights)), key=lambda i: (Fraction(2 * bound[i] + 1, 2 * weights[i]), i))


def plain(x: float) -> str:
    return f"{int(x):,}" if x == int(x) else f"{x:g}"


def _number(options: Any, name: str, default: Any, low: float, high: float, *, whole: bool, unit: str = "") -> Any:
    value = getattr(options, name, None)
    if value is None:
        return default
    return bounded(value, f"--{name.replace('_', '-')}", low, high, whole=whole, unit=unit)


def _resolve_image(image: str, locustfile: str | None) -> Path:
    """A relative path as given when it exists from here, else beside the locustfile."""
    path = Path(image).expanduser()
    if path.is_absolute() or path.exists() or not locustfile:
        return path
    beside = Path(locustfile).resolve().parent / path
    return beside if beside.exists() else path


def resolve(options: Any, host: str | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Builds :class:`Settings` from Locust's parsed options, the host and the environment.

    Raises :class:`ConfigError` with a message that says what is wrong and how to fix it.
    """
    env = os.environ if environ is None else environ
    server = (getattr(options, "server", None) or env.get("SERVER") or env.get("INFERENCE_SERVER") or "").strip()
    if not server:
        raise ConfigError("no inference server chosen: pass --server triton|litserve or set SERVER=triton|litserve")
    server = server.lower()
    if server not in SERVERS:
        raise ConfigError(f"unknown server {server!r}: choose one of {', '.join(SERVERS)} (--server or SERVER)")
    model = (getattr(options, "model_name", None) or env.get("MODEL_NAME") or "").strip()
    if not model:
        raise ConfigError("no model chosen: pass --model-name NAME or set MODEL_NAME=NAME")
    models, weights = _resolve_models(model, getattr(options, "model_weights", None), server)
    triton_format = str(getattr(options, "triton_format", None) or defaults.TRITON_FORMAT).lower()
    if triton_format not in defaults.TRITON_FORMATS:
        raise ConfigError(f"--triton-format must be {' or '.join(defaults.TRITON_FORMATS)}, not {triton_format!r}")
    timeout = float(
        _number(options, "request_timeout", defaults.REQUEST_TIMEOUT_S, *TIMEOUT_RANGE, whole=False, unit=" seconds")
    )
    batch_size = _number(options, "batch_size", defaults.BATCH_SIZE, 1, MAX_BATCH_SIZE, whole=True)
    max_bytes = _number(options, "max_response_bytes", defaults.MAX_RESPONSE_BYTES, 1, MAX_RESPONSE_BYTES, whole=True)
    protocol = str(getattr(options, "protocol", None) or defaults.PROTOCOL).lower()
    if protocol not in defaults.PROTOCOLS:
        raise ConfigError(f"--protocol must be {' or '.join(defaults.PROTOCOLS)}, not {shown(protocol)}")
    if protocol == "grpc" and server != "triton":
        raise ConfigError(f"--protocol grpc applies to --server triton, not {server}")
    if protocol == "grpc" and triton_format != defaults.TRITON_FORMAT:
        raise ConfigError("--triton-format json applies to --protocol http: gRPC sends tensors as raw bytes")
    grpc_compression = str(getattr(options, "grpc_compression_algorithm", None) or "none").strip().lower()
    if grpc_compression not in GRPC_COMPRESSIONS:
        raise ConfigError(
            f"--grpc-compression-algorithm must be {', '.join(GRPC_COMPRESSIONS)}, not {shown(grpc_compression)}"
        )
    if grpc_compression != "none" and protocol != "grpc":
        raise ConfigError("--grpc-compression-algorithm applies to --protocol grpc")
    grpc_connections = _number(
        options, "grpc_connections", defaults.GRPC_CONNECTIONS, 1, MAX_GRPC_CONNECTIONS, whole=True
    )
    host = _check_host(host or (defaults.GRPC_HOST if protocol == "grpc" else DEFAULT_HOSTS[server]))
    image = _resolve_image(
        str(getattr(options, "image", DEFAULT_IMAGE) or DEFAULT_IMAGE), getattr(options, "locustfile", None)
    )
    given = getattr(options, "header", None) or []
    headers = [_header(h, f"--header #{n}" if len(given) > 1 else "--header") for n, h in enumerate(given, 1)]
    header_file = getattr(options, "header_file", None)
    if header_file:
        headers += _header_file(str(header_file))
    token = (env.get("INFERENCE_AUTH_TOKEN") or "").strip()  # a secret mounted as a file ends in a newline
    if token:
        headers.append(_header(f"Authorization: Bearer {token}", "INFERENCE_AUTH_TOKEN"))
    outputs = getattr(options, "output_name", None)
    expect_top1 = getattr(options, "expect_top1", None) or None
    if expect_top1 is not None and expect_top1 != "auto":
        if not re.fullmatch(r"\s*[0-9]+\s*", str(expect_top1)):
            raise ConfigError(f"--expect-top1 must be 'auto' or a class index, not {shown(expect_top1)}")
        expect_top1 = str(bounded(expect_top1, "--expect-top1", 0, MAX_CLASS_INDEX, whole=True))
    ca_file = getattr(options, "ca_file", None)
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"--ca-file {ca_file} does not exist")
    open_loop = _resolve_open_loop(options)  # the options are checked in this order: the first error is said
    seed = _number(options, "seed", None, 0, 2**64 - 1, whole=True)
    stagger = float(_number(options, "stagger", defaults.STAGGER_S, 0, MAX_STAGGER_S, whole=False, unit=" seconds"))
    litserve = _resolve_litserve(options, server, getattr(options, "locustfile", None))
    inputs = input_options.resolve(options)
    generative = generative_options.resolve(options, protocol)
    grpc_stream = protocol == "grpc" and not generative.generative and bool(getattr(options, "stream", False))
    if grpc_stream and expect_top1 is not None:
        raise ConfigError("--expect-top1 checks one answer: --stream counts a decoupled model's responses")
    return Settings(
        server=server,
        model=model,
        host=host,
        image=image,
        triton_format=triton_format,
        protocol=protocol,
        request_timeout=timeout,
        input_name=getattr(options, "input_name", None) or None,
        output_names=tuple(o.strip() for o in outputs.split(",") if o.strip()) if outputs else (),
        batch_size=batch_size,
        max_response_bytes=max_bytes,
        headers=tuple(headers),
        insecure=bool(getattr(options, "insecure", False)),
        ca_file=Path(ca_file) if ca_file else None,
        debug=env.get("DEBUG_REQUESTS", "").strip().lower() in TRUE_WORDS,
        keep_body=bool(getattr(options, "keep_body", False)),
        class_name=getattr(options, "class_name", None) or None,
        expect_top1=expect_top1,
        stagger=stagger,
        seed=seed,
        inputs=inputs,
        open_loop=open_loop,
        litserve=litserve,
        grpc=GrpcSettings(connections=grpc_connections, compression=grpc_compression, stream=grpc_stream),
        generative=generative,
        models=models,
        weights=weights,
    )
