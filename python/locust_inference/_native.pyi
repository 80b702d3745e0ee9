"""Type stubs for the Rust core, ``locust_inference._native``."""

from os import PathLike
from typing import Any, final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "CertificateError",
    "Completion",
    "ConfigError",
    "CountHistogram",
    "Endpoint",
    "ImageError",
    "LatencyHistogram",
    "LocustInferenceError",
    "Measurements",
    "Outcome",
    "ProtocolError",
    "RedirectError",
    "RequestError",
    "RequestSlot",
    "RequestTimeoutError",
    "Stream",
    "__version__",
    "check_litserve_response",
    "count_tokens",
    "decode_triton_grpc_response",
    "decode_triton_response",
    "encode_litserve_image_request",
    "encode_litserve_request",
    "encode_triton_grpc_generate",
    "encode_triton_grpc_inputs",
    "encode_triton_inputs",
    "encode_triton_request",
    "fill_litserve_template",
    "grpc_model_config",
    "grpc_model_metadata",
    "grpc_model_ready",
    "grpc_model_statistics",
    "http_request",
    "image_sizes",
    "litserve_template_placeholders",
    "parse_model_metadata",
    "preprocess_image",
    "preprocess_images",
    "thread_crossings",
]

class LocustInferenceError(Exception):
    """Base class of every error raised by locust_inference."""

class ConfigError(LocustInferenceError):
    """The load test is misconfigured (unknown server, missing model, unreachable metadata...)."""

class ImageError(LocustInferenceError):
    """An image file is missing, empty, truncated or not an image."""

class RequestError(LocustInferenceError):
    """A request failed: connection refused, HTTP error status, certificate not accepted, response too large."""

class RequestTimeoutError(RequestError):
    """A request did not complete within its timeout."""

class CertificateError(RequestError):
    """The server's TLS certificate was not accepted (unknown issuer, wrong host, expired...)."""

class RedirectError(RequestError):
    """The server answered with a redirect (3xx), which is never followed."""

class ProtocolError(LocustInferenceError):
    """A message does not follow the server's protocol (bad header, sizes that don't add up...)."""

def preprocess_image(
    path: str | PathLike[str],
    *,
    resize: int = 256,
    crop: int = 224,
    mean: tuple[float, float, float] = ...,
    std: tuple[float, float, float] = ...,
) -> npt.NDArray[np.float32]:
    """torchvision's Resize(resize) + CenterCrop(crop) + ToTensor() + Normalize(mean, std) on a
    Pillow-opened image converted to RGB: a C-contiguous (3, crop, crop) float32 array.

    Raises ImageError naming the file and the reason when it is missing, empty, truncated or not an
    image; ValueError for impossible parameters."""

def preprocess_images(
    paths: list[str | PathLike[str]],
    *,
    fit: str,
    width: int,
    height: int,
    resize: int = 0,
    layout: str = "nchw",
    datatype: str = "FP32",
    scale: float = 255.0,
    mean: tuple[float, float, float] = ...,
    std: tuple[float, float, float] = ...,
    pad: int = 114,
    threads: int = 0,
    progress: bool = False,
) -> list[bytes]:
    """Each image's tensor bytes (one batch item of width x height, in order), prepared on `threads`
    threads (0: one per core). `fit`: shortside (torchvision Resize(resize) + CenterCrop), stretch
    (resize to width x height) or letterbox (keep the aspect ratio, centred on `pad` grey). Values
    are (pixel / scale - mean) / std in float32, then FP32, FP16 or rounded and saturated UINT8/INT8;
    `layout` nchw (CHW) or nhwc (HWC). With `progress`, large sets report on stderr.

    Raises ImageError naming the first file (in order) that cannot be read."""

def image_sizes(paths: list[str | PathLike[str]]) -> list[tuple[int, int, int] | None]:
    """Each image's (width, height, bytes a pixel takes decoded: 0 for a JPEG, decoded row by row) from its
    header alone, without decoding it; None where the header cannot be read."""

def encode_triton_inputs(
    inputs: list[tuple[str, str, list[int], bytes]], output_names: list[str], *, binary: bool = True
) -> tuple[bytes, int | None]:
    """A KServe v2 inference request of several inputs, each (name, datatype, shape, little-endian
    bytes), and in binary mode the JSON header's length; None in JSON mode."""

