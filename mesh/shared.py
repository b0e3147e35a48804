"""One ``ServiceIdentity`` per service and agent connection in a process, shared by leases.

A process that serves in the mesh and calls other mesh services needs its identity in
several places: the server's TLS (``MeshService``), its discovery client's dials
(``consul_discovery.client``'s Connect targets) and, under gunicorn, the master's TTL
self-probe. ``lease_identity(service, connection)`` hands each of them the same started
identity (one pair of watches, one set of contexts); the last ``release()`` closes it.

Under gunicorn the master takes a lease for its self-probe before it forks its workers:
the identity goes on in each worker from the one in force (``after_fork="restart"``, on
the worker's own loop and connection), and the worker's server and client lease that
same one instead of starting another pair of watches.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.mesh.service_identity import ServiceIdentity

_Key = tuple[str, ConsulConnection]

_lock = threading.Lock()  # guards _shared (replaced in a forked child: see _registry)
_lock_pid = os.getpid()
_shared: dict[_Key, _Shared] = {}  # under _lock


@dataclass
class _Shared:
    identity: ServiceIdentity
    users: int = 0  # under _lock


@dataclass
class IdentityLease:
    """One user's hold on a shared, started identity; ``release()`` once when done."""

    identity: ServiceIdentity
    _key: _Key = field(repr=False)
    _released: bool = field(default=False, repr=False)  # the holder's thread only

    def release(self) -> None:
        """Give the lease back; the last one closes the identity's watches."""
        if self._released:
            return
        self._released = True
        closing: ServiceIdentity | None = None
        with _registry():
            shared = _shared.get(self._key)
            if shared is not None and shared.identity is self.identity:
                shared.users -= 1
                if shared.users <= 0:
                    del _shared[self._key]
                    closing = shared.identity
        if closing is not None:
            closing.close()


def _registry() -> threading.Lock:
    global _lock, _lock_pid
    if _lock_pid != os.getpid():  # a forked child: the parent's lock may be held for ever
        _lock, _lock_pid = threading.Lock(), os.getpid()
    return _lock


def lease_identity(
    service: str, connection: ConsulConnection | None = None, *, timing: WatchTiming | None = None
) -> IdentityLease:
    """A lease on the process's started identity of ``service`` over ``connection``
    (default: Consul's environment variables), made on first use (no I/O: see
    ``ServiceIdentity.wait_ready``). ``timing`` applies only to a new one."""
    connection = connection or ConsulConnection.from_env()
    key = (service, connection)
    with _registry():
        shared = _shared.get(key)
        if shared is None or shared.identity.closed:
            shared = _shared[key] = _Shared(ServiceIdentity(service, connection, timing=timing))
        shared.users += 1
        identity = shared.identity
    return IdentityLease(identity.start(), key)
