"""``Authorizer``: may this caller reach this service? L4 as Consul decides, L7 in-process.

- **L4** is the agent's decision (``POST /v1/agent/connect/authorize``), cached per
  caller identity in an immutable snapshot; a cached decision costs a dict lookup.
- The cache follows the intentions: a blocking query on the intentions that match the
  destination (``consul_api.IntentionsResource``, through the agent's cache, the same
  entry the authorize endpoint reads; a watch on the process's event loop,
  ``watches.MeshWatches``) delivers each change; a task on that loop then asks the agent
  again for every caller it knows, all at once, and swaps in the new snapshot whole, so
  requests never wait for that and never see a half-updated cache. Changes that arrive
  while one is being applied are applied after it, the latest last.
- **L7**: the agent denies any caller whose matching intention has permissions; for
  those the permissions are evaluated here (``l7.l7_action``), and a request no
  permission matches gets the default policy. The default is the agent's own answer for
  an identity no intention can name (a namespace that cannot exist), learned once per
  change; without an answer, the ACL default policy the agent reports.
- A caller never seen before costs one authorize call (single-flight per caller); if the
  agent cannot answer, the same rules are applied in-process to the intentions in force,
  so an agent restart changes no decision. An answer that disagrees with the intentions
  in force (the agent's authorize cache lagging the watch's) is asked again, briefly;
  if it still disagrees, the intentions' answer is used (``RECHECK_DELAYS``).
- The service's own identity may ``GET``/``HEAD`` its health path (the gunicorn master's
  TTL self-probe); every other request of it goes through the intentions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.forking import after_fork_in_child
from consul_discovery.connection.watch import WatchState
from consul_discovery.mesh.consul_api import (
    AuthorizeResult,
    IntentionsResource,
    authorize_answer,
    authorize_call,
    authorize_request,
)
from consul_discovery.mesh.errors import MeshError, MeshPermissionError, MeshUnavailableError
from consul_discovery.mesh.intentions import ALLOW, Intention, IntentionSet
from consul_discovery.mesh.l7 import RequestView, l7_action
from consul_discovery.mesh.spiffe import SpiffeId
from consul_discovery.mesh.watches import AfterFork, MeshWatches

log = logging.getLogger("consul_discovery.mesh")

#: A namespace no intention can name: the agent's answer for it is the default policy.
PROBE_NAMESPACE = "consul-discovery-mesh-default-probe"


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one request may pass, and why (``layer``: L4, L7, default, self)."""

    allowed: bool
    reason: str
    layer: str
    caller: str  # the caller's service name ("" when it has none)


@dataclass(frozen=True, slots=True)
class _Entry:
    source: SpiffeId  # the identity the agent was asked about
    result: AuthorizeResult
    intention: Intention | None  # the matching intention when it is L7
    decision: Decision | None  # the whole decision when it does not depend on the request


_Key = tuple[str | None, str, str]


@dataclass(frozen=True)
class _Snapshot:
    intentions: IntentionSet
    default_allow: bool
    entries: dict[_Key, _Entry] = field(default_factory=dict)  # adds under Authorizer._lock


def _key(source: SpiffeId) -> _Key:
    # Consul matches on partition, namespace and name: datacenter and trust domain aside.
    return (source.partition, source.namespace, source.service)


