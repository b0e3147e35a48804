"""The generic watch engine with a toy resource, a scripted send and a fake clock.

The health watch (tests/discovery_client/test_consul_source_watch.py) and the KV watch
(tests/config_client/test_watch_rules.py) pin the rules through their resources; these
pin what any new watch gets for free: the default request/interpret path and error
mapping, a cached first error, ``unresolved_ttl``, closing is no error, the two drivers,
and restarting after a fork.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time

import pytest

from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import (
    Exchange,
    Request,
    Response,
    TransportError,
    TransportFailure,
    arun,
    run,
)
from consul_discovery.connection.forking import after_fork_in_child
from consul_discovery.connection.refusals import ErrorKinds
from consul_discovery.connection.resource import Poll, Resource
from consul_discovery.connection.watch import WatchState
from consul_discovery.connection.watch_drivers import WatchTask, WatchThread, poll_once


class Unavailable(Exception):
    pass


class Refused(Exception):
    pass


class Denied(Refused):
    pass


ERRORS = ErrorKinds(Unavailable, Refused, Denied)
REFUSED = TransportError(TransportFailure.REFUSED, "Connection refused")


class Roots(Resource[list, list]):
    """A toy watched resource, as a new watch would be written (see the engine's docs)."""

    def __init__(self) -> None:
        super().__init__("roots", "the CA roots", "127.0.0.1:8500", ERRORS)

    def request(self, poll: Poll) -> Request:
        return Request("/v1/agent/connect/ca/roots", poll.params(), poll.timeout(10.0))

    def decode(self, response: Response) -> list:
        return response.json()["Roots"]


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Agent:
    """Answers with ``roots`` at ``index``; ``error`` (raised or answered) while set."""

    def __init__(self) -> None:
        self.roots = ["r1"]
        self.index = 10
        self.error: BaseException | Response | None = None
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if isinstance(self.error, BaseException):
            raise self.error
        if isinstance(self.error, Response):
            return self.error
        body = json.dumps({"Roots": self.roots}).encode()
        return Response(200, {"X-Consul-Index": str(self.index)}, body)


def make(clock=None, **kwargs) -> tuple[WatchState[list, list], Agent, list, Clock]:
    clock, seen = clock or Clock(), []
    state = WatchState(
        Roots(), seen.append, timing=WatchTiming(wait=30.0), clock=clock,
        rng=random.Random(3), **kwargs,
    )  # fmt: skip
    return state, Agent(), seen, clock


def test_a_new_watch_is_a_request_and_a_decode():
    state, agent, seen, _ = make()
    assert poll_once(state, agent) == 0.0  # the first read was plain: block at once
    assert seen == [["r1"]] and state.value == ["r1"] and state.index == 10
    assert agent.requests[0].params == ()  # a plain read
    agent.roots = ["r1", "r2"]
    agent.index = 11
    poll_once(state, agent)
    blocking = agent.requests[1]
    assert dict(blocking.params) == {"index": "10", "wait": "30000ms"}
    assert blocking.timeout == pytest.approx(10.0 + 30.0 + 30.0 / 16)
    assert seen == [["r1"], ["r1", "r2"]]


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [
        (Response(403, {}, b"ACL not found"), Denied, "does not know the ACL token"),
        (Response(500, {}, b"No cluster leader"), Unavailable, "no cluster leader"),
        (REFUSED, Unavailable, "unreachable for the CA roots: connection refused"),
    ],
)
def test_refusals_are_mapped_to_the_resources_error_kinds(answer, kind, words):
    state, agent, _, _ = make()
    agent.error = answer
    delay = poll_once(state, agent)
    assert delay is not None and delay > 0
    error = state.first_error
    assert type(error) is kind and words in str(error)
    assert (state.requests, state.errors, state.value) == (1, 1, None)


def test_a_watch_that_never_answered_stops_once_nobody_asks():
    state, agent, _, clock = make(unresolved_ttl=60.0)
    agent.error = REFUSED
    delays = []
    for _ in range(200):
        delay = poll_once(state, agent)
        if delay is None:
            break
        delays.append(delay)
        clock.now += delay
        if clock.now < 100.0:
            state.touch()  # a caller keeps asking until t=100
    assert delay is None, "the unasked watch kept polling"
    assert 160.0 <= clock.now <= 170.0  # 60 s after the last ask (plus one backoff step)
    assert state.first_done and isinstance(state.first_error, Unavailable)


def test_a_watch_with_a_value_never_stops_on_errors():
    state, agent, _, clock = make(unresolved_ttl=1.0)
    poll_once(state, agent)
    agent.error = REFUSED
    for _ in range(50):
        delay = poll_once(state, agent)
        assert delay is not None
        clock.now += delay
    assert state.stale and state.value == ["r1"]


