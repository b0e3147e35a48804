"""The secure cluster profile on free ports: 3 servers, 2 client agents, ACLs, TLS, gossip.

The agents bind their own loopback addresses (servers 127.0.0.11-13, hosts 127.0.0.2-3)
and share one set of ports, chosen free on every address; the instances listen on
their host's address. Started and stopped through ``services.cluster.control``, by PID.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from consul_discovery.connection import ConsulConnection
from services.cluster import control, secure
from services.cluster.plan import AgentPlan, ClusterPlan
from tests.harness.cluster_ports import free_cluster_plan


def secure_plan(run_dir: Path, users: int = 2, orders: int = 2, **overrides: Any) -> ClusterPlan:
    """A secure-profile plan whose every (address, port) is free right now."""
    settings: dict[str, Any] = {
        "check_interval": "1s",
        "drain_seconds": 1.0,
        "profile": "secure",
        **overrides,
    }
    return free_cluster_plan(
        lambda ports: ClusterPlan(
            run_dir=run_dir, users=users, orders=orders, **{**ports, **settings}
        ),
        "secure test cluster",
    )


@contextmanager
def running_secure_cluster(run_dir: Path, **kwargs: Any) -> Iterator[ClusterPlan]:
    """Start a secure cluster, yield its plan once every instance passes, stop it by PID."""
    plan = secure_plan(run_dir, **kwargs)
    try:
        control.up(plan, timeout=90)
        yield plan
    finally:
        try:
            control.down(plan, timeout=60)
        finally:
            control.kill_everything(plan)


def connection(plan: ClusterPlan, token: str | None, host: str | None = None) -> ConsulConnection:
    """A CA-verified HTTPS connection to an agent (default: the first server) with ``token``.

    ``token`` names a token file of the cluster ('management', 'operator', a service or
    an agent), or is None for anonymous.
    """
    return secure.connection(plan, token, host=host)


def token(plan: ClusterPlan, name: str) -> str:
    """The secret of one of the cluster's tokens (for tests that must send it themselves)."""
    return plan.token_file(name).read_text().strip()


def wait_for_voters(plan: ClusterPlan, timeout: float = 60.0) -> None:
    """Wait until the servers agree on one leader and autopilot counts every one of them
    a healthy *voter*, so that any one may be killed and the rest still have a quorum.

    A server back from a kill may have been removed from Raft meanwhile (autopilot's
    dead-server cleanup) and rejoins as a non-voter until it has been stable for
    ``server_stabilization_time`` (10 s); ``/v1/status/peers`` lists it all the same.
    Killing the leader before then leaves one voter of two: no leader until the
    stabilization ends (seen: a drill's new leader after 15.5 s, another's never).
    """
    servers = [a for a in plan.agents() if a.server]
    conn = connection(plan, "management")
    deadline = time.monotonic() + timeout
    while True:
        leaders = {leader(plan, via=s) for s in servers}
        if len(leaders) == 1 and None not in leaders:
            with conn.session() as session:
                health = session.get(f"{conn.base_url}/v1/operator/autopilot/health", timeout=5)
            members = (health.json().get("Servers") or []) if health.ok else []
            if len([m for m in members if m.get("Voter") and m.get("Healthy")]) == len(servers):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the servers did not agree on a leader with {len(servers)} healthy voters "
                f"within {timeout}s"
            )
        time.sleep(0.2)


def leader(plan: ClusterPlan, via: AgentPlan | None = None) -> AgentPlan | None:
    """The server that leads now, as ``via`` (default: any running server) sees it."""
    candidates = [via] if via else [a for a in plan.agents() if a.server]
    for agent in candidates:
        conn = connection(plan, None, host=agent.host)
        try:
            with conn.session() as session:
                address = session.get(f"{conn.base_url}/v1/status/leader", timeout=2).json()
        except (requests.RequestException, ValueError):
            continue
        for server in plan.agents():
            if server.server and address and address.startswith(f"{server.host}:"):
                return server
    return None
