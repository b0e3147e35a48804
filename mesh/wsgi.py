"""WSGI middleware: authorize the caller by intentions before the app sees the request.

Under gunicorn with TLS, ``environ["gunicorn.socket"]`` is the connection's
``ssl.SSLSocket``; the caller's SPIFFE ID is read from its verified certificate once per
connection. A denied request gets ``403`` with a JSON body naming the caller and never
reaches the app; an allowed one carries the caller's ``SpiffeId`` in
``environ["consul_discovery.mesh.peer"]``. ``consul_discovery.mesh.gunicorn_conf``
installs it around the worker's app, so the app's code does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from consul_discovery.mesh.errors import PeerIdentityError
from consul_discovery.mesh.guard import FORBIDDEN_HEADERS, PEER_KEY, Guard, Peer
from consul_discovery.mesh.l7 import RequestView
from consul_discovery.mesh.tls import peer_identity

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_SPECIAL = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


class EnvironHeaders:
    """Request headers read from a WSGI environ on demand, by lower-case name."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def get(self, name: str, /) -> str | None:
        """The header's value (the server joined repeated ones with ``,``)."""
        key = _SPECIAL.get(name) or "HTTP_" + name.upper().replace("-", "_")
        value = self._environ.get(key)
        return None if value is None else str(value)


def request_view(environ: Mapping[str, Any]) -> RequestView:
    """The method, raw path (no query string) and headers of a WSGI request."""
    raw = environ.get("RAW_URI") or environ.get("PATH_INFO") or "/"
    return RequestView(
        environ.get("REQUEST_METHOD", "GET"), raw.split("?", 1)[0], EnvironHeaders(environ)
    )


def environ_peer(environ: Mapping[str, Any]) -> Peer:
    """The caller's identity from the TLS socket gunicorn puts in the environ."""
    sock = environ.get("gunicorn.socket")
    if sock is None or not hasattr(sock, "getpeercert"):
        return PeerIdentityError("the request did not arrive over mesh TLS")
    try:
        return peer_identity(sock)
    except (PeerIdentityError, ValueError) as exc:
        return exc if isinstance(exc, PeerIdentityError) else PeerIdentityError(str(exc))


class MeshWSGI:
    """Wraps a WSGI app: every request is authorized by ``guard`` first."""

    def __init__(self, app: WSGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Authorize, then pass the request on or answer 403."""
        peer = environ_peer(environ)
        decision = self.guard.check(peer, request_view(environ))
        if not decision.allowed:
            body = self.guard.forbidden(decision)
            headers = [*FORBIDDEN_HEADERS, ("Content-Length", str(len(body)))]
            start_response("403 Forbidden", headers)
            return [body]
        environ[PEER_KEY] = peer
        return self.app(environ, start_response)
