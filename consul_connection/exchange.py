"""Consul's HTTP API as values, for code that does no I/O (sans-IO).

A query is written once as an *exchange*: a generator that yields each ``Request`` it
needs, receives the ``Response`` to it, and returns its result (a watch's poll may need
two requests: the health query, then the catalog to tell an unknown service from an empty
one). A driver does the I/O: ``run(exchange, send)`` with a blocking ``send`` (requests),
``await arun(exchange, send)`` with an awaitable one (httpx); ``consul_connection.sending``
has both. A send that gets no HTTP answer raises ``TransportError`` whose ``kind`` says
how it failed (refused, timeout, TLS mismatch, reset, ...): each transport classifies its
own exceptions into these kinds, and one mapping (``consul_connection.refusals``) turns a
kind or an HTTP answer into an error, whichever transport carried it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from consul_discovery.connection.transport_errors import TransportFailure

try:  # the ``speedups`` extra: a 127 KiB health answer parses ~2.5x faster (bench/README)
    from orjson import loads
except ImportError:
    loads = json.loads

T = TypeVar("T")

INDEX_HEADER = "x-consul-index"

# What cannot go on a request line or in a header field as written (the same characters
# http.client refuses): a space or control character in the quoted path, a line break or
# NUL in a header. Checked once here, so every transport (the asyncio HTTP/1.1 and HTTP/2
# ones write the head themselves) refuses alike.
_PATH_REFUSED = re.compile(r"[\x00-\x20\x7f]")
_FIELD_REFUSED = re.compile(r"[\r\n\x00]")
_NAME_REFUSED = re.compile(r"[\x00-\x20\x7f:]")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to the agent: path (already quoted), query parameters, read
    timeout, method, extra headers and body.

    ``timeout`` bounds reading the answer (a blocking query's includes its wait); the
    connect timeout and the ACL token are the connection's (``ConsulConnection``).
    """

    path: str
    params: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"a Consul API path starts with '/'; got {self.path!r}")
        if _PATH_REFUSED.search(self.path):
            raise ValueError(
                f"a Consul API path is quoted (no space or control character); got {self.path!r}"
            )
        for name, value in self.headers:
            if not name or _NAME_REFUSED.search(name):
                raise ValueError(f"bad header name {name!r} in a Consul API request")
            if _FIELD_REFUSED.search(value):  # the value is never quoted: it may be a secret
                raise ValueError(f"header {name!r} of a Consul API request has a line break or NUL")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds; got {self.timeout!r}")


@dataclass(frozen=True, slots=True)
class Response:
    """The agent's answer: status, headers (names lower-cased) and body bytes.

    ``server`` names the server that answered when a request may go to one of several
    (``consul_connection.server_routing``); None for a single address.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    server: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", {k.lower(): v for k, v in self.headers.items()})

    def header(self, name: str) -> str | None:
        """A header's value (case-insensitive name), or None."""
        return self.headers.get(name.lower())

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (an empty body is None); orjson when installed."""
        return loads(self.body) if self.body.strip() else None

    @property
    def index(self) -> int | None:
        """``X-Consul-Index`` as a number (None when missing or not a number)."""
        raw = (self.header(INDEX_HEADER) or "").strip()
        return int(raw) if raw.isdigit() else None


class TransportError(Exception):
    """A request got no HTTP answer; ``kind`` says how (the cause is chained).

    ``kind`` is ``consul_connection.transport_errors.TransportFailure``: the one vocabulary
    of transport failures, the registrar's messages and the watches' errors alike.
    """

    def __init__(self, kind: TransportFailure, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind.reason}: {detail}" if detail else kind.reason)


Exchange = Generator[Request, Response, T]
Send = Callable[[Request], Response]
AsyncSend = Callable[[Request], Awaitable[Response]]


def run(exchange: Exchange[T], send: Send) -> T:
    """Drive ``exchange`` to its result, sending each of its requests with ``send``."""
    try:
        request = next(exchange)
        while True:
            request = exchange.send(send(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        exchange.close()


async def arun(exchange: Exchange[T], send: AsyncSend) -> T:
    """``run`` for an awaitable ``send`` (asyncio)."""
    try:
        request = next(exchange)
        while True:
            request = exchange.send(await send(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        exchange.close()


def wait_param(seconds: float) -> str:
    """Consul's ``wait`` parameter for ``seconds`` (milliseconds, at least 1 ms)."""
    return f"{max(1, round(seconds * 1000))}ms"


def blocking_timeout(request_timeout: float, wait: float) -> float:
    """The read timeout of a blocking query: Consul may add up to wait/16 of jitter."""
    return request_timeout + wait + wait / 16
