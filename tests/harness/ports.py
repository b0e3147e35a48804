"""Free loopback ports: the library's test helpers (``consul_discovery.testing.ports``)."""

from consul_discovery.testing.ports import free_port, free_ports

__all__ = ["free_port", "free_ports"]
