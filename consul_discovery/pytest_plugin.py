"""pytest fixtures that run a real Consul agent for your tests (opt-in, never auto-loaded).

Load it with ``pytest -p consul_discovery.pytest_plugin``, or in your top-level
``conftest.py``::

    pytest_plugins = ["consul_discovery.pytest_plugin"]

Fixtures (each test gets its own agent on free loopback ports, stopped by PID after it):

``consul_agent``             a started dev agent (state in memory: ``restart()`` comes
                             back empty)
``consul_agent_persistent``  a started single server with a data dir
                             (``restart()`` keeps registrations and KV)
``consul_agent_unstarted``   a dev agent with its ports reserved, not started ("Consul
                             is down"; ``start()`` it later)
``consul_connection``        a ``ConsulConnection`` to ``consul_agent``
``consul_client``            a py-consul ``Consul`` client for ``consul_agent``
``consul_instances``         ``ConsulInstances`` on ``consul_agent``: register instances
                             (TTL or HTTP checks), flip their health, maintenance;
                             every one is deregistered after the test

The agent binary is ``$CONSUL_BIN``, else a ``consul`` 1.17+ on PATH, else the pinned
build cached by the repository's ``make consul``; without one, a test using these
fixtures errors with a message saying how to get one (it is never skipped).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from consul_discovery.connection import ConsulConnection
from consul_discovery.extras import missing
from consul_discovery.testing.agent import ConsulAgent
from consul_discovery.testing.binary import ConsulBinaryMissing
from consul_discovery.testing.instances import ConsulInstances

try:
    import pytest
except ImportError as exc:
    raise missing(__name__, "testing", exc) from exc

if TYPE_CHECKING:
    import consul


@contextmanager
def _started(agent: ConsulAgent) -> Iterator[ConsulAgent]:
    """Start ``agent``, hand it out, and stop it and remove its files afterwards."""
    try:
        missing_binary = None
        try:
            agent.start()
        except ConsulBinaryMissing as exc:
            missing_binary = str(exc)
        if missing_binary is not None:  # failed outside the except: the message once
            pytest.fail(missing_binary, pytrace=False)
        yield agent
    finally:
        agent.cleanup()


@pytest.fixture
def consul_agent() -> Iterator[ConsulAgent]:
    """A fresh single-node dev agent (UI on) on free loopback ports."""
    with _started(ConsulAgent()) as agent:
        yield agent


@pytest.fixture
def consul_agent_persistent() -> Iterator[ConsulAgent]:
    """A single Consul server with a data dir: ``restart()`` keeps its state."""
    with _started(ConsulAgent(name="server", mode="server")) as agent:
        yield agent


@pytest.fixture
def consul_agent_unstarted() -> Iterator[ConsulAgent]:
    """A dev agent with ports reserved but not yet started (for 'Consul is down' tests)."""
    agent = ConsulAgent()
    try:
        yield agent
    finally:
        agent.cleanup()


@pytest.fixture
def consul_connection(consul_agent: ConsulAgent) -> ConsulConnection:
    """A ConsulConnection to the ``consul_agent`` fixture's agent."""
    return consul_agent.connection()


@pytest.fixture
def consul_client(consul_agent: ConsulAgent) -> consul.Consul:
    """A py-consul client bound to the ``consul_agent`` fixture."""
    return consul_agent.client()


@pytest.fixture
def consul_instances(consul_agent: ConsulAgent) -> Iterator[ConsulInstances]:
    """Register instances in ``consul_agent`` and flip their health; removed afterwards."""
    with ConsulInstances(consul_agent.connection()) as instances:
        yield instances
