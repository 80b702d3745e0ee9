"""Options that say what each request carries: how images become the model's tensor (``--preprocess``
and its overrides), how an image set is walked (``--shuffle-inputs``, ``--max-input-memory``), and
perf_analyzer-style generated or file data (``--input-data``, ``--shape``). Resolved into
:class:`InputSettings`; what the model itself says is applied later, in :mod:`image_inputs`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust_inference import defaults
from locust_inference._native import ConfigError

__all__ = ["DTYPES", "LAYOUTS", "PRESETS", "InputSettings", "add_arguments", "resolve"]

PRESETS = defaults.PRESETS
LAYOUTS = defaults.LAYOUTS
DTYPES = defaults.DTYPES
DEFAULT_MAX_INPUT_MEMORY = defaults.MAX_INPUT_MEMORY
MIN_INPUT_MEMORY = 1024**2
MAX_INPUT_MEMORY = 1024**4
MAX_SIDE = 16_384  # pixels of --resize and --crop: a larger side is no image model's input
MAX_DIMENSION = 2**31 - 1  # of --shape; what it multiplies to is bounded by --max-input-memory
MAX_RANK = 16
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_UNITS |= {"ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


@dataclass(frozen=True)
class InputSettings:
    """What the user asked for; ``None`` means: follow the model."""

    preprocess: str | None = None
    resize: int | None = None
    crop: tuple[int, int] | None = None  # (width, height)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    layout: str | None = None
    dtype: str | None = None
    shuffle: bool = False
    max_memory: int = DEFAULT_MAX_INPUT_MEMORY
    input_data: str | None = None  # "random", "zero" or a JSON file
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("locust-inference inputs")
    group.add_argument(
        "--preprocess",
        env_var="LOCUST_PREPROCESS",
        default=None,
        help="How images become the tensor: imagenet (resize 256, crop 224, ImageNet mean/std; the default for "
        "float inputs), letterbox (keep aspect, pad to the input's size with 114 grey, /255), resize (to the "
        "input's size, /255) or none (resized to the input's size, pixels 0-255; the default for UINT8/INT8)",
    )
    group.add_argument("--resize", env_var="LOCUST_RESIZE", default=None, help="imagenet: short side before the crop")
    group.add_argument(
        "--crop", env_var="LOCUST_CROP", default=None, help="Side (N or WxH) sent when the model's is dynamic"
    )
    group.add_argument("--mean", env_var="LOCUST_MEAN", default=None, help="Per-channel mean R,G,B (of pixel/scale)")
    group.add_argument("--std", env_var="LOCUST_STD", default=None, help="Per-channel std R,G,B")
    group.add_argument(
        "--layout", env_var="LOCUST_LAYOUT", default=None, help=f"{_either(LAYOUTS)} (default: from the shape)"
    )
    group.add_argument(
        "--dtype", env_var="LOCUST_DTYPE", default=None, help=f"{_either(DTYPES)} (default: the model's)"
    )
    group.add_argument(
        "--shuffle-inputs",
        env_var="LOCUST_SHUFFLE_INPUTS",
        action="store_true",
        default=False,
        help="Each user walks the image set (or input data) in its own shuffled order (with --seed: reproducible)",
    )
    group.add_argument(
        "--max-input-memory",
        env_var="LOCUST_MAX_INPUT_MEMORY",
        default=None,
        help="Refuse to prepare inputs needing more memory than this (e.g. 512MiB; default "
        f"{DEFAULT_MAX_INPUT_MEMORY // 1024**3}GiB)",
    )
    group.add_argument(
        "--input-data",
        env_var="LOCUST_INPUT_DATA",
        default=None,
        help="Instead of images: random, zero, or a perf_analyzer JSON input file (several inputs, entries rotated)",
    )
    group.add_argument(
        "--shape",
        env_var="LOCUST_SHAPE",
        action="append",
        default=None,
        help="NAME:d1,d2,... the shape (without the batch) of an input with a -1 dimension (repeatable)",
    )


def _either(choices: tuple[str, ...]) -> str:
    """``a, b or c``"""
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


# No argparse choices= for these: None means "follow the model", and Locust's web UI shows an option with
# choices as a list that starts on the first choice, as if it had been given.
def _choice(options: Any, name: str, choices: tuple[str, ...]) -> str | None:
    value = getattr(options, name, None)
    if value is None or value == "":
        return None
    value = str(value).strip().lower()
    if value not in choices:
        raise ConfigError(f"--{name.replace('_', '-')} must be {_either(choices)}, not {value!r}")
    return value


def _positive(text: str, option: str) -> int:
    if not re.fullmatch(r"\s*[0-9]{1,9}\s*", text) or not 1 <= int(text) <= MAX_SIDE:
        raise ConfigError(f"--{option} must be a whole number of pixels from 1 to {MAX_SIDE}, not {_shown(text)}")
    return int(text)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _crop(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    width, sep, height = str(text).lower().partition("x")
    w = _positive(width, "crop")
    return (w, _positive(height, "crop") if sep else w)


def _triple(text: str | None, option: str) -> tuple[float, float, float] | None:
    if not text:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--{option} must be three numbers R,G,B, not {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(abs(v) < float("inf") for v in values):
        raise ConfigError(f"--{option} must be three finite numbers R,G,B, not {text!r}")
    if option == "std" and 0.0 in values:
        raise ConfigError(f"--std must not be zero, got {text!r}")
    return values


def _memory(text: str | None) -> int:
    if not text:
        return DEFAULT_MAX_INPUT_MEMORY
    match = re.fullmatch(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*([kmgt]i?)?b?\s*", str(text).lower())
    size = int(float(match.group(1)) * _UNITS[match.group(2) or ""]) if match else 0
    if not MIN_INPUT_MEMORY <= size <= MAX_INPUT_MEMORY:
        raise ConfigError(
            f"--max-input-memory must be a size from 1MiB to 1TiB such as 512MiB or 2GiB, not {_shown(text)}"
        )
    return size


def _shapes(values: list[str] | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
    shapes = []
    for value in values or []:
        name, sep, dims = str(value).rpartition(":")
        parts = dims.split(",")
        parsed = tuple(int(d) for d in parts) if all(re.fullmatch(r"\s*[0-9]{1,10}\s*", d) for d in parts) else ()
        if not sep or not name or not parsed or max(parsed) > MAX_DIMENSION or len(parsed) > MAX_RANK:
            raise ConfigError(
                f"--shape {_shown(value)} is not of the form NAME:d1,d2,... with up to {MAX_RANK} whole "
                f"dimensions from 0 to {MAX_DIMENSION}"
            )
        shapes.append((name, parsed))
    return tuple(shapes)


def resolve(options: Any) -> InputSettings:
    """Validates the input options on their own (the model's metadata is checked against them later)."""
    input_data = getattr(options, "input_data", None) or None
    if input_data is not None and input_data not in ("random", "zero") and not Path(input_data).is_file():
        raise ConfigError(f"--input-data must be random, zero or a JSON file; {input_data} does not exist")
    resize = getattr(options, "resize", None)
    return InputSettings(
        preprocess=_choice(options, "preprocess", PRESETS),
        resize=_positive(str(resize), "resize") if resize not in (None, "") else None,
        crop=_crop(getattr(options, "crop", None)),
        mean=_triple(getattr(options, "mean", None), "mean"),
        std=_triple(getattr(options, "std", None), "std"),
        layout=_choice(options, "layout", LAYOUTS),
        dtype=_choice(options, "dtype", DTYPES),
        shuffle=bool(getattr(options, "shuffle_inputs", False)),
        max_memory=_memory(getattr(options, "max_input_memory", None)),
        input_data=input_data,
        shapes=_shapes(getattr(options, "shape", None)),
    )
