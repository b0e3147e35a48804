"""What both Consul sources share around their watches: settings, keys, listeners, resolve.

``ConsulSource`` (a thread per watch) and ``AsyncConsulSource`` (a task per watch) differ
only in how a watch is driven and how a caller waits for its first answer (blocking or
awaiting). Everything else is here, once:

- the constructor's knobs become one ``WatchTiming`` and ``QueryOptions``
  (``source_settings``): the same ``wait`` handling in both;
- watches and listeners are keyed by ``WatchKey`` (a Target plus panic threshold and
  vanish grace): a name means ``Target.of(name, service_config(name))``;
- ``resolve``'s outcome: the cached Resolution, else the watch's cached first error
  (``UnknownServiceError``, ``ConsulPermissionError``, ``ConsulQueryError``,
  ``ConsulUnavailableError``) while it retries with backoff, else "no answer within
  the timeout"; a failed first resolve keeps its watch (N callers cost one query per
  backoff step), and a watch that stopped itself (nobody asked for ``unresolved_ttl``
  seconds and it never resolved) is started again by the next ``resolve``;
- ``cached`` (no I/O, no side effect), ``subscribe`` / ``unsubscribe`` / ``notify`` and
  ``watch_stats`` (with the server that answered last and its staleness headers);
- the cold-start snapshot, when on (``cold_start``): each new live Resolution is saved
  off the watch's path, and a first resolve that cannot reach Consul is answered from
  the snapshot until the first live answer replaces it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from consul_discovery.client.arguments import is_path
from consul_discovery.client.cold_start import ColdStart, store_from_env
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.errors import ConsulQueryError, ConsulUnavailableError, DiscoveryError
from consul_discovery.client.health_query import Consistency, QueryOptions
from consul_discovery.client.instance import Resolution
from consul_discovery.client.snapshot_store import SnapshotStore
from consul_discovery.client.source import Listener, WatchKey, WatchStats
from consul_discovery.client.target import Target
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.throttle import RateLimited
from consul_discovery.connection.watch import WatchState

log = logging.getLogger(__name__)

DEFAULT_UNRESOLVED_TTL = 60.0
#: ``WatchTable(snapshots=FROM_ENV)``: the store DISCOVERY_SNAPSHOT_DIR names, if any.
FROM_ENV = "<DISCOVERY_SNAPSHOT_DIR>"


class Driven(Protocol):
    """A watch driver as the table sees it (``WatchThread`` or ``WatchTask``)."""

    @property
    def state(self) -> WatchState[Any, Resolution]: ...

    @property
    def finished(self) -> bool: ...


E = TypeVar("E", bound=Driven)


def source_settings(
    *,
    wait: float,
    min_interval: float,
    request_timeout: float,
    backoff_base: float,
    backoff_cap: float,
    consistency: Consistency,
) -> tuple[WatchTiming, QueryOptions]:
    """A source's constructor knobs as the watch's timing and the query's options."""
    timing = WatchTiming(
        wait=wait, min_interval=min_interval, backoff_base=backoff_base, backoff_cap=backoff_cap
    )
    return timing, QueryOptions(request_timeout=request_timeout, consistency=consistency)


def snapshot_store(
    snapshots: SnapshotStore | str | os.PathLike[str] | None,
) -> SnapshotStore | None:
    """A source's ``snapshots`` argument as its store (None: off): a directory (a str or
    an os.PathLike) or a SnapshotStore; anything else is a TypeError naming it."""
    if snapshots is None or isinstance(snapshots, SnapshotStore):
        return snapshots
    if is_path(snapshots):
        return SnapshotStore(snapshots)
    raise TypeError(
        "snapshots must be a directory (str or os.PathLike), a SnapshotStore or None; "
        f"got {type(snapshots).__name__} {snapshots!r}"
    )


