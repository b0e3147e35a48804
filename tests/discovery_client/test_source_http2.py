"""Both sources over HTTP/2 to a real TLS agent whose per-client limit is 8 connections.

Consul's HTTPS API speaks HTTP/2 (ALPN); every long poll of a process is a stream of one
connection, which the agent counts once towards ``http_max_conns_per_client`` while the
same polls over HTTP/1.1 are refused past it. Pinned here with 21 watches (one of a
service of 300 instances, an answer of ~400 KiB: flow control for real): all answered,
one connection, each change delivered the moment Consul sends it while the other
streams keep waiting (httpx' own HTTP/2 left such answers behind other streams).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from bench.budget_env import established
from consul_discovery.client.aio import AsyncConsulSource
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.instance import Resolution
from consul_discovery.connection import ConsulConnection
from tests.harness.tls_agent import TlsDevAgent

LIMIT = 8
SERVICES = [f"h2-{n}" for n in range(20)]
BIG, BIG_SIZE = "h2-big", 300


@pytest.fixture(scope="module")
def agent() -> Iterator[TlsDevAgent]:
    tls_agent = TlsDevAgent(name="h2", limits={"http_max_conns_per_client": LIMIT})
    try:
        tls_agent.start()
        client = tls_agent.client()
        for name in SERVICES:
            for n in range(2):
                client.agent.service.register(
                    name, service_id=f"{name}-{n}", address="127.0.0.1", port=20000 + n,
                    check={"TTL": "1h", "Status": "passing"},
                )  # fmt: skip
        for n in range(BIG_SIZE):
            client.agent.service.register(
                BIG, service_id=f"{BIG}-{n}", address="127.0.0.1", port=30000 + n,
                meta={"padding": "x" * 200}, check={"TTL": "1h", "Status": "passing"},
            )  # fmt: skip
        client.http.session.close()
        yield tls_agent
    finally:
        tls_agent.cleanup()


def tls(agent: TlsDevAgent) -> ConsulConnection:
    return ConsulConnection.from_env({}, address=agent.https_url, ca_file=str(agent.ca_file))


class Sets:
    """Listener: every set per service, with when it arrived (loop thread appends)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.got: list[tuple[str, float, Resolution]] = []

    def __call__(self, resolution: Resolution) -> None:
        with self.cond:
            self.got.append((resolution.service, time.monotonic(), resolution))
            self.cond.notify_all()

    def wait_without(self, service: str, instance: str, mark: int, timeout: float) -> float:
        """When the first set of ``service`` after ``mark`` without ``instance`` came."""

        def arrived() -> float | None:
            for name, at, res in self.got[mark:]:
                if name == service and instance not in {i.id for i in res.instances}:
                    return at
            return None

        with self.cond:
            self.cond.wait_for(lambda: arrived() is not None, timeout)
            found = arrived()
        assert found is not None, f"{service}: no set without {instance} within {timeout}s"
        return found


def test_every_watch_of_a_process_is_a_stream_of_one_connection(agent):
    source = ConsulSource(connection=tls(agent), wait=30.0)
    sets = Sets()
    try:
        for name in [*SERVICES, BIG]:
            source.subscribe(name, sets)
            assert source.resolve(name, timeout=10).instances
        assert len(source.resolve(BIG).instances) == BIG_SIZE
        time.sleep(0.5)  # every watch parked in its long poll
        assert established(agent.https_port) == 1  # 21 long polls, one TCP connection
        ttl = agent.client().agent.check
        for name, victim in (("h2-3", "h2-3-1"), ("h2-17", "h2-17-0"), (BIG, f"{BIG}-42")):
            with sets.cond:
                mark = len(sets.got)
            started = time.monotonic()
            ttl.ttl_fail(f"service:{victim}")
            took = sets.wait_without(name, victim, mark, timeout=5.0) - started
            assert took < 2.0, f"{name}'s answer took {took:.2f}s"  # not behind other streams
            ttl.ttl_pass(f"service:{victim}")
        assert all(source.watch_stats(n).errors == 0 for n in [*SERVICES, BIG])
    finally:
        source.close()


def test_the_async_source_shares_one_connection_too(agent):
    async def main() -> int:
        async with AsyncConsulSource(connection=tls(agent)) as source:
            for name in SERVICES:
                await source.resolve(name, timeout=10)
            await asyncio.sleep(0.5)
            return await asyncio.to_thread(established, agent.https_port)

    assert asyncio.run(main()) == 1


def test_the_same_polls_over_http1_are_refused_past_the_limit(agent):
    url = f"{agent.url}/v1/health/service/{SERVICES[0]}"
    index = requests.get(url, timeout=5).headers["X-Consul-Index"]
    statuses: list[int] = []

    def poll() -> None:
        answer = requests.get(url, params={"index": index, "wait": "1s"}, timeout=10)
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=poll) for _ in range(LIMIT + 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert statuses.count(429) >= 3 and statuses.count(200) <= LIMIT
