"""Start and stop the test servers: the single place used by pytest fixtures, the demo and the Makefile.

Each server runs as ``python -m servers.<module> ...`` in its own process group (:mod:`servers.children`);
readiness is polled over HTTP on 127.0.0.1, and on exit -- normal, exception or KeyboardInterrupt -- the
server gets SIGTERM and, after it exits or at most 10 s, the whole group gets SIGKILL. Each server gets a
private ``TMPDIR``, removed afterwards together with what Triton writes to hard-coded ``/tmp`` paths.

    with triton_server(models=["tiny_onnx"]) as srv:
        requests.get(f"{srv.url}/v2/models/tiny_onnx")
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from servers import children

HOST = "127.0.0.1"
T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
TRITON_DEFAULT_MODELS = ("resnet50_onnx", "tiny_onnx", "checksum", "sleep_20ms")
TRITON_START_TIMEOUT_S = 180.0
LITSERVE_START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 40
MAX_TMP_BASE_LEN = 24
PARENT_PID_ENV = "LOCUST_INFERENCE_LAUNCHER_PID"
NO_SERVERS_ENV = "NO_TEST_SERVERS"  # set by `make test-fast`: starting a server is then an error
TRITON_TMP = Path("/tmp")  # hard-coded by tritonserver and its Python backend, whatever TMPDIR says
OWNER_MARKER = "locust-inference-server-pid"  # in a /tmp/python_env_* dir: see claim_python_env
_WORKSPACE_PARAM = re.compile(r'key:\s*"workspace-path"\s*value\s*\{\s*string_value:\s*"([^"]+)"')


class ServerStartError(RuntimeError):
    """A server exited early or did not become ready in time; the message ends with its log tail."""


@dataclass
class RunningServer:
    """A started, ready server."""

    kind: str  # "triton" or "litserve"
    port: int
    models: list[str]
    pid: int
    log_path: Path
    tmp_dir: Path  # the server's private TMPDIR, removed after it stops
    host: str = HOST  # the address it listens on (in network namespace ``netns``, when one is named)
    netns: str | None = None
    metrics_port: int | None = None  # Triton's Prometheus metrics endpoint (on 127.0.0.1), when known
    grpc_port: int | None = None  # Triton's gRPC endpoint, on ``host`` too
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://{self.host}:{self.port}"


def free_ports(count: int) -> list[int]:
    """``count`` distinct currently-free TCP ports on 127.0.0.1 (all probed at once, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port() -> int:
    """A currently-free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def exit_with_launcher(poll_s: float = 1.0) -> None:
    """In a server started by :func:`_run_server`: SIGTERM ourselves once the launching process is gone.

    A launcher that dies without running its ``finally`` (SIGKILL, pytest-timeout in thread mode, ...)
    would otherwise leave a server in its own session running forever. No-op for servers started by hand.
    """
    value = os.environ.pop(PARENT_PID_ENV, None)
    if not value:
        return
    launcher = int(value)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


# Never route loopback polling through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_ok(url: str, netns: str | None = None) -> bool:
    if netns is not None:
        return in_netns(netns, _http_ok, url)
    try:
        with _OPENER.open(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


CLONE_NEWNET = 0x40000000


def in_netns(name: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new thread that has joined network namespace ``name`` (``ip netns``); a
    namespace is per thread, so the rest of this process stays where it is."""
    result: list[Any] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into network namespace {name}")
            finally:
                os.close(fd)
            result.append((True, fn(*args)))
        except BaseException as exc:  # handed to the caller's thread
            result.append((False, exc))

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


@dataclass(frozen=True)
class ProcessInfo:
    """The fields of ``/proc/<pid>/stat`` used here."""

    pid: int
    name: str  # the command name (``comm``, at most 15 characters)
    state: str  # R, S, D, Z, ...
    ppid: int
    pgrp: int


def processes() -> list[ProcessInfo]:
    """Every process on the machine, from one pass over ``/proc/<pid>/stat`` (Linux); vanished ones are skipped."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may itself contain spaces and parentheses.
        head, _, tail = stat.rpartition(")")
        state, ppid, pgrp = tail.split()[:3]
        found.append(ProcessInfo(int(entry), head.partition("(")[2], state, int(ppid), int(pgrp)))
    return found


def descendants(pid: int) -> list[ProcessInfo]:
    """Children, grandchildren, ... of ``pid`` (zombies included)."""
    by_parent: dict[int, list[ProcessInfo]] = {}
    for proc in processes():
        by_parent.setdefault(proc.ppid, []).append(proc)
    found, todo = [], list(by_parent.get(pid, []))
    while todo:
        proc = todo.pop()
        found.append(proc)
        todo.extend(by_parent.get(proc.pid, []))
    return found


def live_group_members(pgid: int) -> list[int]:
    """PIDs of processes in group ``pgid`` that are not zombies (Linux ``/proc``)."""
    return [proc.pid for proc in processes() if proc.pgrp == pgid and proc.state != "Z"]


def python_stub_pids(server_pid: int) -> list[int]:
    """PIDs of Triton Python-backend stub processes descending from ``server_pid``."""
    return [proc.pid for proc in descendants(server_pid) if proc.name.startswith("triton_python")]


def python_envs() -> set[Path]:
    """The ``/tmp/python_env_XXXXXX`` directories of every Triton Python backend on the machine."""
    return set(TRITON_TMP.glob("python_env_*"))


def claim_python_env(before: set[Path], server_pid: int) -> bool:
    """Mark the ``/tmp/python_env_XXXXXX`` of the Triton run by ``server_pid`` as its own; True once marked.

    Nothing in that directory names its server, so it is found by elimination: while one of the server's
    stubs runs, its backend is initialised and the directory exists, and it was created after ``before``
    was listed. If exactly one candidate is left, it is the server's; otherwise (another Triton started
    meanwhile, or no stub runs) nothing is marked. The server and its launcher both call this.
    """
    if not python_stub_pids(server_pid):
        return False
    new = python_envs() - before
    if len(new) != 1 or not python_stub_pids(server_pid):
        return False
    try:
        (new.pop() / OWNER_MARKER).write_text(str(server_pid))
    except OSError:
        return False
    return True


def _within(path: str, owner: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(owner))


def triton_leftovers(owner: Path, server_pid: int) -> list[Path]:
    """What the Triton run by ``servers.triton`` as ``server_pid``, with its temp files under ``owner``, left
    at paths tritonserver hard-codes whatever ``TMPDIR`` says. It removes them itself only when every model
    unloads before it exits (a model with 8 instances takes ~15 s), never when killed.

    * ``/tmp/folderXXXXXX``: one copy per loaded model; its ``config.pbtxt`` names the PyTriton workspace.
    * ``/tmp/python_env_XXXXXX``: one per server, marked by :func:`claim_python_env`.
    * ``/dev/shm/pytrtion<server_pid>-*``: the stubs' shared memory.
    """
    found = []
    for folder in TRITON_TMP.glob("folder*"):
        try:
            config = (folder / "config.pbtxt").read_text(errors="replace")
        except OSError:
            continue
        match = _WORKSPACE_PARAM.search(config)
        if match and _within(match[1], owner):
            found.append(folder)
    for env in python_envs():
        try:
            if (env / OWNER_MARKER).read_text() == str(server_pid):
                found.append(env)
        except OSError:
            continue
    found.extend(Path("/dev/shm").glob(f"pytrtion{server_pid}-*"))
    return found


def remove_triton_leftovers(owner: Path, server_pid: int) -> None:
    """Delete :func:`triton_leftovers` (a no-op for other servers)."""
    for path in triton_leftovers(owner, server_pid):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server (group leader), wait up to ``timeout`` s, then SIGKILL the whole process group.

    SIGTERM goes to the leader only: it shuts its children down in order. A group-wide SIGTERM kills
    Triton's Python-backend stubs mid-unload, which leaks ``/tmp/folderXXXXXX`` and ``/tmp/python_env_*``
    (hard-coded paths). Returns once no live (non-zombie) process of the group is left, or after 5 more s.
    """
    if not children.stop(proc, signal.SIGTERM, timeout):
        print(f"server pid {proc.pid} alive {timeout:.0f} s after SIGTERM; killed its group", file=sys.stderr)
    deadline = time.monotonic() + 5
    while live_group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def _run_server(
    kind: str,
    module: str,
    *,
    args: list[str],
    port: int,
    models: list[str],
    ready_paths: list[str],
    timeout: float,
    log_path: str | os.PathLike[str] | None,
    env: dict[str, str] | None,
    host: str = HOST,
    netns: str | None = None,
) -> Iterator[RunningServer]:
    if os.environ.get(NO_SERVERS_ENV):
        raise ServerStartError(
            f"{kind} not started: {NO_SERVERS_ENV} is set (make test-fast); mark the test @pytest.mark.server"
        )
    own_log = log_path is None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"locust-inference-{kind}-", suffix=".log")
        os.close(fd)
        path = Path(name)
    else:
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", module, *args]
    if netns is not None:  # ip execs the command: the server's pid and process group stay the ones started
        cmd = ["ip", "netns", "exec", netns, *cmd]
    # A private TMPDIR collects what killed children cannot clean up (multiprocessing dirs, workspaces).
    # Keep it short: PyTriton and multiprocessing put unix sockets below it (108-byte path limit).
    base = tempfile.gettempdir()
    if len(base) > MAX_TMP_BASE_LEN and os.path.isdir("/tmp"):
        base = "/tmp"
    tmpdir = tempfile.mkdtemp(prefix=f"li-{kind.lower()}-", dir=base)
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": tmpdir, **(env or {})}
    child_env[PARENT_PID_ENV] = str(os.getpid())
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), child_env.get("PYTHONPATH")) if p)
    label = f"{kind} on {host}:{port}" + (f" in network namespace {netns}" if netns else "")
    print(f"starting {label}… (models: {', '.join(models)}; log: {path})", file=sys.stderr, flush=True)
    started = time.monotonic()
    failed = True
    proc: subprocess.Popen[bytes] | None = None
    envs_before = python_envs()
    try:
        with open(path, "ab") as log:
            proc = children.start(
                cmd, cwd=REPO_ROOT, env=child_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        base = f"http://{host}:{port}"
        pending = list(ready_paths)
        while pending:
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{label} exited early with code {proc.returncode}; log {path}:\n{log_tail(path)}"
                )
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise ServerStartError(
                    f"{label} not ready in {timeout:.0f} s (at {pending[0]}); log {path}:\n{log_tail(path)}"
                )
            if _http_ok(base + pending[0], netns):
                pending.pop(0)
            else:
                time.sleep(0.25)
        print(f"{label} ready after {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        # Triton's python_env (a no-op for LitServe). The server claims it too, but maybe only after we
        # see it ready and the caller has killed it.
        claim_python_env(envs_before, proc.pid)
        yield RunningServer(
            kind=kind,
            port=port,
            models=list(models),
            pid=proc.pid,
            log_path=path,
            tmp_dir=Path(tmpdir),
            host=host,
            netns=netns,
        )
        failed = False
    finally:
        if proc is not None:
            _stop_group(proc)
            # Also after a SIGKILL, when the server could not clean up: Triton writes outside TMPDIR.
            remove_triton_leftovers(Path(tmpdir), proc.pid)
        shutil.rmtree(tmpdir, ignore_errors=True)
        print(f"stopped {label}", file=sys.stderr, flush=True)
        if own_log and not failed:
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def triton_server(
    models: Sequence[str] = TRITON_DEFAULT_MODELS,
    http_port: int | None = None,
    threads: int = 2,
    log_path: str | os.PathLike[str] | None = None,
    *,
    timeout: float = TRITON_START_TIMEOUT_S,
    env: dict[str, str] | None = None,
    http_address: str = HOST,
    netns: str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[RunningServer]:
    """Run ``python -m servers.triton`` until the block exits; wait for server and every model to be ready.
    ``extra_args`` go to it as they are (e.g. ``--max-batch-size 16``).

    ``netns`` runs it in that network namespace (``ip netns``), its HTTP endpoint on ``http_address``
    there. gRPC and metrics get free ports too. Without ``log_path`` the log goes to a temp file that is removed
    after a clean run (kept, and named in the error, when start-up or the block fails).
    """
    models = list(models)
    port = http_port or free_port()
    # gRPC's and the metrics' ports are chosen here, not by the server, so that tests can reach them
    # (RunningServer.grpc_port, .metrics_port); two distinct free ports, neither the HTTP one
    spare = iter(p for p in free_ports(3) if p != port)
    grpc_port = None if "--grpc-port" in extra_args else next(spare)
    metrics_port = None if "--metrics-port" in extra_args else next(spare)
    args = ["--http-port", str(port), "--models", ",".join(models), "--threads", str(threads), *extra_args]
    if grpc_port is not None:
        args += ["--grpc-port", str(grpc_port)]
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port)]
    if http_address != HOST:
        args += ["--http-address", http_address]
    ready = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]
    with _run_server(
        "Triton",
        "servers.triton",
        args=args,
        port=port,
        models=models,
        ready_paths=ready,
        timeout=timeout,
        log_path=log_path,
        env=env,
        host=http_address,
        netns=netns,
    ) as srv:
        srv.metrics_port = metrics_port
        srv.grpc_port = grpc_port
        yield srv