class Authorizer:
    """Intention decisions for callers of ``destination`` (see the module docstring)."""

    def __init__(
        self,
        destination: str,
        connection: ConsulConnection | None = None,
        *,
        health_path: str | None = None,
        timing: WatchTiming | None = None,
        after_fork: AfterFork = "restart",
    ) -> None:
        self.destination = destination
        self.connection = connection or ConsulConnection.from_env()
        self.health_path = health_path
        self._call = authorize_call(destination)
        self._lock = threading.Lock()  # guards _inflight and adds to a snapshot's entries
        self._inflight: dict[_Key, threading.Event] = {}  # under _lock
        self._snapshot: _Snapshot | None = None  # swapped by the loop thread; read by any
        self._ready = threading.Event()  # set once the first snapshot is in force
        self._pending: IntentionSet | None = None  # loop thread only: a change to apply
        self._applying: asyncio.Task[None] | None = None  # loop thread only
        self.authorize_calls = 0  # request threads and the loop, under _lock (read by tests)
        self._state = WatchState(
            IntentionsResource(destination, self.connection.address), self._changed, timing=timing
        )
        self._watches = MeshWatches(
            self.connection, name=f"intentions of {destination}", after_fork=after_fork
        )
        self._started = False  # set once by start()
        # The agent's ACL refusal of the authorize call (loop thread; read by wait_ready).
        self._refused: MeshPermissionError | None = None
        after_fork_in_child(self._after_fork)  # after the watches': their loop is ours then

    # -- life ---------------------------------------------------------------------------

    def start(self) -> Authorizer:
        """Start watching the intentions; returns at once (see ``wait_ready``)."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self._watches.watch(self._state)
        return self

    def wait_ready(self, timeout: float = 10.0) -> Authorizer:
        """Block until the first intentions are in force; raise why not (a refusal at once).

        A token the agent refuses the authorize call (no ``service:write`` on the
        destination) is refused here too: every caller would be decided without the agent.
        """
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            error = self._state.first_error
            if isinstance(error, MeshError) and not isinstance(error, MeshUnavailableError):
                raise error
            if time.monotonic() >= deadline:
                raise MeshUnavailableError(
                    f"no intentions for {self.destination!r} after {timeout:g}s"
                    + (f": {error}" if error else "")
                ) from error
        refused = self._refused  # the token cannot ask the agent: every decision local
        if refused is not None:
            raise refused
        return self

    def close(self) -> None:
        """Stop the intentions watch at once."""
        self._watches.close()

    @property
    def intentions(self) -> IntentionSet | None:
        """The intentions in force."""
        snapshot = self._snapshot
        return snapshot.intentions if snapshot else None

    # -- deciding -----------------------------------------------------------------------

    def cached(self, source: SpiffeId, request: RequestView) -> Decision | None:
        """The decision from the cache alone (no I/O); None when the agent must be asked."""
        snapshot = self._snapshot
        if snapshot is None:
            return None
        if source.service == self.destination and self._self_health(source, request):
            return Decision(True, "own health check", "self", source.service)
        entry = snapshot.entries.get((source.partition, source.namespace, source.service))
        if entry is None:
            return None
        return entry.decision or _decide(snapshot, entry, source, request)

    def decide(self, source: SpiffeId, request: RequestView) -> Decision:
        """The decision for one request (asks the agent once for a caller never seen)."""
        decision = self.cached(source, request)
        if decision is not None:
            return decision
        snapshot = self._snapshot
        if snapshot is None:
            return Decision(False, "intentions not loaded yet", "default", source.service)
        entry = self._entry(snapshot, source)
        return entry.decision or _decide(snapshot, entry, source, request)

    def _self_health(self, source: SpiffeId, request: RequestView) -> bool:
        return (
            self.health_path is not None
            and request.path == self.health_path
            and request.method in ("GET", "HEAD")
        )

    def _entry(self, snapshot: _Snapshot, source: SpiffeId) -> _Entry:
        key = _key(source)
        while True:
            with self._lock:
                entry = snapshot.entries.get(key)
                if entry is not None:
                    return entry
                pending = self._inflight.get(key)
                if pending is None:
                    self._inflight[key] = threading.Event()
            if pending is not None:
                pending.wait(self.connection.read_timeout + 1)
                continue
            try:
                entry = self._ask(snapshot, source)
                with self._lock:
                    snapshot.entries.setdefault(key, entry)
                return entry
            finally:
                with self._lock:
                    self._inflight.pop(key).set()

    def _ask(self, snapshot: _Snapshot, source: SpiffeId) -> _Entry:
        try:
            result = self._authorize(source)
            for delay in RECHECK_DELAYS:  # a lagging answer: ask again (see RECHECK_DELAYS)
                if _agrees(snapshot, source, result):
                    break
                time.sleep(delay)
                result = self._authorize(source)
            else:
                result = self._overrule(snapshot, source, result)
        except MeshError as exc:
            result = self._unanswered(snapshot, source, exc)
        return _entry(snapshot, source, result)

    def _authorize(self, source: SpiffeId) -> AuthorizeResult:
        """Ask the agent (from a request thread)."""
        with self._lock:
            self.authorize_calls += 1
        request = authorize_request(self.destination, source.uri)
        response = self._watches.call(request, self._call)
        return authorize_answer(response, self._call, self.connection.address)

    async def _aauthorize(self, source: SpiffeId) -> AuthorizeResult:
        """Ask the agent (on the loop)."""
        with self._lock:
            self.authorize_calls += 1
        request = authorize_request(self.destination, source.uri)
        response = await self._watches.acall(request, self._call)
        return authorize_answer(response, self._call, self.connection.address)

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and no waits on the parent's threads; a change
        the parent's loop was applying is applied again on the child's. No I/O here."""
        self._lock = threading.Lock()
        self._inflight = {}
        ready, self._ready = self._ready.is_set(), threading.Event()
        if ready:
            self._ready.set()
        self._applying = None  # a task of the parent's loop: it never ends here
        snapshot, latest = self._snapshot, self._state.value
        unapplied = snapshot is None or snapshot.intentions is not latest
        if self._pending is None and latest is not None and unapplied:
            self._pending = latest
        if self._pending is not None and not self._watches.closed:
            self._watches.loop.call(self._resume)

    def _resume(self) -> None:
        if self._pending is not None:
            self._changed(self._pending)

    # -- the loop thread ----------------------------------------------------------------

    def _changed(self, intentions: IntentionSet) -> None:
        """A new set of intentions (loop thread): applied by one task, the latest last."""
        self._pending = intentions
        if self._applying is None or self._applying.done():
            self._applying = asyncio.get_running_loop().create_task(self._apply_pending())

    async def _apply_pending(self) -> None:
        while self._pending is not None:
            intentions, self._pending = self._pending, None
            try:
                await self._refresh(intentions)
            except Exception:  # the decisions in force stay; the next change tries again
                log.exception("mesh: intentions for %s not applied", self.destination)

    async def _refresh(self, intentions: IntentionSet) -> None:
        old = self._snapshot
        default_allow = await self._default_allow(intentions)
        fresh = _Snapshot(intentions, default_allow)
        with self._lock:
            known = list(old.entries.items()) if old else []
        entries = await asyncio.gather(*(self._aask(fresh, entry.source) for _, entry in known))
        for (key, _), entry in zip(known, entries, strict=True):
            fresh.entries[key] = entry
        self._snapshot = fresh
        self._ready.set()
        log.info(
            "mesh: %d intention(s) for %s in force (index %d, default %s); %d caller(s) re-decided",
            len(intentions.intentions),
            self.destination,
            intentions.index,
            "allow" if default_allow else "deny",
            len(fresh.entries),
        )

    async def _aask(self, snapshot: _Snapshot, source: SpiffeId) -> _Entry:
        try:
            result = await self._aauthorize(source)
            for delay in RECHECK_DELAYS:  # a lagging answer: ask again (see RECHECK_DELAYS)
                if _agrees(snapshot, source, result):
                    break
                await asyncio.sleep(delay)
                result = await self._aauthorize(source)
            else:
                result = self._overrule(snapshot, source, result)
        except MeshError as exc:
            result = self._unanswered(snapshot, source, exc)
        return _entry(snapshot, source, result)

    def _overrule(
        self, snapshot: _Snapshot, source: SpiffeId, result: AuthorizeResult
    ) -> AuthorizeResult:
        """The agent's answer still disagrees with the intentions in force after every
        recheck: the intentions' answer, said once per caller and change."""
        if _agrees(snapshot, source, result):
            return result
        local = _local_result(snapshot, source)
        log.warning(
            "mesh: the agent still says %s for %s -> %s (%s) under intentions index %d; "
            "deciding from those intentions: %s",
            "allow" if result.authorized else "deny",
            source.service,
            self.destination,
            result.reason,
            snapshot.intentions.index,
            local.reason,
        )
        return local

    async def _default_allow(self, intentions: IntentionSet) -> bool:
        probe = SpiffeId("probe.invalid", PROBE_NAMESPACE, "dc", "probe")
        try:
            result: AuthorizeResult | None = await self._aauthorize(probe)
        except MeshError as exc:
            result = None
            log.warning("mesh: agent cannot state the default intention policy: %s", exc)
            if isinstance(exc, MeshPermissionError):
                self._refused = exc
        else:
            self._refused = None
        if result is not None and result.by_default:
            return result.authorized
        # An Enterprise */* intention matched the probe, or no answer: ACLs' default.
        return (intentions.acl_default_policy or "allow").strip().lower() != "deny"

    def _unanswered(self, snapshot: _Snapshot, source: SpiffeId, exc: MeshError) -> AuthorizeResult:
        result = _local_result(snapshot, source)
        log.warning(
            "mesh: agent cannot authorize %s -> %s (%s); deciding from the intentions in force: %s",
            source.service,
            self.destination,
            exc,
            result.reason,
        )
        return result


