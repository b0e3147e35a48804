"""TLS contexts that follow the identity: swapped whole when the leaf or the roots change.

An ``ssl.SSLContext`` is not changed once connections use it (OpenSSL does not make
that safe); a renewal or a rotation builds new contexts on the loop thread (the watches') and
publishes them by swapping one reference. New handshakes use the new ones; established
connections keep the session they authenticated.

- ``ServerTLS.context()`` is the server context in force (gunicorn's ``ssl_context``
  hook asks for it per connection); ``front_context()`` is one context for servers that
  take a single context for their whole life (asyncio, uvicorn): its ``sni_callback``
  runs for every ClientHello, SNI or not, and swaps the connection onto the context in
  force, whose certificate and trust store the handshake then uses.
- ``ClientTLS.context_for(service)`` is a caller's context for one target, cached per
  generation; ``generation`` grows with every change and ``subscribe`` tells listeners,
  so a transport drops its pooled connections and builds new ones with the new context.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from consul_discovery.mesh.errors import IdentityNotReady
from consul_discovery.mesh.identity import CaRoots, Leaf
from consul_discovery.mesh.spiffe import DEFAULT_NAMESPACE, SpiffeId
from consul_discovery.mesh.tls import (
    MINIMUM_VERSION,
    LeanSocket,
    client_context,
    server_context,
)

log = logging.getLogger("consul_discovery.mesh")


class ServerTLS:
    """The server side's context in force; ``update`` (the loop thread) replaces it."""

    def __init__(self, *, key_dir: str | None = None) -> None:
        self._key_dir = key_dir
        self._context: ssl.SSLContext | None = None  # swapped by update(); read by any thread
        self.generation = 0  # written by update() only

    def update(self, leaf: Leaf, roots: CaRoots) -> None:
        """Build the context for ``leaf`` and ``roots`` and put it in force."""
        context = server_context(leaf, roots, key_dir=self._key_dir)
        self._context = context
        self.generation += 1

    @property
    def ready(self) -> bool:
        """True once a context is in force."""
        return self._context is not None

    def context(self) -> ssl.SSLContext:
        """The context in force (IdentityNotReady before the first leaf and roots)."""
        context = self._context
        if context is None:
            raise IdentityNotReady("no leaf certificate and CA roots yet")
        return context

    def front_context(self) -> ssl.SSLContext:
        """One context whose every handshake is moved onto the context in force."""
        front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        front.minimum_version = MINIMUM_VERSION
        front.verify_mode = ssl.CERT_REQUIRED  # kept by OpenSSL across the swap
        front.sni_callback = self._select
        front.sslsocket_class = LeanSocket  # for a blocking server (asyncio's: SSLObject)
        return front

    def _select(
        self, tls: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, front: ssl.SSLContext
    ) -> int | None:
        context = self._context
        if context is None:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        tls.context = context
        return None


@dataclass(frozen=True)
class _ClientState:
    generation: int
    leaf: Leaf
    roots: CaRoots
    contexts: dict[SpiffeId, ssl.SSLContext] = field(default_factory=dict)  # under ClientTLS._lock


class ClientTLS:
    """A caller's contexts, one per target service, rebuilt when the identity changes."""

    def __init__(self, *, key_dir: str | None = None) -> None:
        self._key_dir = key_dir
        self._state: _ClientState | None = None  # swapped by update(); read by any thread
        self._lock = threading.Lock()  # guards building into a state's cache (no network I/O)
        self._listeners: list[Callable[[int], None]] = []  # under _lock

    @property
    def generation(self) -> int:
        """Grows by one with each new leaf or roots (0: nothing yet)."""
        state = self._state
        return state.generation if state else 0

    def update(self, leaf: Leaf, roots: CaRoots) -> None:
        """A new leaf or roots: later ``context_for`` calls build new contexts."""
        with self._lock:
            generation = self.generation + 1
            self._state = _ClientState(generation, leaf, roots)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(generation)
            except Exception:
                log.exception("mesh: a client TLS listener failed")

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held it)."""
        self._lock = threading.Lock()

    def subscribe(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(generation)`` after every change (on the loop thread)."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[int], None]) -> None:
        """Stop calling ``listener`` (a closed client's); unknown listeners are ignored."""
        with self._lock:
            self._listeners = [known for known in self._listeners if known != listener]

    def expected(
        self, service: str, *, datacenter: str | None = None, namespace: str = DEFAULT_NAMESPACE
    ) -> SpiffeId:
        """The identity a server of ``service`` must present (our datacenter by default)."""
        return _expected(self._require(), service, datacenter, namespace)

    def context_for(
        self, service: str, *, datacenter: str | None = None, namespace: str = DEFAULT_NAMESPACE
    ) -> ssl.SSLContext:
        """The context for calling ``service``: our leaf, the roots, its SPIFFE check."""
        state = self._require()
        expected = _expected(state, service, datacenter, namespace)
        context = state.contexts.get(expected)
        if context is not None:
            return context
        with self._lock:
            context = state.contexts.get(expected)
            if context is None:
                context = client_context(state.leaf, state.roots, expected, key_dir=self._key_dir)
                state.contexts[expected] = context
        return context

    def _require(self) -> _ClientState:
        state = self._state
        if state is None:
            raise IdentityNotReady("no leaf certificate and CA roots yet")
        return state


def _expected(
    state: _ClientState, service: str, datacenter: str | None, namespace: str
) -> SpiffeId:
    own = state.leaf.spiffe_id
    return SpiffeId(state.roots.trust_domain, namespace, datacenter or own.datacenter, service)
