"""Turns :class:`~locust_inference.options.Settings` into a ready :class:`Target`, one backend per kind of
server (:mod:`.triton`, :mod:`.litserve`, and :mod:`.generative` for prompts), each in one pass: the
inputs planned from the model's metadata and the options, their memory checked once, every body encoded
once, the endpoint made. The server is checked to be reachable, so a bad configuration fails once, at
start, with one clear message.
"""

from __future__ import annotations

from locust_inference import image_inputs
from locust_inference._native import ConfigError
from locust_inference.backends import generative, litserve, triton
from locust_inference.backends.common import IO_THREADS_ENV, ZERO_COPY_ENV, Target, check_io_threads
from locust_inference.options import Settings

__all__ = ["IO_THREADS_ENV", "ZERO_COPY_ENV", "Target", "prepare"]


def prepare(settings: Settings) -> Target:
    """Prepares the target, or raises :class:`ConfigError` saying what is wrong."""
    check_io_threads()  # before anything starts the I/O runtime
    if settings.generative.generative:  # prompts, not tensors: no model metadata, no images
        return generative.prepare(settings)
    if settings.inputs.input_data is not None:
        if settings.server != "triton":
            raise ConfigError("--input-data applies to Triton models; LitServe is sent images (--image)")
        return triton.prepare(settings, None)
    files = image_inputs.image_files(settings.image)  # a missing image is said before any server is asked
    if settings.server == "triton":
        return triton.prepare(settings, files)
    return litserve.prepare(settings, files)
