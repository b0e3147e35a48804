"""A Consul client agent (not a server) that joins a server of the harness, by PID.

For topologies with agents on "hosts": services and their TTL checks live on the
client agent, which syncs them to the servers and answers blocking queries through
its own cache and the streaming backend, as production hosts do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.agent import ConsulAgent
from tests.harness.binary import consul_binary


@dataclass
class ClientAgent(ConsulAgent):
    """``ConsulAgent`` in client mode, joined to ``join`` (a server's serf LAN port).

    ``config_files`` are extra agent config files (e.g. service definitions).
    Mutable fields are owned by the test thread that created the agent.
    """

    mode: str = "client"
    join: int = 0
    config_files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        """A client agent is neither of the base's modes (dev, server): nothing to check."""

    def command(self) -> list[str]:
        """A client agent on loopback with its own data dir, joining ``join``."""
        if not self.join:
            raise ValueError("ClientAgent needs join=<a server's serf LAN port>")
        return [
            consul_binary(),
            "agent",
            f"-node={self.name}",
            *self.ports.flags(),
            "-bind=127.0.0.1",
            "-client=127.0.0.1",
            "-advertise=127.0.0.1",
            f"-data-dir={self.data_dir}",
            f"-retry-join=127.0.0.1:{self.join}",
            "-retry-interval=1s",
            "-disable-host-node-id",
            "-hcl=disable_update_check = true",
            *[f"-config-file={path}" for path in self.config_files],
            *self.extra_args,
        ]
