"""How a model input's metadata (and the options) decide the image pipeline, without a server."""

from __future__ import annotations

import pytest
from locust_inference import ConfigError
from locust_inference.image_inputs import plan
from locust_inference.input_options import InputSettings


def _plan(shape: list[int], datatype: str = "FP32", batch: int = 1, **options):
    return plan({"name": "x", "datatype": datatype, "shape": shape}, InputSettings(**options), batch)


def test_layout_size_and_preset_follow_the_metadata() -> None:
    p = _plan([-1, 3, 224, 224])
    assert (p.layout, p.width, p.height, p.fit, p.resize, p.datatype) == ("nchw", 224, 224, "shortside", 256, "FP32")
    p = _plan([-1, 320, 480, 3], "UINT8")
    assert (p.layout, p.width, p.height, p.fit, p.scale, p.mean, p.item_shape) == (
        "nhwc",
        480,
        320,
        "stretch",
        1.0,
        (0.0, 0.0, 0.0),
        (320, 480, 3),
    )
    assert _plan([-1, 3, 8, 8], "INT8").mean == (128.0, 128.0, 128.0)
    p = _plan([-1, 3, 640, 640], "FP16", preprocess="letterbox")
    assert (p.fit, p.scale, p.mean, p.std, p.item_bytes) == ("letterbox", 255.0, (0.0,) * 3, (1.0,) * 3, 640 * 640 * 6)


def test_dynamic_sizes_take_crop() -> None:
    p = _plan([-1, 3, -1, -1], preprocess="resize", crop=(300, 200))
    assert (p.width, p.height, p.item_shape) == (300, 200, (3, 200, 300))


@pytest.mark.parametrize(
    ("shape", "datatype", "options", "message"),
    [
        (
            [-1, 1],
            "BYTES",
            {},
            "input 'x' is BYTES: an image can be sent as FP32, FP16, UINT8 or INT8 (--dtype); "
            "for inputs that are not images use --input-data random|zero|FILE.json",
        ),
        (
            [-1, 16],
            "FP32",
            {},
            "input 'x' has shape [-1, 16]: an image input is [batch, 3, H, W] or [batch, H, W, 3]; "
            "for inputs that are not images use --input-data random|zero|FILE.json",
        ),
        ([-1, 5, 8, 8], "FP32", {}, "no dimension of 3 channels first or last; pass --layout nchw|nhwc"),
        ([-1, 3, -1, -1], "FP32", {"preprocess": "letterbox"}, "its height or width is dynamic; pass --crop N"),
        ([2, 3, 8, 8], "FP32", {}, "its batch is fixed at 2; pass --batch-size 2"),
    ],
)
def test_inputs_that_cannot_be_images(shape: list[int], datatype: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _plan(shape, datatype, **options)
    assert message in str(err.value)
