"""Separate "hosts" on one machine: Linux network namespaces (``ip netns``, needs root) on a bridge.

The bridge lives in a namespace of its own (the "switch"), so nothing changes in the machine's own
network namespace and no traffic leaves the namespaces made here. Every name starts with
``li-mh-<pid of the test process>-``; :func:`remove_leftovers` removes those of test processes that no
longer run (a crashed earlier run), killing by PID whatever still runs in them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["PREFIX", "Network", "network", "remove_leftovers"]

PREFIX = "li-mh-"
SUBNET = "10.77.0"  # private to the namespaces made here


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def pids_in(ns: str) -> set[int]:
    """The processes in network namespace ``ns``."""
    with contextlib.suppress(RuntimeError):
        return {int(p) for p in ip("netns", "pids", ns).split()}
    return set()


def kill_all_in(ns: str, deadline_s: float = 10.0) -> None:
    """SIGKILL every process in ``ns``, by PID, until none is left (at most ``deadline_s``)."""
    deadline = time.monotonic() + deadline_s
    while (pids := pids_in(ns)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _owner_alive(ns: str) -> bool:
    owner = ns.removeprefix(PREFIX).split("-", 1)[0]
    return owner.isdigit() and os.path.exists(f"/proc/{owner}")


def remove_leftovers() -> list[str]:
    """Deletes the namespaces of earlier test runs whose process is gone; returns their names."""
    stale = [ns for ns in namespaces() if ns.startswith(PREFIX) and not _owner_alive(ns)]
    for ns in stale:
        kill_all_in(ns)
        ip("netns", "delete", ns)
    return stale


@dataclass
class Network:
    """Namespaces by host name, each with one address on the bridge."""

    switch: str
    namespaces: dict[str, str] = field(default_factory=dict)  # host -> namespace
    addresses: dict[str, str] = field(default_factory=dict)  # host -> IPv4 address

    def exec(self, host: str, *cmd: str, hostname: str | None = None) -> list[str]:
        """The command line running ``cmd`` on ``host`` (in its namespace; with its own hostname, in a UTS
        namespace of its own, when given). Every wrapper execs, so the PID started is the command's."""
        wrapped = ["ip", "netns", "exec", self.namespaces[host]]
        if hostname is not None:
            wrapped += ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
        return [*wrapped, *cmd]


@contextlib.contextmanager
def network(hosts: list[str]) -> Iterator[Network]:
    """One namespace per host on a fresh bridge; all of it, and every process in it, removed at the end."""
    remove_leftovers()
    tag = f"{PREFIX}{os.getpid()}-"
    net = Network(switch=f"{tag}sw")
    made: list[str] = []
    try:
        ip("netns", "add", net.switch)
        made.append(net.switch)
        ip("-n", net.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", net.switch, "link", "set", "dev", "br0", "up")
        for i, host in enumerate(hosts):
            ns = f"{tag}{host}"
            ip("netns", "add", ns)
            made.append(ns)
            port = f"p{i}"
            ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", net.switch)
            ip("-n", net.switch, "link", "set", "dev", port, "master", "br0", "up")
            address = f"{SUBNET}.{i + 2}"
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "dev", "eth0", "up")
            ip("-n", ns, "link", "set", "dev", "lo", "up")
            net.namespaces[host] = ns
            net.addresses[host] = address
        yield net
    finally:
        for ns in reversed(made):
            kill_all_in(ns)
        with contextlib.suppress(RuntimeError):
            ip("-n", net.switch, "link", "delete", "br0")
        for ns in reversed(made):
            with contextlib.suppress(RuntimeError):
                ip("netns", "delete", ns)
