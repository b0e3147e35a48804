"""Real processes for benchmarks: a Consul dev agent and catalog fill-up, stopped by PID.

Benchmarks reuse the project's test harness (tests/harness/) for real processes: the
Consul agent and the gunicorn backends. Everything here is a context manager whose
``finally`` stops what it started, so Ctrl-C or an error leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.harness import backends as harness
from tests.harness.agent import ConsulAgent
from tests.harness.backends import Backend


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends (so a teardown finishes), then raise it.

    Only the main thread receives signals; elsewhere the block just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous or signal.default_int_handler)
        if caught:
            raise KeyboardInterrupt


@contextlib.contextmanager
def consul_agent() -> Iterator[ConsulAgent]:
    """A started single-node dev agent on free loopback ports; removed afterwards."""
    agent = ConsulAgent(name="bench")
    try:
        agent.start()
        yield agent
    finally:
        with sigint_deferred():
            agent.cleanup()


@contextlib.contextmanager
def start_backends(
    agent: ConsulAgent, service: str, count: int, **kwargs: Any
) -> Iterator[list[Backend]]:
    """The harness's ``start_backends``, with its teardown shielded from Ctrl-C."""
    manager = harness.start_backends(agent, service, count, **kwargs)
    started = manager.__enter__()
    try:
        yield started
    except BaseException:
        with sigint_deferred():
            if not manager.__exit__(*sys.exc_info()):
                raise
    else:
        with sigint_deferred():
            manager.__exit__(None, None, None)


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
