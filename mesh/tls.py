"""Mesh TLS contexts from a leaf and the CA roots, for servers and for callers.

Both sides: TLS 1.2 or newer, the peer must present a certificate that chains to the
current roots (``CERT_REQUIRED``), our leaf and its chain loaded through ``keyfile``.

A server context is plain otherwise; the caller's identity is read once per connection
from its verified certificate (``peer_identity``) and authorized per request.

A caller's context checks the server's identity instead of a hostname
(``check_hostname`` off): Consul's rule (``connect/tls.go``) is that the first URI SAN of
the server's leaf names the target service (trust domain aside). The check runs inside
the handshake, in ``do_handshake`` of the context's ``sslsocket_class`` (sockets:
requests/urllib3, httpx and httpcore sync) and ``sslobject_class`` (memory BIOs: asyncio,
anyio, httpx async), so a wrong server fails the handshake with
``ServerIdentityMismatch`` before a byte of the request is sent, whatever the HTTP
stack. Each client context is for one target service.
"""

from __future__ import annotations

import functools
import socket
import ssl
from typing import Any, ClassVar

from consul_discovery.mesh.errors import PeerIdentityError, ServerIdentityMismatch
from consul_discovery.mesh.identity import CaRoots, Leaf
from consul_discovery.mesh.keyfile import load_leaf
from consul_discovery.mesh.settings import io_timeout
from consul_discovery.mesh.spiffe import SpiffeId, peer_spiffe_id

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def _base(protocol: int, leaf: Leaf, roots: CaRoots, key_dir: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = MINIMUM_VERSION
    if protocol == ssl.PROTOCOL_TLS_CLIENT:
        context.check_hostname = False  # the SPIFFE ID is checked instead
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=roots.bundle_pem)
    load_leaf(context, leaf, key_dir)
    return context


def server_context(leaf: Leaf, roots: CaRoots, *, key_dir: str | None = None) -> ssl.SSLContext:
    """A server context: our leaf, and a client certificate chaining to ``roots`` required.

    Its blocking sockets (gunicorn's) time out after ``MESH_IO_TIMEOUT`` seconds without
    progress (``io_timeout``): see ``_TimedServerSocket``.
    """
    context = _base(ssl.PROTOCOL_TLS_SERVER, leaf, roots, key_dir)
    context.sslsocket_class = _timed_server_socket(io_timeout())
    return context


class LeanSocket(ssl.SSLSocket):
    """An SSLSocket whose common reads and writes skip the stdlib's Python layers.

    ``SSLSocket.recv_into``, ``recv`` and ``sendall`` reach the C ``SSLObject`` through
    two to four Python calls and a memoryview each; a kept-alive mTLS call makes about
    six of them (both sides): about one point of bench/mesh_cost.py's ratio. Here a read
    into a memoryview (BufferedReader's: http.client, http.server), a ``recv``
    (gunicorn's parser) and a write of bytes go to the SSLObject at once, with the stdlib's
    results: a ragged EOF read as 0 bytes when ``suppress_ragged_eofs``, the rest of a
    partial write sent. Anything else (flags, a closed or unwrapped socket, other
    buffer types) is the stdlib's.
    """

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        """As ``SSLSocket.recv_into``."""
        sslobj = self._sslobj  # type: ignore[attr-defined]
        if sslobj is None or flags or nbytes is not None or type(buffer) is not memoryview:
            return super().recv_into(buffer, nbytes, flags)
        size = buffer.nbytes
        if not size:
            return super().recv_into(buffer, nbytes, flags)
        try:
            return sslobj.read(size, buffer)  # type: ignore[no-any-return]
        except ssl.SSLError as exc:
            if exc.args[0] == ssl.SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return 0
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """As ``SSLSocket.recv`` (gunicorn's parser reads through it)."""
        sslobj = self._sslobj  # type: ignore[attr-defined]
        if sslobj is None or flags:
            return super().recv(buflen, flags)
        try:
            return sslobj.read(buflen)  # type: ignore[no-any-return]
        except ssl.SSLError as exc:
            if exc.args[0] == ssl.SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return b""
            raise

    def sendall(self, data: Any, flags: int = 0) -> None:
        """As ``SSLSocket.sendall``."""
        sslobj = self._sslobj  # type: ignore[attr-defined]
        if sslobj is None or flags or type(data) is not bytes:
            super().sendall(data, flags)
            return
        sent = sslobj.write(data)
        if sent < len(data):
            super().sendall(data[sent:], flags)


