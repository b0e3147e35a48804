"""One thread driver for the mesh's watched resources (leaf, CA roots, intentions).

REPLACE AT MERGE: this is a stand-in for the generic blocking-query watch engine being
built in ``discovery_client/watch.py`` (helper B). It follows the same rules through the
shared pieces (``consul_connection.blocking.next_index`` and ``WatchTiming``,
``consul_connection.backoff.JitterBackoff``), and takes a resource in the sans-IO shape
of ``consul_api.WatchedResource`` (request for an index and a wait, value of an answer),
so moving a resource onto the engine replaces this module and nothing else.

Rules: the first request is a plain read, then blocking queries on ``next_index``; an
answer that changed nothing waits until ``min_interval`` after the previous request
began (a real change: ``min_change_interval``); an error keeps the last good value (the
identity and decisions in force stay), resets the index to a plain read and backs off
with equal jitter; an outage is logged once when it begins and once when it ends; an
ACL refusal is logged once, at error level, naming the permission.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import requests

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.backoff import JitterBackoff
from consul_discovery.connection.blocking import WatchTiming, next_index
from consul_discovery.mesh.consul_api import ConsulAnswer, ConsulRequest, WatchedResource
from consul_discovery.mesh.errors import MeshError, MeshPermissionError, MeshUnavailableError

log = logging.getLogger("consul_discovery.mesh")

T = TypeVar("T")


def send(session: requests.Session, connection: ConsulConnection, request: ConsulRequest,
         *, extra_wait: float = 0.0) -> ConsulAnswer:  # fmt: skip
    """Send one request to the agent; transport failures become MeshUnavailableError."""
    try:
        response = session.request(
            request.method,
            connection.base_url + request.path,
            params=list(request.params),
            json=request.json_body,
            timeout=(connection.connect_timeout, connection.read_timeout + extra_wait),
        )
    except requests.RequestException as exc:
        raise MeshUnavailableError(
            f"Consul at {connection.address} unreachable to {request.call}: {type(exc).__name__}"
        ) from None
    return ConsulAnswer.of(response.status_code, response.headers, response.content)


class BlockingWatch(Generic[T]):
    """Keeps one resource's value fresh on its own thread; ``on_change`` gets each new one.

    The watch thread is the only writer of every field below; other threads read
    ``value`` / ``error`` (one reference each) and wait on ``wait_first``.
    """

    def __init__(
        self,
        resource: WatchedResource[T],
        connection: ConsulConnection,
        on_change: Callable[[T], None],
        *,
        timing: WatchTiming | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.resource = resource
        self._connection = connection
        self._on_change = on_change
        self._timing = timing or WatchTiming()
        self._clock = clock
        self._backoff = JitterBackoff(
            self._timing.backoff_base,
            max(self._timing.backoff_base, self._timing.backoff_cap),
            rng=rng or random.Random(),
        )
        self._stop = threading.Event()  # set once by close()
        self._first = threading.Event()  # set by the watch thread after the 1st outcome
        self._thread: threading.Thread | None = None  # set once by start()
        self._index = 0  # watch thread only
        self._failures = 0  # watch thread only: consecutive failed requests
        self._failing_since: float | None = None  # watch thread only
        self.value: T | None = None  # watch thread writes; anyone reads
        self.error: MeshError | None = None  # watch thread writes: the last failure, if failing
        self.requests = 0  # watch thread only (read by tests/metrics)
        self.errors = 0  # watch thread only (read by tests/metrics)

    def start(self) -> BlockingWatch[T]:
        """Start the watch thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"mesh-watch {self.resource.call}", daemon=True
            )
            self._thread.start()
        return self

    def wait_first(self, timeout: float) -> bool:
        """Block until the first request succeeded or failed; False on timeout."""
        return self._first.wait(timeout)

    def close(self, timeout: float = 0.5) -> None:
        """Stop the watch; a blocking query in flight ends by itself (daemon thread)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        with self._connection.session(pool_maxsize=1) as session:
            while not self._stop.is_set():
                delay = self.poll_once(session)
                if delay > 0:
                    self._stop.wait(delay)

    def poll_once(self, session: requests.Session) -> float:
        """One request; the seconds to wait before the next."""
        index = self._index
        started = self._clock()
        self.requests += 1
        try:
            request = self.resource.request(index, self._timing.wait)
            answer = send(session, self._connection, request, extra_wait=self._timing.wait * 1.1)
            value = self.resource.interpret(answer)
        except MeshError as exc:
            return self._failed(exc)
        if self._stop.is_set():
            return 0.0
        if self._failures:
            log.warning(
                "mesh: Consul answers again to %s after %.1fs (%d failed request(s))",
                self.resource.call,
                self._clock() - (self._failing_since or started),
                self._failures,
            )
        self._failures, self._failing_since, self.error = 0, None, None
        self._index = next_index(index, answer.index())
        changed = value != self.value
        if changed:
            self.value = value
            try:
                self._on_change(value)
            except Exception:
                log.exception("mesh: listener of %s failed", self.resource.call)
        self._first.set()
        if index == 0 and self._index > 0:
            return 0.0  # a plain read: start blocking at once
        gap = self._timing.min_change_interval if changed else self._timing.min_interval
        return max(0.0, started + gap - self._clock())

    def _failed(self, exc: MeshError) -> float:
        if self._stop.is_set():
            return 0.0  # closing is not an outage
        self._failures += 1
        self.errors += 1
        self.error = exc
        self._index = 0  # the agent we reach next may have restarted with a lower index
        if self._failures == 1:
            self._failing_since = self._clock()
            level = logging.ERROR if isinstance(exc, MeshPermissionError) else logging.WARNING
            kept = "keeping the last good one" if self.value is not None else "none yet"
            log.log(level, "mesh: cannot %s (%s): %s", self.resource.call, kept, exc)
        else:
            log.debug("mesh: %s failed again: %s", self.resource.call, exc)
        self._first.set()
        return self._backoff.delay(self._failures)
