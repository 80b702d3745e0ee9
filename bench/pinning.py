"""Pinned mode: the server on one core, the client on another, so what a client achieves is its capacity
on exactly one core and not how the scheduler shared two cores between it and the server."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CLIENT_CPU", "SERVER_CPU", "client_prefix", "pin_group"]

SERVER_CPU = 0
CLIENT_CPU = 1


def client_prefix(pinned: bool) -> list[str]:
    """The command prefix that runs a client (every thread it will start) on :data:`CLIENT_CPU`."""
    return ["taskset", "-c", str(CLIENT_CPU)] if pinned else []


def pin_group(pgid: int, cpus: set[int]) -> int:
    """Sets the affinity of every thread of every process in process group ``pgid``; returns how many."""
    pinned = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for task in (proc / "task").iterdir():
                os.sched_setaffinity(int(task.name), cpus)
                pinned += 1
        except (OSError, IndexError, ValueError):
            continue  # a process or thread that just ended
    return pinned