class _TimedServerSocket(LeanSocket):
    """A server-side SSLSocket that never blocks for good on a silent peer.

    gunicorn serves TLS on blocking sockets with no timeout: the handshake runs on the
    first read, in the worker (sync) or in one of its threads (gthread), so a peer that
    sends a ClientHello and then nothing pins that thread (or the whole sync worker)
    forever, and a worker stopping waits for it until its graceful timeout. Here a
    blocking socket (``setblocking(True)``, what gunicorn asks before each request) has a
    timeout instead: the handshake and every read or write must make progress within it.
    Non-blocking use (gunicorn's keep-alive poller, asyncio) is unchanged.
    """

    mesh_io_timeout: ClassVar[float]

    @classmethod
    def _create(cls, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        if sock.gettimeout() is None:  # blocking: bounded from the handshake on
            sock.settimeout(cls.mesh_io_timeout)
        return super()._create(sock, *args, **kwargs)  # type: ignore[misc, no-any-return]

    def setblocking(self, flag: bool) -> None:
        """Blocking means blocking for at most ``mesh_io_timeout`` at a time."""
        if flag:
            self.settimeout(self.mesh_io_timeout)
        else:
            super().setblocking(flag)


@functools.lru_cache(maxsize=16)
def _timed_server_socket(timeout: float) -> type[ssl.SSLSocket]:
    attrs = {"mesh_io_timeout": timeout, "__module__": __name__}
    return type("TimedServerSocket", (_TimedServerSocket,), attrs)


def client_context(
    leaf: Leaf, roots: CaRoots, expected: SpiffeId, *, key_dir: str | None = None
) -> ssl.SSLContext:
    """A caller's context for one target: presents ``leaf``, accepts only ``expected``."""
    context = _base(ssl.PROTOCOL_TLS_CLIENT, leaf, roots, key_dir)
    context.sslsocket_class, context.sslobject_class = _checking_classes(expected)
    return context


def check_server(peercert: dict[str, Any] | None, expected: SpiffeId) -> SpiffeId:
    """The server's identity if it names ``expected``'s service; else ServerIdentityMismatch."""
    try:
        got = peer_spiffe_id(peercert)
    except PeerIdentityError:
        raise ServerIdentityMismatch(expected.uri, None) from None
    if not got.same_service(expected):
        raise ServerIdentityMismatch(expected.uri, got.uri)
    return got


def peer_identity(tls: ssl.SSLSocket | ssl.SSLObject) -> SpiffeId:
    """The verified peer's SPIFFE ID, read once per connection (PeerIdentityError if none)."""
    cached: SpiffeId | None = getattr(tls, "_mesh_peer", None)
    if cached is None:
        cached = peer_spiffe_id(tls.getpeercert())
        tls._mesh_peer = cached  # type: ignore[union-attr]  # set once, by the connection's thread
    return cached


class _CheckingSocket(LeanSocket):
    """An SSLSocket whose handshake also checks the server's SPIFFE ID."""

    mesh_expected: ClassVar[SpiffeId]

    def do_handshake(self, block: bool = False) -> None:
        """The TLS handshake, then the identity check (the socket is closed on failure)."""
        super().do_handshake(block)
        check_server(self.getpeercert(), self.mesh_expected)


class _CheckingObject(ssl.SSLObject):
    """An SSLObject (memory BIO, asyncio/anyio) whose handshake checks the SPIFFE ID."""

    mesh_expected: ClassVar[SpiffeId]

    def do_handshake(self) -> None:
        """One handshake step; when it completes, the identity check."""
        super().do_handshake()
        check_server(self.getpeercert(), self.mesh_expected)


@functools.lru_cache(maxsize=256)
def _checking_classes(expected: SpiffeId) -> tuple[type[ssl.SSLSocket], type[ssl.SSLObject]]:
    attrs = {"mesh_expected": expected, "__module__": __name__}
    return (
        type("SpiffeCheckingSocket", (_CheckingSocket,), attrs),
        type("SpiffeCheckingObject", (_CheckingObject,), attrs),
    )
