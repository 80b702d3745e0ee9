"""Bad configuration stops the run at start with one clear line, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import configargparse
import pytest
from locust_inference import defaults, input_options, options
from support.runs import REPO_ROOT, assert_clean_failure, clean_env, run_locust

from servers.launch import free_port


def test_unknown_server(tmp_path: Path) -> None:
    run = run_locust(tmp_path, env=clean_env(SERVER="tritonn", MODEL_NAME="m"))
    assert_clean_failure(run, "unknown server 'tritonn'", "triton, litserve")


def test_no_server(tmp_path: Path) -> None:
    run = run_locust(tmp_path, env=clean_env(MODEL_NAME="m"))
    assert_clean_failure(run, "no inference server chosen")


def test_no_model(tmp_path: Path) -> None:
    run = run_locust(tmp_path, env=clean_env(SERVER="triton"))
    assert_clean_failure(run, "no model chosen", "MODEL_NAME")


def test_unreachable_host(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = run_locust(tmp_path, "--host", url, env=clean_env(SERVER="triton", MODEL_NAME="m"))
    assert_clean_failure(run, f"cannot reach Triton at {url}", "refused")


def test_unreachable_litserve(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = run_locust(tmp_path, "--host", url, env=clean_env(SERVER="litserve", MODEL_NAME="m"))
    assert_clean_failure(run, f"cannot reach LitServe at {url}")


def test_unknown_user_class_in_config(tmp_path: Path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text("locustfile = locustfile.py\nclass-name = MediumUser\nserver = triton\nmodel-name = m\n")
    run = run_locust(tmp_path, "--config", str(conf), env=clean_env())
    assert_clean_failure(run, "MediumUser", "HighUser", "LowUser")


def test_config_file_that_does_not_exist(tmp_path: Path) -> None:
    run = run_locust(tmp_path, "--config", str(tmp_path / "nope.conf"), env=clean_env(SERVER="triton", MODEL_NAME="m"))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert f"Unable to open config file: {tmp_path / 'nope.conf'}" in run.stderr


def test_bad_option_values(tmp_path: Path) -> None:
    for args, message in (
        (["--request-timeout", "-1"], "--request-timeout must be a number from 0.001 to 86,400 seconds"),
        (["--batch-size", "0"], "--batch-size must be a whole number from 1 to 1,000,000"),
        (["--expect-top1", "cat"], "--expect-top1 must be 'auto' or a class index"),
        (["--header", "no-colon"], "is not of the form 'Name: value'"),
        (["--host", "127.0.0.1:8000"], "must start with http:// or https://"),
    ):
        run = run_locust(tmp_path, *args, env=clean_env(SERVER="triton", MODEL_NAME="m"))
        assert_clean_failure(run, message)


def parsed(*args: str) -> Any:
    """``args`` read by the kind of parser Locust's is (importing Locust would monkey-patch this process)."""
    parser = configargparse.ArgumentParser(add_help=False, default_config_files=[])
    options.add_arguments(parser)
    return parser.parse_args(list(args))


def test_the_option_defaults_are_the_settings_defaults() -> None:
    given = parsed()
    settings = options.resolve(given, None, environ={"SERVER": "triton", "MODEL_NAME": "m"})
    image = Path(defaults.IMAGE)
    assert settings == options.Settings(server="triton", model="m", host=defaults.HOSTS["triton"], image=image)
    assert settings.inputs == input_options.InputSettings()
    litserve = options.resolve(given, None, environ={"SERVER": "litserve", "MODEL_NAME": "m"})
    assert litserve.host == defaults.HOSTS["litserve"]


def test_choices_are_read_in_any_case() -> None:
    given = parsed("--triton-format", "JSON", "--litserve-payload", "Image-Base64")
    assert (given.triton_format, given.litserve_payload) == ("json", "image-base64")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--triton-format", "protobuf"],
            "locust: error: argument --triton-format: invalid choice: 'protobuf' (choose from 'binary', 'json')",
        ),
        (
            ["--server", "litserve", "--litserve-payload", "jpeg"],
            "locust: error: argument --litserve-payload: invalid choice: 'jpeg' "
            "(choose from 'tensor', 'image-base64', 'image-bytes', 'template')",
        ),
    ],
)
def test_a_bad_choice_is_one_line(tmp_path: Path, args: list[str], line: str) -> None:
    run = run_locust(tmp_path, *args, env=clean_env(SERVER="triton", MODEL_NAME="m"))
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert run.stderr == line + "\n"


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "cannot be read (No such file or directory)"), ("X-Key: k\nnot-a-header s3cr3t\n", "line 2 is not")],
    ids=["missing", "malformed"],
)
def test_bad_header_file(tmp_path: Path, content: str | None, reason: str) -> None:
    headers = tmp_path / "headers"
    if content is not None:
        headers.write_text(content)
    run = run_locust(tmp_path, "--header-file", str(headers), env=clean_env(SERVER="triton", MODEL_NAME="m"))
    assert_clean_failure(run, f"--header-file {headers}: {reason}")
    assert "s3cr3t" not in run.stderr  # a malformed line may hold a secret: only its number is shown


def test_distributed_sh_refuses_an_unknown_role() -> None:
    done = subprocess.run(
        ["./distributed.sh", "configs/low.conf", "m", "triton"],
        cwd=REPO_ROOT,
        env=clean_env(ROLE="workers"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "distributed.sh: unknown ROLE 'workers': choose master or worker, or leave it unset for both here\n"
    )
