"""A scenario file (``--scenario FILE``, TOML): several entries in one run, each naming its server and host,
its model, its user class, its share of the users (a weight, or a fixed number) and its own inputs. Each
entry becomes a Locust user class of its own (a subclass of the class it names, with Locust's ``weight`` or
``fixed_count``), so Locust's own spawning splits the users, also across workers; each entry's users send
only to its model. See docs/multi-model.md.

The file is untrusted: it is read only up to :data:`MAX_BYTES`, and any unknown key, value of the wrong
type or out of range, or missing key stops the start with one line naming the entry and the key.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from locust_inference import defaults, options
from locust_inference._native import ConfigError
from locust_inference.options import Settings, bounded, shown

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "Entry", "Scenario", "add_arguments", "check_users", "resolve", "user_classes"]

MAX_BYTES = 1024**2  # a scenario is a few lines a model; anything larger is not one
MAX_ENTRIES = options.MAX_MODELS  # each entry is one endpoint, one request name and one statistics read
MAX_FIXED_USERS = 1_000_000
MAX_TEXT = 4096  # characters of one string value (a path, a host)
TABLE = "entry"  # the file's one top-level key: an array of tables, [[entry]]

# Each key of an entry: the type its value must have, and the option (Locust's parsed attribute) it sets for
# that entry alone. The other options of the command line apply to every entry.
_STR, _INT, _NUMBER = "a string", "a whole number", "a number"
_KEYS: dict[str, tuple[str, str | None]] = {
    "server": (_STR, "server"),
    "host": (_STR, None),
    "model": (_STR, "model_name"),
    "user": (_STR, None),
    "weight": (_INT, None),
    "users": (_INT, None),
    "rate": (_NUMBER, "rate"),
    "arrival": (_STR, "arrival"),
    "max-in-flight": (_INT, "max_in_flight"),
    "overload": (_STR, "overload"),
    "image": (_STR, "image"),
    "input-data": (_STR, "input_data"),
    "batch-size": (_INT, "batch_size"),
    "input-name": (_STR, "input_name"),
    "output-name": (_STR, "output_name"),
}
_REQUIRED = ("server", "model", "user")
# keys of the open-loop user classes (OpenLoopUser): given to a closed-loop class, they would change nothing
_OPEN_LOOP_KEYS = ("rate", "arrival", "max-in-flight", "overload")
# the command-line options an entry names for itself: given beside --scenario, which would win is unclear
_CONFLICTS = (("server", "--server"), ("model_name", "--model-name"), ("model_weights", "--model-weights"))


@dataclass(frozen=True)
class Entry:
    """One entry of the scenario, checked: its user class's name, its share of the users, its settings."""

    where: str  # "--scenario FILE: entry N (server/model)", the start of its error lines
    user: str
    weight: int  # Locust's weight of its class (1 with a fixed number of users)
    users: int  # Locust's fixed_count of its class; 0: the users are split by weight
    keys: frozenset[str]  # the keys the entry gave
    settings: Settings


@dataclass(frozen=True)
class Scenario:
    """The entries, and the run's settings: the first Triton entry's (or the first entry's), as a run of
    several models (``models`` and ``weights`` set, ``scenario`` the entries' settings); with one entry, that
    entry's own."""

    entries: tuple[Entry, ...]
    settings: Settings


def add_arguments(parser: Any) -> None:
    parser.add_argument_group("locust-inference scenario").add_argument(
        "--scenario",
        env_var="LOCUST_SCENARIO",
        default=None,
        help="TOML file of [[entry]] tables, each with server, host, model, user (class), weight or users, and "
        "its own rate, image, input-data, batch-size...: several models and servers in one run "
        "(docs/multi-model.md)",
    )


