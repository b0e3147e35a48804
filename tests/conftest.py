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


#: Modules started first under ``make test``'s two workers (the longest, so that no
#: worker is left with a long module at the end); the example cluster's modules form one
#: group on one worker, one after another: two clusters at once would put 40 processes
#: and two fault drills on two cores.
_CLUSTER = "tests/services/cluster/"
_LONG_FIRST = ("tests/bench/", "tests/packaging/", "tests/services/test_fuzz.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests for pytest-xdist's ``--dist loadgroup`` (``make test`` runs two
    workers): a module's tests stay on one worker (its module-scoped agent or cluster is
    made once), the example cluster's modules all on one worker, started first."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith(_CLUSTER):
            return 0
        return 1 if path.startswith(_LONG_FIRST) else 2

    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = "example-cluster" if path.startswith(_CLUSTER) else path
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture
def consul_cluster() -> Iterator[ConsulCluster]:
    """Three Consul servers on loopback with a leader elected."""
    cluster = ConsulCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
