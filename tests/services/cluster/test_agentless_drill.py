"""Agentless under load: the gateway reads Consul through the three servers' list (no
client agent between them), and the server it reads from is killed (kill -9) while
open-loop load runs through it: 0 failed requests, no duplicate order, three runs with
a follower in use and three with the leader in use.

The secure profile (ACLs, TLS): the gateway gets every server's HTTPS address in
``CONSUL_HTTP_ADDR`` (its registrar registers with the first one; its discovery client
spreads and fails over); every other instance reads through its host's client agent.
Figures per run: requests, failed, p99, the gateway's own switch time (its log line),
when it was seen connected to another server, and, for the leader, the election.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.cluster import control
from services.cluster.plan import ClusterPlan
from tests.harness import agentless, drills
from tests.harness.sockets import established_peers, process_tree

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

RATE = 16.0  # requests per second through the gateway during each drill
SECONDS = 20.0  # per drill; bounded: RATE * SECONDS requests
RUNS = 3  # per role


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    """The secure cluster with an agentless gateway (consistent reads, the default)."""
    with agentless.agentless_cluster(tmp_path_factory.mktemp("agentless"), "gateway") as plan:
        yield plan


@pytest.fixture(scope="module")
def load(cluster: ClusterPlan) -> drills.GatewayLoad:
    return drills.GatewayLoad(cluster)


def test_the_gateway_reads_from_the_servers_and_no_agent(
    cluster: ClusterPlan, load: drills.GatewayLoad
) -> None:
    pid = control.program_pid(cluster, agentless.gateway(cluster))
    assert pid is not None
    agentless.wait_in_use(cluster, agentless.gateway(cluster))
    consul_peers = {
        host for (host, port) in established_peers(process_tree(pid))
        if port == cluster.consul.https
    }  # fmt: skip
    assert consul_peers and consul_peers <= set(cluster.server_hosts), consul_peers


@pytest.mark.parametrize("run", range(1, RUNS + 1))
@pytest.mark.parametrize("role", ["follower", "leader"])
def test_drill_kill_the_server_the_gateway_reads_from(
    cluster: ClusterPlan, load: drills.GatewayLoad, role: str, run: int
) -> None:
    result = agentless.kill_in_use_under_load(cluster, load, role, f"#{run}", RATE, SECONDS)
    # A follower's survivors answer at once; after the leader, every survivor refuses
    # consistent reads until they elect one (~2-3 s): the gateway keeps its sets.
    assert result.figures["switch_ms"] < (15_000 if role == "leader" else 1_000)
