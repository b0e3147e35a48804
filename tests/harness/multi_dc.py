"""Two WAN-federated datacenters on loopback for failover tests: dc1 and dc2, each a
server and a client agent on its own address (``services.cluster.multi_dc``'s layout on
``127.1.N.x``), started and stopped by PID.

``running_federation()`` yields a ``Federation`` once both servers have a leader, both
client agents have joined, and each datacenter's agents see the other over the WAN.
``running_multi_dc_cluster()`` runs the whole ``PROFILE=multi-dc`` cluster (agents and
service instances under supervisord) on free ports.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import consul
import requests

from services.cluster import control
from services.cluster.multi_dc import DcAgent, DcPorts, federation, write_agent_config
from services.cluster.plan import ClusterPlan
from tests.harness.agent import AgentPorts, ConsulAgent
from tests.harness.binary import consul_binary
from tests.harness.cluster_ports import free_cluster_plan
from tests.harness.ports import block_bases, is_free

HARNESS_BASE = "127.1"  # addresses 127.1.N.x: apart from the cluster profiles' 127.0.x.x


@dataclass
class FederatedAgent(ConsulAgent):
    """A ConsulAgent of the federation: its own address and generated config file.

    ``dc_agent`` and ``config_file`` are set at creation; process fields as ConsulAgent's.
    """

    MODES: ClassVar[tuple[str, ...]] = ("server", "client")

    dc_agent: DcAgent | None = None
    config_file: Path | None = None

    @property
    def host(self) -> str:
        """The loopback address the agent binds."""
        assert self.dc_agent is not None
        return self.dc_agent.host

    @property
    def datacenter(self) -> str:
        """The agent's datacenter."""
        assert self.dc_agent is not None
        return self.dc_agent.datacenter

    @property
    def address(self) -> str:
        """``host:http``, as CONSUL_HTTP_ADDR wants it."""
        return f"{self.host}:{self.ports.http}"

    def client(self) -> consul.Consul:
        """A py-consul client for this agent."""
        return consul.Consul(host=self.host, port=self.ports.http)

    def command(self) -> list[str]:
        """``consul agent`` with the generated config."""
        return [consul_binary(), "agent", f"-config-file={self.config_file}"]


@dataclass
class Federation:
    """dc1 and dc2 on loopback; ``agent(dc, server=False)`` finds one. Owned by one test."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="consul-fed-")))
    agents: list[FederatedAgent] = field(default_factory=list)  # owned by the test thread
    ports: DcPorts | None = None

    def agent(self, datacenter: str, server: bool = False) -> FederatedAgent:
        """The server or the client agent of ``datacenter``."""
        for agent in self.agents:
            if (
                agent.datacenter == datacenter
                and agent.dc_agent
                and agent.dc_agent.server == server
            ):
                return agent
        raise KeyError(f"no {'server' if server else 'client agent'} in {datacenter}")

    def start(self, timeout: float = 60.0) -> Federation:
        """Write the configs, start every agent, wait for leaders, joins and the WAN."""
        layout = federation(HARNESS_BASE)
        self.ports = free_federation_ports([a.host for a in layout])
        agent_ports = AgentPorts(
            http=self.ports.http,
            dns=self.ports.dns,
            serf_lan=self.ports.serf_lan,
            serf_wan=self.ports.serf_wan,
            server=self.ports.server,
            grpc=-1,
        )
        for dc_agent in layout:
            agent_dir = self.workdir / dc_agent.name
            self.agents.append(
                FederatedAgent(
                    name=dc_agent.name,
                    mode="server" if dc_agent.server else "client",
                    ports=agent_ports,
                    workdir=agent_dir,
                    dc_agent=dc_agent,
                    config_file=write_agent_config(dc_agent, layout, self.ports, agent_dir),
                )
            )
        for agent in self.agents:
            agent.start(wait_for_leader=False)
        deadline = time.monotonic() + timeout
        for agent in self.agents:
            agent.wait_for_leader(max(1.0, deadline - time.monotonic()))
        self.wait_for_wan(max(1.0, deadline - time.monotonic()))
        return self

    def wait_for_wan(self, timeout: float) -> None:
        """Until every agent lists both datacenters and can query the other one."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                if all(self._sees_other(agent) for agent in self.agents):
                    return
                last = "datacenters not federated yet"
            except (requests.RequestException, ValueError) as exc:
                last = str(exc)
            time.sleep(0.2)
        logs = "\n".join(f"--- {a.name}\n{a.tail_log(15)}" for a in self.agents)
        raise TimeoutError(f"dc1 and dc2 did not federate within {timeout:.0f}s ({last}):\n{logs}")

    def _sees_other(self, agent: FederatedAgent) -> bool:
        datacenters = requests.get(f"{agent.url}/v1/catalog/datacenters", timeout=2).json()
        if sorted(datacenters) != ["dc1", "dc2"]:
            return False
        other = "dc2" if agent.datacenter == "dc1" else "dc1"
        answer = requests.get(f"{agent.url}/v1/catalog/nodes", params={"dc": other}, timeout=2)
        return answer.ok and len(answer.json()) == 2  # the other side's server and host

    def stop(self) -> None:
        """Stop every agent by PID (clients first) and remove the files."""
        for agent in sorted(self.agents, key=lambda a: bool(a.dc_agent and a.dc_agent.server)):
            agent.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def free_federation_ports(hosts: list[str], attempts: int = 200) -> DcPorts:
    """Five ports free (TCP, and UDP for DNS and serf) on every one of ``hosts``."""
    for base in block_bases(5, step=10, attempts=attempts):
        ports = DcPorts(
            http=base, dns=base + 1, serf_lan=base + 2, serf_wan=base + 3, server=base + 4
        )
        if all(is_free(port, hosts) for port in ports.all()):
            return ports
    raise RuntimeError(f"no set of 5 free ports on {', '.join(hosts)} after {attempts} tries")


@contextmanager
def running_federation(timeout: float = 60.0) -> Iterator[Federation]:
    """A started Federation, stopped (every agent by PID) and removed afterwards."""
    fed = Federation()
    try:
        fed.start(timeout)
        yield fed
    finally:
        fed.stop()


def multi_dc_plan(run_dir: Path, **overrides: Any) -> ClusterPlan:
    """A multi-dc profile plan (``PROFILE=multi-dc``) whose every (address, port) is free."""
    settings: dict[str, Any] = {
        "users": 1,
        "orders": 1,
        "inventories": 1,
        "check_interval": "1s",
        "drain_seconds": 1.0,
        "profile": "multi-dc",
        **overrides,
    }
    return free_cluster_plan(
        lambda ports: ClusterPlan(run_dir=run_dir, **{**ports, **settings}),
        "multi-dc test cluster",
    )


@contextmanager
def running_multi_dc_cluster(run_dir: Path, **overrides: Any) -> Iterator[ClusterPlan]:
    """Start the multi-dc profile, yield its plan once every instance passes, stop by PID."""
    plan = multi_dc_plan(run_dir, **overrides)
    try:
        control.up(plan, timeout=120)
        yield plan
    finally:
        try:
            control.down(plan, timeout=60)
        finally:
            control.kill_everything(plan)