def resolve(parsed: Any, host: str | None, environ: Mapping[str, str] | None = None) -> Scenario:
    """The scenario named by ``--scenario``, each entry's settings resolved as :func:`options.resolve` resolves
    a run's, from the command line's options with the entry's own keys put in. Raises ConfigError."""
    path = Path(str(parsed.scenario)).expanduser()
    where = f"--scenario {path}"
    for attribute, option in _CONFLICTS:
        if getattr(parsed, attribute, None):
            raise ConfigError(f"{where}: each entry names its server and model; drop {option}")
    if host:
        raise ConfigError(f"{where}: each entry names its own host; drop --host ({shown(host)})")
    if getattr(parsed, "user_classes", None) or getattr(parsed, "class_name", None):
        raise ConfigError(f"{where}: each entry names its user class; name none on the command line or --class-name")
    if getattr(parsed, "class_picker", False):  # the web UI would offer the locustfile's classes, bound to none
        raise ConfigError(f"{where}: each entry names its user class; drop --class-picker")
    tables = _tables(_load(path, where), where)
    entries = [_entry(f"{where}: entry {n}", table, parsed, path.parent, environ) for n, table in enumerate(tables, 1)]
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, 1):
        name = entry.settings.name
        if name in seen:
            raise ConfigError(f"{entry.where}: request name {name} is also entry {seen[name]}'s; one entry a model")
        seen[name] = number
    each = tuple(e.settings for e in entries)
    if len(entries) == 1:  # one entry: a run of one model, as without a scenario
        return Scenario(tuple(entries), replace(each[0], scenario=each))
    first = next((s for s in each if s.server == "triton"), each[0])  # the server metrics are read from it
    run = replace(
        first,
        model=",".join(s.model for s in each),
        models=tuple(s.model for s in each),
        weights=tuple(e.weight for e in entries),
        scenario=each,
    )
    return Scenario(tuple(entries), run)


def _load(path: Path, where: str) -> dict[str, Any]:
    """The file's TOML, read no further than MAX_BYTES (a FIFO or /dev/zero says no size beforehand)."""
    try:
        # Opened without blocking: a FIFO that no one writes to would hold the start forever at open(); it
        # reads as empty instead. Blocking again for the read: a writer that is there is waited for.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            os.set_blocking(fd, True)
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{where}: cannot be read ({err.strerror or type(err).__name__})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_BYTES // 1024} KiB; a scenario is a few lines an entry")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where}: not UTF-8 text (byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not TOML: {err}") from None
    except RecursionError:  # tomllib recurses into nested arrays and tables
        raise ConfigError(f"{where}: not TOML a scenario can be: nested too deeply") from None


def _tables(document: dict[str, Any], where: str) -> list[Any]:
    unknown = sorted(set(document) - {TABLE})
    if unknown:
        raise ConfigError(f"{where}: unknown key {shown(unknown[0])}; the entries are [[{TABLE}]] tables")
    tables = document.get(TABLE)
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{where}: no [[{TABLE}]] table; give one for each model")
    if len(tables) > MAX_ENTRIES:
        raise ConfigError(f"{where}: {len(tables)} entries; at most {MAX_ENTRIES}")
    return tables


def _entry(at: str, table: Any, parsed: Any, folder: Path, environ: Mapping[str, str] | None) -> Entry:
    if not isinstance(table, dict):
        raise ConfigError(f"{at} is {_kind(table)}, not a table of keys")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{at}: unknown key {shown(unknown[0])}; the keys are {', '.join(_KEYS)}")
    for key in _REQUIRED:
        if key not in table:
            raise ConfigError(f"{at}: no key '{key}'")
    for key, value in table.items():
        _check_type(at, key, value)
    server, model = table["server"].strip().lower(), table["model"].strip()
    if server not in defaults.SERVERS:
        raise ConfigError(f"{at}: key 'server' must be {' or '.join(defaults.SERVERS)}, not {shown(table['server'])}")
    if "," in model:
        raise ConfigError(f"{at}: key 'model' names one model, not {shown(model)}; give each its own entry")
    at = f"{at} ({server}/{model})"
    if "weight" in table and "users" in table:
        raise ConfigError(f"{at}: keys 'weight' and 'users' both given; a share by weight or a fixed number")
    weight = bounded(table.get("weight", 1), f"{at}: key 'weight'", 1, options.MAX_MODEL_WEIGHT, whole=True)
    users = bounded(table["users"], f"{at}: key 'users'", 1, MAX_FIXED_USERS, whole=True) if "users" in table else 0
    if "rate" in table:
        bounded(table["rate"], f"{at}: key 'rate'", *options.RATE_RANGE, whole=False, unit=" requests per second")
    for key, low, high in (("batch-size", 1, options.MAX_BATCH_SIZE), ("max-in-flight", 1, options.MAX_IN_FLIGHT)):
        if key in table:
            bounded(table[key], f"{at}: key '{key}'", low, high, whole=True)
    for key, choices in (("arrival", defaults.ARRIVALS), ("overload", defaults.OVERLOAD_POLICIES)):
        if key in table and table[key] not in choices:
            raise ConfigError(f"{at}: key '{key}' must be {' or '.join(choices)}, not {shown(table[key])}")
    mine = argparse.Namespace(**vars(parsed))  # the command line's options, with the entry's own put in
    mine.scenario, mine.model_weights = None, None
    for key, value in table.items():
        attribute = _KEYS[key][1]
        if attribute is None:
            continue
        given = value if _KEYS[key][0] == _STR else str(value)
        if key == "image" or (key == "input-data" and value not in ("random", "zero")):
            given = str(folder / Path(value).expanduser())  # relative to the scenario file (absolute stays)
        setattr(mine, attribute, given)
    mine.server, mine.model_name = server, model
    try:
        settings = options.resolve(mine, table.get("host"), environ)
    except ConfigError as err:
        raise ConfigError(f"{at}: {err}") from None
    return Entry(at, table["user"].strip(), weight, users, frozenset(table), settings)


