"""Helpers for tests that run Locust (and distributed.sh) as a user would, in a subprocess."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from servers import children
from servers.children import clean_env
from servers.launch import free_port

__all__ = [
    "COUNTED",
    "COUNTED_GUARD",
    "IMAGE",
    "LOCUST",
    "REPO_ROOT",
    "SWEEPFILE",
    "QuickSweep",
    "Run",
    "assert_clean_failure",
    "clean_env",
    "distributed",
    "grpc_run",
    "grpc_url",
    "latency_json",
    "run_distributed",
    "run_locust",
    "run_on",
    "run_sweep",
    "start_sweep",
    "triton_successes",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).parent / "locust")
IMAGE = REPO_ROOT / "data" / "img1.jpg"
SWEEPFILE = REPO_ROOT / "sweepfile.py"
# The product's users in a run that ends after $STOP_AFTER requests (locustfiles/counted.py): a test that
# needs some requests gets them however slowly a loaded machine runs, and waits no longer than that.
COUNTED = REPO_ROOT / "tests" / "support" / "locustfiles" / "counted.py"
# A counted run's -t: only a guard against a run that never gets there, shorter than run_locust's timeout
# so that Locust ends it and writes its results.
COUNTED_GUARD = "90s"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    csv_prefix: Path

    def stats(self, name: str = "Aggregated") -> dict[str, str]:
        """The row of ``<prefix>_stats.csv`` whose Name is ``name``."""
        with open(f"{self.csv_prefix}_stats.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row["Name"] == name:
                    return row
        raise AssertionError(f"no row {name!r} in {self.csv_prefix}_stats.csv")

    def failures(self) -> list[dict[str, str]]:
        with open(f"{self.csv_prefix}_failures.csv", newline="") as f:
            return list(csv.DictReader(f))


def assert_clean_failure(run: Run, *needles: str) -> None:
    """The run stopped at start with exit status 2 and one ``locust-inference:`` line holding ``needles``."""
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.startswith("locust-inference: ")]
    assert len(lines) == 1, run.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


# Starts the command with Ctrl-C (SIGINT) at its default action, as a terminal's foreground job has it. An ignored
# SIGINT passes from a process to its children, and Python then leaves it ignored: pytest started with `&` by a
# non-interactive shell (a CI run in the background) would otherwise start a Locust that cannot see the Ctrl-C.
WITH_CTRL_C = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
]


def run_locust(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    locustfile: str | Path = REPO_ROOT / "locustfile.py",
    timeout: float = 120,
    run_time: str = "4s",
    users: int = 1,
) -> Run:
    """Runs ``locust --headless`` in the repository root and returns its output and CSV prefix."""
    prefix = tmp_path / f"run{len(list(tmp_path.glob('run*_stats.csv')))}"
    cmd = [
        LOCUST,
        "-f",
        str(locustfile),
        "--headless",
        "--only-summary",
        "-u",
        str(users),
        "-r",
        str(max(users, 1)),
        "-t",
        run_time,
        "--csv",
        str(prefix),
        *args,
    ]
    proc = children.start(
        cmd,
        cwd=REPO_ROOT,
        env=env if env is not None else clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = children.communicate(proc, timeout)
    except subprocess.TimeoutExpired as timed_out:
        raise AssertionError(f"locust did not finish within {timeout} s\n{timed_out.stderr[-3000:]}") from None
    return Run(proc.returncode, out, err, prefix)


def run_on(
    server: Any,
    tmp_path: Path,
    *args: str,
    model: str = "tiny_onnx",
    user: str = "HighUser",
    stop_after: int | None = None,
    **run: Any,
) -> Run:
    """``run_locust`` of ``user`` against a started ``server`` (its URL, its kind as SERVER) serving ``model``;
    ``args``: more options, ``run``: run_locust's keywords. With ``stop_after``, the run ends once that many
    requests were reported (:data:`COUNTED`), ``-t`` only its guard."""
    env = clean_env(SERVER=server.kind, MODEL_NAME=model)
    if stop_after is not None:
        env["STOP_AFTER"] = str(stop_after)
        run = {"locustfile": COUNTED, "run_time": COUNTED_GUARD, **run}
    return run_locust(tmp_path, "--host", server.url, *args, user, env=env, **run)


def run_sweep(tmp_path: Path, *args: str, sweep: QuickSweep | None = None, **run: Any) -> Run:
    """``run_locust`` of sweepfile.py with ``sweep``'s windows (default: QuickSweep's) and ``args``; ``run``:
    run_locust's keywords (its ``run_time`` a bound only: the sweep ends the run)."""
    return run_locust(tmp_path, *(sweep or QuickSweep()).options(), *args, locustfile=SWEEPFILE, **run)