def encode_triton_grpc_inputs(
    model: str,
    inputs: list[tuple[str, str, list[int], bytes]],
    output_names: list[str],
    *,
    version: str = "",
    stream: bool = False,
) -> bytes:
    """A gRPC ModelInferRequest for the model (an empty version: the server's choice), the inputs as for
    encode_triton_inputs, sent as raw_input_contents; with ``stream``, for ModelStreamInfer, asking for
    Triton's final-response flag."""

def encode_triton_grpc_generate(model: str, body: bytes) -> bytes:
    """A ModelStreamInfer request for a text model from the generate extension's JSON body: its
    ``text_input`` as the BYTES input, every other key a request parameter (ValueError for a value that is
    not a boolean, number or string)."""

def decode_triton_grpc_response(body: bytes) -> dict[str, npt.NDArray[Any]]:
    """The output tensors of a gRPC ModelInferResponse. Raises ProtocolError on any inconsistency."""

def encode_triton_request(
    tensor: npt.ArrayLike, input_name: str, output_names: list[str], *, binary: bool = True
) -> tuple[bytes, int | None]:
    """A KServe v2 inference request body and, in binary mode, the JSON header's length (the value
    of Inference-Header-Content-Length); None in JSON mode."""

def decode_triton_response(body: bytes, header_length: int | None = None) -> dict[str, npt.NDArray[Any]]:
    """The output tensors of a KServe v2 response (binary or JSON). Raises ProtocolError on any
    inconsistency."""

def parse_model_metadata(body: bytes) -> dict[str, Any]:
    """Parses GET /v2/models/{model}: name, platform, versions, inputs and outputs (name, datatype,
    shape with -1 for variable dimensions)."""

def encode_litserve_request(tensor: npt.ArrayLike) -> bytes:
    """{"input": <nested list>} of a float32 tensor, each float in its shortest round-tripping form."""

def check_litserve_response(body: bytes, expected_shape: list[int] | None = None, key: str = "output") -> int | None:
    """Validates the value under key: a numeric array (regular, finite, of the shape when given; -1
    matches any size; its first row's argmax is returned), a number (a non-negative integer is the
    class index returned) or a non-empty label. Raises ProtocolError naming what is wrong."""

def encode_litserve_image_request(key: str, image: bytes) -> bytes:
    """{"<key>": "<base64 of image>"}: the encoded file's bytes, standard base64 with padding."""

def litserve_template_placeholders(template: bytes) -> list[str]:
    """The placeholders ("{{image_base64}}", "{{tensor}}") a JSON template uses. Raises ValueError
    when it is not valid JSON or has an unknown placeholder or one in a key."""

def fill_litserve_template(template: bytes, image: bytes, tensor: npt.ArrayLike | None = None) -> bytes:
    """The template with "{{image_base64}}" (anywhere in a string value) replaced by the image's
    base64 and a "{{tensor}}" string value by the tensor's nested list; the rest byte for byte.
    Raises ValueError saying what is wrong with the template."""

def count_tokens(tokenizer: str | PathLike[str], texts: list[str]) -> list[int | None]:
    """Each text's token count by the tokenizer.json file (no special tokens added), as the endpoint
    counts a prompt; None where the tokenizer fails on a text. Raises ValueError (one line) when the
    file is missing, too large or not a tokenizer."""

def http_request(
    method: str,
    url: str,
    *,
    body: bytes = ...,
    headers: list[tuple[str, str]] = ...,
    timeout: float = 10.0,
    insecure: bool = False,
    ca_file: str | PathLike[str] | None = None,
    max_response_bytes: int = ...,
) -> tuple[int, bytes]:
    """One blocking request for set-up work before users start; returns (status, body). Raises
    RequestError / RequestTimeoutError when no response arrives or its body is over max_response_bytes,
    and RedirectError (naming the status and Location) for a 3xx, which is never followed."""

