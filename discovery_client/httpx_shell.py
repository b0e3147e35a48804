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

from consul_discovery.extras import missing

try:
    import httpx
except ImportError as exc:
    raise missing(__name__, "httpx", exc) from exc

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.connect import unsendable
from consul_discovery.client.dial import Dial
from consul_discovery.client.errors import AllAttemptsFailedError, DiscoveryError
from consul_discovery.client.httpx_pools import SSL_CONTEXT_EXTENSION
from consul_discovery.client.load import Endpoint
from consul_discovery.client.retry import ErrorKind
from consul_discovery.client.routing import UNSEEN, Router

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


# httpx' parse result: a NamedTuple of these fields (checked once, below).
_URI_FIELDS = ("scheme", "userinfo", "host", "port", "path", "query", "fragment")


def _fast_urls() -> bool:
    """True if this httpx keeps a parsed URL as the NamedTuple ``instance_url`` rebuilds."""
    parsed = getattr(httpx.URL("http://a/"), "_uri_reference", None)
    return getattr(type(parsed), "_fields", None) == _URI_FIELDS


_FAST_URLS = _fast_urls()
_new_tuple = tuple.__new__


#: How many instance URLs one Dial remembers (one per path and query called) before it
#: forgets them all.
MAX_URLS_PER_DIAL = 256


def instance_url(url: httpx.URL, dial: Dial) -> httpx.URL:
    """``url`` with its scheme, host and port replaced by ``dial``'s.

    ``URL.copy_with`` parses and validates the whole URL again (about a third of the
    transport's own cost per call), and even a NamedTuple's ``_replace`` is slow; an
    already parsed URL only needs a new parse result with the endpoint's scheme, host and
    port, and a Dial remembers the URL it made for each path and query (URLs are
    immutable: requests may share one). IPv6 hosts, and any httpx whose URL is kept
    otherwise, take ``copy_with``.
    """
    host = dial.host
    if not _FAST_URLS or ":" in host:
        return url.copy_with(scheme=dial.scheme, host=host, port=dial.port)
    parsed = url._uri_reference  # a NamedTuple: hashable, the memo's key
    memo = dial.memo
    fast = memo.get(parsed)
    if fast is None:
        fast = _new_url(httpx.URL)
        # (scheme, userinfo, host, port) swapped; path, query and fragment kept.
        fast._uri_reference = _new_tuple(
            type(parsed), (dial.scheme, parsed[1], host, dial.url_port, *parsed[4:])
        )
        if len(memo) >= MAX_URLS_PER_DIAL:
            memo.clear()
        memo[parsed] = fast
    return fast


_new_url = httpx.URL.__new__


def url_parts(url: httpx.URL) -> tuple[str, str | None, int | None]:
    """(scheme, host, port) of ``url``, read from its parse result where that is cheap."""
    if _FAST_URLS:
        parsed = url._uri_reference
        host = parsed[2]
        if not host.startswith("xn--"):  # an IDNA host: the decoded form, as url.host
            return parsed[0], host, parsed[3]
    return url.scheme, url.host, url.port


def url_service(router: Router, url: httpx.URL) -> str | None:
    """The service ``url`` names by ``router``'s rule, or None (an ordinary address).

    Remembered by the URL's parsed origin (scheme, userinfo, host, port: one tuple
    slice), so a call asks no more than a dict lookup.
    """
    if _FAST_URLS:
        key = url._uri_reference[:4]
        found = router.seen(key, UNSEEN)
        if found is UNSEEN:
            return router.remember(key, *url_parts(url))
        return found  # type: ignore[return-value]
    return router.service(*url_parts(url))


_FAST_HEADERS = isinstance(getattr(httpx.Headers(), "_list", None), list)


def _with_host(headers: httpx.Headers, dial: Dial) -> httpx.Headers:
    """A copy of ``headers`` with ``Host`` set to ``dial``'s authority."""
    if not _FAST_HEADERS:  # another httpx: the public way
        copy = headers.copy()
        copy["Host"] = dial.authority
        return copy
    raw = headers._list
    host = dial.host_entry
    if raw and raw[0][1] == b"host":  # where httpx puts it
        entries = raw.copy()
        entries[0] = host
    else:
        entries = [entry if entry[1] != b"host" else host for entry in raw]
        if host not in entries:  # a hand-made request may have none
            entries.insert(0, host)
    copy = _new_headers(httpx.Headers)
    copy._list = entries
    copy._encoding = headers._encoding
    return copy


_new_headers = httpx.Headers.__new__


def _capped(timeouts: dict[str, float | None] | None, remaining: float) -> dict[str, float]:
    """Each of httpx' four timeouts, None (unbounded) or not, cut to ``remaining``."""
    timeouts = timeouts or {}
    capped = {}
    for key in _TIMEOUT_KEYS:
        value = timeouts.get(key)
        capped[key] = remaining if value is None or value > remaining else value
    return capped


def attempt_request(request: httpx.Request, endpoint: Endpoint, plan: AttemptPlan) -> httpx.Request:
    """The request for one attempt: the endpoint's address, its timeouts cut to the deadline.

    A shallow copy of ``request`` (``__init__`` would prepare headers and parse the URL
    again): the same method and body stream; its own URL and ``Host``; its extensions
    shared while no timeout needs cutting (transports only read them).
    """
    dial = endpoint.dial
    extensions = request.extensions
    timeouts = extensions.get("timeout")
    remaining = plan.remaining()
    route = plan.route
    if route.connect_timeout is not None:  # a chain route's connect timeout
        timeouts = {**(timeouts or {}), "connect": route.connect_timeout}
        extensions = dict(extensions)
        extensions["timeout"] = timeouts
    try:  # each of httpx' four timeouts set and no longer than what is left
        within = len(timeouts) == 4 and max(timeouts.values()) <= remaining  # type: ignore[arg-type, type-var]
    except TypeError:  # no timeouts, or an unbounded (None) one
        within = False
    if not within:
        extensions = dict(extensions)
        extensions["timeout"] = _capped(timeouts, remaining)
    if dial.scheme == "https":  # a Connect endpoint: the pool is keyed by its context
        if dial.ssl_context is None:
            raise unsendable(dial)
        extensions = dict(extensions)
        extensions[SSL_CONTEXT_EXTENSION] = dial.ssl_context
    fields = request.__dict__.copy()  # every field httpx has, a few replaced
    fields["url"] = instance_url(request.url, dial)
    fields["headers"] = _with_host(request.headers, dial)
    fields["extensions"] = extensions
    attempt = _new_request(httpx.Request)
    attempt.__dict__ = fields
    changes = route.changes
    if changes is not None:  # a chain route's prefix rewrite and header modifiers
        raw = attempt.url.raw_path.decode("ascii")
        attempt.url = attempt.url.copy_with(raw_path=changes.path(raw).encode("ascii"))
        changes.request_headers(attempt.headers)
    return attempt


_new_request = httpx.Request.__new__


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
