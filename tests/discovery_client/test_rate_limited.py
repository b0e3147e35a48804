"""A 429 episode against a real agent: the host's connection budget exhausted by the
test's own idle connections, while a client keeps calling, asks for new services and a
registrar starts. Nothing fails: the first resolves that meet a 429 retry within their
timeout, the registrar retries its registration, and the source says so in one line
(and one more when the agent answers again), not one per watch.
"""

from __future__ import annotations

import http.client
import logging
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from consul_discovery.client.client import ServiceClient
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.registry import Registrar, Registration
from consul_discovery.registry.health import PASSING, HealthReport
from tests.harness.backends import start_backends
from tests.harness.tls_agent import TlsDevAgent

LIMIT = 12
STEADY = ["rl-a", "rl-b"]
NEW = ["rl-c", "rl-d", "rl-e"]


@pytest.fixture
def agent() -> Iterator[TlsDevAgent]:
    limited = TlsDevAgent(name="limited", limits={"http_max_conns_per_client": LIMIT})
    try:
        limited.start()
        yield limited
    finally:
        limited.cleanup()


def exhaust(agent: TlsDevAgent) -> list[http.client.HTTPConnection]:
    """Open keep-alive connections from 127.0.0.1 until the agent answers 429."""
    held = []
    for _ in range(LIMIT + 1):
        conn = http.client.HTTPConnection("127.0.0.1", agent.ports.http, timeout=5)
        conn.request("GET", "/v1/agent/self")
        answer = conn.getresponse()
        answer.read()
        if answer.status == 429:
            conn.close()
            return held
        held.append(conn)
    raise AssertionError(f"no 429 after {LIMIT + 1} connections")


def registration(agent: TlsDevAgent, name: str) -> Registration:
    return Registration.from_env(
        {"SERVICE_NAME": name, "SERVICE_ID": f"{name}-1", "SERVICE_PORT": "9",
         "CONSUL_HTTP_ADDR": agent.address, "SERVICE_CHECK": "ttl",
         "SERVICE_CHECK_INTERVAL": "3s"}
    )  # fmt: skip


def passing() -> HealthReport:
    """The registrar's health function: always passing."""
    return HealthReport(PASSING)


def test_a_429_episode_fails_no_call_and_is_said_once(agent, caplog):
    caplog.set_level(logging.INFO, logger="consul_discovery")
    with start_backends(agent, "rl-a", 1, check="ttl") as backends:
        operator = agent.client()
        for name in ["rl-b", *NEW]:
            operator.agent.service.register(
                name, service_id=f"{name}-0", address="127.0.0.1", port=backends[0].port,
                check={"TTL": "1h", "Status": "passing"},
            )  # fmt: skip
        operator.http.session.close()  # the host's budget is the client's and the test's
        before = Registrar(registration(agent, "rl-before"), health=passing).start()
        source = ConsulSource(agent.address)
        client = ServiceClient(source=source, resolve_timeout=20.0)
        try:
            assert before.wait_registered(10)
            for name in STEADY:
                assert client.get(name, "/").status_code == 200
            held = exhaust(agent)  # the host is at its budget now
            started = time.monotonic()
            during = Registrar(registration(agent, "rl-during"), health=passing).start()
            statuses: list[int] = []
            with ThreadPoolExecutor(8) as pool:
                firsts = [pool.submit(client.get, name, "/") for name in NEW]
                steady = []
                while time.monotonic() - started < 2.5:  # calls go on meanwhile
                    steady.append(pool.submit(client.get, random.choice(STEADY), "/"))
                    time.sleep(0.05)
                assert not any(f.done() for f in firsts), "a first call did not meet the 429"
                for conn in held:
                    conn.close()  # the episode ends
                statuses = [f.result(timeout=30).status_code for f in [*firsts, *steady]]
            assert statuses == [200] * len(statuses)  # no failed call
            assert during.wait_registered(20) and during.error is None
            assert sum(source.watch_stats(name).rate_limited for name in NEW) >= len(NEW)
            said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                    and r.name == "consul_discovery.client.consul_source"]  # fmt: skip
            assert len(said) == 2, said  # one when it began, one when it ended
            assert "rate-limiting this host" in said[0]
            assert "answering this process again" in said[1]
            assert before.consul_errors == 0  # its kept-alive connection never met the limit
            during.close()
        finally:
            client.close()
            source.close()
            before.close()
