"""The container image: the Dockerfile's structure, its build and install steps run here for real (no
container engine is needed for those), and `make image` refusing clearly when no engine answers.

The Dockerfile's builder stage runs docker/build-wheel.sh and its final stage docker/install-wheel.sh;
the test runs the same two scripts, then starts Locust from the fresh environment the way the image's
ENTRYPOINT and CMD do, with the files laid out as its COPY instructions lay them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from support.runs import REPO_ROOT, clean_env

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|rustc|cargo|rustup|maturin|build-essential|cmake|nasm|make)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, value)

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]


def global_args() -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults (what a plain `docker build` uses)."""
    args: dict[str, str] = {}
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        if item["instruction"] == "FROM":
            break
        if item["instruction"] == "ARG":
            name, _, default = item["value"].strip().partition("=")
            args[name] = default
    return args


def stages() -> list[Stage]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    result: list[Stage] = []
    for item in parser.structure:
        kind, value = item["instruction"], item["value"].strip()
        if kind == "ARG" and not result:
            continue  # a global build argument (global_args)
        if kind == "FROM":
            image, _, name = value.partition(" AS ")
            result.append(Stage(image.strip(), name.strip() or None))
        elif kind != "COMMENT":
            assert result, f"{kind} before the first FROM"
            result[-1].instructions.append((kind, value))
    return result


def mounts(run: str) -> list[dict[str, str]]:
    """The --mount options of a RUN instruction, as dictionaries."""
    return [dict(part.split("=", 1) for part in m.split(",")) for m in re.findall(r"--mount=(\S+)", run)]


