"""httpx transports that call ``http://user-service/...`` by name, sync and asyncio.

    with httpx.Client(transport=DiscoveryTransport()) as http:
        http.get("http://user-service/users/42")

    transport = AsyncDiscoveryTransport()
    async with httpx.AsyncClient(mounts={"http://user-service": transport}) as http:
        await http.get("http://user-service/users/42")
    # closing the AsyncClient closes the transport: its watch tasks are cancelled

Both are thin shells over the one core (consul_discovery.client.core): config, per-Target
state, readiness, the attempt plan and loop, stats and metrics are the ones every
transport shares. What is theirs: routing a URL (discovery_client/routing.py; other URLs
go to ``fallback``), sending each attempt through an inner transport with a pool per
instance (discovery_client/httpx_pools.py), httpx' exceptions and responses
(consul_discovery.client.httpx_shell), and waiting: blocking (drivers.SyncDriver) or on
the event loop (drivers.AsyncDriver).

* ``DiscoveryTransport`` (``httpx.Client``) makes its own core over a threaded
  ``ConsulSource``, or shares a ``ServiceClient``'s (``DiscoveryTransport(client)``: the
  same per-Target state, watch and policies as that client's requests calls).
* ``AsyncDiscoveryTransport`` (``httpx.AsyncClient``) lives on an event loop: it watches
  with ``AsyncConsulSource`` (one asyncio task per service, no thread), awaits a new
  service's first resolution and ``asyncio.sleep``s between attempts; nothing it does
  blocks the loop.

Errors stay httpx': a discovery failure raises ``httpx.ConnectError`` (for
AllAttemptsFailedError, the class of the last attempt's httpx error, e.g.
``httpx.ReadTimeout``) with the DiscoveryError as ``__cause__``. A response that was
retried is read and closed first (its connection goes back to the pool); a response kept
while a later attempt failed comes back buffered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from consul_discovery.extras import missing

try:
    import httpx
except ImportError as exc:
    raise missing(__name__, "httpx", exc) from exc

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.core import (
    DEFAULT_CONFIG,
    DEFAULT_EJECTION,
    DEFAULT_RETRY,
    DiscoveryCore,
)
from consul_discovery.client.drivers import AsyncDriver, SyncDriver
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.errors import DiscoveryError
from consul_discovery.client.httpx_pools import (
    AsyncPerInstanceTransport,
    PerInstanceTransport,
    default_ssl_context,
)
from consul_discovery.client.httpx_shell import (
    ASYNC_SHELL,
    SYNC_SHELL,
    attempt_request,
    classify_httpx_error,
    raise_as_httpx,
    replayable,
    url_service,
)
from consul_discovery.client.load import Endpoint
from consul_discovery.client.propagation import inject
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.route import RequestChanges, RequestView
from consul_discovery.client.routing import Router
from consul_discovery.client.stats import ClientStats
from consul_discovery.connection import ConsulConnection

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from consul_discovery.client.aio import AsyncConsulSource
    from consul_discovery.client.client import ServiceClient

__all__ = ["AsyncDiscoveryTransport", "DiscoveryTransport", "classify_httpx_error"]


async def _changed(sent: Awaitable[httpx.Response], changes: RequestChanges) -> httpx.Response:
    """The answer with a chain route's response header modifiers applied."""
    response = await sent
    changes.response_headers(response.headers)
    return response


#: ``httpx`` request extension naming the address a call comes from on behalf of (a
#: gateway's client), for a resolver's ``SourceIP`` hash policy:
#: ``client.get(url, extensions={"source_ip": "203.0.113.9"})``. It is not sent.
SOURCE_IP_EXTENSION = "source_ip"


class HttpxView(RequestView):
    """An httpx request as routing sees it: made with four slot writes per call; the
    path, query and source address are read from the request only when routing asks."""

    __slots__ = ("request",)

    def __init__(self, request: httpx.Request) -> None:
        self.request = request  # the call's own (each attempt sends a copy)
        self.method = request.method
        self.headers = request.headers
        self._path = None

    @property
    def raw_path(self) -> str:
        """The path and query as sent."""
        return self.request.url.raw_path.decode("ascii")

    @property
    def source_ip(self) -> str | None:  # type: ignore[override]
        """The ``source_ip`` request extension, when the caller gave one."""
        return self.request.extensions.get(SOURCE_IP_EXTENSION)  # type: ignore[no-any-return]


