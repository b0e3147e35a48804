"""Which of several Consul servers a request goes to, and what its answer may be trusted
with (no I/O).

``ServerRouting`` is shared by every request of one client (the watches of a source,
its one-shot reads, a KV store): one ``servers.ServerList`` (spread, stick, fail over,
rebalance) and one high-water index per server. ``route(request)`` is a generator
that yields each ``Attempt`` (a server and the request to send it) and receives the
answer, or has the transport's ``TransportError`` thrown into it; it returns the
answer to hand back (``server_sending`` drives it with a blocking or an awaitable
send). The rules:

1. **The current server first.** On a transport failure, or an answer that says "this
   server cannot serve now" (429, and any 5xx but Consul's answer to a bad filter: no
   leader, shutting down, a forwarding error), the same request goes at once to the
   next server that has not been tried for it: the caller sees no error while any
   server answers. Only when every server failed does the last failure come back (a
   watch then backs off with its own rules). A read (GET) is retried on any failure;
   a write only when it cannot have reached Consul (refused, TLS handshake, unknown
   name) or Consul cannot have applied it (429, "No cluster leader"): a write whose
   connection broke may have been applied. Our own close (``CLOSED``) is never
   retried.
2. **An index is trusted only where it is known.** A blocking query carries an index
   from some server's view of the Raft log. Each server's *high-water mark* is the
   highest ``X-Consul-Index`` it has answered with (a server that answered N has
   applied the log up to N). A blocking query whose index is above the mark of the
   server it goes to is sent as a plain read (``index`` and ``wait`` left out): on a
   server that is behind it, or whose state went back, it would block for the whole
   wait. The mark is forgotten when the server fails (it may come back restarted).
   The watch itself then applies Consul's rule on the answer
   (``consul_connection.blocking.next_index``): an index at or past its own is a
   continuous view; one below it (the leader's view went back: a restore) resets it,
   through self-preservation.
3. **Stale reads** (``?stale``, asked by the query or by ``StalePolicy.stale`` for every
   read) are judged on ``X-Consul-KnownLeader``/``X-Consul-LastContact``
   (``server_reads.StalePolicy.too_stale``: past ``max_stale``) and, for a plain read
   sent in place of a blocking one, on the index: an answer below the request's index
   comes from a follower that lags. Either way the same server is asked again without
   ``stale`` (it forwards the read to the leader); that answer is used as it is.

The rules hold for any request at the ``Send`` seam, with no state per watch (part 1
planned them per watch: ``CrossServerIndex``/``ServerReads``, replaced by this), so the
watch engine, the KV watch and one-shot reads need no change.

Thread-safety: one lock guards the list and the marks, held for no I/O; generators are
per request. Switches are logged once each, with the time the next server took to
answer (``RoutingStatus.last_switch``).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace

from consul_discovery.connection.exchange import Request, Response, TransportError
from consul_discovery.connection.server_reads import ReadMeta, StalePolicy, read_meta
from consul_discovery.connection.servers import ServerAddress, ServerList
from consul_discovery.connection.transport_errors import TransportFailure

log = logging.getLogger(__name__)

#: Failures after which a write cannot have reached Consul, so another server may take it.
_NOT_SENT = frozenset(
    {
        TransportFailure.REFUSED,
        TransportFailure.NAME,
        TransportFailure.NOT_TLS,
        TransportFailure.TLS_UNTRUSTED,
        TransportFailure.TLS,
    }
)
_BAD_EXPRESSION = re.compile(rb"boolean expression|filter", re.IGNORECASE)
_BLOCKING = ("index", "wait")
_CONSISTENCY = ("stale", "consistent", "leader")
# Endpoints about the agent itself or the Raft peers: ?stale means nothing there.
_LOCAL_PATHS = ("/v1/agent/", "/v1/status/", "/v1/operator/")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to send to one server."""

    server: ServerAddress
    request: Request


