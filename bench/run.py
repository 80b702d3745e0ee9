"""``make bench``: locust-inference against baselines measured in the same run, on 127.0.0.1.

    python -m bench.run [--duration 10] [--repeats 3] [--quick] [--output bench/RESULTS.md]

Every client of a comparison runs once per repeat, one after the other (A, B, C, A, B, C, ...), and a
table reports the median over the repeats; ratios are of those medians, with the range of the per-repeat
ratios beside them. Nothing here is a test: a missed goal is reported, not failed.

The server is nginx (one worker process) configured as a null inference server (:mod:`bench.nginx`), except
for the rows on a real Triton (:mod:`bench.triton_server`, started only when one of them is selected), where
NVIDIA's perf_analyzer (:mod:`bench.perf_analyzer`) and ours send the same-size requests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench import grpc_null, nginx, perf_analyzer, sections, triton_server
from bench.clients import (
    BENCH,
    REPO,
    Client,
    Result,
    Setup,
    h2load_client,
    json_client,
    kill_all,
    locust_client,
    run_main,
    wrk_client,
)
from bench.perf_analyzer import pa_client
from bench.pinning import CLIENT_CPU, SERVER_CPU, pin_group
from bench.tables import IMAGESET_COUNT, OPEN_RATE, OPEN_USERS, fmt, render
from servers.children import clean_env
from servers.launch import ServerStartError

__all__ = ["main"]

IMAGE = REPO / "data" / "img1.jpg"
APT_PACKAGES = ("nginx", "libnginx-mod-http-echo", "wrk", "nghttp2-client")  # nghttp2-client: h2load
NORMAL_SCHED = {"LOCUST_INFERENCE_PYTHON_SCHED": "normal"}  # Python's thread without SCHED_BATCH
MODES = {"both": (True, False), "pinned": (True,), "unpinned": (False,)}
PARTIAL_SECTION = "bench.run.partial"  # where a run with --only --output FILE writes its rows


def build_clients(setup: Setup) -> list[Client]:
    """Every client that loads the server, in the order it runs within a repeat (of one mode)."""
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
            locust_client(setup, fast_file, 10, [], "http10", env={"BENCH_CLIENT": "http"}, ours=False),
        ),
        Client(
            "fast10",
            "triton",
            "Locust FastHttpUser, 10 users",
            locust_client(setup, fast_file, 10, [], "fast10", env={"BENCH_CLIENT": "fasthttp"}, ours=False),
        ),
        Client("ours1", "triton", "ours: HighUser, 1 user", locust_client(setup, "locustfile.py", 1, triton, "ours1")),
        Client(
            "ours10", "triton", "ours: HighUser, 10 users", locust_client(setup, "locustfile.py", 10, triton, "ours10")
        ),
        Client(
            "ours10_copy",
            "triton",
            "ours: HighUser, 10 users, LOCUST_INFERENCE_ZERO_COPY=off (not the default; no goal)",
            locust_client(setup, "locustfile.py", 10, triton, "ours10-copy", env={"LOCUST_INFERENCE_ZERO_COPY": "off"}),
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
            "ours10_normal",
            "triton",
            "ours: HighUser, 10 users, LOCUST_INFERENCE_PYTHON_SCHED=normal (not the default; no goal)",
            locust_client(setup, "locustfile.py", 10, triton, "ours10-normal", env=NORMAL_SCHED),
        ),
        Client(
            "open10_normal",
            "triton",
            "ours: LowUser open loop as above, LOCUST_INFERENCE_PYTHON_SCHED=normal (not the default; no goal)",
            locust_client(setup, "locustfile.py", OPEN_USERS, open_loop, "open10-normal", env=NORMAL_SCHED),
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


# the rows on the null gRPC servers (bench.grpc_null), each started only when one of its rows is selected: the
# 602 KB image's, and the 64-byte tensor's (SMALL_KEYS)
SMALL_KEYS = ("h2load_small_1x10", "grpc_open10_small")
GRPC_KEYS = ("h2load_1x10", "h2load_10x1", "grpc10", "grpc10_c1", "grpc10_c2", "grpc_open10", *SMALL_KEYS)
GRPC = ["--server", "triton", "--model-name", nginx.FAST_MODEL, "--protocol", "grpc"]


def grpc_clients(setup: Setup) -> list[Client]:
    """The clients on the null gRPC server (``setup.url`` its h2c URL, ``setup.grpc_body`` h2load's body)."""
    open_loop = [*GRPC, "LowUser", "--rate", str(OPEN_RATE), "--max-in-flight", "4", "--overload", "drop"]
    clients = [
        Client("h2load_1x10", "gRPC", "h2load -t1, 1 connection x 10 streams", h2load_client(setup, 1, 10)),
        Client("h2load_10x1", "gRPC", "h2load -t1, 10 connections x 1 stream", h2load_client(setup, 10, 1)),
        Client(
            "grpc10",
            "gRPC",
            "ours: HighUser --protocol grpc, 10 users (default: 4 connections)",
            locust_client(setup, "locustfile.py", 10, [*GRPC, "HighUser"], "grpc10"),
        ),
    ]
    for connections in (1, 2):
        clients.append(
            Client(
                f"grpc10_c{connections}",
                "gRPC",
                f"ours: HighUser --protocol grpc, 10 users, --grpc-connections {connections} (not the default)",
                locust_client(
                    setup,
                    "locustfile.py",
                    10,
                    [*GRPC, "--grpc-connections", str(connections), "HighUser"],
                    f"grpc10-c{connections}",
                ),
            )
        )
    clients.append(
        Client(
            "grpc_open10",
            "gRPC",
            f"ours: LowUser --protocol grpc open loop, {OPEN_USERS} users x {OPEN_RATE} req/s (--max-in-flight 4, "
            "drop; no goal)",
            locust_client(setup, "locustfile.py", OPEN_USERS, open_loop, "grpc-open10"),
        )
    )
    assert tuple(c.key for c in clients) == GRPC_KEYS[: -len(SMALL_KEYS)]
    return clients


def grpc_small_clients(setup: Setup) -> list[Client]:
    """The open loop over gRPC (the goal's row) on the null gRPC server of a model with a 64-byte input, and
    h2load on the same server and message: its rate shows the server can take the 5,000 req/s offered."""
    shape = ",".join(str(d) for d in grpc_null.SMALL_INPUT[1:])  # without the batch dimension (--batch-size)
    small = ["--server", "triton", "--model-name", grpc_null.SMALL_MODEL, "--protocol", "grpc"]
    small += ["--input-data", "zero", "--shape", f"{nginx.INPUT_NAME}:{shape}", "LowUser", "--rate", str(OPEN_RATE)]
    small += ["--max-in-flight", "4", "--overload", "drop"]
    clients = [
        Client(
            "h2load_small_1x10",
            "gRPC",
            f"h2load -t1, 1 connection x 10 streams, a 64-byte FP32 [{shape}] tensor",
            h2load_client(setup, 1, 10, tag="-small"),
        ),
        Client(
            "grpc_open10_small",
            "gRPC",
            f"ours: LowUser --protocol grpc open loop as above, a 64-byte FP32 [{shape}] tensor",
            locust_client(setup, "locustfile.py", OPEN_USERS, small, "grpc-open10-small"),
        ),
    ]
    assert tuple(c.key for c in clients) == SMALL_KEYS
    return clients


# the rows on the real Triton: it is started only when one is selected
TRITON_KEYS = ("pa10", "tri_ours10", "pa10_grpc", "tri_grpc10", "tri_grpc10_c1", "tri_grpc10_c2")


def triton_clients(setup: Setup, grpc_setup: Setup) -> list[Client]:
    """The clients on the real Triton (:mod:`bench.triton_server`), ``setup`` (HTTP) and ``grpc_setup`` (its
    gRPC endpoint) counting what Triton answered."""
    model = triton_server.MODEL
    ours = ["--server", "triton", "--model-name", model, "HighUser"]
    ours_grpc = ["--server", "triton", "--model-name", model, "--protocol", "grpc", "HighUser"]
    clients = [
        Client(
            "pa10",
            "real Triton",
            f"perf_analyzer --concurrency-range 10, HTTP, binary tensors ({model})",
            pa_client(setup, model, 10),
        ),
        Client(
            "tri_ours10",
            "real Triton",
            f"ours: HighUser, 10 users ({model})",
            locust_client(setup, "locustfile.py", 10, ours, "tri-ours10"),
        ),
        Client(
            "pa10_grpc",
            "real Triton",
            f"perf_analyzer --concurrency-range 10, gRPC ({model})",
            pa_client(grpc_setup, model, 10, protocol="grpc"),
        ),
        Client(
            "tri_grpc10",
            "real Triton",
            f"ours: HighUser --protocol grpc, 10 users ({model}; default: 4 connections)",
            locust_client(grpc_setup, "locustfile.py", 10, ours_grpc, "tri-grpc10"),
        ),
    ]
    # the number of connections is a choice to measure on the real server too, not only on the null one
    for connections in (1, 2):
        clients.append(
            Client(
                f"tri_grpc10_c{connections}",
                "real Triton",
                f"ours: HighUser --protocol grpc, 10 users, --grpc-connections {connections} ({model}, not default)",
                locust_client(
                    grpc_setup,
                    "locustfile.py",
                    10,
                    [*ours_grpc[:-1], "--grpc-connections", str(connections), "HighUser"],
                    f"tri-grpc10-c{connections}",
                ),
            )
        )
    assert tuple(c.key for c in clients) == TRITON_KEYS
    return clients


def preprocessing_clients(setup: Setup) -> list[Client]:
    """The clients that only preprocess (no server): run once per repeat, on both cores, never pinned."""
    clients: list[Client] = []
    for image_key, image, image_label in (("img1", IMAGE, "img1.jpg 512x600"), ("big", setup.big_image, "4000x3000")):
        for which, label in (("ours", "preprocess_image"), ("pillow", "Pillow + numpy")):
            clients.append(
                Client(
                    f"pre_{which}_{image_key}",
                    "preprocess",
                    f"{label}, {image_label}",
                    json_client(
                        setup, f"pre-{which}-{image_key}", ["bench.preprocess", which, str(image)], sends=False
                    ),
                    unit="images/s",
                )
            )
    for which, label in (("ours", "image_inputs.preprocess, in parallel"), ("pillow", "Pillow + numpy, in turn")):
        clients.append(
            Client(
                f"imageset_{which}",
                "preprocess",
                f"{label}, {IMAGESET_COUNT} JPEGs of 300 to 1,200 pixels a side",
                json_client(
                    setup, f"imageset-{which}", ["bench.imageset", which, "--count", str(IMAGESET_COUNT)], sends=False
                ),
                unit="images/s",
            )
        )
    return clients


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
        ("h2load", _read(["h2load", "--version"])),
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
- Real Triton (`pa10`, `tri_ours10`): PyTriton's tritonserver (`servers/triton.py`, started once per run and
  pinned like nginx: every process of its group) serving `tiny_onnx`, input `input__0` FP32 [N,3,224,224]
  (global average pool + Gemm; an ONNX Runtime model behind PyTriton's Python backend, so the server costs far
  more per request than nginx and sets the rate). Both clients send one [1,3,224,224] FP32 tensor (602,112
  bytes) in binary per request: ours `data/img1.jpg` preprocessed, perf_analyzer {perf_analyzer} zeros
  (`{pa_command}`). Their CPU per request is divided by Triton's own count
  (`GET /v2/models/tiny_onnx/stats`, `inference_stats.success.count`); perf_analyzer's rate and p50 are
  from its `-f` CSV, its mean latency from its report.
