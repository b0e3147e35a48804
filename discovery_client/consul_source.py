"""Where instances come from: Consul's health endpoint, watched with blocking queries.

``ConsulSource`` is the discovery client's InstanceSource. The first ``resolve()`` of a
service starts one background watch thread for it (no I/O on the caller's thread) and
waits, bounded by ``timeout``, for its first answer; every later ``resolve()`` returns the
cached Resolution, or the cached error while the watch retries with backoff, with no
network I/O. Watches and listeners are both keyed by (service, its ServiceConfig).
``close()`` cuts in-flight long polls short and joins the threads (bounded).

The watch rules (index, rate limit, backoff, stale-on-error) live in
``consul_discovery.client.watch``; turning Consul's entries into values in ``health_entries``.

This is the only module of the discovery client that imports py-consul.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import consul
import requests

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.errors import (
    ConsulPermissionError,
    ConsulQueryError,
    ConsulUnavailableError,
    DiscoveryError,
    UnknownServiceError,
)
from consul_discovery.client.health_entries import build_resolution, instances_from_entries
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.interrupt import PollInterrupter
from consul_discovery.client.preservation import SelfPreservation
from consul_discovery.client.source import Listener
from consul_discovery.client.watch import ServiceWatch
from consul_discovery.connection import ConsulConnection, acl_denial, filtered_by_acls
from consul_discovery.connection.blocking import WatchTiming

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """One catalog service and how many of its instances are in each health state."""

    name: str
    passing: int
    warning: int
    critical: int

    @property
    def total(self) -> int:
        """Every registered instance, whatever its health."""
        return self.passing + self.warning + self.critical


def _wait_param(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


# py-consul's 4xx errors: Consul is up but says no. Everything else (requests' connection
# errors and timeouts, 5xx such as "No cluster leader") means Consul is not serving.
_BAD_EXPRESSION = re.compile(r"boolean expression|filter", re.IGNORECASE)
_REFUSALS = (
    consul.exceptions.BadRequest,
    consul.exceptions.ClientError,
    consul.exceptions.ACLPermissionDenied,
    consul.exceptions.ACLDisabled,
    consul.exceptions.NotFound,
)


def _wrap(exc: BaseException, what: str, address: str) -> DiscoveryError:
    """Our error for a py-consul/requests failure (the caller chains ``exc``)."""
    if isinstance(exc, DiscoveryError):
        return exc
    if isinstance(exc, consul.exceptions.ACLPermissionDenied):
        return ConsulPermissionError(f"Consul at {address}: {acl_denial(str(exc), f'read {what}')}")
    if isinstance(exc, _REFUSALS):
        return ConsulQueryError(f"Consul at {address} refused {what}: {exc}")
    if isinstance(exc, consul.exceptions.ConsulException) and _BAD_EXPRESSION.search(str(exc)):
        # Consul answers a filter that does not parse with a 500, not a 4xx.
        return ConsulQueryError(
            f"Consul at {address} rejected the filter expression for {what}: {exc}"
        )
    return ConsulUnavailableError(f"Consul at {address} unreachable for {what}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    """A one-line reason: requests' connection errors are long nested reprs."""
    if isinstance(exc, requests.Timeout):
        return f"{type(exc).__name__} (no answer in time)"
    if isinstance(exc, requests.ConnectionError):
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        return f"ConnectionError ({errno.group(1).strip() if errno else 'cannot connect'})"
    return f"{type(exc).__name__}: {exc}"


class _AclFiltered:
    """What the last answer on this thread said about ACLs, read from its headers.

    py-consul returns only (index, data); a requests response hook on its session sees
    the headers. The flags are per thread, read right after the call that set them.
    Two signs that an empty answer is a permission problem, not an empty registry:
    Consul's ``X-Consul-Results-Filtered-By-ACLs`` header, and an empty catalog under
    ``X-Consul-Default-Acl-Policy: deny`` (a live catalog always lists the servers' own
    ``consul`` service, to any token that may read it).
    """

    def __init__(self, client: Any) -> None:
        self._local = threading.local()
        session = getattr(getattr(client, "http", None), "session", None)
        if isinstance(session, requests.Session):
            session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        self._local.filtered = filtered_by_acls(response.headers)
        policy = response.headers.get("X-Consul-Default-Acl-Policy", "")
        self._local.deny = policy.strip().lower() == "deny"

    def check(self, empty: bool, what: str, address: str, *, catalog: bool = False) -> None:
        """Raise ConsulPermissionError if an empty answer about ``what`` hid entries."""
        if not empty:
            return
        if getattr(self._local, "filtered", False):
            raise ConsulPermissionError(
                f"Consul at {address} left {what} out of its answer because of ACLs: the "
                "token lacks service:read on it or node:read on its nodes"
            )
        if catalog and getattr(self._local, "deny", False):
            raise ConsulPermissionError(
                f"Consul at {address} showed this token no service at all (ACLs default to "
                f"deny) when asked for {what}: the token lacks service:read"
            )