class WatchTable(Generic[E]):
    """A source's watches and listeners by WatchKey (safe across threads; no I/O).

    The lock guards the two dicts and ``closed``; it is never held across network I/O
    or a listener call.
    """

    def __init__(
        self,
        service_config: Callable[[str], ServiceConfig] | None,
        address: str,
        owner: str,
        *,
        snapshots: SnapshotStore | str | os.PathLike[str] | None = FROM_ENV,
    ) -> None:
        self._service_config = service_config or (lambda _name: ServiceConfig())
        self.address = address
        self._owner = owner
        store = store_from_env() if snapshots is FROM_ENV else snapshot_store(snapshots)
        # Fixed at construction (None: snapshots off); thread-safe itself.
        self.cold: ColdStart | None = None
        if store is not None:
            self.cold = ColdStart(store)
        self._lock = threading.Lock()  # replaced in a forked child (after_fork)
        self._entries: dict[WatchKey, E] = {}  # any thread, under _lock
        self._listeners: dict[WatchKey, list[Listener]] = {}  # any thread, under _lock
        self._closed = False  # under _lock

    def key(self, service: str | Target) -> WatchKey:
        """The WatchKey a name or Target means now."""
        return WatchKey.of(service, self._service_config)

    def entry(self, key: WatchKey, start: Callable[[WatchKey], E]) -> E:
        """The key's watch, started by ``start`` (no I/O) if it has none or it stopped
        itself; marks it as asked for."""
        with self._lock:
            if self._closed:
                raise DiscoveryError(f"{self._owner} is closed")
            entry = self._entries.get(key)
            if entry is None or entry.finished:
                entry = self._entries[key] = start(key)
        entry.state.touch()
        return entry

    def outcome(self, key: WatchKey, entry: E, answered: bool, timeout: float) -> Resolution:
        """What ``resolve`` returns or raises once it waited (``answered``: the first
        outcome is in): the live value, else the cold-start snapshot while Consul
        cannot be reached, else the watch's first error."""
        state = entry.state
        value = state.value
        if value is not None:
            return value
        error = state.first_error
        if not answered and isinstance(error, RateLimited):
            raise error.with_traceback(None)  # retried within the timeout, still limited
        if error is None or not answered:
            unavailable: DiscoveryError = ConsulUnavailableError(
                f"Consul at {self.address} gave no answer about {str(key.target)!r} "
                f"within {timeout}s"
            )
            if timeout <= 0:  # a peek (stats) is no sign of an outage: serve, never load
                serving = self.cold.serving(key) if self.cold is not None else None
                if serving is None:
                    raise unavailable
                return serving.resolution
            return self._snapshot(key, entry, unavailable)
        if isinstance(error, ConsulUnavailableError):
            return self._snapshot(key, entry, error)
        if self.cold is not None and (serving := self.cold.serving(key)) is not None:
            return serving.resolution  # served until a live answer, whatever the error
        if not isinstance(error, DiscoveryError):
            raise ConsulQueryError(
                f"cannot read Consul's answer about {str(key.target)!r}: {error!r}"
            ) from error
        raise error.with_traceback(None)  # shared by every caller: do not grow its traceback

    def _snapshot(self, key: WatchKey, entry: E, error: DiscoveryError) -> Resolution:
        """The snapshot of ``key`` (Consul unreachable at start), else raise ``error``."""
        cold = self.cold
        resolution = cold.load(key, error, entry.state.now()) if cold is not None else None
        if resolution is None:
            raise error.with_traceback(None)
        entry.state.pin(resolution)  # its callers hold the snapshot: it must replace it
        return resolution

    def cached(self, key: WatchKey) -> Resolution | None:
        """The key's Resolution, if its watch has one, or the snapshot it serves (no I/O,
        keeps nothing alive)."""
        with self._lock:
            entry = self._entries.get(key)
        value = entry.state.value if entry is not None else None
        if value is None and self.cold is not None and (loaded := self.cold.serving(key)):
            return loaded.resolution
        return value

    def stats(self, key: WatchKey) -> WatchStats | None:
        """The key's watch counters, or None if it is not watched."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        state = entry.state
        last = getattr(state.resource, "last_read", None)
        meta = last.meta if last is not None else None
        loaded = self.cold.serving(key) if self.cold is not None else None
        return WatchStats(
            requests=state.requests,
            errors=state.errors,
            index=state.index,
            rate_limited=getattr(state, "rate_limited", 0),
            server=last.server if last is not None else None,
            last_contact=meta.last_contact if meta is not None else None,
            known_leader=meta.known_leader if meta is not None else None,
            from_snapshot=loaded is not None,
            snapshot_age=loaded.resolution.age(state.now()) if loaded is not None else None,
        )

    def subscribe(self, key: WatchKey, listener: Listener) -> Resolution | None:
        """Add ``listener``; the current Resolution to give it at once (None: none yet)."""
        with self._lock:
            self._listeners.setdefault(key, []).append(listener)
        return self.cached(key)

    def unsubscribe(self, key: WatchKey, listener: Listener) -> None:
        """Remove ``listener`` (no-op if it was not subscribed)."""
        with self._lock:
            listeners = self._listeners.get(key, [])
            if listener in listeners:
                listeners.remove(listener)

    def notify(self, key: WatchKey, resolution: Resolution) -> None:
        """Call every listener of ``key`` (from the driver; a failing one is logged); a
        live Resolution replaces a snapshot and is saved (off this thread)."""
        if self.cold is not None:
            self.cold.live(key, resolution)
        with self._lock:
            listeners = list(self._listeners.get(key, ()))
        for listener in listeners:
            try:
                listener(resolution)
            except Exception:
                log.exception("listener %r of %s failed", listener, key.target)

    def entries(self) -> list[tuple[WatchKey, E]]:
        """Every watch, with its key."""
        with self._lock:
            return list(self._entries.items())

    def replace(self, key: WatchKey, entry: E) -> None:
        """Put a new driver for ``key`` in place (after a fork)."""
        with self._lock:
            self._entries[key] = entry

    def close(self) -> list[E]:
        """Refuse new watches and forget every listener; the watches to stop. Pending
        snapshots are written (bounded) first."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
            self._listeners.clear()
        if self.cold is not None:
            self.cold.close()
        return entries

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may be held by a lost thread)."""
        self._lock = threading.Lock()
        if self.cold is not None:
            self.cold.after_fork()
