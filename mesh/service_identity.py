"""``ServiceIdentity``: a service's Connect identity from its own agent, kept fresh.

Two watches on the process's event loop (``watches.MeshWatches`` over
``consul_api.LeafResource`` and ``RootsResource``: the shared engine's blocking-query
rules) keep the leaf certificate and the CA roots current; each new (leaf, roots) pair
builds new server and client contexts (``rotation.ServerTLS`` / ``ClientTLS``) and puts
them in force, so a renewed leaf or a CA rotation needs no restart and fails no request.
While the agent is away the identity in force is kept. The agent's leaf endpoint needs
``service:write`` on the service: without it, ``wait_ready`` raises
``MeshPermissionError`` naming it.

Building the contexts (two ``load_cert_chain``, a millisecond or two) runs on the loop
thread when a change arrives: hours apart, and short enough for a listener there.
Fork-safe: in a forked child the identity goes on from the one in force on the child's
own loop (``after_fork="restart"``, default) or stops there (``"close"``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.forking import after_fork_in_child
from consul_discovery.connection.watch import WatchState
from consul_discovery.mesh.consul_api import LeafResource, RootsResource
from consul_discovery.mesh.errors import IdentityNotReady, MeshError, MeshUnavailableError
from consul_discovery.mesh.identity import CaRoots, Leaf
from consul_discovery.mesh.rotation import ClientTLS, ServerTLS
from consul_discovery.mesh.spiffe import SpiffeId
from consul_discovery.mesh.watches import AfterFork, MeshWatches

log = logging.getLogger("consul_discovery.mesh")


class ServiceIdentity:
    """The leaf certificate and CA roots of ``service``, and the TLS contexts that follow."""

    def __init__(
        self,
        service: str,
        connection: ConsulConnection | None = None,
        *,
        timing: WatchTiming | None = None,
        key_dir: str | None = None,
        after_fork: AfterFork = "restart",
    ) -> None:
        self.service = service
        self.connection = connection or ConsulConnection.from_env()
        self.server_tls = ServerTLS(key_dir=key_dir)
        self.client_tls = ClientTLS(key_dir=key_dir)
        self._lock = threading.Lock()  # serialises applying a new pair (no I/O under it)
        self._leaf: Leaf | None = None  # under _lock; written by the loop thread
        self._roots: CaRoots | None = None  # under _lock; written by the loop thread
        self._ready = threading.Event()  # set once the first pair is in force
        self._listeners: list[Callable[[Leaf, CaRoots], None]] = []  # under _lock
        self._started = False  # set once by start() (the owner's thread)
        after_fork_in_child(self._after_fork)  # before the watches': locks first
        address = self.connection.address
        self._leaf_state = WatchState(LeafResource(service, address), self._on_leaf, timing=timing)
        self._roots_state = WatchState(RootsResource(address), self._on_roots, timing=timing)
        self._watches = MeshWatches(
            self.connection, name=f"identity of {service}", after_fork=after_fork
        )

    def __repr__(self) -> str:
        leaf = self._leaf
        serial = leaf.serial if leaf else None
        return f"ServiceIdentity({self.service!r}, leaf serial={serial}, ready={self.ready})"

    # -- reading it ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once a leaf and the roots are in force."""
        return self._ready.is_set()

    @property
    def leaf(self) -> Leaf | None:
        """The leaf in force."""
        return self._leaf

    @property
    def roots(self) -> CaRoots | None:
        """The CA roots in force."""
        return self._roots

    @property
    def spiffe_id(self) -> SpiffeId:
        """This service's own identity (IdentityNotReady before the first leaf)."""
        leaf = self._leaf
        if leaf is None:
            raise IdentityNotReady(f"no leaf certificate for {self.service!r} yet")
        return leaf.spiffe_id

    @property
    def closed(self) -> bool:
        """True once closed (the contexts in force stay usable, nothing rotates them)."""
        return self._watches.closed

    def subscribe(self, listener: Callable[[Leaf, CaRoots], None]) -> None:
        """Call ``listener(leaf, roots)`` after each change is in force (loop thread)."""
        with self._lock:
            self._listeners.append(listener)

    def problem(self) -> MeshError | None:
        """Why the identity is not in force yet, if a watch failed (None otherwise)."""
        for state in (self._leaf_state, self._roots_state):
            error = state.first_error
            if isinstance(error, MeshError):
                return error
        return None

    # -- life ---------------------------------------------------------------------------

    def start(self) -> ServiceIdentity:
        """Start both watches; returns at once (see ``wait_ready``). Idempotent."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self._watches.watch(self._leaf_state)
        self._watches.watch(self._roots_state)
        return self

    def wait_ready(self, timeout: float = 10.0) -> ServiceIdentity:
        """Block until the identity is in force; raise why not (at once for a refusal)."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            last = self.problem()
            if last is not None and not isinstance(last, MeshUnavailableError):
                raise last
            if time.monotonic() >= deadline:
                raise IdentityNotReady(
                    f"no Connect identity for {self.service!r} after {timeout:g}s"
                    + (f": {last}" if last else "")
                ) from last
        return self

    def close(self) -> None:
        """Stop both watches at once (the contexts in force stay usable)."""
        self._watches.close()

    def __enter__(self) -> ServiceIdentity:
        return self.start().wait_ready()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        """In a forked child: fresh locks (a parent thread may have held one)."""
        self._lock = threading.Lock()
        ready, self._ready = self._ready.is_set(), threading.Event()
        if ready:
            self._ready.set()
        self.client_tls.after_fork()

    # -- the loop thread ----------------------------------------------------------------

    def _on_leaf(self, leaf: Leaf) -> None:
        self._apply(leaf=leaf)

    def _on_roots(self, roots: CaRoots) -> None:
        self._apply(roots=roots)

    def _apply(self, *, leaf: Leaf | None = None, roots: CaRoots | None = None) -> None:
        with self._lock:
            leaf = leaf or self._leaf
            roots = roots or self._roots
            if leaf is None or roots is None:
                self._leaf, self._roots = leaf, roots
                return
            try:
                self.server_tls.update(leaf, roots)
                self.client_tls.update(leaf, roots)
            except MeshError as exc:
                log.error(
                    "mesh: new identity of %s not applied, keeping the old: %s", self.service, exc
                )
                return
            self._leaf, self._roots = leaf, roots
            listeners = list(self._listeners)
        log.info(
            "mesh: identity of %s in force: leaf %s valid until %s, %d CA root(s), active %s",
            self.service,
            leaf.serial,
            leaf.valid_before.isoformat(),
            len(roots.roots),
            roots.active_root_id[:11],
        )
        self._ready.set()
        for listener in listeners:
            try:
                listener(leaf, roots)
            except Exception:
                log.exception("mesh: an identity listener of %s failed", self.service)