@contextlib.contextmanager
def litserve_server(
    model: str = "tiny_onnx",
    port: int | None = None,
    threads: int = 2,
    log_path: str | os.PathLike[str] | None = None,
    *,
    timeout: float = LITSERVE_START_TIMEOUT_S,
    env: dict[str, str] | None = None,
    payload: str = "tensor",
    image_key: str = "image",
    extra_args: Sequence[str] = (),
) -> Iterator[RunningServer]:
    """Run ``python -m servers.litserve_app`` serving ``model`` at ``POST /predict``, taking ``payload``
    (tensor, image-base64 under ``image_key``, or image-bytes); wait for ``/health``."""
    port = port or free_port()
    args = ["--model", model, "--port", str(port), "--threads", str(threads), "--payload", payload]
    args += ["--image-key", image_key, *extra_args]
    with _run_server(
        "LitServe",
        "servers.litserve_app",
        args=args,
        port=port,
        models=[model],
        ready_paths=["/health"],
        timeout=timeout,
        log_path=log_path,
        env=env,
    ) as srv:
        yield srv


@contextlib.contextmanager
def litserve_llm_server(
    port: int | None = None,
    log_path: str | os.PathLike[str] | None = None,
    *,
    timeout: float = LITSERVE_START_TIMEOUT_S,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[RunningServer]:
    """Run ``python -m servers.litserve_llm`` (the synthetic generator behind LitServe's ``OpenAISpec`` at
    ``POST /v1/chat/completions``); ``extra_args`` are the generator's options (``--prefill-ms 50`` ...)."""
    port = port or free_port()
    with _run_server(
        "LitServe",
        "servers.litserve_llm",
        args=["--port", str(port), *extra_args],
        port=port,
        models=["synthetic_llm"],
        ready_paths=["/health"],
        timeout=timeout,
        log_path=log_path,
        env=env,
    ) as srv:
        yield srv
