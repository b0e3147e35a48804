"""The httpx transports against a real agent and real gunicorn backends, sync and asyncio.

Each scenario runs twice, through ``httpx.Client`` + ``DiscoveryTransport`` (a
ServiceClient's state and threaded watch) and through ``httpx.AsyncClient`` +
``AsyncDiscoveryTransport`` (an asyncio watch): both drive the one attempt plan, so the
rules hold the same: picks follow the policy, a connect error is retried on another
instance, a POST without Idempotency-Key is not resent after a read timeout, a relayed
failure is neither retried nor held against the instance, and a stopped agent leaves
calls working from the cached set. Instances are registered through Consul's HTTP API
(TTL checks) and point at three gunicorn processes, or at a closed port.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests

from consul_discovery.client import DiscoveryAdapter, ServiceClient, ServiceConfig
from consul_discovery.client.errors import AllAttemptsFailedError
from consul_discovery.client.httpx_transport import AsyncDiscoveryTransport, DiscoveryTransport
from consul_discovery.client.propagation import propagating
from consul_discovery.client.retry import RetryPolicy
from tests.harness.agent import ConsulAgent, running_agent
from tests.harness.backends import Backend
from tests.harness.ports import free_port

KINDS = ("sync", "async")
ROUND_ROBIN = ServiceConfig(policy="round_robin")
RETRY = RetryPolicy(deadline=5.0)
TIMEOUT = httpx.Timeout(2.0)


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    with running_agent() as started:
        yield started


@pytest.fixture(scope="module")
def procs() -> Iterator[list[Backend]]:
    """Three gunicorn processes; services are registered onto them per test."""
    backends = [Backend(id=f"proc-{n}", service="unused", port=free_port()) for n in range(3)]
    try:
        for proc in backends:
            proc.start()
        for proc in backends:
            proc.wait_ready()
        yield backends
    finally:
        for proc in backends:
            proc.stop()


def register(agent: ConsulAgent, service: str, ident: str, port: int) -> None:
    """An instance of ``service`` at 127.0.0.1:``port`` with a passing TTL check."""
    body = {
        "ID": ident, "Name": service, "Address": "127.0.0.1", "Port": port,
        "Check": {"CheckID": f"service:{ident}", "TTL": "1h", "Status": "passing"},
    }  # fmt: skip
    requests.put(f"{agent.url}/v1/agent/service/register", json=body, timeout=5).raise_for_status()


class Driver:
    """One transport kind behind a blocking interface the scenarios share."""

    def __init__(self, kind: str, agent: ConsulAgent, services: dict[str, ServiceConfig]):
        self.kind = kind
        if kind == "sync":
            self.client = ServiceClient(agent.address, services=services, retry=RETRY)
            self.transport: Any = DiscoveryTransport(self.client)
            self.http: Any = httpx.Client(transport=self.transport, timeout=TIMEOUT)
        else:
            self.loop = asyncio.new_event_loop()
            self.transport = AsyncDiscoveryTransport(agent.address, services=services, retry=RETRY)
            self.http = httpx.AsyncClient(transport=self.transport, timeout=TIMEOUT)

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request (on the driver's event loop for async)."""
        if self.kind == "sync":
            return self.http.request(method, url, **kwargs)
        return self.loop.run_until_complete(self.http.request(method, url, **kwargs))

    def stats(self, service: str) -> dict[str, Any]:
        """The service's stats from the client (sync) or the transport (async)."""
        owner = self.client if self.kind == "sync" else self.transport
        return owner.stats()["services"][service]

    def until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``predicate`` (letting the event loop run) until truthy, or fail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.kind == "sync":
                time.sleep(0.02)
            else:
                self.loop.run_until_complete(asyncio.sleep(0.02))
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def close(self) -> None:
        """Close the httpx client (and so the transport), then what the driver made."""
        if self.kind == "sync":
            self.http.close()
            self.client.close()
        else:
            self.loop.run_until_complete(self.http.aclose())
            self.loop.close()


@pytest.fixture(params=KINDS)
def make(request, agent) -> Iterator[Callable[..., Driver]]:
    drivers: list[Driver] = []

    def factory(services: dict[str, ServiceConfig], on: ConsulAgent | None = None) -> Driver:
        driver = Driver(request.param, on or agent, services)
        drivers.append(driver)
        return driver

    try:
        yield factory
    finally:
        for driver in drivers:
            driver.close()


def instance_of(response: httpx.Response) -> str:
    return response.json()["instance"]


def test_picks_honour_the_policy(agent, procs, make):
    for n, proc in enumerate(procs):
        register(agent, "rr", f"rr-{n}", proc.port)
    driver = make({"rr": ROUND_ROBIN})
    seen = Counter(instance_of(driver.call("GET", "http://rr/")) for _ in range(30))
    assert seen == {"proc-0": 10, "proc-1": 10, "proc-2": 10}
    stats = driver.stats("rr")
    assert stats["requests"] == 30 and stats["retries"] == 0
    assert {i["picks"] for i in stats["instances"].values()} == {10}


