"""``make bench``: locust-inference against baselines measured in the same run, on 127.0.0.1.

    python -m bench.run [--duration 10] [--repeats 3] [--quick] [--output bench/RESULTS.md]

Every client of a comparison runs once per repeat, one after the other (A, B, C, A, B, C, ...), and a
table reports the median over the repeats; ratios are of those medians, with the range of the per-repeat
ratios beside them. Nothing here is a test: a missed goal is reported, not failed.

The server is nginx (one worker process) configured as a null inference server (:mod:`bench.nginx`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import nginx, sections
from servers import children
from servers.children import clean_env

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
IMAGE = REPO / "data" / "img1.jpg"
APT_PACKAGES = ("nginx", "libnginx-mod-http-echo", "wrk")
SUBPROCESS_GRACE_S = 90.0
OPEN_USERS, OPEN_RATE = 10, 500  # the open-loop row: 5,000 req/s offered
IMAGESET_COUNT = 1000  # images in the image-set preprocessing rows
TENSOR_BYTES = 3 * 224 * 224 * 4  # one preprocessed image, FP32


# --------------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Result:
    """One client's measurement in one repeat. ``rate`` is requests/s (images/s for preprocessing)."""

    rate: float | None = None
    p50_ms: float | None = None
    csv_p50_ms: float | None = None  # Locust's CSV "50%" column (whole ms)
    mean_ms: float | None = None
    busy: float | None = None  # rate x mean latency / concurrency (Little's law): 1.0 = never idle
    cpu_us: float | None = None  # CPU (user + system) of the client process per request, µs
    io_cpu_us: float | None = None  # of that, our I/O threads' (Locust runs of ours only)
    # Open-loop users only, from latency.json's ``open_loop`` (all users together):
    offered_rate: float | None = None  # users x --rate, req/s
    achieved_rate: float | None = None  # completed per second of stream
    dropped: int | None = None  # due while --max-in-flight were out: never sent
    unfinished: int | None = None  # in flight when the run stopped
    lag_p99_ms: float | None = None  # actual - intended send time, p99
    bytes_per_image: float | None = None  # image sets: the process's memory growth per preprocessed image
    failures: int = 0
    error: str | None = None

    def with_concurrency(self, concurrency: int) -> Result:
        """Sets :attr:`busy`, the share of the time each user (connection) has a request in flight."""
        if self.rate is not None and self.mean_ms is not None:
            self.busy = self.rate * self.mean_ms / 1000.0 / concurrency
        return self


@dataclass
class Client:
    """A measured client: a stable key, a label for the table and how to run it for ``duration`` s."""

    key: str
    group: str
    label: str
    run: Callable[[int], Result]
    unit: str = "req/s"
    results: list[Result] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        """The median of ``attr`` over the repeats that produced it."""
        values = [getattr(r, attr) for r in self.results if getattr(r, attr) is not None and r.error is None]
        return statistics.median(values) if values else None


_children: set[subprocess.Popen[bytes]] = set()


