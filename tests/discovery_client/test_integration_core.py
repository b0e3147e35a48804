"""Weights, real removals and close() against a real agent and real gunicorn backends.

Instances are registered through Consul's HTTP API directly (with Weights and TTL checks,
so a test sets passing / warning / critical at will); three backend processes serve
several service ids each. Figures are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from consul_discovery.client.client import ServiceClient
from consul_discovery.client.config import POLICIES, ServiceConfig
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.instance import Resolution
from tests.discovery_client.loop_tasks import watch_tasks
from tests.discovery_client.test_integration_consul import ConsulPoller, statuses, wait_until
from tests.harness.agent import ConsulAgent, running_agent
from tests.harness.backends import Backend, wait_until_passing
from tests.harness.ports import free_port

REMOVAL_BUDGET = 0.010  # seconds from Consul showing a removal to the picker without it
WARNING_SHARE = 1 / 11  # Passing 10 / Warning 1


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    with running_agent() as started:
        yield started


@pytest.fixture(scope="module")
def backends() -> Iterator[list[Backend]]:
    procs = [Backend(id=f"proc-{n}", service="unused", port=free_port()) for n in range(3)]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def register(agent: ConsulAgent, service: str, ident: str, port: int, status: str) -> None:
    """PUT /v1/agent/service/register: Weights Passing 10 / Warning 1, a TTL check."""
    body = {
        "ID": ident, "Name": service, "Address": "127.0.0.1", "Port": port,
        "Weights": {"Passing": 10, "Warning": 1},
        "Check": {"CheckID": f"service:{ident}", "TTL": "1h", "Status": status},
    }  # fmt: skip
    requests.put(f"{agent.url}/v1/agent/service/register", json=body, timeout=5).raise_for_status()


def ttl(agent: ConsulAgent, ident: str, status: str) -> None:
    verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
    url = f"{agent.url}/v1/agent/check/{verb}/service:{ident}"
    requests.put(url, timeout=5).raise_for_status()


def maintenance(agent: ConsulAgent, ident: str, enable: bool) -> None:
    url = f"{agent.url}/v1/agent/service/maintenance/{ident}"
    params = {"enable": str(enable).lower(), "reason": "drain"}
    requests.put(url, params=params, timeout=5).raise_for_status()


def deregister(agent: ConsulAgent, ident: str) -> None:
    requests.put(f"{agent.url}/v1/agent/service/deregister/{ident}", timeout=5).raise_for_status()


def test_every_policy_honours_weights_and_derates_warning(agent, backends):
    port_of = {}
    for n, health in enumerate(("passing", "warning", "critical")):
        register(agent, "weighted", f"w-{health}", backends[n].port, health)
        port_of[backends[n].port] = health
    shares = {}
    for policy in POLICIES:
        with ServiceClient(agent.address, default_config=ServiceConfig(policy=policy)) as client:
            counts: Counter[str] = Counter()
            for _ in range(600):
                response = client.get("weighted", "/")
                assert response.ok
                counts[port_of[int(response.url.rsplit(":", 1)[1].split("/")[0])]] += 1
        assert counts["critical"] == 0, (policy, counts)
        shares[policy] = counts["warning"] / 600
    print("\nwarning share of 600 calls (weights 10/1, target 1/11 = 0.091): "
          + ", ".join(f"{p} {s:.3f}" for p, s in shares.items()))  # fmt: skip
    for policy, share in shares.items():
        if policy == "peak_ewma":  # cost / weight: derated at least by the weight ratio
            assert share <= WARNING_SHARE, shares
        else:
            assert share == pytest.approx(WARNING_SHARE, abs=0.045), shares


def _parked_in_long_poll(source: ConsulSource, quiet: float = 0.1) -> None:
    """Wait until the watch sits in a blocking query: no new request for ``quiet`` s.

    After a change the watch may start its next query only ``min_change_interval``
    later; a change made in that gap would measure the rate limit, not propagation.
    """
    deadline = time.monotonic() + 10
    last, since = source.watch_stats("moving").requests, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now = source.watch_stats("moving").requests
        if now != last:
            last, since = now, time.monotonic()
        elif last >= 2 and time.monotonic() - since >= quiet:
            return
    raise AssertionError("the watch never settled into a long poll")


def _removal_lag(
    client: ServiceClient, agent: ConsulAgent, ident: str,
    act: Callable[[], None], shown: Callable[[list[dict[str, Any]]], bool],
) -> float:  # fmt: skip
    """Seconds from Consul showing the removal (2 ms poller) to the picker without it."""
    updated = threading.Event()
    at: list[float] = []

    def listener(resolution: Resolution) -> None:
        if ident not in {i.id for i in resolution.instances} and not updated.is_set():
            at.append(time.monotonic())
            updated.set()

    client.source.subscribe("moving", listener)
    _parked_in_long_poll(client.source)
    poller = ConsulPoller(agent, "moving").start(shown)
    act()
    assert updated.wait(10), f"the client never dropped {ident}"
    wait_until(lambda: poller.seen_at, 5, "the poller to see the change in Consul")
    poller.stop()
    client.source.unsubscribe("moving", listener)
    assert poller.seen_at is not None
    picks = {client.balancer("moving").pick().id for _ in range(50)}
    assert ident not in picks
    return at[0] - poller.seen_at


def test_drain_deregister_and_critical_are_not_picked_within_10ms(agent, backends):
    ids = [f"m-{n}" for n in range(4)]
    for n, ident in enumerate(ids):
        register(agent, "moving", ident, backends[n % 3].port, "passing")
    wait_until_passing(agent.client(), "moving", 4)
    lags: dict[str, list[float]] = {"deregister": [], "maintenance": [], "critical": []}
    with ServiceClient(agent.address) as client:
        assert client.get("moving", "/").ok
        for _ in range(3):
            lags["deregister"].append(_removal_lag(
                client, agent, "m-0", lambda: deregister(agent, "m-0"),
                lambda entries: "m-0" not in statuses(entries),
            ))  # fmt: skip
            lags["maintenance"].append(_removal_lag(
                client, agent, "m-1", lambda: maintenance(agent, "m-1", True),
                lambda entries: any(c["CheckID"] == "_service_maintenance:m-1"
                                    for e in entries for c in e["Checks"]),
            ))  # fmt: skip
            lags["critical"].append(_removal_lag(
                client, agent, "m-2", lambda: ttl(agent, "m-2", "critical"),
                lambda entries: statuses(entries).get("m-2") == "critical",
            ))  # fmt: skip
            register(agent, "moving", "m-0", backends[0].port, "passing")
            maintenance(agent, "m-1", False)
            ttl(agent, "m-2", "passing")
            wait_until(lambda: {i.id for i in client.source.resolve("moving").instances}
                       == set(ids), 10, "every instance back")  # fmt: skip
    print("\nremoval -> not picked (ms after Consul showed it): " + ", ".join(
        f"{kind} {[round(v * 1000, 1) for v in values]}" for kind, values in lags.items()
    ))  # fmt: skip
    for kind, values in lags.items():
        assert statistics.median(values) <= REMOVAL_BUDGET, (kind, values)


def test_close_ends_an_in_flight_long_poll_promptly(agent, backends):
    register(agent, "idle", "idle-0", backends[0].port, "passing")
    source = ConsulSource(agent.address, wait=30.0)
    source.resolve("idle")
    wait_until(lambda: source.watch_stats("idle").requests >= 2, 5, "the long poll")
    time.sleep(0.1)  # the blocking query is now parked in the agent for up to 30 s
    started = time.monotonic()
    source.close()
    elapsed = time.monotonic() - started
    assert "consul-watch-idle" not in watch_tasks(source)
    assert elapsed < 1.0, f"close() took {elapsed:.2f}s"


def test_a_call_that_cannot_resolve_its_service_is_counted(agent):
    """A call that fails before any pick (Consul unreachable at start, a service Consul
    does not know) is counted in ``no_instance`` and its metric, through the requests and
    the async httpx shells: before, stats showed 0 calls and 0 failures all outage long."""
    import httpx

    from consul_discovery.client import AsyncDiscoveryTransport, DiscoveryError
    from tests.harness.socket_server import closed_port

    for address, service in ((f"127.0.0.1:{closed_port()}", "orders"), (agent.address, "nope")):
        with ServiceClient(address, resolve_timeout=1.0) as client:
            for _ in range(2):
                with pytest.raises(DiscoveryError):
                    client.get(service, "/")
            assert client.stats().target(service).no_instance == 2, address

        async def twice(address: str = address, service: str = service) -> int:
            transport = AsyncDiscoveryTransport(address, resolve_timeout=1.0)
            async with httpx.AsyncClient(transport=transport) as http:
                for _ in range(2):
                    with pytest.raises(httpx.ConnectError):
                        await http.get(f"http://{service}/")
                return transport.stats().target(service).no_instance

        assert asyncio.run(twice()) == 2, address
