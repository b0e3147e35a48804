"""Real Consul agents for tests: start one on free loopback ports, register instances,
flip their health, restart it, stop it by PID.

Needs only the core's dependencies; the pytest fixtures over it are in
``consul_discovery.pytest_plugin`` (opt-in: ``pytest -p consul_discovery.pytest_plugin``,
needs ``pip install 'consul-discovery[testing]'``). The agent binary comes from
``$CONSUL_BIN``, a ``consul`` on PATH, or the pinned build cached by the repository's
``make consul`` (:mod:`consul_discovery.testing.binary`).
"""

from consul_discovery.testing.agent import AgentPorts, ConsulAgent, running_agent
from consul_discovery.testing.binary import (
    MINIMUM_VERSION,
    PINNED_VERSION,
    ConsulBinaryMissing,
    consul_binary,
    find_consul,
)
from consul_discovery.testing.instances import (
    ConsulInstances,
    HealthEndpoint,
    RegisteredInstance,
)
from consul_discovery.testing.ports import free_port, free_ports

__all__ = [
    "MINIMUM_VERSION",
    "PINNED_VERSION",
    "AgentPorts",
    "ConsulAgent",
    "ConsulBinaryMissing",
    "ConsulInstances",
    "HealthEndpoint",
    "RegisteredInstance",
    "consul_binary",
    "find_consul",
    "free_port",
    "free_ports",
    "running_agent",
]