def test_dockerfile_builds_the_wheel_in_a_builder_stage_and_runs_it_on_slim_python_without_compilers() -> None:
    builder, prebuilt, wheels, final = stages()
    assert builder.name == "builder"
    assert builder.base.startswith("rust:")
    assert any("nasm" in run and "apt-get install" in run for run in builder.values("RUN"))
    assert builder.values("RUN")[-1].endswith("docker/build-wheel.sh /dist")

    # By default (a plain build) the wheel comes from the builder, the base is slim Python 3.11; where no
    # registry answers, docker/image.sh passes a local base and a wheel built on the host (prebuilt).
    args = global_args()
    assert final.base == "${BASE}" and re.fullmatch(r"python:3\.11-slim(-[a-z]+)?", args["BASE"]), args
    assert (wheels.base, wheels.name, args["WHEELS"]) == ("${WHEELS}", "wheels", "builder")
    assert (prebuilt.base, prebuilt.name) == ("scratch", "prebuilt")
    assert prebuilt.instructions == [("COPY", "docker/wheels/ /dist/")]
    for kind, value in final.instructions:
        assert not COMPILERS.search(value), f"the final stage installs or runs a build tool: {kind} {value}"
    # and its pip takes binary wheels only, so no dependency can need a compiler there
    install_script = (REPO_ROOT / "docker/install-wheel.sh").read_text()
    assert re.search(r"^python -m pip install --only-binary=:all: ", install_script, re.MULTILINE)
    # The wheel reaches the final stage only from the builder's /dist, through install-wheel.sh.
    installs = [run for run in final.values("RUN") if "install-wheel.sh" in run]
    assert len(installs) == 1
    wheel_mounts = [m for m in mounts(installs[0]) if "from" in m]
    assert wheel_mounts == [{"type": "bind", "from": "wheels", "source": "/dist", "target": "/tmp/wheels"}]
    assert installs[0].endswith("install-wheel.sh /tmp/wheels")
    assert not [c for c in final.values("COPY") if c.startswith("--from=")], "nothing else comes from the builder"

    users = final.values("USER")
    assert len(users) == 1
    uid = users[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users
    assert any(f"--uid {uid}" in run for run in final.values("RUN")), "USER is the account the image creates"
    # Locust, the repository's locustfile and configs, and the image the users send.
    assert json.loads(final.values("ENTRYPOINT")[0]) == ["locust"]
    copied = {shlex.split(c)[0] for c in final.values("COPY")}
    assert copied == {"locustfile.py", "configs/", "data/"}


def test_dockerignore_admits_only_what_the_dockerfile_copies_or_mounts() -> None:
    lines = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"  # everything else (target/, .venv/, results/) is left out
    admitted = {p[1:] for p in patterns if p.startswith("!")}
    used: set[str] = set()
    for stage in stages():
        for copy in stage.values("COPY"):
            if not copy.startswith("--from="):
                used.update(shlex.split(copy)[:-1])
        for run in stage.values("RUN"):
            used.update(m["source"] for m in mounts(run) if m["type"] == "bind" and "from" not in m)
    for source in used:
        top = source.split("/")[0] + ("/" if "/" in source else "")
        assert source in admitted or top in admitted, f"{source} is used by the Dockerfile but ignored"
    assert "python/**/*.so" in patterns, "an extension built on the host must not reach the image"


@pytest.mark.timeout(900)
def test_the_image_build_and_install_steps_give_a_working_locust_in_a_fresh_environment(tmp_path: Path) -> None:
    # The builder stage's step: build-wheel.sh, reusing this checkout's cargo target directory.
    dist = tmp_path / "dist"
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent))
    assert maturin, "maturin is in the test extras: pip install -e '.[test]'"
    env = clean_env(CARGO_TARGET_DIR=str(REPO_ROOT / "target"), MATURIN=maturin)
    subprocess.run(["bash", str(REPO_ROOT / "docker/build-wheel.sh"), str(dist)], check=True, env=env)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert [n for n in names if n.endswith(".so")] == ["locust_inference/_native.abi3.so"]

    # The final stage's step: install-wheel.sh with a fresh environment's python first on PATH.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bare = {k: v for k, v in clean_env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    bare["PATH"] = f"{venv / 'bin'}{os.pathsep}{bare['PATH']}"
    subprocess.run(["sh", str(REPO_ROOT / "docker/install-wheel.sh"), str(dist)], check=True, env=bare)

    # The files as the final stage's COPY instructions lay them, under a stand-in for /.
    root = tmp_path / "root"
    final = stages()[-1]
    for copy in final.values("COPY"):
        source, target = shlex.split(copy)
        destination = root / target.lstrip("/")
        if source.endswith("/"):
            shutil.copytree(REPO_ROOT / source, destination)
        else:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / source, destination)
    home = tmp_path / "home"
    home.mkdir()

    def image_path(value: str) -> str:
        return str(root / value.lstrip("/")) if value.startswith("/opt/") else value

    python = str(venv / "bin" / "python")
    found = subprocess.run(
        [python, "-c", "import locust_inference; print(locust_inference.__file__)"],
        cwd=home, env=bare, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(found.stdout.strip()).is_relative_to(venv), found.stdout

    # The image's PATH starts with its virtual environment, /opt/venv/bin: here, the fresh one's (in bare).
    envs = DockerfileParser(path=str(DOCKERFILE)).envs
    assert envs["PATH"].startswith("/opt/venv/bin:"), envs["PATH"]
    image_env = {**bare, **{k: image_path(v) for k, v in envs.items() if k != "PATH"}}
    locust = str(venv / "bin" / "locust")
    locustfile = image_env["LOCUST_LOCUSTFILE"]
    assert Path(locustfile).is_file()

    def locust_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([locust, *args], cwd=home, env=image_env, capture_output=True, text=True, timeout=120)

    helped = locust_run("-f", locustfile, "--help")
    assert helped.returncode == 0 and "--master-host" in helped.stdout, helped.stderr[-2000:]
    listed = locust_run("-f", locustfile, "--list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.split() == ["Available", "Users:", "LowUser", "HighUser"]

    # ENTRYPOINT + CMD as the image runs them without settings: the locustfile (from LOCUST_LOCUSTFILE,
    # over the config's relative one) loads and stops at our one-line configuration error.
    command = json.loads(final.values("ENTRYPOINT")[0]) + json.loads(final.values("CMD")[0])
    assert command[0] == "locust"
    default = locust_run(*(image_path(word) for word in command[1:]))
    assert default.returncode == 2, default.stderr[-2000:]
    assert "Traceback" not in default.stderr, default.stderr[-3000:]
    assert default.stderr.splitlines()[-1] == (
        "locust-inference: no inference server chosen: pass --server triton|litserve or set SERVER=triton|litserve"
    )


def test_make_image_says_in_one_line_that_no_container_engine_answers(tmp_path: Path) -> None:
    # A docker client whose engine is unreachable (as on this project's machines): `info` fails; a
    # `build` would be recorded.
    calls = tmp_path / "calls"
    stub = tmp_path / "bin" / "docker"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" = info ] && exit 1\nexit 0\n')
    stub.chmod(0o755)
    env = clean_env(PATH=f"{stub.parent}{os.pathsep}{os.environ['PATH']}", CONTAINER="docker")
    for inherited in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):  # under `make test` ours would be a sub-make
        env.pop(inherited, None)
    run = subprocess.run(
        ["make", "--no-print-directory", "image"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode != 0
    assert run.stdout == ""
    ours, makes = run.stderr.splitlines()  # our line, then make's own about the failed recipe
    assert ours.startswith("make image: no container engine answers (docker info failed)"), run.stderr
    assert re.fullmatch(r"make: \*\*\* \[Makefile:\d+: image\] Error 1", makes), run.stderr
    assert calls.read_text().split() == ["info"], "nothing was built"
