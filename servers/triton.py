"""Serve the test models with a real NVIDIA Triton Inference Server through PyTriton (KServe v2 HTTP/gRPC).

Usage (foreground until SIGTERM/SIGINT)::

    python -m servers.triton --http-port 8000 [--models tiny_onnx,checksum] [--threads 2]

Models: ``resnet50_onnx``, ``tiny_onnx``, ``checksum``, ``sleep_20ms`` (see :mod:`servers.models`), plus
``resnet50_openvino`` when the ``openvino`` package is importable, and on request the echo-checksum models
of :mod:`servers.echo_models` and ``synthetic_llm``: the text generator of :mod:`servers.generator` as a
decoupled model, streamed at ``POST /v2/models/synthetic_llm/generate_stream`` (its options:
``--prefill-ms``, ``--token-ms``, ``--max-tokens``, ``--slots``, ``--timing-log``), and ``tiny_gpt``, the small
real model of :mod:`servers.tiny_gpt` served the same way (its output capped at ``--max-tokens``), and
``pulse``, a decoupled tensor model sending N responses at a set interval (gRPC ModelStreamInfer only),
and ``ensemble_checksum``, a real Triton ensemble of two composing models (:data:`servers.echo_models.ENSEMBLES`;
asking for it serves its composing models too). Every endpoint binds to 127.0.0.1 only.
Prefer :func:`servers.launch.triton_server`, which runs this module in its own process group.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import numpy as np

from servers import generator
from servers.echo_models import ECHO_MODELS, ENSEMBLES, OUTPUT, EchoModel, Ensemble, echo_batch, prep_batch
from servers.launch import (
    claim_python_env,
    exit_with_launcher,
    free_ports,
    python_envs,
    python_stub_pids,
    remove_triton_leftovers,
)
from servers.models import DEFAULT_THREADS, INPUT_SHAPE, MODELS, OUTPUT_SHAPE, checksum_batch, load_predictor, onnx_path

LOG = logging.getLogger("servers.triton")
HOST = "127.0.0.1"
INFERENCE_TOKEN_ENV = "TRITON_INFERENCE_TOKEN"
DEFAULT_MODELS = ("resnet50_onnx", "tiny_onnx", "checksum", "sleep_20ms")
OPENVINO_MODEL = "resnet50_openvino"
GENERATOR_MODEL = "synthetic_llm"
TINY_GPT_MODEL = "tiny_gpt"  # servers.tiny_gpt, capped at the generator's --max-tokens
PULSE_MODEL = "pulse"  # a decoupled tensor model: N responses at a set interval (_bind_pulse)
PULSE_MAX_COUNT = 10_000  # a request cannot keep the model busy beyond this many responses...
PULSE_MAX_INTERVAL_MS = 10_000  # ...nor this long between two
PULSE_MAX_SIZE = 16 << 20  # nor ask for a response larger than this
GENERATOR = generator.Generator()  # its settings: main() replaces it from the command line


@dataclass(frozen=True)
class TritonModelSettings:
    """How a model is deployed in Triton: batch limit, dynamic batcher queue delay, instance count."""

    max_batch_size: int
    max_queue_delay_us: int = 0
    instances: int = 1


SETTINGS: dict[str, TritonModelSettings] = {
    "resnet50_onnx": TritonModelSettings(max_batch_size=16),
    OPENVINO_MODEL: TritonModelSettings(max_batch_size=16),
    "tiny_onnx": TritonModelSettings(max_batch_size=64),
    "checksum": TritonModelSettings(max_batch_size=64),
    # 20 ms per *batch*. One instance is not enough for N-way concurrency: concurrent clients split into
    # groups that alternate on it (10 clients reached ~4.5x one client's rate). PyTriton spends ~4.5 ms of CPU
    # per execution, so on 2 cores the instance count matters: 10 Locust users vs 1 reached 9.4-9.7x with 8
    # instances, 7.9x with 6; 2, 3 and 10 instances did worse. Instances 1-7 read their config from
    # instance 0 at start-up, so they are created one after another: see load_instances_in_turn.
    "sleep_20ms": TritonModelSettings(max_batch_size=128, max_queue_delay_us=200, instances=8),
}


def openvino_available() -> bool:
    """True when the optional ``openvino`` package can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def available_models() -> list[str]:
    """All model names this server can serve on this machine."""
    openvino = [OPENVINO_MODEL] if openvino_available() else []
    composing = [name for ensemble in ENSEMBLES.values() for name in ensemble.composing]
    generative = [GENERATOR_MODEL, TINY_GPT_MODEL, PULSE_MODEL]
    return [*DEFAULT_MODELS, *openvino, *ECHO_MODELS, *generative, *ENSEMBLES, *composing]


