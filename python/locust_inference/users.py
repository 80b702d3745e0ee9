"""The user classes: the abstract :class:`InferenceUser`, whose requests run in Rust while the greenlet
waits on an eventfd, and :class:`OpenLoopUser`. Importing this module installs the plugin
(:mod:`locust_inference.plugin`: the options, and the target prepared once per process).

Each request fires ``events.request`` exactly once, with the latency measured in Rust.
"""

from __future__ import annotations

import collections
import importlib
import itertools
import logging
import random
import sys
from typing import Any, ClassVar

import gevent
from gevent import GreenletExit
from locust import User, constant_pacing, task
from locust.env import Environment

from locust_inference import defaults, hooks, latency, scheduling
from locust_inference._native import Completion, Outcome, ProtocolError, RequestSlot, Stream
from locust_inference.plugin import state_of, target_for

__all__ = ["InferenceUser", "OpenLoopUser", "target_for"]

debug_log = logging.getLogger("locust_inference.debug")

_user_numbers = itertools.count()
# Locust's states of a user: asked to stop after its task, waiting (a stop ends it at once) and running;
# hooks.check_stop stops the run at start if one is missing
_STATES = importlib.import_module("locust.user.task")
_STOPPING = getattr(_STATES, "LOCUST_STATE_STOPPING", None)
_WAITING = getattr(_STATES, "LOCUST_STATE_WAITING", None)
_RUNNING = getattr(_STATES, "LOCUST_STATE_RUNNING", None)


def _redact(headers: Any) -> list[tuple[str, str]]:
    """Only the headers this package sets are shown; user-supplied values (--header, the bearer token)
    may be secrets and are never logged."""
    shown = {"content-type", "inference-header-content-length", "content-length"}
    return [(k, v if k.lower() in shown else "<redacted>") for k, v in headers]


def _redact_response(headers: Any) -> list[tuple[str, str]]:
    secret = {"set-cookie", "authorization", "proxy-authorization", "x-api-key"}
    return [(k, "<redacted>" if k.lower() in secret else v) for k, v in headers]