def test_a_connect_error_is_retried_on_another_instance(agent, procs, make):
    register(agent, "withdead", "live-0", procs[0].port)
    register(agent, "withdead", "live-1", procs[1].port)
    register(agent, "withdead", "dead", free_port())  # nothing listens there
    driver = make({"withdead": ROUND_ROBIN})
    answers = [driver.call("GET", "http://withdead/") for _ in range(9)]
    assert [r.status_code for r in answers] == [200] * 9
    assert {instance_of(r) for r in answers} == {"proc-0", "proc-1"}
    stats = driver.stats("withdead")
    assert stats["instances"]["dead"]["failures"] >= 1
    assert stats["retries"] == stats["instances"]["dead"]["failures"]
    # POST without Idempotency-Key is retried too: nothing was sent to the dead one.
    posts = [driver.call("POST", "http://withdead/", json={}) for _ in range(3)]
    assert [r.status_code for r in posts] == [200] * 3


def test_a_post_without_idempotency_key_is_not_resent_after_a_read_timeout(agent, procs, make):
    slow = procs[2]
    register(agent, "slow", "slow-a", slow.port)
    register(agent, "slow", "slow-b", slow.port)
    driver = make({"slow": ROUND_ROBIN})
    driver.call("GET", "http://slow/")  # resolved, connections warm
    slow.control(delay=1.0)
    try:
        before = slow.request_count()
        with pytest.raises(httpx.ReadTimeout) as info:
            driver.call("POST", "http://slow/", json={}, timeout=httpx.Timeout(2.0, read=0.3))
        cause = info.value.__cause__
        assert isinstance(cause, AllAttemptsFailedError) and len(cause.attempts) == 1
        # Counted once the sleeping handlers finish: exactly one POST reached it.
        driver.until(lambda: slow.request_count() - before >= 1, 5, "the POST to land")
        time.sleep(1.2)  # a resent POST would land within one more delay
        assert slow.request_count() - before == 1
        # The same POST with an Idempotency-Key may be resent: every attempt is made.
        before = slow.request_count()
        with pytest.raises(httpx.ReadTimeout):
            driver.call(
                "POST",
                "http://slow/",
                json={},
                headers={"Idempotency-Key": "k-1"},
                timeout=httpx.Timeout(2.0, read=0.3),
            )
        driver.until(lambda: slow.request_count() - before == RETRY.max_attempts, 5, "resends")
    finally:
        slow.control(delay=0)


def test_a_relayed_failure_is_neither_retried_nor_counted_for_ejection(agent, procs, make):
    relaying = procs[2]
    register(agent, "relay", "relay-bad", relaying.port)
    register(agent, "relay", "relay-ok", procs[0].port)
    driver = make({"relay": ROUND_ROBIN})
    relaying.control(fail=503, origin="dependency")
    try:
        answers = [driver.call("GET", "http://relay/") for _ in range(12)]
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {503: 6, 200: 6}  # never retried on the healthy instance
        assert all(r.headers["Failure-Origin"] == "dependency" for r in answers if r.is_error)
        stats = driver.stats("relay")
        bad = stats["instances"]["relay-bad"]
        assert bad["failures"] == 0 and not bad["ejected"] and stats["retries"] == 0
        # Without the header the same 503 is the instance's own: retried elsewhere.
        relaying.control(origin="")
        own = [driver.call("GET", "http://relay/") for _ in range(4)]
        assert [r.status_code for r in own] == [200] * 4
        stats = driver.stats("relay")
        assert stats["instances"]["relay-bad"]["failures"] == stats["retries"] >= 1
    finally:
        relaying.control(fail=0, origin="")


def test_calls_keep_working_from_the_cached_set_while_the_agent_is_down(consul_agent, procs, make):
    for n, proc in enumerate(procs):
        register(consul_agent, "stale", f"stale-{n}", proc.port)
    driver = make({"stale": ROUND_ROBIN}, on=consul_agent)
    assert driver.call("GET", "http://stale/").status_code == 200
    consul_agent.stop()
    driver.until(lambda: driver.stats("stale").get("stale"), 10, "the set to be marked stale")
    seen = Counter(instance_of(driver.call("GET", "http://stale/")) for _ in range(9))
    assert seen == {"proc-0": 3, "proc-1": 3, "proc-2": 3}


