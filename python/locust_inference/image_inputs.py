"""Images as the model takes them: the input's shape and datatype (Triton's metadata) decide the
tensor's size, layout and datatype, ``--preprocess`` and its overrides decide the pixels' journey,
and every image of ``--image`` (a file, a directory or a glob) is preprocessed once, in parallel in
Rust, after a memory estimate is checked against ``--max-input-memory`` (see :mod:`input_memory`).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust_inference._native import ConfigError, ImageError, preprocess_images
from locust_inference.input_options import InputSettings

__all__ = ["IMAGE_SUFFIXES", "ImagePlan", "image_files", "plan", "preprocess"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
DATATYPES = {"fp32": "FP32", "fp16": "FP16", "uint8": "UINT8", "int8": "INT8"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LETTERBOX_GREY = 114
OTHER_INPUTS = "for inputs that are not images use --input-data random|zero|FILE.json"


@dataclass(frozen=True)
class ImagePlan:
    """How every image becomes one batch item of the input."""

    input_name: str
    datatype: str  # KServe name: FP32, FP16, UINT8, INT8
    item_shape: tuple[int, ...]  # one image, without the batch dimension
    layout: str
    fit: str  # shortside, stretch or letterbox (see preprocess_images)
    width: int
    height: int
    resize: int
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def item_bytes(self) -> int:
        size = {"FP32": 4, "FP16": 2, "UINT8": 1, "INT8": 1}[self.datatype]
        return self.width * self.height * 3 * size


def _fail(name: str, shape: list[int], what: str) -> ConfigError:
    return ConfigError(f"input {name!r} has shape {shape}: {what}")


def _layout(name: str, shape: list[int], dims: list[int], chosen: str | None) -> str:
    if chosen is not None:
        channels = dims[0] if chosen == "nchw" else dims[2]
        if channels not in (3, -1):
            raise _fail(name, shape, f"--layout {chosen} puts {channels} channels where 3 are sent")
        return chosen
    if dims[0] == 3:
        return "nchw"
    if dims[2] == 3:
        return "nhwc"
    raise _fail(name, shape, "no dimension of 3 channels first or last; pass --layout nchw|nhwc")


def _size(name: str, shape: list[int], size: tuple[int, int], s: InputSettings, preset: str) -> tuple[int, int]:
    """The (width, height) sent, from the model's (``-1``: dynamic) and ``--crop``."""
    width, height = size
    if s.crop is not None:
        crop_w, crop_h = s.crop
        if width not in (-1, crop_w) or height not in (-1, crop_h):
            raise _fail(name, shape, f"--crop {crop_w}x{crop_h} does not match the model's {width}x{height}")
        return crop_w, crop_h
    if -1 in (width, height):
        if preset != "imagenet":
            raise _fail(name, shape, "its height or width is dynamic; pass --crop N (or WxH), the size sent")
        return (224 if width == -1 else width), (224 if height == -1 else height)
    return width, height


def plan(spec: dict[str, Any], s: InputSettings, batch_size: int) -> ImagePlan:
    """The image pipeline for the model input ``spec`` (name, datatype, shape), or a one-line error."""
    name, shape, model_type = spec["name"], list(spec["shape"]), spec["datatype"]
    datatype = DATATYPES[s.dtype] if s.dtype else model_type
    if datatype not in DATATYPES.values():
        raise ConfigError(
            f"input {name!r} is {model_type}: an image can be sent as FP32, FP16, UINT8 or INT8 "
            f"(--dtype); {OTHER_INPUTS}"
        )
    if len(shape) == 3 and 3 in (shape[0], shape[2]):
        raise ConfigError(f"input {name!r} has no batch dimension (shape {shape}); serve it with max_batch_size > 0")
    if len(shape) != 4:
        raise _fail(name, shape, f"an image input is [batch, 3, H, W] or [batch, H, W, 3]; {OTHER_INPUTS}")
    if shape[0] not in (-1, batch_size):
        raise _fail(name, shape, f"its batch is fixed at {shape[0]}; pass --batch-size {shape[0]}")
    dims = shape[1:]
    layout = _layout(name, shape, dims, s.layout)
    height, width = (dims[1], dims[2]) if layout == "nchw" else (dims[0], dims[1])
    preset = s.preprocess or ("none" if datatype in ("UINT8", "INT8") else "imagenet")
    width, height = _size(name, shape, (width, height), s, preset)
    if s.resize is not None and preset != "imagenet":
        raise ConfigError(f"--resize applies to --preprocess imagenet; {preset} resizes to the input's size")
    if preset == "imagenet":
        resize = s.resize or int(min(width, height) * 256 / 224)
        if resize < max(width, height):
            raise ConfigError(f"--resize {resize} is smaller than the {width}x{height} crop")
        fit, scale, mean, std = "shortside", 255.0, IMAGENET_MEAN, IMAGENET_STD
    else:
        resize = 0
        fit = {"letterbox": "letterbox", "resize": "stretch", "none": "stretch"}[preset]
        scale = 1.0 if preset == "none" else 255.0
        mean = (128.0,) * 3 if preset == "none" and datatype == "INT8" else (0.0,) * 3
        std = (1.0,) * 3
    item = (3, height, width) if layout == "nchw" else (height, width, 3)
    return ImagePlan(
        input_name=name,
        datatype=datatype,
        item_shape=item,
        layout=layout,
        fit=fit,
        width=width,
        height=height,
        resize=resize,
        scale=scale,
        mean=s.mean or mean,
        std=s.std or std,
    )


def image_files(spec: Path) -> list[Path]:
    """The images ``--image`` names: a file, the image files of a directory, or a glob's matches; sorted."""
    if spec.is_file():
        return [spec]
    if spec.is_dir():
        files = sorted(p for p in spec.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(
                f"--image {spec}: the directory holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return files
    if glob.has_magic(str(spec)):
        files = sorted(Path(p) for p in glob.glob(str(spec)) if Path(p).is_file())
        if not files:
            raise ConfigError(f"--image {spec}: the pattern matches no files")
        return files
    raise ConfigError(f"image {spec} does not exist (--image)")


def preprocess(files: list[Path], p: ImagePlan) -> list[bytes]:
    """Each file's tensor bytes (one batch item), in order; the first unreadable file stops it all."""
    try:
        return preprocess_images(
            [str(f) for f in files],
            fit=p.fit,
            width=p.width,
            height=p.height,
            resize=p.resize,
            layout=p.layout,
            datatype=p.datatype,
            scale=p.scale,
            mean=p.mean,
            std=p.std,
            pad=LETTERBOX_GREY,
            progress=True,
        )
    except ImageError as err:
        raise ConfigError(f"{err} (--image)") from None
