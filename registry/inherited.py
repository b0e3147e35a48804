"""A forked worker drops its copies of the master's connections to the instance itself.

The gunicorn master probes its own instance (``health.http_probe``, a TTL check's
heartbeat) while it forks workers. ``fork`` copies every file descriptor, so a worker
forked while a probe is in flight holds a copy of the probe's socket. When the probe
times out and the master closes its copy, the connection stays open through the
worker's: the worker that accepted it then waits on it for good (a TLS handshake or a
request that never comes), pinning a thread, and at shutdown gunicorn waits for that
thread until its graceful timeout kills the worker (a mesh instance stopped in ~22 s
instead of ~2 s). No worker ever needs such a copy, so each child drops them, right
after the fork (``os.register_at_fork``), found by their peer address.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger("consul_discovery.registry")

_lock = threading.Lock()  # guards _peers
_peers: set[tuple[str, int]] = set()  # (address, port) a probe of this process dials
_hooked = False  # under _lock: the at-fork hook is registered once per process


def forget_in_children(host: str, port: int) -> None:
    """From now on, a child forked from this process closes its copies of every socket
    connected to ``host``:``port`` (resolved now: each address it names)."""
    global _hooked
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        infos = []
    addresses = {(info[4][0], port) for info in infos} or {(host, port)}
    with _lock:
        _peers.update(addresses)
        if not _hooked and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=close_inherited)
            _hooked = True


def close_inherited() -> int:
    """Drop this process's sockets connected to a probed peer; how many were dropped.

    Each one's descriptor is pointed at ``/dev/null`` rather than closed: a copy of the
    master's socket object may still name that number, and closing it later must not
    close whatever socket would have reused it.
    """
    peers = frozenset(_peers)
    if not peers:
        return 0
    dropped, null = 0, -1
    try:
        for fd in _open_fds():
            try:
                sock = socket.socket(fileno=fd)
            except OSError:  # not a socket
                continue
            try:
                peer = sock.getpeername()
            except OSError:  # not connected (a listener, a UDP socket)
                peer = None
            finally:
                sock.detach()  # the probe of the descriptor leaves it as it was
            if isinstance(peer, tuple) and (peer[0], peer[1]) in peers:
                if null < 0:
                    null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd)
                dropped += 1
    finally:
        if null >= 0:
            os.close(null)
    if dropped:
        log.debug("registry: dropped %d inherited connection(s) to the instance", dropped)
    return dropped


def _open_fds() -> list[int]:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return sorted(int(name) for name in os.listdir(directory))
        except (OSError, ValueError):
            continue
    return []