def run_process(cmd: list[str], env: dict[str, str], timeout: float, log: Path) -> tuple[int, str]:
    """Runs ``cmd`` in its own process group (killed on timeout or interrupt); returns (code, stdout).

    stderr goes to ``log``.
    """
    with open(log, "wb") as err:
        proc = children.start(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    _children.add(proc)
    try:
        out, _ = children.communicate(proc, timeout)
    except subprocess.TimeoutExpired:
        return -1, ""
    finally:
        if proc.poll() is None:
            children.kill(proc)
        _children.discard(proc)
    return proc.returncode, out.decode(errors="replace")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Setup:
    """What every client needs: the server, the encoded bodies and a scratch directory."""

    url: str
    workdir: Path
    triton_body: Path
    header_length: int
    tensor_npy: Path
    big_image: Path


def wrk_client(setup: Setup, connections: int, model: str = nginx.FAST_MODEL) -> Callable[[int], Result]:
    """``wrk -t1 -cN --latency`` posting the Triton body with a Lua script."""

    def run(duration: int) -> Result:
        env = clean_env(
            BENCH_BODY=str(setup.triton_body),
            BENCH_HEADER_LENGTH=str(setup.header_length),
            BENCH_CONTENT_TYPE="application/octet-stream",
        )
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(BENCH / "wrk_post.lua")]
        cmd.append(f"{setup.url}/v2/models/{model}/infer")
        log = setup.workdir / f"wrk-{model}-{connections}.log"
        code, out = run_process(cmd, env, duration + SUBPROCESS_GRACE_S, log)
        if code != 0:
            return Result(error=f"wrk exited {code}: {_tail(log)}")
        return parse_wrk(out).with_concurrency(connections)

    return run


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> Result:
    """Requests/sec, the 50% latency and the errors from ``wrk --latency`` output."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    mean = re.search(r"^\s+Latency\s+([\d.]+)(us|ms|s)\s", text, re.MULTILINE)
    if not rate or not p50:
        return Result(error=f"cannot parse wrk output: {text[-300:]!r}")
    failures = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        failures += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        failures += sum(int(g) for g in sock.groups())
    return Result(
        rate=float(rate.group(1)),
        p50_ms=float(p50.group(1)) * _UNITS_MS[p50.group(2)],
        mean_ms=float(mean.group(1)) * _UNITS_MS[mean.group(2)] if mean else None,
        failures=failures,
        error=f"{failures} failed requests" if failures else None,
    )


def locust_client(
    setup: Setup, user_file: str, users: int, extra: list[str], name: str, *, env: dict[str, str] | None = None
) -> Callable[[int], Result]:
    """Headless Locust, one process: ``-u N -r N -t Ds --reset-stats --csv``; the rate and the CSV's 50%
    come from ``PREFIX_stats.csv``, the exact p50 from :mod:`bench.locustfiles.latency`."""

    def run(duration: int) -> Result:
        prefix = setup.workdir / f"locust-{name}"
        latency_out = setup.workdir / f"locust-{name}-latency.json"
        summary = prefix.parent / "latency.json"  # locust-inference's, next to the --csv files
        for stale in (Path(f"{prefix}_stats.csv"), latency_out, summary):
            stale.unlink(missing_ok=True)
        child_env = clean_env(
            BENCH_BODY=str(setup.triton_body),
            BENCH_HEADER_LENGTH=str(setup.header_length),
            BENCH_LATENCY_OUT=str(latency_out),
            **(env or {}),
        )
        cmd = [sys.executable, "-m", "locust", "-f", f"{user_file},{BENCH / 'locustfiles' / 'latency.py'}"]
        cmd += ["--headless", "-u", str(users), "-r", str(users), "-t", f"{duration}s", "--host", setup.url]
        cmd += ["--csv", str(prefix), "--reset-stats", "--only-summary", "--loglevel", "WARNING", *extra]
        log = setup.workdir / f"locust-{name}.log"
        code, _ = run_process(cmd, child_env, duration + SUBPROCESS_GRACE_S, log)
        result = parse_locust(Path(f"{prefix}_stats.csv"), latency_out, code, log).with_concurrency(users)
        return add_open_loop(result, summary)

    return run


def add_open_loop(result: Result, summary: Path) -> Result:
    """The open-loop numbers of ``summary`` (locust-inference's latency.json), when a request name has them."""
    try:
        requests = json.loads(summary.read_text()).get("requests", {})
    except (OSError, ValueError):
        return result
    for entry in requests.values():
        ol = entry.get("open_loop")
        if ol:
            result.offered_rate = ol.get("offered_rate_per_s")
            result.achieved_rate = ol.get("achieved_per_s")
            result.dropped = ol.get("dropped")
            result.unfinished = ol.get("unfinished")
            result.lag_p99_ms = ol.get("lag_ms", {}).get("p99")
            break
    return result


def parse_locust(stats_csv: Path, latency_json: Path, code: int, log: Path) -> Result:
    """The Aggregated row of Locust's stats CSV plus the exact p50 written by the latency listener."""
    if not stats_csv.exists():
        return Result(error=f"locust exited {code} without {stats_csv.name}: {_tail(log)}")
    with open(stats_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    if not rows:
        return Result(error=f"no Aggregated row in {stats_csv.name}: {_tail(log)}")
    row = rows[0]
    failures = int(row["Failure Count"])
    exact = cpu_us = io_cpu_us = None
    if latency_json.exists():
        written = json.loads(latency_json.read_text())
        exact, cpu_us, io_cpu_us = written.get("p50_ms"), written.get("cpu_us"), written.get("io_cpu_us")
    error = None
    if failures:
        error = f"{failures} failed requests: {_tail(log, 4)}"
    elif code != 0:
        error = f"locust exited {code}: {_tail(log)}"
    return Result(
        rate=float(row["Requests/s"]),
        p50_ms=exact,
        csv_p50_ms=float(row["50%"]) if row["50%"] not in ("", "N/A") else None,
        mean_ms=float(row["Average Response Time"]),
        cpu_us=cpu_us,
        io_cpu_us=io_cpu_us or None,
        failures=failures,
        error=error,
    )


def json_client(setup: Setup, name: str, cmd: list[str]) -> Callable[[int], Result]:
    """A client script of this package that prints one JSON line (``req_s`` or ``images_s``, ``p50_ms``)."""

    def run(duration: int) -> Result:
        log = setup.workdir / f"{name}.log"
        code, out = run_process(
            [sys.executable, "-m", *cmd, "--duration", str(duration)], clean_env(), duration + SUBPROCESS_GRACE_S, log
        )
        if code != 0 or not out.strip():
            return Result(error=f"{cmd[0]} exited {code}: {_tail(log)}")
        data = json.loads(out.strip().splitlines()[-1])
        failures = int(data.get("failures", 0))
        return Result(
            rate=data.get("req_s", data.get("images_s")),
            p50_ms=data.get("p50_ms"),
            mean_ms=data.get("mean_ms"),
            bytes_per_image=data.get("bytes_per_image"),
            failures=failures,
            error=f"{failures} failed requests" if failures else None,
        )

    return run


def build_clients(setup: Setup) -> list[Client]:
    """Every measured client, in the order it runs within a repeat."""
    triton = ["--server", "triton", "--model-name", nginx.FAST_MODEL, "HighUser"]
    open_loop = ["--server", "triton", "--model-name", nginx.FAST_MODEL, "LowUser"]
    open_loop += ["--rate", str(OPEN_RATE), "--max-in-flight", "4", "--overload", "drop"]
    slow = ["--server", "triton", "--model-name", nginx.SLOW_MODEL, "HighUser"]
    litserve = ["--server", "litserve", "--model-name", "m", "HighUser"]
    fast_file = str(BENCH / "locustfiles" / "fasthttp.py")
    infer_url = f"{setup.url}/v2/models/{nginx.FAST_MODEL}/infer"
    clients = [
        Client("wrk1", "triton", "wrk -t1, 1 connection", wrk_client(setup, 1)),
        Client("wrk10", "triton", "wrk -t1, 10 connections", wrk_client(setup, 10)),
        Client(
            "seed",
            "triton",
            "seed: requests.Session, header + tobytes() per request, 1 thread",
            json_client(setup, "seed-triton", ["bench.seed_clients", "triton", infer_url, str(setup.tensor_npy)]),
        ),
        Client(
            "http10",
            "triton",
            "Locust HttpUser, 10 users",
            locust_client(setup, fast_file, 10, [], "http10", env={"BENCH_CLIENT": "http"}),
        ),
        Client(
            "fast10",
            "triton",
            "Locust FastHttpUser, 10 users",
            locust_client(setup, fast_file, 10, [], "fast10", env={"BENCH_CLIENT": "fasthttp"}),
        ),
        Client("ours1", "triton", "ours: HighUser, 1 user", locust_client(setup, "locustfile.py", 1, triton, "ours1")),
        Client(
            "ours10", "triton", "ours: HighUser, 10 users", locust_client(setup, "locustfile.py", 10, triton, "ours10")
        ),
        Client(
            "ours10_io2",
            "triton",
            "ours: HighUser, 10 users, LOCUST_INFERENCE_IO_THREADS=2 (not the default; no goal)",
            locust_client(setup, "locustfile.py", 10, triton, "ours10-io2", env={"LOCUST_INFERENCE_IO_THREADS": "2"}),
        ),
        Client(
            "open10",
            "triton",
            f"ours: LowUser open loop, {OPEN_USERS} users x {OPEN_RATE} req/s (--max-in-flight 4, drop)",
            locust_client(setup, "locustfile.py", OPEN_USERS, open_loop, "open10"),
        ),
        Client(
            "direct1",
            "triton",
            "ours without Locust: Endpoint + RequestSlot, 1 thread",
            json_client(setup, "direct", ["bench.direct", infer_url, str(setup.triton_body), str(setup.header_length)]),
        ),
        Client(
            "seed_json",
            "litserve",
            'seed: json.dumps({"input": arr.tolist()}) per request, requests, 1 thread',
            json_client(
                setup,
                "seed-litserve",
                ["bench.seed_clients", "litserve", f"{setup.url}/predict", str(setup.tensor_npy)],
            ),
        ),
        Client(
            "ours_json",
            "litserve",
            "ours: HighUser --server litserve, 1 user",
            locust_client(setup, "locustfile.py", 1, litserve, "ours-json"),
        ),
    ]
    for image_key, image, image_label in (("img1", IMAGE, "img1.jpg 512x600"), ("big", setup.big_image, "4000x3000")):
        for which, label in (("ours", "preprocess_image"), ("pillow", "Pillow + numpy")):
            clients.append(
                Client(
                    f"pre_{which}_{image_key}",
                    "preprocess",
                    f"{label}, {image_label}",
                    json_client(setup, f"pre-{which}-{image_key}", ["bench.preprocess", which, str(image)]),
                    unit="images/s",
                )
            )
    for which, label in (("ours", "image_inputs.preprocess, in parallel"), ("pillow", "Pillow + numpy, in turn")):
        clients.append(
            Client(
                f"imageset_{which}",
                "preprocess",
                f"{label}, {IMAGESET_COUNT} JPEGs of 300 to 1,200 pixels a side",
                json_client(setup, f"imageset-{which}", ["bench.imageset", which, "--count", str(IMAGESET_COUNT)]),
                unit="images/s",
            )
        )
    clients.append(
        Client(
            "wrk_slow50",
            "concurrency",
            "wrk -t1, 50 connections, 20 ms server",
            wrk_client(setup, 50, nginx.SLOW_MODEL),
        )
    )
    for users in (1, 10, 50):
        clients.append(
            Client(
                f"slow{users}",
                "concurrency",
                f"ours: HighUser, {users} user{'s' if users > 1 else ''}, 20 ms server",
                locust_client(setup, "locustfile.py", users, slow, f"slow{users}"),
            )
        )
    return clients


# --------------------------------------------------------------------------------------------------
# Report


Operand = tuple[str, str] | float  # (client key, Result attribute) or a constant


@dataclass(frozen=True)
class Ratio:
    """A derived number: ``a / b`` (unit "x", or "%" for a share) or ``a - b`` (unit "us", both in ms; "ms" a
    latency and "n" a count, usually minus 0.0)."""

    label: str
    a: Operand
    b: Operand
    unit: str = "x"
    goal: str | None = None
    passed: Callable[[float], bool] | None = None

    def compute(self, get: Callable[[str, str], float | None]) -> float | None:
        """The value from ``get(key, attr)`` (the medians, or one repeat's results)."""
        a, b = (op if isinstance(op, float) else get(*op) for op in (self.a, self.b))
        if a is None or b is None:
            return None
        if self.unit in ("us", "ms", "n"):
            return a - b
        return a / b if b else None


def ratios() -> list[Ratio]:
    """The goals of the issue, in order, plus numbers for orientation (no goal)."""
    rate, p50 = "rate", "p50_ms"
    return [
        Ratio("ours 10 users / wrk 10 connections (req/s)", ("ours10", rate), ("wrk10", rate), "x", ">= 0.8",
              lambda v: v >= 0.8),
        Ratio("ours 10 users / FastHttpUser 10 users (req/s)", ("ours10", rate), ("fast10", rate), "x", ">= 2",
              lambda v: v >= 2),
        Ratio("ours 1 user p50 - wrk 1 connection p50 (ours timed in Rust, without Locust)", ("direct1", p50),
              ("wrk1", p50), "us", "<= 50 us", lambda v: v <= 0.050),
        Ratio("ours 1 user p50 - wrk 1 connection p50 (ours in Locust, exact response_time)", ("ours1", p50),
              ("wrk1", p50), "us", "<= 50 us", lambda v: v <= 0.050),
        Ratio("LitServe JSON: ours 1 user / seed 1 thread (req/s)", ("ours_json", rate), ("seed_json", rate), "x",
              ">= 100", lambda v: v >= 100),
        Ratio("preprocessing img1.jpg: Pillow+numpy time / ours time (per image, p50)", ("pre_pillow_img1", p50),
              ("pre_ours_img1", p50), "x", ">= 3", lambda v: v >= 3),
        Ratio("preprocessing 4000x3000: Pillow+numpy time / ours time (per image, p50)", ("pre_pillow_big", p50),
              ("pre_ours_big", p50), "x", ">= 3", lambda v: v >= 3),
        Ratio(f"preprocessing {IMAGESET_COUNT} images: ours / Pillow+numpy (images/s)", ("imageset_ours", rate),
              ("imageset_pillow", rate), "x", ">= 4", lambda v: v >= 4),
        Ratio(f"preprocessing {IMAGESET_COUNT} images: memory per image / tensor size ({TENSOR_BYTES:,} bytes)",
              ("imageset_ours", "bytes_per_image"), float(TENSOR_BYTES), "x", "<= 1.05", lambda v: v <= 1.05),
        Ratio(f"open loop, {OPEN_USERS} users x {OPEN_RATE} req/s: achieved / offered (req/s)",
              ("open10", "achieved_rate"), ("open10", "offered_rate"), "x", ">= 0.99", lambda v: v >= 0.99),
        Ratio(f"open loop, {OPEN_USERS} users x {OPEN_RATE} req/s: dropped requests", ("open10", "dropped"), 0.0, "n",
              "0", lambda v: v == 0),
        Ratio(f"open loop, {OPEN_USERS} users x {OPEN_RATE} req/s: schedule lag p99", ("open10", "lag_p99_ms"), 0.0,
              "ms", "<= 1 ms", lambda v: v <= 1.0),
        Ratio("20 ms server, 50 users: achieved / ideal (50 x 50 req/s)", ("slow50", rate), 2500.0, "x", ">= 0.9",
              lambda v: v >= 0.9),
        Ratio("20 ms server, wrk 50 connections: achieved / ideal (50 x 50 req/s)", ("wrk_slow50", rate), 2500.0),
        Ratio("20 ms server, 50 users: ours / wrk 50 connections (req/s)", ("slow50", rate), ("wrk_slow50", rate)),
        Ratio("20 ms server, 50 users: share of the time each user has a request in flight "
              "(rate x mean latency / 50)", ("slow50", "busy"), 1.0, "%"),
        Ratio("20 ms server, wrk 50 connections: the same for wrk", ("wrk_slow50", "busy"), 1.0, "%"),
        Ratio("20 ms server, 10 users: achieved / ideal (10 x 50 req/s)", ("slow10", rate), 500.0),
        Ratio("20 ms server, 1 user: achieved / ideal (50 req/s)", ("slow1", rate), 50.0),
        Ratio("ours 1 user / wrk 1 connection (req/s)", ("ours1", rate), ("wrk1", rate)),
        Ratio("ours 10 users / seed 1 thread (req/s)", ("ours10", rate), ("seed", rate)),
        Ratio("ours 10 users / HttpUser 10 users (req/s)", ("ours10", rate), ("http10", rate)),
        Ratio("ours 10 users, 2 I/O threads / wrk 10 connections (req/s)", ("ours10_io2", rate), ("wrk10", rate)),
        Ratio("ours 10 users, 2 I/O threads / ours 10 users, default 1 (req/s)", ("ours10_io2", rate),
              ("ours10", rate)),
    ]  # fmt: skip


def _fmt(value: float | None, unit: str) -> str:
    """``value`` for the tables: "us" a difference of ms values, "ms" a latency, "%" a share, else a number."""
    if value is None:
        text = "—"
    elif unit == "us":
        text = f"{value * 1000:+.0f} us"
    elif unit == "%":
        text = f"{value:.0%}"
    elif unit == "ms":
        text = f"{value * 1000:.0f} us" if value < 1 else f"{value:.2f} ms"
    elif unit == "n":
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return text


def _cpu(c: Client) -> str:
    """CPU µs per request of a Locust client: the process's, and our I/O threads' where there are any."""
    process, io = c.median("cpu_us"), c.median("io_cpu_us")
    if process is None:
        return "—"
    return f"{process:.0f} us" + (f" / {io:.0f} us" if io is not None else "")


def render(clients: list[Client], repeats: int) -> tuple[str, list[tuple[str, bool | None]]]:
    """The Markdown tables and the verdicts [(goal label, passed or None when not measured)]."""
    by_key = {c.key: c for c in clients}
    lines = [
        "| group | client | rate (median) | p50 latency | mean latency | Locust CSV 50% | CPU per request "
        "(process / I/O threads) | per repeat (rate) | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in clients:
        rate = c.median("rate")
        per = ", ".join(_fmt(r.rate, "") if r.error is None else "err" for r in c.results)
        csv50 = c.median("csv_p50_ms")
        notes = "; ".join(sorted({r.error for r in c.results if r.error}))
        if (offered := c.median("offered_rate")) is not None:
            open_loop = (
                f"offered {_fmt(offered, '')}, achieved {_fmt(c.median('achieved_rate'), '')} req/s, dropped "
                f"{_fmt(c.median('dropped'), 'n')}, unfinished {_fmt(c.median('unfinished'), 'n')}, lag p99 "
                f"{_fmt(c.median('lag_p99_ms'), 'ms')}"
            )
            notes = f"{open_loop}; {notes}" if notes else open_loop
        lines.append(
            f"| {c.group} | {c.label} | {_fmt(rate, '')} {c.unit} | {_fmt(c.median('p50_ms'), 'ms')} | "
            f"{_fmt(c.median('mean_ms'), 'ms')} | "
            f"{'—' if csv50 is None else f'{csv50:.0f} ms'} | {_cpu(c)} | {per} | {notes.replace('|', '/')[:300]} |"
        )

    def median_get(key: str, attr: str) -> float | None:
        return by_key[key].median(attr) if key in by_key else None

    lines += ["", "| comparison | value (of medians) | per-repeat range | goal | result |", "|---|---:|---:|---|---|"]
    verdicts: list[tuple[str, bool | None]] = []
    for ratio in ratios():
        value = ratio.compute(median_get)
        per_repeat = []
        for i in range(repeats):

            def get(key: str, attr: str, i: int = i) -> float | None:
                results = by_key[key].results if key in by_key else []
                if i >= len(results) or results[i].error is not None:
                    return None
                return getattr(results[i], attr)

            v = ratio.compute(get)
            if v is not None:
                per_repeat.append(v)
        span = f"{_fmt(min(per_repeat), ratio.unit)} … {_fmt(max(per_repeat), ratio.unit)}" if per_repeat else "—"
        verdict = ""
        if ratio.goal is not None and ratio.passed is not None:
            ok = None if value is None else ratio.passed(value)
            verdicts.append((ratio.label, ok))
            verdict = "not measured" if ok is None else ("**met**" if ok else "**missed**")
        shown = _fmt(value, ratio.unit) + ("x" if ratio.unit == "x" and value is not None else "")
        lines.append(f"| {ratio.label} | {shown} | {span} | {ratio.goal or ''} | {verdict} |")
    return "\n".join(lines), verdicts


def _read(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr).strip() else "?"


def machine() -> list[tuple[str, str]]:
    """A description of this machine and of the software measured."""
    # Versions from the installed metadata: importing locust here would monkey-patch this process (gevent).
    from importlib.metadata import version

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    commit = _read(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("cores (nproc)", _read(["nproc"])),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("OS", _os_name()),
        ("load average at start (1, 5, 15 min)", loadavg()),
        ("Python", platform.python_version()),
        ("locust", version("locust")),
        ("locust-inference", f"{version('locust-inference')} (git {commit}{_extension_built()})"),
        ("numpy / Pillow", f"{np.__version__} / {version('pillow')}"),
        ("nginx", _read(["nginx", "-v"]).replace("nginx version: ", "")),
        ("wrk", _read(["wrk", "-v"]).split(" Copyright")[0]),
        ("LOCUST_INFERENCE_IO_THREADS", "default (unset) for every client but the one row that names it"),
    ]  # fmt: skip


def _extension_built() -> str:
    """When the native extension in the source tree was built (others may be rebuilding it)."""
    built = sorted((REPO / "python" / "locust_inference").glob("_native*.so"))
    if not built:
        return ""
    stamp = dt.datetime.fromtimestamp(built[0].stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f", extension built {stamp}"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine shows here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


METHOD = """\
## How it was measured
- Server: nginx, 1 worker process, on 127.0.0.1, as a null inference server: every request body is read in
  full (echo module `echo_read_request_body`), the answer is a fixed valid response with keep-alive (Triton:
  a KServe v2 JSON response, output `x.45` FP32 [1,2]; LitServe: `{{"output": [[0.1, 0.9]]}}`). The 20 ms
  server is the same location with `echo_sleep 0.02` after the body is read.
- Triton request: `encode_triton_request(preprocess_image('data/img1.jpg')[None], 'x', ['x.45'])`:
  {body_bytes:,} bytes (602,112-byte FP32 tensor + {header_length}-byte JSON header), the same bytes for every
  client. LitServe request: the same tensor as JSON, {json_bytes:,} bytes (ours: `encode_litserve_request`).
- One client at a time (never two benchmark clients at once; the 2 cores are shared with nginx and with
  whatever else runs on the machine: see the load averages above): `wrk -t1` (Lua script
  `bench/wrk_post.lua`); Locust headless, one process, `-u N -r N -t {duration}s --reset-stats` (steady state:
  the statistics restart when spawning completes), rate from `--csv` `Requests/s`; p50 for Locust users is the
  exact median of the `response_time` of each request (listener `bench/locustfiles/latency.py`), beside
  Locust's own CSV 50% column (whole ms); wrk's p50 from `--latency`; the seed's loops and
  `bench/direct.py` time each request themselves.
- Open loop (`open10`): `LowUser --rate 500 --max-in-flight 4 --overload drop`, 10 users, one Locust process:
  5,000 req/s offered. Offered and achieved rates, dropped and unfinished requests and the schedule lag p99
  (actual - intended send time) come from the run's `latency.json` (`requests.<name>.open_loop`, over the
  whole run, spawning included); its p50 is from the intended send time.
- Preprocessing: per-image time (file read + decode + resize + crop + normalize), median over a
  {duration} s loop; the 4000x3000 JPEG ({big_bytes:,} bytes, quality 90, 4:2:0) is made from img1.jpg by
  `bench.preprocess.make_large_jpeg`. Outputs of the two pipelines differ by at most {max_diff_img1:.2g} (img1)
  and {max_diff_big:.2g} (4000x3000).
- {repeats} repeats; within a repeat each client runs once, in the order of the table (A, B, C, A, B, C, ...);
  medians over the repeats; a ratio is the ratio of the medians, the range is that of the per-repeat ratios.
"""


# --------------------------------------------------------------------------------------------------
# Set-up


def ensure_tools() -> None:
    """Installs nginx, its echo module and wrk with apt-get when missing (as root), else explains."""
    missing = [
        pkg
        for pkg, present in (
            ("nginx", shutil.which("nginx") is not None),
            ("libnginx-mod-http-echo", nginx.ECHO_MODULE.exists()),
            ("wrk", shutil.which("wrk") is not None),
        )
        if not present
    ]
    if not missing:
        return
    apt = shutil.which("apt-get")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or apt is None:
            raise SystemExit(
                f"bench needs {', '.join(missing)}: install them (Debian: apt-get install {' '.join(missing)})"
            )
        prefix = [sudo]
    if apt is None:
        raise SystemExit(f"bench needs {', '.join(missing)} and this system has no apt-get: install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"==> installing {', '.join(missing)} with apt-get (Debian packages {', '.join(APT_PACKAGES)})", flush=True)
    for cmd in (
        [*prefix, apt, "update", "-q"],
        [*prefix, apt, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
    ):
        print(f"    $ {shlex.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    print("    (the benchmark runs its own nginx; it never uses the system service)", flush=True)


def preflight() -> None:
    """Fails early, with the reason, when the package cannot be imported the way the clients import it."""
    check = subprocess.run(
        [sys.executable, "-c", "import locust_inference.users"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        tail = check.stderr.strip().splitlines()[-1:] or ["?"]
        raise SystemExit(f"cannot import locust_inference.users ({tail[0]}): run `make install` first")


def prepare(workdir: Path) -> tuple[Path, int, Path, Path, dict[str, float]]:
    """Encodes the Triton body, saves the tensor for the seed clients and makes the 4000x3000 JPEG."""
    from locust_inference import encode_litserve_request, encode_triton_request, preprocess_image

    from bench.preprocess import make_large_jpeg, pillow_preprocess

    tensor = preprocess_image(IMAGE)[None]
    body, header_length = encode_triton_request(tensor, nginx.INPUT_NAME, [nginx.OUTPUT_NAME])
    assert header_length is not None
    body_path = workdir / "triton-body.bin"
    body_path.write_bytes(body)
    npy = workdir / "tensor.npy"
    np.save(npy, tensor)
    big = make_large_jpeg(IMAGE, workdir / "large-4000x3000.jpg")
    facts = {
        "body_bytes": len(body),
        "header_length": header_length,
        "json_bytes": len(encode_litserve_request(tensor)),
        "big_bytes": big.stat().st_size,
        "max_diff_img1": float(np.abs(preprocess_image(IMAGE) - pillow_preprocess(IMAGE)).max()),
        "max_diff_big": float(np.abs(preprocess_image(big) - pillow_preprocess(big)).max()),
    }
    return body_path, header_length, npy, big, facts


@contextlib.contextmanager
def _terminate_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise KeyboardInterrupt so that every ``finally`` (nginx, clients) runs."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for proc in list(_children):
            children.kill(proc)
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s, 1 repeat, results not written")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file (default bench/RESULTS.md)")
    parser.add_argument("--only", default=None, help="comma-separated client keys, for development (not written)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeats = 2, 1
    if args.duration < 1 or args.repeats < 1:
        parser.error("--duration and --repeats must be at least 1")
    output = args.output or (None if args.quick or args.only else BENCH / "RESULTS.md")
    command = shlex.join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])])
    if os.environ.get("MAKELEVEL"):
        bench_args = os.environ.get("BENCH_ARGS", "").strip()
        command = "make bench" + (f" BENCH_ARGS={shlex.quote(bench_args)}" if bench_args else "")

    ensure_tools()
    preflight()
    description = machine()
    with contextlib.suppress(OSError, ValueError):
        busy = float(Path("/proc/loadavg").read_text().split()[0])
        if busy > 0.5:
            print(f"note: load average {busy:.2f} before starting: other work shares these cores", flush=True)
    started = time.monotonic()
    with _terminate_on_signals(), tempfile.TemporaryDirectory(prefix="li-bench-") as tmp:
        workdir = Path(tmp)
        print("==> preparing the request bodies and the 4000x3000 JPEG", flush=True)
        body, header_length, npy, big, facts = prepare(workdir)
        with nginx.null_server() as server:
            print(f"==> null server (nginx, 1 worker) at {server.url}", flush=True)
            setup = Setup(server.url, workdir, body, header_length, npy, big)
            clients = build_clients(setup)
            if args.only:
                keys = set(args.only.split(","))
                unknown = keys - {c.key for c in clients}
                if unknown:
                    parser.error(f"unknown --only keys {sorted(unknown)}; known: {[c.key for c in clients]}")
                clients = [c for c in clients if c.key in keys]
            total = len(clients) * args.repeats
            n = 0
            for repeat in range(args.repeats):
                for client in clients:
                    n += 1
                    print(f"[{n}/{total}] repeat {repeat + 1}/{args.repeats}: {client.label} … ", end="", flush=True)
                    result = client.run(args.duration)
                    client.results.append(result)
                    p50 = f", p50 {_fmt(result.p50_ms, 'ms')}" if result.p50_ms is not None else ""
                    if result.offered_rate is not None:
                        p50 += (
                            f"; offered {_fmt(result.offered_rate, '')}, achieved {_fmt(result.achieved_rate, '')}, "
                            f"dropped {_fmt(result.dropped, 'n')}, lag p99 {_fmt(result.lag_p99_ms, 'ms')}"
                        )
                    status = f"  [{result.error}]" if result.error else ""
                    print(f"{_fmt(result.rate, '')} {client.unit}{p50}{status}", flush=True)
    description.append(("load average at end (1, 5, 15 min)", loadavg()))
    tables, verdicts = render(clients, args.repeats)
    minutes = (time.monotonic() - started) / 60
    header = "\n".join(f"| {k} | {v} |" for k, v in description)
    report = (
        "# Benchmark results\n\n"
        f"Command: `{command}`: {args.duration} s per measurement, repeats: {args.repeats}, "
        f"{minutes:.1f} min in all. Written by `bench/run.py`; do not edit by hand.\n\n"
        f"| machine | |\n|---|---|\n{header}\n\n## Results\n\n{tables}\n\n"
        + METHOD.format(duration=args.duration, repeats=args.repeats, **facts)
    )
    print()
    print(tables)
    met = sum(1 for _, ok in verdicts if ok)
    print(f"\ngoals met: {met}/{len(verdicts)}")
    for label, ok in verdicts:
        if not ok:
            print(f"  {'not measured' if ok is None else 'missed'}: {label}")
    if output is not None:
        kept = sections.kept_sections(output)  # e.g. bench/master_merge.py's, which this run does not measure
        output.write_text(report + (f"\n{kept}" if kept else ""))
        print(f"written to {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench: interrupted; nginx and the clients it started are stopped", file=sys.stderr)
        sys.exit(130)