class DiscoveryTransport(httpx.BaseTransport):
    """An ``httpx.Client`` transport that sends service-named URLs through discovery.

    With ``client`` (a ServiceClient) it shares that client's core, source and sleep;
    otherwise it makes its own core over a threaded ConsulSource (closed by ``close()``)
    from the knobs ServiceClient takes (``consul_addr``/``connection`` or ``source``,
    ``services``, ``default_config``, ``retry``, ``ejection``, ``resolve_timeout``,
    ``registry``, injected ``clock``, ``rng`` and ``sleep``). ``only`` restricts discovery
    to these service names (else the routing rule of discovery_client/routing.py).
    ``inner`` sends each attempt (default: a ``PerInstanceTransport``, a pool per
    instance, ``limits`` each); ``fallback`` takes every other URL. ``close()`` closes
    both (and the source if the transport made it); a ServiceClient belongs to its creator.
    """

    def __init__(
        self,
        client: ServiceClient | None = None,
        only: Iterable[str] | None = None,
        *,
        consul_addr: str | None = None,
        connection: ConsulConnection | None = None,
        source: Any | None = None,
        services: Mapping[str, ServiceConfig] | None = None,
        default_config: ServiceConfig = DEFAULT_CONFIG,
        retry: RetryPolicy = DEFAULT_RETRY,
        ejection: EjectionPolicy = DEFAULT_EJECTION,
        resolve_timeout: float = 5.0,
        inner: httpx.BaseTransport | None = None,
        fallback: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        identity: Any = None,
    ) -> None:
        if client is not None and not hasattr(client, "core"):
            hint = " (the Consul address goes in consul_addr=)" if isinstance(client, str) else ""
            raise TypeError(
                f"DiscoveryTransport's first argument must be a ServiceClient or None; got "
                f"{type(client).__name__} {client!r}{hint}"
            )
        self.client = client
        self._owns_source = False
        if client is not None:
            given = [name for name, value in (("consul_addr", consul_addr),
                     ("connection", connection), ("source", source), ("services", services),
                     ("registry", registry), ("identity", identity))
                     if value is not None]  # fmt: skip
            if given:
                raise ValueError(
                    f"DiscoveryTransport(client, ...) shares the client's core; "
                    f"configure the ServiceClient instead of passing {', '.join(given)}"
                )
            self.core: DiscoveryCore = client.core
            self.source = client.source
            self.driver: SyncDriver[httpx.Response] = client.driver  # type: ignore[assignment]
        else:
            if source is None:
                from consul_discovery.client.consul_source import ConsulSource

                source = ConsulSource(
                    consul_addr,
                    connection=connection,
                    service_config=lambda name: self.core.config_for(name),
                )
                self._owns_source = True
            self.source = source
            try:  # the core checks its knobs: a source made for it is closed if one is wrong
                self.core = DiscoveryCore(
                    source, services=services, default_config=default_config, retry=retry,
                    ejection=ejection, resolve_timeout=resolve_timeout, clock=clock, rng=rng,
                    registry=registry, identity=identity,
                )  # fmt: skip
            except (TypeError, ValueError):
                if self._owns_source:
                    source.close()
                raise
            self.driver = SyncDriver(self.core, source.resolve, sleep)
        self.router = Router(only, self.core.services)
        self.inner = inner or PerInstanceTransport(limits)
        self.fallback = fallback or httpx.HTTPTransport(verify=default_ssl_context())
        self._send = self._send_attempt  # bound once: every call hands it to the driver

    @property
    def only(self) -> frozenset[str] | None:
        """The service names discovery is restricted to (None: the routing rule's)."""
        return self.router.only

    def service_for(self, url: httpx.URL) -> str | None:
        """The service a URL names, or None when it should go to ``fallback``."""
        return url_service(self.router, url)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send through discovery if the host is a service name, else through ``fallback``."""
        service = url_service(self.router, request.url)
        if service is None:
            return self.fallback.handle_request(request)
        inject(request.headers)
        try:
            return self.driver.call(service, HttpxView(request), SYNC_SHELL, self._send,
                                    replayable(request))  # fmt: skip
        except DiscoveryError as exc:
            raise_as_httpx(exc, request)

    def _send_attempt(self, endpoint: Endpoint, plan: AttemptPlan) -> httpx.Response:
        """Send one attempt of the call ``plan`` is for (its view holds the request)."""
        request: httpx.Request = plan.request.request  # type: ignore[attr-defined]
        response = self.inner.handle_request(attempt_request(request, endpoint, plan))
        changes = plan.route.changes
        if changes is not None:  # a chain route's response header modifiers
            changes.response_headers(response.headers)
        return response

    def stats(self) -> ClientStats:
        """The core's typed snapshot (shared with the ServiceClient, if any)."""
        return self.core.stats()

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The core's Prometheus registry (needs prometheus_client)."""
        return self.core.metrics_registry

    def close(self) -> None:
        """Close the inner and fallback transports, and the core and source if they are
        this transport's own (not a ServiceClient's)."""
        self.inner.close()
        self.fallback.close()
        if self.client is None and self.core.close() and self._owns_source:
            self.source.close()


class AsyncDiscoveryTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` transport: discovery on the event loop, no thread per service.

    The knobs of ``ServiceClient`` (``consul_addr``/``connection``, ``services`` configs,
    ``default_config``, ``retry``, ``ejection``, ``resolve_timeout``, ``registry``,
    injected ``clock``, ``rng`` and ``sleep``); ``source`` defaults to an
    ``AsyncConsulSource`` made here and closed (its watch tasks cancelled) by
    ``aclose()``. ``only``, ``inner``, ``fallback`` and ``limits`` as for
    ``DiscoveryTransport``. Use it from one event loop.
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
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        identity: Any = None,
    ) -> None:
        self._owns_source = source is None
        if source is None:
            from consul_discovery.client.aio import AsyncConsulSource

            source = AsyncConsulSource(
                consul_addr,
                connection=connection,
                service_config=lambda name: self.core.config_for(name),
            )
        self.source = source
        self.core = DiscoveryCore(
            source, services=services, default_config=default_config, retry=retry,
            ejection=ejection, resolve_timeout=resolve_timeout, clock=clock, rng=rng,
            registry=registry, identity=identity,
        )  # fmt: skip
        self.driver: AsyncDriver[httpx.Response] = AsyncDriver(self.core, source.resolve, sleep)
        self.router = Router(only, self.core.services)
        self.inner = inner or AsyncPerInstanceTransport(limits)
        self.fallback = fallback or httpx.AsyncHTTPTransport(verify=default_ssl_context())
        self._send = self._send_attempt  # bound once: every call hands it to the driver

    @property
    def services(self) -> Mapping[str, ServiceConfig]:
        """The per-service configs."""
        return self.core.services

    def config_for(self, service: str) -> ServiceConfig:
        """The ServiceConfig used for ``service`` (its entry in ``services`` or the default)."""
        return self.core.config_for(service)

    @property
    def only(self) -> frozenset[str] | None:
        """The service names discovery is restricted to (None: the routing rule's)."""
        return self.router.only

    def service_for(self, url: httpx.URL) -> str | None:
        """The service a URL names, or None when it should go to ``fallback``."""
        return url_service(self.router, url)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send through discovery if the host is a service name, else through ``fallback``."""
        service = url_service(self.router, request.url)
        if service is None:
            return await self.fallback.handle_async_request(request)
        inject(request.headers)
        try:
            return await self.driver.call(service, HttpxView(request), ASYNC_SHELL, self._send,
                                          replayable(request))  # fmt: skip
        except DiscoveryError as exc:
            raise_as_httpx(exc, request)

    def _send_attempt(self, endpoint: Endpoint, plan: AttemptPlan) -> Awaitable[httpx.Response]:
        """Send one attempt of the call ``plan`` is for (its view holds the request)."""
        request: httpx.Request = plan.request.request  # type: ignore[attr-defined]
        sent = self.inner.handle_async_request(attempt_request(request, endpoint, plan))
        changes = plan.route.changes
        return sent if changes is None else _changed(sent, changes)

    def stats(self) -> ClientStats:
        """The core's typed snapshot, as ``ServiceClient.stats()``."""
        return self.core.stats()

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The core's Prometheus registry (needs prometheus_client)."""
        return self.core.metrics_registry

    async def aclose(self) -> None:
        """Cancel the watch tasks (if the source is ours) and close the inner transports."""
        if not self.core.close():
            return
        if self._owns_source:
            await self.source.aclose()
        await self.inner.aclose()
        await self.fallback.aclose()
