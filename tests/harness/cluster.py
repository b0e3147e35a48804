"""A 3-server Consul cluster on loopback for failover tests."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.harness.agent import AgentPorts, ConsulAgent


@dataclass
class ConsulCluster:
    """Three Consul servers on 127.0.0.1, distinct ports, joined to each other."""

    size: int = 3
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="consul-cluster-")))
    servers: list[ConsulAgent] = field(default_factory=list)  # owned by the test thread

    def start(self, timeout: float = 60.0) -> ConsulCluster:
        """Start every server and wait until they agree on a leader with all peers."""
        all_ports = [AgentPorts.allocate() for _ in range(self.size)]
        joins = [f"-retry-join=127.0.0.1:{p.serf_lan}" for p in all_ports]
        for i, ports in enumerate(all_ports):
            name = f"server-{i + 1}"
            agent = ConsulAgent(
                name=name,
                mode="server",
                ports=ports,
                extra_args=[f"-bootstrap-expect={self.size}", *joins],
                workdir=self.workdir / name,
            )
            self.servers.append(agent)
            agent.start(wait_for_leader=False)
        self.wait_for_peers(self.size, timeout)
        return self

    def running(self) -> list[ConsulAgent]:
        """Servers whose process is alive."""
        return [s for s in self.servers if s.pid is not None]

    def leader_address(self, via: ConsulAgent | None = None) -> str:
        """The raft address of the current leader ('' if none), asked of ``via``."""
        agent = via or self.running()[0]
        try:
            return requests.get(f"{agent.url}/v1/status/leader", timeout=2).json() or ""
        except (requests.RequestException, ValueError):
            return ""

    def leader(self) -> ConsulAgent | None:
        """The server that is leader now, if any."""
        address = self.leader_address()
        for server in self.running():
            if address.endswith(f":{server.ports.server}"):
                return server
        return None

    def peers(self, via: ConsulAgent | None = None) -> list[str]:
        """Raft peers as reported by ``via`` (or the first running server)."""
        agent = via or self.running()[0]
        try:
            return requests.get(f"{agent.url}/v1/status/peers", timeout=2).json() or []
        except (requests.RequestException, ValueError):
            return []

    def wait_for_peers(self, count: int, timeout: float = 60.0) -> str:
        """Wait until every running server sees one leader and ``count`` peers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self.running()
            leaders = {self.leader_address(s) for s in alive}
            if len(leaders) == 1 and "" not in leaders and len(self.peers(alive[0])) == count:
                return leaders.pop()
            time.sleep(0.2)
        logs = "\n".join(f"--- {s.name}\n{s.tail_log(15)}" for s in self.servers)
        raise TimeoutError(f"cluster did not converge on a leader with {count} peers:\n{logs}")

    def wait_for_new_leader(self, old: str, timeout: float = 30.0) -> str:
        """Wait until the running servers elect a leader other than ``old``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = {self.leader_address(s) for s in self.running()}
            if len(leaders) == 1 and "" not in leaders and old not in leaders:
                return leaders.pop()
            time.sleep(0.2)
        raise TimeoutError(f"no new leader replaced {old} within {timeout}s")

    def cleanup(self) -> None:
        """Stop every server by PID and remove the cluster's files."""
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
