"""Memory limits checked at the start against a real Triton's model metadata: large batches, image sets,
the decoder's working memory."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

from support.images import copies, flat_png
from support.runs import LOCUST, REPO_ROOT, Run, assert_clean_failure, clean_env, run_locust

from servers import children


def _run_limited(tmp_path: Path, address_space: int, *args: str, env: dict[str, str]) -> Run:
    """``locust --headless`` as run_locust, with its address space limited: a start that allocates what it
    should have refused fails there with a MemoryError instead of taking the machine's memory."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    prefix = tmp_path / "limited"
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--only-summary", "-u", "1", "-t", "2s", "--csv", str(prefix)]
    proc = children.start(
        [*cmd, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    out, err = children.communicate(proc, 120)
    return Run(proc.returncode, out, err, prefix)


def test_input_data_for_a_large_batch_is_refused_at_start_within_a_small_address_space(triton, tmp_path: Path) -> None:
    # batch 1000 of a 4 MB INT32 input: 4 GB of request; the process may not grow past 2 GiB
    run = _run_limited(
        tmp_path,
        2 << 30,
        "--host",
        triton.url,
        "--input-data",
        "random",
        "--shape",
        "INPUT_B:1000000",
        "--batch-size",
        "1000",
        "--max-input-memory",
        "64MiB",
        env=clean_env(SERVER="triton", MODEL_NAME="echo_two_inputs"),
    )
    assert_clean_failure(run, "--input-data with batch 1000 need about", "over --max-input-memory 64 MiB")


def test_an_image_set_counts_every_copy_of_its_batches(triton, tmp_path: Path) -> None:
    # 10 images of 588 KiB as FP32 tensors in batches of 4: the tensors and the requests (29 MiB) fit in
    # 40 MiB, but with the encoded bodies and the copy made while each is encoded they need about 51 MiB
    images = copies(tmp_path / "set", 10)
    (images / "99_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")  # refused before any is decoded
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--image",
        str(images),
        "--batch-size",
        "4",
        "--max-input-memory",
        "40MiB",
        run_time="1s",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx"),
    )
    assert_clean_failure(run, "11 images need about", "over --max-input-memory 40 MiB")


def test_the_decoders_working_memory_is_counted(triton, tmp_path: Path) -> None:
    # one 4000x4000 PNG: a 588 KiB tensor, but decoded whole (16 M pixels, RGB and resampled rows)
    image = flat_png(tmp_path / "large.png", 4000)
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--image",
        str(image),
        "--max-input-memory",
        "64MiB",
        run_time="1s",
        env=clean_env(SERVER="triton", MODEL_NAME="tiny_onnx"),
    )
    assert_clean_failure(run, "1 images need about", "over --max-input-memory 64 MiB")
