"""ServiceClient: call a service by name over one pooled requests.Session.

    with ServiceClient() as client:          # Consul as CONSUL_HTTP_ADDR etc. say
        response = client.get("user-service", "/users/42", timeout=(0.5, 2.0))

A thin shell over the one core (consul_discovery.client.core): per-Target state created
at once and without I/O, "resolving" until its first Resolution; a call to a service not
resolved yet waits for it, bounded by ``resolve_timeout`` and the call's deadline, on
that service alone (no lock another service needs is held while it waits; the source
caches a failed resolve and retries it with backoff instead of every call asking Consul
again). Later calls never touch the network before picking. What is requests' own is in
consul_discovery.client.call; the loop is driven by drivers.SyncDriver.

A call returns the HTTP response of its final attempt as is
(a 503 that could not be retried comes back as a 503, for a gateway to relay); it
raises NoHealthyInstanceError when there is no instance to pick and
AllAttemptsFailedError only when no attempt produced any response.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from consul_discovery.client.arguments import request_timeout
from consul_discovery.client.balancer import Balancer
from consul_discovery.client.call import SHELL, Timeout, path_of, sender
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.core import (
    DEFAULT_CONFIG,
    DEFAULT_EJECTION,
    DEFAULT_RETRY,
    DiscoveryCore,
)
from consul_discovery.client.drivers import SyncDriver
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.pool import InstancePoolAdapter, MeshPoolAdapter
from consul_discovery.client.prepare import prepare_request
from consul_discovery.client.propagation import inject
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.route import RequestView
from consul_discovery.client.source import InstanceSource
from consul_discovery.client.stats import ClientStats
from consul_discovery.connection import ConsulConnection

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

DEFAULT_TIMEOUT: tuple[float, float] = (1.0, 10.0)
_SEND_KWARGS = ("timeout", "allow_redirects", "stream", "verify", "cert", "proxies")

__all__ = ["DEFAULT_CONFIG", "DEFAULT_EJECTION", "DEFAULT_RETRY", "DEFAULT_TIMEOUT",
           "ServiceClient"]  # fmt: skip


class ServiceClient:
    """Calls services by name: resolve, pick, send, retry on another instance, eject.

    ``source`` defaults to a ConsulSource on ``connection`` (default: Consul's own
    environment variables, see consul_connection) with ``consul_addr``, when given,
    as its address; a source the client made is closed by ``close()``, one passed in is
    left to its owner, as is a passed-in ``session``. The Session the client makes keeps
    a connection pool per instance in rotation (discovery_client/pool.py) and has
    ``trust_env = False``: instance addresses come from Consul and never go through
    environment proxies or netrc. ``metrics_registry`` is a Prometheus registry of this
    client's own (made on first use; ``registry`` to use another), so any number of
    clients can coexist. ``identity`` is the caller's mesh identity (a started
    ``ServiceIdentity``) for services with ``ServiceConfig(connect=True)``; default: the
    process's own of ``SERVICE_NAME`` (consul_discovery.client.connect).
    """

    def __init__(
        self,
        consul_addr: str | None = None,
        *,
        connection: ConsulConnection | None = None,
        source: InstanceSource | None = None,
        services: Mapping[str, ServiceConfig] | None = None,
        default_config: ServiceConfig = DEFAULT_CONFIG,
        retry: RetryPolicy = DEFAULT_RETRY,
        ejection: EjectionPolicy = DEFAULT_EJECTION,
        timeout: Timeout = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        resolve_timeout: float = 5.0,
        pool_maxsize: int = 32,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        identity: Any = None,
    ) -> None:
        self.timeout = request_timeout("timeout", timeout)
        self._owns_source = source is None
        if source is None:
            from consul_discovery.client.consul_source import ConsulSource

            source = ConsulSource(
                consul_addr,
                connection=connection,
                service_config=lambda name: self.core.config_for(name),
            )
        self.source: InstanceSource = source
        try:  # the core checks its knobs: a source made for it is closed if one is wrong
            self.core = DiscoveryCore(
                source,
                services=services,
                default_config=default_config,
                retry=retry,
                ejection=ejection,
                resolve_timeout=resolve_timeout,
                clock=clock,
                rng=rng,
                registry=registry,
                identity=identity,
            )
        except (TypeError, ValueError):
            if self._owns_source:
                source.close()
            raise
        self.driver: SyncDriver[requests.Response] = SyncDriver(self.core, source.resolve, sleep)
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            session.trust_env = False
            # One keep-alive pool per instance in rotation, however many (pool.py).
            session.mount("http://", InstancePoolAdapter(pool_maxsize=pool_maxsize))
            session.mount("https://", MeshPoolAdapter(pool_maxsize=pool_maxsize))
        self.session = session

    # ---- configuration (the core's) ------------------------------------------------

    @property
    def services(self) -> Mapping[str, ServiceConfig]:
        """The per-service configs."""
        return self.core.services

    @property
    def default_config(self) -> ServiceConfig:
        """The config of a service not in ``services``."""
        return self.core.default_config

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call (unless a call passes its own)."""
        return self.core.retry

    @property
    def ejection(self) -> EjectionPolicy:
        """The outlier ejection policy."""
        return self.core.ejection

    @property
    def resolve_timeout(self) -> float:
        """How long a call may wait for its service's first resolution."""
        return self.core.resolve_timeout

    def config_for(self, service: str) -> ServiceConfig:
        """The ServiceConfig used for ``service`` (its entry in ``services`` or the default)."""
        return self.core.config_for(service)

    def balancer(self, service: str) -> Balancer:
        """The Balancer of ``service``, waiting (up to ``resolve_timeout``) for its first state."""
        state = self.core.state(service)
        self.driver.ready(state, self.core.clock())
        return state.balancer

    # ---- calling --------------------------------------------------------------------

    def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        retry: RetryPolicy | None = None,
        source_ip: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Call ``method path`` on an instance of ``service``; kwargs as ``requests.request``.

        ``retry`` overrides the client's RetryPolicy for this call. ``timeout`` defaults
        to the client's and is cut to what is left of the call's deadline.
        ``source_ip``: the address the call comes from on behalf of (a gateway's client),
        for a resolver's ``SourceIP`` hash policy; it is not sent.
        """
        send_kwargs = {k: kwargs.pop(k) for k in _SEND_KWARGS if k in kwargs} if kwargs else {}
        path = RequestView.absolute(path)
        request = requests.Request(method=method.upper(), url=f"http://{service}{path}", **kwargs)
        prepared = prepare_request(self.session, request)  # as Session.prepare_request
        return self.send(service, prepared, retry=retry, source_ip=source_ip, **send_kwargs)

    def send(
        self,
        service: str,
        prepared: requests.PreparedRequest,
        *,
        retry: RetryPolicy | None = None,
        timeout: Timeout = None,
        stream: bool = False,
        source_ip: str | None = None,
        **send_kwargs: Any,
    ) -> requests.Response:
        """Send a prepared request to ``service``; its URL's scheme and host are replaced.

        ``send_kwargs`` are those of ``Session.send`` (verify, cert, proxies,
        allow_redirects). This is the seam DiscoveryAdapter uses. Headers propagated in
        the current context (trace context: ``consul_discovery.client.propagation``) are
        added. Unless ``stream``, each attempt reads its answer's body: a body cut short
        is that attempt's read error, retried as the retry rule allows.
        ``source_ip`` as for ``request``.
        """
        headers = prepared.headers
        inject(headers)  # type: ignore[arg-type]
        path = path_of(prepared.url or "", service)
        body = prepared.body
        timeout = self.timeout if timeout is None else request_timeout("timeout", timeout)
        response = self.driver.call(
            service,
            RequestView(prepared.method or "GET", path, headers, source_ip),  # type: ignore[arg-type]
            SHELL,
            sender(self.session, prepared, path, timeout, send_kwargs, not stream),
            body is None or isinstance(body, bytes | str),  # replayable: not streamed
            retry,
        )
        return response  # unless ``stream``, its body was read within the final attempt

    def get(self, service: str, path: str, **kwargs: Any) -> requests.Response:
        """GET ``path`` on ``service``."""
        return self.request(service, "GET", path, **kwargs)

    def head(self, service: str, path: str, **kwargs: Any) -> requests.Response:
        """HEAD ``path`` on ``service``."""
        return self.request(service, "HEAD", path, **kwargs)

    def post(self, service: str, path: str, **kwargs: Any) -> requests.Response:
        """POST to ``path`` on ``service`` (retried after sending only with Idempotency-Key)."""
        return self.request(service, "POST", path, **kwargs)

    def put(self, service: str, path: str, **kwargs: Any) -> requests.Response:
        """PUT ``path`` on ``service``."""
        return self.request(service, "PUT", path, **kwargs)

    def patch(self, service: str, path: str, **kwargs: Any) -> requests.Response:
        """PATCH ``path`` on ``service`` (retried after sending only with Idempotency-Key)."""
        return self.request(service, "PATCH", path, **kwargs)

    def delete(self, service: str, path: str, **kwargs: Any) -> requests.Response:
        """DELETE ``path`` on ``service``."""
        return self.request(service, "DELETE", path, **kwargs)

    # ---- observability and lifecycle ------------------------------------------------

    def stats(self) -> ClientStats:
        """A typed snapshot: per Target, its resolution, freshness, counters and instances."""
        return self.core.stats()

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """This client's Prometheus registry (needs prometheus_client)."""
        return self.core.metrics_registry

    def close(self) -> None:
        """Close the source and session if this client made them."""
        if not self.core.close():
            return
        if self._owns_source:
            self.source.close()
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