def grpc_model_metadata(
    host: str,
    model: str,
    *,
    version: str = "",
    headers: list[tuple[str, str]] = ...,
    timeout: float = 10.0,
    insecure: bool = False,
    ca_file: str | PathLike[str] | None = None,
) -> tuple[int, str, dict[str, Any] | None]:
    """Triton's gRPC ModelMetadata, blocking, for set-up work: (status code, server's message, the metadata as
    parse_model_metadata gives it, or None unless the code is 0). Raises RequestError when no answer arrives."""

def grpc_model_ready(
    host: str,
    model: str,
    *,
    version: str = "",
    headers: list[tuple[str, str]] = ...,
    timeout: float = 10.0,
    insecure: bool = False,
    ca_file: str | PathLike[str] | None = None,
) -> tuple[int, str, bool | None]:
    """Triton's gRPC ModelReady, blocking, as grpc_model_metadata."""

def grpc_model_statistics(
    host: str,
    model: str,
    *,
    version: str = "",
    headers: list[tuple[str, str]] = ...,
    timeout: float = 10.0,
    insecure: bool = False,
    ca_file: str | PathLike[str] | None = None,
) -> tuple[int, str, dict[str, Any] | None]:
    """Triton's gRPC ModelStatistics, blocking, as grpc_model_metadata: the model's entry in the shape of the
    HTTP statistics' model_stats[0] (inference_count, execution_count, inference_stats)."""

def grpc_model_config(
    host: str,
    model: str,
    *,
    version: str = "",
    headers: list[tuple[str, str]] = ...,
    timeout: float = 10.0,
    insecure: bool = False,
    ca_file: str | PathLike[str] | None = None,
) -> tuple[int, str, dict[str, Any] | None]:
    """Triton's gRPC ModelConfig, blocking, as grpc_model_metadata: the part of the configuration read, in the
    shape of the HTTP configuration: name, platform and, for an ensemble, ensemble_scheduling.step (each
    step's model_name and model_version)."""

def thread_crossings() -> tuple[int, int]:
    """Hand-offs of work from Python's thread to the I/O runtime, and signals from it back to Python
    (eventfd writes), since the process started."""

@final
class Endpoint:
    """One prepared request whose bodies are encoded once and shared by every send: one body, or
    several (each with its own extra headers) that each user's requests rotate through."""

    def __new__(
        cls,
        url: str,
        body: bytes | list[tuple[bytes, list[tuple[str, str]]]],
        *,
        method: str = "POST",
        headers: list[tuple[str, str]] = ...,
        protocol: str = "none",
        outputs: list[tuple[str, str, list[int]]] | None = None,
        output_shape: list[int] | None = None,
        output_key: str = "output",
        timeout: float = 60.0,
        max_response_bytes: int = ...,
        insecure: bool = False,
        ca_file: str | PathLike[str] | None = None,
        keep_headers: bool = False,
        keep_body: bool = False,
        shuffle: bool = False,
        zero_copy: bool = True,
        stream: bool = False,
        grpc_connections: int = 4,
        tokenizer: str | PathLike[str] | None = None,
        grpc_compression: str = "none",
    ) -> Endpoint:
        """protocol "openai" (chat/completions, OpenAI-compatible) or "triton-generate" (Triton's
        generate extension) reads generated text and counts tokens; with stream=True the answer must be
        Server-Sent Events (parsed on the I/O thread, each event timed as it arrives): one JSON body
        instead is a failed request ("asked for a stream, the server sent one JSON body"), an "openai"
        stream must end with data: [DONE], an error event fails the request with the server's message.
        tokenizer: a Hugging Face tokenizer.json counting the generated text (ConfigError when it cannot be
        loaded). protocol "grpc" sends ModelInferRequests to a .../ModelInfer URL; "grpc-stream" (a decoupled
        tensor model: each response with outputs a chunk) and "grpc-generate" (a decoupled text model: each
        response's text_output a chunk) read a .../ModelStreamInfer URL's responses up to Triton's final one,
        with the token accounting of stream=True."""
    @property
    def url(self) -> str: ...
    @property
    def body_length(self) -> int:
        """The first body's length."""
    @property
    def body_count(self) -> int:
        """How many bodies the requests rotate through."""
    @property
    def zero_copy(self) -> bool:
        """Whether bodies are sent with sendfile from a sealed memfd rather than copied into the socket
        on every send (http:// bodies of up to 1 MiB each and 256 MiB in all, unless zero_copy=False)."""
    def record(self, outcome: Outcome, success: bool = True) -> None:
        """Accounts for a reported request (call it as the request is reported): its latency when it
        succeeded (success=False: a check made in Python failed it), and whether it was resent. A generative
        answer's TTFT, ITL, TPOT and token counts go to the histograms when it succeeded; the tokens a failed
        one received count as output_tokens_failed."""
    def take(self) -> Measurements:
        """What the requests recorded since the last call measured; recording starts afresh."""
    def reset(self) -> None:
        """Forgets what was recorded since the last take (Locust's --reset-stats, once all users are
        spawned); running streams count their time from now. The open-loop requests pending now (in
        flight, queued, answered but not reported) are counted as carried: they end after the reset."""

