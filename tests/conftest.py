"""Shared fixtures: a real Consul agent (or cluster) per test, stopped by PID afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import consul
import pytest

from tests.harness.agent import ConsulAgent, running_agent
from tests.harness.binary import ConsulBinaryMissing, consul_binary
from tests.harness.cluster import ConsulCluster


def pytest_sessionstart(session: pytest.Session) -> None:
    """Resolve the Consul binary once, up front, so a missing Consul fails the run loudly."""
    try:
        consul_binary()
    except ConsulBinaryMissing as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture
def consul_agent() -> Iterator[ConsulAgent]:
    """A fresh single-node dev agent with the UI on, on free loopback ports."""
    with running_agent() as agent:
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
def consul_client(consul_agent: ConsulAgent) -> consul.Consul:
    """A py-consul client bound to the ``consul_agent`` fixture."""
    return consul_agent.client()


@pytest.fixture
def consul_cluster() -> Iterator[ConsulCluster]:
    """Three Consul servers on loopback with a leader elected."""
    cluster = ConsulCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
