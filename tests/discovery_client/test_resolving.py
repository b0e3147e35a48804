"""Per-service state without I/O, cached resolve errors, keyed listeners, quiet outages.

A service whose resolve hangs must not delay calls to another one; many concurrent
first calls to an unresolvable service cost O(1) Consul queries (here against a scripted
agent and against a real TCP black hole); listeners follow the same key as watches
(Target plus panic threshold and vanish grace); an outage logs two warnings, not one per
poll.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from consul_discovery.client.client import ServiceClient
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.errors import ConsulUnavailableError, DiscoveryError
from consul_discovery.client.instance import Resolution
from consul_discovery.client.source import WatchKey
from consul_discovery.client.target import Target, service_of
from consul_discovery.client.watch import health_state
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import Request, Response
from consul_discovery.connection.watch_drivers import poll_once
from tests.discovery_client.fake_consul import REFUSED, FakeAgent, entry, health_response
from tests.discovery_client.fakes import FakeClock, StaticSource, http_backend, instance, ok
from tests.discovery_client.loop_tasks import watch_tasks
from tests.harness.socket_server import socket_server


class HangingSource(StaticSource):
    """Resolves ``fast`` at once; ``slow`` never answers (waits out the timeout)."""

    def __init__(self, fast: Resolution) -> None:
        super().__init__(fast)
        self.release = threading.Event()

    def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        service = service_of(service)
        if service == "slow":
            self.release.wait(timeout)
            raise ConsulUnavailableError(f"no answer about {service!r} within {timeout}s")
        return super().resolve(service, timeout)


def test_a_hanging_resolve_does_not_delay_calls_to_another_service():
    with http_backend(ok("fast-0")) as backend:
        fast = Resolution("fast", (instance(0, port=backend.port),), 1, 0.0)
        source = HangingSource(fast)
        with ServiceClient(source=source, resolve_timeout=3.0) as client:
            pool = ThreadPoolExecutor(4)
            slow_calls = [pool.submit(client.get, "slow", "/") for _ in range(4)]
            time.sleep(0.1)  # the slow ones are all waiting now
            started = time.monotonic()
            for _ in range(20):
                assert client.get("fast", "/").text == "fast-0"
            elapsed = time.monotonic() - started
            source.release.set()
            for future in slow_calls:
                with pytest.raises(ConsulUnavailableError):
                    future.result(5)
            pool.shutdown()
    assert elapsed < 1.0, f"20 calls to 'fast' took {elapsed:.2f}s behind a hanging 'slow'"


class RefusingConsul(FakeAgent):
    """A scripted agent whose every query fails (connection refused)."""

    def __init__(self) -> None:
        super().__init__({})
        self.error = REFUSED

    def queries(self) -> int:
        return len(self.health_requests())


def test_concurrent_first_calls_to_an_unresolvable_service_cost_one_query():
    fake = RefusingConsul()
    slow = threading.Event()
    fake.block = slow  # the first query hangs until released: every caller piles up
    source = ConsulSource("127.0.0.1:8500", send=fake, backoff_base=5.0, backoff_cap=5.0)
    with ServiceClient(source=source, resolve_timeout=2.0) as client:

        def call(_n: int) -> BaseException | None:
            try:
                client.get("ghost", "/")
            except DiscoveryError as exc:
                return exc
            return None

        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(call, n) for n in range(20)]
            time.sleep(0.2)
            slow.set()
            errors = [f.result(5) for f in futures]
        assert all(isinstance(e, ConsulUnavailableError) for e in errors), errors
        assert fake.queries() == 1
        # The error is cached while the watch backs off: more calls, no more queries.
        for n in range(50):
            assert isinstance(call(n), ConsulUnavailableError)
        assert fake.queries() == 1
    source.close()


@pytest.fixture
def black_hole() -> Iterator[tuple[int, list[socket.socket]]]:
    """A real TCP listener on 127.0.0.1 that accepts connections and never answers."""
    accepted: list[socket.socket] = []
    with socket_server(accepted.append) as port:
        yield port, accepted


def test_a_black_hole_consul_gets_one_connection_for_many_first_calls(black_hole):
    port, accepted = black_hole
    source = ConsulSource(f"127.0.0.1:{port}", request_timeout=30.0)
    with ServiceClient(source=source, resolve_timeout=0.5) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(client.get, "ghost", "/") for _ in range(16)]
            for future in futures:
                with pytest.raises(ConsulUnavailableError, match="no answer"):
                    future.result(5)
        assert time.monotonic() - started < 2.0  # bounded by resolve_timeout, not 30 s
        assert len(accepted) == 1
        # close() cuts the hanging long poll short and waits for the watch's task.
        closing = time.monotonic()
        source.close()
        assert time.monotonic() - closing < 1.0
    assert "consul-watch-ghost" not in watch_tasks(source)


def test_listeners_are_keyed_like_watches_by_target_and_config():
    fake = FakeAgent({"web": [entry("w1")]})
    configs = {"web": ServiceConfig()}
    release = threading.Event()
    source = ConsulSource(
        "127.0.0.1:8500", send=fake, service_config=lambda name: configs[name],
        sleep=lambda _s: release.wait(10),
    )  # fmt: skip
    try:
        old_config: list[Resolution] = []
        new_config: list[Resolution] = []
        source.subscribe("web", old_config.append)
        source.resolve("web")
        deadline = time.monotonic() + 5
        while not old_config and time.monotonic() < deadline:
            time.sleep(0.005)
        configs["web"] = ServiceConfig(tag="v2")  # a different watch from now on
        source.resolve("web")
        source.subscribe("web", new_config.append)  # gets the new watch's current state
        time.sleep(0.05)
        assert len(old_config) == 1 and len(new_config) == 1
        assert source.watch_stats("web").requests >= 1
        assert source.watch_stats(Target("web")).requests >= 1  # the old key's watch
        calls = [dict(r.params).get("tag") for r in fake.health_requests()]
        assert None in calls and "v2" in calls
    finally:
        release.set()
        source.close()


def test_an_outage_logs_two_warnings_with_its_duration_and_failed_polls(caplog):
    clock = FakeClock()
    down = [False]

    def send(_request: Request) -> Response:
        if down[0]:
            raise REFUSED
        return health_response(5, [instance(1)])

    key = WatchKey(Target("svc"), None, 20.0)
    state = health_state(
        key, "127.0.0.1:8500", lambda _r: None, timing=WatchTiming(backoff_cap=1.0),
        clock=clock, rng=random.Random(1),
    )  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="consul_discovery")
    poll_once(state, send)
    down[0] = True
    for _ in range(30):
        clock.advance(poll_once(state, send) or 0)
    down[0] = False
    poll_once(state, send)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert "failing" in warnings[0].getMessage()
    back = warnings[1].getMessage()
    assert "answering again" in back and "30 failed poll(s)" in back
    seconds = float(back.split(" after ")[1].split("s ")[0])
    assert 10 < seconds < 40
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "failed" in r.getMessage()]
    assert len(debug) == 30


class SlowFirstSource(StaticSource):
    """Answers every resolve, but the first one only after ``delay`` seconds."""

    def __init__(self, first: Resolution, delay: float) -> None:
        super().__init__(first)
        self.delay = delay
        self.waited = False

    def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        if not self.waited:
            self.waited = True
            time.sleep(min(self.delay, timeout))
        return super().resolve(service, timeout)


def test_waiting_for_the_first_resolution_counts_against_the_calls_deadline():
    """A first call's deadline starts when the call does, not after the service resolved."""
    from consul_discovery.client.retry import RetryPolicy

    def slow_answer(_request: Any) -> Any:
        time.sleep(1.0)
        return ok("late")(_request)

    with http_backend(slow_answer) as backend:
        first = Resolution("svc", (instance(0, port=backend.port),), 1, 0.0)
        source = SlowFirstSource(first, delay=0.4)
        policy = RetryPolicy(deadline=0.6, max_attempts=1)
        with ServiceClient(source=source, retry=policy, resolve_timeout=2.0) as client:
            started = time.monotonic()
            with pytest.raises((DiscoveryError, requests.RequestException)):
                client.get("svc", "/", timeout=(1.0, 5.0))
            elapsed = time.monotonic() - started
    # 0.4 s resolving + what is left of 0.6 s; without the fix 0.4 + 0.6 = 1.0 s.
    assert 0.4 <= elapsed < 0.85, elapsed
