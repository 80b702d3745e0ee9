"""The container image, built by the project's own command (`make image`, docker/image.sh) and run for
real with the engine this machine has (Podman here: no Docker engine runs on these machines, and no
registry answers, so the image is built on a Debian base made by debootstrap, with a wheel built here).

Each run goes from inside containers (`--network=host`) to a reference Triton on the host that serves
inference only to requests carrying ``triton-access-token: <TOKEN>`` (Triton's restricted API):
- LowUser and HighUser runs with the image's own configs, headless: the counts Locust and latency.json
  report equal the requests Triton answered;
- a master container and two worker containers started as deploy/kubernetes starts them, the token only
  in the workers' environment: merged counts equal Triton's, and the token is nowhere on the master's
  side (its environment, its output, the files it wrote).

These tests build an image (about 2-3 minutes, the first time on a machine another minute for the base):
`make test-image` runs them alone. Under `make test` the image is built beside tests/unit by the same
command, and TEST_IMAGE_BUILD names the build's exit status and output (Makefile)."""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.runs import REPO_ROOT, clean_env, triton_successes

from servers.launch import RunningServer, free_port, triton_server

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

IMAGE = "localhost/locust-inference:test"
MODEL = "tiny_onnx"
NAME = f"triton/{MODEL}"
ACCESS_HEADER = "triton-access-token"
TOKEN = f"ct-{secrets.token_hex(16)}"  # random: it can only have come from this test
COMPILERS = ("gcc", "cc", "g++", "clang", "rustc", "cargo", "maturin", "nasm", "make")


def engine() -> tuple[list[str], list[str]]:
    """The engine with its options, and the limits for each container, as docker/image.sh chose them
    (e.g. podman --runtime runc; --ulimit nofile=...)."""
    out = subprocess.run(
        [str(REPO_ROOT / "docker/image.sh"), "--print-engine"], capture_output=True, text=True, check=True
    ).stdout
    command, limits = out.splitlines()
    return command.split(), limits.split()


@pytest.fixture(scope="module")
def image() -> str:
    prebuilt = os.environ.get("TEST_IMAGE_BUILD")
    if prebuilt:  # make test built IMAGE with the same command beside tests/unit: its status and output
        status, log = Path(f"{prebuilt}.status"), Path(f"{prebuilt}.log")
        output = log.read_text(errors="replace") if log.exists() else f"(no {log})"
        assert status.exists() and status.read_text().strip() == "0", output[-3000:]
        return IMAGE
    env = clean_env()
    for inherited in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):  # under `make test` ours would be a sub-make
        env.pop(inherited, None)
    built = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={IMAGE}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert built.returncode == 0, (built.stdout[-3000:], built.stderr[-3000:])
    return IMAGE


@pytest.fixture(scope="module")
def guarded_triton() -> Iterator[RunningServer]:
    with triton_server(models=[MODEL], env={"TRITON_INFERENCE_TOKEN": TOKEN}) as server:
        yield server


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command, limits = engine()
    if args[0] == "run":
        args = ("run", *limits, *args[1:])
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)


def container(image: str, *args: str, env: dict[str, str] | None = None, mounts: dict[Path, str] | None = None,
              name: str | None = None, detach: bool = False, entrypoint: str | None = None) -> list[str]:  # fmt: skip
    """The `run` arguments for one container of the image on the host's network."""
    words = ["run", "--network=host"]
    words += ["--detach"] if detach else ["--rm"]
    if name:
        words += ["--name", name]
    if entrypoint:
        words += ["--entrypoint", entrypoint]
    for key, value in (env or {}).items():
        words += ["--env", f"{key}={value}"]
    for source, target in (mounts or {}).items():
        words += ["--volume", f"{source}:{target}"]
    return [*words, image, *args]