@dataclass(frozen=True, slots=True)
class Switch:
    """A failover: ``failed`` stopped answering (``reason``), ``to`` answered
    ``seconds`` after that first failure."""

    failed: ServerAddress
    to: ServerAddress
    reason: str
    seconds: float


@dataclass(frozen=True, slots=True)
class RoutingStatus:
    """A snapshot of the routing: the current server and counters since start."""

    current: ServerAddress
    switches: int  # times another server answered after the one in use failed
    failovers: int  # requests sent again to another server
    plain_reads: int  # blocking queries sent without their index (rule 2)
    leader_reads: int  # stale answers asked again of the leader (rule 3)
    last_switch: Switch | None


def cannot_serve(response: Response) -> bool:
    """True when ``response`` says this server cannot serve now (another may)."""
    status = response.status
    if status == 429:
        return True
    return status >= 500 and not _BAD_EXPRESSION.search(response.body[:300])


def _not_applied(response: Response) -> bool:
    """A refusal of a write that Consul cannot have applied (another server may take it)."""
    return response.status == 429 or b"no cluster leader" in response.body[:300].lower()


def _param(request: Request, name: str) -> str | None:
    for key, value in request.params:
        if key == name:
            return value
    return None


def _without(request: Request, names: Sequence[str]) -> Request:
    params = tuple((k, v) for k, v in request.params if k not in names)
    return replace(request, params=params)


def _blocking_index(request: Request) -> int:
    raw = _param(request, "index") or ""
    return int(raw) if raw.isdigit() else 0


