"""Real processes for benchmarks: a Consul dev agent and catalog fill-up, stopped by PID.

Benchmarks reuse the project's test harness (tests/harness/) for real processes: the
Consul agent and the gunicorn backends. Everything here is a context manager whose
``finally`` stops what it started, so Ctrl-C or an error leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from tests.harness.agent import ConsulAgent


@contextlib.contextmanager
def consul_agent() -> Iterator[ConsulAgent]:
    """A started single-node dev agent on free loopback ports; removed afterwards."""
    agent = ConsulAgent(name="bench")
    try:
        agent.start()
        yield agent
    finally:
        agent.cleanup()


def register_instances(
    agent: ConsulAgent, service: str, count: int, *, ttl_check: bool = False, first_port=20000
) -> list[str]:
    """Register ``count`` catalog-only instances of ``service`` (nothing listens); ids back.

    ``ttl_check`` gives each a passing TTL check (1 h) that the caller can flip.
    """
    client = agent.client()
    ids = [f"{service}-{n}" for n in range(count)]

    def one(n: int) -> None:
        check = {"TTL": "1h", "Status": "passing"} if ttl_check else None
        client.agent.service.register(
            service, service_id=ids[n], address="127.0.0.1", port=first_port + n, check=check
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(count)))
    return ids


def deregister_all(agent: ConsulAgent, ids: Sequence[str]) -> None:
    """Deregister the given service ids from the agent."""
    client = agent.client()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(client.agent.service.deregister, ids))


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
