"""The Locust plugin: the options added to Locust's parser, and at ``events.init`` the process's start (the
options resolved, the checks, the web UI's tab, the latency collection and, except on a master, the
target prepared) with the one :class:`RunState` each Locust environment keeps for its users.

Imported by :mod:`locust_inference.users`, so a locustfile that imports the user classes has the plugin.
The modules imported here register their own listeners first (``telemetry.wiring`` checks its options at
``init`` before the target is prepared), and the listeners that ``_prepare`` installs are registered in a
fixed order: Locust fires ``quitting`` listeners in reverse, so the checks (installed before
``latency.install``) judge the summary latency's own ``quitting`` listener has written.
"""

from __future__ import annotations

import logging
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from locust_inference import checks, distributed, hooks, interrupt, latency, options, scenario, scheduling, webui
from locust_inference._native import ConfigError
from locust_inference.backends import Target, prepare

__all__ = ["RunState", "state_of", "target_for"]

log = logging.getLogger("locust_inference")


@dataclass
class RunState:
    """What one environment's users share for its run."""

    target: Target
    # --expect-top1 N; None with --expect-top1 auto (or none: then it is not checked)
    expected_top1: int | None = None
    # --expect-top1 auto: each model's inputs' top-1 class, learned from its first answer
    learned_top1: dict[tuple[str, int], int | None] = field(default_factory=dict)
    # Several models (--model-name a,b): each model's target and weight; empty with one model
    targets: tuple[Target, ...] = ()
    weights: tuple[int, ...] = ()
    bound: list[int] = field(default_factory=list)  # users bound to each model so far in this process

    def bind(self, user_class: type | None = None) -> Target:
        """The target of a user of ``user_class`` starting now: with several models, the one it is bound to for
        its life, in the weighted turn of :func:`options.next_model`; with a scenario, its class's entry's."""
        entry: int | None = getattr(user_class, "scenario_entry", None)
        if entry is not None and self.targets:
            return self.targets[entry]
        if not self.targets:
            return self.target
        if not self.bound:
            self.bound = [0] * len(self.targets)
        pick = options.next_model(self.bound, self.weights)
        self.bound[pick] += 1
        return self.targets[pick]


_states: weakref.WeakKeyDictionary[Environment, RunState] = weakref.WeakKeyDictionary()


def state_of(environment: Environment) -> RunState:
    """The state prepared for this environment at start."""
    try:
        return _states[environment]
    except KeyError:
        raise ConfigError("locust-inference was not initialised: import it from the locustfile") from None


def target_for(environment: Environment) -> Target:
    """The target prepared for this environment at start."""
    return state_of(environment).target


def _fail_at_start(message: str) -> None:
    log.error("locust-inference: %s", message)
    sys.stderr.write(f"locust-inference: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    options.add_arguments(parser)
    scenario.add_arguments(parser)
    checks.add_arguments(parser.add_argument_group("locust-inference checks"))


@events.init.add_listener
def _prepare(environment: Environment, **_kwargs: Any) -> None:
    parsed = environment.parsed_options
    if parsed is None:  # a library user building its own Environment calls prepare() itself
        return
    interrupt.take_ctrl_c()  # a Ctrl-C that lands in one of Locust's own greenlets is not lost there
    try:
        hooks.check()  # before anything else: a Locust that changed what we replace is not measured
        hooks.install_final_csv()  # --csv files end with every request reported, as the summary does
        plan: scenario.Scenario | None = None
        if getattr(parsed, "scenario", None):  # each entry its own class, server, model and inputs
            shape = environment.shape_class
            # a sweep (sweepfile.py) steps the entries' users together; another shape would leave them unchecked
            first_users = getattr(shape, "scenario_first_users", None)
            if shape is not None and first_users is None:
                raise ConfigError("--scenario fixes each entry's users; a load shape other than a sweep cannot run it")
            plan = scenario.resolve(parsed, environment.host)
            settings = plan.settings
            available = getattr(environment, "available_user_classes", None) or environment.user_classes_by_name
            environment.user_classes = scenario.user_classes(plan, available)
            if not isinstance(environment.runner, WorkerRunner):  # a worker runs what its master sends
                users = first_users(parsed) if first_users is not None else getattr(parsed, "num_users", None)
                scenario.check_users(plan, users)
                _warn_unstarted(environment)
        else:
            settings = options.resolve(parsed, environment.host)
            _select_user_class(environment, settings.class_name)
        # before latency.install: the checks read the summary it writes
        checks.install(environment, checks.parse(getattr(parsed, "check", None)), getattr(parsed, "junit", None))
        webui.install(environment)  # the Inference tab; it finds latency's collector when asked
        if isinstance(environment.runner, MasterRunner):
            distributed.keep_secrets_home(environment)  # settings (with the headers) are resolved above
            distributed.stop_when_a_worker_goes_missing(environment)
            distributed.wait_for_final_reports(environment)  # the results hold each worker's last report
            latency.install(environment, settings, None)
            return  # workers send the requests; they prepare (and validate) the target
        # each model's inputs from its own metadata; the first model missing is said, and nothing runs
        targets = _prepare_targets(settings, plan)
        target = targets[0]
        scheduling.give_way_to_io_thread()  # this thread runs the users
    except ConfigError as err:
        _fail_at_start(str(err))
        return
    top1 = settings.expect_top1
    several = len(targets) > 1
    _states[environment] = RunState(
        target,
        int(top1) if top1 is not None and top1.isdigit() else None,
        targets=tuple(targets) if several else (),
        weights=settings.weights if several else (),
    )
    if settings.insecure:
        log.warning("locust-inference: TLS certificate verification is disabled (--insecure)")
    if several:
        latency.install(environment, settings, None, endpoints={t.name: t.endpoint for t in targets})
    else:
        latency.install(environment, settings, target.endpoint)
    for each in targets:
        log.info(
            "locust-inference: %s %s, %d request bodies (the first %d bytes, input sha256 %s)",
            each.settings.server,
            each.url,
            each.endpoint.body_count,
            each.endpoint.body_length,
            each.input_checksum[:16],
        )


def _warn_unstarted(environment: Environment) -> None:
    """Says which scenario entries got no user once spawning completes: Locust's dispatcher shares the users
    left after the fixed ones by weight, and an entry of small weight gets none of a few, without a word."""
    classes = [cls.__name__ for cls in environment.user_classes]

    @environment.events.spawning_complete.add_listener
    def _unstarted(**_kw: Any) -> None:
        counts = getattr(environment.runner, "target_user_classes_count", None) or {}
        idle = [name for name in classes if not counts.get(name)]
        if idle:
            log.warning("locust-inference: --scenario: no user runs %s; raise -u or their weight", ", ".join(idle))


def _prepare_targets(settings: options.Settings, plan: scenario.Scenario | None) -> list[Target]:
    """Each model's target; a scenario entry's failure names the entry."""
    if plan is None:
        return [prepare(each) for each in settings.per_model()]
    targets = []
    for entry in plan.entries:
        try:
            targets.append(prepare(entry.settings))
        except ConfigError as err:
            raise ConfigError(f"{entry.where}: {err}") from None
    return targets


def _select_user_class(environment: Environment, class_name: str | None) -> None:
    """Applies ``class-name`` from a config file, unless classes were named on the command line."""
    if not class_name or getattr(environment.parsed_options, "user_classes", None):
        return
    by_name = {cls.__name__: cls for cls in environment.user_classes}
    if class_name not in by_name:
        raise ConfigError(f"class-name {class_name!r} is not a user class here; choose one of {sorted(by_name)}")
    environment.user_classes = [by_name[class_name]]