def with_composing(models: list[str]) -> list[str]:
    """``models`` with each ensemble's composing models (once each) before it: Triton loads an ensemble only
    with them, and unloads ``reversed`` of this list ensemble first."""
    out: list[str] = []
    for name in models:
        for needed in (*ENSEMBLES[name].composing, name) if name in ENSEMBLES else (name,):
            if needed not in out:
                out.append(needed)
    return out


def _openvino_predictor(threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """ResNet-50 (same ONNX graph and weights as ``resnet50_onnx``) compiled by OpenVINO in f32."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads)}
    compiled = ov.Core().compile_model(str(onnx_path("resnet50")), "CPU", config)
    output = compiled.output(0)

    def predict(batch: np.ndarray) -> np.ndarray:
        request = compiled.create_infer_request()  # one request per call: safe across Triton instances
        return np.asarray(request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[output])

    return predict


def prefer_interpreter_libpython() -> None:
    """Put this interpreter's LIBDIR first on ``LD_LIBRARY_PATH`` (read by tritonserver at launch).

    The Python-backend stub links ``libpython3.X.so``; if the dynamic loader picks the system copy instead
    of the one matching this interpreter's stdlib, models fail to load with
    ``AttributeError: '_thread.RLock' object has no attribute '_recursion_count'``.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        return
    rest = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *rest])


def load_instances_in_turn() -> None:
    """Make tritonserver (it reads the environment at launch) create a model's instances one at a time.

    PyTriton's instance 0 serves the model's config on a unix socket; instances 1..N-1 read it in their
    ``initialize``, waiting at most 1 s for the socket file and then connecting once
    (``get_config_from_handshake_server``, its timeout fixed: no setting or variable changes it). The
    Python backend asks for parallel instance loading, so all stubs start together; on a loaded 2-core
    machine instance 0 is then more than 1 s late (``TimeoutError``) or caught between ``bind`` and
    ``listen`` (``ConnectionRefusedError``), and the model fails to load (12 of 30 starts here, load
    average 2-10). ``TRITON_PARALLEL_INSTANCE_LOADING=0`` (tritonserver's override of the backend's
    choice) creates instance 1 only after instance 0's ``initialize`` has returned, its socket listening:
    0 of 35 starts failed under the same load, each about 0.5 s slower.
    """
    os.environ["TRITON_PARALLEL_INSTANCE_LOADING"] = "0"


def _bind_echo(triton, model: EchoModel) -> None:  # triton: pytriton.triton.Triton
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {OUTPUT: echo_batch(model, inputs)}

    triton.bind(
        model_name=model.name,
        infer_func=infer,
        inputs=[Tensor(name=name, dtype=dtype, shape=shape) for name, dtype, shape in model.inputs],
        outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(16,))],
        config=ModelConfig(max_batch_size=model.max_batch_size),
        strict=True,
    )