class InferenceUser(User):
    """Sends the prepared inference request in a loop. Subclasses set ``wait_time``.

    ``back_to_back = True`` (HighUser) sends each request the moment the previous one is answered,
    as wrk does: the I/O thread sends it (a follow-up) while this greenlet reports the answer, so
    the turn through Python and Locust overlaps the next request instead of delaying it. It needs
    one task and zero waits: a positive first wait keeps it off, and a later positive wait turns it
    off (a follow-up already out is still reported, timed from its own send). Every request is
    reported once, in order. A user asked to stop sends no follow-up; stopped gracefully
    (``StopUser``, ``--stop-timeout``), it waits for one that left before and reports it; killed, it
    abandons it, as any request in flight."""

    abstract = True
    back_to_back: ClassVar[bool] = False
    open_loop: ClassVar[bool] = False  # whether the scenario's open-loop keys (rate...) apply to the class
    # --scenario: the entry a class made for it sends to (locust_inference.scenario.user_classes)
    scenario_entry: ClassVar[int | None] = None

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._run = state_of(environment)
        self._target = self._run.bind(type(self))  # with several models, this user's for its life
        self._user_seed = self._seed()
        self._slot = RequestSlot(seed=self._user_seed)
        self._watcher = gevent.get_hub().loop.io(self._slot.fileno(), 1)
        self._context = {"server": self._target.settings.server, "model": self._target.settings.model}
        collector = latency.collector_of(environment)
        self._slo = collector.slo if collector is not None else None  # --token-slo's judgements
        self._yielded = False  # whether the greenlet went through the hub since the last wait
        self._follows = self.back_to_back and len(set(self.tasks)) == 1

    def _wait(self) -> Outcome:
        hub = gevent.get_hub()
        while True:
            # Straight to the hub: a request just submitted is not done yet, and a readable eventfd
            # (done meanwhile) makes the watcher fire at once.
            hub.wait(self._watcher)
            outcome = self._slot.take()
            if outcome is not None:
                self._yielded = True
                return outcome

    def send(self) -> Outcome:
        """Sends one request (or adopts the follow-up already out), waits without blocking other
        greenlets, and reports it."""
        return self._exchange(self._follows and self._state != _STOPPING)

    def _exchange(self, follow: bool) -> Outcome:
        target = self._target
        self._slot.submit(target.endpoint, follow=follow)
        try:
            outcome = self._wait()
        except BaseException:
            self._slot.cancel()  # stopped or killed mid-request: abandon it, report nothing
            raise
        exception = self._judge(outcome)
        # With no yield before the event: the histograms and Locust count the same requests.
        target.endpoint.record(outcome, success=exception is None)
        ttft = outcome.ttft  # generative streams: in the event's context, not as a second Locust entry
        self._fire(
            outcome,
            outcome.response_time,
            exception,
            self._context if ttft is None else {**self._context, "ttft": ttft},
        )
        return outcome

    def stop(self, force: bool = False) -> bool:
        """Locust's stop; from now on the slot sends no follow-up of its own."""
        self._slot.unfollow()
        stopped: bool = super().stop(force)
        return stopped

    def _judge(self, outcome: Outcome) -> Exception | None:
        """The failure to report: the outcome's own, or a failed --expect-top1 check."""
        exception: Exception | None = outcome.exception
        if exception is None and self._target.settings.expect_top1 is not None:
            exception = self._check_top1(outcome)
        if self._target.settings.debug:
            self._log_debug(outcome)
        return exception

    def _fire(
        self, outcome: Outcome, response_time: float, exception: Exception | None, context: dict[str, Any]
    ) -> None:
        target = self._target
        if self._slo is not None:
            self._slo.judge(exception is None, context.get("ttft"), outcome.tpot, response_time)
        self.environment.events.request.fire(
            request_type="infer",
            name=target.name,
            response_time=response_time,
            response_length=outcome.response_length,
            response=outcome,
            context=context,
            exception=exception,
            url=target.url,
        )

    def _seed(self) -> int:
        """This user's seed (its input order when shuffled; an open-loop user's arrivals): from --seed,
        different for every user and worker, or random."""
        base = self._target.settings.seed
        if base is None:
            return random.SystemRandom().getrandbits(63)
        worker = getattr(self.environment.runner, "worker_index", 0) or 0
        return (base + worker * 1_000_003 + next(_user_numbers)) % 2**64

    def _check_top1(self, outcome: Outcome) -> Exception | None:
        expected = self._run.expected_top1
        if expected is None:  # --expect-top1 auto: each input's first answer sets its expectation
            key = (self._target.name, outcome.input_index)
            expected = self._run.learned_top1.setdefault(key, outcome.top1)
        if outcome.top1 != expected:
            inputs = self._target.inputs
            which = f" for {inputs[outcome.input_index]}" if len(inputs) > 1 else ""
            return ProtocolError(f"top-1 class is {outcome.top1}, expected {expected}{which} (--expect-top1)")
        return None

    @task
    def infer(self) -> None:
        self._step()

    def _step(self) -> None:
        """One turn of the task (Locust runs the base class's task function: subclasses override this)."""
        self.send()

    def on_start(self) -> None:
        self._skip_redundant_zero_waits()
        if self._follows and self.wait_time() > 0:
            self._follows = False  # back to back only with zero waits
        delay = self.stagger_delay()
        if delay > 0:
            # As in Locust's waits: a user asked to stop meanwhile ends at once, without sending
            self._state = _WAITING
            gevent.sleep(delay)
            self._state = _RUNNING

    def stagger_delay(self) -> float:
        """How long this user's first request waits after the user starts (``--stagger S``): uniform in
        [0, S), drawn from the user's own seed, so ``--seed`` makes it the same in every run. Locust starts
        each second's users together; users whose answers take equal times would stay in step all run."""
        spread = self._target.settings.stagger
        if spread <= 0:
            return 0.0
        return random.Random(f"stagger {self._user_seed}").uniform(0.0, spread)

    def _skip_redundant_zero_waits(self) -> None:
        """Locust turns a zero wait (HighUser; LowUser behind its pace) into ``gevent.sleep(0)``, one
        more round trip through the hub per request. A request already went through the hub while
        it waited for its answer, so a zero wait right after one returns at once. A zero wait after
        a task that did not send still yields: no user can keep the others from running."""
        taskset = getattr(self, "_taskset_instance", None)
        sleep = getattr(taskset, "_sleep", None)
        # checked at start (hooks.check); this is for a User started without Locust's init
        if taskset is None or sleep is None:
            raise hooks.failure(hooks.SLEEP_HOOK, "is not reachable from this User (no _taskset_instance)")

        def _sleep(seconds: float) -> None:
            yielded, self._yielded = self._yielded, False
            if seconds > 0 and self._follows:
                self._follows = False  # back to back only while the waits are zero
                self._slot.unfollow()
            if seconds > 0 or not yielded:
                sleep(seconds)

        taskset._sleep = _sleep

    def on_stop(self) -> None:
        # Called as Locust handles the exception that stops the user: a kill (GreenletExit) abandons
        # a follow-up, a graceful stop waits for it and reports it (a kill meanwhile abandons it).
        stopping = sys.exc_info()[0]
        if stopping is not None and not issubclass(stopping, GreenletExit) and self._slot.ahead:
            self._exchange(follow=False)
        self._slot.cancel()

    def _log_debug(self, outcome: Outcome) -> None:
        target = self._target
        debug_log.info(
            "POST %s headers=%s json_header_bytes=%s tensor_bytes=%d body_bytes=%d -> status=%s "
            "time=%.3fms ttfb=%s length=%d headers=%s%s%s%s",
            target.url,
            _redact(target.request_headers),
            target.json_header_bytes,
            target.tensor_bytes,
            target.endpoint.body_length,
            outcome.status,
            outcome.response_time,
            f"{outcome.ttfb:.3f}ms" if outcome.ttfb is not None else None,
            outcome.response_length,
            _redact_response(outcome.headers or []),
            # the raw start of an error body (with its request id); the failure Locust counts has it normalised
            f" error={outcome.error_detail}" if outcome.error_detail is not None else "",
            # generative answers: what the stream carried
            f" ttft={outcome.ttft:.3f}ms" if outcome.ttft is not None else "",
            f" output_tokens={outcome.output_tokens} ({outcome.token_source}) chunks={outcome.chunks}"
            if outcome.output_tokens is not None
            else "",
        )