def _check_type(at: str, key: str, value: Any) -> None:
    kind = _KEYS[key][0]
    if kind == _STR:
        ok = isinstance(value, str) and len(value.strip()) > 0 and len(value) <= MAX_TEXT
        ok = ok and not any(ord(c) < 32 or ord(c) == 127 for c in value)
    elif kind == _INT:
        ok = type(value) is int
    else:
        ok = type(value) in (int, float)
    if not ok:
        detail = f" of at most {MAX_TEXT} characters, none a control character" if kind == _STR else ""
        raise ConfigError(f"{at}: key '{key}' must be {kind}{detail}, not {_kind(value)}")


def _kind(value: Any) -> str:
    """A value's TOML kind for an error line; a string is shown cut short (it may be a whole file)."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {shown(value)}" if value.strip() else "an empty string"
    if isinstance(value, int | float):
        return f"the number {shown(value)}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"  # dates and times


def user_classes(scenario: Scenario, available: Mapping[str, type]) -> list[type]:
    """One Locust user class per entry, named ``Class[server/model]``: a subclass of the entry's class, bound to
    the entry (``scenario_entry``, the entry's index) with its weight or fixed number of users. ``available``
    are the locustfile's user classes by name; only this package's (an InferenceUser's subclass) can be
    bound. Every process makes the same classes from the same file, so a master's spawn messages, which name
    the classes, mean the same to its workers."""
    made: list[type] = []
    inference = sorted(name for name, cls in available.items() if _binds(cls))
    for index, entry in enumerate(scenario.entries):
        base = available.get(entry.user)
        if base is None or not _binds(base):
            raise ConfigError(
                f"{entry.where}: key 'user' is {shown(entry.user)}, not a user class of the locustfile; choose one "
                f"of {', '.join(inference) or '(none: import locust_inference.users there)'}"
            )
        given = sorted(k for k in _OPEN_LOOP_KEYS if k in entry.keys)
        if given and not getattr(base, "open_loop", False):
            raise ConfigError(
                f"{entry.where}: key '{given[0]}' applies to an open-loop user class (as LowUser), not {entry.user}"
            )
        attributes = {
            "scenario_entry": index,
            "weight": entry.weight,
            "fixed_count": entry.users,
            "__module__": base.__module__,
            "__doc__": f"{entry.user} bound to {entry.settings.name} ({entry.where}).",
        }
        made.append(type(base)(f"{entry.user}[{entry.settings.name}]", (base,), attributes))
    return made


def _binds(cls: Any) -> bool:
    """Whether ``cls`` is a user class this package can bind to an entry (InferenceUser's, which reads
    ``scenario_entry``); users.py cannot be imported here (it imports the plugin, which imports this)."""
    return isinstance(cls, type) and hasattr(cls, "scenario_entry") and not getattr(cls, "abstract", False)


def check_users(scenario: Scenario, num_users: Any) -> None:
    """Refuses a run whose ``-u`` cannot start every entry: fewer users than the entries' fixed numbers, or
    none left for the entries shared by weight (Locust would leave some entries without a user, and say
    nothing). ``num_users`` None: the web UI asks for the count later."""
    if num_users is None:
        return
    fixed = sum(e.users for e in scenario.entries)
    weighted = any(not e.users for e in scenario.entries)
    if int(num_users) < fixed + weighted:
        rest = " and at least one more for the entries shared by weight" if weighted else ""
        raise ConfigError(
            f"--scenario: -u {int(num_users)} users cannot start every entry: the entries fix {fixed} with 'users'"
            f"{rest}"
        )