def _entry(snapshot: _Snapshot, source: SpiffeId, result: AuthorizeResult) -> _Entry:
    """The cache entry for the agent's (or the local) answer about ``source``."""
    if result.l7:
        return _Entry(source, result, snapshot.intentions.match(source), None)
    layer = "default" if result.by_default else "L4"
    decision = Decision(result.authorized, result.reason, layer, source.service)
    return _Entry(source, result, None, decision)


#: Waits (seconds) before asking the agent again while its answer disagrees with the
#: intentions in force. Its authorize endpoint reads an agent cache entry of its own, not
#: the one the intentions watch reads (Consul 1.22.3: a ``?cached`` match after an
#: authorize call is still a miss), refreshed on its own schedule: asked once right
#: after a change, it can answer from the intentions before it, and that answer would
#: stay in force until the next change (seen under load: a deny written, one instance
#: still allowing). The in-process rule agrees with the agent's for every rule kind
#: (tests/mesh/test_authorizer.py), so a disagreement is a lag; after these (~1.6 s in
#: all) the intentions' answer is used and the disagreement logged.
RECHECK_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)


def _agrees(snapshot: _Snapshot, source: SpiffeId, result: AuthorizeResult) -> bool:
    """True if ``result`` is what the intentions in force decide for ``source`` (L4)."""
    local = _local_result(snapshot, source)
    return result.authorized == local.authorized and result.l7 == local.l7