def _bind_composing(triton, name: str) -> None:  # triton: pytriton.triton.Triton
    """A composing model of an ensemble: the first step (``prep_batch``) or the second (``checksum_batch``)."""
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor

    ensemble = next(e for e in ENSEMBLES.values() if name in e.composing)
    takes, gives = (ensemble.input, ensemble.link) if name == ensemble.first else (ensemble.link, ensemble.output)
    step = prep_batch if name == ensemble.first else checksum_batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {gives[0]: step(inputs[takes[0]])}

    triton.bind(
        model_name=name,
        infer_func=infer,
        inputs=[Tensor(name=takes[0], dtype=takes[1], shape=takes[2])],
        outputs=[Tensor(name=gives[0], dtype=gives[1], shape=gives[2])],
        config=ModelConfig(max_batch_size=ensemble.max_batch_size),
        strict=True,
    )


_TRITON_TYPES = {np.uint8: "TYPE_UINT8", np.float32: "TYPE_FP32"}


def ensemble_config(ensemble: Ensemble) -> str:
    """The ensemble's ``config.pbtxt``: ``platform: "ensemble"`` and its two ``ensemble_scheduling`` steps,
    the link tensor an internal one (named apart from every model's tensors)."""

    def tensor(spec: tuple[str, type, tuple[int, ...]]) -> str:
        name, dtype, dims = spec
        return f'{{ name: "{name}" data_type: {_TRITON_TYPES[dtype]} dims: [ {", ".join(map(str, dims))} ] }}'

    link = f"{ensemble.name}_{ensemble.link[0]}"

    def step(model: str, takes: str, source: str, gives: str, target: str) -> str:
        return (
            f'{{ model_name: "{model}" model_version: -1 input_map {{ key: "{takes}" value: "{source}" }} '
            f'output_map {{ key: "{gives}" value: "{target}" }} }}'
        )

    first = step(ensemble.first, ensemble.input[0], ensemble.input[0], ensemble.link[0], link)
    second = step(ensemble.second, ensemble.link[0], link, ensemble.output[0], ensemble.output[0])
    return (
        f'name: "{ensemble.name}"\nplatform: "ensemble"\nmax_batch_size: {ensemble.max_batch_size}\n'
        f"input [ {tensor(ensemble.input)} ]\noutput [ {tensor(ensemble.output)} ]\n"
        f"ensemble_scheduling {{ step [ {first}, {second} ] }}\n"
    )


def load_ensemble(
    model_store: Path, ensemble: Ensemble, http_port: int, token: str | None, http_address: str = HOST
) -> None:
    """Loads ``ensemble`` once its composing models are: puts its folder (an ensemble has no files: an empty
    version folder and its config) in the model repository tritonserver was started with, PyTriton's model
    store, and asks for it with the repository API's load (explicit model control, as PyTriton runs it).

    Not before the start: PyTriton loads its own models through the same API after tritonserver is up, and
    tritonserver, started with ``--load-model=*``, refuses to start when a model there names models it does
    not have yet (``ensemble ... contains models that are not available``).

    The load answers 500 ``failed to poll from model repository`` although the ensemble loaded: loading an
    ensemble also polls its composing models in the repository (to reload changed ones), and PyTriton's are
    not there (it sends their files with their load). So that answer is checked with the ensemble's
    readiness; any other failure is raised (the start fails)."""
    from pytriton.triton import TRITON_ACCESS_HEADER

    folder = model_store / ensemble.name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(ensemble_config(ensemble))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"Content-Type": "application/json", **({TRITON_ACCESS_HEADER: token} if token else {})}
    base = f"http://{http_address}:{http_port}/v2"
    load = urllib.request.Request(f"{base}/repository/models/{ensemble.name}/load", b"{}", headers, method="POST")
    try:
        opener.open(load, timeout=120).close()  # synchronous: answers once loaded or failed
    except urllib.error.HTTPError as exc:
        reason = exc.read()[:500].decode(errors="replace")
        if "failed to poll from model repository" not in reason:
            raise RuntimeError(f"Triton could not load ensemble {ensemble.name}: {reason}") from exc
        ready = urllib.request.Request(f"{base}/models/{ensemble.name}/ready", headers=headers)
        opener.open(ready, timeout=10).close()  # raises HTTPError unless 200: the start fails
    LOG.info("loaded ensemble %s (%s)", ensemble.name, ", ".join(ensemble.composing))


