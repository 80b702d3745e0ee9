"""Inputs that follow the model, against the real Triton's echo-checksum models: every request's bytes,
as the server received them, equal a reference pipeline written here in Pillow + numpy, byte for byte;
image sets rotate per user in order (or shuffled with a seed); perf_analyzer input data with two inputs
arrives as written."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from locust_inference._native import Stream
from locust_inference.backends import prepare
from support.own_model import (
    REPO_ROOT,
    answers,
    batch_answers,
    first_words,
    image_set,
    imagenet,
    letterboxed,
    run,
    settings,
    stretched,
    words,
)

from servers.models import checksum_words as float32_checksum


def test_uint8_nhwc_model_gets_each_image_of_a_set_in_turn_byte_for_byte(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    target, got = run(triton.url, "echo_uint8_nhwc", 7, image=str(tmp_path / "set"))
    expected = [words(stretched(f, 224, 224)) for f in files]
    assert len(set(map(tuple, expected))) == 3  # three different tensors: the order is visible
    assert [i for i, _ in got] == [0, 1, 2, 0, 1, 2, 0]
    assert [w for _, w in got] == [expected[i] for i in [0, 1, 2, 0, 1, 2, 0]]
    assert target.inputs == tuple(str(f) for f in files)


def test_fp16_model_gets_imagenet_preprocessing_rounded_to_half(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    _, got = run(triton.url, "echo_fp16", 3, image=str(tmp_path / "set" / "*.*"))
    assert [w for _, w in got] == [words(imagenet(f).astype("<f2")) for f in files]


def test_json_requests_carry_the_same_values(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    _, got = run(triton.url, "echo_uint8_nhwc", 3, image=str(tmp_path / "set"), triton_format="json")
    assert [w for _, w in got] == [words(stretched(f, 224, 224)) for f in files]


def test_640_model_gets_a_yolo_letterbox(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    _, got = run(triton.url, "echo_640", 3, image=str(tmp_path / "set"), preprocess="letterbox")
    assert [w for _, w in got] == [words(letterboxed(f, 640)) for f in files]


def test_fp32_imagenet_stays_bit_exact_and_batches_take_consecutive_images(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    target = prepare(settings(triton.url, "checksum", image=str(tmp_path / "set"), batch_size=2))
    got = batch_answers(target, 3)
    per_image = [float32_checksum(imagenet(f)) for f in files]
    assert got == [
        (0, [per_image[0], per_image[1]]),
        (1, [per_image[1], per_image[2]]),
        (2, [per_image[2], per_image[0]]),
    ]


def test_options_override_the_model_layout_and_normalisation(triton, tmp_path: Path) -> None:
    photo = REPO_ROOT / "data" / "img1.jpg"
    _, got = run(triton.url, "echo_uint8_nhwc", 1, image=str(photo), preprocess="resize", mean="0.5", std="0.004")
    x = (stretched(photo, 224, 224).astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.004)
    assert got[0][1] == words(np.clip(np.rint(x), 0, 255).astype(np.uint8))


def test_shuffled_inputs_visit_every_image_once_per_round_in_the_seeds_order(triton, tmp_path: Path) -> None:
    image_set(tmp_path / "set")
    target = prepare(settings(triton.url, "echo_uint8_nhwc", image=str(tmp_path / "set"), shuffle_inputs=True))
    orders = {seed: [i for i, _ in answers(target, 6, seed=seed)] for seed in range(1, 6)}
    for order in orders.values():
        assert sorted(order[:3]) == [0, 1, 2] and order[3:] == order[:3]
    assert [i for i, _ in answers(target, 6, seed=4)] == orders[4]
    assert any(order[:3] != [0, 1, 2] for order in orders.values())


def test_an_open_loop_stream_walks_the_set_in_send_order(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    target = prepare(settings(triton.url, "echo_uint8_nhwc", image=str(tmp_path / "set")))
    # One request out at a time, the rest queued: answers come back in send order, so the first seven
    # answers are the first seven sends (with more in flight a slow answer lets later ones overtake it).
    stream = Stream(target.endpoint, 50.0, max_in_flight=1, overload="queue")
    completions = []
    while len(completions) < 7:
        completions += stream.wait(10)
    stream.stop()
    assert [c.intended for c in completions] == sorted(c.intended for c in completions)
    expected = [words(stretched(f, 224, 224)) for f in files]
    got = [(c.outcome.input_index, first_words(c.outcome)) for c in completions[:7]]
    assert got == [(i, expected[i]) for i in [0, 1, 2, 0, 1, 2, 0]]


def _two_inputs_file(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    a0, b0 = np.array([1.5, -2.0, 3.25, 0.0], "<f4"), np.array([1, 2, 3, 4, 5], "<i4")
    a1, b1 = np.array([9.0, 8.0, 7.0, 6.0], "<f4"), np.array([-7, 2**31 - 1, 0], "<i4")
    path.write_text(
        json.dumps(
            {
                "data": [
                    {"INPUT_A": a0.tolist(), "INPUT_B": {"content": b0.tolist(), "shape": [5]}},
                    {"INPUT_A": {"b64": base64.b64encode(a1.tobytes()).decode()}, "INPUT_B": b1.tolist()},
                ]
            }
        )
    )
    return [a0, a1], [b0, b1]


def test_perf_analyzer_json_with_two_inputs_arrives_as_written(triton, tmp_path: Path) -> None:
    a, b = _two_inputs_file(tmp_path / "data.json")
    _, got = run(triton.url, "echo_two_inputs", 4, input_data=str(tmp_path / "data.json"))
    expected = [words(a[0], b[0]), words(a[1], b[1])]
    assert got == [(0, expected[0]), (1, expected[1]), (0, expected[0]), (1, expected[1])]


def test_zero_and_random_data_follow_the_metadata_and_shape_options(triton) -> None:
    _, zero = run(triton.url, "echo_two_inputs", 1, input_data="zero", shape=["INPUT_B:6"])
    assert zero[0][1] == words(np.zeros(4, "<f4"), np.zeros(6, "<i4"))
    target, rand = run(triton.url, "echo_two_inputs", 2, input_data="random", shape=["INPUT_B:6"], seed="3")
    assert rand[0][1] == checksum_words_of_hex(target.input_checksum) == rand[1][1]
    assert rand[0][1] != zero[0][1]


def checksum_words_of_hex(digest: str) -> list[int]:
    return [int(w) for w in np.frombuffer(bytes.fromhex(digest), dtype=">u2")]
