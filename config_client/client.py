"""``ConfigClient``: a service's live configuration from Consul KV, swapped whole.

One ``PrefixWatch`` thread per layer (see ``consul_discovery.config.layers``) keeps that layer's
raw KV content; one applier thread turns the layers into a ``Settings`` snapshot:

1. waits until every layer has been read once (no half-layered first configuration);
2. debounces bursts (consul-template's ``wait``): applies once no new content arrived
   for ``Debounce.quiet`` seconds, or ``Debounce.max_wait`` after the first arrival;
3. merges, types and validates (``Schema``); a bad value is one clear error log naming
   the key and the update is dropped: the last good ``Settings`` stays;
4. compares with the current snapshot and, only if some value differs, swaps the one
   reference and calls every subscriber with an ``Update`` (old and new snapshot, each
   changed key's old and new value). Readers never lock and never see half an update.

``start(fail_fast=True)`` raises the first read's error (Consul unreachable, access
denied, a malformed value); otherwise the client serves its schema's defaults until the
first read succeeds and keeps the last good configuration through every later error.
``close()`` stops it (``stop()`` is its deprecated old name).

**Forks** (``gunicorn --preload`` builds the app, and starts its client, in the master):
a forked child inherits the client but none of its threads, and would silently serve a
frozen configuration. A started client therefore restarts itself in the child
(``os.register_at_fork``): fresh locks, its own KV sessions (never the parent's
sockets), new watches that read every layer again, and new threads; the child keeps
the parent's last good settings meanwhile, and subscribers (the Flask extension's
``app.config`` mirror) hear the child's updates.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from consul_discovery.config.errors import ConfigError, ConfigValueError
from consul_discovery.config.kv import KVStore
from consul_discovery.config.layers import Layers, layer_settings, merge
from consul_discovery.config.settings import Change, Schema, Settings, diff
from consul_discovery.config.watch import Content, PrefixWatch
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.forking import after_fork_in_child

log = logging.getLogger(__name__)

DEFAULT_TIMING = WatchTiming(wait=30.0, min_interval=1.0, min_change_interval=0.0)


@dataclass(frozen=True, slots=True)
class Debounce:
    """Apply once ``quiet`` seconds pass without news, at most ``max_wait`` after the first."""

    quiet: float = 0.02
    max_wait: float = 0.2

    def __post_init__(self) -> None:
        if self.quiet < 0 or self.max_wait < self.quiet:
            raise ValueError(f"need 0 <= quiet <= max_wait: {self}")

    def remaining(self, first: float, last: float, now: float) -> float:
        """Seconds until a burst that began at ``first`` and last grew at ``last`` is due."""
        return max(0.0, min(last + self.quiet, first + self.max_wait) - now)


@dataclass(frozen=True, slots=True)
class Update:
    """One applied change: the snapshot before, the one after, and what differs."""

    old: Settings
    new: Settings
    changes: tuple[Change, ...]


Subscriber = Callable[[Update], None]


class ConfigClient:
    """Live, layered, typed settings for one service (see the module docstring)."""

    def __init__(
        self,
        layers: Layers | str,
        *,
        connection: ConsulConnection | None = None,
        schema: Schema | None = None,
        debounce: Debounce | None = None,
        timing: WatchTiming = DEFAULT_TIMING,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        store: KVStore | None = None,
    ) -> None:
        self.layers = Layers(layers) if isinstance(layers, str) else layers
        self.connection = connection or ConsulConnection.from_env()
        self.schema = schema or Schema()
        self.debounce = debounce or Debounce()
        self._clock = clock
        self._timing = timing
        self._owns_store = store is None
        self._store = store or KVStore(self.connection)
        self._rng = rng or random.Random()
        self._watches = self._make_watches()
        self._settings = Settings({}, 0, self.schema)  # replaced whole by the applier only
        self._subscribers: tuple[Subscriber, ...] = ()  # replaced whole under _cond
        self._cond = threading.Condition()
        # Guarded by _cond (watch threads write, the applier reads):
        self._raw: dict[str, Content] = {}
        self._indexes: dict[str, int] = {}
        self._burst: tuple[float, float] | None = None  # (first, last) arrival of news
        self._first_error: BaseException | None = None
        # Applier thread only (read by stats/tests):
        self.last_error: ConfigValueError | None = None
        self.applied = 0
        self._logged_error: str | None = None
        self._ready = threading.Event()  # set by the applier after the first good apply
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- reading ---------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The current snapshot (schema defaults until the first read)."""
        return self._settings

    def get(self, key: str, kind: type | None = None, default: object = ...) -> object:
        """``settings.get``: the current value of ``key`` (see ``Settings.get``)."""
        if default is ...:
            return self._settings.get(key, kind)
        return self._settings.get(key, kind, default)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(update)`` after each applied change; returns an unsubscribe."""
        with self._cond:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._cond:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def stats(self) -> dict[str, object]:
        """Plain-dict state for metrics and debugging (never the token)."""
        return {
            "service": self.layers.service,
            "prefixes": list(self.layers.prefixes),
            "ready": self._ready.is_set(),
            "index": self._settings.index,
            "applied": self.applied,
            "held": [w.prefix for w in self._watches if w.held],
            "last_error": str(self.last_error) if self.last_error else None,
            "requests": sum(w.requests for w in self._watches),
        }

    # ---- lifecycle -------------------------------------------------------------------

    def start(self, *, fail_fast: bool = False, timeout: float = 10.0) -> ConfigClient:
        """Start the watches; wait up to ``timeout`` s for the first configuration.

        ``fail_fast``: raise ``ConfigError`` (the first read's error, or a timeout)
        instead of serving defaults. A closed client starts again like a new one (new
        watches read every layer), serving its last settings meanwhile.
        """
        if self._threads:
            return self
        if self._stop.is_set():  # closed (an ASGI app's lifespan run again): start over
            self._start_over(ready=False)
        else:
            self._start_threads()
        deadline = self._clock() + timeout
        while not self._ready.wait(0.01):
            with self._cond:
                error = self._first_error
            if fail_fast and (error is not None or self.last_error is not None):
                self.close()
                cause = error or self.last_error
                if isinstance(cause, ConfigError):
                    raise cause
                raise ConfigError(f"first read of the configuration failed: {cause}") from cause
            if self._clock() >= deadline:
                if fail_fast:
                    self.close()
                    raise ConfigError(f"no configuration from Consul within {timeout}s")
                log.warning("no configuration from Consul yet: serving defaults meanwhile")
                break
        return self

    def close(self) -> None:
        """Stop the applier and the watches now: closing the store ends a watch's
        blocking read in progress (the watch threads are daemons, and call nobody then).

        A ``store`` passed in is its owner's to close (another client may share it): the
        reads in progress on it end when they return, or when the owner closes it.
        """
        self._stop.set()  # also: a child forked from now on does not restart it
        with self._cond:
            self._cond.notify_all()
        if self._owns_store:
            self._store.close()  # the watches' reads end now: worth waiting for them
        read_ends = 1.0 if self._owns_store else 0.05  # else: when Consul answers
        for thread in self._threads:
            thread.join(timeout=5 if thread.name == "config-apply" else read_ends)
        self._threads = []

    def stop(self) -> None:
        """Deprecated name of ``close``."""
        warnings.warn(
            "ConfigClient.stop() is deprecated; use close()", DeprecationWarning, stacklevel=2
        )
        self.close()

    def present_layers(self) -> tuple[str, ...]:
        """The layer prefixes that held at least one key at their last read."""
        with self._cond:
            raw = dict(self._raw)
        return tuple(
            p for p in self.layers.prefixes if any(not k.endswith("/") for k in raw.get(p, {}))
        )

    def wait_ready(self, timeout: float) -> bool:
        """Block until the first configuration was applied; False on timeout."""
        return self._ready.wait(timeout)

    def _make_watches(self) -> list[PrefixWatch]:
        return [
            PrefixWatch(
                self._store,
                prefix,
                self._content,
                self._watch_error,
                timing=self._timing,
                clock=self._clock,
                rng=self._rng,
            )
            for prefix in self.layers.prefixes
        ]

    def _start_threads(self) -> None:
        applier = threading.Thread(target=self._apply_loop, name="config-apply", daemon=True)
        self._threads.append(applier)
        for watch in self._watches:
            self._threads.append(
                threading.Thread(
                    target=watch.run,
                    args=(self._stop,),
                    name=f"config-watch {watch.prefix}",
                    daemon=True,
                )
            )
        if not getattr(self, "_restarts_in_children", False):
            after_fork_in_child(self._after_fork)  # held weakly; once per client
            self._restarts_in_children = True
        for thread in self._threads:
            thread.start()

    def _after_fork(self) -> None:
        if not self._stop.is_set():  # started and not closed
            self._restart_in_child()

    def _start_over(self, *, ready: bool) -> None:
        """Fresh locks, events, watches (each reads its layer again) and threads; the
        last good settings stay. ``ready``: the first configuration counts as applied."""
        self._cond = threading.Condition()
        self._ready = threading.Event()
        if ready:
            self._ready.set()
        self._stop = threading.Event()
        self._threads = []
        self._raw = {}
        self._indexes = {}
        self._burst = None
        self._first_error = None
        if self._owns_store:  # a closed store, or (forked) the parent's sockets
            self._store = KVStore(self.connection)
        self._watches = self._make_watches()
        self._start_threads()

    def _restart_in_child(self) -> None:
        """In a forked child (the only thread there): the parent's threads are gone, and
        any lock one of them held stays held; start over with this process's own."""
        self._start_over(ready=self._ready.is_set())
        log.info(
            "config client of %s restarted its watches in forked process %d",
            self.layers.service,
            os.getpid(),
        )

    # ---- watch threads -> applier ----------------------------------------------------

    def _content(self, prefix: str, content: Content, index: int) -> None:
        now = self._clock()
        with self._cond:
            self._raw[prefix] = content
            self._indexes[prefix] = index
            first = self._burst[0] if self._burst else now
            self._burst = (first, now)
            self._cond.notify_all()

    def _watch_error(self, prefix: str, exc: BaseException) -> None:
        if self._stop.is_set():
            return
        with self._cond:
            if self._first_error is None and prefix not in self._raw:
                self._first_error = exc

    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while self._burst is None and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                if self._ready.is_set():  # bursts after the first configuration wait
                    while self._burst is not None and not self._stop.is_set():
                        first, last = self._burst
                        left = self.debounce.remaining(first, last, self._clock())
                        if left <= 0:
                            break
                        self._cond.wait(left)
                self._burst = None
                if len(self._raw) < len(self._watches):
                    continue  # some layer not read yet
                raw = [self._raw[p] for p in self.layers.prefixes]
                index = max(self._indexes.values())
            self._apply(raw, index)

    def _say_what_was_read(self, raw: list[Content]) -> None:
        """Once, at the first configuration: which layers held keys. A service name typed
        wrong reads none of its own, and would serve defaults with no other sign."""
        held = {
            prefix: sum(1 for key in content if not key.endswith("/"))
            for prefix, content in zip(self.layers.prefixes, raw, strict=True)
        }
        found = ", ".join(f"{prefix} ({n})" for prefix, n in held.items() if n) or "no layer"
        own = self.layers.own_prefixes
        if any(held[prefix] for prefix in own):
            log.info("configuration of %s: keys from %s", self.layers.service, found)
            return
        log.info(
            "configuration of %s: keys from %s; none under %s, its own: the defaults and "
            "shared layers apply (is %r the service's name in KV?)",
            self.layers.service, found, ", ".join(own), self.layers.service,
        )  # fmt: skip

    def _apply(self, raw: list[Content], index: int) -> None:
        old = self._settings
        try:
            pairs = zip(self.layers.prefixes, raw, strict=True)
            merged = merge(layer_settings(prefix, content) for prefix, content in pairs)
            new = Settings(self.schema.apply(merged), index, self.schema)
        except ConfigValueError as exc:
            self.last_error = exc
            if str(exc) != self._logged_error:  # one error per distinct bad value
                self._logged_error = str(exc)
                log.error("rejected configuration update, keeping the last good one: %s", exc)
            return
        self.last_error = None
        self._logged_error = None
        changes = diff(old.values, new.values)
        if not changes and self._ready.is_set():
            return
        # The subscribers of this update are those known before it is visible: one
        # subscribing after start() returns hears only the changes after it.
        subscribers = self._subscribers
        self._settings = new
        self.applied += 1
        if not self._ready.is_set():
            self._say_what_was_read(raw)
        self._ready.set()
        if changes:
            log.info("configuration changed: %s", ", ".join(c.key for c in changes))
            update = Update(old, new, changes)
            for subscriber in subscribers:
                try:
                    subscriber(update)
                except Exception:
                    log.exception("configuration subscriber %r failed", subscriber)
