"""NVIDIA perf_analyzer as a benchmark client on the real Triton (:mod:`bench.triton_server`).

perf_analyzer is not published on PyPI by itself (the ``perf-analyzer`` 0.1.0 there is a stub); the
``tritonclient`` 2.41.0 wheel carries the binary (``tritonclient-2.41.0.data/data/bin/perf_analyzer``). It
links ``libcudart.so.12``, taken from the ``nvidia-cuda-runtime-cu12`` wheel (loading it needs no GPU), and
``libb64.so.0d`` (Debian ``libb64-0d``, installed with apt-get when missing). :func:`ensure` fetches the two
wheels with ``pip download`` once, keeps only those two files in :data:`CACHE` and reuses them afterwards.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.clients import SUBPROCESS_GRACE_S, Result, Setup, add_cost, run_process
from servers.children import clean_env

__all__ = ["CACHE", "PerfAnalyzer", "Unavailable", "ensure", "pa_client", "parse"]

VERSION = "2.41.0"
TRITONCLIENT = f"tritonclient=={VERSION}"
CUDART = "nvidia-cuda-runtime-cu12==12.9.79"
BINARY_IN_WHEEL = f"tritonclient-{VERSION}.data/data/bin/perf_analyzer"
CUDART_IN_WHEEL = "nvidia/cuda_runtime/lib/libcudart.so.12"
APT_PACKAGE = "libb64-0d"  # libb64.so.0d
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "locust-inference" / "perf_analyzer"
WINDOWS = 3  # perf_analyzer's stability window: it measures at least 3 windows of --measurement-interval


class Unavailable(RuntimeError):
    """perf_analyzer cannot be fetched or run here; the message is one line saying why."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """The binary and the environment it runs in (``LD_LIBRARY_PATH`` with libcudart)."""

    binary: Path
    lib_dir: Path

    def env(self) -> dict[str, str]:
        ld = os.pathsep.join(p for p in (str(self.lib_dir), os.environ.get("LD_LIBRARY_PATH")) if p)
        return clean_env(LD_LIBRARY_PATH=ld)


def _pip_download(spec: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(dest)]
    cmd += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64", spec]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"pip download {spec} failed: {exc}") from None
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        raise Unavailable(f"pip download {spec} failed: {tail}")
    name = spec.split("==", maxsplit=1)[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{name}-*.whl"))
    if not wheels:
        raise Unavailable(f"pip download {spec} gave no wheel in {dest}")
    return wheels[0]


def _extract(wheel: Path, member: str, target: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(target.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise Unavailable(f"cannot extract {member} from {wheel.name}: {exc}") from None
    target.with_suffix(".part").replace(target)


def _missing_libraries(tool: PerfAnalyzer) -> list[str]:
    """The shared libraries the dynamic loader cannot find for the binary (from ``ldd``)."""
    try:
        ldd = ["ldd", str(tool.binary)]
        out = subprocess.run(ldd, capture_output=True, text=True, env=tool.env(), timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []  # no ldd: running it will tell
    return [line.split()[0] for line in out.stdout.splitlines() if "not found" in line]


def _apt_install(package: str) -> None:
    apt = shutil.which("apt-get")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise Unavailable(f"perf_analyzer needs {package}: install it (Debian: apt-get install {package})")
        prefix = [sudo, "-n"]
    if apt is None:
        raise Unavailable(f"perf_analyzer needs the library of Debian's {package} and this system has no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"==> installing {package} with apt-get (perf_analyzer links libb64.so.0d)", flush=True)
    install = [*prefix, apt, "install", "-y", "-q", "--no-install-recommends", package]
    for cmd in ([*prefix, apt, "update", "-q"], install):
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise Unavailable(f"{shlex.join(cmd[len(prefix) :])} failed: {tail}")


def ensure(cache: Path = CACHE) -> PerfAnalyzer:
    """perf_analyzer ready to run: fetched into ``cache`` unless already there, its libraries present.
    Raises :class:`Unavailable` (one line) when it cannot be."""
    tool = PerfAnalyzer(cache / "perf_analyzer", cache / "lib")
    if not (tool.binary.exists() and (tool.lib_dir / "libcudart.so.12").exists()):
        print(f"==> fetching perf_analyzer {VERSION} (from the {TRITONCLIENT} wheel) into {cache}", flush=True)
        tool.lib_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="li-pa-") as tmp:
            _extract(_pip_download(CUDART, Path(tmp)), CUDART_IN_WHEEL, tool.lib_dir / "libcudart.so.12")
            _extract(_pip_download(TRITONCLIENT, Path(tmp)), BINARY_IN_WHEEL, tool.binary)
        tool.binary.chmod(0o755)
    missing = _missing_libraries(tool)
    if "libb64.so.0d" in missing:
        _apt_install(APT_PACKAGE)
        missing = _missing_libraries(tool)
    if missing:
        raise Unavailable(f"perf_analyzer cannot load {', '.join(missing)}")
    try:
        version = [str(tool.binary), "--version"]
        out = subprocess.run(version, capture_output=True, text=True, env=tool.env(), timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"perf_analyzer --version failed: {exc}") from None
    if out.returncode != 0 or VERSION not in out.stdout + out.stderr:
        tail = ((out.stdout + out.stderr).strip().splitlines() or ["?"])[-1]
        raise Unavailable(f"perf_analyzer --version exited {out.returncode}: {tail}")
    return tool


def command(
    tool: PerfAnalyzer,
    url: str,
    model: str,
    *,
    concurrency: int,
    duration: int,
    csv_path: Path,
    shape: str | None,
    protocol: str = "http",
) -> list[str]:
    """perf_analyzer at ``concurrency`` over HTTP with binary tensors (or over gRPC, where tensors are always
    raw bytes), zeros as input (the request has the same size as any other of that shape), for about
    ``duration`` s: :data:`WINDOWS` windows with a stability threshold no run misses, so it stops after the
    first three."""
    host = url.removeprefix("http://").removeprefix("https://")
    cmd = [str(tool.binary), "-m", model, "-u", host, "-i", protocol, "-b", "1"]
    cmd += ["--concurrency-range", str(concurrency), "--input-data", "zero"]
    if protocol == "http":
        cmd += ["--input-tensor-format", "binary", "--output-tensor-format", "binary"]
    cmd += ["--measurement-interval", str(max(500, duration * 1000 // WINDOWS)), "--stability-percentage", "1000"]
    cmd += ["-f", str(csv_path)]
    if shape:
        cmd += ["--shape", shape]
    return cmd


def shown_command(
    duration: int, url: str = "http://127.0.0.1:PORT", model: str = "tiny_onnx", protocol: str = "http"
) -> str:
    """The command line :func:`pa_client` runs, as the report shows it (10 concurrent requests)."""
    tool = PerfAnalyzer(Path("perf_analyzer"), Path("."))
    csv_path = Path("pa.csv")
    cmd = command(tool, url, model, concurrency=10, duration=duration, csv_path=csv_path, shape=None, protocol=protocol)
    return shlex.join(cmd)


def parse(csv_text: str, stdout: str = "") -> Result:
    """The rate and p50 (µs in the file) of perf_analyzer's ``-f`` CSV (one row per concurrency; the first is
    used) and the mean latency from its report on stdout (``Avg latency: N usec``; the CSV has none)."""
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    if not rows:
        return Result(error=f"no row in perf_analyzer's CSV: {csv_text[:200]!r}")
    row = rows[0]
    try:
        rate = float(row["Inferences/Second"])
        p50 = float(row["p50 latency"]) / 1000.0
    except (KeyError, TypeError, ValueError) as exc:
        return Result(error=f"cannot read perf_analyzer's CSV ({exc!r}): {csv_text[:200]!r}")
    mean = re.search(r"^\s*Avg latency: (\d+) usec", stdout, re.MULTILINE)
    return Result(rate=rate, p50_ms=p50, mean_ms=int(mean.group(1)) / 1000.0 if mean else None)


def pa_client(
    setup: Setup, model: str, concurrency: int, shape: str | None = None, protocol: str = "http"
) -> Callable[[int], Result]:
    """perf_analyzer ``--concurrency-range N -i PROTOCOL`` on ``setup``'s Triton (``setup.url`` its endpoint of
    that protocol); its rate and latencies from its CSV, its CPU per request sampled from outside like every
    client (divided by what Triton counted)."""

    def run(duration: int) -> Result:
        try:
            tool = ensure()
        except Unavailable as exc:
            return Result(error=str(exc))
        name = f"perf-analyzer-{protocol}-{model}-{concurrency}"
        csv_path = setup.workdir / f"{name}.csv"
        csv_path.unlink(missing_ok=True)
        log = setup.workdir / f"{name}.log"
        cmd = command(
            tool,
            setup.url,
            model,
            concurrency=concurrency,
            duration=duration,
            csv_path=csv_path,
            shape=shape,
            protocol=protocol,
        )
        sampler = setup.sampler()
        code, out = run_process(setup.command(cmd), tool.env(), 4 * duration + SUBPROCESS_GRACE_S, log, sampler)
        (setup.workdir / f"{name}.out").write_text(out)
        if code != 0 or not csv_path.exists():
            tail = " | ".join((out.strip().splitlines() or ["(no output)"])[-3:])
            return Result(error=f"perf_analyzer exited {code}: {tail} ({shlex.join(cmd)})")
        result = parse(csv_path.read_text(), out).with_concurrency(concurrency)
        return add_cost(result, sampler, ours=False)

    return run
