"""A real Consul agent owned by a test: the library's (``consul_discovery.testing.agent``).

Kept as a module path because the project's tests and benchmarks import it from here.
"""

from consul_discovery.testing.agent import AgentPorts, ConsulAgent, running_agent

__all__ = ["AgentPorts", "ConsulAgent", "running_agent"]
