"""httpx' side of the attempt loop, for the sync and asyncio transports alike.

What is httpx' own in a call, and nothing else: the attempt's request (the endpoint's
address from its Dial, ``Host`` set to it, timeouts cut to what is left of the call's
deadline), telling httpx' exceptions apart (``classify_httpx_error``), closing a
superseded answer and buffering a parked one (read and closed, so its connection goes
back to the pool while it stays the answer if no later attempt gets one), and raising a
DiscoveryError as an httpx exception so ``except httpx.TransportError`` keeps working.
"""

from __future__ import annotations

from typing import NoReturn

import httpx

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.dial import Dial
from consul_discovery.client.errors import AllAttemptsFailedError, DiscoveryError
from consul_discovery.client.load import Endpoint
from consul_discovery.client.retry import ErrorKind

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TIMEOUT_KEYS = ("connect", "read", "write", "pool")
_CONNECT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Errors during or after sending: the request may have reached the instance.
_READ = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
ERRORS: tuple[type[BaseException], ...] = (httpx.TransportError, OSError)


def classify_httpx_error(error: BaseException) -> ErrorKind:
    """Say whether ``error`` (from an httpx transport) happened before the request was sent."""
    if isinstance(error, _CONNECT):
        return ErrorKind.CONNECT
    if isinstance(error, _READ):
        return ErrorKind.READ
    if isinstance(error, OSError):
        return ErrorKind.READ
    return ErrorKind.FATAL  # UnsupportedProtocol, LocalProtocolError, ProxyError, ...


def replayable(request: httpx.Request) -> bool:
    """True if the request's body can be sent again (bytes, str, JSON, a form; not an
    iterator)."""
    return isinstance(request.stream, httpx.ByteStream)


def instance_url(url: httpx.URL, dial: Dial) -> httpx.URL:
    """``url`` with its scheme, host and port replaced by ``dial``'s.

    ``URL.copy_with`` parses and validates the whole URL again (about a third of the
    transport's own cost per call); an already parsed URL only needs its host and port
    swapped in its parse result. IPv6 hosts, and any httpx whose URL is built otherwise,
    take ``copy_with``.
    """
    host, port, scheme = dial.host, dial.port, dial.scheme
    parsed = getattr(url, "_uri_reference", None)
    if ":" in host or not hasattr(parsed, "_replace"):
        return url.copy_with(scheme=scheme, host=host, port=port)
    fast = httpx.URL.__new__(httpx.URL)
    if port == _DEFAULT_PORTS.get(scheme):
        port = None  # as copy_with does: a default port is not spelled out
    if scheme == url.scheme:
        fast._uri_reference = parsed._replace(host=host, port=port)  # type: ignore[union-attr]
    else:
        fast._uri_reference = parsed._replace(scheme=scheme, host=host, port=port)  # type: ignore[union-attr]
    return fast


def attempt_request(request: httpx.Request, endpoint: Endpoint, plan: AttemptPlan) -> httpx.Request:
    """The request for one attempt: the endpoint's address, its timeouts cut to the deadline.

    A shallow copy of ``request`` (``__init__`` would prepare headers and parse the URL
    again): the same method and body stream; its own URL, headers and extensions.
    """
    dial = endpoint.dial
    headers = request.headers.copy()
    headers["Host"] = dial.authority
    extensions = dict(request.extensions)
    timeouts = extensions.get("timeout") or {}
    remaining = plan.remaining()
    capped = {}
    for key in _TIMEOUT_KEYS:
        value = timeouts.get(key)
        capped[key] = remaining if value is None or value > remaining else value
    extensions["timeout"] = capped
    attempt = httpx.Request.__new__(httpx.Request)
    attempt.__dict__.update(request.__dict__)
    attempt.url = instance_url(request.url, dial)
    attempt.headers, attempt.extensions = headers, extensions
    return attempt


def buffered(response: httpx.Response, raw: bytes) -> httpx.Response:
    """A response already read (``raw``, still encoded) and closed, as a fresh one."""
    extensions = {k: v for k, v in response.extensions.items() if k != "network_stream"}
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=extensions,
    )


def raise_as_httpx(exc: DiscoveryError, request: httpx.Request) -> NoReturn:
    """Raise ``exc`` as an httpx exception (``exc`` chained as its cause): ConnectError, or
    for AllAttemptsFailedError the class of the last attempt's httpx error."""
    cls: type[httpx.TransportError] = httpx.ConnectError
    if isinstance(exc, AllAttemptsFailedError):
        last = exc.attempts[-1][1] if exc.attempts else None
        if isinstance(last, httpx.TransportError):
            cls = type(last)
    raise cls(str(exc), request=request) from exc


class HttpxShell:
    """The sync httpx side of the loop (consul_discovery.client.drivers.SyncShell)."""

    errors = ERRORS
    classify = staticmethod(classify_httpx_error)

    @staticmethod
    def release(response: httpx.Response) -> None:
        """Close a superseded answer."""
        response.close()

    @staticmethod
    def park(response: httpx.Response) -> httpx.Response:
        """Read and close the answer (its connection goes back to the pool); keep it."""
        if response.is_closed:
            return response
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        return buffered(response, raw)


class AsyncHttpxShell:
    """The asyncio httpx side of the loop (consul_discovery.client.drivers.AsyncShell)."""

    errors = ERRORS
    classify = staticmethod(classify_httpx_error)

    @staticmethod
    async def release(response: httpx.Response) -> None:
        """Close a superseded answer."""
        await response.aclose()

    @staticmethod
    async def park(response: httpx.Response) -> httpx.Response:
        """Read and close the answer (its connection goes back to the pool); keep it."""
        if response.is_closed:
            return response
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        return buffered(response, raw)


SYNC_SHELL = HttpxShell()
ASYNC_SHELL = AsyncHttpxShell()
