"""The scenario file (``--scenario FILE``): each entry resolved into its own settings and user class, and every
bad file, key or value refused with one line naming the entry and the key (exit status 2 at start)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import configargparse
import pytest
from locust_inference import options, scenario
from locust_inference._native import ConfigError
from support.runs import REPO_ROOT, assert_clean_failure, clean_env, run_locust

SWEEPFILE = REPO_ROOT / "sweepfile.py"
TRITON = """
[[entry]]
server = "triton"
host = "http://127.0.0.1:9"
model = "sleep_20ms"
user = "HighUser"
users = 1
"""
LITSERVE = """
[[entry]]
server = "litserve"
host = "http://127.0.0.1:10"
model = "tiny_onnx"
user = "LowUser"
weight = 3
rate = 5
image = "pictures/cat.jpg"
batch-size = 2
"""


def parse(*args: str) -> Any:
    parser = configargparse.ArgumentParser(add_help=False, default_config_files=[])
    options.add_arguments(parser)
    scenario.add_arguments(parser)
    parser.add_argument("--class-picker", action="store_true", default=False)  # Locust's own
    return parser.parse_args(list(args))


def load(tmp_path: Path, text: str | bytes, *args: str, host: str | None = None) -> scenario.Scenario:
    path = tmp_path / "scenario.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return scenario.resolve(parse("--scenario", str(path), *args), host, environ={})


class HighUser:
    """Stands for the locustfile's class (importing Locust here would monkey-patch pytest's process): what
    scenario.user_classes reads of InferenceUser's subclasses."""

    abstract = False
    scenario_entry: int | None = None
    open_loop = False
    weight, fixed_count = 1, 0


class LowUser(HighUser):
    open_loop = True


def classes() -> dict[str, type]:
    return {"HighUser": HighUser, "LowUser": LowUser, "Plain": type("Plain", (), {})}


def refused(tmp_path: Path, text: str | bytes, *args: str, host: str | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text, *args, host=host)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_each_entry_has_its_own_server_host_model_and_inputs(tmp_path: Path) -> None:
    plan = load(tmp_path, TRITON + LITSERVE, "--batch-size", "4", "--request-timeout", "7")
    triton, litserve = (e.settings for e in plan.entries)
    assert (triton.name, triton.host, litserve.name, litserve.host) == (
        "triton/sleep_20ms",
        "http://127.0.0.1:9",
        "litserve/tiny_onnx",
        "http://127.0.0.1:10",
    )
    # the entry's own keys win; the command line's other options apply to every entry
    assert (triton.batch_size, litserve.batch_size) == (4, 2)
    assert triton.request_timeout == litserve.request_timeout == 7.0
    assert (triton.open_loop.rate, litserve.open_loop.rate) == (None, 5.0)
    assert litserve.image == tmp_path / "pictures" / "cat.jpg"  # relative to the scenario file
    assert [(e.user, e.weight, e.users) for e in plan.entries] == [("HighUser", 1, 1), ("LowUser", 3, 0)]
    run = plan.settings  # a run of several models: the first Triton entry's, each entry's own beside it
    assert (run.server, run.host, run.weights) == ("triton", triton.host, (1, 3))
    assert run.models == ("sleep_20ms", "tiny_onnx")
    assert run.per_model() == [triton, litserve]


def test_one_entry_is_a_run_of_one_model(tmp_path: Path) -> None:
    plan = load(tmp_path, TRITON)
    assert plan.settings.models == () and plan.settings.name == "triton/sleep_20ms"
    assert plan.settings.per_model() == [plan.entries[0].settings]


