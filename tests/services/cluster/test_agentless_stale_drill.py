"""The leader-kill variant with stale reads: the agentless gateway reads with ``?stale``
(``CONSUL_DISCOVERY_STALE=true``), so a follower answers at once while the survivors
elect a new leader; the server it reads from is the leader and is killed under
open-loop load: 0 failed requests, the switch in milliseconds (three runs).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.cluster.plan import ClusterPlan
from tests.harness import agentless, drills

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

RATE = 16.0  # requests per second through the gateway during each drill
SECONDS = 20.0  # per drill
RUNS = 3


@pytest.fixture(scope="module")
def stale_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    """The secure cluster with an agentless gateway reading stale."""
    with agentless.agentless_cluster(
        tmp_path_factory.mktemp("agentless-stale"),
        "gateway",
        extra=(("gateway", "CONSUL_DISCOVERY_STALE", "true"),),
    ) as plan:
        yield plan


@pytest.fixture(scope="module")
def stale_load(stale_cluster: ClusterPlan) -> drills.GatewayLoad:
    return drills.GatewayLoad(stale_cluster)


@pytest.mark.parametrize("run", range(1, RUNS + 1))
def test_drill_kill_the_leader_the_gateway_reads_stale_from(
    stale_cluster: ClusterPlan, stale_load: drills.GatewayLoad, run: int
) -> None:
    result = agentless.kill_in_use_under_load(
        stale_cluster, stale_load, "leader", f"stale #{run}", RATE, SECONDS
    )
    assert result.figures["switch_ms"] < 1_000
