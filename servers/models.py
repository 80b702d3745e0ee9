"""Models served by the test servers, built locally (no downloads) and run on CPU.

* ``resnet50_onnx`` -- a standard ResNet-50 graph (bottlenecks [3, 4, 6, 3], BatchNorm folded into the
  convolutions' biases) built with ``onnx.helper`` with fixed-seed He-initialised random weights.
  Input ``x`` ``[N,3,224,224]`` FP32, output ``x.45`` ``[N,1000]`` FP32 (names as in a torch export).
* ``tiny_onnx`` -- GlobalAveragePool -> Flatten -> Gemm(1000); ``input__0`` -> ``output__0``.
* ``checksum`` -- plain numpy: ``INPUT`` -> ``CHECKSUM``; ``CHECKSUM[i, :16]`` holds the 16 big-endian
  uint16 words of ``sha256(INPUT[i].astype('<f4').tobytes())`` as float32 (exact), the rest is zero.
  It lets tests prove that the exact tensor bytes arrived at the server.
* ``sleep_20ms`` -- ``input__0`` -> ``output__0`` zeros, sleeping 20 ms per *batch*.

The serialized ONNX files are cached under ``$XDG_CACHE_HOME/locust-inference/models`` keyed by a
content version, so the ~100 MB ResNet-50 is generated only once.

``python -m servers.models [--threads 2] [--batch 1]`` builds the cache and reports resnet50 ms/image.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT_SHAPE: tuple[int, int, int] = (3, 224, 224)
OUTPUT_SHAPE: tuple[int] = (1000,)
NUM_CLASSES = 1000
CHECKSUM_WORDS = 16
SLEEP_SECONDS = 0.020
DEFAULT_THREADS = 2
SEED = 20240601
OPSET = 17
IR_VERSION = 8

# Bump a version whenever the corresponding builder changes: it is part of the cache file name.
GRAPH_VERSIONS: dict[str, str] = {"resnet50": "1", "tiny": "1"}

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ModelSpec:
    """A served model: its public name, tensor names and (for ONNX models) which graph it runs."""

    name: str
    input_name: str
    output_name: str
    graph: str | None  # key of GRAPH_VERSIONS, or None for numpy models
    description: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("resnet50_onnx", "x", "x.45", "resnet50", "ResNet-50, fixed-seed random weights (ORT)"),
        ModelSpec("tiny_onnx", "input__0", "output__0", "tiny", "GlobalAveragePool->Flatten->Gemm (ORT)"),
        ModelSpec("checksum", "INPUT", "CHECKSUM", None, "sha256 of each item's float32 bytes as 16 words"),
        ModelSpec("sleep_20ms", "input__0", "output__0", None, "sleeps 20 ms per batch, returns zeros"),
    )
}


# --------------------------------------------------------------------------------------------------------
# checksum / sleep models (plain numpy)
# --------------------------------------------------------------------------------------------------------
def checksum_words(array: np.ndarray) -> list[int]:
    """The 16 big-endian uint16 words of sha256 over ``array`` as little-endian float32 bytes (C order).

    Call it with one batch item ``[3,224,224]`` (a batch of one ``[1,3,224,224]`` has the same bytes).
    """
    data = np.asarray(array).astype("<f4", copy=False).tobytes()
    digest = hashlib.sha256(data).digest()
    return [int(w) for w in np.frombuffer(digest, dtype=">u2")]


def checksum_batch(batch: np.ndarray) -> np.ndarray:
    """``[N,...]`` -> ``[N,1000]`` float32 with the checksum words of each item in columns 0..15."""
    batch = np.asarray(batch)
    out = np.zeros((batch.shape[0], NUM_CLASSES), dtype=np.float32)
    for i in range(batch.shape[0]):
        out[i, :CHECKSUM_WORDS] = checksum_words(batch[i])
    return out


def sleep_batch(batch: np.ndarray) -> np.ndarray:
    """Sleep 20 ms once for the whole batch and return zeros ``[N,1000]``."""
    time.sleep(SLEEP_SECONDS)
    return np.zeros((np.asarray(batch).shape[0], NUM_CLASSES), dtype=np.float32)


# --------------------------------------------------------------------------------------------------------
# ONNX graph builders
# --------------------------------------------------------------------------------------------------------
class _GraphBuilder:
    """Accumulates nodes and fixed-seed initializers for a small ``onnx.helper`` graph."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def fresh(self, prefix: str = "t") -> str:
        self._count += 1
        return f"{prefix}.{self._count}"

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: object) -> str:
        from onnx import helper

        output = output or self.fresh()
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{self._count}", **attrs))
        return output

    def conv(self, x: str, cin: int, cout: int, *, k: int, stride: int = 1, gain: float = 1.0) -> str:
        """Conv with BatchNorm folded into weight/bias; He-normal weights scaled by ``gain``."""
        std = gain * math.sqrt(2.0 / (cin * k * k))
        weight = self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(std)
        bias = self.rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01)
        prefix = self.fresh("conv")
        w = self.const(f"{prefix}.weight", weight)
        b = self.const(f"{prefix}.bias", bias)
        pad = k // 2
        return self.node("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def gemm(self, x: str, cin: int, cout: int, output: str) -> str:
        weight = self.rng.standard_normal((cout, cin), dtype=np.float32) * np.float32(math.sqrt(1.0 / cin))
        prefix = self.fresh("fc")
        w = self.const(f"{prefix}.weight", weight)
        b = self.const(f"{prefix}.bias", np.zeros(cout, dtype=np.float32))
        return self.node("Gemm", [x, w, b], output=output, transB=1)

    def model(self, name: str, input_name: str, output_name: str):  # -> onnx.ModelProto
        import onnx
        from onnx import TensorProto, helper

        inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *INPUT_SHAPE])
        out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", NUM_CLASSES])
        graph = helper.make_graph(self.nodes, name, [inp], [out], initializer=self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="locust-inference"
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def build_resnet50(seed: int = SEED):  # -> onnx.ModelProto
    """Standard ResNet-50 (v1.5: stride on the 3x3 conv) with BN folded and fixed-seed weights.

    The last conv of each residual branch is scaled down (gain 0.2) so activations stay finite and of
    moderate size through the 16 residual additions.
    """
    g = _GraphBuilder(seed)
    x = g.relu(g.conv("x", 3, 64, k=7, stride=2))
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            cout = planes * 4
            y = g.relu(g.conv(x, cin, planes, k=1))
            y = g.relu(g.conv(y, planes, planes, k=3, stride=s))
            y = g.conv(y, planes, cout, k=1, gain=0.2)
            shortcut = g.conv(x, cin, cout, k=1, stride=s, gain=0.5) if i == 0 else x
            x = g.relu(g.node("Add", [y, shortcut]))
            cin = cout
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    g.gemm(x, 2048, NUM_CLASSES, output="x.45")
    return g.model("resnet50", "x", "x.45")


def build_tiny(seed: int = SEED):  # -> onnx.ModelProto
    """GlobalAveragePool -> Flatten -> Gemm to 1000 classes."""
    g = _GraphBuilder(seed)
    x = g.node("GlobalAveragePool", ["input__0"])
    x = g.node("Flatten", [x], axis=1)
    g.gemm(x, INPUT_SHAPE[0], NUM_CLASSES, output="output__0")
    return g.model("tiny", "input__0", "output__0")


_BUILDERS = {"resnet50": build_resnet50, "tiny": build_tiny}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/locust-inference/models`` (default ``~/.cache/locust-inference/models``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "locust-inference" / "models"


def onnx_path(graph: str) -> Path:
    """Path of the cached ``.onnx`` file for ``graph`` (``resnet50``/``tiny``), building it if missing."""
    path = cache_dir() / f"{graph}-v{GRAPH_VERSIONS[graph]}-seed{SEED}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        data = _BUILDERS[graph]().SerializeToString()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: concurrent builders (two servers) never see a partial file
        elapsed = time.monotonic() - started
        print(f"built {path} ({len(data) / 1e6:.1f} MB) in {elapsed:.1f} s", file=sys.stderr)
    return path


# --------------------------------------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------------------------------------
def make_session(path: str | Path, threads: int = DEFAULT_THREADS):  # -> onnxruntime.InferenceSession
    """CPU session with ``threads`` intra-op threads, 1 inter-op thread and no spin-waiting.

    Spinning worker threads would burn the cores the load generator needs on a small machine.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def load_predictor(name: str, threads: int = DEFAULT_THREADS) -> Predictor:
    """A callable ``[N,3,224,224] float32 -> [N,1000] float32`` for the model called ``name``."""
    spec = MODELS[name]
    if name == "checksum":
        return checksum_batch
    if name == "sleep_20ms":
        return sleep_batch
    assert spec.graph is not None
    session = make_session(onnx_path(spec.graph), threads)

    def predict(batch: np.ndarray) -> np.ndarray:
        feed = {spec.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return session.run([spec.output_name], feed)[0]

    return predict


def benchmark(
    name: str = "resnet50_onnx", threads: int = DEFAULT_THREADS, batch: int = 1, iterations: int = 20
) -> float:
    """Median milliseconds per image of ``name`` at batch size ``batch`` (after 3 warm-up runs)."""
    predict = load_predictor(name, threads)
    x = np.random.default_rng(0).standard_normal((batch, *INPUT_SHAPE), dtype=np.float32)
    for _ in range(3):
        predict(x)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000.0 / batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50_onnx", choices=sorted(MODELS))
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)
    for graph in GRAPH_VERSIONS:
        print(f"{graph}: {onnx_path(graph)}")
    ms = benchmark(args.model, args.threads, args.batch, args.iterations)
    print(f"{args.model}: {ms:.1f} ms/image (batch {args.batch}, {args.threads} intra-op threads)")


if __name__ == "__main__":
    main()
