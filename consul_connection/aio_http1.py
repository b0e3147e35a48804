"""HTTP/1.1 to one Consul agent on asyncio: a keep-alive pool, no third-party library.

What the watches need and nothing more: a request (method, path, query, headers, a small
body) on a pooled connection, and its answer read whole: status and headers parsed by
the standard library's rules (``http.client.parse_headers``), the body by
``Content-Length``, chunked encoding, or until the agent closes. Each in-flight request
holds one connection (HTTP/1.1 cannot share one), so a long poll costs one agent-side
connection here; over TLS the HTTP/2 transport (``aio_http2``) carries them all on one.

Failures are ``TransportError``s of the shared kinds (``transport_errors``): refused,
timeout, TLS, reset; a request cut short by ``aclose()`` is ``CLOSED``. A request that
fails on a *reused* connection before any byte of its answer arrived (the agent closed
an idle keep-alive connection as we wrote) is sent once more on a new one, if it is a
GET. Consul's per-client connection limit answers a new connection with a raw ``429``
and a close: that is an HTTP answer here, not a transport failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import parse_headers
from urllib.parse import urlencode

from consul_discovery import __version__
from consul_discovery.connection.addresses import host_port
from consul_discovery.connection.exchange import Request, Response, TransportError
from consul_discovery.connection.transport_errors import (
    TransportFailure,
    classify_transport_error,
)

USER_AGENT = f"consul-discovery/{__version__}"
_HEAD_LIMIT = 1 << 16  # a response head (status line and headers) larger than this is refused
_IDEMPOTENT = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one agent's API is and how to connect: host, port, TLS (context and the
    name to send as SNI and check in the certificate), connect timeout."""

    host: str
    port: int
    ssl: ssl.SSLContext | None = None
    server_hostname: str | None = None
    connect_timeout: float = 3.0

    @property
    def authority(self) -> str:
        """``host:port`` as the Host header (and HTTP/2's ``:authority``) carries it."""
        return host_port(self.host, self.port)

    @property
    def scheme(self) -> str:
        """``https`` with a TLS context, else ``http``."""
        return "https" if self.ssl is not None else "http"

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection (TLS handshake included), bounded by ``connect_timeout``."""
        async with asyncio.timeout(self.connect_timeout):
            return await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.server_hostname if self.ssl is not None else None,
                limit=_HEAD_LIMIT,
            )


def request_target(request: Request) -> str:
    """The request's path and query string, as sent on the request line (``:path``)."""
    if not request.params:
        return request.path
    return f"{request.path}?{urlencode(request.params)}"