@final
class Measurements:
    """What an endpoint's requests measured: latency histograms, the resent count, the open-loop
    counters and a generative endpoint's token measures. Workers send it to the master as to_bytes()
    (the format's version is in its first 4 bytes; a master refuses another version); the master merges
    with add()."""

    def __new__(cls) -> Measurements: ...
    @staticmethod
    def from_histograms(
        total: LatencyHistogram,
        ttfb: LatencyHistogram,
        service: LatencyHistogram,
        lag: LatencyHistogram,
        *,
        resent: int = 0,
    ) -> Measurements:
        """Copies of these histograms and this resent count, no open-loop counters: what a worker
        would send after recording those latencies (benchmarks and tests build reports with it)."""
    @property
    def total(self) -> LatencyHistogram:
        """Successful requests to the last byte (from the intended send time in an open loop)."""
    @property
    def ttfb(self) -> LatencyHistogram:
        """Successful requests to the response head."""
    @property
    def service(self) -> LatencyHistogram:
        """Successful requests from the actual send (the same as total in a closed loop)."""
    @property
    def lag(self) -> LatencyHistogram:
        """Open-loop requests: actual - intended send time."""
    @property
    def ttft(self) -> LatencyHistogram:
        """Generative endpoints: time to first token (send, or intended send in an open loop, to the
        first content chunk) of successful streamed requests that had one."""
    @property
    def itl(self) -> LatencyHistogram:
        """Generative endpoints: every gap between consecutive content chunks of successful requests
        (n chunks give n - 1 gaps, whatever usage says: a chunk counts as one token here)."""
    @property
    def tpot(self) -> LatencyHistogram:
        """Generative endpoints: (last content chunk - first) / (output tokens - 1) of successful
        requests with at least 2 output tokens."""
    @property
    def output_tokens(self) -> CountHistogram:
        """Generative endpoints: output tokens per successful request whose count is known (usage,
        else content chunks of a stream). Values are counts, not times."""
    @property
    def input_tokens(self) -> CountHistogram:
        """Generative endpoints: input tokens per successful request, from the server's usage."""
    @property
    def tokens(self) -> dict[str, int]:
        """Generative endpoints' counters: output_tokens_total (sum over successful requests),
        output_tokens_failed (received by failed requests before they failed: usage, else chunks),
        token_requests (successful requests with an output token count), approximate_requests (of
        those, counted by content chunks: no usage), no_token_requests (successful requests without a
        content chunk, hence no TTFT), usage_disagreements (successful requests whose usage and
        tokenizer counts differ). On a streamed endpoint ttft.count + no_token_requests =
        token_requests = total.count."""
    @property
    def resent(self) -> int:
        """Requests of any outcome that were resent."""
    @property
    def abandoned(self) -> int:
        """Closed-loop requests sent and never reported: their user was stopped while they were out."""
    @property
    def streams(self) -> dict[str, int | float]:
        """Open-loop counters: carried, scheduled, sent, dropped, completed, unfinished, streams, rate (sum
        of the streams' rates), stream_seconds (sum of stopped streams' run times). Summed since the start
        or the last reset: carried + scheduled = dropped + completed + unfinished + the requests still
        pending (0 once every stream stopped); carried are those pending at the reset."""
    def add(self, other: Measurements) -> None:
        """Adds ``other``; raises ProtocolError, adding nothing, when a count would overflow."""
    def check_add(self, other: Measurements) -> None:
        """Raises ProtocolError when ``add(other)`` would (a count would overflow); changes nothing."""
    def restart(self) -> None:
        """Forgets what was measured, keeping the number of streams and their offered rate."""
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Measurements:
        """Raises ProtocolError for bytes that are not a serialised Measurements."""
    def __eq__(self, other: object, /) -> bool: ...

