"""Hold a service's first calls until the client knows whether it has a chain (no I/O).

Envoy serves no request before its routes and clusters arrive; a client that called a
service plainly until its chain came would send its first calls where the chain says
not to (another subset, instances ``OnlyPassing`` leaves out, a path it rewrites). The
core opens a ``ChainGate`` per service that follows chains when the service is first
called, and opens it when the source hands it a router: the service's chain, or a plain
one when no config entry names the service. A call that finds the gate shut waits for
it, within its first wait (``DiscoveryCore.first_wait``), blocking (``wait``) or
awaiting (``await_open``); a wait that runs out opens the gate for good (Consul does
not answer: the service is called plainly, as before its chain is known, and its chain
is installed whenever it comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable


class ChainGate:
    """Shut until the service's first router is known; thread-safe."""

    __slots__ = ("_event", "_lock", "_waiters")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[Callable[[], None]] = []  # under _lock, until opened

    @property
    def open(self) -> bool:
        """True once a router was handed in (or a wait for one ran out)."""
        return self._event.is_set()

    def release(self) -> None:
        """Open the gate: every waiting call goes on."""
        with self._lock:
            self._event.set()
            waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    def wait(self, timeout: float) -> None:
        """Block until open, at most ``timeout`` seconds (then open it for good)."""
        if not self._event.wait(timeout):
            self.release()

    async def await_open(self, timeout: float) -> None:
        """Await until open, at most ``timeout`` seconds (then open it for good)."""
        loop = asyncio.get_running_loop()
        opened = loop.create_future()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(lambda: opened.done() or opened.set_result(None))

        with self._lock:
            if self._event.is_set():
                return
            self._waiters.append(wake)
        done, _ = await asyncio.wait({opened}, timeout=timeout)
        if not done:
            opened.cancel()
            self.release()
