"""LeanSocket reads and writes as the stdlib's SSLSocket does, over a real mTLS connection.

Each scenario runs twice, both ends' sockets LeanSocket and then ssl.SSLSocket (same
leaf, roots and handshake), and must give the same results.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consul_discovery.mesh import ServerTLS, ServiceIdentity
from consul_discovery.mesh.tls import LeanSocket, client_context
from tests.harness.agent import ConsulAgent
from tests.mesh.conftest import identity

BIG = bytes(range(256)) * 4096  # 1 MiB: many records, partial reads


@pytest.fixture(scope="module")
def identities(agent: ConsulAgent) -> Iterator[tuple[ServiceIdentity, ServiceIdentity]]:
    with identity(agent, "web") as web, identity(agent, "api") as api:
        yield web, api


def _pair(
    identities: tuple[ServiceIdentity, ServiceIdentity], cls: type[ssl.SSLSocket]
) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """A connected (client, server) pair of ``cls`` sockets over mTLS."""
    web, api = identities
    assert web.leaf and web.roots and api.leaf and api.roots
    tls = ServerTLS()
    tls.update(web.leaf, web.roots)
    front = tls.front_context()
    front.sslsocket_class = cls
    caller = client_context(api.leaf, api.roots, web.spiffe_id)
    caller.sslsocket_class = cls  # (the stdlib's: no SPIFFE check; same bytes)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[ssl.SSLSocket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        accepted.append(front.wrap_socket(conn, server_side=True))

    thread = threading.Thread(target=accept)
    thread.start()
    raw = socket.create_connection(listener.getsockname(), timeout=5)
    client = caller.wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(5)
    listener.close()
    server = accepted[0]
    server.settimeout(5)
    assert type(client) is cls and type(server) is cls
    return client, server


def _both(
    identities: tuple[ServiceIdentity, ServiceIdentity],
    scenario: Callable[[ssl.SSLSocket, ssl.SSLSocket], Any],
) -> None:
    outcomes = []
    for cls in (LeanSocket, ssl.SSLSocket):
        client, server = _pair(identities, cls)
        try:
            outcomes.append(scenario(client, server))
        except Exception as exc:  # the same error, of the same kind
            outcomes.append((type(exc), str(exc)))
        finally:
            client.close()
            server.close()
    assert outcomes[0] == outcomes[1]


def _send_later(sock: ssl.SSLSocket, *chunks: Any) -> threading.Thread:
    def send() -> None:
        for chunk in chunks:
            sock.sendall(chunk)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_reads_and_writes_give_the_same_bytes(identities: Any) -> None:
    def scenario(client: ssl.SSLSocket, server: ssl.SSLSocket) -> Any:
        sender = _send_later(
            client, b"GET / HTTP/1.1\r\n", BIG, memoryview(b"tail"), bytearray(b"!")
        )
        reader = server.makefile("rb")  # recv_into a memoryview (BufferedReader)
        line = reader.readline()
        big = reader.read(len(BIG))
        rest = reader.read(5)
        sender.join(10)
        server.sendall(b"abc" * 10)
        parts = [client.recv(7), client.recv_into(buffer := bytearray(8)), bytes(buffer)]
        view = memoryview(bytearray(16))
        parts += [client.recv_into(view, 5), bytes(view[:5]), client.recv(100)]
        return line, big == BIG, rest, parts

    _both(identities, scenario)


def test_a_peer_gone_without_close_notify_is_an_end_of_stream(identities: Any) -> None:
    def scenario(client: ssl.SSLSocket, server: ssl.SSLSocket) -> Any:
        server.sendall(b"last")
        socket.socket.close(server)  # the TCP connection ends, no TLS close_notify
        got = [client.recv(100)]
        got.append(client.recv_into(memoryview(bytearray(10))))
        got.append(client.recv(10))
        return got

    _both(identities, scenario)


def test_without_suppressing_ragged_eofs_the_error_is_raised(identities: Any) -> None:
    def scenario(client: ssl.SSLSocket, server: ssl.SSLSocket) -> Any:
        client.suppress_ragged_eofs = False
        socket.socket.close(server)
        try:
            client.recv_into(memoryview(bytearray(10)))
        except ssl.SSLError as exc:
            return type(exc), exc.args[0]
        return "no error"

    _both(identities, scenario)


def test_a_closed_socket_fails_the_same_way(identities: Any) -> None:
    def scenario(client: ssl.SSLSocket, server: ssl.SSLSocket) -> Any:
        client.close()
        failures = []
        for call in (
            lambda: client.recv(1),
            lambda: client.recv_into(memoryview(bytearray(1))),
            lambda: client.sendall(b"x"),
        ):
            try:
                call()
            except (OSError, ValueError) as exc:
                failures.append(type(exc))
        return failures

    _both(identities, scenario)