class OpenLoopUser(InferenceUser):
    """Sends the prepared request on a schedule that does not depend on the answers: ``rate``
    requests per second (constant spacing, or Poisson arrivals), at most ``max_in_flight`` at once.

    The schedule runs in Rust on the I/O runtime (a microsecond timer, absolute intended times), so neither
    Python nor a slow server shifts it. When ``max_in_flight`` requests are out at a request's
    intended time, ``overload`` says what happens: ``drop`` (never sent; counted as dropped, as k6
    counts ``dropped_iterations``, not as a Locust failure) or ``queue`` (sent in order as soon as
    one returns). Each answered request fires ``events.request`` once with ``response_time`` from
    its *intended* send time; ``context`` carries ``service_time`` (from the actual send) and
    ``lag`` (actual - intended) in ms. The greenlet only waits on the stream's eventfd and reports
    what arrived. Subclasses set the class attributes; ``--rate``, ``--arrival``, ``--seed``,
    ``--max-in-flight`` and ``--overload`` override them. ``--closed-loop`` instead runs the class
    as a closed loop paced to ``rate`` (``constant_pacing(1 / rate)``).
    """

    abstract = True
    open_loop = True
    rate: ClassVar[float] = defaults.OPEN_LOOP_RATE
    arrival: ClassVar[str] = defaults.OPEN_LOOP_ARRIVAL
    max_in_flight: ClassVar[int] = defaults.OPEN_LOOP_MAX_IN_FLIGHT
    overload: ClassVar[str] = defaults.OPEN_LOOP_OVERLOAD

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        s = self._target.settings.open_loop
        self._rate = s.rate if s.rate is not None else self.rate
        self._closed_loop = s.closed_loop
        self._pacing = constant_pacing(1 / self._rate)
        self._stream: Stream | None = None
        self._stream_watcher: Any = None
        # Taken from the stream, not reported yet: a task that ends early (an exception) leaves the rest for
        # the next; a user that stops leaves them to stream.stop(), which counts them as unfinished.
        self._batch: collections.deque[Completion] = collections.deque()

    def wait_time(self) -> float:
        return self._pacing(self) if self._closed_loop else 0.0

    def on_start(self) -> None:
        super().on_start()
        if self._closed_loop:
            return
        s = self._target.settings.open_loop
        self._stream = Stream(
            self._target.endpoint,
            self._rate,
            arrival=s.arrival or self.arrival,
            seed=self._seed(),
            max_in_flight=s.max_in_flight or self.max_in_flight,
            overload=s.overload or self.overload,
        )
        self._stream_watcher = gevent.get_hub().loop.io(self._stream.fileno(), 1)
        scheduling.put_streams_first()

    def _step(self) -> None:
        stream = self._stream
        if stream is None:
            self.send()
            return
        if not self._batch:
            gevent.get_hub().wait(self._stream_watcher)
            self._yielded = True
            self._batch.extend(stream.take())
        while self._batch:
            self._report(stream, self._batch.popleft())

    def _report(self, stream: Stream, completion: Completion) -> None:
        outcome = completion.outcome
        exception = self._judge(outcome)
        stream.record(completion, success=exception is None)
        context = {**self._context, "service_time": completion.service_time, "lag": completion.lag}
        if completion.ttft is not None:  # from the intended send time, as the latency
            context["ttft"] = completion.ttft
        self._fire(outcome, completion.response_time, exception, context)

    def on_stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()  # requests in flight, queued, or taken and not reported count as unfinished
        super().on_stop()
