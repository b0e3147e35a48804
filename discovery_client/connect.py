"""Connect targets: the caller's mesh identity, and the Dials that carry its TLS context.

A Target with ``connect=True`` (``ServiceConfig(connect=True)``) asks Consul for the
Connect-capable instances of a service (``/v1/health/connect/<name>``: Connect-native
instances and sidecar proxies alike, each with the address and port to dial) and is
reached over mutual TLS: the caller presents its own leaf certificate, trusts only the
mesh's CA roots, and the handshake fails unless the server's certificate names the
target service (its SPIFFE ID: ``consul_discovery.mesh.rotation.ClientTLS.context_for``).

``ConnectTLS`` is the one place the client core touches the mesh:

- ``dial(instance)`` is the Balancer's dial for a Connect target: ``Dial.of(instance,
  context_for(service))``, so the shells only read ``Dial.ssl_context``;
- when the identity changes (a renewed leaf, rotated roots: a new ``ClientTLS``
  generation, hence new contexts), every Balancer of a Connect target re-dials its
  endpoints (``Balancer.redial``, on the identity's thread, a few allocations): new
  attempts then carry the new context, and the shells' pools, keyed by instance *and*
  context, open new connections with it and drop the old ones (``pool.py``,
  ``httpx_pools.py``). Connections made with the old context are not kept for later
  use: a rotated root may have been removed for a reason;
- a call to a Connect target before the caller's identity is in force waits for it like
  a first resolve, bounded by the call's deadline (``wait_ready``), then fails with
  ``ConnectIdentityError`` saying why.

The identity is the one given to the client (``identity=``, a ``ServiceIdentity``) or, by
default, the process's shared identity of ``SERVICE_NAME`` over Consul's environment
(``consul_discovery.mesh.shared.lease_identity``, imported only when a Connect target is
used).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from consul_discovery.client.dial import Dial
from consul_discovery.client.errors import DiscoveryError
from consul_discovery.client.instance import Instance


class ConnectIdentityError(DiscoveryError):
    """A Connect target was called without a mesh identity in force (names why)."""


class ConnectRequiredError(DiscoveryError):
    """A plain call reached a Connect-native instance (mTLS only): use ``connect=True``."""


def unsendable(dial: Dial) -> DiscoveryError:
    """Why the shells cannot send over ``dial``, an ``https`` Dial without a TLS context."""
    if dial.refusal is not None:
        return ConnectRequiredError(dial.refusal)
    return ConnectIdentityError("no mesh identity in force to dial " + dial.base_url)


class ConnectTLS:
    """The caller's mesh identity, shared by every Connect target of one client core.

    ``identity`` is a started ``ServiceIdentity`` (anything with ``client_tls``,
    ``ready``, ``wait_ready`` and ``start``), or None to lease the process's identity of
    ``SERVICE_NAME`` on first use. Thread-safe; ``redial`` listeners run on the
    identity's thread.
    """

    def __init__(self, identity: Any = None) -> None:
        self._identity = identity  # set once (here or by _get under _lock)
        self._lease: Any = None  # the shared identity's lease when we made one
        self._lock = threading.Lock()  # guards _identity/_lease creation and _redials
        self._redials: list[Callable[[], None]] = []  # under _lock
        self._subscribed = False  # under _lock
        # The identity generation every Balancer has been re-dialled for (0: none yet);
        # written by _changed (the identity's thread) and once when subscribing.
        self._dialed = 0
        self.closed = False  # set by close()

    def _get(self) -> Any:
        identity = self._identity
        if identity is not None and self._subscribed:
            return identity
        with self._lock:
            if self._identity is None:
                service = os.environ.get("SERVICE_NAME", "").strip()
                if not service:
                    raise ConnectIdentityError(
                        "a Connect target needs the caller's mesh identity: pass identity= "
                        "(a ServiceIdentity) to the client, or set SERVICE_NAME"
                    )
                from consul_discovery.mesh.shared import lease_identity

                self._lease = lease_identity(service)
                self._identity = self._lease.identity
            if not self._subscribed:
                self._subscribed = True
                client_tls = self._identity.client_tls
                client_tls.subscribe(self._changed)
                # Already in force: every Balancer made from now on dials with it.
                self._dialed = max(self._dialed, client_tls.generation)
            return self._identity

    @property
    def identity(self) -> Any:
        """The caller's ServiceIdentity (leased on first use when none was given)."""
        return self._get()

    @property
    def ready(self) -> bool:
        """True once the caller's identity is in force and every Connect Balancer dials
        with it (the identity's generation alone says so before the re-dials ran)."""
        if not self._dialed:
            self._get()
        return bool(self._dialed)

    def dial_for(self, service: str, datacenter: str | None, redial: Callable[[], None]) -> Any:
        """The Balancer dial of one Connect target; ``redial`` is called on every change."""
        client_tls = self._get().client_tls
        with self._lock:
            self._redials.append(redial)

        def dial(instance: Instance) -> Dial:
            context = None
            if client_tls.generation:
                context = client_tls.context_for(service, datacenter=datacenter)
            return Dial.of(instance, context, tls=True)

        return dial

    def wait_ready(self, timeout: float) -> None:
        """Block until the identity is in force (at most ``timeout``), else raise why."""
        identity = self._get()
        if self._dialed:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            identity.wait_ready(max(0.0, timeout))
        except Exception as exc:
            raise ConnectIdentityError(
                f"no mesh identity for {_name(identity)} within {timeout:.3g}s: {exc}"
            ) from exc
        while not self._dialed:  # the re-dials run right after the identity is set
            if time.monotonic() >= deadline:
                raise ConnectIdentityError(f"no mesh identity for {_name(identity)} in time")
            time.sleep(0.001)

    async def await_ready(self, timeout: float) -> None:
        """``wait_ready`` without blocking the event loop (polls the identity's flag)."""
        identity = self._get()
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._dialed:
            problem = getattr(identity, "problem", lambda: None)()
            if problem is not None and not _transient(problem):
                raise ConnectIdentityError(f"no mesh identity for {_name(identity)}: {problem}")
            if time.monotonic() >= deadline:
                raise ConnectIdentityError(
                    f"no mesh identity for {_name(identity)} within {timeout:.3g}s"
                    + (f": {problem}" if problem else "")
                )
            await asyncio.sleep(0.01)

    def _changed(self, generation: int) -> None:
        with self._lock:
            redials = list(self._redials)
        for redial in redials:
            redial()
        self._dialed = max(self._dialed, generation)

    def close(self) -> None:
        """Give back a leased identity (one given to the client stays its owner's)."""
        self.closed = True
        with self._lock:
            identity = self._identity if self._subscribed else None
            self._subscribed = False
            self._redials.clear()  # the Balancers of a closed client are not re-dialled
        if identity is not None:
            identity.client_tls.unsubscribe(self._changed)
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


def _name(identity: Any) -> str:
    return repr(getattr(identity, "service", identity))


def _transient(problem: BaseException) -> bool:
    from consul_discovery.mesh.errors import MeshUnavailableError

    return isinstance(problem, MeshUnavailableError)
