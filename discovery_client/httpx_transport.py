"""httpx transports that call ``http://user-service/...`` by name, sync and asyncio.

    client = ServiceClient("127.0.0.1:8500")
    with httpx.Client(transport=DiscoveryTransport(client)) as http:
        http.get("http://user-service/users/42")

    transport = AsyncDiscoveryTransport("127.0.0.1:8500")
    async with httpx.AsyncClient(mounts={"http://user-service": transport}) as http:
        await http.get("http://user-service/users/42")
    # closing the AsyncClient closes the transport: its watch tasks are cancelled

Both are shells around the one core (discovery_client/attempt.py and state.py): the
watch, snapshots, pickers, load accounting, retry rules and ejection are those of
``ServiceClient``. What is theirs: sending through an inner httpx transport, telling
httpx' exceptions apart (``classify_httpx_error``) and sleeping between attempts.

* ``DiscoveryTransport`` (``httpx.Client``) drives a ``ServiceClient``: the same
  per-service state, threaded ``ConsulSource`` and policies as that client's requests
  calls (and its DiscoveryAdapter).
* ``AsyncDiscoveryTransport`` (``httpx.AsyncClient``) lives on an event loop: it watches
  with ``AsyncConsulSource`` (one asyncio task per service, no thread), awaits a new
  service's first resolution (bounded as a sync call's) and ``asyncio.sleep``s between
  attempts; nothing it does blocks the loop (the Balancer never blocks).

Routing is the adapter's (discovery_client/routing.py); other URLs go to ``fallback``
(a plain httpx transport). The inner transport keeps a pool per instance
(discovery_client/httpx_pools.py): httpx' one pool for all hosts keeps 20 idle
connections in all and walks every connection on every request, so 50 instances in
rotation would thrash it; per instance, each keeps its own. Each attempt goes to
the instance's address with ``Host`` set to it (as the requests path does), its
timeouts cut to what is left of the call's deadline, and trace headers injected
(discovery_client/propagation.py).

Errors stay httpx': a discovery failure raises ``httpx.ConnectError`` (for
AllAttemptsFailedError, the class of the last attempt's httpx error, e.g.
``httpx.ReadTimeout``) with the DiscoveryError as ``__cause__``, so ``except
httpx.TransportError`` clauses keep working. A response that was retried is read and
closed first (its connection goes back to the pool); a response kept while a later
attempt failed comes back buffered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NoReturn

from consul_discovery.extras import missing

try:
    import httpx
except ImportError as exc:
    raise missing(__name__, "httpx", exc) from exc

from consul_discovery.client.aio import AsyncConsulSource
from consul_discovery.client.attempt import AttemptPlan, Outcome
from consul_discovery.client.client import (
    DEFAULT_CONFIG,
    DEFAULT_EJECTION,
    DEFAULT_RETRY,
    ServiceClient,
)
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.errors import AllAttemptsFailedError, DiscoveryError
from consul_discovery.client.httpx_pools import AsyncPerInstanceTransport, PerInstanceTransport
from consul_discovery.client.load import Endpoint
from consul_discovery.client.propagation import inject
from consul_discovery.client.retry import ErrorKind, RetryPolicy
from consul_discovery.client.routing import service_for
from consul_discovery.client.state import ServiceStates
from consul_discovery.connection import ConsulConnection

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TIMEOUT_KEYS = ("connect", "read", "write", "pool")
_CONNECT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Errors during or after sending: the request may have reached the instance.
_READ = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def classify_httpx_error(error: BaseException) -> ErrorKind:
    """Say whether ``error`` (from an httpx transport) happened before the request was sent."""
    if isinstance(error, _CONNECT):
        return ErrorKind.CONNECT
    if isinstance(error, _READ):
        return ErrorKind.READ
    if isinstance(error, OSError):
        return ErrorKind.READ
    return ErrorKind.FATAL  # UnsupportedProtocol, LocalProtocolError, ProxyError, ...


def _replayable(request: httpx.Request) -> bool:
    # A body given as bytes, str, JSON or a form is a ByteStream; an iterator is not.
    return isinstance(request.stream, httpx.ByteStream)


def _instance_url(url: httpx.URL, host: str, port: int | None) -> httpx.URL:
    """``url`` with its host and port replaced.

    ``URL.copy_with`` parses and validates the whole URL again (about a third of the
    transport's own cost per call); an already parsed URL only needs its host and port
    swapped in its parse result. IPv6 hosts, and any httpx whose URL is built otherwise,
    take ``copy_with``.
    """
    parsed = getattr(url, "_uri_reference", None)
    if ":" in host or not hasattr(parsed, "_replace"):
        return url.copy_with(host=host, port=port)
    fast = httpx.URL.__new__(httpx.URL)
    if port == _DEFAULT_PORTS.get(url.scheme):
        port = None  # as copy_with does: a default port is not spelled out
    fast._uri_reference = parsed._replace(host=host, port=port)  # type: ignore[union-attr]
    return fast


def _attempt_request(
    request: httpx.Request, endpoint: Endpoint, plan: AttemptPlan
) -> httpx.Request:
    """The request for one attempt: the instance's address, its timeouts cut to the deadline.

    A shallow copy of ``request`` (``__init__`` would prepare headers and parse the URL
    again): the same method and body stream; its own URL, headers and extensions.
    """
    inst = endpoint.instance
    headers = request.headers.copy()
    url = _instance_url(request.url, inst.address, inst.port)
    headers["Host"] = url.netloc.decode("ascii")
    extensions = dict(request.extensions)
    timeouts = extensions.get("timeout") or {}
    extensions["timeout"] = {key: plan.cap(timeouts.get(key)) for key in _TIMEOUT_KEYS}
    attempt = httpx.Request.__new__(httpx.Request)
    attempt.__dict__.update(request.__dict__)
    attempt.url, attempt.headers, attempt.extensions = url, headers, extensions
    return attempt


def _buffered(response: httpx.Response, raw: bytes) -> httpx.Response:
    """A response already read (``raw``, still encoded) and closed, as a fresh one."""
    extensions = {k: v for k, v in response.extensions.items() if k != "network_stream"}
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=extensions,
    )


def _raise_as_httpx(exc: DiscoveryError, request: httpx.Request) -> NoReturn:
    """Raise ``exc`` as an httpx exception (``exc`` chained as its cause)."""
    cls: type[httpx.TransportError] = httpx.ConnectError
    if isinstance(exc, AllAttemptsFailedError):
        last = exc.attempts[-1][1] if exc.attempts else None
        if isinstance(last, httpx.TransportError):
            cls = type(last)
    raise cls(str(exc), request=request) from exc


class DiscoveryTransport(httpx.BaseTransport):
    """An ``httpx.Client`` transport that sends service-named URLs through a ServiceClient.

    ``only`` restricts discovery to these service names (else the routing rule of
    discovery_client/routing.py). ``inner`` sends each attempt (default: a
    ``PerInstanceTransport``, a pool per instance); ``fallback`` takes every other
    URL. ``limits`` are those of each instance's pool (discovery_client/httpx_pools.py).
    ``close()`` closes both; the ServiceClient belongs to its creator.
    """

    def __init__(
        self,
        client: ServiceClient,
        only: Iterable[str] | None = None,
        *,
        inner: httpx.BaseTransport | None = None,
        fallback: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.client = client
        self.only: frozenset[str] | None = None if only is None else frozenset(only)
        self.inner = inner or PerInstanceTransport(limits)
        self.fallback = fallback or httpx.HTTPTransport()

    def service_for(self, url: httpx.URL) -> str | None:
        """The service a URL names, or None when it should go to ``fallback``."""
        return service_for(
            url.scheme, url.host, url.port, only=self.only, known=self.client.services
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send through discovery if the host is a service name, else through ``fallback``."""
        service = self.service_for(request.url)
        if service is None:
            return self.fallback.handle_request(request)
        inject(request.headers)
        try:
            plan = self.client.plan(
                service, request.method, request.headers, replayable=_replayable(request)
            )
            return self._run(plan, request)
        except DiscoveryError as exc:
            _raise_as_httpx(exc, request)

    def _run(self, plan: AttemptPlan, request: httpx.Request) -> httpx.Response:
        response: httpx.Response | None = None
        while True:
            endpoint = plan.next_endpoint()
            if endpoint is not None:
                attempt = _attempt_request(request, endpoint, plan)
                try:
                    answer = self.inner.handle_request(attempt)
                except (httpx.TransportError, OSError) as exc:
                    kind = classify_httpx_error(exc)
                    plan.record(Outcome.failure(kind, exc))
                    if kind is ErrorKind.FATAL:
                        raise
                except BaseException:
                    plan.abandon()
                    raise
                else:
                    plan.record(Outcome.answer(answer.status_code, answer.headers))
                    if response is not None:
                        response.close()
                    response = answer
            if not plan.decide():
                break
            if response is not None and not response.is_closed:
                # Free its connection before waiting; keep it in case no attempt answers.
                try:
                    raw = b"".join(response.iter_raw())
                finally:
                    response.close()
                response = _buffered(response, raw)
            self.client._sleep(plan.delay)
        if response is None:
            plan.raise_failure()
        return response

    def close(self) -> None:
        """Close the inner and fallback transports (not the ServiceClient)."""
        self.inner.close()
        self.fallback.close()


class AsyncDiscoveryTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` transport: discovery on the event loop, no thread per service.

    The knobs of ``ServiceClient`` (``consul_addr``/``connection``, ``services`` configs,
    ``default_config``, ``retry``, ``ejection``, ``resolve_timeout``, injected ``clock``,
    ``rng`` and ``sleep``); ``source`` defaults to an ``AsyncConsulSource`` made here and
    closed (its watch tasks cancelled) by ``aclose()``. ``only``, ``inner``, ``fallback``
    and ``limits`` as for ``DiscoveryTransport``. Use it from one event loop.
    """

    def __init__(
        self,
        consul_addr: str | None = None,
        *,
        connection: ConsulConnection | None = None,
        source: AsyncConsulSource | None = None,
        services: Mapping[str, ServiceConfig] | None = None,
        only: Iterable[str] | None = None,
        default_config: ServiceConfig = DEFAULT_CONFIG,
        retry: RetryPolicy = DEFAULT_RETRY,
        ejection: EjectionPolicy = DEFAULT_EJECTION,
        resolve_timeout: float = 5.0,
        inner: httpx.AsyncBaseTransport | None = None,
        fallback: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.services: Mapping[str, ServiceConfig] = dict(services or {})
        self.default_config = default_config
        self.retry = retry
        self.resolve_timeout = resolve_timeout
        self.only: frozenset[str] | None = None if only is None else frozenset(only)
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._owns_source = source is None
        self.source = source or AsyncConsulSource(
            consul_addr, connection=connection, service_config=self.config_for
        )
        self.inner = inner or AsyncPerInstanceTransport(limits)
        self.fallback = fallback or httpx.AsyncHTTPTransport()
        self._states = ServiceStates(
            self.config_for,
            self.source.subscribe,
            retry=retry,
            ejection=ejection,
            clock=clock,
            rng=self._rng,
        )

    def config_for(self, service: str) -> ServiceConfig:
        """The ServiceConfig used for ``service`` (its entry in ``services`` or the default)."""
        return self.services.get(service, self.default_config)

    def service_for(self, url: httpx.URL) -> str | None:
        """The service a URL names, or None when it should go to ``fallback``."""
        return service_for(url.scheme, url.host, url.port, only=self.only, known=self.services)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send through discovery if the host is a service name, else through ``fallback``."""
        service = self.service_for(request.url)
        if service is None:
            return await self.fallback.handle_async_request(request)
        inject(request.headers)
        try:
            plan = await self._plan(service, request)
            return await self._run(plan, request)
        except DiscoveryError as exc:
            _raise_as_httpx(exc, request)

    async def _plan(self, service: str, request: httpx.Request) -> AttemptPlan:
        """The call's plan once the service is resolved (awaited, never blocking the loop)."""
        policy = self.retry
        started = self._clock()
        state = self._states.get(service)
        if not state.ready:
            wait = max(0.0, min(self.resolve_timeout, policy.deadline))
            state.adopt(await self.source.resolve(service, timeout=wait))
        return AttemptPlan(
            state,
            policy,
            request.method,
            request.headers,
            replayable=_replayable(request),
            clock=self._clock,
            rng=self._rng,
            started=started,
        )

    async def _run(self, plan: AttemptPlan, request: httpx.Request) -> httpx.Response:
        response: httpx.Response | None = None
        while True:
            endpoint = plan.next_endpoint()
            if endpoint is not None:
                attempt = _attempt_request(request, endpoint, plan)
                try:
                    answer = await self.inner.handle_async_request(attempt)
                except (httpx.TransportError, OSError) as exc:
                    kind = classify_httpx_error(exc)
                    plan.record(Outcome.failure(kind, exc))
                    if kind is ErrorKind.FATAL:
                        raise
                except BaseException:  # a cancellation: keep the in-flight count right
                    plan.abandon()
                    raise
                else:
                    plan.record(Outcome.answer(answer.status_code, answer.headers))
                    if response is not None:
                        await response.aclose()
                    response = answer
            if not plan.decide():
                break
            if response is not None and not response.is_closed:
                # Free its connection before waiting; keep it in case no attempt answers.
                try:
                    raw = b"".join([chunk async for chunk in response.aiter_raw()])
                finally:
                    await response.aclose()
                response = _buffered(response, raw)
            await self._sleep(plan.delay)
        if response is None:
            plan.raise_failure()
        return response

    def stats(self) -> dict[str, Any]:
        """A plain-dict snapshot per service, as ``ServiceClient.stats()``."""
        services = {}
        for name, state in self._states.items():
            snap = state.stats()
            current = self.source.cached(name)
            if current is not None:
                snap.update(
                    cache_age=current.age(self._clock()),
                    stale=current.stale,
                    error=current.error,
                )
            services[name] = snap
        return {"services": services}

    async def aclose(self) -> None:
        """Cancel the watch tasks (if the source is ours) and close the inner transports."""
        if not self._states.close():
            return
        if self._owns_source:
            await self.source.aclose()
        await self.inner.aclose()
        await self.fallback.aclose()