def writable(path: Path) -> Path:
    """A host folder the image's user (uid 10001) can write results into."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def locust_count(csv_prefix: Path) -> tuple[int, int]:
    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == NAME)
    return int(row["Request Count"]), int(row["Failure Count"])


def test_the_image_runs_as_a_non_root_user_without_compilers_or_secrets(image: str) -> None:
    ident = run(*container(image, "-u", entrypoint="id"))
    assert ident.returncode == 0, ident.stderr
    assert ident.stdout.strip() == "10001"

    found = run(*container(image, "-c", f"command -v {' '.join(COMPILERS)} || true", entrypoint="sh"))
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "", f"build tools in the image: {found.stdout}"

    # The files where the manifests (deploy/kubernetes/configmap.yaml) and the image's CMD expect them.
    listed = run(*container(image, "-c", "ls /opt/locust-inference /opt/locust-inference/configs", entrypoint="sh"))
    assert listed.returncode == 0, listed.stderr
    for name in ("locustfile.py", "configs", "data", "low.conf", "high.conf"):
        assert name in listed.stdout.split(), listed.stdout
    configmap = (REPO_ROOT / "deploy/kubernetes/configmap.yaml").read_text()
    assert "locustfile = /opt/locust-inference/locustfile.py" in configmap

    # No secret baked in: no token-like variable in its environment, no CA bundle of the build host, no
    # wheel left behind.
    inspected = json.loads(run("image", "inspect", image).stdout)[0]
    env_names = [item.split("=", 1)[0] for item in inspected["Config"]["Env"]]
    assert not [n for n in env_names if "TOKEN" in n or "SECRET" in n or n == "PIP_CERT"], env_names
    leftovers = run(*container(image, "-c", "ls /run/secrets/pip_cert /tmp/wheels /dist 2>&1; true", entrypoint="sh"))
    assert leftovers.stdout.count("No such file") == 3, leftovers.stdout


def test_low_and_high_runs_in_the_container_count_what_triton_answered(
    image: str, guarded_triton: RunningServer, tmp_path: Path
) -> None:
    session = requests.Session()
    for conf, extra in (("low.conf", []), ("high.conf", ["-u", "4", "-r", "4"])):
        results = writable(tmp_path / conf.removesuffix(".conf"))
        before = triton_successes(session, guarded_triton.url, MODEL)
        done = run(
            *container(
                image,
                "--config", f"/opt/locust-inference/configs/{conf}", "--headless", "-t", "4s", "--stop-timeout", "5",
                *extra, "--csv", "/home/locust/results/run",
                env={
                    "LOCUST_HOST": guarded_triton.url,
                    "LOCUST_SERVER": "triton",
                    "LOCUST_MODEL_NAME": MODEL,
                    "LOCUST_HEADER": f"{ACCESS_HEADER}: {TOKEN}",
                },
                mounts={results: "/home/locust/results"},
            )
        )  # fmt: skip
        after = triton_successes(session, guarded_triton.url, MODEL)
        assert done.returncode == 0, (conf, done.stderr[-3000:])
        count, failures = locust_count(results / "run")
        entry = json.loads((results / "latency.json").read_text())["requests"][NAME]
        assert failures == 0, done.stderr[-3000:]
        assert count == entry["count"] > 0, (conf, count, entry["count"])
        # A closed loop (HighUser) ends with every request reported (--stop-timeout); an open loop
        # (LowUser) may end with requests out, sent and answered by Triton, counted as unfinished.
        open_loop = entry["open_loop"]
        sent = count if open_loop is None else open_loop["sent"]
        if open_loop is not None:
            assert open_loop["completed"] + open_loop["unfinished"] + open_loop["dropped"] == open_loop["scheduled"]
            assert open_loop["completed"] == count
        assert after - before == sent, (conf, after - before, entry)


def test_a_master_and_two_worker_containers_merge_exactly_and_the_token_stays_on_the_workers(
    image: str, guarded_triton: RunningServer, tmp_path: Path
) -> None:
    # The configuration every role reads, as the ConfigMap gives it (--config=/config/locust.conf).
    config = tmp_path / "config"
    config.mkdir()
    (config / "locust.conf").write_text(
        "locustfile = /opt/locust-inference/locustfile.py\nclass-name = HighUser\nclass-picker = false\n"
        f"server = triton\nmodel-name = {MODEL}\nhost = {guarded_triton.url}\n"
    )
    results = writable(tmp_path / "results")
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    master, workers = f"li-master-{tag}", [f"li-worker{i}-{tag}" for i in (1, 2)]
    mounts = {config: "/config:ro"}
    before = triton_successes(requests.Session(), guarded_triton.url, MODEL)
    try:
        started = run(
            *container(
                image,
                "--master", "--config=/config/locust.conf", "--master-bind-host=127.0.0.1",
                f"--master-bind-port={port}", "--headless", "--expect-workers=2", "-u", "4", "-r", "4", "-t", "5s",
                "--stop-timeout", "5", "--csv", "/home/locust/results/run",
                name=master, detach=True, mounts={**mounts, results: "/home/locust/results"},
            )
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        for name in workers:
            started = run(
                *container(
                    image,
                    "--worker", "--master-host=127.0.0.1", f"--master-port={port}", "--config=/config/locust.conf",
                    name=name, detach=True, mounts=mounts,
                    env={"INFERENCE_AUTH_TOKEN": TOKEN, "LOCUST_HEADER": f"{ACCESS_HEADER}: {TOKEN}"},
                )
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
        codes = {name: run("wait", name, timeout=240).stdout.strip() for name in (master, *workers)}
        logs = {name: run("logs", name) for name in (master, *workers)}
        inspected = {name: json.loads(run("inspect", name).stdout)[0] for name in (master, *workers)}
    finally:
        run("rm", "--force", master, *workers)
    after = triton_successes(requests.Session(), guarded_triton.url, MODEL)
    master_log = logs[master].stdout + logs[master].stderr
    assert codes == {name: "0" for name in (master, *workers)}, (codes, master_log[-3000:])

    count, failures = locust_count(results / "run")
    latency = json.loads((results / "latency.json").read_text())
    assert failures == 0, master_log[-3000:]
    # Triton answers no inference without the token: every request came from a worker that had it.
    assert count == latency["requests"][NAME]["count"] == after - before > 0, (count, after - before)

    # The master's side: its environment, its output and every file it wrote.
    assert not [item for item in inspected[master]["Config"]["Env"] if TOKEN in item]
    assert TOKEN not in master_log
    written = [p for p in results.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path
    # ...while each worker held it, the way the Deployment gives it (so the check above is not vacuous).
    for name in workers:
        assert f"INFERENCE_AUTH_TOKEN={TOKEN}" in inspected[name]["Config"]["Env"], name
