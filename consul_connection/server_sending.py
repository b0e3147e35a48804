"""Senders over several Consul servers: one sender per server, ``ServerRouting`` between.

``ServerListSender`` (a blocking ``Send``) and ``AsyncServerListSender`` (an
``AsyncSend``) hold one sender per server, made by whatever makes a sender for one
address (``SessionSender`` / ``HttpxSender`` by default, or any other transport with
the same shape), and drive ``ServerRouting.route`` with it: the I/O is theirs, every
rule the routing's. ``session_sender(connection)`` and ``httpx_sender(connection)``
are what a Consul client calls to get its sender: for a single address without stale
reads, exactly today's plain sender; otherwise a list sender over
``connection.server_addresses``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from consul_discovery.connection.exchange import Request, Response, TransportError
from consul_discovery.connection.server_reads import StalePolicy
from consul_discovery.connection.server_routing import Attempt, RoutingStatus, ServerRouting
from consul_discovery.connection.servers import ServerAddress

if TYPE_CHECKING:
    import httpx
    import requests

    from consul_discovery.connection.sending import HttpxSender, SessionSender
    from consul_discovery.connection.settings import ConsulConnection


class SyncSender(Protocol):
    """A blocking sender to one address (``SessionSender``'s shape)."""

    def __call__(self, request: Request) -> Response: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


class AsyncSender(Protocol):
    """An awaitable sender to one address (``HttpxSender``'s shape)."""

    def __call__(self, request: Request) -> Awaitable[Response]: ...

    async def aclose(self) -> None: ...


Route = Generator[Attempt, Response, Response]


def drive(route: Route, send: Callable[[Attempt], Response]) -> Response:
    """Run ``route`` with a blocking ``send`` (each TransportError thrown back into it)."""
    try:
        attempt = next(route)
        while True:
            try:
                response = send(attempt)
            except TransportError as exc:
                attempt = route.throw(exc)
            else:
                attempt = route.send(response)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        route.close()


async def adrive(route: Route, send: Callable[[Attempt], Awaitable[Response]]) -> Response:
    """``drive`` with an awaitable ``send`` (cancellation propagates)."""
    try:
        attempt = next(route)
        while True:
            try:
                response = await send(attempt)
            except TransportError as exc:
                attempt = route.throw(exc)
            else:
                attempt = route.send(response)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        route.close()


def routing_for(connection: ConsulConnection, *, rng: random.Random | None = None) -> ServerRouting:
    """The routing of ``connection``'s servers with its stale-read settings."""
    policy = StalePolicy(
        stale=connection.stale, max_stale=connection.max_stale, allow_leaderless=True
    )
    return ServerRouting(connection.server_addresses, policy=policy, rng=rng)


class ServerListSender:
    """A blocking ``Send`` over several servers (safe across threads, like its senders).

    ``interrupt`` and ``close`` reach every server's sender.
    """

    def __init__(self, routing: ServerRouting, senders: Mapping[ServerAddress, SyncSender]) -> None:
        missing = set(routing.servers) - set(senders)
        if missing:
            raise ValueError(f"no sender for {', '.join(sorted(map(str, missing)))}")
        self.routing = routing
        self.senders = dict(senders)  # fixed at construction; read by any thread

    def __call__(self, request: Request) -> Response:
        """Send ``request`` to a server that answers; TransportError if none did."""
        return drive(self.routing.route(request), self._send)

    def _send(self, attempt: Attempt) -> Response:
        return self.senders[attempt.server](attempt.request)

    def status(self) -> RoutingStatus:
        """The routing's current server and counters."""
        return self.routing.status()

    def interrupt(self) -> None:
        """End every request in flight on every server and refuse new ones."""
        for sender in self.senders.values():
            sender.interrupt()

    def close(self) -> None:
        """Interrupt, then close every server's sender."""
        for sender in self.senders.values():
            sender.close()


class AsyncServerListSender:
    """An awaitable ``Send`` over several servers (one event loop)."""

    owns_client = True  # it made every server's client: a new loop needs new ones

    def __init__(
        self, routing: ServerRouting, senders: Mapping[ServerAddress, AsyncSender]
    ) -> None:
        missing = set(routing.servers) - set(senders)
        if missing:
            raise ValueError(f"no sender for {', '.join(sorted(map(str, missing)))}")
        self.routing = routing
        self.senders = dict(senders)  # fixed at construction; used on the loop

    async def __call__(self, request: Request) -> Response:
        """Send ``request`` to a server that answers; TransportError if none did."""
        return await adrive(self.routing.route(request), self._send)

    def _send(self, attempt: Attempt) -> Awaitable[Response]:
        return self.senders[attempt.server](attempt.request)

    def status(self) -> RoutingStatus:
        """The routing's current server and counters."""
        return self.routing.status()

    async def aclose(self) -> None:
        """Close every server's sender."""
        results = await asyncio.gather(
            *(sender.aclose() for sender in self.senders.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result


def _server_senders(
    connection: ConsulConnection,
    single: Callable[..., Any],
    given: Any,
    make: Callable[[ConsulConnection], Any] | None,
    what: str,
) -> dict[str, Any]:
    """One sender per server of ``connection``: ``make`` each, by default ``single``
    (sharing ``given``, the caller's own client, which only one address may have)."""
    if given is not None and connection.servers:
        raise ValueError(
            f"a {what} is pointed at one Consul address; with several, "
            "let the client make one per server"
        )
    if make is None:
        make = single if given is None else (lambda conn: single(conn, given))
    return {s: make(connection.for_server(s)) for s in connection.server_addresses}


def session_sender(
    connection: ConsulConnection,
    session: requests.Session | None = None,
    *,
    make: Callable[[ConsulConnection], SyncSender] | None = None,
    rng: random.Random | None = None,
) -> SessionSender | ServerListSender:
    """The blocking sender for ``connection``: a ``SessionSender`` for one address (as
    before), else a ``ServerListSender`` with one sender per server (``make``, default
    a ``SessionSender`` each). A ``session`` serves one address only."""
    from consul_discovery.connection.sending import SessionSender

    if not connection.routed:
        return SessionSender(connection, session)
    senders = _server_senders(connection, SessionSender, session, make, "requests Session")
    return ServerListSender(routing_for(connection, rng=rng), senders)


def httpx_sender(
    connection: ConsulConnection,
    client: httpx.AsyncClient | None = None,
    *,
    make: Callable[[ConsulConnection], AsyncSender] | None = None,
    rng: random.Random | None = None,
) -> HttpxSender | AsyncServerListSender:
    """The awaitable sender for ``connection``: an ``HttpxSender`` for one address (as
    before), else an ``AsyncServerListSender`` (``make``, default an ``HttpxSender``
    each). A ``client`` serves one address only."""
    from consul_discovery.connection.sending import HttpxSender

    if not connection.routed:
        return HttpxSender(connection, client)
    senders = _server_senders(connection, HttpxSender, client, make, "httpx client")
    sender = AsyncServerListSender(routing_for(connection, rng=rng), senders)
    if client is not None:
        sender.owns_client = False
    return sender


def agent_sender(connection: ConsulConnection) -> AsyncSender:
    """The process's shared transport for ``connection`` (HTTP/2 to TLS agents, else an
    HTTP/1.1 pool): one ``AgentSender`` for one address, else an
    ``AsyncServerListSender`` over one ``AgentSender`` per server."""
    from consul_discovery.connection.agent_sender import AgentSender

    if not connection.routed:
        return AgentSender(connection)
    senders = _server_senders(connection, AgentSender, None, None, "")
    return AsyncServerListSender(routing_for(connection), senders)


def sender_status(sender: Any) -> RoutingStatus | None:
    """A list sender's routing status; None for a plain single-address sender."""
    with contextlib.suppress(AttributeError):
        status: RoutingStatus = sender.status()
        return status
    return None