def _bind_generator(triton, settings: generator.Generator) -> None:  # triton: pytriton.triton.Triton
    """``synthetic_llm``: BYTES ``text_input`` in, one ``text_output`` response per token (decoupled), the
    length from the request's ``max_tokens`` parameter. The infer function is an async generator: PyTriton
    runs a synchronous one in turns, interleaving concurrent requests' tokens (42 ms apart at 4 users for a
    10 ms generator), while async ones share its event loop and keep their schedule."""
    from pytriton.model_config import ModelConfig, Tensor

    async def infer(requests: list) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        # Not batching: Triton hands each execution one request.
        (request,) = requests
        count = settings.length((request.parameters or {}).get("max_tokens"))
        async for text in settings.tokens(count):
            yield [{"text_output": np.array([text.encode()], dtype=np.object_)}]

    triton.bind(
        model_name=GENERATOR_MODEL,
        infer_func=infer,
        inputs=[Tensor(name="text_input", dtype=np.bytes_, shape=(1,))],
        outputs=[Tensor(name="text_output", dtype=np.bytes_, shape=(1,))],
        config=ModelConfig(batching=False, decoupled=True),
        strict=True,
    )


def _bind_tiny_gpt(triton, max_tokens: int, threads: int) -> None:  # triton: pytriton.triton.Triton
    """``tiny_gpt``: as ``synthetic_llm`` (BYTES ``text_input``/``text_output``, one response a token), the
    text from the small real model of :mod:`servers.tiny_gpt`, each step in a worker thread."""
    from pytriton.model_config import ModelConfig, Tensor

    from servers.tiny_gpt import TinyGpt, output_length, stream

    model = TinyGpt(threads=threads)

    async def infer(requests: list) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        (request,) = requests  # not batching: Triton hands each execution one request
        prompt = b"".join(np.asarray(request["text_input"]).reshape(-1).tolist()).decode("utf-8", "replace")
        requested = (request.parameters or {}).get("max_tokens")
        ok = isinstance(requested, int) and not isinstance(requested, bool) and requested > 0
        count = output_length(prompt, min(requested, max_tokens) if ok else max_tokens)
        async for text in stream(model, prompt, count):
            yield [{"text_output": np.array([text.encode()], dtype=np.object_)}]

    triton.bind(
        model_name=TINY_GPT_MODEL,
        infer_func=infer,
        inputs=[Tensor(name="text_input", dtype=np.bytes_, shape=(1,))],
        outputs=[Tensor(name="text_output", dtype=np.bytes_, shape=(1,))],
        config=ModelConfig(batching=False, decoupled=True),
        strict=True,
    )


