"""The mesh's watches and agent calls, on the process's one event loop (the shared engine).

Every watch of the mesh (a leaf certificate, the CA roots, the intentions of a
destination) is a ``consul_connection.watch.WatchState`` over a resource of
``consul_api``, driven as a ``WatchTask`` on the process's loop thread
(``consul_connection.loop_thread``), like every discovery watch of the process, over the
process's shared transport to the agent (``agent_sender``: one HTTP/2 connection to a
TLS agent, else an HTTP/1.1 pool). So the rules are the engine's (index, pacing, backoff
with jitter, the last good value kept while the agent is away, a 429 backed off longer,
an outage logged once when it begins and once when it ends) and a mesh identity costs no
thread of its own.

``MeshWatches`` is what one owner (a ``ServiceIdentity``, an ``Authorizer``) holds:

- ``watch(state)`` starts a watch; ``call(request)`` sends one request from any thread but
  the loop's (blocking), ``acall`` from the loop;
- ``close()`` cancels every watch at once (a long poll in flight is cut short: its HTTP/2
  stream reset, its HTTP/1.1 connection closed) and gives the transport lease back;
- **fork-safe**: a forked child has no thread of the parent's, so in a child the owner's
  watches either go on from the values in force on the child's own loop and connection
  (``after_fork="restart"``, the default: e.g. an identity made in a gunicorn master
  before its workers fork serves them too) or stop there for good (``"close"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, Literal

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.exchange import AsyncSend, Request, Response, TransportError
from consul_discovery.connection.forking import after_fork_in_child
from consul_discovery.connection.loop_thread import LoopThread, process_loop
from consul_discovery.connection.refusals import transport_error
from consul_discovery.connection.server_sending import agent_sender
from consul_discovery.connection.watch import WatchState
from consul_discovery.connection.watch_drivers import WatchTask
from consul_discovery.mesh.consul_api import MESH_ERRORS
from consul_discovery.mesh.errors import MeshUnavailableError

log = logging.getLogger("consul_discovery.mesh")

AfterFork = Literal["restart", "close"]


class MeshWatches:
    """One owner's watches and agent calls on the process loop (see the module)."""

    def __init__(
        self, connection: ConsulConnection, *, name: str, after_fork: AfterFork = "restart"
    ) -> None:
        if after_fork not in ("restart", "close"):
            raise ValueError(f"after_fork must be 'restart' or 'close'; got {after_fork!r}")
        self.connection = connection
        self.name = name
        self.after_fork = after_fork
        self._lock = threading.Lock()  # guards _tasks and _closed (no I/O under it)
        self._tasks: list[WatchTask] = []  # under _lock; replaced whole in a forked child
        self._closed = False  # under _lock
        self._setup()
        after_fork_in_child(self._after_fork)

    def _setup(self) -> None:
        """What belongs to this process: its loop and its lease on the shared transport."""
        self.loop: LoopThread = process_loop()  # replaced in a forked child only
        self.sender: AsyncSend = agent_sender(self.connection)  # used on self.loop only

    @property
    def closed(self) -> bool:
        """True once ``close`` was called (or the owner stopped at a fork)."""
        return self._closed

    def watch(self, state: WatchState[Any, Any]) -> WatchTask:
        """Drive ``state`` on the loop from now on (no I/O on the caller's thread)."""
        task = WatchTask(state, self.sender, name=f"{self.name}: {state.resource.name}")
        with self._lock:
            if self._closed:
                raise MeshUnavailableError(f"{self.name} is closed")
            self._tasks.append(task)
        return task.start_on(self.loop.loop)

    def call(self, request: Request, what: str) -> Response:
        """Send ``request`` to the agent and wait for the answer (never from the loop).

        No answer at all (refused, timeout, reset) is a ``MeshUnavailableError``.
        """
        timeout = request.timeout + self.connection.connect_timeout
        try:
            return self.loop.run(self.acall(request, what), timeout)
        except TimeoutError:
            raise MeshUnavailableError(
                f"Consul at {self.connection.address} did not answer in time to {what}"
            ) from None

    async def acall(self, request: Request, what: str) -> Response:
        """``call`` on the loop (awaited by the loop's own tasks)."""
        try:
            return await self.sender(request)
        except TransportError as exc:
            raise transport_error(exc, what, self.connection.address, MESH_ERRORS) from None

    def close(self, timeout: float = 2.0) -> None:
        """Cancel every watch (a long poll in flight ends at once) and release the
        transport; waits up to ``timeout`` unless called on the loop's own thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            tasks, self._tasks = self._tasks, []
        work = self._aclose(tasks)
        if self.loop.in_loop_thread:  # closed from a listener: cannot wait for ourselves
            self.loop.submit(work)
            return
        if not self.loop.alive:  # the loop is gone (interpreter exit): nothing runs
            work.close()
            return
        with contextlib.suppress(TimeoutError):
            self.loop.run(work, timeout)

    async def _aclose(self, tasks: list[WatchTask]) -> None:
        for task in tasks:
            await task.aclose()
        closing = getattr(self.sender, "aclose", None)
        if closing is not None:
            await closing()

    def run_soon(self, coro: Coroutine[Any, Any, None]) -> None:
        """Schedule ``coro`` on the loop (from any thread); its failure is logged."""
        self.loop.submit(coro).add_done_callback(self._log_failure)

    def _log_failure(self, future: Any) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            log.error("mesh: %s: background work failed: %r", self.name, exc)

    def _after_fork(self) -> None:
        """In a forked child: go on with the values in force on this process's own loop
        and connection, or stop for good (``after_fork``). No I/O here."""
        self._lock = threading.Lock()  # a parent thread may have held it at the fork
        if self._closed:
            return
        tasks, self._tasks = self._tasks, []
        if self.after_fork == "close":
            self._closed = True  # the parent's watches: nothing of them runs here
            return
        self._setup()
        for old in tasks:
            state = old.state
            state.after_fork()
            fresh = WatchTask(state, self.sender, name=old.name)
            self._tasks.append(fresh)
            fresh.start_on(self.loop.loop)
