"""Agentless: both sources read a real 3-server cluster through its server list.

The server a watch is reading from is killed (kill -9) while its blocking query is in
flight: the same poll is answered by another server (no watch error), a change made
through a survivor arrives, and the index rules hold (the first query to the new
server is a plain read). Stale reads report ``X-Consul-LastContact`` and
``X-Consul-KnownLeader`` in the watch stats and spread reads over followers.
Instances are catalog registrations on an external node, so a dead server takes no
instance with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import requests

from consul_discovery.client.aio import AsyncConsulSource
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.instance import Resolution
from consul_discovery.config import ConfigClient, Layers
from consul_discovery.config import cli as config_cli
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.sending import HttpxSender, SessionSender
from consul_discovery.connection.server_routing import ServerRouting
from consul_discovery.connection.server_sending import (
    AsyncServerListSender,
    ServerListSender,
    routing_for,
    session_sender,
)
from consul_discovery.connection.servers import ServerAddress
from tests.harness.agent import ConsulAgent
from tests.harness.cluster import ConsulCluster
from tests.harness.waiting import wait_for

wait_until = partial(wait_for, interval=0.005)  # polls every 5 ms

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FAST = {"wait": 10.0, "min_interval": 0.05, "backoff_base": 0.1, "backoff_cap": 0.5}


@pytest.fixture(scope="module")
def cluster() -> Iterator[ConsulCluster]:
    cluster = ConsulCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def healed(cluster: ConsulCluster) -> Iterator[ConsulCluster]:
    """The cluster; every server killed by the test is started again afterwards."""
    yield cluster
    for server in cluster.servers:
        if server.pid is None:
            server.start(wait_for_leader=False)
    cluster.wait_for_peers(3, timeout=60)
    for server in cluster.servers:
        server.wait_for_leader(timeout=30)


def server_of(agent: ConsulAgent) -> ServerAddress:
    return ServerAddress("http", "127.0.0.1", agent.ports.http)


def agent_of(cluster: ConsulCluster, server: ServerAddress) -> ConsulAgent:
    return next(a for a in cluster.servers if a.ports.http == server.port)


def connection(cluster: ConsulCluster, **overrides: Any) -> ConsulConnection:
    return ConsulConnection.from_env(
        {}, addresses=[s.address for s in cluster.servers], **overrides
    )


@contextlib.contextmanager
def listed_source(conn: ConsulConnection, sender: ServerListSender) -> Iterator[ConsulSource]:
    """A source reading through ``sender`` (closed first, so no poll outlives the test)."""
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(
            ConsulSource(connection=conn, send=sender, snapshots=None, **FAST)
        )
        stack.callback(sender.close)
        yield source


def routing_on(conn: ConsulConnection, server: ServerAddress) -> ServerRouting:
    """The routing a client gets, with a shuffle that starts it on ``server``."""
    for seed in range(500):
        routing = routing_for(conn, rng=random.Random(seed))
        if routing.status().current == server:
            return routing
    raise AssertionError(f"no shuffle starts on {server}")


def write(via: ConsulAgent, path: str, body: dict[str, Any] | str, timeout: float = 30.0) -> None:
    """A catalog or KV write, retried while the cluster elects a leader."""
    deadline = time.monotonic() + timeout
    data = body if isinstance(body, str) else json.dumps(body)
    while True:
        response = requests.put(f"{via.url}{path}", data=data, timeout=10)
        if response.ok:
            return
        assert time.monotonic() < deadline, f"{path}: {response.status_code} {response.text}"
        time.sleep(0.1)


def register(via: ConsulAgent, ident: str, port: int) -> None:
    body = {
        "Node": "external-host",
        "Address": "127.0.0.1",
        "Service": {"ID": ident, "Service": "web", "Port": port},
    }
    write(via, "/v1/catalog/register", body)


def deregister(via: ConsulAgent, ident: str) -> None:
    write(via, "/v1/catalog/deregister", {"Node": "external-host", "ServiceID": ident})


def ids(resolution: Resolution | None) -> set[str]:
    return {i.id for i in resolution.instances} if resolution else set()


@pytest.fixture
def web(cluster: ConsulCluster) -> Iterator[None]:
    via = cluster.running()[0]
    register(via, "web-1", 9001)
    for server in cluster.running():  # every follower has applied it (stale reads)
        url = f"{server.url}/v1/catalog/service/web?stale"
        wait_until(lambda u=url: requests.get(u, timeout=5).json(), 10, "web-1 everywhere")
    yield
    via = cluster.running()[0]
    for ident in ("web-1", "web-2"):
        deregister(via, ident)


# -- the server in use killed mid-poll -------------------------------------------------


@pytest.mark.parametrize(
    ("role", "stale"), [("follower", False), ("leader", True), ("leader", False)]
)
def test_the_server_in_use_killed_mid_poll_is_replaced_within_the_poll(
    healed: ConsulCluster, web: None, role: str, stale: bool, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = healed
    leader = cluster.leader()
    assert leader is not None
    victim = leader if role == "leader" else next(s for s in cluster.servers if s != leader)
    conn = connection(cluster, stale=stale)
    routing = routing_on(conn, server_of(victim))
    sender = ServerListSender(
        routing, {s: SessionSender(conn.for_server(s)) for s in conn.server_addresses}
    )
    seen: list[Resolution] = []
    with caplog.at_level(logging.WARNING), listed_source(conn, sender) as source:
        source.subscribe("web", seen.append)
        assert ids(source.resolve("web", timeout=10)) == {"web-1"}
        before = source.watch_stats("web")
        assert before is not None and before.server == str(server_of(victim))
        assert before.known_leader is not None
        time.sleep(0.3)  # the blocking query is in flight on the victim
        killed = time.monotonic()
        victim.kill()
        survivor = next(s for s in cluster.running())
        register(survivor, "web-2", 9002)
        wait_until(lambda: ids(source.cached("web")) == {"web-1", "web-2"}, 30, "web-2")
        seen_after = time.monotonic() - killed
        stats = source.watch_stats("web")
        assert stats is not None and stats.server != str(server_of(victim))
        assert all(ids(r) >= {"web-1"} for r in seen)  # the set was kept throughout
        if role == "leader" and not stale:
            # Consistent reads need a leader: while the survivors elect one, every one
            # of them refuses the poll (its set is kept, marked stale, calls go on).
            assert stats.errors >= 1 and any(r.stale for r in seen)
        else:
            assert stats.errors == 0, "a poll failed: the switch leaked"
            assert all(not r.stale for r in seen)
        status = routing.status()
        assert status.switches == 1 and status.last_switch is not None
        assert status.last_switch.failed == server_of(victim)
    switch_ms = status.last_switch.seconds * 1000
    print(f"{role} killed (stale={stale}): switched in {switch_ms:.1f} ms, ", end="")
    print(f"change seen {seen_after:.2f}s after")
    assert status.last_switch.seconds < (15.0 if role == "leader" and not stale else 1.0)
    lines = [r.getMessage() for r in caplog.records if "answered instead" in r.getMessage()]
    assert len(lines) == 1 and str(server_of(victim)) in lines[0]


def test_the_async_source_fails_over_the_same_way(healed: ConsulCluster, web: None) -> None:
    cluster = healed
    leader = cluster.leader()
    victim = next(s for s in cluster.servers if s != leader)
    conn = connection(cluster)

    async def main() -> tuple[Any, Any]:
        routing = routing_on(conn, server_of(victim))
        sender = AsyncServerListSender(
            routing, {s: HttpxSender(conn.for_server(s)) for s in conn.server_addresses}
        )
        source = AsyncConsulSource(connection=conn, send=sender, snapshots=None, **FAST)
        try:
            assert ids(await source.resolve("web", timeout=10)) == {"web-1"}
            await asyncio.sleep(0.3)
            victim.kill()
            register(next(iter(cluster.running())), "web-2", 9002)
            deadline = time.monotonic() + 30
            while ids(source.cached("web")) != {"web-1", "web-2"}:
                assert time.monotonic() < deadline, "web-2 never arrived"
                await asyncio.sleep(0.01)
            return source.watch_stats("web"), routing.status()
        finally:
            await source.aclose()
            await sender.aclose()

    stats, status = asyncio.run(main())
    assert stats.errors == 0 and stats.server != str(server_of(victim))
    assert status.switches == 1


def test_a_list_connection_gets_a_list_sender_and_one_address_the_plain_one(
    cluster: ConsulCluster,
) -> None:
    listed = session_sender(connection(cluster))
    single = session_sender(cluster.servers[0].connection())
    try:
        assert isinstance(listed, ServerListSender) and isinstance(single, SessionSender)
        assert set(listed.senders) == {server_of(a) for a in cluster.servers}
    finally:
        listed.close()
        single.close()


# -- stale reads -----------------------------------------------------------------------


def test_stale_reads_report_last_contact_and_spread_over_followers(
    cluster: ConsulCluster, web: None
) -> None:
    leader = cluster.leader()
    follower = next(s for s in cluster.servers if s != leader)
    conn = connection(cluster, stale=True)
    routing = routing_on(conn, server_of(follower))
    sender = ServerListSender(
        routing, {s: SessionSender(conn.for_server(s)) for s in conn.server_addresses}
    )
    with listed_source(conn, sender) as source:
        assert ids(source.resolve("web", timeout=10)) == {"web-1"}
        stats = source.watch_stats("web")
        assert stats is not None and stats.server == str(server_of(follower))
        assert stats.known_leader is True and stats.last_contact is not None
        assert 0 <= stats.last_contact < 5
    assert routing.status().leader_reads == 0


def test_an_answer_past_max_stale_is_read_again_from_the_leader(
    cluster: ConsulCluster, web: None
) -> None:
    leader = cluster.leader()
    follower = next(s for s in cluster.servers if s != leader)
    conn = connection(cluster, stale=True, max_stale=0.0)  # any follower lag is too much
    routing = routing_on(conn, server_of(follower))
    sender = ServerListSender(
        routing, {s: SessionSender(conn.for_server(s)) for s in conn.server_addresses}
    )
    with listed_source(conn, sender) as source, leader_paused(leader, 0.4):
        # The leader frozen for 0.4 s: the follower's answer, 0.15 s in, says it has not
        # heard from the leader for at least that long (a follower in touch can say 0 ms,
        # seen in CI: not past max_stale), so it is asked again of the leader (through
        # the follower, without ?stale), which answers once it runs again: LastContact 0.
        time.sleep(0.15)
        assert ids(source.resolve("web", timeout=10)) == {"web-1"}
        stats = source.watch_stats("web")
        assert stats is not None and stats.last_contact == 0.0
    assert routing.status().leader_reads >= 1


@contextlib.contextmanager
def leader_paused(leader: ConsulAgent, seconds: float) -> Iterator[None]:
    """SIGSTOP ``leader`` now and SIGCONT it ``seconds`` later (or on leaving, at the
    latest): shorter than an election timeout, so it is still the leader after."""
    pid = leader.pid
    assert pid is not None, f"{leader.name} is not running"
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    resume.start()
    try:
        yield
    finally:
        resume.cancel()
        os.kill(pid, signal.SIGCONT)


# -- the config client's KV watch and CLI ----------------------------------------------


def test_the_kv_watch_and_the_config_cli_follow_the_list(healed: ConsulCluster) -> None:
    cluster = healed
    conn = connection(cluster)
    write(cluster.servers[0], "/v1/kv/config/agentless/greeting", "hi")
    client = ConfigClient(Layers("agentless"), connection=conn).start(fail_fast=True)
    try:
        assert client.get("greeting") == "hi"
        in_use = client._store._routing.status().current  # type: ignore[union-attr]
        agent_of(cluster, in_use).kill()
        survivor = next(iter(cluster.running()))
        write(survivor, "/v1/kv/config/agentless/greeting", "hello")
        wait_until(lambda: client.get("greeting") == "hello", 30, "the new value")
    finally:
        client.close()
    out = io.StringIO()
    addresses = ",".join(a.address for a in cluster.servers)  # one of them is down
    status = config_cli.main(
        ["--consul", addresses, "get", "--service", "agentless", "greeting"], out
    )
    assert status == 0 and "hello" in out.getvalue()
