"""A load sweep against one server: `--sweep-concurrency 1,2,4,8` (closed-loop users) or `--sweep-rate 5:60:5`
(open-loop streams offering that many requests per second), each step measured until stable; `--slo
p99=100ms` gives the server's goodput. Results: sweep.json and sweep.csv beside latency.json. See docs/sweeps.md."""

from __future__ import annotations

from locust import constant
from locust.env import Environment
from locust_inference.sweep import plan
from locust_inference.sweep.shape import SweepShape  # before the users: it checks the sweep options first
from locust_inference.users import InferenceUser, OpenLoopUser


class ConcurrencyUser(InferenceUser):
    """A concurrency step's user: the next request as soon as the previous one returned."""

    wait_time = constant(0)


class RateUser(OpenLoopUser):
    """A rate step's user: one open-loop stream; the step's rate is offered by enough of them."""

    def __init__(self, environment: Environment) -> None:
        # Resolved here, on the worker that runs the user, from the options the master sent it.
        self.rate = plan.resolve(environment.parsed_options).stream_rate or OpenLoopUser.rate
        super().__init__(environment)


class Sweep(SweepShape):
    user_classes = {"concurrency": ConcurrencyUser, "rate": RateUser}  # noqa: RUF012
