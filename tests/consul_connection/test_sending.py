"""Each transport's exceptions, classified into the shared kinds, against real sockets.

A closed port (refused), a listener that never answers (timeout), one that hangs up
after reading the request (reset) and a plain-HTTP server asked over https (TLS
mismatch): requests (``SessionSender``), httpx (``HttpxSender``) and the shared asyncio
transport (``AgentTransport``, HTTP/1.1 and HTTP/2 over TLS) must agree.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.agent_transport import AgentTransport
from consul_discovery.connection.exchange import Request, TransportError, TransportFailure
from consul_discovery.connection.sending import HttpxSender, SessionSender
from tests.harness.socket_server import closed_port, socket_server


def silent(_conn: socket.socket) -> None:
    pass


def hang_up(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


def plain_http(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def failure_kinds(address: str) -> tuple[TransportFailure, ...]:
    connection = ConsulConnection.from_env({}, address=address, connect_timeout=1.0)
    request = Request("/v1/status/leader", timeout=0.3)
    sender = SessionSender(connection)
    try:
        with pytest.raises(TransportError) as by_requests:
            sender(request)
    finally:
        sender.close()

    async def with_httpx() -> TransportFailure:
        asender = HttpxSender(connection)
        try:
            with pytest.raises(TransportError) as caught:
                await asender(request)
            return caught.value.kind
        finally:
            await asender.aclose()

    async def with_ours() -> TransportFailure:
        transport = AgentTransport(connection)
        try:
            with pytest.raises(TransportError) as caught:
                await transport.send(request, {})
            assert caught.value.__cause__ is not None
            return caught.value.kind
        finally:
            await transport.aclose()

    assert by_requests.value.__cause__ is not None  # the library's exception, chained
    return by_requests.value.kind, asyncio.run(with_httpx()), asyncio.run(with_ours())


def test_a_closed_port_is_refused_for_both():
    assert failure_kinds(f"127.0.0.1:{closed_port()}") == (TransportFailure.REFUSED,) * 3


def test_a_listener_that_never_answers_is_a_timeout_for_both():
    with socket_server(silent) as port:
        assert failure_kinds(f"127.0.0.1:{port}") == (TransportFailure.TIMEOUT,) * 3


def test_a_hang_up_mid_request_is_a_reset_for_both():
    with socket_server(hang_up) as port:
        assert failure_kinds(f"127.0.0.1:{port}") == (TransportFailure.RESET,) * 3


def test_https_to_a_plain_http_agent_is_a_tls_mismatch_for_both():
    with socket_server(plain_http) as port:
        kinds = failure_kinds(f"https://127.0.0.1:{port}")
    assert kinds == (TransportFailure.NOT_TLS,) * 3


def test_an_interrupted_sender_refuses_new_requests_as_closed():
    connection = ConsulConnection.from_env({}, address=f"127.0.0.1:{closed_port()}")
    sender = SessionSender(connection)
    sender.interrupt()
    with pytest.raises(TransportError) as caught:
        sender(Request("/v1/status/leader", timeout=0.3))
    assert caught.value.kind is TransportFailure.CLOSED
    sender.close()
