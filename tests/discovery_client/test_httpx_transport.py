"""What is the httpx transports' own: sharing a ServiceClient's core, no thread per
service on asyncio, each attempt's request (address, Host, trace headers, capped
timeouts), the attempt URL, and discovery errors surfacing as httpx errors.

The rules every transport shares (policy, retries, unsafe requests, relayed failures,
stale-on-error, ...) are the conformance suite's: tests/discovery_client/conformance/.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests

from consul_discovery.client import DiscoveryAdapter, ServiceClient, ServiceConfig
from consul_discovery.client.dial import Dial
from consul_discovery.client.httpx_shell import instance_url
from consul_discovery.client.httpx_transport import AsyncDiscoveryTransport, DiscoveryTransport
from consul_discovery.client.instance import Instance
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


def test_requests_path_and_both_httpx_transports_share_one_service_state(agent, procs):
    register(agent, "shared", "shared-0", procs[0].port)
    with ServiceClient(agent.address) as client:
        session = requests.Session()
        session.mount("http://", DiscoveryAdapter(client))
        with httpx.Client(transport=DiscoveryTransport(client)) as http:
            assert http.get("http://shared/").status_code == 200
            assert session.get("http://shared/").status_code == 200
        session.close()
        assert client.stats().target("shared").requests == 2


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
            # One health watch per service, and the source's one config-entry watch
            # (which services have a discovery chain: none here, so no chain watch).
            names = sorted(t.get_name() for t in watches)
            assert names == [
                "consul-watch-config-entries",
                *(f"consul-watch-svc-{n}" for n in range(3)),
            ], names
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
    dial = Dial.of(Instance("i", "svc", host, port))
    fast = instance_url(httpx.URL(url), dial)
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


def test_the_sync_transport_stands_alone_or_shares_a_client_core_but_not_both():
    from tests.discovery_client.fakes import StaticSource, instance, resolution

    source = StaticSource(resolution(instance(1, port=9001)))
    inner = httpx.MockTransport(lambda request: httpx.Response(200, content=b"ok"))
    transport = DiscoveryTransport(source=source, inner=inner)
    with httpx.Client(transport=transport) as http:
        assert http.get("http://svc/").text == "ok"
    assert transport.stats().target("svc").requests == 1
    assert not source.closed  # a source passed in belongs to its owner
    client = ServiceClient(source=source)
    with pytest.raises(ValueError, match="configure the ServiceClient instead of passing source"):
        DiscoveryTransport(client, source=source)
    shared = DiscoveryTransport(client, inner=inner)
    assert shared.core is client.core
    shared.close()
    client.close()


def test_a_dial_remembers_its_attempt_urls_and_forgets_them_past_its_bound(monkeypatch):
    import consul_discovery.client.httpx_shell as shell

    dial = Dial.of(Instance("i", "svc", "127.0.0.1", 8080))
    first = instance_url(httpx.URL("http://svc/a?x=1"), dial)
    assert instance_url(httpx.URL("http://svc/a?x=1"), dial) is first  # one URL per path
    other = instance_url(httpx.URL("http://svc/a?x=2"), dial)
    assert other is not first and str(other) == "http://127.0.0.1:8080/a?x=2"
    monkeypatch.setattr(shell, "MAX_URLS_PER_DIAL", 3)
    for n in range(10):
        instance_url(httpx.URL(f"http://svc/{n}"), dial)
        assert len(dial.memo) <= 3


def test_the_transport_remembers_which_origins_name_a_service():
    from consul_discovery.client.httpx_shell import url_service
    from consul_discovery.client.routing import Router

    router = Router(None, ())
    for _ in range(2):  # asked, then remembered: the same answers
        assert url_service(router, httpx.URL("http://orders/x")) == "orders"
        assert url_service(router, httpx.URL("http://orders:8080/x")) is None
        assert url_service(router, httpx.URL("https://orders/x")) is None
        assert url_service(router, httpx.URL("http://example.com/")) is None
    assert len(router._seen) == 4
