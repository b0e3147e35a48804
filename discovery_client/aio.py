"""asyncio discovery: Consul blocking queries over httpx, one task per watched service.

    async with AsyncConsulSource("127.0.0.1:8500") as source:
        resolution = await source.resolve("user-service")   # first call: one fetch
        source.subscribe("user-service", balancer.update)   # called on the event loop

For callers that live on an event loop: no thread per watched service, and every watch
is an asyncio task cancelled by ``aclose()``. The rules (index, rate limit, backoff,
stale-on-error, Consul restarts) are ``consul_discovery.client.watch.WatchState``, the very
state machine the threaded ``ConsulSource`` drives; only the loop around the request
differs. Consul is reached as ``consul_connection.ConsulConnection`` says (token, TLS)
through its ``httpx_kwargs()``; entries become values in ``health_entries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from consul_discovery.extras import missing

try:
    import httpx
except ImportError as exc:
    raise missing(__name__, "httpx", exc) from exc

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.errors import (
    ConsulQueryError,
    ConsulUnavailableError,
    DiscoveryError,
    UnknownServiceError,
)
from consul_discovery.client.health_entries import build_resolution, instances_from_entries
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.preservation import SelfPreservation
from consul_discovery.client.source import Listener
from consul_discovery.client.watch import WatchState
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.blocking import WatchTiming

log = logging.getLogger(__name__)

_BAD_EXPRESSION = re.compile(r"boolean expression|filter", re.IGNORECASE)


def _wait_param(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _wrap(exc: BaseException, what: str, address: str) -> DiscoveryError:
    """Our error for an httpx failure or Consul refusal (the caller chains ``exc``)."""
    if isinstance(exc, DiscoveryError):
        return exc
    if isinstance(exc, httpx.HTTPStatusError):
        status, body = exc.response.status_code, exc.response.text.strip()[:200]
        if 400 <= status < 500:
            return ConsulQueryError(f"Consul at {address} refused {what}: {status} {body}")
        if _BAD_EXPRESSION.search(body):  # a filter that does not parse is a 500
            return ConsulQueryError(
                f"Consul at {address} rejected the filter expression for {what}: {body}"
            )
        return ConsulUnavailableError(f"Consul at {address} failed {what}: {status} {body}")
    if isinstance(exc, httpx.TimeoutException):
        reason = f"{type(exc).__name__} (no answer in time)"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return ConsulUnavailableError(f"Consul at {address} unreachable for {what}: {reason}")


class AsyncConsulSource:
    """Resolve services from Consul and keep them fresh with one asyncio task each.

    The same knobs as ``ConsulSource`` (``connection``, ``address``/``token`` overrides,
    ``service_config``, ``wait``, ``min_interval``, ``request_timeout``, backoff);
    ``client`` is an ``httpx.AsyncClient`` already pointed at the agent (one made here
    is closed by ``aclose()``). Use it from one event loop.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        connection: ConsulConnection | None = None,
        service_config: Callable[[str], ServiceConfig] | None = None,
        wait: float = 30.0,
        min_interval: float = 1.0,
        request_timeout: float = 10.0,
        backoff_base: float = 0.25,
        backoff_cap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        connection = ConsulConnection.resolve(connection, address=address, token=token)
        self.connection = connection
        self.address = connection.address
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(**connection.httpx_kwargs())
        self._extensions = connection.request_extensions()
        self._request_timeout = request_timeout
        self._service_config = service_config or (lambda _name: ServiceConfig())
        self._timing = WatchTiming(
            wait=wait, min_interval=min_interval, backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )  # fmt: skip
        self._clock = clock
        self._rng = rng or random.Random()
        # All on the event loop: no locks.
        self._watches: dict[tuple[str, ServiceConfig], _Watch] = {}
        # Keyed like the watches, by (service, ServiceConfig): a listener hears the watch
        # of the config it subscribed under, never another config's set.
        self._listeners: dict[tuple[str, ServiceConfig], list[Listener]] = {}
        self._closed = False

    # -- the InstanceSource operations, awaitable where they may do I/O ---------------

    async def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        """The service's current Resolution; the first call fetches it and starts a watch.

        Raises as ``ConsulSource.resolve`` does: UnknownServiceError,
        ConsulUnavailableError, ConsulQueryError.
        """
        if self._closed:
            raise DiscoveryError("AsyncConsulSource is closed")
        config = self._service_config(service)
        key = (service, config)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = self._start_watch(service, config)
        resolution = watch.state.resolution
        if resolution is not None:
            return resolution
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(watch.first_done.wait()), timeout)
        resolution = watch.state.resolution
        if resolution is not None:
            return resolution
        await self._drop(key, watch)
        if not watch.first_done.is_set():
            raise ConsulUnavailableError(
                f"Consul at {self.address} gave no answer about {service!r} within {timeout}s"
            )
        error = watch.state.first_error
        raise _wrap(error or RuntimeError("no answer"), f"service {service!r}", self.address)

    def cached(self, service: str) -> Resolution | None:
        """The cached Resolution of ``service`` without any I/O (None if not resolved)."""
        config = self._service_config(service)
        watch = self._watches.get((service, config))
        return watch.state.resolution if watch is not None else None

    def subscribe(self, service: str, listener: Listener) -> None:
        """Call ``listener`` (on the event loop) with each new Resolution of ``service``;
        once right away if it is already resolved."""
        self._listeners.setdefault((service, self._service_config(service)), []).append(listener)
        current = self.cached(service)
        if current is not None:
            listener(current)

    def unsubscribe(self, service: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``service`` (no-op if it was not subscribed)."""
        listeners = self._listeners.get((service, self._service_config(service)), [])
        if listener in listeners:
            listeners.remove(listener)

    def watch_stats(self, service: str) -> dict[str, int]:
        """Requests started and current index of the service's watch (for tests/metrics)."""
        found = [w.state for (name, _), w in self._watches.items() if name == service]
        return {"requests": found[0].requests, "index": found[0].index} if found else {}

    async def aclose(self) -> None:
        """Cancel every watch (a blocking query in flight is abandoned) and the client."""
        self._closed = True
        watches = list(self._watches.values())
        self._watches.clear()
        for watch in watches:
            watch.task.cancel()
        for watch in watches:
            with contextlib.suppress(asyncio.CancelledError):
                await watch.task
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncConsulSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals -------------------------------------------------------------------

    async def _query(
        self, service: str, config: ServiceConfig, index: int, wait: float | None = None
    ) -> tuple[int | None, list[dict[str, Any]]]:
        wait = self._timing.wait if wait is None else wait
        params: dict[str, Any] = {"wait": _wait_param(wait)}
        if index:
            params["index"] = index
        if config.tag:
            params["tag"] = config.tag
        if config.datacenter:
            params["dc"] = config.datacenter
        if config.filter:
            params["filter"] = config.filter
        response = await self._client.get(
            f"/v1/health/service/{service}",
            params=params,
            timeout=httpx.Timeout(self._request_timeout + wait + wait / 16),
            extensions=self._extensions,
        )
        response.raise_for_status()
        raw = response.headers.get("X-Consul-Index", "")
        returned = int(raw) if raw.isdigit() else None
        return returned, list(response.json() or [])

    async def _catalog_names(self, datacenter: str | None) -> list[str]:
        params = {"dc": datacenter} if datacenter else {}
        response = await self._client.get(
            "/v1/catalog/services",
            params=params,
            timeout=self._request_timeout,
            extensions=self._extensions,
        )
        response.raise_for_status()
        return sorted(response.json() or {})

    def _start_watch(self, service: str, config: ServiceConfig) -> _Watch:
        def build(registered: Sequence[Instance], index: int, now: float) -> Resolution:
            return build_resolution(service, registered, index, now, config.panic_threshold)

        state = WatchState(
            service, build, lambda res: self._notify((service, config), res),
            timing=self._timing, clock=self._clock, rng=self._rng,
            preservation=SelfPreservation(config.vanish_grace, self._clock),
        )  # fmt: skip
        first_done = asyncio.Event()
        task = asyncio.create_task(
            self._run(service, config, state, first_done), name=f"consul-watch-{service}"
        )
        return _Watch(state, task, first_done)

    async def _run(
        self, service: str, config: ServiceConfig, state: WatchState, first_done: asyncio.Event
    ) -> None:
        """The loop: the same WatchState rules as ServiceWatch.run, awaiting instead."""
        first = True
        while True:
            index = state.begin()
            try:
                returned, entries = await self._query(service, config, index, state.next_wait())
                if first and not entries:
                    names = await self._catalog_names(config.datacenter)
                    if service not in names:
                        raise UnknownServiceError(service, names)
                first = False
                delay = state.on_success(returned, instances_from_entries(entries))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: the loop must survive it
                delay = state.on_error(_wrap(exc, f"service {service!r}", self.address))
            if state.first_done:
                first_done.set()
            if delay is None:
                return
            if delay > 0:
                await asyncio.sleep(delay)

    async def _drop(self, key: tuple[str, ServiceConfig], watch: _Watch) -> None:
        if self._watches.get(key) is watch:
            del self._watches[key]
        watch.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch.task

    def _notify(self, key: tuple[str, ServiceConfig], resolution: Resolution) -> None:
        service = key[0]
        for listener in list(self._listeners.get(key, ())):
            try:
                listener(resolution)
            except Exception:
                log.exception("listener %r of %s failed", listener, service)


@dataclasses.dataclass(slots=True)
class _Watch:
    """One watched service: its rules' state, the task driving them, first outcome."""

    state: WatchState
    task: asyncio.Task[None]
    first_done: asyncio.Event


__all__ = ["AsyncConsulSource"]