def test_requests_path_and_both_httpx_transports_share_one_service_state(agent, procs):
    register(agent, "shared", "shared-0", procs[0].port)
    with ServiceClient(agent.address) as client:
        session = requests.Session()
        session.mount("http://", DiscoveryAdapter(client))
        with httpx.Client(transport=DiscoveryTransport(client)) as http:
            assert http.get("http://shared/").status_code == 200
            assert session.get("http://shared/").status_code == 200
        session.close()
        assert client.stats()["services"]["shared"]["requests"] == 2


def test_the_async_transport_makes_no_thread_per_service_and_closes_its_watches(agent, procs):
    for n, proc in enumerate(procs):
        register(agent, f"svc-{n}", f"svc-{n}-0", proc.port)

    async def scenario() -> None:
        threads = threading.active_count()
        transport = AsyncDiscoveryTransport(agent.address)
        async with httpx.AsyncClient(transport=transport) as http:
            answers = await asyncio.gather(*(http.get(f"http://svc-{n % 3}/") for n in range(30)))
            assert {r.status_code for r in answers} == {200}
            assert threading.active_count() == threads
            watches = [t for t in asyncio.all_tasks() if t.get_name().startswith("consul-watch-")]
            assert len(watches) == 3
        assert all(t.done() for t in watches)  # aclose() cancelled every watch
        assert threading.active_count() == threads

    asyncio.run(scenario())


# -- transport details with a canned inner transport (no network) --------------------


class _StaticAsyncSource:
    """An AsyncConsulSource stand-in for unit tests: a fixed Resolution."""

    def __init__(self, resolution: Any) -> None:
        self.resolution = resolution
        self.closed = False

    async def resolve(self, service: str, timeout: float = 5.0) -> Any:
        return self.resolution

    def cached(self, service: str) -> Any:
        return self.resolution

    def subscribe(self, service: str, listener: Callable[[Any], None]) -> None:
        listener(self.resolution)

    async def aclose(self) -> None:
        self.closed = True


def test_each_attempt_goes_to_the_instance_with_trace_headers_and_capped_timeouts():
    from tests.discovery_client.fakes import StaticSource, instance, resolution

    res = resolution(instance(1, port=9001), instance(2, port=9002))
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = 503 if len(seen) == 1 else 200
        return httpx.Response(status, content=request.url.host.encode())

    policy = RetryPolicy(deadline=1.0, backoff_base=0.001, backoff_max=0.001)
    client = ServiceClient(source=StaticSource(res), retry=policy)
    sync = httpx.Client(transport=DiscoveryTransport(client, inner=httpx.MockTransport(answer)))
    with propagating({"traceparent": "00-abc-def-01"}):
        response = sync.get("http://svc/p?q=1", timeout=30.0)
    assert response.status_code == 200 and str(response.url) == "http://svc/p?q=1"
    assert len(seen) == 2 and {r.url.port for r in seen} == {9001, 9002}
    for sent in seen:
        assert sent.headers["traceparent"] == "00-abc-def-01"
        assert sent.headers["host"] == f"127.0.0.1:{sent.url.port}"
        assert sent.url.raw_path == b"/p?q=1"
        assert all(0 < t <= 1.0 for t in sent.extensions["timeout"].values())
    sync.close()
    client.close()

    async def via_async() -> None:
        seen.clear()
        source = _StaticAsyncSource(res)
        transport = AsyncDiscoveryTransport(
            source=source,  # type: ignore[arg-type]
            retry=policy,
            inner=httpx.MockTransport(answer),
        )
        async with httpx.AsyncClient(transport=transport) as http:
            with propagating({"traceparent": "00-abc-def-01"}):
                response = await http.get("http://svc/p?q=1")
        assert response.status_code == 200 and len(seen) == 2
        assert all(r.headers["traceparent"] == "00-abc-def-01" for r in seen)
        assert not source.closed  # a source passed in belongs to its owner

    asyncio.run(via_async())


@pytest.mark.parametrize(
    "url", ["http://svc/a/b?x=1&y=%20z", "http://svc", "http://svc/p#frag", "http://svc/%7Eu"]
)
@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 8080), ("10.0.0.1", 80), ("::1", 81)])
def test_the_attempt_url_is_the_one_copy_with_makes(url, host, port):
    from consul_discovery.client.httpx_transport import _instance_url

    fast = _instance_url(httpx.URL(url), host, port)
    assert fast == httpx.URL(url).copy_with(host=host, port=port)
    assert fast.netloc == httpx.URL(url).copy_with(host=host, port=port).netloc


def test_discovery_errors_surface_as_httpx_connect_errors():
    from tests.discovery_client.fakes import StaticSource, resolution

    client = ServiceClient(source=StaticSource(resolution()))
    with (
        httpx.Client(transport=DiscoveryTransport(client)) as http,
        pytest.raises(httpx.ConnectError, match="no healthy instance") as info,
    ):
        http.get("http://svc/")
    assert type(info.value.__cause__).__name__ == "NoHealthyInstanceError"
    client.close()
