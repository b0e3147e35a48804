"""Send a ``Request`` to the agent with requests (threads) or httpx (asyncio).

The only I/O of every watch and one-shot query: each sender turns our ``Request`` into
its library's call and the answer into our ``Response``, and classifies its library's
exceptions into a ``TransportFailure`` kind (raised as ``TransportError``, the library's
exception chained), so that what a failure *means* is decided once
(``consul_connection.refusals``), whichever transport carried the request. httpx is
imported only by ``HttpxSender`` (it is an optional dependency).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import requests

from consul_discovery.connection.exchange import (
    Request,
    Response,
    TransportError,
    TransportFailure,
)
from consul_discovery.connection.interrupt import PollInterrupter
from consul_discovery.connection.transport_errors import (
    classify_transport_error,
    exception_chain,
)
from consul_discovery.extras import missing

if TYPE_CHECKING:
    import httpx

    from consul_discovery.connection.settings import ConsulConnection

# Enough for one long poll per watched service plus one-shot reads: a smaller pool would
# discard (and log about) every connection above its size after each answer.
POOL_SIZE = 1024


def classify_requests(exc: BaseException) -> TransportFailure:
    """The TransportFailure a requests/urllib3 exception stands for."""
    return classify_transport_error(exc)


def classify_httpx(exc: BaseException) -> TransportFailure:
    """The TransportFailure an httpx exception stands for."""
    return classify_transport_error(exc)


def _detail(exc: BaseException) -> str:
    """A short reason for logs (requests' own messages are long nested reprs)."""
    for error in exception_chain(exc):
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        if isinstance(error, ssl.SSLError) and error.reason:
            return str(error.reason)
    return type(exc).__name__


def send_with_session(
    session: requests.Session, base_url: str, connect_timeout: float, request: Request
) -> Response:
    """Send ``request`` through ``session`` to the agent at ``base_url``."""
    try:
        answer = session.request(
            request.method,
            base_url + request.path,
            params=list(request.params),
            headers=dict(request.headers) or None,
            data=request.body or None,
            timeout=(connect_timeout, request.timeout),
        )
    except requests.RequestException as exc:
        raise TransportError(classify_requests(exc), _detail(exc)) from exc
    return Response(answer.status_code, dict(answer.headers), answer.content)


class SessionSender:
    """Sends Requests to one agent through one requests Session (safe across threads).

    ``interrupt`` cuts every request in flight short and refuses new ones: how closing
    a watch ends its long poll at once (``PollInterrupter``).
    """

    def __init__(
        self, connection: ConsulConnection, session: requests.Session | None = None
    ) -> None:
        self.base_url = connection.base_url
        self._connect_timeout = connection.connect_timeout
        self.session = session or connection.session(pool_maxsize=POOL_SIZE)
        self._interrupter = PollInterrupter()
        self._interrupter.install(self.session)

    def __call__(self, request: Request) -> Response:
        """Send ``request``; raise TransportError if no answer came."""
        return send_with_session(self.session, self.base_url, self._connect_timeout, request)

    def interrupt(self) -> None:
        """End every request in flight and refuse new ones (idempotent)."""
        self._interrupter.interrupt()

    def close(self) -> None:
        """Interrupt, then close the session's pools."""
        self.interrupt()
        self.session.close()


class HttpxSender:
    """Sends Requests to one agent through an ``httpx.AsyncClient`` (one event loop).

    ``client`` is one already pointed at the agent (``ConsulConnection.httpx_kwargs()``);
    one made here is closed by ``aclose()``.
    """

    def __init__(
        self, connection: ConsulConnection, client: httpx.AsyncClient | None = None
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise missing("consul_discovery.client.aio", "httpx", exc) from exc

        self._httpx: Any = httpx
        self._connect_timeout = connection.connect_timeout
        self._extensions = connection.request_extensions()
        self.owns_client = client is None
        self.client = client or httpx.AsyncClient(**connection.httpx_kwargs())

    async def __call__(self, request: Request) -> Response:
        """Send ``request``; raise TransportError if no answer came."""
        httpx = self._httpx
        try:
            answer = await self.client.request(
                request.method,
                request.path,
                params=list(request.params),
                headers=dict(request.headers) or None,
                content=request.body or None,
                timeout=httpx.Timeout(request.timeout, connect=self._connect_timeout),
                extensions=self._extensions,
            )
        except httpx.HTTPError as exc:
            raise TransportError(classify_httpx(exc), _detail(exc)) from exc
        return Response(answer.status_code, dict(answer.headers), answer.content)

    async def aclose(self) -> None:
        """Close the client if this sender made it."""
        if self.owns_client:
            await self.client.aclose()
