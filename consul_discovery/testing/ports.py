"""Free loopback ports for Consul agents and services started by tests.

Ports are drawn from this process's *share* of the ports below the kernel's ephemeral
range:

* below that range, because a port the kernel hands out for port 0 is also what it
  hands to outgoing connections: between "free now" and the server's bind, another
  process's connection could take it (seen: a gunicorn backend failing with "Address
  already in use" beside a second pytest worker). Below it only a listener can;
* a share per pytest-xdist worker (``PYTEST_XDIST_WORKER`` and
  ``PYTEST_XDIST_WORKER_COUNT``), because the listeners that come and go are the other
  workers' test servers: a drill that kills a server and starts it again on the same
  port must find that port still free, and a port checked free must stay so until bound.

A process outside pytest-xdist has the whole range.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

#: The lowest port handed out: above the well-known and registered ports that services
#: on a developer's machine commonly listen on.
LOWEST = 10000
_MIN_SHARE = 500  # a share narrower than this cannot hold a test cluster's blocks


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux's default: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_share(env: Mapping[str, str] | None = None) -> range:
    """The ports this process draws from: its pytest-xdist worker's equal share of the
    ports from ``LOWEST`` to the ephemeral range (all of them outside xdist)."""
    env = os.environ if env is None else env
    worker = env.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    try:
        count = int(env.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        count = 1
    count = max(count, index + 1, 1)
    top = ephemeral_start()
    width = (top - LOWEST) // count
    if width < _MIN_SHARE:
        raise RuntimeError(
            f"{count} pytest workers leave each fewer than {_MIN_SHARE} ports between "
            f"{LOWEST} and the ephemeral range's start ({top}, "
            "/proc/sys/net/ipv4/ip_local_port_range): run fewer workers"
        )
    start = LOWEST + index * width
    return range(start, start + width)


def is_free(port: int, hosts: Iterable[str] = ("127.0.0.1",)) -> bool:
    """Whether ``port`` can be bound for TCP (as servers do, with SO_REUSEADDR, so a
    closed connection's TIME_WAIT does not count) and for UDP on every one of ``hosts``."""
    for host in hosts:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError:
                    return False
    return True


def block_bases(width: int, step: int = 10, attempts: int = 200) -> Iterator[int]:
    """Random first ports of blocks of ``width`` consecutive ports inside this process's
    share, multiples of ``step`` (``attempts`` of them): the caller checks what it needs."""
    share = port_share()
    first = -(-share.start // step) * step
    bases = range(first, share.stop - width + 1, step)
    if not bases:
        raise ValueError(f"a block of {width} ports does not fit in {share}")
    rng = random.SystemRandom()
    for _ in range(attempts):
        yield rng.choice(bases)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port of this process's share that is free for TCP and UDP on ``host``."""
    for port in block_bases(1, step=1, attempts=500):
        if is_free(port, (host,)):
            return port
    raise RuntimeError(f"no free TCP+UDP port on {host} in {port_share()} after 500 tries")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct free ports."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port(host))
    return sorted(ports)