_Key = tuple[str, ServiceConfig]


@dataclass(frozen=True, slots=True)
class _WatchEntry:
    watch: ServiceWatch
    stop: threading.Event
    thread: threading.Thread


class ConsulSource:
    """Resolve services from Consul and keep them fresh with one watch thread each.

    ``connection`` says how to reach the agent (default: ``ConsulConnection.from_env()``,
    i.e. Consul's own variables); ``address`` and ``token``, when given, override its
    address and token. ``service_config(name)`` gives each service's filter, tag,
    datacenter and panic threshold (default: ``ServiceConfig()``). ``wait`` is the
    blocking-query wait; the HTTP read timeout is ``request_timeout + wait + wait/16``.
    ``min_interval`` bounds the request rate when responses carry no change.
    ``client`` (a py-consul ``Consul``), ``clock``, ``rng`` and ``sleep`` are injectable.
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
        sleep: Callable[[float], object] | None = None,
        client: Any | None = None,
    ) -> None:
        connection = ConsulConnection.resolve(connection, address=address, token=token)
        self.connection = connection
        self.address = connection.address
        if client is None:
            client = connection.py_consul(timeout=request_timeout)
        self._client = client
        self._acl_filtered = _AclFiltered(client)
        self._interrupter = PollInterrupter()
        session = getattr(getattr(client, "http", None), "session", None)
        if isinstance(session, requests.Session):
            self._interrupter.install(session)
        self._service_config = service_config or (lambda _name: ServiceConfig())
        self._timing = WatchTiming(
            wait=wait, min_interval=min_interval, backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )  # fmt: skip
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._lock = threading.Lock()  # guards the two dicts below
        self._watches: dict[_Key, _WatchEntry] = {}  # any thread, under _lock
        self._listeners: dict[_Key, list[Listener]] = {}  # any thread, under _lock
        self._closed = False  # under _lock

    # -- InstanceSource -------------------------------------------------------------

    def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        """The service's current Resolution; the first call starts its watch.

        Never does network I/O on the caller's thread: it returns the cached Resolution,
        or waits up to ``timeout`` for the watch's first answer. While the service cannot
        be resolved, the watch retries with backoff and this raises its cached error:
        UnknownServiceError if Consul has never heard of ``service``,
        ConsulUnavailableError if Consul cannot be reached and nothing is cached,
        ConsulQueryError if Consul rejects the query (e.g. a bad filter).
        """
        key = self._key(service)
        with self._lock:
            if self._closed:
                raise DiscoveryError("ConsulSource is closed")
            entry = self._watches.get(key)
            if entry is None:
                entry = self._start_watch(*key)
                self._watches[key] = entry
        watch = entry.watch
        resolution = watch.resolution
        if resolution is not None:
            return resolution
        answered = watch.wait_first(max(0.0, timeout))
        resolution = watch.resolution
        if resolution is not None:
            return resolution
        error = watch.first_error
        if error is None or not answered:
            raise ConsulUnavailableError(
                f"Consul at {self.address} gave no answer about {service!r} within {timeout}s"
            )
        if isinstance(error, DiscoveryError):
            raise error
        raise _wrap(error, f"service {service!r}", self.address) from error

    def subscribe(self, service: str, listener: Listener) -> None:
        """Call ``listener`` (on the watch thread) with each new Resolution of ``service``.

        If the service is already resolved, ``listener`` is first called once, right away
        on the caller's thread, with the current Resolution, so no update can be missed
        between ``resolve()`` and ``subscribe()``.
        """
        key = self._key(service)
        with self._lock:
            self._listeners.setdefault(key, []).append(listener)
            entry = self._watches.get(key)
        current = entry.watch.resolution if entry is not None else None
        if current is not None:
            listener(current)

    def unsubscribe(self, service: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``service`` (no-op if it was not subscribed)."""
        with self._lock:
            listeners = self._listeners.get(self._key(service), [])
            if listener in listeners:
                listeners.remove(listener)

    def close(self, timeout: float = 2.0) -> None:
        """Stop every watch: cut in-flight long polls short, join threads (``timeout`` in all)."""
        with self._lock:
            self._closed = True
            entries = list(self._watches.values())
            self._watches.clear()
            self._listeners.clear()
        for entry in entries:
            entry.stop.set()
        self._interrupter.interrupt()
        deadline = time.monotonic() + timeout
        for entry in entries:
            if entry.thread is not threading.current_thread():
                entry.thread.join(max(0.0, deadline - time.monotonic()))
        lingering = [e.thread.name for e in entries if e.thread.is_alive()]
        if lingering:
            log.warning("watch thread(s) still running %.1fs after close: %s", timeout, lingering)
        session = getattr(getattr(self._client, "http", None), "session", None)
        if isinstance(session, requests.Session):
            session.close()

    def __enter__(self) -> ConsulSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one-shot catalog reads (for the CLI and operators; always network) ----------

    def list_services(self) -> tuple[ServiceSummary, ...]:
        """Every service in the catalog with passing/warning/critical instance counts."""
        names = self._catalog_names(None)
        summaries = []
        for name in names:
            counts = {"passing": 0, "warning": 0, "critical": 0}
            for instance in self.list_instances(name):
                counts[instance.health] += 1
            summaries.append(ServiceSummary(name, **counts))
        return tuple(summaries)

    def list_instances(self, service: str) -> tuple[Instance, ...]:
        """Every registered instance of ``service`` (all health states), fresh from Consul."""
        config = self._service_config(service)
        try:
            _, entries = self._query(service, config, index=0)
        except Exception as exc:
            raise _wrap(exc, f"service {service!r}", self.address) from exc
        if not entries:
            self._raise_if_unknown(service, config)
        return instances_from_entries(entries)

    # -- internals -------------------------------------------------------------------

    def _key(self, service: str) -> _Key:
        return service, self._service_config(service)

    def _query(
        self, service: str, config: ServiceConfig, index: int, wait: float | None = None
    ) -> tuple[int | None, list[dict[str, Any]]]:
        returned, entries = self._client.health.service(
            service,
            index=index or None,
            wait=_wait_param(self._timing.wait if wait is None else wait),
            tag=config.tag,
            dc=config.datacenter,
            filter_expr=config.filter,
        )
        self._acl_filtered.check(not entries, f"the instances of {service!r}", self.address)
        return (int(returned) if returned not in (None, "") else None), list(entries or [])

    def _catalog_names(self, datacenter: str | None) -> list[str]:
        try:
            _, services = self._client.catalog.services(dc=datacenter)
        except Exception as exc:
            raise _wrap(exc, "the service catalog", self.address) from exc
        self._acl_filtered.check(not services, "the service catalog", self.address, catalog=True)
        return sorted(services or {})

    def _raise_if_unknown(self, service: str, config: ServiceConfig) -> None:
        names = self._catalog_names(config.datacenter)
        if service not in names:
            raise UnknownServiceError(service, names)

    def _start_watch(self, service: str, config: ServiceConfig) -> _WatchEntry:
        # Called under _lock: starts a thread, no I/O.
        first = [True]  # owned by the watch thread: is the next fetch the first one?

        def fetch(index: int, wait: float) -> tuple[int | None, Sequence[Instance]]:
            try:
                returned, entries = self._query(service, config, index, wait)
                if first[0] and not entries:
                    self._raise_if_unknown(service, config)
            except DiscoveryError:
                raise
            except Exception as exc:
                raise _wrap(exc, f"service {service!r}", self.address) from exc
            first[0] = False
            return returned, instances_from_entries(entries)

        def build(registered: Sequence[Instance], index: int, now: float) -> Resolution:
            return build_resolution(service, registered, index, now, config.panic_threshold)

        key = (service, config)
        watch = ServiceWatch(
            service, fetch, build, lambda res: self._notify(key, res),
            timing=self._timing, clock=self._clock, rng=self._rng,
            preservation=SelfPreservation(config.vanish_grace, self._clock),
        )  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(
            target=watch.run, args=(stop, self._sleep), name=f"consul-watch-{service}",
            daemon=True,
        )  # fmt: skip
        thread.start()
        return _WatchEntry(watch, stop, thread)

    def _notify(self, key: _Key, resolution: Resolution) -> None:
        with self._lock:
            listeners = list(self._listeners.get(key, ()))
        for listener in listeners:
            try:
                listener(resolution)
            except Exception:
                log.exception("listener %r of %s failed", listener, key[0])

    def watch_stats(self, service: str) -> dict[str, int]:
        """Requests started, failed, and current index of the service's watch (tests/metrics)."""
        with self._lock:
            entry = self._watches.get(self._key(service))
        if entry is None:
            return {}
        watch = entry.watch
        return {"requests": watch.requests, "errors": watch.errors, "index": watch.index}


__all__ = [
    "ConsulQueryError",
    "ConsulSource",
    "ServiceSummary",
]