def test_one_user_class_per_entry_bound_to_it(tmp_path: Path) -> None:
    plan = load(tmp_path, TRITON + LITSERVE)
    made = scenario.user_classes(plan, classes())
    assert [c.__name__ for c in made] == ["HighUser[triton/sleep_20ms]", "LowUser[litserve/tiny_onnx]"]
    assert issubclass(made[0], HighUser) and issubclass(made[1], LowUser)
    # Locust's own spawning splits the users: a fixed count, or a share by weight
    assert [(c.fixed_count, c.weight, c.abstract) for c in made] == [(1, 1, False), (0, 3, False)]
    assert [c.scenario_entry for c in made] == [0, 1]  # what InferenceUser's RunState.bind reads


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (TRITON.replace("users = 1", "rat = 1"), "entry 1: unknown key 'rat'; the keys are server, host"),
        (TRITON.replace("users = 1", 'users = "2"'), "entry 1: key 'users' must be a whole number, not the string '2'"),
        (TRITON.replace("users = 1", "users = 2.5"), "entry 1: key 'users' must be a whole number, not the number 2.5"),
        (TRITON.replace("users = 1", "users = true"), "entry 1: key 'users' must be a whole number, not the boolean"),
        (TRITON.replace("users = 1", "users = 0"), "entry 1 (triton/sleep_20ms): key 'users' must be a whole number"),
        (TRITON.replace("users = 1", "weight = 10000000"), "key 'weight' must be a whole number from 1 to 1,000,000"),
        (TRITON.replace("users = 1", "users = 1\nweight = 2"), "keys 'weight' and 'users' both given"),
        (TRITON.replace('model = "sleep_20ms"', "model = 3"), "entry 1: key 'model' must be a string"),
        (TRITON.replace('model = "sleep_20ms"', 'model = ""'), "entry 1: key 'model' must be a string"),
        (TRITON.replace('model = "sleep_20ms"', 'model = "a\\nb"'), "none a control character, not the string"),
        (TRITON.replace('model = "sleep_20ms"', 'model = "a,b"'), "key 'model' names one model, not 'a,b'"),
        (TRITON.replace('model = "sleep_20ms"\n', ""), "entry 1: no key 'model'"),
        (TRITON + LITSERVE.replace('user = "LowUser"\n', ""), "entry 2: no key 'user'"),
        (TRITON.replace('server = "triton"', 'server = "tritonn"'), "key 'server' must be triton or litserve"),
        (TRITON.replace('host = "http://127.0.0.1:9"', 'host = ["x"]'), "key 'host' must be a string"),
        (TRITON.replace("http://127.0.0.1:9", "http://me:pw@127.0.0.1:9"), "--host must not carry a user or password"),
        (TRITON.replace("http://127.0.0.1:9", "ftp://127.0.0.1:9"), "(triton/sleep_20ms): host 'ftp://127"),
        (LITSERVE.replace("rate = 5", "rate = 0"), "entry 1 (litserve/tiny_onnx): key 'rate' must be a number from"),
        (LITSERVE.replace("rate = 5", "rate = nan"), "key 'rate' must be a number from 0.001 to 1,000,000"),
        (LITSERVE.replace("rate = 5", "rate = inf"), "key 'rate' must be a number from 0.001 to 1,000,000"),
        (LITSERVE.replace("rate = 5", 'rate = "5"'), "key 'rate' must be a number, not the string '5'"),
        (LITSERVE.replace("batch-size = 2", "batch-size = 99999999999999"), "key 'batch-size' must be a whole"),
        (LITSERVE.replace("rate = 5", 'arrival = "burst"'), "key 'arrival' must be constant or poisson, not 'burst'"),
        (LITSERVE.replace("rate = 5", "rate = 1979-05-27"), "key 'rate' must be a number, not a date"),
        (
            TRITON + LITSERVE + TRITON.replace("users = 1", "weight = 1"),
            "entry 3 (triton/sleep_20ms): request name triton/sleep_20ms is also entry 1's; one entry a model",
        ),
        (TRITON + "\n[entry2]\nx = 1\n", "unknown key 'entry2'; the entries are [[entry]] tables"),
        ("entry = [1, 2]\n", "entry 1 is the number 1, not a table of keys"),
        ('entry = "x"\n', "no [[entry]] table; give one for each model"),
        ("# nothing\n", "no [[entry]] table"),
        (TRITON * 65, "65 entries; at most 64"),
        ("[[entry]\n", "not TOML: "),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        (b"[[entry]]\nmodel = '\xff'\n", "not UTF-8 text (byte 19)"),
        ("#" * (scenario.MAX_BYTES + 1), "larger than 1024 KiB"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_entry_and_key(tmp_path: Path, text: str | bytes, line: str) -> None:
    message = refused(tmp_path, text)
    assert message.startswith(f"--scenario {tmp_path / 'scenario.toml'}: "), message
    assert line in message, message


@pytest.mark.parametrize(
    ("args", "host", "line"),
    [
        (["--model-name", "tiny_onnx"], None, "each entry names its server and model; drop --model-name"),
        (["--server", "triton"], None, "drop --server"),
        (["--model-weights", "1,2"], None, "drop --model-weights"),
        ([], "http://127.0.0.1:8000", "each entry names its own host; drop --host"),
        (["--class-name", "LowUser"], None, "each entry names its user class; name none on the command line"),
        (["--class-picker"], None, "each entry names its user class; drop --class-picker"),
    ],
)
def test_what_an_entry_names_is_not_also_on_the_command_line(
    tmp_path: Path, args: list[str], host: str | None, line: str
) -> None:
    assert line in refused(tmp_path, TRITON, *args, host=host)


def test_a_file_that_never_ends_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        scenario.resolve(parse("--scenario", "/dev/zero"), None, environ={})
    assert str(err.value) == "--scenario /dev/zero: larger than 1024 KiB; a scenario is a few lines an entry"
    with pytest.raises(ConfigError) as err:
        scenario.resolve(parse("--scenario", str(tmp_path / "missing.toml")), None, environ={})
    assert "missing.toml: cannot be read (No such file or directory)" in str(err.value)


def test_a_fifo_no_one_writes_to_does_not_hold_the_start(tmp_path: Path) -> None:
    """Opening a FIFO waits for a writer; the scenario's is opened without waiting, and reads as empty."""
    fifo = tmp_path / "scenario.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as err:
        scenario.resolve(parse("--scenario", str(fifo)), None, environ={})
    assert str(err.value) == f"--scenario {fifo}: no [[entry]] table; give one for each model"
    with pytest.raises(ConfigError) as err:
        scenario.resolve(parse("--scenario", str(tmp_path)), None, environ={})
    assert str(err.value) == f"--scenario {tmp_path}: cannot be read (Is a directory)"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            TRITON.replace("HighUser", "MidUser"),
            "entry 1 (triton/sleep_20ms): key 'user' is 'MidUser', not a user class of the locustfile; choose one of "
            "HighUser, LowUser",
        ),
        (TRITON.replace("HighUser", "Plain"), "key 'user' is 'Plain', not a user class of the locustfile"),
        (TRITON.replace("users = 1", "users = 1\nrate = 5"), "key 'rate' applies to an open-loop user class"),
        (TRITON.replace("users = 1", 'overload = "queue"'), "key 'overload' applies to an open-loop user class"),
    ],
)
def test_a_user_class_the_entry_cannot_use_is_one_line(tmp_path: Path, text: str, line: str) -> None:
    plan = load(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        scenario.user_classes(plan, classes())
    assert line in str(err.value)


def test_too_few_users_for_the_entries_is_one_line(tmp_path: Path) -> None:
    plan = load(tmp_path, TRITON + TRITON.replace("sleep_20ms", "tiny_onnx").replace("users = 1", "users = 2"))
    scenario.check_users(plan, 3)
    scenario.check_users(plan, None)  # the web UI: the count is asked later
    with pytest.raises(ConfigError) as err:
        scenario.check_users(plan, 2)
    assert str(err.value) == "--scenario: -u 2 users cannot start every entry: the entries fix 3 with 'users'"
    shared = load(tmp_path, TRITON + LITSERVE)
    with pytest.raises(ConfigError) as err:
        scenario.check_users(shared, 1)
    assert "fix 1 with 'users' and at least one more for the entries shared by weight" in str(err.value)
    scenario.check_users(shared, 2)


def test_a_bad_scenario_stops_the_run_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TRITON.replace("users = 1", "users = -1"))
    run = run_locust(tmp_path, "--scenario", str(path), env=clean_env())
    assert_clean_failure(run, f"--scenario {path}: entry 1 (triton/sleep_20ms): key 'users' must be a whole number")


