"""ConsulSource over a scripted agent (HTTP values): errors, parsing, panic, cache, config.

The watch thread is parked after its first fetch by an injected ``sleep`` that waits for
the test to finish, so "later resolve() does no network I/O" is countable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.consul_source import ConsulQueryError, ConsulSource
from consul_discovery.client.errors import ConsulUnavailableError, UnknownServiceError
from consul_discovery.client.health_entries import entry_health, instance_from_entry
from consul_discovery.client.target import Target
from consul_discovery.connection.exchange import Response
from tests.discovery_client.fake_consul import REFUSED, FakeAgent, entry

FakeConsul = FakeAgent  # the name other tests import


@pytest.fixture
def parked() -> Iterator[threading.Event]:
    release = threading.Event()
    yield release
    release.set()


class ParkedSource(ConsulSource):
    """A ConsulSource whose watch sleeps until ``parked`` is set; close() releases it."""

    def __init__(self, parked: threading.Event, **kwargs: Any) -> None:
        self.sleeping = threading.Event()  # set once the watch has parked

        def park(_seconds: float) -> None:
            self.sleeping.set()
            parked.wait(10)

        super().__init__("127.0.0.1:8500", sleep=park, **kwargs)
        self.parked = parked

    def close(self, timeout: float = 2.0) -> None:
        self.parked.set()  # the injected sleep does not watch the stop event
        super().close(timeout)


def source(fake: FakeConsul, parked: threading.Event, **kwargs: Any) -> ParkedSource:
    return ParkedSource(parked, send=fake, **kwargs)


def test_entry_parsing_and_address_fallback():
    inst = instance_from_entry(entry("w1", "passing", "warning", address=""))
    assert (inst.id, inst.service, inst.address, inst.port) == ("w1", "web", "10.9.9.9", 8080)
    assert inst.tags == ("v2",) and dict(inst.meta) == {"version": "1.4"}
    assert (inst.weight_passing, inst.weight_warning, inst.weight) == (3, 1, 1)
    assert (inst.health, inst.node, inst.datacenter) == ("warning", "node-1", "dc1")
    assert entry_health(entry("x")) == "passing"
    assert entry_health(entry("x", "passing", "maintenance")) == "critical"
    assert entry_health(entry("x", "warning", "critical")) == "critical"


def test_first_resolve_fetches_then_cache_serves_without_io(parked):
    fake = FakeConsul({"web": [entry("w1", "passing"), entry("w2", "warning")]})
    src = source(fake, parked)
    try:
        first = src.resolve("web")
        # The watch goes straight on to its blocking query (the 2nd call), publishes its
        # answer, then parks: only then is the cache settled (seen: a resolve() between
        # the 2nd request and its answer got the Resolution the answer replaced).
        assert src.sleeping.wait(5)
        calls = len(fake.requests)
        cached = src.resolve("web")
        assert cached.instances == first.instances and cached.fetched_at >= first.fetched_at
        for _ in range(100):
            assert src.resolve("web") is cached
            assert src.cached("web") is cached
        assert len(fake.requests) == calls == 2
        assert fake.params(1)["index"] == "7"  # blocking on the index of the first answer
        assert [(i.id, i.health) for i in first.instances] == [("w1", "passing"), ("w2", "warning")]
        assert first.index == 7 and not first.stale and not first.panic
    finally:
        src.close()


def test_critical_instances_are_left_out_and_empty_is_real(parked):
    fake = FakeConsul({"web": [entry("w1", "critical"), entry("w2", "passing", "critical")]})
    src = source(fake, parked)
    try:
        resolution = src.resolve("web")
        assert resolution.instances == () and not resolution.panic and not resolution.stale
    finally:
        src.close()


def test_panic_mode_returns_all_registered(parked):
    fake = FakeConsul({"web": [entry("w1", "critical"), entry("w2", "critical"), entry("w3")]})
    src = source(fake, parked, service_config=lambda _n: ServiceConfig(panic_threshold=0.5))
    try:
        resolution = src.resolve("web")
        assert resolution.panic and len(resolution.instances) == 3
    finally:
        src.close()


def test_panic_mode_off_when_enough_pass(parked):
    fake = FakeConsul({"web": [entry("w1", "critical"), entry("w2"), entry("w3")]})
    src = source(fake, parked, service_config=lambda _n: ServiceConfig(panic_threshold=0.5))
    try:
        resolution = src.resolve("web")
        assert not resolution.panic and [i.id for i in resolution.instances] == ["w2", "w3"]
    finally:
        src.close()


def test_config_is_sent_to_consul(parked):
    fake = FakeConsul({"web": [entry("w1")]})
    config = ServiceConfig(filter='"v2" in Service.Tags', tag="v2", datacenter="dc2")
    src = source(fake, parked, service_config=lambda _n: config, wait=12.5)
    try:
        src.resolve("web")
        first = fake.health_requests()[0]
        assert first.path == "/v1/health/service/web"
        params = dict(first.params)
        assert params["tag"] == "v2" and params["dc"] == "dc2"
        assert params["filter"] == '"v2" in Service.Tags'
        assert "index" not in params and "wait" not in params  # a plain read first
        assert first.timeout == 10.0
        assert "passing" not in params  # health is split locally (warning, panic counts)
        deadline = time.monotonic() + 5
        while len(fake.health_requests()) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        blocking = fake.health_requests()[1]
        assert dict(blocking.params)["wait"] == "12500ms"
        assert blocking.timeout == pytest.approx(10.0 + 12.5 + 12.5 / 16)
    finally:
        src.close()


def test_unknown_service_lists_known_names(parked):
    fake = FakeConsul({"web": [entry("w1")], "api": []})
    fake.catalog_names = {"web", "api", "consul"}
    src = source(fake, parked)
    try:
        with pytest.raises(UnknownServiceError) as info:
            src.resolve("wbe")
        assert info.value.known == ("api", "consul", "web")
        assert "api, consul, web" in str(info.value)
        # Known but with nothing registered that matches: a real, empty set.
        assert src.resolve("api").instances == ()
    finally:
        src.close()


def test_unreachable_with_nothing_cached_wraps_the_cause(parked):
    fake = FakeConsul({"web": [entry("w1")]})
    fake.error = REFUSED
    src = source(fake, parked)
    try:
        with pytest.raises(ConsulUnavailableError) as info:
            src.resolve("web")
        assert info.value.__cause__ is REFUSED
        assert "127.0.0.1:8500" in str(info.value) and "connection refused" in str(info.value)
        # The error is cached: resolve() does not ask Consul again, the watch retries
        # with backoff (here: parked), and once Consul answers the service resolves.
        calls = len(fake.requests)
        fake.error = None
        for _ in range(10):
            with pytest.raises(ConsulUnavailableError):
                src.resolve("web")
        assert len(fake.requests) == calls
        assert src.watch_stats("web").errors == 1
        parked.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                assert [i.id for i in src.resolve("web").instances] == ["w1"]
                break
            except ConsulUnavailableError:
                time.sleep(0.01)
        else:
            raise AssertionError("the watch did not retry after its backoff")
    finally:
        src.close()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Response(500, {}, b"No cluster leader"), ConsulUnavailableError),
        (Response(500, {}, b"grpc: the client connection is closing"), ConsulUnavailableError),
        (Response(400, {}, b"Failed to parse filter"), ConsulQueryError),
        (Response(500, {}, b"Failed to create boolean expression evaluator"), ConsulQueryError),
    ],
)
def test_consul_5xx_is_unavailable_and_4xx_is_a_refusal(parked, error, expected):
    fake = FakeConsul({"web": [entry("w1")]})
    src = source(fake, parked)
    try:
        fake.error = error
        with pytest.raises(expected) as caught:
            src.resolve("web")
        assert type(caught.value) is expected
    finally:
        src.close()


def test_first_resolve_is_bounded_by_timeout(parked):
    fake = FakeConsul({"web": [entry("w1")]})
    fake.block = parked  # the fake Consul never answers until the test ends
    src = source(fake, parked)
    try:
        started = time.monotonic()
        with pytest.raises(ConsulUnavailableError, match=r"within 0\.2s"):
            src.resolve("web", timeout=0.2)
        assert time.monotonic() - started < 2.0
    finally:
        src.close()


def test_subscribe_gets_current_then_changes(parked):
    fake = FakeConsul({"web": [entry("w1")]})
    src = source(fake, parked)
    try:
        first = src.resolve("web")
        seen = []
        src.subscribe("web", seen.append)
        # The watch may have confirmed the set again meanwhile (a newer fetched_at):
        # what matters is that the listener got the current set at once.
        assert len(seen) == 1
        assert (seen[0].instances, seen[0].stale) == (first.instances, False)
        src.unsubscribe("web", seen.append)
        src.unsubscribe("web", seen.append)  # no-op
    finally:
        src.close()


def test_closed_source_refuses(parked):
    src = source(FakeConsul({}), parked)
    src.close()
    with pytest.raises(Exception, match="closed"):
        src.resolve("web")


def test_address_and_token_from_environment(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:18555")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-token")
    from_env = ConsulSource()
    assert from_env.address == "127.0.0.1:18555"
    assert from_env.connection.base_url == "http://127.0.0.1:18555"
    assert from_env.connection.token == "env-token"
    explicit = ConsulSource("127.0.0.1:18600", token="mine")
    assert explicit.connection.token == "mine"
    assert "mine" not in repr(explicit.connection)
    monkeypatch.delenv("CONSUL_HTTP_ADDR")
    assert ConsulSource().address == "127.0.0.1:8500"
    for made in (from_env, explicit):
        made.close()


def test_a_target_is_its_own_key_and_a_connect_target_asks_the_connect_endpoint(parked):
    fake = FakeConsul({"web": [entry("w1")]})
    src = source(fake, parked, service_config=lambda _n: ServiceConfig(tag="v2"))
    try:
        by_name = src.resolve("web")
        assert src.cached(Target("web", tag="v2")) is by_name  # the name means this Target
        connect = src.resolve(Target("web", connect=True))
        assert [i.id for i in connect.instances] == ["w1"]
        paths = [r.path for r in fake.health_requests()]
        assert "/v1/health/connect/web" in paths
        assert src.cached(Target("web")) is None  # not watched: no tag, not the name's key
        assert src.watch_stats(Target("web")) is None
    finally:
        src.close()


def test_watch_thread_with_index_zero_does_not_busy_loop():
    """Wiring check: the real watch thread, a fake clock moved only by the injected sleep."""
    fake = FakeConsul({"web": [entry("w1")]})
    fake.index = 0
    now = [0.0]
    finished, release = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 30.0:
            finished.set()
            release.wait(10)  # park the watch until the test is done

    src = ConsulSource("127.0.0.1:8500", send=fake, clock=lambda: now[0], sleep=sleep)
    try:
        src.resolve("web")
        assert finished.wait(10), "the watch never reached 30 fake seconds"
        health_calls = fake.health_requests()
        assert len(health_calls) <= 32  # <= 1 request per (fake) second
        assert all(dict(c.params)["index"] == "1" for c in health_calls[1:])  # 0 is sent as 1
    finally:
        release.set()
        src.close()


@pytest.mark.parametrize(
    "answer",
    [
        Response(403, {}, b"ACL not found"),
        Response(200, {"X-Consul-Results-Filtered-By-ACLs": "true"}, b"[]"),
        Response(500, {}, b"grpc: the client connection is closing"),
        Response(500, {}, b"Failed to create boolean expression evaluator: oops"),
        Response(400, {}, b"Bad request"),
        REFUSED,
    ],
)
def test_both_sources_give_the_same_error_for_the_same_answer(answer):
    import asyncio

    from consul_discovery.client.aio import AsyncConsulSource

    def threaded() -> BaseException:
        fake = FakeConsul({"web": [entry("w1")]})
        fake.error = answer
        with ConsulSource("127.0.0.1:8500", send=fake, backoff_base=30.0) as src:
            with pytest.raises(Exception) as caught:
                src.resolve("web")
            return caught.value

    async def asyncio_() -> BaseException:
        fake = FakeConsul({"web": [entry("w1")]})
        fake.error = answer
        async with AsyncConsulSource("127.0.0.1:8500", send=fake.asend, backoff_base=30.0) as src:
            with pytest.raises(Exception) as caught:
                await src.resolve("web")
            assert src.watch_stats("web").errors == 1
            return caught.value

    one, other = threaded(), asyncio.run(asyncio_())
    assert type(one) is type(other) and str(one) == str(other)


def test_an_awaitable_send_runs_on_the_sources_loop_thread():
    fake = FakeConsul({"web": [entry("w1")]})
    threads: list[str] = []

    async def asend(request):
        threads.append(threading.current_thread().name)
        return await fake.asend(request)

    with ConsulSource("127.0.0.1:8500", asend=asend) as src:
        assert [i.id for i in src.resolve("web").instances] == ["w1"]
        assert not src.relayed
    assert set(threads) == {"consul-discovery-loop"}
