"""Echo-checksum models for the input paths a user's own model needs: each answers, per batch item,
the sha256 of the exact bytes it received (all its inputs' raw little-endian bytes, in input order)
as 16 big-endian uint16 words in float32 (exact), so a test proves byte for byte what arrived.

* ``echo_uint8_nhwc`` -- ``IMAGE`` ``[N,224,224,3]`` UINT8 (a TensorRT-style NHWC engine)
* ``echo_fp16`` -- ``IMAGE`` ``[N,3,224,224]`` FP16
* ``echo_640`` -- ``images`` ``[N,3,640,640]`` FP32 (a YOLO-style input)
* ``echo_two_inputs`` -- ``INPUT_A`` ``[N,4]`` FP32 and ``INPUT_B`` ``[N,-1]`` INT32 (a variable length)
* ``echo_untouched`` -- as ``echo_uint8_nhwc``, for tests that prove nothing was sent: no other test
  addresses it, so no request another test abandoned can reach it late and move its count
* ``echo_counted`` -- as ``echo_uint8_nhwc``, for the tests that compare its count of requests with what
  was reported (no other test addresses it)

All output ``CHECKSUM`` ``[N,16]`` FP32. Plain numpy: cheap to load.

And a real Triton ensemble (``platform: "ensemble"``), for the per-composing-model statistics:

* ``ensemble_checksum`` -- ``IMAGE`` ``[N,224,224,3]`` UINT8 in, ``CHECKSUM`` ``[N,1000]`` FP32 out, in two
  steps: ``ensemble_prep`` turns the image into ``[N,3,224,224]`` FP32 (HWC to CHW, each byte's value as a
  float: exact), and ``ensemble_hash`` answers the ``checksum`` model's words of that tensor
  (:func:`servers.models.checksum_words`). Its composing models are its own, addressed by no other test,
  so their counts over a run are the ensemble's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["ECHO_MODELS", "ENSEMBLES", "OUTPUT", "EchoModel", "Ensemble", "checksum_words", "echo_batch", "prep_batch"]

OUTPUT = "CHECKSUM"
WORDS = 16


@dataclass(frozen=True)
class EchoModel:
    name: str
    inputs: tuple[tuple[str, type, tuple[int, ...]], ...]  # name, numpy dtype, shape without the batch
    max_batch_size: int = 16


ECHO_MODELS: dict[str, EchoModel] = {
    m.name: m
    for m in (
        EchoModel("echo_uint8_nhwc", (("IMAGE", np.uint8, (224, 224, 3)),)),
        EchoModel("echo_fp16", (("IMAGE", np.float16, (3, 224, 224)),)),
        EchoModel("echo_640", (("images", np.float32, (3, 640, 640)),), max_batch_size=4),
        EchoModel("echo_two_inputs", (("INPUT_A", np.float32, (4,)), ("INPUT_B", np.int32, (-1,)))),
        EchoModel("echo_untouched", (("IMAGE", np.uint8, (224, 224, 3)),)),
        EchoModel("echo_counted", (("IMAGE", np.uint8, (224, 224, 3)),)),
    )
}


def checksum_words(data: bytes) -> list[int]:
    """The 16 big-endian uint16 words of ``sha256(data)``."""
    return [int(w) for w in np.frombuffer(hashlib.sha256(data).digest(), dtype=">u2")]


def echo_batch(model: EchoModel, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """``[N,16]`` float32: item i's checksum over its inputs' bytes, in the model's input order."""
    arrays = [np.ascontiguousarray(inputs[name]) for name, _, _ in model.inputs]
    out = np.zeros((arrays[0].shape[0], WORDS), dtype=np.float32)
    for i in range(out.shape[0]):
        out[i] = checksum_words(b"".join(a[i].astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays))
    return out


@dataclass(frozen=True)
class Ensemble:
    """An ensemble of two composing models chained by one tensor: ``first``'s output ``link`` is ``second``'s
    input of the same name; the ensemble's input is ``first``'s, its output ``second``'s."""

    name: str
    first: str
    second: str
    input: tuple[str, type, tuple[int, ...]]  # name, numpy dtype, shape without the batch
    link: tuple[str, type, tuple[int, ...]]
    output: tuple[str, type, tuple[int, ...]]
    max_batch_size: int = 16

    @property
    def composing(self) -> tuple[str, str]:
        return (self.first, self.second)


ENSEMBLES: dict[str, Ensemble] = {
    e.name: e
    for e in (
        Ensemble(
            "ensemble_checksum",
            first="ensemble_prep",
            second="ensemble_hash",
            input=("IMAGE", np.uint8, (224, 224, 3)),
            link=("INPUT", np.float32, (3, 224, 224)),
            output=(OUTPUT, np.float32, (1000,)),
        ),
    )
}


def prep_batch(batch: np.ndarray) -> np.ndarray:
    """``[N,224,224,3]`` UINT8 -> ``[N,3,224,224]`` FP32, each byte's value (exact)."""
    return np.ascontiguousarray(np.asarray(batch).transpose(0, 3, 1, 2), dtype=np.float32)