class ServerRouting:
    """Routes requests over several servers by the module's rules (shared; no I/O).

    ``servers`` are the addresses (a ``ServerList`` shuffles them with ``rng``);
    ``policy`` says whether reads ask for ``?stale`` and how stale an answer may be;
    ``clock`` is monotonic seconds (switch times, rebalancing after
    ``rebalance_after`` seconds on one server).
    """

    def __init__(
        self,
        servers: Sequence[ServerAddress],
        *,
        policy: StalePolicy | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        rebalance_after: float | None = 300.0,
    ) -> None:
        self.policy = policy or StalePolicy()
        self._clock = clock
        self._lock = threading.Lock()  # guards everything below; never held across I/O
        self._list = ServerList(servers, rng=rng, clock=clock, rebalance_after=rebalance_after)
        self._marks: dict[ServerAddress, int] = {}  # under _lock: each server's high water
        # under _lock: the failure that started a switch not yet answered elsewhere
        self._pending: tuple[ServerAddress, str, float] | None = None
        self._last_switch: Switch | None = None  # under _lock
        self._reading: ServerAddress | None = None  # under _lock: the server last logged in use
        self._switches = 0  # under _lock
        self._failovers = 0  # under _lock
        self._plain_reads = 0  # under _lock
        self._leader_reads = 0  # under _lock

    @property
    def servers(self) -> tuple[ServerAddress, ...]:
        """Every server, in the order they would be tried now."""
        with self._lock:
            return self._list.order

    def status(self) -> RoutingStatus:
        """The current server and the counters (a consistent snapshot)."""
        with self._lock:
            return RoutingStatus(
                self._list.current,
                self._switches,
                self._failovers,
                self._plain_reads,
                self._leader_reads,
                self._last_switch,
            )

    def mark(self, server: ServerAddress) -> int:
        """The highest index ``server`` answered with since it last failed (0: none)."""
        with self._lock:
            return self._marks.get(server, 0)

    # -- one request ---------------------------------------------------------------------

    def route(self, request: Request) -> Generator[Attempt, Response, Response]:
        """The attempts for ``request`` (module docstring); returns the answer to use."""
        read = request.method in ("GET", "HEAD")
        if read and self.policy.stale and self._may_add_stale(request):
            request = replace(request, params=(*request.params, ("stale", "")))
        wanted = _blocking_index(request)
        tried: list[ServerAddress] = []
        refusal: Response | None = None  # the last "cannot serve" answer
        with self._lock:
            self._list.maybe_rebalance()
        while True:
            server, plain = self._choose(tried, wanted)
            if server is None:
                assert refusal is not None  # a transport failure raised before this
                return refusal
            sent = _without(request, _BLOCKING) if plain else request
            stale = "stale" in dict(sent.params)
            for leader in (False, True):
                if leader:  # the stale answer was not usable: ask the leader, same server
                    sent = _without(sent, ("stale",))
                try:
                    response = yield Attempt(server, sent)
                except TransportError as exc:
                    tried.append(server)
                    self._failed(server, exc.kind.reason)
                    retry = exc.kind is not TransportFailure.CLOSED and (
                        read or exc.kind in _NOT_SENT
                    )
                    if not (retry and self._untried(tried)):
                        raise
                    break
                if cannot_serve(response) and (read or _not_applied(response)):
                    tried.append(server)
                    self._failed(server, f"{response.status} {response.text.strip()[:80]}")
                    refusal = replace(response, server=str(server))
                    break
                meta = read_meta(response.headers)
                why = None if leader or not stale else self._too_stale(meta, plain, wanted)
                if why is not None:
                    log.debug("stale answer from %s not used (%s): asking the leader", server, why)
                    self._count("leader_reads")
                    continue
                self._answered(server, response.status, meta.index)
                return replace(response, server=str(server))
            if self._untried(tried):
                self._count("failovers")

    def _too_stale(self, meta: ReadMeta, plain: bool, wanted: int) -> str | None:
        why = self.policy.too_stale(meta)
        if why is None and plain and meta.index is not None and meta.index < wanted:
            why = f"the server is behind (index {meta.index} < {wanted})"
        return why

    # -- bookkeeping (each step under the lock, no I/O) -------------------------------

    def _may_add_stale(self, request: Request) -> bool:
        if request.path.startswith(_LOCAL_PATHS):
            return False
        return not any(name in _CONSISTENCY for name, _value in request.params)

    def _choose(self, tried: list[ServerAddress], wanted: int) -> tuple[ServerAddress | None, bool]:
        with self._lock:
            current = self._list.current
            if current in tried:
                current = next((s for s in self._list.order if s not in tried), None)
            if current is None:
                return None, False
            plain = wanted > 0 and self._marks.get(current, 0) < wanted
            if plain:
                self._plain_reads += 1
            return current, plain

    def _untried(self, tried: list[ServerAddress]) -> bool:
        with self._lock:
            return any(s not in tried for s in self._list.order)

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, f"_{counter}", getattr(self, f"_{counter}") + 1)

    def _failed(self, server: ServerAddress, reason: str) -> None:
        with self._lock:
            self._marks.pop(server, None)
            was_current = server == self._list.current
            failover = self._list.failed(server)
            if was_current and failover.switched and self._pending is None:
                self._pending = (server, reason, self._clock())
        log.debug("Consul server %s failed: %s", server, reason)

    def _answered(self, server: ServerAddress, status: int, index: int | None) -> None:
        switch = None
        first_use = False
        with self._lock:
            self._list.succeeded(server)
            if 200 <= status < 300 and index is not None and index > 0:
                self._marks[server] = max(self._marks.get(server, 0), index)
            pending = self._pending
            if pending is not None and server != pending[0]:
                failed, reason, since = pending
                switch = Switch(failed, server, reason, max(0.0, self._clock() - since))
                self._pending = None
                self._last_switch = switch
                self._switches += 1
            elif pending is not None:
                self._pending = None  # the server that failed answered again
            if server == self._list.current and server != self._reading:
                first_use = switch is None  # a switch logs its own line
                self._reading = server
        if first_use:  # the first answer, or a rebalance: say which server reads serve
            log.info("Consul server %s in use (of %d)", server, len(self._list.order))
        if switch is not None:
            log.warning(
                "Consul server %s failed (%s): %s answered instead, %.1f ms later",
                switch.failed,
                switch.reason,
                switch.to,
                switch.seconds * 1000,
            )

    def __repr__(self) -> str:
        return f"ServerRouting({self.servers!r})"
