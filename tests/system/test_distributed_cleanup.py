"""distributed.sh signals only the processes it started that are still running: never an id that one of
them had once it has exited, when another process now has it.

Bash reaps a child as soon as it exits, so its id is free at once. To make the reuse certain rather than
a matter of luck, each test runs distributed.sh in a PID namespace of its own (``unshare --pid``), where
the harness (the namespace's first process) writes ``/proc/sys/kernel/ns_last_pid`` so that its next child,
the decoy, gets exactly the id a process of distributed.sh had. distributed.sh starts a stand-in for
Locust (``LOCUST``): these tests are about its bookkeeping of processes, not about Locust. Needs root;
without PID namespaces these tests fail, they are not skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.runs import REPO_ROOT, clean_env

pytestmark = pytest.mark.root  # PID namespaces, /proc/sys/kernel/ns_last_pid

# Stands in for locust: says its role and pid in FAKE_DIR, then waits. SIGUSR1 ends it with status 0;
# SIGTERM too, unless FAKE_<ROLE>_TERM=ignore. A worker does not leave when the master does. With
# FAKE_EXIT=now it writes its arguments and ends at once, status 0.
FAKE_LOCUST = """\
import json, os, signal, sys

role = "master" if "--master" in sys.argv else "worker"
folder = os.environ["FAKE_DIR"]
leave = lambda *_: os._exit(0)
term = signal.SIG_IGN if os.environ.get(f"FAKE_{role.upper()}_TERM") == "ignore" else leave
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGUSR1, leave)
with open(f"{folder}/{role}.tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(f"{folder}/{role}.tmp", f"{folder}/{role}")
if os.environ.get("FAKE_EXIT") == "now":
    with open(f"{folder}/{role}.argv", "w") as f:
        json.dump(sys.argv[1:], f)
    sys.exit(0)
while True:
    signal.pause()
"""

# The namespace's first process. Starts distributed.sh, ends one of its processes (the target) as the
# case says, waits until bash has reaped it, starts the decoy with the target's id, waits for
# distributed.sh to finish, and prints what happened as JSON.
HARNESS = """\
import json, os, signal, subprocess, sys, time

folder, script, conf, case = sys.argv[1:5]


def deadline_wait(check, what, seconds=60.0):  # a guard against a hang, not a measurement
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            sys.exit(f"harness: gave up waiting for {what}")
        time.sleep(0.01)


def state(pid):  # the process state letter, or None when no process has the id
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def pid_of(role):
    path = f"{folder}/{role}"
    deadline_wait(lambda: os.path.exists(path), f"the {role} to start")
    with open(path) as f:
        return int(f.read())


def spawn_with_pid(target):
    # The next id the kernel hands out in this namespace is ns_last_pid + 1, unless distributed.sh forks
    # (sleep, seq) in between: then that child has it for a moment, and we try again once it is gone.
    for _ in range(200):
        deadline_wait(lambda: state(target) is None, f"id {target} to be free")
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(target - 1))
        decoy = subprocess.Popen(["sleep", "600"])
        if decoy.pid == target:
            return decoy
        decoy.kill()
        decoy.wait()
    sys.exit(f"harness: could not start a process with id {target}")


with open(f"{folder}/out", "w") as out, open(f"{folder}/err", "w") as err:
    dist = subprocess.Popen(["bash", script, conf, "m", "triton"], stdout=out, stderr=err)
master, worker = pid_of("master"), pid_of("worker")
if case == "grace":  # stopped: the worker leaves on TERM, the master holds on until KILL
    target = worker
    dist.send_signal(signal.SIGTERM)
else:  # "waited", "waited_late": the master finishes, distributed.sh waits for it, the worker stays
    target = master
    os.kill(master, signal.SIGUSR1)
deadline_wait(lambda: state(target) is None, "bash to reap the target")
if case == "waited_late":
    # distributed.sh looks at its master every 0.2 s: this gives it time to see it ended and wait for it,
    # so that the decoy appears while it gives the worker its moment, before the cleanup at exit
    time.sleep(1.0)
decoy = spawn_with_pid(target)
try:
    returncode = dist.wait(timeout=60)
except subprocess.TimeoutExpired:
    returncode = None  # the caller reports it
