"""The parts of Locust that locust-inference replaces (:mod:`locust_inference.hooks`): the installed Locust
is one we support and has them as we expect; one that does not stops the run at start with one line
naming the hook; the process-wide bucketing is Locust's again once a run has ended."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from support.runs import REPO_ROOT, assert_clean_failure, clean_env, run_locust

from servers.launch import free_port

PROBE = REPO_ROOT / "tests" / "support" / "locustfiles" / "hook_probe.py"


def declared_locust() -> Requirement:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (locust,) = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "locust"]
    return locust


def test_the_locust_range_has_an_upper_bound_and_holds_the_installed_locust() -> None:
    """A Locust release may change the hooks: we declare only the minor versions we have tested."""
    locust = declared_locust()
    assert any(spec.operator == "<" for spec in locust.specifier), str(locust)
    assert locust.specifier.contains(importlib.metadata.version("locust")), str(locust)


def test_the_installed_locust_has_every_hook_we_replace() -> None:
    """In a subprocess: importing Locust monkey-patches the process (gevent)."""
    proc = subprocess.run(
        [sys.executable, "-c", "from locust_inference import hooks; hooks.check()"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("bucket_removed", "locust.stats.bucket_response_time does not exist"),
        ("bucket_unused", "locust.stats.bucket_response_time is no longer what StatsEntry rounds response times with"),
        ("sleep_removed", "locust.user.task.TaskSet._sleep does not exist"),
        ("sleep_changed", "locust.user.task.TaskSet._sleep is no longer a method taking (self, seconds)"),
        ("stop_changed", "locust.User.stop is no longer a method taking (self, force)"),
        ("stop_state_unused", "locust.User.stop no longer asks a running user to stop after its task (_state)"),
        ("stop_wait_unused", "locust.User.stop no longer ends a waiting user at once (LOCUST_STATE_WAITING)"),
        ("waiting_removed", "locust.User.stop has no LOCUST_STATE_WAITING in locust.user.task to set a user's _state"),
        ("csv_close_changed", "locust.stats.StatsCSVFileWriter.close_files is no longer a method taking (self)"),
        (
            "csv_loop_changed",
            "locust.stats.StatsCSVFileWriter.close_files has no stats_writer(self) loop to stop before the files close",
        ),
        (
            "csv_rows_removed",
            "locust.stats.StatsCSVFileWriter.close_files has no _requests_data_rows to write requests_csv_filehandle",
        ),
        ("quit_changed", "locust.runners.MasterRunner.quit is no longer a method taking (self)"),
        (
            "quit_silent",
            "locust.runners.MasterRunner.quit no longer sends each worker quit and then kills the runner's greenlets",
        ),
    ],
)
def test_a_locust_without_a_hook_stops_the_run_naming_it(tmp_path: Path, breakage: str, message: str) -> None:
    run = run_locust(
        tmp_path,
        "--host",
        f"http://127.0.0.1:{free_port()}",  # never reached: the hooks are checked first
        locustfile=PROBE,
        env=clean_env(SERVER="triton", MODEL_NAME="ok", BREAK_HOOK=breakage, HOOK_REPORT=str(tmp_path / "r.json")),
    )
    assert_clean_failure(run, message, "locust-inference replaces it and supports locust>=")


def test_finer_buckets_are_used_during_a_run_and_locusts_own_after_it(fault_server, tmp_path: Path) -> None:
    report = tmp_path / "hooks.json"
    run = run_locust(
        tmp_path,
        "--host",
        fault_server.url,
        "LowUser",
        locustfile=PROBE,
        run_time="1s",
        env=clean_env(SERVER="triton", MODEL_NAME="ok", HOOK_REPORT=str(report)),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(report.read_text()) == {
        "during": "locust_inference.latency.fine_bucket_response_time",
        "after": "locust.stats.bucket_response_time",
    }


CLOSED_CSV_SCRIPT = """
import gevent, sys
from locust import stats
from locust.env import Environment
from locust_inference import hooks

if sys.argv[1] == "installed":
    hooks.install_final_csv()
environment = Environment()
environment.create_local_runner()
writer = stats.StatsCSVFileWriter(environment, stats.PERCENTILES_TO_REPORT, sys.argv[2], full_history=False)
loop = gevent.spawn(writer.stats_writer)  # as locust.main starts it
gevent.sleep(0.1)
writer.close_files()  # as locust.main's shutdown does
gevent.sleep(stats.CSV_STATS_INTERVAL_SEC * 2)  # a --processes master waiting for its workers, at exit
print(repr(loop.exception))
"""


@pytest.mark.parametrize(("hooked", "exception"), [("installed", "None"), ("not", "ValueError")])
def test_closing_the_csv_files_stops_locusts_loop_that_writes_them(tmp_path: Path, hooked: str, exception: str) -> None:
    """Locust's stats_writer loop outlives close_files; its next pass failed on the closed files (a traceback at
    the end of a --processes run with --csv, whose master waits for its workers at exit). The second case
    shows what happens without the hook, so that the first one means something."""
    proc = subprocess.run(
        [sys.executable, "-c", CLOSED_CSV_SCRIPT, hooked, str(tmp_path / "run")],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(exception), proc.stdout
