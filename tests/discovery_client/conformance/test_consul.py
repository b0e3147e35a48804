"""What Consul says, and what happens when it cannot say it, the same through every
transport (and so both sources: the threaded ConsulSource under requests and httpx, the
asyncio AsyncConsulSource under httpx-async): stale-on-error, self-preservation through
an agent restart, a refused token, an answer emptied by ACLs, a first failure cached
instead of asked again per call, and the watch's error count.

Real agents throughout (a dev agent; an ACL agent with default deny). The cached first
failure is counted by a forwarding proxy in front of the real agent.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from consul_discovery.client import (
    ConsulPermissionError,
    ServiceConfig,
    UnknownServiceError,
)
from consul_discovery.connection import ConsulConnection
from tests.discovery_client.conformance.conftest import register
from tests.harness.acl import MANAGEMENT_HEADERS, create_token, running_acl_agent
from tests.harness.agent import ConsulAgent

ROUND_ROBIN = ServiceConfig(policy="round_robin")


def test_calls_keep_working_from_the_cached_set_while_the_agent_is_down(consul_agent, procs, make):
    for n, proc in enumerate(procs):
        register(consul_agent, "stale", f"stale-{n}", proc.port)
    caller = make(on=consul_agent, services={"stale": ROUND_ROBIN})
    assert caller.call("stale").status == 200
    consul_agent.stop()
    caller.until(lambda: caller.stats().target("stale").stale, 10, "the set to be marked stale")
    # Every call answered, by every instance of the cached set (each failed poll may
    # deliver the stale set anew, and a new picker starts round robin at a random offset).
    seen = Counter(caller.call("stale").instance for _ in range(12))
    assert set(seen) == {"proc-0", "proc-1", "proc-2"} and sum(seen.values()) == 12
    stats = caller.stats().target("stale")
    assert stats.error and stats.cache_age is not None and stats.cache_age > 0
    # The watch counts what failed while the agent was down.
    caller.until(lambda: (caller.stats().target("stale").watch or _NO_WATCH).errors >= 1, 10,
                 "the watch to count a failed query")  # fmt: skip


class _NoWatch:
    errors = 0


_NO_WATCH = _NoWatch()


def test_an_agent_restarting_empty_takes_no_instance_away_within_the_grace(
    consul_agent, procs, make
):
    for n, proc in enumerate(procs):
        register(consul_agent, "kept", f"kept-{n}", proc.port)
    config = ServiceConfig(policy="round_robin", vanish_grace=30.0)
    caller = make(on=consul_agent, services={"kept": config})
    assert caller.call("kept").status == 200
    consul_agent.restart()  # a dev agent comes back without any registration
    caller.until(lambda: len(caller.stats().target("kept").held) == 3, 20,
                 "the vanished instances to be held on trust")  # fmt: skip
    seen = Counter(caller.call("kept").instance for _ in range(12))
    assert set(seen) == {"proc-0", "proc-1", "proc-2"}  # nothing failed, nothing lost
    for n, proc in enumerate(procs):  # the registrars put them back
        register(consul_agent, "kept", f"kept-{n}", proc.port)
    caller.until(lambda: not caller.stats().target("kept").held, 20, "Consul to vouch again")
    assert caller.stats().target("kept").stale is False


# ---- ACLs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_agent() -> Iterator[ConsulAgent]:
    """A dev agent with ACLs on, default deny; ``alpha`` registered with the management token."""
    with running_acl_agent(name="acl") as agent:
        body = {"ID": "alpha-0", "Name": "alpha", "Address": "127.0.0.1", "Port": 1,
                "Check": {"TTL": "1h", "Status": "passing"}}  # fmt: skip
        url = f"{agent.url}/v1/agent/service/register"
        requests.put(url, json=body, headers=MANAGEMENT_HEADERS, timeout=5).raise_for_status()
        yield agent


def _connection(agent: ConsulAgent, token: str) -> ConsulConnection:
    return ConsulConnection.from_env({}, address=agent.address, token=token)


def test_a_refused_token_is_a_permission_error_not_no_instances(acl_agent, make):
    unknown = str(uuid.uuid4())  # Consul answers 403 "ACL not found"
    caller = make(on=acl_agent, connection=_connection(acl_agent, unknown))
    with pytest.raises(ConsulPermissionError) as caught:
        caller.call("alpha")
    assert unknown not in str(caught.value)  # the token never shows


def test_an_answer_emptied_by_acls_is_a_permission_error_not_no_instances(acl_agent, make):
    # service:read on alpha but no node:read: Consul filters every entry out and says so.
    token = create_token(acl_agent, rules='service "alpha" { policy = "read" }')
    caller = make(on=acl_agent, connection=_connection(acl_agent, token))
    with pytest.raises(ConsulPermissionError, match="ACL"):
        caller.call("alpha")
    assert token not in repr(caller.stats())


# ---- a first failure is cached, not asked again per call ----------------------------


class _Counting(BaseHTTPRequestHandler):
    """Forwards GETs to the real agent, counting them by path."""

    upstream = ""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            self.counts[self.path.split("?")[0]] += 1
        headers = {k: v for k, v in self.headers.items() if k.lower().startswith("x-consul")}
        try:
            answer = requests.get(self.upstream + self.path, headers=headers, timeout=60)
        except requests.RequestException:
            self.send_error(502)
            return
        body = answer.content
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def counting(agent: ConsulAgent) -> Iterator[tuple[str, Counter[str]]]:
    """(address, counts by path) of a proxy in front of the module's agent."""
    handler = type("Counting", (_Counting,), {"upstream": agent.url, "counts": Counter()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler.counts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_failed_first_resolve_is_cached_not_asked_again_per_call(counting, make):
    address, counts = counting
    caller = make(address=address)
    callers, rounds = 20, 16

    def one(_n: int) -> str:
        try:
            caller.call("nosuch")
        except UnknownServiceError as exc:
            return type(exc).__name__
        return "answered"

    with ThreadPoolExecutor(callers) as pool:
        for _ in range(rounds):  # 320 calls over more than 1.6 s
            assert set(pool.map(one, range(callers))) == {"UnknownServiceError"}
            time.sleep(0.1)
    health = counts["/v1/health/service/nosuch"]
    # One watch asks again with backoff (0.25 s, doubling): a handful of queries in all.
    # A source that forgets the failure asks again for every round of calls at least.
    assert 1 <= health <= rounds // 2, (health, dict(counts))
