"""Loopback sockets that misbehave on purpose, for behaviour no HTTP server produces.

- ``socket_server(behaviour)``: a listener whose connections a test's function handles
  (stay silent, hang up, answer half);
- ``closed_port()``: a port with nothing listening (connections are refused).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def socket_server(behaviour: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback listener that hands each connection to ``behaviour``; yields its port.
    Connections are closed when the block ends (``behaviour`` may also close them)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # accept wakes to see ``stop``
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            behaviour(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        listener.close()
        for conn in held:
            conn.close()


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
