"""Many instances on many hosts: a server, client agents with TTL checks, agents' CPU.

For ``scale_10k``: instances are defined in each host agent's config file (one sync
pass each), spread over hosts as real fleets are, and everything is stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from bench.env import sigint_deferred
from tests.harness.agent import AgentPorts, ConsulAgent
from tests.harness.client_agent import ClientAgent
from tests.harness.ports import free_ports


def services_configs(
    names: list[str], per_service: int, hosts: int, workdir: Path
) -> tuple[list[Path], dict[str, list[str]], dict[str, int]]:
    """One agent config file per host defining its share of the instances (TTL checks).

    Instance k of every service lives on host k % hosts. Registering 10,000 services
    one API call at a time on one agent is quadratic (each change re-diffs and
    re-publishes the node's whole service list: ~7 registrations/s at 3,500 on one
    node); hosts that load their services from config sync them in one pass each, as
    config-managed hosts do. Returns (files, ids per service, host of each id).
    """
    ids: dict[str, list[str]] = {}
    owner: dict[str, int] = {}
    services: list[list[dict[str, object]]] = [[] for _ in range(hosts)]
    for name in names:
        ids[name] = [f"{name}-{k}" for k in range(per_service)]
        for k, sid in enumerate(ids[name]):
            owner[sid] = k % hosts
            services[k % hosts].append(
                {
                    "id": sid,
                    "name": name,
                    "address": "127.0.0.1",
                    "port": 20000 + k,
                    "check": {"id": f"service:{sid}", "ttl": "1h", "status": "passing"},
                }
            )
    files = []
    for host, defined in enumerate(services):
        path = workdir / f"host-{host}.json"
        path.write_text(json.dumps({"services": defined}))
        files.append(path)
    return files, ids, owner


@contextlib.contextmanager
def hosts_cluster(configs: list[Path]) -> Iterator[tuple[ConsulAgent, list[ClientAgent]]]:
    """One server (not -dev) and a client agent per config file; all stopped by PID."""
    # Every agent's ports from one call: separate calls may hand out the same free port.
    free = free_ports(6 * (len(configs) + 1))
    ports = [AgentPorts(*free[6 * k : 6 * k + 6]) for k in range(len(configs) + 1)]
    server = ConsulAgent(
        name="scale", mode="server", ports=ports[0], extra_args=["-bootstrap-expect=1"]
    )
    clients: list[ClientAgent] = []
    try:
        server.start(timeout=120)
        for k, config in enumerate(configs):
            join = server.ports.serf_lan
            client = ClientAgent(
                name=f"host-{k}", ports=ports[k + 1], join=join, config_files=[config]
            )
            clients.append(client)
            client.start(wait_for_leader=False)
        for client in clients:
            client.wait_for_leader(timeout=300)
        yield server, clients
    finally:
        with sigint_deferred():
            for agent in [*clients, server]:
                agent.cleanup()


def wait_synced(agent: ConsulAgent, names: list[str], per_service: int, timeout: float) -> None:
    """Block until the catalog holds every instance (every host's first sync is done)."""
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while time.monotonic() < deadline:
            counts = [
                len(session.get(f"{agent.url}/v1/catalog/service/{name}", timeout=10).json())
                for name in (names[0], names[-1])
            ]
            if min(counts) >= per_service:
                return
            time.sleep(0.5)
    raise TimeoutError(f"catalog not synced within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agents_cpu(pids: list[int]) -> float:
    """CPU seconds of every agent (server and hosts) so far."""
    return sum(cpu_seconds(pid) for pid in pids)