@final
class Stream:
    """An open-loop stream of an endpoint's request, started on creation: requests leave at intended
    times (every 1/rate s, or Poisson arrivals from `seed`) whatever the answers, at most
    `max_in_flight` at once; when all are out, a due request is dropped (`overload="drop"`) or queued
    and sent in order as slots free (`"queue"`). fileno() is readable while completions wait."""

    def __new__(
        cls,
        endpoint: Endpoint,
        rate: float,
        *,
        arrival: str = "constant",
        seed: int = 0,
        max_in_flight: int = 4,
        overload: str = "drop",
    ) -> Stream: ...
    def fileno(self) -> int: ...
    def take(self) -> list[Completion]:
        """Every completion that arrived since the last call, oldest first."""
    def wait(self, timeout: float | None = None) -> list[Completion]:
        """Blocks (without the GIL) until completions wait or the timeout passes, then takes them."""
    def record(self, completion: Completion, success: bool = True) -> None:
        """Accounts for a taken completion as it is reported: its latencies (response time from the intended
        send, service time, TTFB; a generative answer's TTFT from the intended send, ITL, TPOT, tokens) when
        it succeeded, and one completed request. ValueError for a completion
        already recorded, one of another stream, or after stop() (which counted it as unfinished)."""
    def stop(self) -> int:
        """Stops the schedule, abandons requests in flight; returns how many scheduled requests will
        never be reported (in flight, queued, untaken, or taken and not recorded). 0 when already stopped."""
    def counts(self) -> dict[str, int]:
        """From the stream's start: scheduled, sent, dropped, completed (answered), delivered (taken),
        reported (recorded)."""
    def lag(self) -> LatencyHistogram:
        """How late this stream's requests left (actual - intended send time)."""
    @property
    def rate(self) -> float: ...
    @property
    def max_in_flight(self) -> int: ...
    @property
    def overload(self) -> str: ...

@final
class Completion:
    """One answered request of a stream."""

    @property
    def outcome(self) -> Outcome: ...
    @property
    def response_time(self) -> float:
        """ms from the intended send time to the last response byte (or the failure)."""
    @property
    def service_time(self) -> float:
        """ms from the actual send to the last response byte (or the failure)."""
    @property
    def lag(self) -> float:
        """ms between the intended and the actual send time."""
    @property
    def ttft(self) -> float | None:
        """ms from the intended send time to the first content chunk (lag + outcome.ttft), when one
        arrived."""
    @property
    def intended(self) -> float:
        """Seconds from the stream's start to the intended send time."""
    @property
    def sent(self) -> float:
        """Seconds from the stream's start to the actual send time."""

