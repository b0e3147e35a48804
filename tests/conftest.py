"""Shared fixtures: the library's pytest plugin (a real Consul agent per test, stopped by
PID afterwards) plus the project's own (a 3-server cluster).

Every process a run starts carries the run's mark and is stopped when the run ends, even
a run killed with SIGKILL (consul_discovery.testing.lifeline).

The plugin (``consul_discovery.pytest_plugin``) brings ``consul_agent``,
``consul_agent_persistent``, ``consul_agent_unstarted``, ``consul_connection``,
``consul_client`` and ``consul_instances``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from consul_discovery.testing import lifeline
from tests.harness.binary import ConsulBinaryMissing, consul_binary
from tests.harness.cluster import ConsulCluster

pytest_plugins = ["consul_discovery.pytest_plugin", "pytester"]


def pytest_configure(config: pytest.Config) -> None:
    """Mark the run and launch its watchdog (consul_discovery.testing.lifeline): whatever
    the run starts is stopped when it ends, even killed with SIGKILL. An xdist worker, or
    a pytest a test runs, belongs to the run already."""
    lifeline.mark_run()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Resolve (or build) the Consul binary once, up front, so a missing Consul fails the
    run loudly; export it as CONSUL_BIN for the plugin's agents."""
    try:
        os.environ["CONSUL_BIN"] = consul_binary()
    except ConsulBinaryMissing as exc:
        pytest.exit(str(exc), returncode=3)


#: ``make test`` runs two pytest-xdist workers. A module's tests stay on one worker (its
#: module-scoped agent or cluster is made once); the example cluster's modules are one
#: unit on one worker, one after another (two clusters at once would put 40 processes
#: and two fault drills on two cores); the longest units are handed out first.
_CLUSTER = "tests/services/cluster/"
_LONG_FIRST = ("tests/bench/", "tests/packaging/", "tests/services/test_fuzz.py")


def _unit(nodeid: str) -> str:
    """The scheduling unit of a test: its module, or the example cluster's one unit."""
    path = nodeid.split("::", 1)[0]
    return "example-cluster" if path.startswith(_CLUSTER) else path


#: Tests whose figure is a latency or a timing under load: a second worker beside them
#: is noise they cannot tell from a defect (seen: a slow instance's share, a CA
#: rotation's deadline). Marked ``alone``; ``make test`` runs them after the others, in
#: one process.
_ALONE = (
    "tests/discovery_client/conformance/test_load.py",
    "tests/mesh/test_rotation.py",
    "tests/mesh/test_identity.py::test_a_ca_rotation_reaches_the_identity_without_a_restart",
    "tests/config_client/test_live.py::test_a_put_propagates_within_100ms_p99",
    "tests/services/cluster/test_dependency_outage.py",  # a p99 bound on the fast 503
)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by the marks added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the ``_ALONE`` tests; order the example cluster's modules first, then the
    longest modules (stable: each module keeps its own order), so that no worker is left
    alone with a long unit at the end."""
    for item in items:
        if item.nodeid.startswith(_ALONE):
            item.add_marker(pytest.mark.alone)

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith(_CLUSTER):
            return 0
        return 1 if path.startswith(_LONG_FIRST) else 2

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule by ``_unit`` in collection order (xdist's own ``loadgroup`` marks do not
    reach its scheduler under pytest 9, which no longer reads ``Item._nodeid``)."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # keep the order above, not by test count
    return UnitScheduling(config, log)


@pytest.fixture
def consul_cluster() -> Iterator[ConsulCluster]:
    """Three Consul servers on loopback with a leader elected."""
    cluster = ConsulCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