def test_a_closed_loop_entry_with_a_rate_stops_the_run_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "rate.toml"
    path.write_text(TRITON.replace("users = 1", "users = 1\nrate = 5"))
    run = run_locust(tmp_path, "--scenario", str(path), env=clean_env())
    assert_clean_failure(run, "entry 1 (triton/sleep_20ms): key 'rate' applies to an open-loop user class (as LowUser)")


SHAPEFILE = """
from locust import LoadTestShape, constant
from locust_inference.users import InferenceUser


class HighUser(InferenceUser):
    wait_time = constant(0)


class Steps(LoadTestShape):
    def tick(self):
        return None
"""


def test_a_scenario_with_a_load_shape_other_than_a_sweep_stops_the_run_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "shape.toml"
    path.write_text(TRITON)
    locustfile = tmp_path / "shaped.py"
    locustfile.write_text(SHAPEFILE)
    run = run_locust(tmp_path, "--scenario", str(path), env=clean_env(), locustfile=locustfile)
    assert_clean_failure(run, "--scenario fixes each entry's users; a load shape other than a sweep cannot run it")


@pytest.mark.parametrize(
    ("sweep", "line"),
    [
        (["--sweep-rate", "10,20"], "--scenario sweeps --sweep-concurrency steps: each entry offers its own rate"),
        # the entry fixes 1 user, and the weighted one needs one more: a first step of 1 cannot start both
        (["--sweep-concurrency", "1,2"], "--scenario: -u 1 users cannot start every entry: the entries fix 1"),
    ],
)
def test_a_scenario_sweep_that_cannot_run_stops_with_exit_2(tmp_path: Path, sweep: list[str], line: str) -> None:
    path = tmp_path / "sweep.toml"
    both = TRITON.replace("HighUser", "ConcurrencyUser") + TRITON.replace("HighUser", "ConcurrencyUser").replace(
        "users = 1", "weight = 1"
    ).replace("sleep_20ms", "tiny_onnx")
    path.write_text(both)
    run = run_locust(tmp_path, "--scenario", str(path), *sweep, env=clean_env(), locustfile=SWEEPFILE)
    assert_clean_failure(run, line)


def test_too_few_users_stop_the_run_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "few.toml"
    path.write_text(TRITON + LITSERVE)
    run = run_locust(tmp_path, "--scenario", str(path), env=clean_env(), users=1)
    assert_clean_failure(run, "--scenario: -u 1 users cannot start every entry: the entries fix 1 with 'users' and")
