"""A small real language model for the generative demo: a GPT-style decoder (pre-norm, multi-head attention
with a KV cache, ReLU MLP, tied embeddings) built with ``onnx.helper`` from fixed-seed random weights and run
by ONNX Runtime on CPU. Nothing is downloaded; the graph is built in memory at start (well under a second).

Tokens are characters: the printable ASCII set, so any prompt maps to tokens (other characters become
``?``) and any output is text. With random weights the text is gibberish, but the work is real: a prefill
over the prompt, then one decoder step per token through every layer, the cache growing as it goes, which
is what a load test of a language model server meets. Tokens are sampled (temperature 1) with a generator
seeded by the prompt: the same prompt gives the same text (greedy decoding of random weights repeats one
character).

    model = TinyGpt(threads=1)
    for text in model.steps("Hello", max_tokens=16): ...
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np

SEED = 20261205
VOCAB = string.printable[:95]  # digits, letters, punctuation, space
UNKNOWN = VOCAB.index("?")
MAX_POSITIONS = 1024  # prompt + output; longer prompts keep their last tokens


@dataclass(frozen=True)
class Shape:
    layers: int = 6
    width: int = 512
    heads: int = 8
    hidden: int = 2048

    @property
    def head_width(self) -> int:
        return self.width // self.heads


def build(shape: Shape = Shape(), seed: int = SEED):  # -> onnx.ModelProto
    """The decoder graph. Inputs: ``ids`` and ``positions`` ``[1,T]`` int64, ``mask`` ``[1,1,T,P+T]`` float
    (0 or -1e9: causal, built by the caller), and each layer's ``past_k_i``/``past_v_i`` ``[1,H,P,Dh]``.
    Outputs: ``logits`` ``[1,T,V]`` and ``present_k_i``/``present_v_i`` ``[1,H,P+T,Dh]``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    counter = iter(range(1_000_000))

    def weight(name: str, *dims: int, scale: float | None = None) -> str:
        std = scale if scale is not None else 1 / np.sqrt(dims[0])
        inits.append(numpy_helper.from_array((rng.standard_normal(dims) * std).astype(np.float32), name))
        return name

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def op(kind: str, *inputs: str, **attrs: object) -> str:
        out = f"{kind.lower()}_{next(counter)}"
        nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    d, h, dh, v = shape.width, shape.heads, shape.head_width, len(VOCAB)
    embed = weight("embed", v, d, scale=0.5)
    const("embed_t", np.ascontiguousarray(numpy_helper.to_array(inits[-1]).T))
    pos = weight("pos_embed", MAX_POSITIONS, d, scale=0.1)
    ones, zeros = const("ones", np.ones(d, np.float32)), const("zeros", np.zeros(d, np.float32))
    split_heads = const("split_heads", np.array([1, -1, h, dh], np.int64))
    merge_heads = const("merge_heads", np.array([1, -1, d], np.int64))
    scale = const("scale", np.array(1 / np.sqrt(dh), np.float32))

    def norm(x: str) -> str:
        return op("LayerNormalization", x, ones, zeros, axis=-1, epsilon=1e-5)

    def heads(x: str) -> str:
        return op("Transpose", op("Reshape", x, split_heads), perm=[0, 2, 1, 3])

    x = op("Add", op("Gather", embed, "ids"), op("Gather", pos, "positions"))
    graph_inputs = [
        helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "T"]),
        helper.make_tensor_value_info("positions", TensorProto.INT64, [1, "T"]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, "T", "S"]),
    ]
    graph_outputs = []
    for layer in range(shape.layers):
        a = norm(x)
        q = heads(op("MatMul", a, weight(f"wq{layer}", d, d)))
        k_new = heads(op("MatMul", a, weight(f"wk{layer}", d, d)))
        v_new = heads(op("MatMul", a, weight(f"wv{layer}", d, d)))
        k = op("Concat", f"past_k_{layer}", k_new, axis=2)
        val = op("Concat", f"past_v_{layer}", v_new, axis=2)
        nodes.append(helper.make_node("Identity", [k], [f"present_k_{layer}"]))
        nodes.append(helper.make_node("Identity", [val], [f"present_v_{layer}"]))
        scores = op("Add", op("Mul", op("MatMul", q, op("Transpose", k, perm=[0, 1, 3, 2])), scale), "mask")
        attended = op("MatMul", op("Softmax", scores, axis=-1), val)
        merged = op("Reshape", op("Transpose", attended, perm=[0, 2, 1, 3]), merge_heads)
        x = op("Add", x, op("MatMul", merged, weight(f"wo{layer}", d, d)))
        hidden = op("Relu", op("MatMul", norm(x), weight(f"w1_{layer}", d, shape.hidden)))
        x = op("Add", x, op("MatMul", hidden, weight(f"w2_{layer}", shape.hidden, d)))
        for kind in ("k", "v"):
            past_info = helper.make_tensor_value_info(f"past_{kind}_{layer}", TensorProto.FLOAT, [1, h, "P", dh])
            graph_inputs.append(past_info)
            graph_outputs.append(
                helper.make_tensor_value_info(f"present_{kind}_{layer}", TensorProto.FLOAT, [1, h, "S", dh])
            )
    nodes.append(helper.make_node("MatMul", [norm(x), "embed_t"], ["logits"]))
    graph_outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "T", v]))
    graph = helper.make_graph(nodes, "tiny_gpt", graph_inputs, graph_outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def encode(text: str) -> list[int]:
    """The prompt's tokens: characters (unknown ones: ``?``), the last half of the context at most; never
    empty (an empty prompt is one space)."""
    ids = [VOCAB.index(c) if c in VOCAB else UNKNOWN for c in text] or [VOCAB.index(" ")]
    return ids[-(MAX_POSITIONS // 2) :]


def output_length(prompt: str, max_tokens: int) -> int:
    """How many tokens :meth:`TinyGpt.steps` yields: ``max_tokens``, or what fits the context."""
    return max(0, min(max_tokens, MAX_POSITIONS - len(encode(prompt))))


class TinyGpt:
    """The model in an ONNX Runtime session; :meth:`steps` decodes with a KV cache. A session
    may run from several threads at once, each generation keeping its own cache."""

    def __init__(self, threads: int = 1, shape: Shape = Shape()) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.shape = shape
        self.session = ort.InferenceSession(
            build(shape).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def _run(
        self, ids: list[int], start: int, past: list[np.ndarray], rng: np.random.Generator
    ) -> tuple[int, list[np.ndarray]]:
        t, p = len(ids), start
        causal = np.triu(np.full((t, p + t), -1e9, np.float32), k=p + 1)[np.newaxis, np.newaxis]
        feed: dict[str, np.ndarray] = {
            "ids": np.array([ids], np.int64),
            "positions": np.arange(p, p + t, dtype=np.int64)[np.newaxis],
            "mask": causal,
        }
        for layer in range(self.shape.layers):
            feed[f"past_k_{layer}"], feed[f"past_v_{layer}"] = past[2 * layer], past[2 * layer + 1]
        logits, *present = self.session.run(None, feed)
        last = logits[0, -1].astype(np.float64)
        last = (last - last.max()) / (last.std() + 1e-9)  # the tied embedding favours the last token: flatten
        weights = np.exp(last)
        return int(rng.choice(len(VOCAB), p=weights / weights.sum())), present

    def steps(self, prompt: str, max_tokens: int) -> Iterator[str]:
        """Each output token's text, computed when asked for (a prefill over the prompt first): a caller
        running each ``next()`` in a worker thread keeps its event loop free."""
        ids = encode(prompt)
        rng = np.random.default_rng(ids)
        s = self.shape
        past = [np.zeros((1, s.heads, 0, s.head_width), np.float32) for _ in range(2 * s.layers)]
        token, past = self._run(ids, 0, past, rng)
        position = len(ids)
        for index in range(min(max_tokens, MAX_POSITIONS - position)):
            yield VOCAB[token]
            if index + 1 < max_tokens and position < MAX_POSITIONS - 1:
                token, past = self._run([token], position, past, rng)
                position += 1


async def stream(model: TinyGpt, prompt: str, max_tokens: int) -> AsyncIterator[str]:
    """:meth:`TinyGpt.steps` for an event loop: each step runs in a worker thread, so concurrent requests
    share the loop (and the cores) instead of waiting for each other's whole answer."""
    steps = model.steps(prompt, max_tokens)
    while (text := await asyncio.to_thread(next, steps, None)) is not None:
        yield text
