"""Every option's default and every choice-like option's choices, written once: the argparse options
(:mod:`options`, :mod:`input_options`, :mod:`sweep.plan`), their help texts and the :class:`Settings`
dataclasses read them from here.

Values that must also hold elsewhere say where: the Rust side has its own defaults for callers of
``_native.Endpoint`` that pass none, and ``distributed.sh`` repeats the default hosts.
"""

from __future__ import annotations

__all__ = [
    "API",
    "APIS",
    "ARRIVALS",
    "BATCH_SIZE",
    "DTYPES",
    "GRPC_CONNECTIONS",
    "GRPC_HOST",
    "HOSTS",
    "IMAGE",
    "LAYOUTS",
    "LITSERVE_KEY",
    "LITSERVE_OUTPUT",
    "LITSERVE_PAYLOAD",
    "LITSERVE_PAYLOADS",
    "MAX_INPUT_MEMORY",
    "MAX_PROMPTS_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_TOKENS",
    "OPEN_LOOP_ARRIVAL",
    "OPEN_LOOP_MAX_IN_FLIGHT",
    "OPEN_LOOP_OVERLOAD",
    "OPEN_LOOP_RATE",
    "OVERLOAD_POLICIES",
    "PRESETS",
    "PROTOCOL",
    "PROTOCOLS",
    "REQUEST_TIMEOUT_S",
    "SERVERS",
    "STAGGER_S",
    "STREAM",
    "SWEEP_MAX_WINDOWS",
    "SWEEP_STABLE_WINDOWS",
    "SWEEP_TOLERANCE",
    "SWEEP_WARMUP_S",
    "SWEEP_WINDOW_S",
    "TRITON_FORMAT",
    "TRITON_FORMATS",
]

# The target
SERVERS = ("triton", "litserve")
# The reference servers' ports (servers/triton.py, servers/litserve_app.py, the Makefile's serve-* targets);
# distributed.sh repeats these two URLs.
HOSTS = {"triton": "http://127.0.0.1:8000", "litserve": "http://127.0.0.1:8001"}
# Triton's gRPC endpoint (--protocol grpc): its default port, 8001, as Triton's own
GRPC_HOST = "http://127.0.0.1:8001"
IMAGE = "data/img1.jpg"
BATCH_SIZE = 1

# Each request
# The Rust Endpoint has the same two defaults (its pyo3 signature: timeout, DEFAULT_MAX_RESPONSE_BYTES).
REQUEST_TIMEOUT_S = 60.0
# How long the users' first requests are spread over (--stagger): 0, each user sends as soon as it starts
STAGGER_S = 0.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
TRITON_FORMATS = ("binary", "json")
TRITON_FORMAT = "binary"
PROTOCOLS = ("http", "grpc")  # how Triton is reached (--protocol)
PROTOCOL = "http"
GRPC_CONNECTIONS = 4  # HTTP/2 connections a process's users share over gRPC (docs/grpc.md)
LITSERVE_PAYLOADS = ("tensor", "image-base64", "image-bytes", "template")
LITSERVE_PAYLOAD = "tensor"
LITSERVE_KEY = "image"  # the JSON key of the base64 image
LITSERVE_OUTPUT = "output"  # the response key checked

# Generative models (generative_options.py): what requests are, and how they are sent
APIS = ("infer", "chat", "completions", "generate")
API = "infer"  # tensors or images, as before generative models
STREAM = True  # with --api other than infer; --no-stream turns it off
MAX_TOKENS = None  # not sent: the server's own limit
MAX_PROMPTS_BYTES = 256 * 1024**2  # a --prompts file larger than this is refused before it is read

# Open-loop users (OpenLoopUser's class attributes; --rate and the others override them)
ARRIVALS = ("constant", "poisson")
OVERLOAD_POLICIES = ("drop", "queue")
OPEN_LOOP_RATE = 30.0  # requests per second of one user
OPEN_LOOP_ARRIVAL = "constant"
OPEN_LOOP_MAX_IN_FLIGHT = 4
OPEN_LOOP_OVERLOAD = "drop"

# What requests carry (None in InputSettings: follow the model)
PRESETS = ("imagenet", "letterbox", "resize", "none")
LAYOUTS = ("nchw", "nhwc")
DTYPES = ("fp32", "fp16", "uint8", "int8")
MAX_INPUT_MEMORY = 2 * 1024**3

# A sweep's steps
SWEEP_WINDOW_S = 5
SWEEP_WARMUP_S = 5
SWEEP_STABLE_WINDOWS = 3
SWEEP_TOLERANCE = "10%"  # as written on the command line
SWEEP_MAX_WINDOWS = 10
