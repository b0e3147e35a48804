"""The attempt loop (steps.py) and its plan (attempt.py), driven by hand: no I/O, no sleep.

A test plays the shell: it answers each Send with a response or throws an exception in,
and checks the next step and what the plan accounted (in-flight, latency, failures).
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.balancer import Balancer
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.errors import AllAttemptsFailedError, NoHealthyInstanceError
from consul_discovery.client.load import InstanceLoad
from consul_discovery.client.retry import ErrorKind, RetryPolicy
from consul_discovery.client.route import RequestView, Route
from consul_discovery.client.state import TargetStates
from consul_discovery.client.steps import Done, Park, Release, Send, Sleep, attempt_steps
from consul_discovery.client.target import Target
from tests.discovery_client.fakes import FakeClock, instance, resolution


class ConnectFailed(Exception):
    """Nothing was sent."""


class ReadFailed(Exception):
    """The request may have been sent."""


class BadRequest(Exception):
    """The caller's mistake."""


ERRORS = (ConnectFailed, ReadFailed, BadRequest)


def classify(error: BaseException) -> ErrorKind:
    return {ConnectFailed: ErrorKind.CONNECT, ReadFailed: ErrorKind.READ}.get(
        type(error), ErrorKind.FATAL
    )


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


def route_of(*targets: tuple[str, int], clock: FakeClock, policy: str = "round_robin") -> Route:
    """A Route over targets (name, number of instances), each resolved at once."""
    states = TargetStates(
        lambda _t, _l: None,
        retry=RetryPolicy(),
        ejection=EjectionPolicy(),
        clock=clock,
        rng=random.Random(7),
    )
    made = []
    for name, count in targets:
        state = states.get(Target(name), ServiceConfig(policy=policy))
        res = resolution(*(instance(f"{name}{n}", port=n + 1) for n in range(count)))
        state.adopt(res)
        made.append(state)
    return Route(targets[0][0], tuple(made))


def start(route: Route, clock: FakeClock, method: str = "GET", **kwargs: Any):
    policy = kwargs.pop("policy", RetryPolicy(backoff_base=0.01, backoff_max=0.01))
    request = RequestView.of(method, "/", kwargs.pop("headers", {}))
    plan = AttemptPlan(route, policy, request, True, clock, random.Random(1),
                       kwargs.pop("started", clock()), **kwargs)  # fmt: skip
    return plan, attempt_steps(plan, ERRORS, classify)


def loads(route: Route) -> dict[str, Any]:
    return {e.id: e.load for e in route.primary.balancer._endpoints}


def test_an_answer_is_the_result_and_its_latency_runs_to_its_headers():
    clock = FakeClock()
    route = route_of(("svc", 2), clock=clock)
    _plan, steps = start(route, clock)
    step = next(steps)
    assert isinstance(step, Send)
    assert step.endpoint.load.in_flight == 1
    clock.advance(0.25)
    ok = Answer(200)
    done = steps.send(ok)
    assert isinstance(done, Done) and done.response is ok
    assert step.endpoint.load.in_flight == 0
    assert step.endpoint.load.latency(clock()) == pytest.approx(0.25)
    assert route.primary.requests == 1 and route.primary.retries == 0


def test_a_retried_answer_is_parked_then_released_for_the_next_one():
    clock = FakeClock()
    route = route_of(("svc", 2), clock=clock)
    _plan, steps = start(route, clock)
    first = next(steps)
    busy = Answer(503)
    park = steps.send(busy)
    assert isinstance(park, Park) and park.response is busy
    parked = Answer(503)  # the shell buffers it: a new object
    sleep = steps.send(parked)
    assert isinstance(sleep, Sleep) and 0 <= sleep.seconds <= 0.01
    second = next(steps)
    assert isinstance(second, Send) and second.endpoint.id != first.endpoint.id
    ok = Answer(200)
    release = steps.send(ok)
    assert isinstance(release, Release) and release.response is parked
    done = next(steps)
    assert isinstance(done, Done) and done.response is ok
    assert route.primary.retries == 1
    assert first.endpoint.load.failures == 1 and second.endpoint.load.failures == 0


def test_a_connect_error_is_retried_and_gives_no_latency():
    clock = FakeClock()
    route = route_of(("svc", 2), clock=clock)
    _plan, steps = start(route, clock, method="POST")
    first = next(steps)
    clock.advance(0.5)
    assert isinstance(steps.throw(ConnectFailed()), Sleep)  # any method: nothing was sent
    assert first.endpoint.load.latency(clock()) == 0.0
    assert first.endpoint.load.failures == 1 and first.endpoint.load.in_flight == 0