- Pinned and unpinned: every client that loads a server runs in both modes in each repeat. Pinned (the
  goals): every thread of the server's processes on CPU 0 (`sched_setaffinity`), the client started under
  `taskset -c 1` (all its threads: for ours, Python's and the I/O thread), so a client's rate is its capacity
  on one core; the benchmark's own process (which samples the client) stays on CPU 0. Unpinned: both share
  every core. Preprocessing rows run once per repeat on both cores.
- CPU and wake-ups per request, the same way for every client (`bench/cpu.py`): from outside the client,
  every 0.25 s, its CPU time (`/proc/PID/stat` utime + stime, all threads; ours also its I/O threads', by
  thread name), its threads' voluntary context switches (each a wake-up after blocking) and the server's
  count of requests (nginx `stub_status`, less its own polls; Triton's statistics). The window starts 1 s
  after the server first counts requests (start-up, imports and connecting excluded) and ends at the last
  sample before the count stops rising; CPU and wake-ups over it are divided by the requests the server
  counted in it. Crossings (ours only) are hand-offs from Python's thread to the I/O thread and eventfd
  signals back, counted in Rust and divided by the requests Locust reported, from spawning to the end.
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
  whole run, spawning included); its p50 is from the intended send time. A request is dropped when its
  stream still has 4 out when it is due: at 2 ms spacing, only when answers take over about 6 ms. The
  service time p99 beside it (actual send to response, `service_ms`) shows how often the server took that long.
- Preprocessing: per-image time (file read + decode + resize + crop + normalize), median over a
  {duration} s loop; the 4000x3000 JPEG ({big_bytes:,} bytes, quality 90, 4:2:0) is made from img1.jpg by
  `bench.preprocess.make_large_jpeg`. Outputs of the two pipelines differ by at most {max_diff_img1:.2g} (img1)
  and {max_diff_big:.2g} (4000x3000).
- {repeats} repeats; within a repeat each client runs once, in the order of the table (A, B, C, A, B, C, ...);
  medians over the repeats; a ratio is the ratio of the medians, the range is that of the per-repeat ratios.
"""


GRPC_METHOD = """\
## How the gRPC rows were measured
- Null gRPC server (`h2load_*`, `grpc*`; `bench/grpc_null.py`): nginx, 1 worker process, cleartext HTTP/2
  (h2c, as Triton serves gRPC by default), pinned like the HTTP null server. `ModelInfer` reads every request
  body in full (`echo_read_request_body`) and answers a fixed `ModelInferResponse` (output `x.45` FP32 [1,2]
  in `raw_output_contents`), `content-type: application/grpc`, and a `grpc-status: 0` trailer (nginx's
  `add_trailer`); `ModelMetadata` and `ModelReady` answer the model of the HTTP null server. Requests are
  counted by nginx's `stub_status` on a second, HTTP/1.1 port.
- Request: the same tensor as over HTTP, as ours encodes it over gRPC (`ModelInferRequest`, the tensor in
  `raw_input_contents`): {grpc_bytes:,} bytes with gRPC's 5-byte prefix. h2load (nghttp2) posts exactly that
  file (`h2load -t1 -cC -mM -D {duration} -d grpc-body.bin -H 'content-type: application/grpc' -H 'te:
  trailers'`); its rate is its `req/s`, its mean its mean time for request (h2load prints no median) and it
  does not read gRPC's trailers. Ours: `HighUser --protocol grpc` (the process's users share 4 HTTP/2
  connections, the default, unless `--grpc-connections` says otherwise), measured as every Locust row.
