"""ASGI side: the caller's identity into the scope, and authorization before the app.

uvicorn does not put the TLS peer certificate into the ASGI scope. ``mesh_protocol``
makes a subclass of uvicorn's HTTP protocol class (h11 or httptools) whose
``connection_made`` (called by asyncio once the handshake completed) reads the verified
peer certificate once per connection and wraps the connection's app so that every
request's scope carries:

- ``scope["extensions"]["tls"]``: the ASGI TLS extension (``client_cert_chain`` with
  the caller's leaf in PEM, ``tls_version``), and
- ``scope["extensions"]["consul_discovery.mesh.peer"]``: the caller's ``SpiffeId``
  (or the ``PeerIdentityError`` saying why there is none).

``MeshASGI`` then authorizes each request with the shared ``Guard``: a cached decision
inline, a caller never seen in a worker thread (the agent call must not block the event
loop); a denial is a 403 with a JSON body and the app never runs.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from consul_discovery.mesh.errors import PeerIdentityError
from consul_discovery.mesh.guard import FORBIDDEN_HEADERS, PEER_KEY, Guard, Peer
from consul_discovery.mesh.l7 import RequestView
from consul_discovery.mesh.one_record import GatheringTransport
from consul_discovery.mesh.tls import peer_identity

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def connection_peer(transport: Any) -> tuple[Peer, dict[str, Any] | None]:
    """The caller's identity and the ASGI TLS extension of one connection."""
    tls = transport.get_extra_info("ssl_object")
    if tls is None:
        return PeerIdentityError("the connection is not mesh TLS"), None
    der = tls.getpeercert(binary_form=True)
    extension = {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(tls.version() or ""),
        "cipher_suite": None,
    }
    try:
        return peer_identity(tls), extension
    except PeerIdentityError as exc:
        return exc, extension


def _with_peer(app: ASGIApp, peer: Peer, tls: dict[str, Any] | None) -> ASGIApp:
    async def app_with_peer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = scope.setdefault("extensions", {})
            extensions[PEER_KEY] = peer
            if tls is not None:
                extensions.setdefault("tls", tls)
        await app(scope, receive, send)

    return app_with_peer


class PeerProtocol:
    """Mixin for a uvicorn HTTP protocol: each connection's scopes carry its peer."""

    app: ASGIApp

    def connection_made(self, transport: Any) -> None:
        """The handshake is done: read the peer once, then let uvicorn set up, writing
        through a GatheringTransport (an answer's head and body: one TLS record)."""
        loop = asyncio.get_running_loop()
        super().connection_made(GatheringTransport(transport, loop))  # type: ignore[misc]
        peer, tls = connection_peer(transport)
        self.app = _with_peer(self.app, peer, tls)


def mesh_protocol(base: type) -> type:
    """A subclass of uvicorn protocol class ``base`` that puts the peer in the scope."""
    return type(f"Mesh{base.__name__}", (PeerProtocol, base), {"__module__": __name__})


class ScopeHeaders:
    """An ASGI request's headers by lower-case name, built on first use."""

    __slots__ = ("_joined", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._joined: dict[str, str] | None = None

    def get(self, name: str, /) -> str | None:
        """The header's value, repeated ones joined with ``,``."""
        if self._joined is None:
            joined: dict[str, str] = {}
            for key, value in self._raw:
                k, v = key.decode("latin-1").lower(), value.decode("latin-1")
                joined[k] = f"{joined[k]},{v}" if k in joined else v
            self._joined = joined
        return self._joined.get(name)


def scope_view(scope: Scope) -> RequestView:
    """The method, raw path (no query string) and headers of an ASGI request."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope.get("path", "/")
    return RequestView(
        scope.get("method", "GET"), path.split("?", 1)[0], ScopeHeaders(scope.get("headers") or [])
    )


class MeshASGI:
    """Wraps an ASGI app: every HTTP/websocket request is authorized by ``guard`` first."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authorize, then pass the request on or refuse it."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan passes through
            return
        peer: Peer = scope.get("extensions", {}).get(PEER_KEY) or PeerIdentityError(
            "the request did not arrive over mesh TLS"
        )
        view = scope_view(scope)
        decision = self.guard.cached(peer, view)
        if decision is None:
            decision = await asyncio.to_thread(self.guard.check, peer, view)
        if decision.allowed:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})
        else:
            body = self.guard.forbidden(decision)
            headers = [(k.lower().encode(), v.encode()) for k, v in FORBIDDEN_HEADERS]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