def _bind_pulse(triton, timing_log: str | None) -> None:  # triton: pytriton.triton.Triton
    """``pulse``: a decoupled tensor model. A request's INT32 inputs ``COUNT`` (N), ``INTERVAL_MS``, ``SIZE``
    and ``FAIL_AT`` ask for N responses (the request failing with the model's error after ``FAIL_AT`` of them
    when 0 <= FAIL_AT < N), response i (from 0) sent ``(i + 1) * INTERVAL_MS`` after the request
    reached the model, each carrying ``INDEX`` = [i] and ``DATA``, SIZE bytes (a response too large to
    take, on request). Deadlines are absolute, as the generator's: a late wake-up delays one response,
    never the rest. Inputs out of range (see PULSE_MAX_*) fail the request with the model's error. With
    ``timing_log`` (the generator's ``--timing-log``), each finished request appends its own timing there
    (``"where": "pulse"``, ``count``, ``first_s`` from arrival to the first response, ``gaps_s``)."""
    from pytriton.model_config import ModelConfig, Tensor

    async def infer(requests: list) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        (request,) = requests  # not batching: Triton hands each execution one request
        arrived = time.perf_counter()
        count, interval_ms, size, fail_at = (int(np.asarray(request[name]).reshape(-1)[0]) for name in PULSE_INPUTS)
        if not (0 <= count <= PULSE_MAX_COUNT and 0 <= interval_ms <= PULSE_MAX_INTERVAL_MS):
            raise ValueError(f"COUNT must be 0-{PULSE_MAX_COUNT} and INTERVAL_MS 0-{PULSE_MAX_INTERVAL_MS}")
        if not 0 <= size <= PULSE_MAX_SIZE:
            raise ValueError(f"SIZE must be 0-{PULSE_MAX_SIZE}")
        data = np.zeros(size, dtype=np.uint8)
        sent: list[float] = []
        for index in range(count):
            if index == fail_at:
                raise ValueError(f"pulse failed as asked, after {index} responses")
            left = arrived + (index + 1) * interval_ms / 1000 - time.perf_counter()
            while left > 0:
                await asyncio.sleep(left)
                left = arrived + (index + 1) * interval_ms / 1000 - time.perf_counter()
            sent.append(time.perf_counter())
            yield [{"INDEX": np.array([index], dtype=np.int32), "DATA": data}]
        if timing_log and sent:
            gaps = [b - a for a, b in itertools.pairwise(sent)]
            record = {"where": "pulse", "count": count, "first_s": sent[0] - arrived, "gaps_s": gaps}
            generator.append_record(timing_log, record)

    triton.bind(
        model_name=PULSE_MODEL,
        infer_func=infer,
        inputs=[Tensor(name=name, dtype=np.int32, shape=(1,)) for name in PULSE_INPUTS],
        outputs=[Tensor(name="INDEX", dtype=np.int32, shape=(1,)), Tensor(name="DATA", dtype=np.uint8, shape=(-1,))],
        config=ModelConfig(batching=False, decoupled=True),
        strict=True,
    )


PULSE_INPUTS = ("COUNT", "INTERVAL_MS", "SIZE", "FAIL_AT")


def _bind_model(triton, name: str, threads: int) -> None:  # triton: pytriton.triton.Triton
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    if name in ECHO_MODELS:
        _bind_echo(triton, ECHO_MODELS[name])
        return
    if name == GENERATOR_MODEL:
        _bind_generator(triton, GENERATOR)
        return
    if name == TINY_GPT_MODEL:
        _bind_tiny_gpt(triton, GENERATOR.max_tokens, 1)
        return
    if name == PULSE_MODEL:
        _bind_pulse(triton, GENERATOR.timing_log)
        return
    if any(name in e.composing for e in ENSEMBLES.values()):
        _bind_composing(triton, name)
        return
    spec = MODELS["resnet50_onnx"] if name == OPENVINO_MODEL else MODELS[name]
    settings = SETTINGS[name]
    predictor = _openvino_predictor(threads) if name == OPENVINO_MODEL else load_predictor(name, threads)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {spec.output_name: predictor(inputs[spec.input_name])}

    triton.bind(
        model_name=name,
        infer_func=[infer] * settings.instances if settings.instances > 1 else infer,
        inputs=[Tensor(name=spec.input_name, dtype=np.float32, shape=INPUT_SHAPE)],
        outputs=[Tensor(name=spec.output_name, dtype=np.float32, shape=OUTPUT_SHAPE)],
        config=ModelConfig(
            max_batch_size=settings.max_batch_size,
            batcher=DynamicBatcher(max_queue_delay_microseconds=settings.max_queue_delay_us),
        ),
        strict=True,
    )


