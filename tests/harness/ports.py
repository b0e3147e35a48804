"""Free loopback ports: the library's test helpers (``consul_discovery.testing.ports``)."""

from consul_discovery.testing.ports import block_bases, free_port, free_ports, is_free

__all__ = ["block_bases", "free_port", "free_ports", "is_free"]
