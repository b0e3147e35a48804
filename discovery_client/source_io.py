"""How one threaded ``ConsulSource`` does its I/O in this process (no rules here).

Its watches are tasks on the process's loop thread (``consul_connection.loop_thread``),
and its requests go through that loop's shared transport to the agent (``AgentSender``:
HTTP/2 over TLS, else an HTTP/1.1 pool). A blocking ``send`` or requests ``session``
injected instead (tests, custom transports) and an injected blocking ``sleep`` run on
executor threads, so they never stall the loop. An awaitable ``asend`` (e.g. a sender over a
list of servers, each an ``AgentSender``) runs on the loop as given. A forked child
makes a new ``SourceIO`` (the parent's loop thread, connections and executor threads do
not exist there).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests

from consul_discovery.connection.agent_sender import held_connections
from consul_discovery.connection.exchange import AsyncSend, Send
from consul_discovery.connection.loop_thread import LoopThread, process_loop
from consul_discovery.connection.server_sending import SyncSender, agent_sender, session_sender
from consul_discovery.connection.settings import ConsulConnection

T = TypeVar("T")
A = TypeVar("A")

_EXECUTOR_THREADS = 256  # at most one per watch blocked in an injected send or sleep


class SourceIO:
    """One source's loop, its ``send`` (awaitable), its ``pause`` and their closing."""

    def __init__(
        self,
        connection: ConsulConnection,
        *,
        send: Send | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], object] | None = None,
        asend: AsyncSend | None = None,
    ) -> None:
        self.loop: LoopThread = process_loop()
        self._executor: ThreadPoolExecutor | None = None  # made on the first blocking call
        self.sender: AsyncSend | None = None  # the shared transport's (one or per server)
        self._blocking: SyncSender | None = None
        self.send: AsyncSend
        if asend is not None:
            self.send = asend
        elif send is not None:
            self.send = self._threaded(send)
        elif session is not None:
            self._blocking = session_sender(connection, session)
            self.send = self._threaded(self._blocking)
        else:
            self.sender = agent_sender(connection)
            self.send = self.sender
        self.pause: Callable[[float], Awaitable[object]] | None = (
            self._threaded(sleep) if sleep is not None else None
        )

    @property
    def shared(self) -> bool:
        """True when requests go through the process's shared transport."""
        return self.sender is not None

    def connections(self) -> int | None:
        """Connections this process holds to the agent (None: not known yet)."""
        return held_connections(self.sender)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait for it (not from the loop's thread)."""
        return self.loop.run(coro, timeout)

    def close(self, closing: Coroutine[Any, Any, None], timeout: float) -> None:
        """Interrupt blocking requests, run ``closing`` (the watches' end) then give the
        shared transport back, waiting up to ``timeout`` (not when called on the loop)."""
        if self._blocking is not None:
            self._blocking.interrupt()
        work = self._close(closing)
        if self.loop.in_loop_thread:  # closed from a listener: cannot wait for ourselves
            self.loop.submit(work)
        else:
            with contextlib.suppress(TimeoutError):
                self.loop.run(work, timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._blocking is not None:
            self._blocking.close()

    async def _close(self, closing: Coroutine[Any, Any, None]) -> None:
        await closing
        if self.sender is not None:
            await self.sender.aclose()  # type: ignore[attr-defined]

    def _threaded(self, function: Callable[[A], T]) -> Callable[[A], Awaitable[T]]:
        async def call(argument: A) -> T:
            executor = self._executor
            if executor is None:
                executor = self._executor = ThreadPoolExecutor(
                    _EXECUTOR_THREADS, "consul-source-io"
                )
            return await asyncio.get_running_loop().run_in_executor(executor, function, argument)

        return call