def _local_result(snapshot: _Snapshot, source: SpiffeId) -> AuthorizeResult:
    """The agent's L4 rule applied to the intentions in force (when it cannot answer)."""
    intention = snapshot.intentions.match(source)
    if intention is None:
        return AuthorizeResult(snapshot.default_allow, "Default (decided locally)")
    if intention.is_l7:
        return AuthorizeResult(False, f"Matched L7 intention: {intention.describe()}")
    allowed = intention.action == ALLOW
    return AuthorizeResult(allowed, f"Matched L4 intention (locally): {intention.describe()}")


def _decide(snapshot: _Snapshot, entry: _Entry, source: SpiffeId, request: RequestView) -> Decision:
    """An L7 entry's decision for one request (L4 entries carry theirs)."""
    result = entry.result
    intention = entry.intention
    if intention is None or not intention.is_l7:
        return Decision(False, result.reason, "L7", source.service)
    action = l7_action(intention, request)
    if action is None:
        verdict = "allow" if snapshot.default_allow else "deny"
        reason = f"no permission of the L7 intention matched: default {verdict}"
        return Decision(snapshot.default_allow, reason, "L7", source.service)
    reason = f"L7 permission {action}: {intention.describe()}"
    return Decision(action == ALLOW, reason, "L7", source.service)
