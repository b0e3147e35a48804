"""Shared fixtures: the library's pytest plugin (a real Consul agent per test, stopped by
PID afterwards) plus the project's own (a 3-server cluster).

The plugin (``consul_discovery.pytest_plugin``) brings ``consul_agent``,
``consul_agent_persistent``, ``consul_agent_unstarted``, ``consul_connection``,
``consul_client`` and ``consul_instances``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.binary import ConsulBinaryMissing, consul_binary
from tests.harness.cluster import ConsulCluster

pytest_plugins = ["consul_discovery.pytest_plugin", "pytester"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Resolve (or build) the Consul binary once, up front, so a missing Consul fails the
    run loudly; export it as CONSUL_BIN for the plugin's agents."""
    try:
        os.environ["CONSUL_BIN"] = consul_binary()
    except ConsulBinaryMissing as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture
def consul_cluster() -> Iterator[ConsulCluster]:
    """Three Consul servers on loopback with a leader elected."""
    cluster = ConsulCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