def test_a_read_error_is_a_lower_bound_on_latency_and_is_not_resent_for_a_post():
    clock = FakeClock()
    route = route_of(("svc", 2), clock=clock)
    plan, steps = start(route, clock, method="POST")
    first = next(steps)
    clock.advance(0.4)
    with pytest.raises(AllAttemptsFailedError) as caught:
        steps.throw(ReadFailed())
    assert len(caught.value.attempts) == 1 and isinstance(caught.value.__cause__, ReadFailed)
    assert plan.attempts == 1 and route.primary.failed_calls == 1
    assert first.endpoint.load.latency(clock()) == pytest.approx(0.4)


def test_a_lower_bound_only_ever_raises_the_estimate():
    load = InstanceLoad("i", now=0.0)
    load.begin(retry=False)
    load.finish(1.0, 2.0, failed=False)  # an answer after 2 s
    load.begin(retry=False)
    load.finish(1.0, None, failed=True, at_least=0.5)  # timed out after 0.5 s
    assert load.latency(1.0) == pytest.approx(2.0)
    load.begin(retry=False)
    load.finish(1.0, None, failed=True, at_least=3.0)
    assert load.latency(1.0) == pytest.approx(3.0)


def test_an_estimate_with_no_news_for_a_decay_time_is_forgotten():
    load = InstanceLoad("i", now=0.0, decay_time=10.0)
    load.begin(retry=False)
    load.finish(0.0, 1.0, failed=False)  # a stall
    assert load.latency(9.9) == pytest.approx(1.0 * math.exp(-0.99))  # decaying
    assert load.latency(10.0) == 0.0  # forgotten: unknown, so a pick tries it
    load.begin(retry=False)
    load.finish(10.5, 0.01, failed=False)  # the try answers fast
    assert load.latency(10.5) == pytest.approx(0.01)  # a new estimate, not the stall's


def test_a_fatal_error_is_reraised_and_blames_nobody():
    clock = FakeClock()
    route = route_of(("svc", 2), clock=clock)
    _plan, steps = start(route, clock)
    first = next(steps)
    with pytest.raises(BadRequest):
        steps.throw(BadRequest())
    assert first.endpoint.load.failures == 0 and first.endpoint.load.in_flight == 0


@pytest.mark.parametrize("interrupt", [asyncio.CancelledError, KeyboardInterrupt])
def test_a_cancelled_attempt_is_abandoned_its_time_a_lower_bound(interrupt):
    clock = FakeClock()
    route = route_of(("svc", 1), clock=clock)
    _plan, steps = start(route, clock)
    first = next(steps)
    clock.advance(0.3)
    with pytest.raises(interrupt):
        steps.throw(interrupt())
    load = first.endpoint.load
    assert load.in_flight == 0 and load.failures == 0
    assert load.latency(clock()) == pytest.approx(0.3)


def test_a_failure_to_park_drops_that_answer_and_goes_on():
    clock = FakeClock()
    route = route_of(("svc", 2), clock=clock)
    _plan, steps = start(route, clock)
    next(steps)
    park = steps.send(Answer(503))
    assert isinstance(park, Park)
    assert isinstance(steps.throw(ReadFailed()), Sleep)  # reading the 503's body failed
    next(steps)
    with pytest.raises(AllAttemptsFailedError):  # no answer kept: the last error is raised
        for _ in range(3):
            step = steps.throw(ConnectFailed())
            if isinstance(step, Sleep):
                step = next(steps)


def test_no_instance_raises_and_counts_once():
    clock = FakeClock()
    route = route_of(("svc", 0), clock=clock)
    _plan, steps = start(route, clock)
    with pytest.raises(NoHealthyInstanceError):
        next(steps)
    assert route.primary.no_instance == 1 and route.primary.failed_calls == 0


def test_a_target_with_nothing_to_pick_fails_over_to_the_next_in_the_route():
    clock = FakeClock()
    route = route_of(("primary", 0), ("backup", 2), clock=clock)
    _plan, steps = start(route, clock)
    step = next(steps)
    assert isinstance(step, Send) and step.endpoint.id.startswith("backup")
    assert isinstance(steps.send(Answer(200)), Done)
    assert route.states[0].requests == 1  # the call counts where it was made
    assert route.states[1].balancer.load_of(step.endpoint.id).picks == 1


def test_when_every_instance_failed_the_call_the_next_target_is_tried():
    """The primary's instances all refused this call (Consul has not marked them yet):
    the retry goes to the route's next Target instead of an instance already tried."""
    clock = FakeClock()
    route = route_of(("primary", 2), ("backup", 1), clock=clock)
    _plan, steps = start(route, clock)
    first = next(steps)
    assert isinstance(steps.throw(ConnectFailed()), Sleep)
    second = next(steps)
    assert isinstance(steps.throw(ConnectFailed()), Sleep)
    third = next(steps)
    assert {first.endpoint.id, second.endpoint.id} == {"primary0", "primary1"}
    assert third.endpoint.id == "backup0"
    assert isinstance(steps.send(Answer(200)), Done)
    # A single Target keeps its old rule: the same instance again when none is left.
    alone = route_of(("svc", 1), clock=clock)
    _plan, steps = start(alone, clock)
    once = next(steps)
    assert isinstance(steps.throw(ConnectFailed()), Sleep)
    assert next(steps).endpoint.id == once.endpoint.id