- Open loop over gRPC (`grpc_open10_small`, the goal's row): the HTTP open-loop row's users and settings with
  `--protocol grpc`, against a second null gRPC server whose model takes a 64-byte FP32 [1,16] tensor
  (`--input-data zero --shape x:16`; {grpc_small_bytes:,} bytes a request with the prefix), beside h2load on
  the same server and message (`h2load_small_1x10`), whose rate shows that server takes more than the 5,000
  req/s offered. `grpc_open10` (no goal) offers the same 5,000 req/s of the 602 KB image: no goal, because
  h2load on that server and message reaches well under 5,000 req/s (the rows above), so the server, not the
  client, bounds what that row achieves.
- Real Triton over gRPC (`pa10_grpc`, `tri_grpc10`): the same Triton and model as `pa10` and `tri_ours10`, on
  its gRPC port; perf_analyzer `{pa_grpc_command}` (zeros; over gRPC the tensor always goes as raw bytes),
  ours `--protocol grpc` with `data/img1.jpg`. Both 602,112-byte tensors. CPU per request divided by Triton's
  own count, as over HTTP; the HTTP rows `pa10` and `tri_ours10` run in the same repeats, so the HTTP and gRPC
  numbers compare.
"""


# --------------------------------------------------------------------------------------------------
# Set-up


def ensure_tools() -> None:
    """Installs nginx, its echo module, wrk and h2load with apt-get when missing (as root), else explains."""
    missing = [
        pkg
        for pkg, present in (
            ("nginx", shutil.which("nginx") is not None),
            ("libnginx-mod-http-echo", nginx.ECHO_MODULE.exists()),
            ("wrk", shutil.which("wrk") is not None),
            ("nghttp2-client", shutil.which("h2load") is not None),
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


def prepare(workdir: Path) -> tuple[Path, int, Path, Path, Path, Path, dict[str, float]]:
    """Encodes the Triton bodies (HTTP; gRPC, the image's and the 64-byte tensor's, for h2load), saves the
    tensor for the seed clients and makes the 4000x3000 JPEG."""
    from locust_inference import encode_litserve_request, encode_triton_request, preprocess_image
    from locust_inference._native import encode_triton_grpc_inputs

    from bench.preprocess import make_large_jpeg, pillow_preprocess

    tensor = preprocess_image(IMAGE)[None]
    body, header_length = encode_triton_request(tensor, nginx.INPUT_NAME, [nginx.OUTPUT_NAME])
    assert header_length is not None
    body_path = workdir / "triton-body.bin"
    body_path.write_bytes(body)
    # the ModelInferRequest ours sends for the same tensor, behind gRPC's 5-byte prefix
    raw = (nginx.INPUT_NAME, "FP32", list(tensor.shape), tensor.tobytes())
    grpc_body = workdir / "grpc-body.bin"
    grpc_body.write_bytes(grpc_null.grpc_frame(encode_triton_grpc_inputs(nginx.FAST_MODEL, [raw], [nginx.OUTPUT_NAME])))
    # and the 64-byte tensor's, as ours sends it with --input-data zero (zeros, a batch of one)
    small_shape = [1, *grpc_null.SMALL_INPUT[1:]]
    small_raw = (nginx.INPUT_NAME, "FP32", small_shape, np.zeros(small_shape, "<f4").tobytes())
    small_body = workdir / "grpc-body-small.bin"
    small_body.write_bytes(
        grpc_null.grpc_frame(encode_triton_grpc_inputs(grpc_null.SMALL_MODEL, [small_raw], [nginx.OUTPUT_NAME]))
    )
    npy = workdir / "tensor.npy"
    np.save(npy, tensor)
    big = make_large_jpeg(IMAGE, workdir / "large-4000x3000.jpg")
    facts = {
        "body_bytes": len(body),
        "header_length": header_length,
        "json_bytes": len(encode_litserve_request(tensor)),
        "grpc_bytes": grpc_body.stat().st_size,
        "grpc_small_bytes": small_body.stat().st_size,
        "big_bytes": big.stat().st_size,
        "max_diff_img1": float(np.abs(preprocess_image(IMAGE) - pillow_preprocess(IMAGE)).max()),
        "max_diff_big": float(np.abs(preprocess_image(big) - pillow_preprocess(big)).max()),
    }
    return body_path, header_length, npy, big, grpc_body, small_body, facts


@contextlib.contextmanager
def _terminate_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise KeyboardInterrupt so that every ``finally`` (nginx, Triton, clients) runs."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        kill_all()
        for s, h in previous.items():
            signal.signal(s, h)


def _run_one(client: Client, duration: int, progress: str) -> None:
    print(f"{progress}: {client.label} … ", end="", flush=True)
    result: Result = client.run(duration)
    client.results.append(result)
    p50 = f", p50 {fmt(result.p50_ms, 'ms')}" if result.p50_ms is not None else ""
    if result.cpu_us is not None:
        p50 += f", {result.cpu_us:.0f} us CPU/request"
    if result.offered_rate is not None:
        p50 += (
            f"; offered {fmt(result.offered_rate, '')}, achieved {fmt(result.achieved_rate, '')}, "
            f"dropped {fmt(result.dropped, 'n')}, lag p99 {fmt(result.lag_p99_ms, 'ms')}, "
            f"service time p99 {fmt(result.service_p99_ms, 'ms')}"
        )
    status = f"  [{result.error}]" if result.error else ""
    print(f"{fmt(result.rate, '')} {client.unit}{p50}{status}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s, 1 repeat, results not written")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file (default bench/RESULTS.md)")
    parser.add_argument("--only", default=None, help="comma-separated client keys, for development (not written)")
    parser.add_argument(
        "--pinning",
        choices=tuple(MODES),
        default="both",
        help=f"pinned: server on CPU {SERVER_CPU}, each client on CPU {CLIENT_CPU} (the goals); unpinned: both "
        "share every core; both (default): each client in each mode, the goals judged pinned",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeats = 2, 1
    if args.duration < 1 or args.repeats < 1:
        parser.error("--duration and --repeats must be at least 1")
    all_cpus = os.sched_getaffinity(0)
    if args.pinning != "unpinned" and not {SERVER_CPU, CLIENT_CPU} <= all_cpus:
        parser.error(f"pinned mode needs CPUs {SERVER_CPU} and {CLIENT_CPU}; use --pinning unpinned")
    # --only writes only with --output, into its own section of that file (PARTIAL_SECTION)
    output = args.output or (None if args.quick or args.only else BENCH / "RESULTS.md")
    command = shlex.join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])])
    if os.environ.get("MAKELEVEL"):
        bench_args = os.environ.get("BENCH_ARGS", "").strip()
        command = "make bench" + (f" BENCH_ARGS={shlex.quote(bench_args)}" if bench_args else "")

    ensure_tools()
    preflight()
    description = machine()
    shared = _shared_note()
    if shared:
        print(f"note: {shared}", flush=True)
    started = time.monotonic()
    modes = MODES[args.pinning]
    keys = set(args.only.split(",")) if args.only else None
    with (
        _terminate_on_signals(),
        tempfile.TemporaryDirectory(prefix="li-bench-") as tmp,
        contextlib.ExitStack() as servers,
    ):
        workdir = Path(tmp)
        print("==> preparing the request bodies and the 4000x3000 JPEG", flush=True)
        body, header_length, npy, big, grpc_body, small_body, facts = prepare(workdir)
        with nginx.null_server() as server:
            print(f"==> null server (nginx, 1 worker) at {server.url}", flush=True)
            setups = {
                pinned: Setup(server.url, server.served, workdir, body, header_length, npy, big, pinned)
                for pinned in (*modes, False)
            }
            loads = {pinned: build_clients(setups[pinned]) for pinned in modes}
            preprocessing = preprocessing_clients(setups[False])
            if keys is not None:
                known = {c.key for c in [*loads[modes[0]], *preprocessing]} | set(TRITON_KEYS) | set(GRPC_KEYS)
                if keys - known:
                    parser.error(f"unknown --only keys {sorted(keys - known)}; known: {sorted(known)}")
                loads = {pinned: [c for c in clients if c.key in keys] for pinned, clients in loads.items()}
                preprocessing = [c for c in preprocessing if c.key in keys]
            pgroups = [server.pid]  # the servers' process groups, pinned to the server's core
            if keys is None or keys & (set(GRPC_KEYS) - set(SMALL_KEYS)):
                grpc_server = servers.enter_context(grpc_null.null_grpc_server())
                print(f"==> null gRPC server (nginx, 1 worker, h2c) at {grpc_server.url}", flush=True)
                pgroups.append(grpc_server.pid)
                for pinned, clients in loads.items():
                    grpc_setup = Setup(
                        grpc_server.url, grpc_server.served, workdir, body, header_length, npy, big, pinned, grpc_body
                    )
                    clients.extend(c for c in grpc_clients(grpc_setup) if keys is None or c.key in keys)
            if keys is None or keys & set(SMALL_KEYS):
                small_server = servers.enter_context(
                    grpc_null.null_grpc_server(model=grpc_null.SMALL_MODEL, input_shape=grpc_null.SMALL_INPUT)
                )
                pgroups.append(small_server.pid)
                for pinned, clients in loads.items():
                    small_setup = Setup(
                        small_server.url,
                        small_server.served,
                        workdir,
                        body,
                        header_length,
                        npy,
                        big,
                        pinned,
                        grpc_body=small_body,
                    )
                    clients.extend(c for c in grpc_small_clients(small_setup) if keys is None or c.key in keys)
            if keys is None or keys & set(TRITON_KEYS):
                triton_pid = _start_triton(servers, workdir, loads, keys, (body, header_length, npy, big))
                if triton_pid is not None:
                    pgroups.append(triton_pid)
            total = (sum(len(c) for c in loads.values()) + len(preprocessing)) * args.repeats
            n = 0
            for repeat in range(args.repeats):
                for pinned in modes:
                    for pgid in pgroups:
                        pin_group(pgid, {SERVER_CPU} if pinned else all_cpus)
                    # this process too (its samplers are started from here and inherit it): off the client's core
                    os.sched_setaffinity(0, {SERVER_CPU} if pinned else all_cpus)
                    for client in loads[pinned]:
                        n += 1
                        progress = f"[{n}/{total}] repeat {repeat + 1}/{args.repeats}, {_mode(pinned)}"
                        _run_one(client, args.duration, progress)
                for pgid in pgroups:
                    pin_group(pgid, all_cpus)
                os.sched_setaffinity(0, all_cpus)
                for client in preprocessing:
                    n += 1
                    _run_one(client, args.duration, f"[{n}/{total}] repeat {repeat + 1}/{args.repeats}")
    description.append(("load average at end (1, 5, 15 min)", loadavg()))
    shared = shared or _shared_note()
    if shared:
        description.append(("other work on the machine", shared + " (numbers are noisier than on an idle machine)"))
    judged = modes[0]  # pinned whenever it ran
    tables, verdicts = render([*loads[judged], *preprocessing], [], args.repeats)
    sections_md = [f"## Results: {_mode(judged)} (the goals)\n\n{tables}"]
    if len(modes) > 1:
        unpinned, _ = render(loads[False], preprocessing, args.repeats, goals=False)
        sections_md.append(f"## Results: {_mode(False)} (for comparison; no verdicts)\n\n{unpinned}")
    minutes = (time.monotonic() - started) / 60
    header = "\n".join(f"| {k} | {v} |" for k, v in description)
    method_args = {
        "duration": args.duration,
        "repeats": args.repeats,
        "perf_analyzer": perf_analyzer.VERSION,
        "pa_command": perf_analyzer.shown_command(args.duration),
        "pa_grpc_command": perf_analyzer.shown_command(args.duration, "http://127.0.0.1:GRPC_PORT", protocol="grpc"),
        **facts,
    }
    partial = (
        f"## Partial run: {', '.join(sorted(keys or ()))}\n\n"
        f"Command: `{command}`: {args.duration} s per measurement, repeats: {args.repeats}, {minutes:.1f} min in "
        "all; only the rows named, not the whole benchmark (a full `make bench` replaces this section). Written "
        "by `bench/run.py`; do not edit by hand.\n\n"
        f"| machine | |\n|---|---|\n{header}\n\n"
        + "\n\n".join(sec.replace("## Results", "### Results") for sec in sections_md)
        + "\n\n"
        + GRPC_METHOD.format(**method_args).replace("## How", "### How")
    )
    report = (
        "# Benchmark results\n\n"
        f"Command: `{command}`: {args.duration} s per measurement, repeats: {args.repeats}, "
        f"{minutes:.1f} min in all. Written by `bench/run.py`; do not edit by hand.\n\n"
        f"| machine | |\n|---|---|\n{header}\n\n"
        + "\n\n".join(sections_md)
        + "\n\n"
        + METHOD.format(**method_args)
        + "\n"
        + GRPC_METHOD.format(**method_args)
    )
    print()
    print("\n\n".join(sections_md))
    met = sum(1 for _, ok in verdicts if ok)
    print(f"\ngoals met: {met}/{len(verdicts)}")
    for label, ok in verdicts:
        if not ok:
            print(f"  {'not measured' if ok is None else 'missed'}: {label}")
    if output is not None and keys is not None:  # --only: its rows in a section of their own, the rest kept
        sections.write_section(output, PARTIAL_SECTION, partial)
    elif output is not None:
        # e.g. bench/master_merge.py's, which this run does not measure; not a partial run's: this one is whole
        kept = sections.kept_sections(output, skip=(PARTIAL_SECTION,))
        output.write_text(report + (f"\n{kept}" if kept else ""))
        print(f"written to {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")
    return 0


def _start_triton(
    stack: contextlib.ExitStack,
    workdir: Path,
    loads: dict[bool, list[Client]],
    keys: set[str] | None,
    bodies: tuple[Path, int, Path, Path],
) -> int | None:
    """Starts the real Triton on ``stack`` (stopped, its whole process group, when the stack closes) and adds
    the selected Triton rows to each mode's ``loads``; returns the process group to pin. When Triton or
    perf_analyzer cannot be had, the rows stay, each with the reason as its error, and the bench goes on."""
    if keys is None or keys & {"pa10", "pa10_grpc"}:
        try:
            perf_analyzer.ensure()
        except perf_analyzer.Unavailable as exc:
            print(f"note: perf_analyzer unavailable: {exc}", flush=True)
    model = triton_server.MODEL
    print(f"==> real Triton (PyTriton's tritonserver) serving {model}, up to a minute to start", flush=True)
    failed: str | None = None
    try:
        triton = stack.enter_context(triton_server.real_triton(workdir))
    except ServerStartError as exc:
        failed = f"Triton did not start: {str(exc).splitlines()[0]}"
        print(f"note: {failed}", flush=True)
        triton = triton_server.RealTriton("http://127.0.0.1:1", -1, triton_server.MODEL, workdir / "triton.log")
    else:
        print(f"==> real Triton at {triton.url} (log {triton.log})", flush=True)
    for pinned, clients in loads.items():
        setup = Setup(triton.url, triton.served, workdir, *bodies, pinned)
        grpc_setup = Setup(triton.grpc_url, triton.served, workdir, *bodies, pinned)
        for client in triton_clients(setup, grpc_setup):
            if keys is None or client.key in keys:
                if failed is not None:
                    client.run = lambda _duration, reason=failed: Result(error=reason)
                clients.append(client)
    return None if failed is not None else triton.pid


def _shared_note() -> str:
    """A line when other work shares the cores (1-minute load average over 0.5), else empty."""
    with contextlib.suppress(OSError, ValueError):
        busy = float(Path("/proc/loadavg").read_text().split()[0])
        if busy > 0.5:
            return f"load average {busy:.2f}: other jobs shared the {os.cpu_count()} cores during the run"
    return ""


def _mode(pinned: bool) -> str:
    return f"pinned (server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU})" if pinned else "unpinned"


if __name__ == "__main__":
    run_main(main, "bench", "nginx, Triton and the clients it started are")
