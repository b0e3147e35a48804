"""Fixtures for the mesh tests: Connect agents, connections, CA rotation, mesh callers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.mesh import MeshAdapter, ServiceIdentity
from tests.harness import drills
from tests.harness.agent import ConsulAgent
from tests.harness.connect import connect_agent

#: Quick pacing for watches in tests (the blocking wait stays real).
FAST = WatchTiming(wait=5.0, min_interval=0.05, min_change_interval=0.01, backoff_base=0.05,
                   backoff_cap=0.5)  # fmt: skip


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    """A dev agent (Connect on, ACLs off: the default intention policy is allow)."""
    with connect_agent() as running:
        yield running


@pytest.fixture(scope="module")
def deny_agent() -> Iterator[ConsulAgent]:
    """A dev agent whose default intention policy is deny (what production runs)."""
    with connect_agent(default_intention_policy="deny") as running:
        yield running


def connection(agent: ConsulAgent, token: str | None = None) -> ConsulConnection:
    """A ConsulConnection to ``agent`` (nothing from the environment)."""
    return ConsulConnection.from_env({}, address=agent.address, token=token)


def identity(agent: ConsulAgent, service: str, token: str | None = None) -> ServiceIdentity:
    """A started, ready ServiceIdentity of ``service`` (close it after)."""
    return ServiceIdentity(service, connection(agent, token), timing=FAST).start().wait_ready()


def mesh_session(ident: ServiceIdentity, target: str) -> requests.Session:
    """A requests Session calling ``target`` as ``ident`` over mesh TLS."""
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", MeshAdapter(ident.client_tls, target))
    return session


def rotate_ca(agent: ConsulAgent) -> None:
    """Rotate the Connect CA to a new private key (Consul cross-signs the new root)."""
    drills.rotate_connect_ca(connection(agent))


def active_root(agent: ConsulAgent) -> str:
    """The ID of the active CA root."""
    return str(
        requests.get(f"{agent.url}/v1/agent/connect/ca/roots", timeout=5).json()["ActiveRootID"]
    )