def test_a_poll_cut_short_by_closing_is_no_error(caplog):
    caplog.set_level(logging.DEBUG, logger="consul_discovery")
    errors: list[BaseException] = []
    state, agent, seen, _ = make(on_error=errors.append)
    poll_once(state, agent)
    agent.error = REFUSED
    assert poll_once(state, agent, closing=lambda: True) is None
    agent.error = TransportError(TransportFailure.CLOSED, "pool closed")
    assert poll_once(state, agent) is None
    assert errors == [] and state.errors == 0 and not state.stale and seen == [["r1"]]
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]


def test_without_a_stale_mark_an_outage_changes_nothing_for_listeners(caplog):
    errors: list[BaseException] = []
    state, agent, seen, clock = make(on_error=errors.append)
    poll_once(state, agent)
    agent.error = REFUSED
    for _ in range(3):
        clock.now += poll_once(state, agent) or 0
    assert state.stale and seen == [["r1"]] and len(errors) == 3
    agent.error = None
    delay = poll_once(state, agent)
    assert not state.stale and seen == [["r1"]]  # same value after the outage: no event
    assert delay == pytest.approx(1.0)  # and no quick follow-up
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "failing, serving its last answer" in warnings[0] and "3 failed" in warnings[1]


def test_an_exchange_may_send_several_requests():
    def two_step() -> Exchange[str]:
        first = yield Request("/v1/a")
        second = yield Request("/v1/b", (("after", first.text),))
        return second.text

    def send(request: Request) -> Response:
        return Response(200, {}, (request.path + dict(request.params).get("after", "")).encode())

    async def asend(request: Request) -> Response:
        return send(request)

    assert run(two_step(), send) == "/v1/b/v1/a"
    assert asyncio.run(arun(two_step(), asend)) == "/v1/b/v1/a"


def test_the_thread_driver_ends_a_watch_nobody_asks_for():
    state, agent, _, _ = make(clock=time.monotonic, unresolved_ttl=0.05)
    agent.error = REFUSED
    driver = WatchThread(state, agent, name="roots", sleep=lambda _s: time.sleep(0.01)).start()
    deadline = time.monotonic() + 5
    while not driver.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    driver.join(1)
    assert driver.finished and not driver.alive


def test_the_asyncio_driver_answers_waiters_and_closes():
    async def scenario() -> None:
        state, agent, seen, _ = make()

        async def asend(request: Request) -> Response:
            if state.requests > 1:
                await asyncio.sleep(30)  # a blocking query that never answers
            return agent(request)

        task = WatchTask(state, asend, name="roots").start()
        assert await task.wait_first(5)
        assert seen == [["r1"]] and not task.finished
        started = time.monotonic()
        await task.aclose()
        assert time.monotonic() - started < 1.0 and task.task is not None and task.task.done()

    asyncio.run(scenario())


class Owner:
    """Something that registers a restart for forked children."""

    def __init__(self, write_fd: int) -> None:
        self.write_fd = write_fd
        after_fork_in_child(self.restart)

    def restart(self) -> None:
        os.write(self.write_fd, b"restarted")


def test_after_fork_in_child_calls_live_owners_only():
    read_fd, write_fd = os.pipe()
    try:
        owner = Owner(write_fd)
        gone = Owner(write_fd)
        del gone  # held weakly: a dead owner is not called
        event_state, _, _, _ = make()
        event_state._first_done.set()
        pid = os.fork()
        if pid == 0:
            event_state.after_fork()
            os._exit(0 if event_state.first_done else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        os.set_blocking(read_fd, False)
        assert os.read(read_fd, 100) == b"restarted"  # once: only the live owner
        assert owner.write_fd == write_fd
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_thread_driver_restarts_in_a_child_and_keeps_its_value():
    state, agent, _, _ = make()
    release = threading.Event()
    driver = WatchThread(state, agent, name="roots", sleep=lambda _s: release.wait(5)).start()
    assert state.wait_first(5)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            polls = state.requests
            child_agent = Agent()
            child_agent.roots = ["r9"]
            release.set()  # this copy of the event: the parent's thread is not here
            driver.restart_in_child(child_agent)
            deadline = time.monotonic() + 5
            while state.requests == polls and time.monotonic() < deadline:
                time.sleep(0.01)
            ok = driver.alive and state.value is not None and bool(child_agent.requests)
        finally:
            os.write(write_fd, b"1" if ok else b"0")
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 1) == b"1"
    os.close(read_fd)
    os.close(write_fd)
    driver.stop()
    release.set()
    driver.join(2)
