"""Free loopback ports for Consul agents and services started by tests.

Ports are drawn at random below the kernel's ephemeral range: a port the kernel hands
out for port 0 is also what it hands to outgoing connections, so between "free now" and
the server's bind another process's connection could take it (seen with two pytest
workers: a gunicorn backend failing with "Address already in use"). Below that range
only another listener can take a port, and each is checked free for TCP and UDP.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10000  # above the well-known and registered ports services commonly use


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux's default: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        try:
            tcp.bind((host, port))
        except OSError:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that is free for both TCP and UDP on ``host`` right now."""
    top = _ephemeral_start()
    rng = random.SystemRandom()
    if top - _LOWEST >= 1000:
        for _ in range(200):
            port = rng.randrange(_LOWEST, top)
            if _free(host, port):
                return port
    for _ in range(50):  # a narrow or odd range: let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
        if _free(host, port):
            return port
    raise RuntimeError(f"no free TCP+UDP port on {host} after 250 tries")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct free ports."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port(host))
    return sorted(ports)
