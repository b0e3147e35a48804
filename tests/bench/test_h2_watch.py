"""The facts the connection-budget design stands on, against a real agent (bench/h2_watch.py).

Consul's HTTPS API speaks HTTP/2; many long polls share one connection, which counts
once towards ``http_max_conns_per_client`` while the same polls over HTTP/1.1 are
refused past it; and the prototype ``H2Source`` hands each watch its answer the
moment Consul sends it, also when other streams of the connection are still waiting
(httpx' HTTP/2 did not). A Consul upgrade or a client change that breaks any of these
breaks the design, so they are pinned here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from bench.budget_env import established
from bench.h2_watch import H2Source, Relay
from consul_discovery.client import Resolution
from consul_discovery.client.instance import Instance
from tests.harness.tls_agent import TlsDevAgent

LIMIT = 5
SERVICES = [f"h2-{n}" for n in range(12)]  # more long polls than the limit allows


@pytest.fixture(scope="module")
def agent() -> Iterator[TlsDevAgent]:
    tls_agent = TlsDevAgent(name="h2", limits={"http_max_conns_per_client": LIMIT})
    try:
        tls_agent.start()
        client = tls_agent.client()
        for name in SERVICES:
            client.agent.service.register(
                name, service_id=f"{name}-0", address="127.0.0.1", port=20000,
                check={"TTL": "1h", "Status": "passing"},
            )  # fmt: skip
        client.http.session.close()
        yield tls_agent
    finally:
        tls_agent.cleanup()


class Sets:
    """Listener: every instance set per service, with when it arrived."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.got: list[tuple[str, float, Resolution]] = []  # watch threads append

    def __call__(self, resolution: Resolution) -> None:
        with self.cond:
            self.got.append((resolution.service, time.monotonic(), resolution))
            self.cond.notify_all()

    def wait_gone(self, service: str, mark: int, timeout: float) -> float:
        """When the first set after ``mark`` without any instance of ``service`` came."""

        def arrived() -> float | None:
            for name, at, res in self.got[mark:]:
                if name == service and not res.instances:
                    return at
            return None

        with self.cond:
            self.cond.wait_for(lambda: arrived() is not None, timeout)
            found = arrived()
        assert found is not None, f"{service}: no new set within {timeout}s"
        return found


def test_many_long_polls_share_one_http2_connection_and_each_answer_comes_at_once(agent):
    source = H2Source(agent.https_url, str(agent.ca_file), wait=30.0)
    sets = Sets()
    try:
        for name in SERVICES:
            source.subscribe(name, sets)
            source.resolve(name, timeout=10)
        time.sleep(0.5)  # every watch parked in its long poll
        assert established(agent.https_port) == 1  # 12 long polls, one TCP connection
        ttl = agent.client().agent.check
        for name in (SERVICES[3], SERVICES[9], SERVICES[0]):  # one at a time, others waiting
            with sets.cond:
                mark = len(sets.got)
            t0 = time.monotonic()
            ttl.ttl_fail(f"service:{name}-0")
            took = sets.wait_gone(name, mark, timeout=5.0) - t0
            # httpx' HTTP/2 left such answers waiting behind other streams for seconds
            assert took < 2.0, f"{name}'s answer took {took:.2f}s"
        assert all(source.watch_stats(n)["errors"] == 0 for n in SERVICES)
    finally:
        source.close()


def test_the_same_polls_over_http1_are_refused_past_the_limit(agent):
    index = requests.get(f"{agent.url}/v1/health/service/{SERVICES[0]}").headers["X-Consul-Index"]
    statuses: list[int] = []

    def poll() -> None:
        url = f"{agent.url}/v1/health/service/{SERVICES[0]}"
        statuses.append(requests.get(url, params={"index": index, "wait": "1s"}).status_code)

    threads = [threading.Thread(target=poll) for _ in range(LIMIT + 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert statuses.count(429) >= 3 and statuses.count(200) <= LIMIT


def test_the_relay_hands_every_worker_each_set():
    got: list[tuple[int, str, frozenset[str]]] = []
    done = threading.Event()

    def on_set(worker: int, service: str, ids: frozenset[str], _published: float) -> None:
        got.append((worker, service, ids))
        if len(got) == 3:
            done.set()

    relay = Relay(3, on_set)
    relay.publish(Resolution("svc", (Instance("a", "svc", "127.0.0.1", 1),), 1, 0.0))
    assert done.wait(5)
    assert sorted(got) == [(w, "svc", frozenset({"a"})) for w in range(3)]
