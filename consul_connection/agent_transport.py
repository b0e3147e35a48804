"""Every request of one event loop to one Consul agent, on as few connections as it takes.

A Consul agent accepts at most ``http_max_conns_per_client`` (200 by default) connections
from one client address, and every process of a host shares that budget. Over TLS the
agent's API speaks HTTP/2 (ALPN ``h2``): then ``AgentTransport`` sends every request of
its loop (every watch's long poll, one-shot reads) as a stream of **one** connection
(``aio_http2``). Otherwise (plain HTTP, an agent or a client without h2: the ``http2``
extra is not installed) it uses a keep-alive HTTP/1.1 pool (``aio_http1``), one
connection per request in flight.

The first HTTPS connection offers ``h2`` and ``http/1.1`` by ALPN and the agent's choice
is kept: a connection the agent gave HTTP/1.1 joins the pool, and so do all later ones.

Clients do not hold one directly: ``consul_connection.agent_sender.AgentSender`` leases
the one their event loop shares with every other client of the same agent and TLS
settings in the process.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from typing import Any

from consul_discovery.connection.aio_http1 import Http1Pool, Origin, failure, request_target
from consul_discovery.connection.exchange import Request, Response, TransportError
from consul_discovery.connection.settings import ConsulConnection
from consul_discovery.connection.transport_errors import TransportFailure

log = logging.getLogger(__name__)

HTTP2 = "h2"
HTTP1 = "http/1.1"


def h2_installed() -> bool:
    """True when the ``h2`` package (the ``http2`` extra) can be imported."""
    try:
        import h2.connection  # noqa: F401
    except ImportError:
        return False
    return True


def transport_key(connection: ConsulConnection) -> tuple[Any, ...]:
    """What makes two connections share a transport: the agent and the TLS settings (not
    the token, which travels per request)."""
    return (
        connection.scheme,
        connection.host,
        connection.port,
        connection.ca_file,
        connection.ca_path,
        connection.client_cert,
        connection.client_key,
        connection.tls_server_name,
        connection.verify,
        connection.connect_timeout,
    )


class _Probe(asyncio.Protocol):
    """Holds what arrives on a new TLS connection until ALPN's choice picks its protocol."""

    def __init__(self) -> None:
        self.data = bytearray()  # loop only
        self.lost: tuple[Exception | None] | None = None  # loop only

    def data_received(self, data: bytes) -> None:
        """Keep it for the real protocol."""
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        """Remember it for the real protocol."""
        self.lost = (exc,)

    def hand_over(self, transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
        """Make ``protocol`` the connection's, replaying what arrived meanwhile."""
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.data:
            protocol.data_received(bytes(self.data))
        if self.lost is not None:
            protocol.connection_lost(self.lost[0])


class AgentTransport:
    """Requests of one event loop to one agent: one HTTP/2 connection, or an HTTP/1.1 pool.

    ``http2`` False never offers h2 (None: offer it over TLS when h2 is installed);
    ``windows`` sets HTTP/2's stream and connection flow-control windows (tests use
    small ones to force WINDOW_UPDATEs). ``protocol`` is ``"h2"``, ``"http/1.1"``, or
    None until the first TLS connection told. Use it on one event loop; ``aclose`` ends
    every request in flight (CLOSED).
    """

    def __init__(
        self,
        connection: ConsulConnection,
        *,
        http2: bool | None = None,
        windows: tuple[int, int] | None = None,
    ) -> None:
        self._windows = windows
        self.base_url = connection.base_url
        tls = connection.scheme == "https"
        offer_h2 = tls and (http2 if http2 is not None else True) and h2_installed()
        server_hostname = (connection.tls_server_name or connection.host) if tls else None
        pool_context = _context(connection, [HTTP1]) if tls else None
        self._pool = Http1Pool(
            Origin(
                connection.host,
                connection.port,
                pool_context,
                server_hostname,
                connection.connect_timeout,
            )
        )
        self._h2_origin = (
            Origin(
                connection.host,
                connection.port,
                _context(connection, [HTTP2, HTTP1]),
                server_hostname,
                connection.connect_timeout,
            )
            if offer_h2
            else None
        )
        self.protocol: str | None = None if offer_h2 else HTTP1  # loop only
        self._h2: Any = None  # loop only: the live H2Connection
        self._connecting: asyncio.Task[Any] | None = None  # loop only
        self._closed = False  # loop only

    @property
    def connections(self) -> int:
        """Connections to the agent open now."""
        live = self._h2 is not None and self._h2.accepting
        return self._pool.connections + (1 if live else 0)

    async def send(self, request: Request, headers: Mapping[str, str]) -> Response:
        """Send ``request`` with ``headers`` (the token) added; raises TransportError."""
        if self._closed:
            raise TransportError(TransportFailure.CLOSED)
        if self.protocol == HTTP1:
            return await self._pool.send(request, headers)
        connection = await self._h2_connection()
        if connection is None:
            return await self._pool.send(request, headers)
        fields = [*headers.items(), *request.headers]
        try:
            async with asyncio.timeout(request.timeout):
                return await connection.request(  # type: ignore[no-any-return]
                    request.method, request_target(request), fields, request.body
                )
        except TimeoutError as exc:
            raise TransportError(TransportFailure.TIMEOUT, "no answer in time") from exc

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail with CLOSED."""
        self._closed = True
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
        if self._h2 is not None:
            self._h2.close()
            self._h2 = None
        await self._pool.aclose()

    # -- internals -----------------------------------------------------------------------

    async def _h2_connection(self) -> Any:
        """The live HTTP/2 connection, opened if needed; None once ALPN chose HTTP/1.1."""
        current = self._h2
        if current is not None and current.accepting:
            return current
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.get_running_loop().create_task(self._connect())
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _connect(self) -> Any:
        from consul_discovery.connection.aio_http2 import H2Connection

        origin = self._h2_origin
        assert origin is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(origin.connect_timeout):
                transport, probe = await loop.create_connection(
                    _Probe,
                    origin.host,
                    origin.port,
                    ssl=origin.ssl,
                    server_hostname=origin.server_hostname,
                )
        except Exception as exc:
            raise failure(exc) from exc
        if self._closed:
            transport.close()
            raise TransportError(TransportFailure.CLOSED)
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if chosen == HTTP2:
            connection = (
                H2Connection(origin.authority)
                if self._windows is None
                else H2Connection(
                    origin.authority,
                    stream_window=self._windows[0],
                    connection_window=self._windows[1],
                )
            )
            probe.hand_over(transport, connection)
            self._h2, self.protocol = connection, HTTP2
            return connection
        log.info("Consul agent at %s chose %s, not HTTP/2", self.base_url, chosen or "no ALPN")
        self.protocol = HTTP1
        reader = asyncio.StreamReader(limit=1 << 16)
        stream_protocol = asyncio.StreamReaderProtocol(reader)
        probe.hand_over(transport, stream_protocol)
        self._pool.adopt(reader, asyncio.StreamWriter(transport, stream_protocol, reader, loop))
        return None


def _context(connection: ConsulConnection, protocols: list[str]) -> ssl.SSLContext:
    context = connection.ssl_context()
    assert context is not None
    context.set_alpn_protocols(protocols)
    return context


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Read a connect task's outcome, so a failure nobody awaited is not logged as lost."""
    if not task.cancelled():
        task.exception()
