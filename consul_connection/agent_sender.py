"""A client's requests to its agent, over the transport its event loop shares.

A Consul agent counts connections per client address, so a process must not open one
set of connections per client: ``shared_transport`` keeps one ``AgentTransport`` per
(event loop, agent and TLS settings) for the whole process, and ``AgentSender`` (an
``AsyncSend``) is what each client holds: its own ACL token header, and a lease on its
loop's transport, released by ``aclose``. Tokens travel per request, so clients with
different tokens share one connection; a transport with no client left closes its
connections. A forked child starts with no transport (the parent's are not its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from consul_discovery.connection.agent_transport import AgentTransport, transport_key
from consul_discovery.connection.exchange import Request, Response
from consul_discovery.connection.settings import ConsulConnection


@dataclass
class _Lease:
    transport: AgentTransport
    users: int  # under _registry_lock


_registry_lock = threading.Lock()
_registry_pid = os.getpid()
_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _Lease]]
_registry = weakref.WeakKeyDictionary()  # under _registry_lock; emptied in a forked child


def shared_transport(connection: ConsulConnection) -> AgentTransport:
    """The running loop's transport to ``connection``'s agent (one more user of it)."""
    global _registry, _registry_lock, _registry_pid
    if _registry_pid != os.getpid():  # a forked child: the parent's transports are not ours
        _registry_lock, _registry_pid = threading.Lock(), os.getpid()
        _registry = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    key = transport_key(connection)
    with _registry_lock:
        leases = _registry.setdefault(loop, {})
        lease = leases.get(key)
        if lease is None:
            lease = leases[key] = _Lease(AgentTransport(connection), 0)
        lease.users += 1
        return lease.transport


def _release(loop: asyncio.AbstractEventLoop, key: tuple[Any, ...]) -> AgentTransport | None:
    """One user fewer; the transport to close when it was the last (None otherwise)."""
    with _registry_lock:
        leases = _registry.get(loop, {})
        lease = leases.get(key)
        if lease is None:
            return None
        lease.users -= 1
        if lease.users > 0:
            return None
        del leases[key]
        return lease.transport


class AgentSender:
    """One client's requests to the agent over its loop's shared transport (an AsyncSend).

    Adds the client's ACL token (``connection``'s) to every request; the connection
    itself is shared (``shared_transport``). Follows the running loop: used from another
    loop (a new ``asyncio.run``, a forked child's), it takes that loop's transport.
    """

    def __init__(self, connection: ConsulConnection) -> None:
        self.connection = connection
        self._headers = connection.headers()
        self._key = transport_key(connection)
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the lease we hold
        self._transport: AgentTransport | None = None  # used on self._loop only
        self._pid = os.getpid()

    @property
    def transport(self) -> AgentTransport | None:
        """The transport in use (None before the first request)."""
        return self._transport

    async def __call__(self, request: Request) -> Response:
        """Send ``request``; raise TransportError if no answer came."""
        loop = asyncio.get_running_loop()
        transport = self._transport
        if transport is None or self._loop is not loop or self._pid != os.getpid():
            transport = self._lease(loop)
        return await transport.send(request, self._headers)

    async def aclose(self) -> None:
        """Give the lease back (the last user's close closes the transport)."""
        loop, self._loop, self._transport = self._loop, None, None
        if loop is None or self._pid != os.getpid():
            return
        transport = _release(loop, self._key)
        if transport is None:
            return
        if loop is asyncio.get_running_loop():
            await transport.aclose()
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(transport.aclose(), loop)

    def _lease(self, loop: asyncio.AbstractEventLoop) -> AgentTransport:
        old, self._loop = self._loop, loop
        if old is not None and self._pid == os.getpid():
            stale = _release(old, self._key)
            if stale is not None and not old.is_closed() and old.is_running():
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(stale.aclose(), old)
        self._pid = os.getpid()
        self._transport = shared_transport(self.connection)
        return self._transport


def held_connections(sender: object) -> int | None:
    """Connections ``sender`` holds to Consul through the shared transport: an
    ``AgentSender``'s, or the sum over a server list's (None: not known yet)."""
    if isinstance(sender, AgentSender):
        transport = sender.transport
        return transport.connections if transport is not None else None
    members = getattr(sender, "senders", None)  # a list sender: one per server
    if not isinstance(members, dict):
        return None
    counts = [n for n in (held_connections(m) for m in members.values()) if n is not None]
    return sum(counts) if counts else None