def _unload_models(
    http_port: int, models: list[str], token: str | None, timeout: float = 6.0, http_address: str = HOST
) -> None:
    """Unload ``models`` through the repository API and wait (<= ``timeout`` s) for their stubs to exit.

    tritonserver's own shutdown first waits for open HTTP connections -- idle keep-alive clients of a load
    test hold them -- and then force-exits without unloading, so the Python-backend stubs die mid-flight and
    leak ``/tmp/folderXXXXXX`` / ``/tmp/python_env_*``. Unloading first lets them finalize cleanly.
    """
    from pytriton.triton import TRITON_ACCESS_HEADER

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"Content-Type": "application/json", **({TRITON_ACCESS_HEADER: token} if token else {})}
    started = time.monotonic()
    try:
        for name in models:  # asynchronous: returns once the unload is scheduled
            url = f"http://{http_address}:{http_port}/v2/repository/models/{name}/unload"
            request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
            opener.open(request, timeout=timeout).close()
    except (urllib.error.URLError, OSError) as exc:
        LOG.warning("could not unload models: %s", exc)
        return
    while python_stub_pids(os.getpid()):
        if time.monotonic() - started > timeout:
            LOG.warning("Python-backend stubs still running %.1f s after unload", timeout)
            return
        time.sleep(0.1)
    LOG.info("unloaded %d models in %.1f s", len(models), time.monotonic() - started)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def serve(
    models: list[str],
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    *,
    threads: int,
    http_address: str = HOST,
    grpc_tls: tuple[Path, Path] | None = None,
    log_verbose: int = 0,
) -> int:
    """Run Triton in the foreground until SIGTERM/SIGINT or until tritonserver dies; return an exit code.
    With ``grpc_tls`` (certificate and key files), the gRPC endpoint speaks TLS.

    ``log_verbose`` 1 logs each request tritonserver receives (``HTTP request: ...``): what a test counts.

    With ``TRITON_INFERENCE_TOKEN`` set, inference requests need the header ``triton-access-token`` with
    that value (Triton's restricted API), so a test can see that a client sent it."""
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
    from pytriton.utils.workspace import Workspace

    prefer_interpreter_libpython()
    load_instances_in_turn()
    # Handlers (not SIG_IGN) so children started via exec get default dispositions back.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    exit_with_launcher()

    config = TritonConfig(
        http_address=http_address,
        http_port=http_port,
        grpc_address=HOST,
        grpc_port=grpc_port,
        metrics_address=HOST,
        metrics_port=metrics_port,
        allow_gpu_metrics=False,
        strict_readiness=True,
        # Shutdown grace (default 30 s), mostly spent waiting for idle keep-alive clients. Models are
        # unloaded (draining in-flight requests) before tritonserver is stopped; see _unload_models.
        exit_timeout_secs=1,
        log_verbose=log_verbose,
        grpc_use_ssl=grpc_tls is not None or None,
        grpc_server_cert=grpc_tls[0] if grpc_tls else None,
        grpc_server_key=grpc_tls[1] if grpc_tls else None,
    )
    # Keep the statistics endpoint open (it is useful to a load test); everything binds to loopback only.
    restricted = ["shared-memory", "model-repository", "trace", "logging"]
    inference_token = os.environ.pop(INFERENCE_TOKEN_ENV, None)  # not inherited by the model proxies
    if inference_token:
        restricted.append("inference")
    security = TritonSecurityConfig(access_token=inference_token or None, restricted_endpoints=restricted)
    tmp_root = Path(tempfile.mkdtemp(prefix="pytriton-"))
    started = time.monotonic()
    interrupted = False
    envs_before = python_envs()
    claimed = False
    triton = None
    try:
        # PyTriton's Workspace creates the folder itself: give it a path that does not exist yet. Keep it
        # short: it holds the proxies' unix sockets (108-byte path limit). Ours, for its model store.
        workspace = Workspace(tmp_root / "ws")
        triton = Triton(config=config, workspace=workspace, security_config=security)
        for name in models:
            if name not in ENSEMBLES:
                _bind_model(triton, name, threads)
        LOG.info(
            "starting tritonserver: http=%s:%d grpc=%d metrics=%d models=%s",
            http_address,
            http_port,
            grpc_port,
            metrics_port,
            ",".join(models),
        )
        triton.run()
        for name in models:
            if name in ENSEMBLES:
                token = triton.get_access_token()
                load_ensemble(workspace.model_store_path, ENSEMBLES[name], http_port, token, http_address)
        claimed = claim_python_env(envs_before, os.getpid())
        LOG.info("Triton ready after %.1f s", time.monotonic() - started)
        while triton.is_alive():
            time.sleep(0.5)
        LOG.error("tritonserver or a model proxy exited unexpectedly")
    except KeyboardInterrupt:
        interrupted = True
        # Ignore repeated signals so a second Ctrl-C / SIGTERM cannot abort the cleanup below.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        LOG.info("shutting down Triton")
        if triton is not None and triton.is_alive():
            # ensembles first: a composing model goes once nothing loaded names it
            _unload_models(http_port, models[::-1], triton.get_access_token(), http_address=http_address)
    finally:
        if triton is not None:
            if not claimed:  # start-up failed or was interrupted after some models loaded
                claim_python_env(envs_before, os.getpid())
            triton.stop()
        # What tritonserver did not remove (a model still unloading at exit, a failed start, ...).
        remove_triton_leftovers(tmp_root, os.getpid())
        shutil.rmtree(tmp_root, ignore_errors=True)
    return 0 if interrupted else 1


