"""ACL refusals, the same through both sources, against a real ACL agent (default deny).

Every case runs through the threaded ``ConsulSource`` and the asyncio
``AsyncConsulSource``: a 403 (a token Consul does not know; a Connect query without
``service:read``) is a ``ConsulPermissionError`` naming the call; an empty answer Consul
marks as filtered by ACLs (``service:read`` without ``node:read``) and an empty catalog
under default-deny (no token) are permission errors too, never "no instances" or
"unknown service". The token never shows in an error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from consul_discovery.client import ConsulPermissionError, ConsulQueryError, ConsulSource
from consul_discovery.client.aio import AsyncConsulSource
from consul_discovery.client.errors import DiscoveryError
from consul_discovery.client.instance import Resolution
from consul_discovery.client.source import WatchStats
from consul_discovery.client.target import Target
from tests.harness.acl import MANAGEMENT_HEADERS, create_token, running_acl_agent
from tests.harness.agent import ConsulAgent

SOURCES = ("threaded", "asyncio")


@dataclass(frozen=True)
class AclAgent:
    """A running ACL agent with ``web`` registered and a token per reach."""

    agent: ConsulAgent
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def acl() -> Iterator[AclAgent]:
    with running_acl_agent() as agent:
        web = {"ID": "web-1", "Name": "web", "Port": 9}
        requests.put(
            f"{agent.url}/v1/agent/service/register",
            json=web,
            headers=MANAGEMENT_HEADERS,
            timeout=5,
        ).raise_for_status()
        tokens = {
            "reader": create_token(
                agent,
                rules='service_prefix "" { policy = "read" } node_prefix "" { policy = "read" }',
            ),
            "no-node-read": create_token(agent, rules='service_prefix "" { policy = "read" }'),
            "other-service": create_token(
                agent,
                rules='service "other" { policy = "read" } node_prefix "" { policy = "read" }',
            ),
            "unknown": str(uuid.uuid4()),
        }
        yield AclAgent(agent, tokens)


def resolve(
    kind: str, acl: AclAgent, token: str | None, target: str | Target
) -> tuple[Resolution | DiscoveryError, WatchStats | None]:
    """Resolve ``target`` once through the ``kind`` source; its outcome and watch counters."""
    address = acl.agent.address
    if kind == "threaded":
        with ConsulSource(address, token=token) as source:
            try:
                return source.resolve(target, timeout=5), source.watch_stats(target)
            except DiscoveryError as exc:
                return exc, source.watch_stats(target)

    async def scenario() -> tuple[Resolution | DiscoveryError, WatchStats | None]:
        async with AsyncConsulSource(address, token=token) as source:
            try:
                return await source.resolve(target, timeout=5), source.watch_stats(target)
            except DiscoveryError as exc:
                return exc, source.watch_stats(target)

    return asyncio.run(scenario())


def refused(outcome: Resolution | DiscoveryError, token: str | None) -> ConsulPermissionError:
    assert isinstance(outcome, ConsulPermissionError), outcome
    assert isinstance(outcome, ConsulQueryError)  # callers of the old tree still match
    assert token is None or token not in str(outcome)
    return outcome


@pytest.mark.parametrize("kind", SOURCES)
def test_a_token_with_read_access_resolves(kind: str, acl: AclAgent) -> None:
    outcome, stats = resolve(kind, acl, acl.tokens["reader"], "web")
    assert isinstance(outcome, Resolution), outcome
    assert [i.id for i in outcome.instances] == ["web-1"]
    assert stats is not None and stats.errors == 0


@pytest.mark.parametrize("kind", SOURCES)
def test_a_403_for_a_token_consul_does_not_know_is_a_permission_error(
    kind: str, acl: AclAgent
) -> None:
    token = acl.tokens["unknown"]
    outcome, stats = resolve(kind, acl, token, "web")
    message = str(refused(outcome, token))
    assert "does not know the ACL token" in message and "read service 'web'" in message
    assert stats is not None and stats.errors == 1


@pytest.mark.parametrize("kind", SOURCES)
def test_a_403_on_the_connect_endpoint_is_a_permission_error(kind: str, acl: AclAgent) -> None:
    token = acl.tokens["other-service"]
    outcome, _ = resolve(kind, acl, token, Target("web", connect=True))
    message = str(refused(outcome, token))
    assert "Consul denied permission to read service 'web[connect]'" in message


@pytest.mark.parametrize("kind", SOURCES)
def test_an_empty_answer_filtered_by_acls_is_not_no_instances(kind: str, acl: AclAgent) -> None:
    token = acl.tokens["no-node-read"]
    outcome, _ = resolve(kind, acl, token, "web")
    assert "node:read" in str(refused(outcome, token))


@pytest.mark.parametrize("kind", SOURCES)
def test_an_empty_catalog_under_default_deny_is_not_an_unknown_service(
    kind: str, acl: AclAgent
) -> None:
    outcome, _ = resolve(kind, acl, None, "web")
    assert "no service at all" in str(refused(outcome, None))


def test_one_shot_reads_say_the_same(acl: AclAgent) -> None:
    with (
        ConsulSource(acl.agent.address, token=acl.tokens["no-node-read"]) as source,
        pytest.raises(ConsulPermissionError, match="node:read"),
    ):
        source.list_instances("web")
    with (
        ConsulSource(acl.agent.address) as anonymous,
        pytest.raises(ConsulPermissionError, match="no service at all"),
    ):
        anonymous.list_services()


@pytest.mark.parametrize("kind", SOURCES)
def test_a_token_without_agent_read_turns_agent_zone_off_once_with_the_fix(
    kind: str, acl: AclAgent, caplog: pytest.LogCaptureFixture
) -> None:
    """``ServiceConfig(zone=AGENT_ZONE)`` needs ``agent:read`` to read the agent's locality:
    without it, no zone preference (calls still resolve), said once, naming the fix."""
    caplog.set_level(logging.INFO, "consul_discovery.client.agent_zone")
    token = acl.tokens["reader"]
    zones: list[str | None] = []
    heard = threading.Event()

    def listener(zone: str | None) -> None:
        zones.append(zone)
        heard.set()

    if kind == "threaded":
        with ConsulSource(acl.agent.address, token=token) as source:
            source.agent_zone(listener)
            assert heard.wait(10)
    else:

        async def scenario() -> None:
            async with AsyncConsulSource(acl.agent.address, token=token) as source:
                source.agent_zone(listener)
                deadline = time.monotonic() + 10
                while not heard.is_set():
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)

        asyncio.run(scenario())
    assert zones == [None]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "'agent:read'" in said[0] and "ServiceConfig(zone=" in said[0]
    assert token not in said[0]
