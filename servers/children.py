"""Child processes of the demo, the benchmarks and the tests, started and stopped one way.

Each child runs in a session and process group of its own (``start_new_session=True``), so that what it
starts in turn (Locust's master and workers, tritonserver and its stubs, nginx's workers) goes down with
it: a child is stopped by its group id, never by a process name.

    with running([locust, "-f", "locustfile.py", ...], env=clean_env(SERVER="triton")) as proc:
        ...  # the whole group is SIGKILLed when the block ends, however it ends

:func:`clean_env` is the environment for a child load-test run: this process's, without the settings
that would change what the run does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["clean_env", "communicate", "kill", "kill_group", "running", "start", "stop"]

REPO_ROOT = Path(__file__).resolve().parent.parent
KILL_WAIT_S = 5.0
# Settings read by locust-inference, Locust (LOCUST_*) or distributed.sh that would change a run.
RUN_SETTINGS_PREFIX = "LOCUST_"
RUN_SETTINGS = frozenset({"SERVER", "INFERENCE_SERVER", "MODEL_NAME", "DEBUG_REQUESTS", "INFERENCE_AUTH_TOKEN"})


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without run settings (``LOCUST_*``, ``SERVER``, ``MODEL_NAME``, ...,
    ``LOCUST_INFERENCE_IO_THREADS`` included), the repository first on ``PYTHONPATH``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(RUN_SETTINGS_PREFIX) and k not in RUN_SETTINGS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def start(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(cmd, **popen_kwargs)`` in a new session: the child leads a process group whose id
    is its pid."""
    return subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid``; nothing to do when none is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill(proc: subprocess.Popen[Any], wait_s: float = KILL_WAIT_S) -> None:
    """SIGKILL the whole group ``proc`` leads, then reap ``proc`` (waiting at most ``wait_s``)."""
    kill_group(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=wait_s)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace_s: float = 10.0) -> bool:
    """Send ``sig`` to ``proc`` alone, so that it can stop its own children in order; wait up to ``grace_s``
    for it to exit; then SIGKILL whatever is left of its group. True when it exited within ``grace_s``."""
    exited = True
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            exited = False
    # Always sweep the group: grandchildren may outlive the leader.
    kill(proc)
    return exited


def communicate(proc: subprocess.Popen[Any], timeout: float) -> tuple[Any, Any]:
    """``proc.communicate(timeout=timeout)``; past ``timeout`` the group is killed and
    :class:`subprocess.TimeoutExpired` raised, carrying everything the child wrote."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None


@contextlib.contextmanager
def running(cmd: list[str], **popen_kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """:func:`start` ``cmd`` for the length of a block; its group is SIGKILLed when the block ends (and the
    pipes to it, if any, closed)."""
    proc = start(cmd, **popen_kwargs)
    try:
        yield proc
    finally:
        kill(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def group_members(pgid: int, name: str) -> list[int]:
    """The processes of group ``pgid`` whose command name is ``name`` (from ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if comm == name and int(rest[2]) == pgid:  # fields after comm: state, ppid, pgrp, ...
            found.append(int(stat.parent.name))
    return found