def detail(exc: BaseException) -> str:
    """A short reason for logs: the OS's or OpenSSL's words, else the exception's name."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


def failure(exc: BaseException) -> TransportError:
    """The TransportError an exception raised while talking to the agent stands for."""
    if isinstance(exc, TransportError):
        return exc
    kind = classify_transport_error(exc)
    if isinstance(exc, asyncio.IncompleteReadError | EOFError) and kind is TransportFailure.OTHER:
        kind = TransportFailure.RESET
    error = TransportError(kind, detail(exc))
    error.__cause__ = exc
    return error


class _Connection:
    """One keep-alive connection; ``received`` is true once any byte of an answer came."""

    __slots__ = ("reader", "received", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False  # owner task only
        self.received = False  # owner task only

    @property
    def usable(self) -> bool:
        """True while neither side has closed it."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        """Close the socket (no waiting)."""
        self.writer.close()


class Http1Pool:
    """HTTP/1.1 keep-alive connections to one agent (``origin``), on one event loop.

    ``send`` is safe for any number of concurrent tasks of that loop; ``aclose`` cuts
    every request in flight short (they raise ``TransportError(CLOSED)``).
    """

    def __init__(self, origin: Origin, *, max_idle: int = 1024) -> None:
        self.origin = origin
        self._max_idle = max_idle
        self._idle: list[_Connection] = []  # loop only
        self._busy: set[_Connection] = set()  # loop only
        self._closed = False  # loop only

    @property
    def connections(self) -> int:
        """Connections open now (in use and idle)."""
        return len(self._busy) + len(self._idle)

    def adopt(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Take an open connection into the pool (one ALPN chose HTTP/1.1 for)."""
        if self._closed:
            writer.close()
            return
        self._idle.append(_Connection(reader, writer))

    async def send(self, request: Request, headers: Mapping[str, str]) -> Response:
        """Send ``request`` with ``headers`` added; its Response (raises TransportError)."""
        for attempt in (1, 2):
            connection = await self._checkout()
            try:
                async with asyncio.timeout(request.timeout):
                    response, keep = await self._exchange(connection, request, headers)
            except asyncio.CancelledError:
                self._discard(connection)
                raise
            except Exception as exc:
                self._discard(connection)
                if self._closed:
                    raise TransportError(TransportFailure.CLOSED) from exc
                retry = connection.reused and not connection.received
                if retry and attempt == 1 and request.method in _IDEMPOTENT:
                    continue  # the agent closed an idle keep-alive connection under us
                raise failure(exc) from exc
            self._checkin(connection, keep)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail with CLOSED."""
        self._closed = True
        connections = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for connection in connections:
            connection.close()

    # -- internals -------------------------------------------------------------------

    async def _checkout(self) -> _Connection:
        if self._closed:
            raise TransportError(TransportFailure.CLOSED)
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                connection.reused, connection.received = True, False
                self._busy.add(connection)
                return connection
            connection.close()
        try:
            reader, writer = await self.origin.open()
        except Exception as exc:
            if self._closed:
                raise TransportError(TransportFailure.CLOSED) from exc
            raise failure(exc) from exc
        connection = _Connection(reader, writer)
        if self._closed:
            connection.close()
            raise TransportError(TransportFailure.CLOSED)
        self._busy.add(connection)
        return connection

    def _checkin(self, connection: _Connection, keep: bool) -> None:
        self._busy.discard(connection)
        if keep and not self._closed and connection.usable and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()

    def _discard(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        connection.close()

    async def _exchange(
        self, connection: _Connection, request: Request, headers: Mapping[str, str]
    ) -> tuple[Response, bool]:
        lines = [
            f"{request.method} {request_target(request)} HTTP/1.1",
            f"Host: {self.origin.authority}",
            f"User-Agent: {USER_AGENT}",
            "Accept: application/json",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"{name}: {value}" for name, value in request.headers]
        if request.body or request.method not in _IDEMPOTENT:
            lines.append(f"Content-Length: {len(request.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        connection.writer.write(head + request.body if request.body else head)
        await connection.writer.drain()
        return await read_response(connection, request.method)


async def read_response(connection: _Connection, method: str) -> tuple[Response, bool]:
    """Read one answer from ``connection``: (the Response, whether to keep the connection)."""
    reader = connection.reader
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        connection.received = True
        status_line, _, rest = head.partition(b"\r\n")
        version, status = _status(status_line)
        if not 100 <= status < 200:
            break  # informational answers (100 Continue) are skipped
    message = parse_headers(io.BytesIO(rest))
    headers: dict[str, str] = {}
    for name, value in message.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(_length(headers["content-length"]))
    else:
        body, keep = await reader.read(), False  # until the agent closes
    return Response(status, headers, body), keep


def _status(line: bytes) -> tuple[str, int]:
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionResetError(f"not an HTTP answer: {line[:60]!r}")
    return parts[0], int(parts[1])


def _length(raw: str) -> int:
    value = raw.split(",")[0].strip()
    if not value.isdigit():
        raise ConnectionResetError(f"bad Content-Length {raw!r}")
    return int(value)


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ConnectionResetError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers: none we use
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ConnectionResetError("chunk not followed by CRLF")


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close ``writer`` and wait briefly for it (errors ignored)."""
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
