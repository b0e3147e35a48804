"""A 429 is the agent protecting itself: the watch rules for it, with a fake clock.

A longer backoff floor (1 s doubling to 30 s), the blocking index kept and the next
answer believed as continuous (the agent did not restart), the value served and marked
stale once, a first resolve kept waiting (``first_done`` unset) instead of failed, the
``rate_limited`` counter, and one log line per source and episode, however many of its
watches are throttled.
"""

from __future__ import annotations

import json
import logging
import random

import pytest

from consul_discovery.client.errors import ConsulRateLimitedError
from consul_discovery.client.source import WatchKey
from consul_discovery.client.source_table import WatchTable
from consul_discovery.client.target import Target
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import Request, Response
from consul_discovery.connection.refusals import ErrorKinds, answer_error
from consul_discovery.connection.resource import Poll, Resource
from consul_discovery.connection.throttle import RateLimited, ThrottleLog
from consul_discovery.connection.watch import WatchState
from consul_discovery.connection.watch_drivers import poll_once


class Unavailable(Exception):
    pass


class Refused(Exception):
    pass


class Throttled(Unavailable, RateLimited):
    pass


ERRORS = ErrorKinds(Unavailable, Refused, Refused, throttled=Throttled)
TOO_MANY = Response(429, {}, b"Your IP is issuing too many concurrent connections")


class Marked(list):
    """A value the toy resource marks stale (a list with a flag)."""

    stale = False


class Keys(Resource[list, list]):
    """A toy resource that records how each answer was settled."""

    def __init__(self, name: str = "keys") -> None:
        super().__init__(name, "the keys", "127.0.0.1:8500", ERRORS)
        self.settled: list[bool] = []

    def request(self, poll: Poll) -> Request:
        return Request("/v1/kv/k", poll.params(), poll.timeout(10.0))

    def decode(self, response: Response) -> list:
        return response.json()

    def settle(self, answer, index, previous, *, continuous, now):
        self.settled.append(continuous)
        return answer

    def mark_stale(self, value: list, error: BaseException) -> list:
        marked = Marked(value)
        marked.stale = True
        return marked


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Agent:
    """Answers ``["a"]`` at ``index``, or ``answer`` while it is set."""

    def __init__(self) -> None:
        self.index = 10
        self.answer: Response | None = None
        self.sent: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.sent.append(request)
        if self.answer is not None:
            return self.answer
        return Response(200, {"X-Consul-Index": str(self.index)}, json.dumps(["a"]).encode())


def make(throttle: ThrottleLog | None = None, name: str = "keys", **kwargs):
    clock, seen, resource = Clock(), [], Keys(name)
    state = WatchState(
        resource, seen.append, timing=WatchTiming(wait=30.0), clock=clock,
        rng=random.Random(5), throttle=throttle, **kwargs,
    )  # fmt: skip
    return state, Agent(), seen, clock, resource


def test_a_429_maps_to_the_throttled_kind():
    error = answer_error(TOO_MANY, "the keys", "127.0.0.1:8500", ERRORS)
    assert isinstance(error, Throttled) and "rate limited" in str(error)
    plain = ErrorKinds(Unavailable, Refused, Refused)  # a client with no throttled kind
    assert type(answer_error(TOO_MANY, "x", "a", plain)) is Unavailable


def test_a_throttled_watch_keeps_its_index_and_value_and_backs_off_longer():
    state, agent, seen, _clock, resource = make()
    poll_once(state, agent)  # plain read, index 10
    assert poll_once(state, agent) is not None
    assert state.index == 10 and seen == [["a"]]
    agent.answer = TOO_MANY
    delays = []
    for _ in range(7):
        delays.append(poll_once(state, agent))
        assert dict(agent.sent[-1].params)["index"] == "10"  # blocking on the same index
    assert state.index == 10  # a 429 does not reset the view (an outage would: 0)
    steps = [1, 2, 4, 8, 16, 30, 30]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step  # equal jitter on the longer floor, capped at 30 s
    assert seen[1:] == [["a"]] and getattr(seen[1], "stale", False)  # marked stale, once
    assert state.value.stale and state.stale
    assert (state.rate_limited, state.errors) == (7, 7)
    agent.answer = None
    agent.index = 11
    poll_once(state, agent)
    assert resource.settled[-1] is True  # continuous: no self-preservation hold after a 429
    assert seen[-1] == ["a"] and not getattr(seen[-1], "stale", False)  # fresh again
    assert not state.stale


def test_an_outage_after_a_429_is_still_an_outage():
    state, agent, _seen, _clock, resource = make()
    poll_once(state, agent)
    agent.answer = TOO_MANY
    poll_once(state, agent)
    agent.answer = Response(500, {}, b"No cluster leader")
    assert poll_once(state, agent) <= 0.25  # the outage backoff, from its own floor
    assert state.index == 0  # an outage resets the view
    agent.answer = None
    poll_once(state, agent)
    assert resource.settled[-1] is False  # suspect: the agent may have restarted


def test_a_first_resolve_that_meets_a_429_keeps_waiting_and_then_gets_it():
    state, agent, *_ = make()
    agent.answer = TOO_MANY
    poll_once(state, agent)
    assert not state.first_done  # a resolve keeps waiting (within its own timeout)
    assert isinstance(state.first_error, Throttled)
    agent.answer = None
    assert poll_once(state, agent) == 0.0
    assert state.first_done and state.value == ["a"] and state.first_error is None


def test_resolve_raises_the_rate_limited_error_when_its_timeout_ends_throttled():
    table: WatchTable = WatchTable(None, "127.0.0.1:8500", "test")
    key = WatchKey(Target("web"), None, 20.0)

    class Entry:
        finished = False

        def __init__(self) -> None:
            self.state = type("S", (), {"value": None, "first_error": None})()

    entry = Entry()
    entry.state.first_error = ConsulRateLimitedError("Consul at a rate limited service 'web'")
    with pytest.raises(ConsulRateLimitedError):
        table.outcome(key, entry, answered=False, timeout=5.0)  # not "no answer in 5s"
    entry.state.first_error = None
    with pytest.raises(Exception, match="no answer"):
        table.outcome(key, entry, answered=False, timeout=5.0)


def test_one_log_line_per_source_and_episode_however_many_watches(caplog):
    clock = Clock()
    throttle = ThrottleLog(logging.getLogger("test.throttle"), "https://a:8501",
                           connections=lambda: 3, clock=clock)  # fmt: skip
    watches = [make(throttle, name=f"svc-{n}") for n in range(5)]
    caplog.set_level(logging.DEBUG, logger="test.throttle")
    caplog.set_level(logging.DEBUG, logger="consul_discovery")
    for state, agent, *_ in watches:
        poll_once(state, agent)
        agent.answer = TOO_MANY
    for _ in range(3):
        for state, agent, *_ in watches:
            poll_once(state, agent)
    clock.now += 12.0
    for n, (state, agent, *_) in enumerate(watches):
        agent.answer = None
        poll_once(state, agent)
        assert throttle.active is (n < 4)  # the episode ends with the last watch's answer
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "rate-limiting this host" in warnings[0] and "holds 3 connection(s)" in warnings[0]
    assert "after 12.0s rate-limited (15 throttled poll(s) over 5 watch(es))" in warnings[1]
    assert throttle.episodes == 1
