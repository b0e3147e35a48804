"""``ServiceConfig(zone=AGENT_ZONE)``: the caller's zone is its agent's locality.

The reading's rules with an injected send (no agent): an answer's zone, an agent with
no locality, a refusal (off, said once as a warning naming agent:read), an agent that
does not answer (asked again). Then through real agents, for every transport: calls
prefer the agent's zone once it is read, and balance over every zone until then or
when the agent has none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
import requests

from consul_discovery.client import AGENT_ZONE, ServiceClient, ServiceConfig
from consul_discovery.client.agent_zone import AgentZoneReader, read_zone
from consul_discovery.client.balancer import Balancer
from consul_discovery.client.errors import ConsulPermissionError
from consul_discovery.client.health_query import QueryOptions
from consul_discovery.client.httpx_transport import AsyncDiscoveryTransport, DiscoveryTransport
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import Request, Response, TransportError
from consul_discovery.connection.transport_errors import TransportFailure
from tests.discovery_client.fakes import FakeClock, instance, resolution
from tests.harness.agent import ConsulAgent, running_agent


def answer(body: object, status: int = 200) -> Response:
    """An answer with ``body`` as JSON (a str: as it is, like Consul's 403 text)."""
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return Response(status, {}, raw)


DENIED = "Permission denied: token with AccessorID 'x' lacks permission 'agent:read' on \"n1\""


def test_the_zone_is_the_agents_locality_zone() -> None:
    body = {"DebugConfig": {"Locality": {"Region": "eu", "Zone": "eu-1b"}}}
    assert read_zone(answer(body), "a:1") == "eu-1b"
    for nothing in ({}, {"DebugConfig": {}}, {"DebugConfig": {"Locality": None}}, [], None):
        assert read_zone(answer(nothing), "a:1") is None
    assert read_zone(answer({"DebugConfig": {"Locality": {"Zone": ""}}}), "a:1") is None
    denied = answer(DENIED, 403)
    with pytest.raises(ConsulPermissionError, match="agent:read"):
        read_zone(denied, "a:1")


def test_agent_zone_is_a_config_value_apart_from_zone_names() -> None:
    assert ServiceConfig(zone=AGENT_ZONE).zone is AGENT_ZONE
    assert repr(AGENT_ZONE) == "AGENT_ZONE"
    with pytest.raises(ValueError, match="AGENT_ZONE"):
        ServiceConfig(zone="")
    with pytest.raises(ValueError, match="ring_hash"):
        ServiceConfig(policy="ring_hash", zone=AGENT_ZONE)


class Reading:
    """An AgentZoneReader on a private loop thread, with scripted answers."""

    def __init__(self, answers: list[Response | Exception]) -> None:
        self.answers = answers
        self.asked: list[Request] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.reader = AgentZoneReader(
            "agent:8500",
            QueryOptions(request_timeout=1.0),
            WatchTiming(backoff_base=0.01, backoff_cap=0.02),
            rng=random.Random(1),
            start=lambda read: asyncio.run_coroutine_threadsafe(read, self.loop),
            send=lambda: self.send,
        )

    async def send(self, request: Request) -> Response:
        self.asked.append(request)
        step = self.answers.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def heard(self) -> tuple[list[str | None], threading.Event]:
        got: list[str | None] = []
        done = threading.Event()

        def listener(zone: str | None) -> None:
            got.append(zone)
            done.set()

        self.reader.want(listener)
        return got, done

    def close(self) -> None:
        self.reader.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def reading() -> Iterator[Callable[[list[Response | Exception]], Reading]]:
    made: list[Reading] = []

    def make(answers: list[Response | Exception]) -> Reading:
        made.append(Reading(answers))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_the_zone_is_read_once_and_given_to_every_listener(reading) -> None:
    unreachable = TransportError(TransportFailure.REFUSED, "connection refused")
    r = reading(
        [unreachable, answer({}, 500), answer({"DebugConfig": {"Locality": {"Zone": "z"}}})]
    )
    first, done = r.heard()
    second, done2 = r.heard()
    assert done.wait(5) and done2.wait(5)
    assert first == second == ["z"]
    assert [q.path for q in r.asked] == ["/v1/agent/self"] * 3  # asked again after failures
    late, _ = r.heard()
    assert late == ["z"] and len(r.asked) == 3  # known: at once, no request
    assert r.reader.zone == "z"


def test_a_refusal_turns_zones_off_once_with_a_warning(reading, caplog) -> None:
    caplog.set_level(logging.WARNING, "consul_discovery.client.agent_zone")
    r = reading([answer(DENIED, 403)])
    got, done = r.heard()
    assert done.wait(5) and got == [None]
    warnings = [rec.getMessage() for rec in caplog.records]
    assert len(warnings) == 1 and "agent:read" in warnings[0] and "zone=" in warnings[0]


def test_a_balancer_prefers_the_zone_once_it_is_set() -> None:
    members = [instance(f"a{n}", zone="a") for n in range(2)]
    members += [instance(f"b{n}", zone="b") for n in range(2)]
    balancer = Balancer(
        "svc", ServiceConfig(policy="round_robin", zone=AGENT_ZONE), clock=FakeClock(),
        rng=random.Random(3),
    )  # fmt: skip
    balancer.update(resolution(*members))
    assert Counter(balancer.pick().instance.zone for _ in range(400)) == {"a": 200, "b": 200}
    balancer.set_zone("b")
    assert Counter(balancer.pick().instance.zone for _ in range(400)) == {"b": 400}
    balancer.set_zone(None)
    assert set(Counter(balancer.pick().instance.zone for _ in range(40))) == {"a", "b"}


# ---- real agents -----------------------------------------------------------------------


def register_zones(agent: ConsulAgent) -> None:
    """``zoned``: two instances inheriting the agent's locality, two in zone other-1."""
    for n in range(4):
        body: dict[str, object] = {
            "Name": "zoned", "ID": f"zoned-{n}", "Port": 9000 + n, "Address": "127.0.0.1"
        }  # fmt: skip
        if n >= 2:
            body["Locality"] = {"Region": "eu", "Zone": "other-1"}
        requests.put(f"{agent.url}/v1/agent/service/register", json=body, timeout=5)


@pytest.fixture(scope="module")
def zoned_agent() -> Iterator[ConsulAgent]:
    with running_agent(extra_args=["-hcl", 'locality { region = "eu" zone = "eu-1b" }']) as a:
        register_zones(a)
        yield a


@pytest.fixture(scope="module")
def plain_agent() -> Iterator[ConsulAgent]:
    with running_agent() as a:
        register_zones(a)
        yield a


def eventually_zones(pick: Callable[[], str], wanted: set[str], timeout: float = 10.0) -> None:
    """Until 60 picks in a row land in exactly ``wanted`` zones."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {pick() for _ in range(60)}
        if seen == wanted:
            return
        assert time.monotonic() < deadline, f"picks went to {seen}, not {wanted}"
        time.sleep(0.05)


CONFIG = {"zoned": ServiceConfig(policy="round_robin", zone=AGENT_ZONE)}


def test_requests_client_prefers_its_agents_zone(zoned_agent: ConsulAgent) -> None:
    with ServiceClient(zoned_agent.address, services=CONFIG) as client:
        state = client.core.state("zoned")
        client.source.resolve("zoned", timeout=5)
        eventually_zones(lambda: state.balancer.pick().instance.zone, {"eu-1b"})


def test_httpx_sync_transport_prefers_its_agents_zone(zoned_agent: ConsulAgent) -> None:
    transport = DiscoveryTransport(consul_addr=zoned_agent.address, services=CONFIG)
    with httpx.Client(transport=transport):
        state = transport.core.state("zoned")
        transport.core.source.resolve("zoned", timeout=5)
        eventually_zones(lambda: state.balancer.pick().instance.zone, {"eu-1b"})


def test_httpx_async_transport_prefers_its_agents_zone(zoned_agent: ConsulAgent) -> None:
    async def scenario() -> None:
        transport = AsyncDiscoveryTransport(zoned_agent.address, services=CONFIG)
        async with httpx.AsyncClient(transport=transport):
            state = transport.core.state("zoned")
            await transport.core.source.resolve("zoned", timeout=5)
            deadline = time.monotonic() + 10
            while True:
                seen = {state.balancer.pick().instance.zone for _ in range(60)}
                if seen == {"eu-1b"}:
                    return
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_an_agent_without_locality_leaves_every_zone_in_play(
    plain_agent: ConsulAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "consul_discovery.client.agent_zone")
    with ServiceClient(plain_agent.address, services=CONFIG) as client:
        state = client.core.state("zoned")
        client.source.resolve("zoned", timeout=5)
        deadline = time.monotonic() + 10
        while not any("no locality" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the reading never settled"
            time.sleep(0.05)
        eventually_zones(lambda: state.balancer.pick().instance.zone, {"", "other-1"})
