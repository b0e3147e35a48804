"""ServiceClient: call a service by name over one pooled requests.Session.

    with ServiceClient("127.0.0.1:8500") as client:
        response = client.get("user-service", "/users/42", timeout=(0.5, 2.0))

Per service, state is created at once and without I/O (grpc-go's per-target
ClientConn): a Balancer subscribed to the source, starting out "resolving". A call to a
service not resolved yet waits for its first resolution, bounded by ``resolve_timeout``
and the call's deadline, on that service alone: no lock another service needs is held
while it waits, and the source caches a failed resolve (retrying it with backoff) instead
of every call asking Consul again. Later calls never touch the network before picking.

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
from typing import Any

import requests
from prometheus_client import CollectorRegistry

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.balancer import Balancer
from consul_discovery.client.call import Call, Timeout
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.errors import DiscoveryError
from consul_discovery.client.metrics import ClientCollector
from consul_discovery.client.pool import InstancePoolAdapter
from consul_discovery.client.propagation import inject
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.source import InstanceSource
from consul_discovery.client.state import ServiceState, ServiceStates
from consul_discovery.connection import ConsulConnection

DEFAULT_TIMEOUT: tuple[float, float] = (1.0, 10.0)
# Frozen values, so shared defaults are safe.
DEFAULT_CONFIG = ServiceConfig()
DEFAULT_RETRY = RetryPolicy()
DEFAULT_EJECTION = EjectionPolicy()
_SEND_KWARGS = ("timeout", "allow_redirects", "stream", "verify", "cert", "proxies")


class ServiceClient:
    """Calls services by name: resolve, pick, send, retry on another instance, eject.

    ``source`` defaults to a ConsulSource on ``connection`` (default: Consul's own
    environment variables, see consul_connection) with ``consul_addr``, when given,
    as its address; a source the client
    made is closed by ``close()``, one passed in is left to its owner, as is a passed-in
    ``session``. The Session the client makes keeps a connection pool per instance in
    rotation (discovery_client/pool.py) and has ``trust_env = False``: instance
    addresses come from Consul and never go through environment proxies or netrc.
    Metrics go to ``registry`` (default: a CollectorRegistry of this client's own, as
    ``metrics_registry``, so any number of clients can coexist).
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
    ) -> None:
        self.services: Mapping[str, ServiceConfig] = dict(services or {})
        self.default_config = default_config
        self.retry = retry
        self.ejection = ejection
        self.timeout = timeout
        self.resolve_timeout = resolve_timeout
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._owns_source = source is None
        if source is None:
            from consul_discovery.client.consul_source import ConsulSource

            source = ConsulSource(
                consul_addr, connection=connection, service_config=self.config_for
            )
        self.source: InstanceSource = source
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            session.trust_env = False
            # One keep-alive pool per instance in rotation, however many (pool.py).
            adapter = InstancePoolAdapter(pool_maxsize=pool_maxsize)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self._states = ServiceStates(
            self.config_for,
            self.source.subscribe,
            retry=retry,
            ejection=ejection,
            clock=clock,
            rng=self._rng,
        )
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        self.metrics_registry.register(ClientCollector(self))

    # ---- configuration and per-service state ----------------------------------------

    def config_for(self, service: str) -> ServiceConfig:
        """The ServiceConfig used for ``service`` (its entry in ``services`` or the default)."""
        return self.services.get(service, self.default_config)

    def balancer(self, service: str) -> Balancer:
        """The Balancer of ``service``, waiting (up to ``resolve_timeout``) for its first state."""
        state = self._state(service)
        self._ready(service, state, self.resolve_timeout)
        return state.balancer

    def _state(self, service: str) -> ServiceState:
        """The service's state, created on first use without any I/O."""
        return self._states.get(service)

    def _ready(self, service: str, state: ServiceState, timeout: float) -> None:
        """Make sure the balancer has a first Resolution, waiting at most ``timeout``.

        Many callers may wait at once: the source starts one watch and answers all of
        them from it (and from its cached error while it retries with backoff).
        """
        if state.ready:
            return
        state.adopt(self.source.resolve(service, timeout=max(0.0, timeout)))

    # ---- calling --------------------------------------------------------------------

    def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Call ``method path`` on an instance of ``service``; kwargs as ``requests.request``.

        ``retry`` overrides the client's RetryPolicy for this call. ``timeout`` defaults
        to the client's and is cut to what is left of the call's deadline.
        """
        send_kwargs = {k: kwargs.pop(k) for k in _SEND_KWARGS if k in kwargs}
        if not path.startswith("/"):
            path = "/" + path
        request = requests.Request(method=method.upper(), url=f"http://{service}{path}", **kwargs)
        prepared = self.session.prepare_request(request)
        return self.send(service, prepared, retry=retry, **send_kwargs)

    def send(
        self,
        service: str,
        prepared: requests.PreparedRequest,
        *,
        retry: RetryPolicy | None = None,
        timeout: Timeout = None,
        **send_kwargs: Any,
    ) -> requests.Response:
        """Send a prepared request to ``service``; its URL's scheme and host are replaced.

        ``send_kwargs`` are those of ``Session.send`` (stream, verify, cert, proxies,
        allow_redirects). This is the seam DiscoveryAdapter uses. Headers propagated in
        the current context (trace context: ``consul_discovery.client.propagation``) are added.
        """
        inject(prepared.headers)  # type: ignore[arg-type]
        plan = self.plan(
            service,
            prepared.method or "GET",
            prepared.headers,
            # A streamed or file body cannot be sent twice.
            replayable=prepared.body is None or isinstance(prepared.body, bytes | str),
            retry=retry,
        )
        timeout = self.timeout if timeout is None else timeout
        return Call(plan, self.session, prepared, timeout, send_kwargs).run(self._sleep)

    def plan(
        self,
        service: str,
        method: str,
        headers: Mapping[str, str] | None,
        *,
        replayable: bool,
        retry: RetryPolicy | None = None,
    ) -> AttemptPlan:
        """The attempt plan of one call to ``service``, once it is resolved.

        Waits for the service's first resolution (at most ``resolve_timeout`` and the
        policy's deadline) as every call does. The seam every transport drives: this
        client's ``send`` and the sync httpx transport (discovery_client/httpx_transport.py).
        """
        policy = retry or self.retry
        started = self._clock()
        state = self._state(service)
        self._ready(service, state, min(self.resolve_timeout, policy.deadline))
        return AttemptPlan(
            state,
            policy,
            method,
            headers,
            replayable=replayable,
            clock=self._clock,
            rng=self._rng,
            started=started,
        )

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

    def stats(self) -> dict[str, Any]:
        """A plain-dict snapshot: per service, its resolution, counters and instances."""
        services = {}
        for name, state in self._states.items():
            snap = state.stats()
            snap.update(self._freshness(name))
            services[name] = snap
        return {"services": services}

    def _freshness(self, service: str) -> dict[str, Any]:
        # The balancer only hears of changes; the source's cached Resolution also moves
        # its fetched_at on every unchanged poll, so it is what says how fresh the set is.
        # resolve() of an already-watched service is a cache read, no network; timeout 0
        # so that stats() never waits for a service still resolving.
        try:
            current = self.source.resolve(service, timeout=0.0)
        except DiscoveryError:
            return {}
        age = current.age(self._clock())
        return {
            "cache_age": age,
            "stale": current.stale,
            "error": current.error,
            "from_snapshot": current.from_snapshot,
            "snapshot_age": age if current.from_snapshot else 0.0,
        }

    def close(self) -> None:
        """Close the source and session if this client made them."""
        if not self._states.close():
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