def deploy(models: list[str], *, max_batch_size: int | None, max_queue_delay_us: int | None) -> None:
    """A deployment of the caller's (the same batching as another server's, say) for the models that compute
    (:data:`SETTINGS`); the echo, generative and ensemble models are fixtures with a fixed configuration."""
    for name in set(models) & set(SETTINGS):
        if max_batch_size is not None:
            SETTINGS[name] = dataclasses.replace(SETTINGS[name], max_batch_size=max_batch_size)
        if max_queue_delay_us is not None:
            SETTINGS[name] = dataclasses.replace(SETTINGS[name], max_queue_delay_us=max_queue_delay_us)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve test models with Triton (PyTriton) on 127.0.0.1.")
    parser.add_argument("--http-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--grpc-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--metrics-port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--models",
        default=",".join(available_models()),
        help="comma-separated subset of: " + ",".join(available_models()),
    )
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="every computing model's (resnet50_onnx, tiny_onnx, checksum, sleep_20ms...; default: its own)",
    )
    parser.add_argument(
        "--max-queue-delay-us", type=int, default=None, help="dynamic batcher's delay for every model (default: own)"
    )
    parser.add_argument(
        "--http-address",
        default=HOST,
        help=f"address of the HTTP endpoint (default {HOST}; gRPC and metrics stay on {HOST})",
    )
    generator.add_arguments(parser)
    parser.add_argument("--grpc-tls-cert", type=Path, default=None, help="PEM certificate: gRPC over TLS")
    parser.add_argument("--grpc-tls-key", type=Path, default=None, help="its PEM key (with --grpc-tls-cert)")
    parser.add_argument(
        "--log-verbose", type=int, choices=(0, 1), default=0, help="1: tritonserver logs each request it receives"
    )
    args = parser.parse_args(argv)
    if (args.grpc_tls_cert is None) != (args.grpc_tls_key is None):
        parser.error("--grpc-tls-cert and --grpc-tls-key go together")
    global GENERATOR  # noqa: PLW0603 - read by _bind_model, once, before serving
    try:
        GENERATOR = generator.from_arguments(args)
    except ValueError as exc:
        parser.error(str(exc))

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(available_models()))
    if unknown:
        parser.error(f"unknown or unavailable models: {','.join(unknown)}")
    models = with_composing(models)
    deploy(models, max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    given = {args.http_port, args.grpc_port, args.metrics_port}
    spare = iter(p for p in free_ports(4) if p not in given)
    ports = [p if p else next(spare) for p in (args.http_port, args.grpc_port, args.metrics_port)]
    grpc_tls = (args.grpc_tls_cert, args.grpc_tls_key) if args.grpc_tls_cert else None
    sys.exit(
        serve(
            models,
            *ports,
            threads=args.threads,
            http_address=args.http_address,
            grpc_tls=grpc_tls,
            log_verbose=args.log_verbose,
        )
    )


if __name__ == "__main__":
    main()
