"""The null inference server: one nginx worker on 127.0.0.1 that reads every request body in full
(the echo module's ``echo_read_request_body``) and answers a small, fixed, valid response with
keep-alive, so a benchmark measures the client and not the server.

It serves two Triton models and LitServe's endpoints::

    GET  /v2/models/m              Triton model metadata (input x FP32 [-1,3,224,224], output x.45 FP32 [-1,2])
    POST /v2/models/m/infer        KServe v2 JSON response, output x.45 of shape [1,2]
    GET  /v2/models/sleep_20ms     the same metadata
    POST /v2/models/sleep_20ms/infer  the same response, 20 ms after the body was read (echo_sleep)
    GET  /health                   200
    GET  /status                   nginx's stub_status: requests received so far (see NullServer.served)
    POST /predict                  {"output":[[0.1,0.9]]}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from servers import children

__all__ = [
    "FAST_MODEL",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OUTPUT_SHAPE",
    "SLOW_MODEL",
    "NullServer",
    "free_port",
    "null_server",
]

HOST = "127.0.0.1"
FAST_MODEL = "m"
SLOW_MODEL = "sleep_20ms"
SLOW_SECONDS = 0.02
INPUT_NAME = "x"
OUTPUT_NAME = "x.45"
OUTPUT_SHAPE = (1, 2)
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class NullServer:
    """A running null server."""

    url: str
    pid: int
    error_log: Path
    _polls: list[int] = field(default_factory=lambda: [0])

    def served(self) -> int:
        """Requests nginx has received, not counting these polls of ``/status`` (each counts itself)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/status", timeout=2) as resp:
            text = resp.read().decode()
        self._polls[0] += 1
        # "Active connections: 1\nserver accepts handled requests\n 1 1 5\n..."
        return int(text.splitlines()[2].split()[2]) - self._polls[0]


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _metadata(model: str) -> str:
    return json.dumps(
        {
            "name": model,
            "versions": ["1"],
            "platform": "null",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, OUTPUT_SHAPE[1]]}],
        },
        separators=(",", ":"),
    )


def _infer_response(model: str) -> str:
    return json.dumps(
        {
            "model_name": model,
            "model_version": "1",
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(OUTPUT_SHAPE), "data": [0.1, 0.9]}],
        },
        separators=(",", ":"),
    )


def _quote(text: str) -> str:
    """An nginx single-quoted string (our JSON has no quote, backslash or ``$``)."""
    assert not set(text) & {"'", "\\", "$"}, text
    return f"'{text}'"


def render_config(port: int, workdir: Path) -> str:
    """The nginx configuration: one worker, keep-alive without limits, bodies kept in memory."""
    locations = []
    for model, sleep in ((FAST_MODEL, None), (SLOW_MODEL, SLOW_SECONDS)):
        locations.append(f"location = /v2/models/{model} {{ return 200 {_quote(_metadata(model))}; }}")
        sleep_line = f"echo_sleep {sleep};" if sleep else ""
        locations.append(
            f"location = /v2/models/{model}/infer {{ echo_read_request_body; {sleep_line} "
            f"echo -n {_quote(_infer_response(model))}; }}"
        )
    locations.append("location = /health { return 200 'ok'; }")
    locations.append("location = /status { stub_status; }")
    locations.append(
        f"location = /predict {{ echo_read_request_body; echo -n {_quote(json.dumps({'output': [[0.1, 0.9]]}))}; }}"
    )
    body = "\n        ".join(locations)
    server = f"""    server {{
        listen {HOST}:{port} backlog=1024;
        {body}
    }}"""
    return config(workdir, "application/json", server)


def config(workdir: Path, default_type: str, servers: str, http_extra: str = "") -> str:
    """An nginx configuration around ``servers``: one worker in the foreground, keep-alive without limits,
    request bodies kept in memory, every temporary path inside ``workdir``."""
    return f"""load_module {ECHO_MODULE};
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type {default_type};
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_max_body_size 10m;
    client_body_buffer_size 10m;{http_extra}
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
{servers}
}}
"""


def _ready(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGQUIT (graceful) to the master, then SIGKILL to its process group."""
    children.stop(proc, signal.SIGQUIT, grace_s=5)


@contextlib.contextmanager
def null_server(nginx: str = "nginx") -> Iterator[NullServer]:
    """Runs nginx in its own process group until the block exits, then stops it (always)."""
    workdir = Path(tempfile.mkdtemp(prefix="li-bench-nginx-"))
    os.chmod(workdir, 0o755)  # the worker may run as nobody
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(render_config(port, workdir))
    url = f"http://{HOST}:{port}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        test = subprocess.run(
            [nginx, "-t", "-q", "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
            capture_output=True,
            text=True,
            check=False,
        )
        if test.returncode != 0:
            raise RuntimeError(f"nginx rejected its configuration {conf}:\n{test.stderr}")
        with open(workdir / "stderr.log", "wb") as log:
            proc = children.start(
                [nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(f"{url}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                log_text = (
                    (workdir / "error.log").read_text(errors="replace") if (workdir / "error.log").exists() else ""
                )
                raise RuntimeError(f"nginx did not start on {url}:\n{log_text[-2000:]}")
            time.sleep(0.05)
        yield NullServer(url=url, pid=proc.pid, error_log=workdir / "error.log")
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