def test_the_hash_key_reaches_every_pick():
    clock = FakeClock()
    route = route_of(("svc", 2), clock=clock)
    seen: list[Any] = []
    balancer = route.primary.balancer
    real = balancer.pick

    def spy(exclude=(), hash_key=None):
        seen.append(hash_key)
        return real(exclude, hash_key)

    first = balancer.start

    def spy_first(hash_key=None):  # the call's first pick
        seen.append(hash_key)
        return first(hash_key)

    balancer.pick = spy  # type: ignore[method-assign]
    balancer.start = spy_first  # type: ignore[method-assign]
    _plan, steps = start(route, clock, hash_key=1234)
    next(steps)
    steps.send(Answer(503))
    next(steps)  # the Sleep after Park
    next(steps)
    assert seen == [1234, 1234]


def test_the_deadline_caps_timeouts_and_ends_retries():
    clock = FakeClock()
    route = route_of(("svc", 3), clock=clock)
    plan, steps = start(route, clock, policy=RetryPolicy(deadline=1.0, backoff_base=0.01),
                        started=clock() - 0.5)  # fmt: skip
    assert plan.cap(5.0) == pytest.approx(0.5) and plan.cap(0.2) == 0.2 and plan.cap(None) == 0.5
    next(steps)
    clock.advance(0.6)  # past the deadline
    done = steps.send(Answer(503))
    assert isinstance(done, Done) and done.response.status_code == 503


def test_time_the_process_was_stopped_is_nobody_s_latency():
    clock = FakeClock()

    class Meter:
        total = 0.0

    meter = Meter()
    balancer = Balancer("svc", ServiceConfig(), clock=clock, pauses=meter)
    balancer.update(resolution(instance(1, port=1)))
    endpoint = balancer.pick()
    started = balancer.begin(endpoint)
    clock.advance(0.25)
    meter.total += 0.2  # a garbage collection stopped every thread for 200 ms meanwhile
    balancer.finish(endpoint, started, failed=False, responded=True)
    assert endpoint.load.latency(clock()) == pytest.approx(0.05)


def test_the_gc_meter_counts_collections():
    import gc

    from consul_discovery.client.pauses import GC_PAUSES

    before = GC_PAUSES.total
    gc.collect()
    assert GC_PAUSES.total > before


def _trace(steps: Any, first: Any, outcomes: list[Any]) -> list[str]:
    """Play a loop to its end: each Send answered or thrown from ``outcomes`` in order."""
    seen, step = [], first
    while True:
        seen.append(type(step).__name__)
        if isinstance(step, Done):
            return seen
        if isinstance(step, Send):
            outcome = outcomes.pop(0)
            step = steps.throw(outcome) if isinstance(outcome, Exception) else steps.send(outcome)
        elif isinstance(step, Park):
            step = steps.send(step.response)
        else:
            step = next(steps)


@pytest.mark.parametrize(
    "outcomes",
    [
        [Answer(503), Answer(200)],
        [ConnectFailed("refused"), Answer(200)],
        [ReadFailed("reset"), Answer(502), Answer(200)],
    ],
    ids=["retried answer", "connect error", "read error then 502"],
)
def test_a_loop_resumed_after_the_drivers_first_attempt_is_the_loop_from_the_start(outcomes):
    """The drivers send the first attempt themselves; the loop they resume must do what
    it would have done had it sent it (same steps, same accounting)."""
    from consul_discovery.client.steps import resume_steps

    def run(resumed: bool) -> tuple[list[str], dict[str, tuple[int, int, int]]]:
        clock = FakeClock()
        route = route_of(("svc", 3), clock=clock)
        plan, steps = start(route, clock, method="POST", headers={"Idempotency-Key": "k"})
        left = list(outcomes)
        if resumed:
            endpoint = plan.next_endpoint()
            first = left.pop(0)
            error = first if isinstance(first, Exception) else None
            steps, step = resume_steps(plan, ERRORS, classify, endpoint,
                                       None if error else first, error)  # fmt: skip
            trace = ["Send", *_trace(steps, step, left)]
        else:
            trace = _trace(steps, next(steps), left)
        accounted = {i: (lo.picks, lo.failures, lo.in_flight) for i, lo in loads(route).items()}
        return trace, accounted

    assert run(resumed=True) == run(resumed=False)


def test_the_drivers_take_only_an_answer_no_policy_retries_as_final():
    clock = FakeClock()
    route = route_of(("svc", 2), clock=clock)
    plan, _steps = start(route, clock)
    assert plan.final_answer(200) and plan.final_answer(404)
    assert not plan.final_answer(503)  # decide() may retry it: the loop's to judge