decoy_alive = decoy.poll() is None
others = {"master": state(master) not in (None, "Z"), "worker": state(worker) not in (None, "Z")}
others["master" if target == master else "worker"] = None  # the target's id is the decoy's now
decoy.kill()
print(json.dumps({
    "target": target, "decoy": decoy.pid, "decoy_alive": decoy_alive, "returncode": returncode,
    "still_running": others, "stderr": open(f"{folder}/err").read(),
}))
"""


def write_fake(folder: Path) -> Path:
    fake = folder / "fake_locust"
    fake.write_text(f"#!{sys.executable}\n{FAKE_LOCUST}")
    fake.chmod(0o755)
    return fake


def run_case(tmp_path: Path, case: str) -> dict[str, Any]:
    fake = write_fake(tmp_path)
    conf = tmp_path / "one.conf"
    conf.write_text("expect-workers = 1\nrun-time = 10m\n")
    folder = tmp_path / "state"
    folder.mkdir()
    env = clean_env(
        LOCUST=str(fake),
        FAKE_DIR=str(folder),
        FAKE_MASTER_TERM="ignore" if case == "grace" else "exit",
        MASTER_PORT="5557",  # the fake does not listen; a fixed value saves looking for a free port
        RESULTS_DIR=str(tmp_path / "results"),
    )
    proc = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            HARNESS,
            str(folder),
            str(REPO_ROOT / "distributed.sh"),
            str(conf),
            case,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["decoy"] == result["target"], result  # the decoy has the id of distributed.sh's process
    return result


def test_the_kill_after_the_grace_period_spares_an_id_reused_meanwhile(tmp_path: Path) -> None:
    """Stopped with SIGTERM: the worker leaves at once, the master ignores TERM. During the grace period
    the worker's id goes to the decoy; at its end only the master, still distributed.sh's, gets SIGKILL."""
    result = run_case(tmp_path, "grace")
    assert result["decoy_alive"], result
    assert result["returncode"] == 130, result
    assert result["still_running"]["master"] is False, result  # killed after the grace period
    assert "distributed.sh: interrupted, stopping master and workers" in result["stderr"], result


def test_the_id_of_an_ended_master_is_not_taken_for_it(tmp_path: Path) -> None:
    """The master ends (status 0) and its id goes to the decoy at once: distributed.sh sees its master
    ended, waits for it, gives the worker its moment to leave and stops it, and leaves the decoy alone."""
    result = run_case(tmp_path, "waited")
    assert result["returncode"] == 0, result
    assert result["decoy_alive"], result
    assert result["still_running"]["worker"] is False, result  # stopped by the cleanup at exit


def test_the_exit_cleanup_spares_the_id_of_a_master_already_waited_for(tmp_path: Path) -> None:
    """As above, but the id goes to the decoy only after distributed.sh has waited for the master, while
    it gives the worker its moment: the cleanup at exit stops the worker, not the decoy."""
    result = run_case(tmp_path, "waited_late")
    assert result["returncode"] == 0, result
    assert result["decoy_alive"], result
    assert result["still_running"]["worker"] is False, result


def test_a_locust_found_in_path_is_run_with_the_python_beside_it(tmp_path: Path) -> None:
    """LOCUST=locust, as when no .venv is in the checkout: the python beside the locust that PATH finds
    picks the master's port, not ./python (a folder of this repository, from where distributed.sh runs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fake(bin_dir)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\ntouch "$FAKE_DIR/python-used"\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    conf = tmp_path / "one.conf"
    conf.write_text("expect-workers = 1\n")
    folder = tmp_path / "state"
    folder.mkdir()
    env = clean_env(LOCUST="fake_locust", FAKE_DIR=str(folder), FAKE_EXIT="now", RESULTS_DIR=str(tmp_path / "r"))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    proc = subprocess.run(
        ["./distributed.sh", str(conf), "m", "triton"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (folder / "python-used").exists()
    argv = json.loads((folder / "master.argv").read_text())
    port = argv[argv.index("--master-bind-port") + 1]
    assert port.isdigit() and 0 < int(port) < 65536, argv
    worker = json.loads((folder / "worker.argv").read_text())
    assert worker[worker.index("--master-port") + 1] == port, worker