@final
class RequestSlot:
    """One user's request slot: runs one request at a time on the I/O runtime; fileno() becomes
    readable when the outcome is ready."""

    def __new__(cls, seed: int | None = None) -> RequestSlot:
        """`seed` orders this user's walk through a shuffling endpoint's bodies."""
    def fileno(self) -> int: ...
    def submit(self, endpoint: Endpoint, follow: bool = False) -> None:
        """Starts the request, or adopts the follow-up already sent to `endpoint`; another request
        still in flight is abandoned. With `follow`, the I/O thread sends the next request itself
        the moment this one is answered (a follow-up, which the next submit adopts)."""
    def take(self) -> Outcome | None:
        """The outcome once ready, else None."""
    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Blocks the thread (GIL released) until ready or timeout; not for greenlets."""
    def cancel(self) -> None:
        """Abandons the request in flight, if any."""
    def unfollow(self) -> None:
        """Sends no follow-up after the request out now."""
    @property
    def in_flight(self) -> bool:
        """Whether a request is out and unanswered (a follow-up included)."""
    @property
    def ahead(self) -> bool:
        """Whether a follow-up is out or answered that no submit has adopted yet."""

@final
class Outcome:
    """How one request went; times are milliseconds measured in Rust."""

    @property
    def ok(self) -> bool: ...
    @property
    def status(self) -> int | None: ...
    @property
    def response_time(self) -> float: ...
    @property
    def ttfb(self) -> float | None: ...
    @property
    def response_length(self) -> int: ...
    @property
    def top1(self) -> int | None: ...
    @property
    def input_index(self) -> int:
        """Which of the endpoint's bodies this request sent."""
    @property
    def resent(self) -> bool:
        """Whether the request went out on a second connection because the pooled one was closed
        before any byte of it was written (the server cannot have seen the first try)."""
    @property
    def ttft(self) -> float | None:
        """Generative endpoints: ms from the send to the first content chunk of a stream; None without
        one (or for a whole JSON answer)."""
    @property
    def tpot(self) -> float | None:
        """Generative endpoints: ms per output token after the first, (last chunk - first) /
        (output_tokens - 1); None below 2 tokens or without a stream."""
    @property
    def itl(self) -> list[float]:
        """Generative endpoints: ms between consecutive content chunks, in order."""
    @property
    def output_tokens(self) -> int | None:
        """Generative endpoints: usage.completion_tokens, else the content chunks of a stream (see
        token_source); None when unknown. For a failed request: what arrived before the failure."""
    @property
    def input_tokens(self) -> int | None:
        """Generative endpoints: usage.prompt_tokens when the server sent it, else the tokenizer's count of
        the prompt (with tokenizer=)."""
    @property
    def token_source(self) -> str | None:
        """Either "usage" (the server's count), "tokenizer" (the tokenizer's count of the text) or "chunks"
        (content chunks counted: approximate); None when output_tokens is None."""
    @property
    def chunks(self) -> int:
        """Content chunks received (events with text; 1 for a whole JSON answer with text)."""
    @property
    def headers(self) -> list[tuple[str, str]] | None: ...
    @property
    def body(self) -> bytes | None: ...
    @property
    def error_kind(self) -> str | None: ...
    @property
    def error_detail(self) -> str | None: ...
    @property
    def exception(self) -> LocustInferenceError | None: ...

@final
class LatencyHistogram:
    """An HdrHistogram of latencies in microseconds (1 µs to 60 s, 3 significant digits)."""

    def __new__(cls) -> LatencyHistogram: ...
    def record(self, milliseconds: float) -> None: ...
    def add(self, other: LatencyHistogram) -> None:
        """Adds every sample of other (merging workers' histograms)."""
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> LatencyHistogram: ...
    @property
    def count(self) -> int: ...
    def percentile(self, percentile: float) -> float:
        """Latency in ms at a percentile (0-100)."""
    def summary(self) -> dict[str, float]:
        """min, mean, p50, p90, p95, p99, p99.9, p99.99, max in ms."""
    def distribution(self, ticks_per_half: int = 5) -> list[tuple[float, float]]:
        """(percentile, ms) points for a percentile plot."""
    def __eq__(self, other: object, /) -> bool: ...

@final
class CountHistogram:
    """An HdrHistogram of counts (tokens per request): 0 to 60,000,000, 3 significant digits (exact up
    to 2048). The same encoding as LatencyHistogram, but values are counts as they are, not ms."""

    def __new__(cls) -> CountHistogram: ...
    def record(self, value: int) -> None: ...
    def add(self, other: CountHistogram) -> None:
        """Adds every value of other (merging workers' histograms)."""
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> CountHistogram: ...
    @property
    def count(self) -> int:
        """How many values were recorded."""
    @property
    def total(self) -> int:
        """The sum of the values."""
    def percentile(self, percentile: float) -> int:
        """The value at a percentile (0-100); 0 when empty."""
    def summary(self) -> dict[str, float]:
        """min, mean, p50, p90, p95, p99, p99.9, p99.99, max."""
    def distribution(self, ticks_per_half: int = 5) -> list[tuple[float, int]]:
        """(percentile, value) points for a percentile plot."""
    def __eq__(self, other: object, /) -> bool: ...
