"""Two WAN-federated datacenters on loopback: the agents' layout and generated configs.

Each datacenter ``dcN`` has one server (``127.0.N.11``) and one client agent, the "host"
its instances register with (``127.0.N.2``), all sharing one set of ports (each agent
has its own address). The dc2 server joins dc1's over the WAN (``retry_join_wan``).
Every agent translates addresses for other datacenters (``translate_wan_addrs``), so a
health query for ``?dc=dc2`` asked of a dc1 agent answers with the WAN address an
instance (``Service.TaggedAddresses.wan``) or its node (``advertise_addr_wan``) gives.
Client agents carry a locality (region = their datacenter, zone ``<dc>-a``), which
their instances inherit (``Node.Locality``).

This is the lean shape (no ACLs, no TLS, one server per datacenter; why it is not the
secure profile twice: the README's multi-dc section). The test harness
(``tests/harness/multi_dc.py``) builds its agents from here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.cluster.plan import ClusterPlan

DATACENTERS = ("dc1", "dc2")


@dataclass(frozen=True, slots=True)
class DcPorts:
    """The ports every agent of the federation listens on (each on its own address)."""

    http: int
    dns: int
    serf_lan: int
    serf_wan: int
    server: int

    def all(self) -> tuple[int, ...]:
        """Every port, for a check that they are free."""
        return (self.http, self.dns, self.serf_lan, self.serf_wan, self.server)


@dataclass(frozen=True, slots=True)
class DcAgent:
    """One agent of the federation: its node name, datacenter, address and role."""

    name: str
    datacenter: str
    host: str
    server: bool

    @property
    def zone(self) -> str:
        """The locality zone of a client agent ('' for a server)."""
        return "" if self.server else f"{self.datacenter}-a"


def federation(base: str = "127.0") -> list[DcAgent]:
    """dc1 and dc2: a server on ``<base>.N.11`` and a client agent on ``<base>.N.2`` each."""
    agents = []
    for n, dc in enumerate(DATACENTERS, start=1):
        agents.append(DcAgent(f"{dc}-server", dc, f"{base}.{n}.11", server=True))
        agents.append(DcAgent(f"{dc}-host", dc, f"{base}.{n}.2", server=False))
    return agents


def agent_config(
    agent: DcAgent, agents: list[DcAgent], ports: DcPorts, data_dir: Path
) -> dict[str, Any]:
    """One agent's whole config (JSON, which Consul reads like HCL)."""
    servers = {a.datacenter: a for a in agents if a.server}
    own_server = servers[agent.datacenter]
    config: dict[str, Any] = {
        "datacenter": agent.datacenter,
        "primary_datacenter": DATACENTERS[0],
        "node_name": agent.name,
        "bind_addr": agent.host,
        "client_addr": agent.host,
        "advertise_addr": agent.host,
        "advertise_addr_wan": agent.host,
        "translate_wan_addrs": True,
        "data_dir": str(data_dir),
        "server": agent.server,
        "retry_join": [f"{own_server.host}:{ports.serf_lan}"],
        "retry_interval": "1s",
        "ports": {
            "http": ports.http,
            "https": -1,
            "dns": ports.dns,
            "grpc": -1,
            "grpc_tls": -1,
            "serf_lan": ports.serf_lan,
            "serf_wan": ports.serf_wan,
            "server": ports.server,
        },
        "log_level": "INFO",
        "disable_update_check": True,
        "enable_script_checks": False,
        "leave_on_terminate": False,
        "skip_leave_on_interrupt": True,
        "performance": {"raft_multiplier": 1},
    }
    config["ui_config"] = {"enabled": True}  # dc1's host serves the profile's UI
    if agent.server:
        config["bootstrap_expect"] = 1
        primary = servers[DATACENTERS[0]]
        if agent.datacenter != primary.datacenter:
            config["retry_join_wan"] = [f"{primary.host}:{ports.serf_wan}"]
            config["retry_interval_wan"] = "1s"
    else:
        config["locality"] = {"region": agent.datacenter, "zone": agent.zone}
    return config


def write_agent_config(
    agent: DcAgent, agents: list[DcAgent], ports: DcPorts, agent_dir: Path
) -> Path:
    """Write one agent's config under ``agent_dir`` (its data dir next to it); its path."""
    agent_dir.mkdir(parents=True, exist_ok=True)
    path = agent_dir / "agent.json"
    config = agent_config(agent, agents, ports, agent_dir / "data")
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def config_file(plan: ClusterPlan, agent_name: str) -> Path:
    """Where the multi-dc profile keeps one agent's generated config."""
    return plan.run_dir / "consul" / agent_name / "agent.json"


def prepare(plan: ClusterPlan) -> None:
    """Fresh configs and empty data dirs for the multi-dc profile's four agents."""
    agents = plan.dc_agents()
    for agent in agents:
        agent_dir = config_file(plan, agent.name).parent
        shutil.rmtree(agent_dir, ignore_errors=True)  # a new cluster: no old Raft state
        write_agent_config(agent, agents, plan.dc_ports(), agent_dir)