def start_sweep(
    tmp_path: Path, host: str, model: str, *args: str, err: IO[str], sweep: QuickSweep | None = None
) -> subprocess.Popen[Any]:
    """sweepfile.py started in the background (its own process group) against the Triton at ``host`` serving
    ``model``, with ``sweep``'s windows (default: QuickSweep's) and ``args``, its CSV files at ``tmp_path/run``
    and its output on ``err``; the caller stops it (``children.stop``)."""
    cmd = [LOCUST, "-f", str(SWEEPFILE), "--host", host, *(sweep or QuickSweep()).options(), *args]
    return children.start(
        [*cmd, "--csv", str(tmp_path / "run")],
        cwd=REPO_ROOT,
        env=clean_env(SERVER="triton", MODEL_NAME=model),
        stdout=subprocess.DEVNULL,
        stderr=err,
    )


@dataclass(frozen=True)
class QuickSweep:
    """A sweep's windows made short for a test: ``window`` s each after ``warmup`` s of warm-up, a step stable once
    ``stable_windows`` agree and over after ``max_windows``. The same settings as sweepfile.py's options, or as
    the environment variables of distributed.sh (prefix ``LOCUST_SWEEP_``) and of make sweep (``SWEEP_``)."""

    window: int = 3
    warmup: int = 1
    stable_windows: int = 2
    max_windows: int = 5

    def options(self) -> list[str]:
        return [a for key, value in self._settings() for a in (f"--sweep-{key.replace('_', '-')}", str(value))]

    def env(self, prefix: str) -> dict[str, str]:
        return {f"{prefix}{key.upper()}": str(value) for key, value in self._settings()}

    def _settings(self) -> list[tuple[str, int]]:
        return list(dataclasses.asdict(self).items())


def latency_json(folder: Path) -> dict[str, Any]:
    """The ``latency.json`` a run wrote in ``folder``."""
    document: dict[str, Any] = json.loads((folder / "latency.json").read_text())
    return document


def grpc_url(server: Any) -> str:
    """The gRPC URL of a Triton the tests started (its ``grpc_port``)."""
    return f"http://127.0.0.1:{server.grpc_port}"


def grpc_run(
    triton: Any,
    tmp_path: Path,
    model: str,
    *args: str,
    user: str = "HighUser",
    env: dict[str, str] | None = None,
    **run: Any,
) -> Run:
    """``run_locust`` of ``user`` over ``--protocol grpc`` on ``model`` at ``triton``'s gRPC endpoint (a started
    Triton, or a URL as is); ``args``: more options, ``env``: more environment, ``run``: run_locust's keywords."""
    host = triton if isinstance(triton, str) else grpc_url(triton)
    return run_locust(
        tmp_path,
        "--host",
        host,
        "--protocol",
        "grpc",
        *args,
        user,
        env=clean_env(SERVER="triton", MODEL_NAME=model, **(env or {})),
        **run,
    )


def run_distributed(
    tmp_path: Path,
    host: str,
    *,
    workers: int = 2,
    users: int = 4,
    run_time: str = "4s",
    class_name: str = "HighUser",
    model: str = "tiny_onnx",
    extra: str = "",
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Runs ./distributed.sh with a short config of its own (plus ``extra`` lines); returns the process and
    the results folder."""
    conf = tmp_path / "quick.conf"
    conf.write_text(
        f"locustfile = locustfile.py\nclass-name = {class_name}\nusers = {users}\nspawn-rate = {users}\n"
        f"run-time = {run_time}\nexpect-workers = {workers}\nmaster-bind-host = 127.0.0.1\n{extra}"
    )
    return distributed(tmp_path, str(conf), model, host)


def distributed(
    tmp_path: Path, conf: str, model: str, host: str, *, timeout: float = 120, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Runs ./distributed.sh ``conf`` (a path from the repository's root, or absolute) for ``model`` of the
    Triton at ``host``, with more environment ``env``; returns the process and the results folder."""
    results = tmp_path / "results"
    proc = subprocess.run(
        ["./distributed.sh", conf, model, "triton"],
        cwd=REPO_ROOT,
        env=clean_env(HOST=host, RESULTS_DIR=str(results), **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, results


def triton_successes(http: Any, url: str, model: str) -> int:
    """How many inferences of ``model`` the Triton at ``url`` has answered successfully (its statistics)."""
    stats = http.get(f"{url}/v2/models/{model}/stats", timeout=10).json()
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def processes(count: int) -> list[str]:
    """Locust's ``--processes count``, its master on a port of its own. Locust's default, 5557, is every run's
    on the machine: a worker forked by one run that found another run's master there ran that run's users
    (seen as KeyError 'LowUser' in a worker while two test sessions ran side by side)."""
    port = str(free_port())
    return ["--processes", str(count), "--master-bind-port", port, "--master-port", port]
